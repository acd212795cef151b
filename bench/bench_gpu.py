"""GPU benchmark of issue 21: ours (plain and with each speed-up switch of core/accel.py) against NVIDIA's reference
(its custom CUDA ops compiled, and disabled), every number from the same run, interleaved so load hits all alike.

Sections (`--sections`, default all):

  generator   synthesis forward and forward+backward (w.r.t. ws, weights frozen: what inversion does) at 1024 px
              for StyleGAN2 config-f, StyleGAN3-T and StyleGAN3-R at batch 1 and 8: seconds, peak memory and
              max |image - ours fp32| relative to the image's range, for ours plain (precision 'auto': the blocks
              NVIDIA trained in fp16 run in fp16 on CUDA), ours float32, ours with each switch, NVIDIA with its
              compiled ops and NVIDIA pure PyTorch (plugins disabled), on the same weights.
  flrelu      StyleGAN3's filtered_lrelu op alone, on the input of the 1024 px StyleGAN3-T layer that upsamples
              most: peak memory and time, ours vs NVIDIA's op (compiled, and its reference).
  inversion   s/step of Invert Image (projector recipe and the default method), plain and with --inv-accel;
              the projector recipe's LPIPS after --ref-steps (1000) steps, and the time ours (default method,
              accelerated) takes to reach it (LPIPS evaluation time excluded). Random weights unless --checkpoint,
              --target and --perceptual are given (then the numbers mean something).
  clip        CLIP Latent Optimize s/step in W+ and S, plain and accelerated (CLIP ViT-B-32, random weights).
  directions  global-direction relevance precompute at 256 px, extrapolated to the reference's 100 images and
              every channel (bench_global_directions.bench_precompute; staged renders: the switches do not apply).
  edits       the editing methods' steps: Weight-Shift training vs CLIP Latent Optimize (bench_weight_shift),
              Neural Style gatys2016 iterations (bench_neural_style), encoder passes (bench_encoders, subprocess).

Ends with the acceptance summary against issue 21's targets. `--device cpu --quick` runs everything on tiny sizes
(a check of the script, not of speed; NVIDIA's columns then run with their ops disabled, as they must on CPU).

    python bench/bench_gpu.py --device cuda --nvidia-src bench/reference/stylegan3 --out bench/results/gpu.json
    python bench/bench_gpu.py --device cpu --quick --nvidia-src /tmp/stylegan3
    bench/gpu_run.sh      # the one-call wrapper for a lent GPU machine (reads bench/reference/stylegan3)

NVIDIA's code (non-commercial licence) is imported at run time from the given checkout, never copied here; its
ops build with the machine's CUDA toolkit (nvcc, ninja); when they cannot, their column says so and is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core.accel import AccelConfig, set_accel  # noqa: E402
from core.networks import stylegan3 as sg3  # noqa: E402

import bench_generator as BG  # noqa: E402

SECTIONS = ("generator", "flrelu", "inversion", "clip", "directions", "edits")

# Issue 21's acceptance targets (H100).
TARGET_SPEEDUP = 1.0           # forward >= NVIDIA's compiled ops at batch 1 and 8 ...
GOAL_SPEEDUP = 1.5             # ... goal 1.5x
TARGET_INVERSION_S = 5.0       # 1024 px inversion reaches the projector's 1000-step LPIPS in <= 5 s
TARGET_PRECOMPUTE_MIN = 30.0   # global-direction precompute for a 256 px model <= 30 min


def tiny_stylegan2(res: int) -> core.GeneratorConfig:
    return core.GeneratorConfig(arch="stylegan2", z_dim=64, w_dim=64, img_resolution=res,
                                mapping=core.MappingConfig(num_layers=2),
                                synthesis=core.StyleGAN2Config(channel_base=2048, channel_max=64, conv_clamp=256,
                                                               num_fp16_res=4))


def tiny_stylegan3(res: int, radial: bool = False) -> core.GeneratorConfig:
    syn = core.StyleGAN3Config(channel_base=2048, channel_max=64, conv_kernel=1 if radial else 3,
                               use_radial_filters=radial)
    return core.GeneratorConfig(arch="stylegan3", z_dim=64, w_dim=64, img_resolution=res,
                                mapping=core.MappingConfig(num_layers=2), synthesis=syn)


FULL_CONFIGS = {"sg2f-1024": lambda: BG.stylegan2_config(1024, 32768, 8),
                "sg3t-1024": lambda: BG.stylegan3_config(1024),
                "sg3r-1024": lambda: BG.stylegan3_config(1024, radial=True)}
QUICK_CONFIGS = {"sg2-64": lambda: tiny_stylegan2(64), "sg3t-64": lambda: tiny_stylegan3(64),
                 "sg3r-64": lambda: tiny_stylegan3(64, radial=True)}


# ------------------------------------------------------------------------------------------------
# Timing, memory


def sync(device: torch.device) -> None:
    BG.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    return BG.time_once(fn, device)


def peak_mib(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    gib = BG.peak_memory_gib(fn, device)
    return None if gib is None else gib * 1024


def fmt_ms(s: Optional[float]) -> str:
    return "-" if s is None else (f"{s * 1e3:8.1f}" if s < 100 else f"{s:7.0f}s")


def fmt_mib(m: Optional[float]) -> str:
    return "-" if m is None else f"{m:7.0f}"


def header(device: torch.device, args) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    info = dict(torch=torch.__version__, device=str(device), device_name=name, threads=torch.get_num_threads(),
                loadavg=list(load), quick=args.quick)
    print(f"bench_gpu: torch {torch.__version__} on {device} ({name}), {torch.get_num_threads()} CPU threads, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}{' [--quick: tiny sizes]' if args.quick else ''}")
    return info


# ------------------------------------------------------------------------------------------------
# NVIDIA's reference with its ops switchable between compiled and pure PyTorch in one process


def install_import_shims() -> None:
    """NVIDIA's code imports `pkg_resources.parse_version` (gone from setuptools >= 81) and `distutils.util.strtobool`
    (gone from Python 3.12 without setuptools' shim): stand-ins with the same behaviour, only where missing."""
    import types
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    try:
        import distutils.util  # noqa: F401
    except ImportError:
        def strtobool(val: str) -> int:
            val = val.lower()
            if val in ("y", "yes", "t", "true", "on", "1"):
                return 1
            if val in ("n", "no", "f", "false", "off", "0"):
                return 0
            raise ValueError(f"invalid truth value {val!r}")
        util = types.SimpleNamespace(strtobool=strtobool)
        sys.modules["distutils"] = types.SimpleNamespace(util=util)
        sys.modules["distutils.util"] = util


class Nvidia:
    """NVIDIA's networks from a checkout, with `ops(compiled)` switching their custom ops per call."""

    OPS = ("bias_act", "upfirdn2d", "filtered_lrelu")

    def __init__(self, path: str, device: torch.device):
        install_import_shims()
        self.src = BG.NvidiaSource(path, allow_plugins=True)
        self.path = self.src.path
        self.modules, self.init = {}, {}
        for op in self.OPS:
            try:
                mod = importlib.import_module(f"torch_utils.ops.{op}")
            except ImportError:
                continue
            self.modules[op], self.init[op] = mod, mod._init
        self.compiled_error = "CPU: NVIDIA's ops are CUDA only" if device.type != "cuda" else None
        if self.compiled_error is None:
            t0 = time.perf_counter()
            for op, init in self.init.items():   # build (or load from the extension cache) every plugin now
                try:
                    with contextlib.redirect_stdout(sys.stderr):
                        ok = init()
                    if not ok:
                        raise RuntimeError(f"{op}: _init() returned False")
                except Exception as e:  # noqa: BLE001 - report and run their pure-PyTorch path only
                    self.compiled_error = f"{op} did not build: {type(e).__name__}: {str(e)[:200]}"
                    break
            print(f"   NVIDIA ops: {'compiled' if self.compiled_error is None else self.compiled_error} "
                  f"({time.perf_counter() - t0:.0f} s)")
        self.ops(False)

    @property
    def compiled_ok(self) -> bool:
        return self.compiled_error is None

    def ops(self, compiled: bool) -> None:
        for op, mod in self.modules.items():
            mod._init = self.init[op] if compiled else (lambda: False)

    def build(self, G: core.Generator):
        return self.src.build(G)


# ------------------------------------------------------------------------------------------------
# Generator forward / forward+backward


@dataclasses.dataclass
class Variant:
    name: str
    side: str                                   # 'ours' | 'nvidia'
    accel: Optional[AccelConfig] = None         # ours
    force_fp32: bool = False
    compiled_ops: bool = False                  # nvidia


def variants(device: torch.device, args, nvidia: Optional[Nvidia], arch: str) -> list[Variant]:
    cuda = device.type == "cuda"
    v = [Variant("ours plain", "ours", AccelConfig()),
         Variant("ours fp32", "ours", AccelConfig(), force_fp32=True)]
    wanted = set(args.switches)
    if "nchw" in wanted:
        v.append(Variant("ours channels_last=False", "ours", AccelConfig(channels_last=False)))
    if "tf32" in wanted and cuda:
        v.append(Variant("ours tf32", "ours", AccelConfig(tf32=True)))
    if "bf16" in wanted:
        v.append(Variant("ours autocast bf16", "ours", AccelConfig(autocast="bfloat16")))
    if "fp16" in wanted and cuda:
        v.append(Variant("ours autocast fp16", "ours", AccelConfig(autocast="float16")))
    if "triton" in wanted and cuda:
        v.append(Variant("ours triton kernels", "ours", AccelConfig(kernels="triton")))
    if "compile" in wanted:
        v.append(Variant("ours compile", "ours", AccelConfig(compile="default")))
    if "graphs" in wanted and cuda:
        v.append(Variant("ours compile+CUDA graphs", "ours", AccelConfig(compile="reduce-overhead", tf32=True)))
    if nvidia is not None and (arch == "stylegan2" or nvidia.src.sg3 is not None):
        if nvidia.compiled_ok:
            v.append(Variant("NVIDIA compiled ops", "nvidia", compiled_ops=True))
        v.append(Variant("NVIDIA pure PyTorch", "nvidia", compiled_ops=False))
    return v


def bench_generator(name: str, cfg: core.GeneratorConfig, args, device, nvidia: Optional[Nvidia]) -> list[dict]:
    G = core.build_generator(cfg, seed=0)
    BG.randomise_zero_init(G, 0)
    ref = nvidia.build(G) if nvidia is not None and (G.arch == "stylegan2" or nvidia.src.sg3 is not None) else None
    G = G.to(device)
    ref = ref.to(device) if ref is not None else None
    vs = variants(device, args, nvidia if ref is not None else None, G.arch)
    print(f"\n== generator {name}: {cfg.arch} {cfg.img_resolution} px, "
          f"{sum(p.numel() for p in G.synthesis.parameters()) / 1e6:.1f} M synthesis parameters")
    z = torch.randn([max(args.batch), cfg.z_dim], generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        ws_all = G.mapping(z, None, truncation_psi=0.7)
    rows = []
    for batch in args.batch:
        ws = ws_all[:batch].contiguous()

        def call(v: Variant, grad: bool) -> Callable[[], object]:
            def run():
                w = ws.detach().requires_grad_(True) if grad else ws
                with torch.set_grad_enabled(grad):
                    if v.side == "ours":
                        set_accel(G, v.accel)
                        img = G.synthesis(w, noise_mode="const", force_fp32=v.force_fp32 or None)
                    else:
                        nvidia.ops(v.compiled_ops)
                        img = ref.synthesis(w, noise_mode="const", force_fp32=v.force_fp32)
                    if grad:
                        img.float().square().mean().backward()
                    return img
            return run

        with torch.no_grad():
            truth = call(Variant("fp32", "ours", AccelConfig(), force_fp32=True), False)().float()
        scale = float(truth.abs().max())
        err, failed = {}, {}
        for v in vs:   # warm-up (compiles, CUDA graph recording, plugin loading) and the error of each variant
            try:
                for _ in range(args.warmup):
                    call(v, True)()
                    out = call(v, False)()
                err[v.name] = float((out.float() - truth).abs().max()) / scale
            except Exception as e:  # noqa: BLE001 - a variant that cannot run is reported, the others go on
                failed[v.name] = f"{type(e).__name__}: {str(e)[:160]}"
        live = [v for v in vs if v.name not in failed]
        times = {(v.name, g): [] for v in live for g in (False, True)}
        for _ in range(args.iters):   # interleaved: every variant once per round
            for v in live:
                for g in (False, True):
                    times[(v.name, g)].append(timed(call(v, g), device))
        mem = {v.name: peak_mib(call(v, False), device) for v in live} if args.memory else {}
        set_accel(G)
        nv_ops = "NVIDIA compiled ops" if "NVIDIA compiled ops" in err else None
        print(f"   batch {batch}: {'variant':26s} {'fwd ms':>8s} {'fwd+bwd ms':>10s} {'peak MiB':>8s} "
              f"{'rel err':>8s} {'vs NVIDIA ' + ('ops' if nv_ops else 'pure'):>16s}")
        base = nv_ops or ("NVIDIA pure PyTorch" if "NVIDIA pure PyTorch" in err else None)
        for v in vs:
            if v.name in failed:
                print(f"            {v.name:26s} failed: {failed[v.name]}")
                continue
            f, b = statistics.median(times[(v.name, False)]), statistics.median(times[(v.name, True)])
            row = dict(section="generator", config=name, arch=cfg.arch, resolution=cfg.img_resolution, batch=batch,
                       variant=v.name, fwd_s=f, fwd_bwd_s=b, fwd_times=times[(v.name, False)],
                       peak_mib=mem.get(v.name), rel_err=err[v.name])
            rows.append(row)
        for row in [r for r in rows if r["batch"] == batch and r["config"] == name]:
            if base is not None:
                bt = next(r for r in rows if r["batch"] == batch and r["config"] == name and r["variant"] == base)
                row["speedup_vs_nvidia"] = bt["fwd_s"] / row["fwd_s"]
                row["speedup_vs_nvidia_bwd"] = bt["fwd_bwd_s"] / row["fwd_bwd_s"]
                row["nvidia_baseline"] = base
            sp = "" if base is None else f"{row['speedup_vs_nvidia']:6.2f}x /{row['speedup_vs_nvidia_bwd']:5.2f}x"
            print(f"            {row['variant']:26s} {fmt_ms(row['fwd_s'])} {fmt_ms(row['fwd_bwd_s']):>10s} "
                  f"{fmt_mib(row['peak_mib']):>8s} {row['rel_err']:8.1e} {sp:>16s}")
        if base is None:
            print("            (no NVIDIA column: pass --nvidia-src)")
    return rows


# ------------------------------------------------------------------------------------------------
# filtered_lrelu alone


def bench_flrelu(cfg: core.GeneratorConfig, args, device, nvidia: Optional[Nvidia]) -> list[dict]:
    G = core.build_generator(cfg, seed=0).to(device)
    calls = []
    real = sg3.filtered_lrelu

    def record(x, fu, fd, **kw):   # keep only the call with the largest upsampled intermediate
        if not calls or x.numel() * kw["up"] ** 2 > calls[0][0].numel() * calls[0][3]["up"] ** 2:
            calls[:] = [(x.detach().clone(), fu, fd, kw)]
        return real(x, fu, fd, **kw)

    sg3.filtered_lrelu = record
    try:
        with torch.no_grad():
            G.synthesis(G.mapping(torch.randn([1, cfg.z_dim], device=device), None), force_fp32=True)
    finally:
        sg3.filtered_lrelu = real
    # The layer whose upsampled intermediate is largest: what the pure-PyTorch op materialises.
    x, fu, fd, kw = calls.pop()
    print(f"\n== filtered_lrelu alone: input {list(x.shape)} up {kw['up']} down {kw['down']} "
          f"(the {cfg.img_resolution} px StyleGAN3-T layer with the largest upsampled tensor)")
    sides = {"ours": lambda: real(x, fu, fd, **kw)}
    if nvidia is not None and "filtered_lrelu" in nvidia.modules:
        theirs = nvidia.modules["filtered_lrelu"].filtered_lrelu
        nkw = dict(up=kw["up"], down=kw["down"], padding=kw["padding"], gain=kw["gain"], slope=kw["slope"],
                   clamp=kw["clamp"])

        def nv(compiled: bool):
            def run():
                nvidia.ops(compiled)
                return theirs(x, fu, fd, **nkw)
            return run
        if nvidia.compiled_ok:
            sides["NVIDIA compiled op"] = nv(True)
        sides["NVIDIA reference op"] = nv(False)
    rows = []
    with torch.no_grad():
        truth = sides["ours"]().float()
        for _ in range(args.warmup):
            for fn in sides.values():
                fn()
        times = {k: [] for k in sides}
        for _ in range(args.iters):
            for k, fn in sides.items():
                times[k].append(timed(fn, device))
        for k, fn in sides.items():
            m = peak_mib(fn, device)
            e = float((fn().float() - truth).abs().max())
            rows.append(dict(section="flrelu", side=k, s=statistics.median(times[k]), peak_mib=m, max_abs_diff=e))
            print(f"   {k:22s} {fmt_ms(statistics.median(times[k]))} ms  peak {fmt_mib(m)} MiB  |diff vs ours| {e:.1e}")
    return rows


# ------------------------------------------------------------------------------------------------
# Inversion, CLIP Latent Optimize


def parse_accel(text: str) -> AccelConfig:
    """'compile=reduce-overhead,tf32=true' -> AccelConfig."""
    fields = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        low = value.lower()
        fields[key] = True if low == "true" else False if low == "false" else None if low == "none" else value
    return AccelConfig(**fields)


def random_generator(cfg: core.GeneratorConfig, device: torch.device) -> core.Generator:
    G = core.build_generator(cfg, seed=0)
    BG.randomise_zero_init(G, 0)
    core.compute_w_avg(G, num_samples=2000, seed=0)
    return G.to(device).requires_grad_(False)


def step_timer(device: torch.device):
    marks = []

    def tick(_p=None):
        sync(device)
        marks.append(time.perf_counter())
    return marks, tick


def bench_inversion(cfg: core.GeneratorConfig, args, device, accel: AccelConfig) -> list[dict]:
    from core.edits import inversion as I
    from core.optimize import FINISH

    import bench_invert as BI

    nets = BI.perceptual_nets(args.perceptual)
    nets = {k: v.to(device) for k, v in nets.items()}
    G = core.load_generator(args.checkpoint, device=device) if args.checkpoint else random_generator(cfg, device)
    if args.target:
        target = BI._load_target(args.target, G, device)
    else:
        with torch.no_grad():
            w = G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(1)).to(device), None,
                          truncation_psi=0.7)
            target = G.synthesis(w, noise_mode="const")
    real = bool(args.checkpoint and args.target and args.perceptual)
    print(f"\n== inversion: {G.img_resolution} px {G.arch} ({'real data' if real else 'random weights: times only'})"
          f"; accelerated = {accel.describe()}")
    method = I.DEFAULT_METHOD
    prior = I.compute_w_prior(G, args.prior_samples) if method == "ii2s" else None
    rows = []
    settings = [("plain", AccelConfig())] + ([("accelerated", accel)] if accel != AccelConfig() else [])
    for m in ("projector", method):
        for label, a in settings:
            set_accel(G, a)
            marks, tick = step_timer(device)
            sync(device)
            start = time.perf_counter()
            I.invert_image(G, target, method=m, num_steps=args.inv_steps + args.warmup, perceptual=nets,
                           prior=prior, callback=tick)
            per = [b - a_ for a_, b in zip([start] + marks, marks)][args.warmup:]
            s = statistics.median(per)
            rows.append(dict(section="inversion", method=m, accel=label, s_per_step=s))
            print(f"   {m:10s} {label:12s} {s:8.4f} s/step (median of {len(per)})")
    set_accel(G)

    # Time to the projector recipe's LPIPS after --ref-steps steps (LPIPS-VGG at 256 px, as bench_invert).
    small = I.downsample_to(target)
    eval_net = nets["lpips_vgg"]

    def lpips_of(p) -> Optional[float]:
        if "ws" not in p.params:
            return None
        noise = {k[len("noise/"):]: v for k, v in p.params.items() if k.startswith("noise/")}
        with torch.no_grad():
            img = G.synthesis(p.params["ws"], noise_mode="const", noise=noise or None)
            return float(eval_net(I.downsample_to(img), small).mean())

    last = {}
    t0 = time.perf_counter()
    I.invert_image(G, target, method="projector", num_steps=args.ref_steps, perceptual=nets,
                   callback=lambda p: last.__setitem__("lpips", lpips_of(p)) if p.step == p.total else None)
    goal = last["lpips"]
    print(f"   projector recipe: LPIPS {goal:.4f} after {args.ref_steps} steps ({time.perf_counter() - t0:.1f} s)")
    set_accel(G, accel)
    state = dict(eval_s=0.0, reached=None, steps=0)

    def cb(p):
        sync(device)
        state["steps"] = p.step
        if p.step % args.eval_every and p.step != p.total:
            return None
        e0 = time.perf_counter()
        lp = lpips_of(p)
        state["eval_s"] += time.perf_counter() - e0
        if lp is not None and lp <= goal:
            state["reached"] = (p.step, lp)
            return FINISH
        if time.perf_counter() - t0 - state["eval_s"] > args.lpips_timeout:
            return FINISH   # not reached in time: stop rather than run the recipe's every step
        return None

    sync(device)
    t0 = time.perf_counter()
    I.invert_image(G, target, method=method, perceptual=nets, prior=prior, callback=cb)
    wall = time.perf_counter() - t0 - state["eval_s"]
    set_accel(G)
    reached = state["reached"]
    row = dict(section="inversion_to_lpips", method=method, goal_lpips=goal, ref_steps=args.ref_steps,
               seconds=wall if reached else None, steps=reached[0] if reached else state["steps"],
               resolution=G.img_resolution, real_data=real, accel=accel.describe())
    rows.append(row)
    if reached:
        print(f"   ours ({method}, accelerated) reaches it at step {reached[0]}: {wall:.2f} s (LPIPS {reached[1]:.4f})")
    else:
        print(f"   ours ({method}) did not reach it in {state['steps']} steps ({wall:.2f} s; stops after "
              f"--lpips-timeout {args.lpips_timeout:g} s or the recipe's steps)")
    return rows


