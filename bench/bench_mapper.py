"""Benchmark StyleCLIP latent-mapper training: seconds per step (batch 2, the reference's settings) for a
StyleGAN2 config-f generator at 256 and 1024 px, with random weights (timings do not depend on them), open_clip's
ViT-B-32 architecture with random weights, and optionally the ArcFace identity term (the reference's default).

Prints the median seconds per step of --iters timed steps after --warmup steps, and what the reference's 50k
steps would take at that speed.

    python bench/bench_mapper.py                           # CPU, 256 and 1024 px, with the identity term
    python bench/bench_mapper.py --sizes 256 --iters 5 --no-id
    python bench/bench_mapper.py --device cuda --out bench/results/mapper_cuda.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import core  # noqa: E402
from core.edits import latent_mapper as M  # noqa: E402
from core.models.clip import random_clip  # noqa: E402


def config_f(resolution: int) -> core.GeneratorConfig:
    return core.GeneratorConfig(arch="stylegan2", img_resolution=resolution, mapping=core.MappingConfig(num_layers=8),
                                synthesis=core.StyleGAN2Config(channel_base=32768, channel_max=512, conv_clamp=256))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,1024", help="generator resolutions, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--no-id", action="store_true", help="leave out the ArcFace identity term (id_lambda 0)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clip = random_clip("ViT-B-32", device=device)
    text = clip.encode_text(["a face with a big smile"])
    id_loss = None
    if not args.no_id:
        from core.losses.arcface import IDLoss, random_arcface

        id_loss = IDLoss(random_arcface().to(device))
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        G = core.build_generator(config_f(size), seed=0).to(device)
        config = dataclasses.replace(M.DEFAULTS, num_steps=args.warmup + args.iters, num_train_latents=64,
                                     id_lambda=0.0 if args.no_id else M.DEFAULTS.id_lambda)
        stamps: list[float] = []

        def tick(p: M.MapperProgress) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        M.train_latent_mapper(G, clip, text, config=config, id_loss=id_loss, callback=tick,
                              preview_every=10 ** 9)
        times = [b - a for a, b in zip([t0] + stamps[:-1], stamps)][args.warmup:]
        med = statistics.median(times)
        row = {"resolution": size, "num_ws": G.num_ws, "seconds_per_step": med, "steps_timed": len(times),
               "hours_for_50k_steps": med * 50_000 / 3600, "id_term": not args.no_id}
        results.append(row)
        print(f"{size:>5} px (num_ws {G.num_ws}): {med:.3f} s/step (median of {len(times)}), "
              f"50k steps = {row['hours_for_50k_steps']:.1f} h" + ("" if args.no_id else ", with the ID term"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                                        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                                        "results": results}, indent=2))


if __name__ == "__main__":
    main()
