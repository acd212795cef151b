"""Benchmark encoder inversion: seconds per image at 256 px input for e4e, pSp and ReStyle (5 passes), ours against
the reference code (pixel2style2pixel, encoder4editing, restyle-encoder) on the same random weights in the same run.

The encoders are full size (IR-SE50, 18 style layers of w 512: the FFHQ 1024 px files' networks). ReStyle's passes
also render the generator between passes: both sides use the same generator (ours, StyleGAN2 config-f at
--restyle-size px), so the comparison is of the encoder and the loop. The reference is imported from checkouts
(--psp / --e4e / --restyle, folders of the fetched repositories); without them only our numbers are printed.

    flock /tmp/sgs-bench.lock python bench/bench_encoders.py --threads 2 \
        --psp /tmp/enc_ref/eladrich+pixel2style2pixel --e4e /tmp/enc_ref/omertov+encoder4editing \
        --restyle /tmp/enc_ref/yuval-alaluf+restyle-encoder
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import platform
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


def timed(fns, warmup: int, iters: int) -> list[float]:
    """Best seconds of each function, run alternately (a shared machine's load then affects both alike)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [min(t) for t in times]


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
    return ref.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--kinds", default="e4e,psp,restyle_e4e")
    ap.add_argument("--restyle-size", type=int, default=256, help="generator resolution rendered between passes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--psp", type=Path, default=None)
    ap.add_argument("--e4e", type=Path, default=None)
    ap.add_argument("--restyle", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    dev = torch.device(args.device)
    x = (torch.rand(args.batch, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dev)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
          f", device {dev}, batch {args.batch}")
    for kind in args.kinds.split(","):
        arch, progressive, in_ch = KINDS[kind]
        size = args.restyle_size if kind.startswith("restyle") else 1024
        num_ws = 2 * (size.bit_length() - 1) - 2
        cfg = EncoderConfig(arch=arch, progressive=progressive, num_ws=num_ws, input_channels=in_ch)
        net = random_encoder(cfg, 0)
        latent_avg = torch.randn(1, 512).repeat(num_ws, 1) * 0.1
        info = ENC.EncoderInfo(name=f"random {kind}", kind=kind, encoder_type="", stylegan_size=size,
                               start_from_latent_avg=True, decoder=None)
        ref = reference_encoder(kind, args, net, num_ws)  # before ours is fused (it takes the references' names)
        enc = ENC.Encoder(ENC.prepare_for_inference(copy.deepcopy(net)), latent_avg, info).to(dev)
        G = core.build_generator(core.GeneratorConfig(
            arch="stylegan2", img_resolution=size, mapping=core.MappingConfig(num_layers=8),
            synthesis=core.StyleGAN2Config(channel_base=32768, channel_max=512, conv_clamp=256)), seed=0).eval().to(dev)
        iters = ENC.DEFAULT_RESTYLE_ITERATIONS if enc.info.iterative else 1

        def run_ours():
            return EI.encode_image(enc, G, x, num_iterations=iters, render=False)

        ref_s = None
        if ref is None:
            (ours,) = timed([run_ours], args.warmup, args.iters)
        else:
            ref = ref.to(dev)
            la = latent_avg.to(dev)

            def run_ref():  # the references' inference: codes + latent_avg; ReStyle's run_on_batch loop
                if not enc.info.iterative:
                    return ref(x) + la.repeat(x.shape[0], 1, 1)
                avg = nn.AdaptiveAvgPool2d((256, 256))(G.synthesis(la[None], noise_mode="const"))[0]
                y_hat, latent = None, None
                for it in range(iters):
                    inp = torch.cat([x, avg[None].repeat(x.shape[0], 1, 1, 1) if it == 0 else y_hat], dim=1)
                    codes = ref(inp) + (latent if latent is not None else la.repeat(x.shape[0], 1, 1))
                    y_hat, latent = G.synthesis(codes, noise_mode="const"), codes
                    y_hat = nn.AdaptiveAvgPool2d((256, 256))(y_hat)
                return latent

            ours, ref_s = timed([run_ours, run_ref], args.warmup, args.iters)
        per = ours / args.batch
        line = f"{kind:12s} ({iters} pass{'es' if iters > 1 else ''}): ours {per:.3f} s/image"
        if ref_s is not None:
            line += f", reference {ref_s / args.batch:.3f} s/image, speed-up {ref_s / ours:.2f}x"
        else:
            line += " (reference skipped: pass its checkout folder)"
        print(line, flush=True)
        rows.append({"kind": kind, "iterations": iters, "ours_s_per_image": per,
                     "reference_s_per_image": None if ref_s is None else ref_s / args.batch})
    if args.out:
        args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "device": str(dev), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