def bench_clip(cfg: core.GeneratorConfig, args, device, accel: AccelConfig, clip) -> list[dict]:
    import bench_clip_optimize as BCO
    from core.edits import clip_optimize as SC

    G = random_generator(cfg, device)
    latent = core.sample_latents(G, [1], space="w+", truncation_psi=0.7)
    text = clip.encode_text(["a face with a big smile"]).to(device)
    print(f"\n== CLIP Latent Optimize: {G.img_resolution} px {G.arch}; accelerated = {accel.describe()}")
    rows = []
    settings = [("plain", AccelConfig())] + ([("accelerated", accel)] if accel != AccelConfig() else [])
    for space in SC.SPACES[:1] if args.quick else SC.SPACES:
        for label, a in settings:
            set_accel(G, a)
            per = BCO.time_ours(G, latent, text, clip, space, args.clip_steps + 1, device)
            mem = peak_mib(lambda: BCO.time_ours(G, latent, text, clip, space, 2, device), device) \
                if args.memory_loops else None
            s = statistics.median(per)
            rows.append(dict(section="clip", space=space, accel=label, s_per_step=s, peak_mib=mem))
            print(f"   {space:3s} {label:12s} {s:8.4f} s/step  peak {fmt_mib(mem)} MiB")
    set_accel(G)
    return rows


