"""Benchmark StyleCLIP latent optimisation (CLIP Latent Optimize): seconds per step, ours vs the reference's loop.

For each config it builds a random generator and open_clip's ViT-B-32 architecture with random weights (timings
do not depend on the weights) and times `--steps` steps (the first one not counted) of

  * ours: `core.edits.clip_optimize.clip_optimize` in W+ and in S, at the reference's settings (Adam 0.1 with its ramp,
    λ_L2 0.008, no identity term);
  * the reference's loop (StyleCLIP `optimization/run_optimization.py` + `criteria/clip_loss.py`), restated
    here: Adam on w+, the generator's forward, CLIP's input made by `Upsample(scale_factor=7)` then
    `AvgPool2d(resolution // 32)` (a 7168² intermediate at 1024 px), the same loss, on our generator;
  * with `--nvidia-src PATH` (a stylegan2-ada-pytorch checkout), that loop on NVIDIA's network with the same
    weights: the closest runnable stand-in for the reference's rosinality network, whose fused ops need CUDA.

Prints s/step and the ratios reference / ours.

    python bench/bench_clip_optimize.py --configs f256 --steps 3
    python bench/bench_clip_optimize.py --configs f256,f1024 --nvidia-src ../stylegan2-ada-pytorch
    python bench/bench_clip_optimize.py --device cuda --configs f256,f1024 --steps 10
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core.edits import clip_optimize as SC  # noqa: E402
from core.models.clip import random_clip  # noqa: E402

import bench_generator as BG  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(G, latent, text, clip, space: str, steps: int, device) -> list[float]:
    marks = []

    def tick(_p):
        sync(device)
        marks.append(time.perf_counter())

    config = dataclasses.replace(SC.DEFAULTS, num_steps=steps, space=space)
    start = time.perf_counter()
    SC.clip_optimize(G, latent, text, clip, config=config, callback=tick)
    marks = [start] + marks
    return [b - a for a, b in zip(marks, marks[1:])][1:]


def time_reference_loop(synthesis, ws_start: torch.Tensor, text: torch.Tensor, clip, steps: int, device,
                        resolution: int) -> list[float]:
    """The reference's optimisation loop, step for step (its lr schedule, loss, and CLIP preprocessing)."""
    upsample = torch.nn.Upsample(scale_factor=7)
    avg_pool = torch.nn.AvgPool2d(kernel_size=resolution // 32)
    model = clip.model
    w = ws_start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=SC.DEFAULTS.lr)
    marks = [time.perf_counter()]
    for step in range(steps):
        t = step / steps
        for g in opt.param_groups:
            g["lr"] = SC.projector_lr(t, SC.DEFAULTS.lr, SC.DEFAULTS.lr_rampup, SC.DEFAULTS.lr_rampdown)
        img = synthesis(w)
        x = avg_pool(upsample(img))
        emb = F.normalize(model.encode_image(x), dim=-1)
        c_loss = (1 - (emb * text).sum(-1)).mean()  # 1 - logits/100, as clip_loss.py
        loss = c_loss + SC.DEFAULTS.l2_lambda * ((ws_start - w) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync(device)
        marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])][1:]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="f256,f1024", help=f"comma-separated, from {sorted(BG.CONFIGS)}")
    ap.add_argument("--steps", type=int, default=3, help="steps per loop (the first is not timed)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--nvidia-src", default=None, help="stylegan2-ada-pytorch checkout")
    ap.add_argument("--skip-reference", action="store_true", help="time ours only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    nvidia = BG.NvidiaSource(args.nvidia_src, allow_plugins=device.type == "cuda") if args.nvidia_src else None
    clip = random_clip("ViT-B-32", seed=0, device=device)
    text = clip.encode_text(["a face with a big smile"]).to(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; CLIP ViT-B-32 (random weights)")
    for name in args.configs.split(","):
        G = core.build_generator(BG.CONFIGS[name](), seed=0)
        BG.randomise_zero_init(G, 0)
        core.compute_w_avg(G, num_samples=2000, seed=0)
        G = G.to(device).requires_grad_(False)  # as loaded generators are: only the latent gets gradients
        latent = core.sample_latents(G, [1], space="w+", truncation_psi=0.7)
        print(f"\n== {name}: {G.arch} {G.img_resolution} px")
        ours = {}
        for space in SC.SPACES:
            times = time_ours(G, latent, text, clip, space, args.steps, device)
            ours[space] = statistics.median(times)
            print(f"   ours {space:3s} {ours[space]:8.3f} s/step (median of {len(times)})")
        if args.skip_reference:
            continue
        ws = core.latent_to_ws(G, latent).to(device)
        times = time_reference_loop(lambda w: G.synthesis(w, noise_mode="const"), ws, text, clip, args.steps,
                                    device, G.img_resolution)
        t = statistics.median(times)
        print(f"   reference loop, our generator        {t:8.3f} s/step; reference / ours (w+) {t / ours['w+']:.2f}x")
        if nvidia is not None and G.arch == "stylegan2":
            ref = nvidia.build(G.cpu()).to(device)
            G.to(device)
            times = time_reference_loop(lambda w: ref.synthesis(w, noise_mode="const"), ws, text, clip,
                                        args.steps, device, G.img_resolution)
            t = statistics.median(times)
            print(f"   reference loop, NVIDIA's generator   {t:8.3f} s/step; reference / ours (w+) "
                  f"{t / ours['w+']:.2f}x")


if __name__ == "__main__":
    main()
