"""Benchmark encoder inversion: seconds per image at 256 px input for e4e, pSp and ReStyle-e4e (5 passes), ours
against the reference code (pixel2style2pixel, encoder4editing, restyle-encoder) on the same random weights.

What is timed (the same work on both sides):
- e4e / pSp: one encoder pass, codes + latent_avg (`encode_image(render=False)` against the reference's
  `encoder(x) + latent_avg`).
- ReStyle-e4e: `--restyle-iterations` passes, each followed by a render of the generator (ours, StyleGAN2 config-f at
  `--restyle-size` px, constant noise) pooled to 256 px, the last render being the output image (ours:
  `encode_image(render=True)`; the reference: restyle-encoder's `run_on_batch` loop). The start image G(w̄) is
  rendered once outside the timing on the reference side, as its inference script does, and kept by ours after the
  warm-up call.
The encoders are full size (IR-SE50, 18 style layers of w 512 for e4e / pSp: the FFHQ 1024 px files' networks; 14
for ReStyle at the default 256 px generator). Both sides get the same weights (the reference loads ours, strictly)
and their outputs are compared (max |difference| is printed).

Load: this machine may be shared. Ours and the reference run alternately, one image each, in one process (the order
swapped every round), and the result is the median over rounds of reference / ours, for wall-clock seconds and for
the process's CPU seconds (time.process_time: less sensitive to other processes taking the cores, but it also counts
the worker threads' spinning). The load average is printed before each network. Numbers from a quiet machine are
the ones to quote; under load trust the ratios, not the seconds.

    flock /tmp/sgs-bench.lock python bench/bench_encoders.py --threads 2 \\
        --psp /tmp/enc_ref/eladrich+pixel2style2pixel --e4e /tmp/enc_ref/omertov+encoder4editing \\
        --restyle /tmp/enc_ref/yuval-alaluf+restyle-encoder            # add --quick for a run of ~1-3 minutes
    python bench/bench_encoders.py --device cuda --gpu-target [--psp ... --e4e ... --restyle ...]

`--quick`: one warm-up and 2 rounds per network (instead of 1 and 5). `--device cuda`: the same comparison on the
GPU (synchronised timings). `--gpu-target`: batch throughput (images/s) at batches `--gpu-batches` (1,8,32) for each
network, ours and the reference, on `--device` (the issue's H100 measurement). The reference checkouts are folders of
the fetched repositories (`fetch github:eladrich/pixel2style2pixel` etc.); without them only our numbers are printed.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "scripts")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core.edits import encoder_inversion as EI  # noqa: E402
from core.models import encoders as ENC  # noqa: E402
from core.models.encoders.networks import EncoderConfig, random_encoder  # noqa: E402

KINDS = {"psp": ("fpn", False, 3), "e4e": ("fpn", True, 3), "restyle_e4e": ("backbone", True, 6)}


def load_avg() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unavailable"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def interleaved(fns: dict, warmup: int, rounds: int, dev: torch.device) -> dict:
    """Run the functions alternately, one call each per round (order reversed every other round). Returns per name
    the lists of wall and CPU seconds per round."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync(dev)
    out = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync(dev)
            t, c = time.perf_counter(), time.process_time()
            fns[name]()
            sync(dev)
            out[name]["wall"].append(time.perf_counter() - t)
            out[name]["cpu"].append(time.process_time() - c)
    return out