# ------------------------------------------------------------------------------------------------
# Global directions, editing methods


def bench_directions(args, device, clip) -> list[dict]:
    import bench_global_directions as BGD
    from core.edits import global_directions as GD

    print(f"\n== global-direction precompute at 256 px (config-f, random weights), {args.gd_images} images/channel "
          f"timed, extrapolated to 100 and every channel")
    layers = None
    if args.quick:   # two layers only: a check of the script
        G = core.build_generator(BG.CONFIGS["f256"](), seed=0)
        layers = [layer.name for layer in GD.directions.reference_layers(G)][:2]
        del G
    r = BGD.bench_precompute(256, device, args.gd_images, 1, layers, clip, 1)
    # Layers not timed (--quick) count at the mean seconds per channel of the timed ones.
    per_ch = sum(x["prefix_s_per_channel"] * x["channels"] for x in r["layers"]) / r["channels_in_timed_layers"]
    minutes = per_ch * r["channels_total"] * (100 / args.gd_images) / 60
    print(f"   estimate: {minutes:.1f} min for 100 images x {r['channels_total']} channels "
          f"({r['layers_timed']}/{r['layers_total']} layers timed)")
    return [dict(section="directions", estimate_min=minutes, detail=r)]


def bench_edits(args, device, clip) -> list[dict]:
    rows = []
    res = 64 if args.quick else 1024
    cfg = tiny_stylegan2(res) if args.quick else BG.stylegan2_config(1024, 32768, 8)
    print(f"\n== editing methods ({res} px generator where one is used)")
    try:
        import bench_weight_shift as BWS
        G = random_generator(cfg, device)
        layer = "b16.conv1"
        for method in ("shift", "latent"):
            kw = dict(batch=1, steps=args.edit_steps + 1, layer=layer, loss="directional")
            per = BWS.step_times(G, clip, method, "single", device, **kw)
            mem = peak_mib(lambda: BWS.step_times(G, clip, method, "single", device, **{**kw, "steps": 2}), device) \
                if args.memory_loops else None
            name = "Weight Shift train" if method == "shift" else "CLIP Latent Optimize (W+)"
            rows.append(dict(section="edits", method=name, s_per_step=statistics.median(per), peak_mib=mem))
            print(f"   {name:28s} {statistics.median(per):8.4f} s/step  peak {fmt_mib(mem)} MiB")
    except Exception as e:  # noqa: BLE001 - one method's bench failing must not hide the others
        print(f"   weight shift: skipped ({type(e).__name__}: {e})")
    try:
        import bench_neural_style as BNS
        from core.losses import vgg19 as V
        size = 64 if args.quick else 512
        vgg = V.random_vgg19(0).to(device)
        gen = torch.Generator().manual_seed(0)
        content = torch.rand([1, 3, size, size], generator=gen).to(device)
        style = torch.rand([1, 3, size, size], generator=gen).to(device)
        per = BNS.time_ours(vgg, content, style, args.edit_steps, "gatys2016", device)
        mem = peak_mib(lambda: BNS.time_ours(vgg, content, style, 1, "gatys2016", device), device) \
            if args.memory_loops else None
        rows.append(dict(section="edits", method=f"Neural Style gatys2016 {size} px", s_per_step=statistics.median(per),
                         peak_mib=mem))
        print(f"   {'Neural Style ' + str(size) + ' px':28s} {statistics.median(per):8.4f} s/iteration  "
              f"peak {fmt_mib(mem)} MiB")
    except Exception as e:  # noqa: BLE001
        print(f"   neural style: skipped ({type(e).__name__}: {e})")
    cmd = [sys.executable, str(REPO / "bench" / "bench_encoders.py"), "--device", str(device), "--iters", "2",
           "--warmup", "1", "--kinds", "e4e" if args.quick else "e4e,psp,restyle_e4e",
           "--restyle-size", "64" if args.quick else "1024"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.encoder_timeout)
        tail = [line for line in out.stdout.splitlines() if line.strip()][-6:]
        print("   encoders (bench_encoders.py, ours only):\n" + "\n".join("     " + line for line in tail))
        rows.append(dict(section="edits", method="encoders", output=tail, rc=out.returncode))
    except subprocess.TimeoutExpired:
        print(f"   encoders: bench_encoders.py took over {args.encoder_timeout} s; skipped")
    print("   segment composite: run bench/bench_segment_composite.py (CPU; it has no --device option yet)")
    return rows


