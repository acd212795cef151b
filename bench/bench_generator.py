"""Benchmark the synthesis forward of our generator (and, optionally, NVIDIA's reference on the same weights).

Prints seconds per forward and images/s (median of --iters timed runs after --warmup), the achieved
GFLOP/s against an analytic FLOP count of the architecture, and a plain fp32 matmul's GFLOP/s measured
in the same run as the roofline. With `--nvidia-src PATH` (a stylegan2-ada-pytorch or stylegan3
checkout) it builds NVIDIA's Generator with the same keyword arguments in this process, copies our
weights into it, checks the two outputs agree, times both in alternation and prints ours/NVIDIA.

    python bench/bench_generator.py                                  # CPU, f256 ada256 f1024, batch 1 and 4
    python bench/bench_generator.py --configs ada256 --batch 1,8 --iters 5
    python bench/bench_generator.py --sg3 --nvidia-src ../stylegan3  # adds StyleGAN3-T 256 (+ its peak memory)
    python bench/bench_generator.py --device cuda --out bench/results/cuda.json

NVIDIA's code (non-commercial licence) is only imported at run time from the given path and never
copied here; it needs `click`, `requests` (and `scipy`, `setuptools<70` for stylegan3) installed.
By default NVIDIA's compiled CUDA plugins are disabled so both sides run pure PyTorch
(`--nvidia-plugins` lets them build).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import core  # noqa: E402
from core.networks import stylegan2 as sg2  # noqa: E402
from core.networks import stylegan3 as sg3  # noqa: E402


def stylegan2_config(resolution: int, channel_base: int, mapping_layers: int) -> core.GeneratorConfig:
    # conv_clamp 256 and num_fp16_res 4 as in every stylegan2-ada-pytorch training config (fp16 is not
    # used here: the benchmark runs everything in fp32, like NVIDIA's code with force_fp32=True).
    return core.GeneratorConfig(
        arch="stylegan2", img_resolution=resolution, mapping=core.MappingConfig(num_layers=mapping_layers),
        synthesis=core.StyleGAN2Config(channel_base=channel_base, channel_max=512, conv_clamp=256, num_fp16_res=4))


def stylegan3_config(resolution: int, radial: bool = False) -> core.GeneratorConfig:
    syn = core.StyleGAN3Config(channel_base=32768 * (2 if radial else 1), channel_max=512 * (2 if radial else 1),
                               conv_kernel=1 if radial else 3, use_radial_filters=radial)
    return core.GeneratorConfig(arch="stylegan3", img_resolution=resolution,
                                mapping=core.MappingConfig(num_layers=2), synthesis=syn)


CONFIGS: dict[str, Callable[[], core.GeneratorConfig]] = {
    "f256": lambda: stylegan2_config(256, 32768, 8),      # StyleGAN2 config-f at 256 px
    "ada256": lambda: stylegan2_config(256, 16384, 2),    # StyleGAN2-ADA 'auto' at 256 px (half channels)
    "f512": lambda: stylegan2_config(512, 32768, 8),
    "f1024": lambda: stylegan2_config(1024, 32768, 8),    # StyleGAN2 config-f, FFHQ 1024
    "sg3t256": lambda: stylegan3_config(256),             # StyleGAN3-T
    "sg3t512": lambda: stylegan3_config(512),
    "sg3t1024": lambda: stylegan3_config(1024),
    "sg3r256": lambda: stylegan3_config(256, radial=True),  # StyleGAN3-R
}


# ----------------------------------------------------------------------------------------------
# Analytic FLOP count (multiply-adds x 2) of one synthesis forward for one image, from the
# architecture alone, so every implementation is measured against the same work.

def _fir_flops(channels: int, in_hw: int, out_hw: int, taps: int, up: int, separable: bool, upsample: bool) -> float:
    """Polyphase FIR cost: upsampling touches taps/up inputs per output, downsampling `taps` per kept output."""
    per_out = taps / up if upsample else taps
    if separable:  # along x on in_hw rows, then along y
        return 2.0 * channels * per_out * (in_hw * out_hw + out_hw * out_hw)
    return 2.0 * channels * per_out ** 2 * out_hw * out_hw


def count_flops(G: core.Generator) -> dict[str, float]:
    """{'conv': modulated convolutions, 'fir': resampling filters, 'affine': mapping + style affines, 'total'}."""
    conv = fir = affine = 0.0
    for m in G.modules():
        if isinstance(m, core.networks.layers.FullyConnectedLayer):
            affine += 2.0 * m.in_features * m.out_features
    syn = G.synthesis
    if G.arch == "stylegan2":
        for res in syn.block_resolutions:
            block = getattr(syn, f"b{res}")
            if hasattr(block, "conv0"):
                c0 = block.conv0
                conv += 2.0 * c0.in_channels * c0.out_channels * 9 * (res // 2) ** 2  # transposed conv at input res
                fir += _fir_flops(c0.out_channels, res + 1, res, 4, 2, True, True)
            c1 = block.conv1
            conv += 2.0 * c1.in_channels * c1.out_channels * 9 * res ** 2
            if hasattr(block, "torgb"):
                conv += 2.0 * c1.out_channels * G.img_channels * res ** 2
                if res > 4:
                    fir += _fir_flops(G.img_channels, res // 2, res, 4, 2, True, True)
            if hasattr(block, "skip"):
                conv += 2.0 * block.skip.weight.shape[0] * block.skip.weight.shape[1] * (res // 2) ** 2
                fir += _fir_flops(block.skip.weight.shape[0], res // 2, res, 4, 2, True, True)
    else:
        inp = syn.input
        affine += 2.0 * inp.channels * inp.channels * inp.size[0] * inp.size[1]
        for name in syn.layer_names:
            layer = getattr(syn, name)
            k = layer.conv_kernel
            hw = int(layer.in_size[0]) + k - 1
            conv += 2.0 * layer.in_channels * layer.out_channels * k * k * hw * hw
            out_hw = int(layer.out_size[0])
            tmp_hw = hw * layer.up_factor
            if layer.up_taps > 1:
                fir += _fir_flops(layer.out_channels, hw, tmp_hw, layer.up_taps, layer.up_factor, True, True)
            if layer.down_taps > 1:
                fir += _fir_flops(layer.out_channels, tmp_hw, out_hw, layer.down_taps, 1, not layer.down_radial, False)
    return {"conv": conv, "fir": fir, "affine": affine, "total": conv + fir + affine}


def counted_flops(G: core.Generator, ws: torch.Tensor) -> float:
    """FLOPs PyTorch's FlopCounterMode sees in our forward (convolutions and matmuls; cross-check only)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        G.synthesis(ws[:1], noise_mode="const", force_fp32=True)
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------
# Timing and memory helpers.

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def matmul_roofline(device: torch.device, size: int, iters: int) -> float:
    """GFLOP/s of a plain fp32 `size x size` matmul (median)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    times = [time_once(lambda: a @ b, device) for _ in range(iters)]
    return 2.0 * size ** 3 / statistics.median(times) / 1e9


class PeakRSS:
    """Peak resident memory of this process above the level at entry (Linux, sampled every 2 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self.base = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> "PeakRSS":
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def delta_gib(self) -> float:
        return (self.peak - self.base) / 2 ** 30


def peak_memory_gib(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """Extra memory one call of `fn` needs: CUDA allocator peak, or process RSS peak on Linux CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 30
    if device.type == "cpu" and os.path.exists("/proc/self/statm"):
        with PeakRSS() as m:
            fn()
        return m.delta_gib
    return None


# ----------------------------------------------------------------------------------------------
# NVIDIA's reference, imported from a user-given checkout at run time.

def nvidia_kwargs(cfg: core.GeneratorConfig, flavour: str) -> dict:
    mapping_kwargs = dict(num_layers=cfg.mapping.num_layers)
    if cfg.arch == "stylegan3":
        s = cfg.synthesis
        syn = dict(channel_base=s.channel_base, channel_max=s.channel_max, num_layers=s.num_layers,
                   num_critical=s.num_critical, first_cutoff=s.first_cutoff, first_stopband=s.first_stopband,
                   last_stopband_rel=s.last_stopband_rel, margin_size=s.margin_size, output_scale=s.output_scale,
                   num_fp16_res=s.num_fp16_res, conv_kernel=s.conv_kernel, filter_size=s.filter_size,
                   lrelu_upsampling=s.lrelu_upsampling, use_radial_filters=s.use_radial_filters,
                   conv_clamp=s.conv_clamp, magnitude_ema_beta=s.magnitude_ema_beta)
    else:
        s = cfg.synthesis
        syn = dict(channel_base=s.channel_base, channel_max=s.channel_max, num_fp16_res=s.num_fp16_res,
                   conv_clamp=s.conv_clamp, architecture=s.architecture, resample_filter=list(s.resample_filter),
                   use_noise=s.use_noise, activation=s.activation)
    base = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                img_channels=cfg.img_channels, mapping_kwargs=mapping_kwargs)
    if flavour == "ada":  # stylegan2-ada-pytorch nests the synthesis arguments
        return dict(base, synthesis_kwargs=syn)
    return dict(base, **syn)  # stylegan3 repository: flat keyword arguments


class NvidiaSource:
    """Imports NVIDIA's network modules from a checkout; `build(cfg)` returns their Generator or None."""

    def __init__(self, path: str, allow_plugins: bool):
        self.path = str(Path(path).resolve())
        self.flavour = "sg3repo" if Path(self.path, "training", "networks_stylegan3.py").exists() else "ada"
        if not Path(self.path, "training").is_dir():
            raise FileNotFoundError(f"--nvidia-src {path!r} has no training/ folder; pass the root of a "
                                    "stylegan2-ada-pytorch or stylegan3 checkout")
        sys.path.insert(0, self.path)
        try:
            if not allow_plugins:  # make every op take its pure-PyTorch reference path
                for op in ("bias_act", "upfirdn2d", "filtered_lrelu"):
                    try:
                        mod = importlib.import_module(f"torch_utils.ops.{op}")
                    except ImportError:
                        continue
                    mod._init = lambda: False
            if self.flavour == "ada":
                self.sg2 = importlib.import_module("training.networks")
                self.sg3 = None
            else:
                self.sg2 = importlib.import_module("training.networks_stylegan2")
                self.sg3 = importlib.import_module("training.networks_stylegan3")
        except ImportError as e:
            raise ImportError(f"could not import NVIDIA's networks from {self.path}: {e}. They need "
                              "`pip install click requests scipy 'setuptools<70'`") from e

    def build(self, G: core.Generator) -> Optional[torch.nn.Module]:
        module = self.sg3 if G.arch == "stylegan3" else self.sg2
        if module is None:
            return None
        ref = module.Generator(**nvidia_kwargs(G.config, self.flavour))
        ours = G.state_dict()
        theirs = ref.state_dict()
        missing = [k for k in theirs if k not in ours]
        unexpected = [k for k in ours if k not in theirs]
        # NVIDIA stores the fixed resampling filter of every StyleGAN2 layer; ours is configuration.
        assert all(k.endswith("resample_filter") for k in missing), missing
        assert not unexpected, unexpected
        named = dict(G.named_buffers())
        for k in missing:  # the filters they keep must equal the ones we build
            torch.testing.assert_close(theirs[k], named[k], rtol=0, atol=0)
        with torch.no_grad():
            for k, v in ours.items():
                assert theirs[k].shape == v.shape, (k, theirs[k].shape, v.shape)
                theirs[k].copy_(v)
        return ref.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------

def randomise_zero_init(G: core.Generator, seed: int) -> None:
    """Give the parameters NVIDIA initialises to zero (biases, noise strengths) seeded random values,
    so the agreement check exercises the bias, noise and clamp paths."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or (name.endswith("bias") and ".affine" not in name
                                                   and not name.startswith("mapping")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def bench_config(name: str, args, device: torch.device, nvidia: Optional[NvidiaSource], roofline: float) -> list[dict]:
    cfg = CONFIGS[name]()
    G = core.build_generator(cfg, seed=args.seed)
    randomise_zero_init(G, args.seed)
    flops = count_flops(G)
    ref = nvidia.build(G) if nvidia is not None else None
    G = G.to(device)
    if ref is not None:
        ref = ref.to(device)
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn([max(args.batch), cfg.z_dim], generator=gen).to(device)
    with torch.no_grad():
        ws_all = G.mapping(z, None, truncation_psi=0.7)
    counted = counted_flops(G, ws_all) if device.type == "cpu" else float("nan")
    print(f"\n== {name}: {cfg.arch} {cfg.img_resolution}px, {sum(p.numel() for p in G.synthesis.parameters()) / 1e6:.1f} M "
          f"synthesis params, analytic {flops['total'] / 1e9:.1f} GFLOP/image (conv {flops['conv'] / 1e9:.1f}, "
          f"FIR {flops['fir'] / 1e9:.2f}, affine {flops['affine'] / 1e9:.3f}); FlopCounterMode on our forward "
          f"{counted / 1e9:.1f}")
    if nvidia is not None and ref is None:
        print(f"   (NVIDIA comparison skipped: {nvidia.path} has no {cfg.arch} network)")

    rows = []
    for batch in args.batch:
        ws = ws_all[:batch].contiguous()
        run_ours = lambda: G.synthesis(ws, noise_mode="const", force_fp32=True)  # noqa: E731
        run_ref = (lambda: ref.synthesis(ws, noise_mode="const", force_fp32=True)) if ref is not None else None  # noqa: E731
        with torch.no_grad():
            img = run_ours()
            diff = None
            if run_ref is not None:
                img_ref = run_ref()
                diff = float((img - img_ref).abs().max())
                scale = float(img_ref.abs().max())
                status = "OK" if diff <= args.tolerance else "MISMATCH"
                print(f"   batch {batch}: ours vs NVIDIA max |diff| {diff:.2e} (image max |x| {scale:.2f}) {status}")
                if diff > args.tolerance:
                    raise SystemExit(f"outputs disagree by {diff:.2e} > {args.tolerance:g} for {name}, batch {batch}")
            del img
            for _ in range(args.warmup):
                run_ours()
                if run_ref is not None:
                    run_ref()
            t_ours, t_ref = [], []
            for _ in range(args.iters):  # alternate, so drift in machine load hits both alike
                t_ours.append(time_once(run_ours, device))
                if run_ref is not None:
                    t_ref.append(time_once(run_ref, device))
            mem_ours = mem_ref = None
            if args.memory:
                mem_ours = peak_memory_gib(run_ours, device)
                if run_ref is not None:
                    mem_ref = peak_memory_gib(run_ref, device)
        row = dict(config=name, arch=cfg.arch, resolution=cfg.img_resolution, batch=batch, device=str(device),
                   gflop_per_image=flops["total"] / 1e9, max_abs_diff=diff,
                   ours=summary(t_ours, batch, flops["total"], roofline, mem_ours),
                   nvidia=summary(t_ref, batch, flops["total"], roofline, mem_ref) if t_ref else None)
        if t_ref:
            row["speedup"] = statistics.median(t_ref) / statistics.median(t_ours)
        print_row(row)
        rows.append(row)
    return rows


def summary(times: list[float], batch: int, flops: float, roofline: float, mem: Optional[float]) -> dict:
    med = statistics.median(times)
    gflops = flops * batch / med / 1e9
    return dict(s_per_forward=med, s_min=min(times), s_max=max(times), times=times, images_per_s=batch / med,
                gflop_per_s=gflops, fraction_of_matmul=gflops / roofline, peak_mem_gib=mem)


def print_row(row: dict) -> None:
    def fmt(who: str, s: dict) -> str:
        mem = "" if s["peak_mem_gib"] is None else f", peak +{s['peak_mem_gib']:.2f} GiB"
        return (f"   {who:6s} batch {row['batch']}: {s['s_per_forward']:.3f} s/forward "
                f"[{s['s_min']:.3f}..{s['s_max']:.3f}], {s['images_per_s']:.2f} img/s, "
                f"{s['gflop_per_s']:.1f} GFLOP/s ({100 * s['fraction_of_matmul']:.0f}% of matmul){mem}")
    print(fmt("ours", row["ours"]))
    if row["nvidia"] is not None:
        print(fmt("NVIDIA", row["nvidia"]))
        print(f"   speed-up ours/NVIDIA: {row['speedup']:.2f}x")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument("--configs", default="f256,ada256,f1024", help=f"comma-separated, from {sorted(CONFIGS)}")
    p.add_argument("--sg3", action="store_true", help="also run StyleGAN3-T 256 (sg3t256) with its peak memory")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    p.add_argument("--iters", type=int, default=3, help="timed forwards per setting; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards before timing")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and latents")
    p.add_argument("--memory", action="store_true", help="measure peak memory of one forward per setting")
    p.add_argument("--nvidia-src", default=None, help="stylegan2-ada-pytorch or stylegan3 checkout to compare with")
    p.add_argument("--nvidia-plugins", action="store_true", help="let NVIDIA's ops build their CUDA plugins")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |ours - NVIDIA| allowed")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the roofline matmul")
    p.add_argument("--out", default=None, help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    args.batch = [int(b) for b in args.batch.split(",") if b]
    args.configs = [c for c in args.configs.split(",") if c]
    if args.sg3 and "sg3t256" not in args.configs:
        args.configs.append("sg3t256")
    if args.sg3:
        args.memory = True
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {sorted(CONFIGS)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    nvidia = NvidiaSource(args.nvidia_src, args.nvidia_plugins) if args.nvidia_src else None
    roofline = matmul_roofline(device, args.matmul_size, 5)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; fp32 matmul {args.matmul_size}^3: {roofline:.1f} GFLOP/s"
          + (f"; NVIDIA reference from {nvidia.path} ({nvidia.flavour})" if nvidia else ""))
    rows = []
    for name in args.configs:
        rows += bench_config(name, args, device, nvidia, roofline)
    roofline_end = matmul_roofline(device, args.matmul_size, 5)
    print(f"\nfp32 matmul again at the end: {roofline_end:.1f} GFLOP/s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(torch=torch.__version__, device=str(device), threads=torch.get_num_threads(),
                                       matmul_gflop_per_s=[roofline, roofline_end], args=vars(args), results=rows),
                                  indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
