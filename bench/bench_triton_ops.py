"""Microbenchmark of the Triton kernels against the PyTorch paths (and NVIDIA's compiled CUDA ops): time and peak memory.

Two ops, on the shapes of real generators at 1024 px:
  filtered_lrelu   every distinct layer of StyleGAN3-T (and -R with --radial) at 1024 px: the layer's
                   filters, factors, padding, gain, slope and clamp, on its input [N, C, size, size];
  upfirdn2d_bias_act  StyleGAN2 config-f's upsampling path (4x4 [1,3,3,1] filter after the transposed
                   convolution, gain 4, then bias + lrelu * sqrt 2, clamp 256) at 256, 512 and 1024 px.

Implementations, interleaved per iteration in one process (ratios survive a loaded machine):
  triton   ours, impl="triton" (fused kernels; filtered_lrelu's backward is a fused Triton kernel too, the
           upfirdn2d_bias_act backward recomputes the PyTorch path)
  tri_x3   the same kernel with tl.dot in "tf32x3" (three TF32 tensor-core passes, about fp32 accuracy)
           instead of "ieee" fp32 FMA: the candidate if the FMA kernel is compute-bound
  torch    ours, impl="torch" (today's default: polyphase PyTorch path, channel-chunked for filtered_lrelu)
  ref      our `_ref` specification (materialises the upsampled tensor, like NVIDIA's reference path)
  nv_cuda  NVIDIA's compiled op (impl='cuda') and nv_ref its pure-PyTorch path, with --nvidia-src PATH
           (a stylegan3 checkout; the plugin builds on first use and needs nvcc; imported at run time, never copied)

For each: forward ms, forward+backward ms (gradient w.r.t. the input, what inversion needs), peak
memory above the inputs (MiB), and the max |difference| from `ref` (the correctness check on the GPU).

    python bench/bench_triton_ops.py                       # CUDA, batch 1 and 8
    python bench/bench_triton_ops.py --quick               # 3 layers + 1 StyleGAN2 shape, batch 1: < 1 minute
    python bench/bench_triton_ops.py --nvidia-src ../stylegan3 --radial --out bench/results/triton_h100.json
    python bench/bench_triton_ops.py --device cpu --smoke  # CPU, TRITON_INTERPRET=1, tiny shapes: checks the script

`run(...)` returns the rows, for bench_gpu.py to reuse.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------------------------------------
# Cases

def stylegan3_layers(radial: bool, batch: int, quick: bool, smoke: bool) -> list[dict]:
    """One case per distinct filtered_lrelu call of a StyleGAN3 1024 px generator (64 px for --smoke)."""
    import core

    syn = core.StyleGAN3Config(channel_base=32768 * (2 if radial else 1), channel_max=512 * (2 if radial else 1),
                               conv_kernel=1 if radial else 3, use_radial_filters=radial)
    if smoke:
        syn = core.StyleGAN3Config(channel_base=512, channel_max=8, conv_kernel=1 if radial else 3,
                                   use_radial_filters=radial)
    cfg = core.GeneratorConfig(arch="stylegan3", img_resolution=32 if smoke else 1024,
                               mapping=core.MappingConfig(num_layers=2), synthesis=syn)
    G = core.build_generator(cfg, seed=0)
    cases, seen = [], set()
    for name, lay in G.synthesis.named_children():
        if not hasattr(lay, "up_filter"):
            continue
        k = lay.conv_kernel
        size = lay.in_hw[0] + k - 1  # modulated_conv2d pads by k - 1
        key = (lay.up_factor, lay.down_factor, size, lay.out_channels, tuple(lay.padding), lay.is_torgb)
        if key in seen:
            continue
        seen.add(key)
        cases.append(dict(op="filtered_lrelu", name=f"{'R' if radial else 'T'}.{name}",
                          shape=[batch, lay.out_channels, size, size],
                          kw=dict(fu=lay.up_filter, fd=lay.down_filter, up=lay.up_factor, down=lay.down_factor,
                                  padding=list(lay.padding), gain=1.0 if lay.is_torgb else math.sqrt(2),
                                  slope=1.0 if lay.is_torgb else 0.2, clamp=lay.conv_clamp)))
    if quick:  # the largest up-2 layer, the up-4 layer, the critically sampled last layer
        up2 = [c for c in cases if c["kw"]["up"] == 2]
        up4 = [c for c in cases if c["kw"]["up"] == 4]
        picks = [max(up2, key=lambda c: c["shape"][2] * c["shape"][1])] + up4[-1:] + up2[-1:]
        cases = list({id(c): c for c in picks}.values())
    return cases


def stylegan2_upsample_cases(batch: int, quick: bool, smoke: bool) -> list[dict]:
    """The filter + bias + lrelu of StyleGAN2 config-f's upsampling conv at `res`: input is the transposed
    convolution's output [N, C, res + 1, res + 1] (3x3 kernel, stride 2), padded by 1 on each side."""
    from core.ops import setup_filter

    f = setup_filter([1, 3, 3, 1])
    resolutions = [16] if smoke else ([512] if quick else [256, 512, 1024])
    cases = []
    for res in resolutions:
        c = min(32768 // res, 512) if not smoke else 4
        cases.append(dict(op="upfirdn2d_bias_act", name=f"sg2f.up{res}", shape=[batch, c, res + 1, res + 1],
                          kw=dict(f=f, up=1, down=1, padding=[1, 1, 1, 1], gain=4.0, act="lrelu",
                                  alpha=0.2, act_gain=math.sqrt(2), clamp=256.0)))
    return cases


# ----------------------------------------------------------------------------------------------
# Implementations

def implementations(case: dict, device, nvidia) -> dict[str, Callable]:
    """name -> fn(x, b) for one case (filters moved to the device once)."""
    from core.ops import filtered_lrelu, filtered_lrelu_ref, upfirdn2d_bias_act, upfirdn2d_bias_act_ref
    from core.ops.upfirdn2d import parse_padding

    kw = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in case["kw"].items()}
    if case["op"] == "filtered_lrelu":
        def tri_x3(x, b):
            from core.ops.filtered_lrelu import _TritonFilteredLRelu

            args = dict(fu=kw["fu"], fd=kw["fd"], up=kw["up"], down=kw["down"],
                        padding=tuple(parse_padding(kw["padding"])), flip_filter=False, slope=kw["slope"],
                        gain=kw["gain"], clamp=kw["clamp"], precision="tf32x3")
            return _TritonFilteredLRelu.apply(x, b, args)

        fns = {
            "triton": lambda x, b: filtered_lrelu(x, b=b, impl="triton", **kw),
            "tri_x3": tri_x3,
            "torch": lambda x, b: filtered_lrelu(x, b=b, impl="torch", **kw),
            "ref": lambda x, b: filtered_lrelu_ref(x, b=b, **kw),
        }
        if nvidia is not None:
            flr = nvidia["filtered_lrelu"].filtered_lrelu
            fns["nv_cuda"] = lambda x, b: flr(x, b=b, impl="cuda", **kw)
            fns["nv_ref"] = lambda x, b: flr(x, b=b, impl="ref", **kw)
        return fns
    fns = {
        "triton": lambda x, b: upfirdn2d_bias_act(x, b=b, impl="triton", **kw),
        "torch": lambda x, b: upfirdn2d_bias_act(x, b=b, impl="torch", **kw),
        "ref": lambda x, b: upfirdn2d_bias_act_ref(x, b=b, **kw),
    }
    if nvidia is not None:
        ufd, ba = nvidia["upfirdn2d"], nvidia["bias_act"]
        u = dict(up=kw["up"], down=kw["down"], padding=kw["padding"], gain=kw["gain"])
        a = dict(act=kw["act"], alpha=kw["alpha"], gain=kw["act_gain"], clamp=kw["clamp"])
        fns["nv_cuda"] = lambda x, b: ba.bias_act(ufd.upfirdn2d(x, kw["f"], impl="cuda", **u), b, impl="cuda", **a)
        fns["nv_ref"] = lambda x, b: ba.bias_act(ufd.upfirdn2d(x, kw["f"], impl="ref", **u), b, impl="ref", **a)
    return fns