# ------------------------------------------------------------------------------------------------
# Acceptance


def acceptance(rows: list[dict], device: torch.device, quick: bool) -> list[str]:
    lines = []
    on_h100 = device.type == "cuda" and not quick
    where = "" if on_h100 else " [not the target setting: numbers are a check of the script]"
    gen = [r for r in rows if r["section"] == "generator"]
    for config in dict.fromkeys(r["config"] for r in gen):
        for batch in dict.fromkeys(r["batch"] for r in gen if r["config"] == config):
            rs = [r for r in gen if r["config"] == config and r["batch"] == batch]
            ours = [r for r in rs if r["variant"].startswith("ours")]
            base = next((r["nvidia_baseline"] for r in rs if "nvidia_baseline" in r), None)
            if base != "NVIDIA compiled ops":
                lines.append(f"forward {config} batch {batch}: NVIDIA compiled ops not measured")
                continue
            plain = next(r for r in ours if r["variant"] == "ours plain")
            best = max(ours, key=lambda r: r["speedup_vs_nvidia"])
            ok = plain["speedup_vs_nvidia"] >= TARGET_SPEEDUP or best["speedup_vs_nvidia"] >= TARGET_SPEEDUP
            lines.append(f"forward {config} batch {batch}: plain {plain['speedup_vs_nvidia']:.2f}x, best "
                         f"{best['speedup_vs_nvidia']:.2f}x ({best['variant']}) of NVIDIA compiled ops: "
                         f"{'PASS' if ok else 'FAIL'} (>= {TARGET_SPEEDUP:g}x; goal {GOAL_SPEEDUP:g}x "
                         f"{'met' if best['speedup_vs_nvidia'] >= GOAL_SPEEDUP else 'not met'})")
    fl = {r["side"]: r for r in rows if r["section"] == "flrelu"}
    if "NVIDIA compiled op" in fl and fl["ours"]["peak_mib"] is not None:
        o, n = fl["ours"]["peak_mib"], fl["NVIDIA compiled op"]["peak_mib"]
        lines.append(f"filtered_lrelu peak memory: ours {o:.0f} MiB vs NVIDIA compiled {n:.0f} MiB: "
                     f"{'PASS' if o <= n else 'FAIL'}")
    else:
        lines.append("filtered_lrelu peak memory vs NVIDIA's compiled op: not measured")
    inv = next((r for r in rows if r["section"] == "inversion_to_lpips"), None)
    if inv is not None:
        s = inv["seconds"]
        valid = inv["real_data"] and inv["resolution"] == 1024 and inv["ref_steps"] == 1000
        lines.append(f"inversion to the projector's {inv['ref_steps']}-step LPIPS at {inv['resolution']} px: "
                     + (f"{s:.2f} s" if s is not None else "not reached")
                     + (f": {'PASS' if s is not None and s <= TARGET_INVERSION_S else 'FAIL'} (<= {TARGET_INVERSION_S:g} s)"
                        if valid else " (needs --checkpoint/--target/--perceptual at 1024 px and --ref-steps 1000)"))
    gd = next((r for r in rows if r["section"] == "directions"), None)
    if gd is not None:
        lines.append(f"global-direction precompute 256 px: {gd['estimate_min']:.1f} min: "
                     f"{'PASS' if gd['estimate_min'] <= TARGET_PRECOMPUTE_MIN else 'FAIL'} (<= {TARGET_PRECOMPUTE_MIN:g} min)")
    print(f"\n== acceptance (issue 21){where}")
    for line in lines:
        print("   " + line)
    return lines


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps (a check of the script)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {SECTIONS}")
    p.add_argument("--configs", default=None, help="generator configs (default: the three 1024 px ones; quick: 64 px)")
    p.add_argument("--batch", default=None, help="batch sizes (default 1,8; quick 1,2)")
    p.add_argument("--switches", default=None,
                   help="our switches to time: nchw,tf32,bf16,fp16,triton,compile,graphs (default all on CUDA; CPU: nchw, "
                        "as inductor takes minutes to compile there and CPUs without bf16 units run it 20-80x slower)")
    p.add_argument("--iters", type=int, default=None, help="timed rounds (default 5; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2; quick 1)")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--nvidia-src", default=None, help="stylegan3 (or stylegan2-ada-pytorch) checkout; "
                   "default bench/reference/stylegan3 when it exists")
    p.add_argument("--inv-accel", default=None, help="switches of the accelerated inversion / CLIP runs "
                   "(default on CUDA compile=reduce-overhead,tf32=true; CPU: plain)")
    p.add_argument("--inv-steps", type=int, default=None, help="timed inversion steps (default 20; quick 2)")
    p.add_argument("--ref-steps", type=int, default=None, help="projector steps of the LPIPS goal (1000; quick 5)")
    p.add_argument("--eval-every", type=int, default=None, help="steps between LPIPS checks (default 10; quick 2)")
    p.add_argument("--prior-samples", type=int, default=None, help="II2S prior samples (100000; quick 2000)")
    p.add_argument("--lpips-timeout", type=float, default=30.0, help="inversion: give up reaching the goal "
                   "LPIPS after this many seconds (default 30)")
    p.add_argument("--checkpoint", default=None, help="inversion: a real generator checkpoint")
    p.add_argument("--target", default=None, help="inversion: an aligned face image")
    p.add_argument("--perceptual", default=None, help="inversion: folder with the real VGG16 / LPIPS weights")
    p.add_argument("--clip-steps", type=int, default=None, help="timed CLIP steps (default 10; quick 2)")
    p.add_argument("--gd-images", type=int, default=None, help="global directions: images timed per channel "
                   "(default 4; quick 1)")
    p.add_argument("--edit-steps", type=int, default=None, help="timed steps per editing method (5; quick 1)")
    p.add_argument("--encoder-timeout", type=int, default=300)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write every number as JSON here")
    args = p.parse_args(argv)
    q = args.quick

    def default(name, full, quick):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    default("batch", "1,8", "1,2")
    default("iters", 5, 2)
    default("warmup", 2, 1)
    default("inv_steps", 20, 2)
    default("ref_steps", 1000, 5)
    default("eval_every", 10, 2)
    default("prior_samples", 100_000, 2000)
    default("clip_steps", 10, 2)
    default("gd_images", 4, 1)
    default("edit_steps", 5, 1)
    args.memory_loops = args.memory and not q   # peak memory of the loops too (quick: the generator's only)
    cuda = args.device.startswith("cuda")
    if args.switches is None:
        args.switches = "nchw,tf32,bf16,fp16,triton,compile,graphs" if cuda else "nchw"
    args.switches = [s for s in args.switches.split(",") if s]
    if args.inv_accel is None:
        args.inv_accel = "compile=reduce-overhead,tf32=true" if cuda else ""
    args.batch = [int(b) for b in args.batch.split(",") if b]
    table = QUICK_CONFIGS if q else FULL_CONFIGS
    args.configs = [c for c in (args.configs or ",".join(table)).split(",") if c]
    known = {**FULL_CONFIGS, **QUICK_CONFIGS}
    bad = [c for c in args.configs if c not in known]
    if bad:
        p.error(f"unknown config(s) {bad}; choose from {sorted(known)}")
    args.sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    if args.nvidia_src is None and (REPO / "bench" / "reference" / "stylegan3").is_dir():
        args.nvidia_src = str(REPO / "bench" / "reference" / "stylegan3")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = header(device, args)
    nvidia = None
    if args.nvidia_src and any(s in args.sections for s in ("generator", "flrelu")):
        if Path(args.nvidia_src).is_dir():
            nvidia = Nvidia(args.nvidia_src, device)
            print(f"   NVIDIA reference: {nvidia.path} ({nvidia.src.flavour})")
        else:
            print(f"   NVIDIA reference: {args.nvidia_src} not found; NVIDIA columns skipped")
    else:
        print("   NVIDIA reference: none (--nvidia-src); NVIDIA columns skipped")
    known = {**FULL_CONFIGS, **QUICK_CONFIGS}
    accel = parse_accel(args.inv_accel)
    rows: list[dict] = []
    started = time.perf_counter()

    def section(name: str, fn: Callable[[], list[dict]]) -> None:
        if name not in args.sections:
            return
        t0 = time.perf_counter()
        try:
            rows.extend(fn())
        except Exception as e:  # noqa: BLE001 - one section failing must not lose the others' numbers
            print(f"\n!! section {name} failed: {type(e).__name__}: {e}")
            rows.append(dict(section=name, error=f"{type(e).__name__}: {e}"))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"   [{name}: {time.perf_counter() - t0:.0f} s]", flush=True)

    def save(summary=None) -> None:   # after every section, so a run stopped by a time limit keeps its numbers
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(dict(info, args=vars(args), results=rows, acceptance=summary), indent=1,
                                      default=str))

    try:
        for name in args.configs:
            section("generator", lambda: bench_generator(name, known[name](), args, device, nvidia))
            save()
        sg3t = tiny_stylegan3(64) if args.quick else BG.stylegan3_config(1024)
        section("flrelu", lambda: bench_flrelu(sg3t, args, device, nvidia))
        save()
        inv_cfg = tiny_stylegan2(64) if args.quick else BG.stylegan2_config(1024, 32768, 8)
        section("inversion", lambda: bench_inversion(inv_cfg, args, device, accel))
        save()
        clip = None
        if any(s in args.sections for s in ("clip", "directions", "edits")):
            from core.models.clip import random_clip
            clip = random_clip("ViT-B-32", seed=0, device=device)
        for name, fn in (("clip", lambda: bench_clip(inv_cfg, args, device, accel, clip)),
                         ("directions", lambda: bench_directions(args, device, clip)),
                         ("edits", lambda: bench_edits(args, device, clip))):
            section(name, fn)
            save()
    except KeyboardInterrupt:   # gpu_run.sh's time limit: report what was measured
        print("\n!! interrupted (time limit): the summary covers the sections that finished")
    summary = acceptance(rows, device, args.quick)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    save(summary)
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