def reference_encoder(kind: str, args, ours: nn.Module, num_ws: int):
    """The reference class with our weights (strict), or None when its checkout is not given."""
    from make_encoder_fixtures import use_repo  # stubs the CUDA ops module the references import

    path = {"psp": args.psp, "e4e": args.e4e, "restyle_e4e": args.restyle}[kind]
    if path is None or not Path(path).is_dir():
        return None
    use_repo(Path(path))
    if kind == "psp":
        ref = importlib.import_module("models.encoders.psp_encoders").GradualStyleEncoder(
            50, "ir_se", Namespace(input_nc=3, n_styles=num_ws))
    elif kind == "e4e":
        ref = importlib.import_module("models.encoders.psp_encoders").Encoder4Editing(
            50, "ir_se", Namespace(stylegan_size=2 ** ((num_ws + 2) // 2)))
    else:
        ref = importlib.import_module("models.encoders.restyle_e4e_encoders").ProgressiveBackboneEncoder(
            50, "ir_se", num_ws, Namespace(input_nc=6))
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref.eval().requires_grad_(False)


def build(kind: str, args, dev: torch.device):
    """(our Encoder, the reference encoder or None, generator, latent_avg) for one kind, same random weights."""
    arch, progressive, in_ch = KINDS[kind]
    size = args.restyle_size if kind.startswith("restyle") else 1024
    num_ws = 2 * (size.bit_length() - 1) - 2
    net = random_encoder(EncoderConfig(arch=arch, progressive=progressive, num_ws=num_ws, input_channels=in_ch), 0)
    if kind.startswith("restyle"):
        # Small codes per pass: with codes of order 1 the random loop feeds ever larger images back into the
        # encoder (|w+| near 1000 after 5 passes), where rounding differences grow chaotically and no output
        # comparison is possible. The timing does not depend on the values.
        with torch.no_grad():
            for style in net.styles:
                style.linear.weight.mul_(0.02)
                style.linear.bias.mul_(0.02)
    latent_avg = torch.randn(num_ws, 512, generator=torch.Generator().manual_seed(1)) * 0.1
    info = ENC.EncoderInfo(name=f"random {kind}", kind=kind, encoder_type="", stylegan_size=size,
                           start_from_latent_avg=True, decoder=None)
    ref = reference_encoder(kind, args, net, num_ws)  # before ours is prepared (the references' names)
    enc = ENC.Encoder(ENC.prepare_for_inference(net), latent_avg, info).to(dev)
    G = core.build_generator(core.GeneratorConfig(
        arch="stylegan2", img_resolution=size, mapping=core.MappingConfig(num_layers=8),
        synthesis=core.StyleGAN2Config(channel_base=32768, channel_max=512, conv_clamp=256)), seed=0).eval().to(dev)
    return enc, (None if ref is None else ref.to(dev)), G, latent_avg.to(dev)


def runners(kind: str, enc, ref, G, la: torch.Tensor, x: torch.Tensor, iters: int):
    """Zero-argument functions for ours and the reference (None without a checkout), each returning (w+, image)."""

    def ours():
        res = EI.encode_image(enc, G, x, num_iterations=iters, render=enc.info.iterative)
        return res.latent.tensor, res.image

    if ref is None:
        return ours, None
    n = x.shape[0]
    pool = nn.AdaptiveAvgPool2d((256, 256))  # the references' face_pool

    if not enc.info.iterative:
        def reference():  # the references' inference: codes + latent_avg
            return ref(x) + la.repeat(n, 1, 1), None
        return ours, reference

    with torch.no_grad():
        avg = pool(G.synthesis(la[None], noise_mode="const"))[0]  # restyle's get_average_image, once per run

    def reference():  # restyle-encoder's run_on_batch (inference_iterative.py)
        y_hat, latent = None, None
        for it in range(iters):
            inp = torch.cat([x, avg[None].repeat(n, 1, 1, 1) if it == 0 else y_hat], dim=1)
            codes = ref(inp) + (latent if latent is not None else la.repeat(n, 1, 1))
            y_hat, latent = G.synthesis(codes, noise_mode="const"), codes
            out = y_hat
            y_hat = pool(y_hat)
        return latent, out

    return ours, reference


def parity(ours, reference) -> str:
    (w_o, img_o), (w_r, img_r) = ours(), reference()
    dw = (w_o.cpu().float() - w_r.cpu().float()).abs().max().item()
    text = f"max |Δw+| {dw:.2e} (|w+| up to {w_r.abs().max().item():.2f})"
    if img_r is not None:
        text += f", max |Δimage| {(img_o.cpu().float() - img_r.cpu().float()).abs().max().item():.2e}"
    return text


def gpu_target(args, dev: torch.device) -> list[dict]:
    rows = []
    for kind in args.kinds.split(","):
        enc, ref, G, la = build(kind, args, dev)
        iters = args.restyle_iterations if enc.info.iterative else 1
        for b in args.gpu_batches:
            x = torch.rand(b, 3, 256, 256, generator=torch.Generator().manual_seed(0)).to(dev) * 2 - 1
            ours, reference = runners(kind, enc, ref, G, la, x, iters)
            fns = {"ours": ours} if reference is None else {"ours": ours, "reference": reference}
            with torch.inference_mode():
                t = interleaved(fns, args.warmup, args.rounds, dev)
            row = {"kind": kind, "batch": b, "iterations": iters}
            line = f"{kind:12s} batch {b:3d}:"
            for name in fns:
                ips = b / statistics.median(t[name]["wall"])
                row[f"{name}_images_per_s"] = ips
                line += f" {name} {ips:8.1f} images/s"
            if reference is not None:
                line += f", speed-up {row['ours_images_per_s'] / row['reference_images_per_s']:.2f}x"
            print(line, flush=True)
            rows.append(row)
        del enc, ref, G
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", "--iters", type=int, default=5, help="timed rounds (one call of each side per round)")
    ap.add_argument("--quick", action="store_true", help="1 warm-up and 2 rounds per network")
    ap.add_argument("--kinds", default="e4e,psp,restyle_e4e")
    ap.add_argument("--restyle-size", type=int, default=256, help="generator resolution rendered between passes")
    ap.add_argument("--restyle-iterations", type=int, default=ENC.DEFAULT_RESTYLE_ITERATIONS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu-target", action="store_true", help="batch throughput at --gpu-batches")
    ap.add_argument("--gpu-batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    ap.add_argument("--psp", type=Path, default=None)
    ap.add_argument("--e4e", type=Path, default=None)
    ap.add_argument("--restyle", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.rounds = 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} CPUs, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
          + f", batch {args.batch}, {args.warmup} warm-up + {args.rounds} rounds; {load_avg()}", flush=True)
    if args.gpu_target:
        rows = gpu_target(args, dev)
    else:
        rows = []
        x = (torch.rand(args.batch, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dev)
        for kind in args.kinds.split(","):
            enc, ref, G, la = build(kind, args, dev)
            iters = args.restyle_iterations if enc.info.iterative else 1
            ours, reference = runners(kind, enc, ref, G, la, x, iters)
            fns = {"ours": ours} if reference is None else {"ours": ours, "reference": reference}
            label = f"{kind} ({iters} pass{'es' if iters > 1 else ''})"
            with torch.inference_mode():
                check = parity(ours, reference) if reference is not None else ""
                print(f"{label}: {load_avg()}" + (f"; ours vs reference: {check}" if check else ""), flush=True)
                t = interleaved(fns, args.warmup, args.rounds, dev)
            row = {"kind": kind, "iterations": iters, "batch": args.batch}
            for name in fns:
                for m in ("wall", "cpu"):
                    row[f"{name}_{m}_s_per_image"] = statistics.median(t[name][m]) / args.batch
            line = (f"  ours {row['ours_wall_s_per_image']:.3f} s/image (CPU {row['ours_cpu_s_per_image']:.3f} s)")
            if reference is not None:
                for m in ("wall", "cpu"):
                    row[f"speedup_{m}"] = statistics.median(r / o for r, o in zip(t["reference"][m], t["ours"][m]))
                line += (f", reference {row['reference_wall_s_per_image']:.3f} s/image (CPU "
                         f"{row['reference_cpu_s_per_image']:.3f} s); speed-up (median of per-round reference/ours):"
                         f" wall {row['speedup_wall']:.2f}x, CPU {row['speedup_cpu']:.2f}x")
            else:
                line += " (reference skipped: pass its checkout folder)"
            print(line, flush=True)
            rows.append(row)
            del enc, ref, G, ours, reference
            gc.collect()
        print(load_avg())
    if args.out:
        args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "device": str(dev), "rows": rows},
                                       indent=1))


if __name__ == "__main__":
    main()