def load_nvidia(path: Optional[str]) -> Optional[dict]:
    if path is None:
        return None
    path = str(Path(path).resolve())
    if not Path(path, "torch_utils", "ops", "filtered_lrelu.py").exists():
        raise FileNotFoundError(f"--nvidia-src {path!r} has no torch_utils/ops/filtered_lrelu.py; pass the root "
                                "of a stylegan3 checkout")
    sys.path.insert(0, path)
    return {op: importlib.import_module(f"torch_utils.ops.{op}") for op in ("filtered_lrelu", "upfirdn2d", "bias_act")}


# ----------------------------------------------------------------------------------------------
# Timing

def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable, x, b, backward: bool, device) -> tuple[float, float]:
    """(seconds, peak MiB above what was allocated before) of one forward or forward+backward."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    _sync(device)
    t0 = time.perf_counter()
    if backward:
        xg = x.detach().requires_grad_(True)
        y = fn(xg, b)
        (g,) = torch.autograd.grad(y, xg, torch.ones_like(y))
        del y, g, xg
    else:
        with torch.no_grad():
            y = fn(x, b)
        del y
    _sync(device)
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if cuda else float("nan")
    return dt, peak


def bench_case(case: dict, device, dtype, nvidia, iters: int, warmup: int) -> dict:
    import torch

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(case["shape"], generator=gen) * 2).to(device=device, dtype=dtype)
    b = (torch.randn(case["shape"][1], generator=gen) * 0.2).to(device=device, dtype=dtype)
    fns = implementations(case, device, nvidia)
    row = dict(op=case["op"], name=case["name"], shape=case["shape"], dtype=str(dtype).replace("torch.", ""),
               impls={})
    with torch.no_grad():
        ref = fns["ref"](x, b).float()
    for name, fn in fns.items():
        try:
            with torch.no_grad():
                y = fn(x, b)
            row["impls"][name] = dict(max_abs_diff=float((y.float() - ref).abs().max()), fwd=[], fwdbwd=[])
            del y
        except Exception as e:  # e.g. NVIDIA's plugin failing to build: report it, keep the others
            row["impls"][name] = dict(error=f"{type(e).__name__}: {e}"[:300])
    ok = [n for n, r in row["impls"].items() if "error" not in r]
    for i in range(warmup + iters):
        for name in ok:  # interleaved: every implementation sees the same machine state
            for mode in ("fwd", "fwdbwd"):
                dt, peak = measure(fns[name], x, b, mode == "fwdbwd", device)
                if i >= warmup:
                    r = row["impls"][name]
                    r[mode].append(dt)
                    r[f"{mode}_peak_mib"] = max(peak, r.get(f"{mode}_peak_mib", 0.0))
    for name in ok:
        r = row["impls"][name]
        for mode in ("fwd", "fwdbwd"):
            r[f"{mode}_ms"] = statistics.median(r.pop(mode)) * 1e3
    return row


def print_row(row: dict) -> None:
    print(f"\n{row['op']} {row['name']} {row['shape']} {row['dtype']}")
    print(f"  {'impl':8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd MiB':>9} {'bwd MiB':>9} {'max|diff|':>10}  ms / triton's (fwd / fwd+bwd; > 1: triton faster)")
    tri = row["impls"].get("triton", {})
    for name, r in row["impls"].items():
        if "error" in r:
            print(f"  {name:8} {r['error']}")
            continue
        ratio = (f"{r['fwd_ms'] / tri['fwd_ms']:.2f}x / {r['fwdbwd_ms'] / tri['fwdbwd_ms']:.2f}x"
                 if "fwd_ms" in tri else "")
        print(f"  {name:8} {r['fwd_ms']:9.3f} {r['fwdbwd_ms']:11.3f} {r['fwd_peak_mib']:9.1f} "
              f"{r['fwdbwd_peak_mib']:9.1f} {r['max_abs_diff']:10.2e}  {ratio}")


def run(*, device: str = "cuda", batches=(1, 8), quick: bool = False, smoke: bool = False, radial: bool = False,
        nvidia_src: Optional[str] = None, dtype: str = "float32", iters: int = 10, warmup: int = 3,
        verbose: bool = True) -> list[dict]:
    """Benchmark every case; returns one row per (case, batch). On CPU only with TRITON_INTERPRET=1 (--smoke)."""
    import torch

    dev = torch.device(device)
    dt = getattr(torch, dtype)
    nvidia = load_nvidia(nvidia_src)
    rows = []
    for batch in batches:
        cases = stylegan3_layers(False, batch, quick, smoke)
        if radial:
            cases += stylegan3_layers(True, batch, quick, smoke)
        cases += stylegan2_upsample_cases(batch, quick, smoke)
        for case in cases:
            row = bench_case(case, dev, dt, nvidia, iters, warmup)
            row["batch"] = batch
            rows.append(row)
            if verbose:
                print_row(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--quick", action="store_true", help="3 StyleGAN3 layers and one StyleGAN2 shape, batch 1")
    p.add_argument("--smoke", action="store_true", help="tiny shapes; with --device cpu runs under TRITON_INTERPRET=1")
    p.add_argument("--radial", action="store_true", help="add StyleGAN3-R's layers (2-D radial down filters)")
    p.add_argument("--nvidia-src", default=None, help="stylegan3 checkout: adds NVIDIA's compiled and reference ops")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--out", default=None, help="write the rows as JSON")
    args = p.parse_args()
    if args.device == "cpu":
        if not args.smoke:
            p.error("the kernels run on CUDA; on CPU only `--smoke` (interpreted, tiny shapes) is meaningful")
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures GPU kernels (use --device cpu --smoke to check the script)")
    batches = (1,) if args.quick else tuple(int(b) for b in args.batch.split(","))
    iters = args.iters if args.iters is not None else (1 if args.smoke else 5 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 2 if args.quick else 3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu (interpreted)"
    print(f"device {name}, torch {torch.__version__}, load average {load:.1f}, {iters} timed runs after {warmup}")
    rows = run(device=args.device, batches=batches, quick=args.quick, smoke=args.smoke, radial=args.radial,
               nvidia_src=args.nvidia_src, dtype=args.dtype, iters=iters, warmup=warmup)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.1f} at the start, {load_after:.1f} at the end")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(device=name, torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
