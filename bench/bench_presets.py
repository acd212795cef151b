"""Benchmark the optimising nodes' presets (quick / balanced): how long each one takes on this machine.

For every optimising method (the four inversions, CLIP Latent Optimize, Train Latent Mapper, Compute Global
Directions) and every generator config it runs the method's own core function, as the node calls it with the preset's
values (`core.edits.presets`), on random weights (timings do not depend on them): the Demo Generator's network
(`demoNNN`: z/w 128, channel_base 4096, channel_max 128, 2 mapping layers, as nodes/generator.py builds it) and a
full-size StyleGAN2 config-f (`f256`: 512 channels, 8 mapping layers), random-weight CLIP ViT-B/32
(`core.models.clip.random_clip`), random-weight LPIPS/VGG16 and ArcFace.

What a preset costs = its set-up (II2S's prior from 10^6 samples, the mapper's training latents, the global
directions' statistics; all timed whole) + its steps × the seconds of a step (the lower quartile of the timed
steps: see `typical`). By default `--steps` steps are timed after one warm-up step (what the nodes record in `user/stylegan_studio/step_costs.json` is the same
seconds per step); `--full` runs every step of the preset instead and reports the run's wall time. Global
directions count channels: the relevance is timed over `--gd-chunks` chunks of channels (after a warm-up chunk) with
the first preset's images per channel, and scaled to every channel and to the other presets' images per channel.

    python bench/bench_presets.py                                   # demo64,demo128,demo256,f256; quick,balanced
    python bench/bench_presets.py --configs demo128 --full --presets quick --kinds inversion --methods ii2s
    python bench/bench_presets.py --configs f256 --kinds inversion --out bench/results/presets.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core.edits import clip_optimize as CO  # noqa: E402
from core.edits import global_directions as GD  # noqa: E402
from core.edits import inversion as I  # noqa: E402
from core.edits import latent_mapper as M  # noqa: E402
from core.edits.presets import PRESETS, format_seconds, get_preset, methods  # noqa: E402
from core.losses import perceptual as P  # noqa: E402
from core.models.clip import random_clip  # noqa: E402
from core.optimize import FINISH  # noqa: E402

import bench_generator as BG  # noqa: E402


def typical(times: list[float]) -> float:
    """The seconds of a step on this machine: the lower quartile of the timed steps. On a machine shared with other
    work single steps take up to 10x longer while another process runs (seen here: 0.3 s steps between 2-8 s
    ones); the lower quartile is the machine's own speed, the median (also reported) what the load left."""
    ordered = sorted(times)
    return ordered[(len(ordered) - 1) // 4]


def demo_config(resolution: int) -> core.GeneratorConfig:
    # nodes/generator.build_demo_generator's network (nodes/ imports ComfyUI-relative modules: not imported here)
    return core.GeneratorConfig(arch="stylegan2", z_dim=128, w_dim=128, img_resolution=resolution,
                                mapping=core.MappingConfig(num_layers=2),
                                synthesis=core.StyleGAN2Config(channel_base=4096, channel_max=128, conv_clamp=256))


CONFIGS = {"demo64": lambda: demo_config(64), "demo128": lambda: demo_config(128),
           "demo256": lambda: demo_config(256), "f256": lambda: BG.stylegan2_config(256, 32768, 8)}


class Ticks:
    """Callback recording when each step ended (and its phase); `stop_after` steps, then FINISH."""

    def __init__(self, stop_after: int = 0):
        self.start = time.perf_counter()
        self.marks: list[tuple[float, str, int]] = []
        self.stop_after = stop_after

    def __call__(self, p=None, *_):
        self.marks.append((time.perf_counter(), getattr(p, "phase", ""), int(getattr(p, "step", 0) or 0)))
        if self.stop_after and len(self.marks) >= self.stop_after:
            return FINISH
        return None

    def step_seconds(self, phase: str = "") -> list[float]:
        """Durations of the steps of `phase` ('' = all), the first step of each phase left out (warm-up) unless it
        is the only one (PTI's tuning stops as soon as its LPIPS is low enough)."""
        out, first, prev, prev_phase = [], [], self.start, None
        for t, ph, _ in self.marks:
            if not phase or ph == phase:
                (out if ph == prev_phase else first).append(t - prev)
            prev, prev_phase = t, ph
        return out or first

    def first(self) -> float:
        return self.marks[0][0] - self.start


def row(config: str, kind: str, method: str, preset: str, setup: float, per_step: dict, steps: dict,
        measured: float | None = None) -> dict:
    estimate = setup + sum(per_step[k] * steps[k] for k in steps)
    return {"config": config, "kind": kind, "method": method, "preset": preset, "steps": steps,
            "seconds_per_step": per_step, "setup_s": setup, "estimate_s": estimate, "measured_s": measured}


def bench_inversion(name, G, nets, args, rows):
    with torch.no_grad():
        w = G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(1)), None,
                      truncation_psi=0.7)
        target = G.synthesis(w)
    prior, prior_s = None, 0.0
    for method in [m for m in methods("inversion") if not args.methods or m in args.methods]:
        if method == "ii2s" and prior is None:
            t0 = time.perf_counter()
            prior = I.compute_w_prior(G)  # the node computes it once per generator (cached on disk after)
            prior_s = time.perf_counter() - t0
        for preset in args.presets:
            v = get_preset("inversion", method, preset).values
            n, tune = (v["num_steps"], v.get("tune_steps", 0)) if args.full else (args.steps + 1, args.steps + 1)
            tune = tune if v.get("tune_steps") else 0
            ticks = Ticks()
            t0 = time.perf_counter()
            I.invert_image(G, target, method=method, num_steps=n, tune_steps=tune, perceptual=nets, prior=prior,
                           callback=ticks)
            wall = time.perf_counter() - t0
            per = {"num_steps": typical(ticks.step_seconds("latent") or ticks.step_seconds())}
            steps = {"num_steps": v["num_steps"]}
            if tune:
                per["tune_steps"] = typical(ticks.step_seconds("tune"))
                steps["tune_steps"] = v["tune_steps"]
            setup = max(0.0, ticks.first() - per["num_steps"]) + (prior_s if method == "ii2s" else 0.0)
            rows.append(row(name, "inversion", method, preset, setup, per, steps,
                            wall + (prior_s if method == "ii2s" else 0.0) if args.full else None))
            report(rows[-1])
            if not args.full:
                break  # the seconds per step do not depend on the preset: the other presets are scaled
        if not args.full:
            for preset in args.presets[1:]:
                v = get_preset("inversion", method, preset).values
                steps = {k: v[k] for k in rows[-1]["steps"]}
                rows.append(row(name, "inversion", method, preset, rows[-1]["setup_s"], rows[-1]["seconds_per_step"],
                                steps))
                report(rows[-1])


def bench_clip(name, G, clip, args, rows):
    text = clip.encode_text(["a face with a big smile"])
    latent = core.sample_latents(G, [0], space="w", truncation_psi=0.7)
    first = None
    for preset in args.presets:
        v = get_preset("clip_optimize", "", preset).values
        if first is None or args.full:
            n = v["num_steps"] if args.full else args.steps + 1
            ticks = Ticks()
            t0 = time.perf_counter()
            CO.clip_optimize(G, latent, text, clip, config=dataclasses.replace(CO.DEFAULTS, num_steps=n),
                             callback=ticks)
            wall = time.perf_counter() - t0
            per = typical(ticks.step_seconds())
            first = (max(0.0, ticks.first() - per), per)
        rows.append(row(name, "clip_optimize", "", preset, first[0], {"num_steps": first[1]},
                        {"num_steps": v["num_steps"]}, wall if args.full else None))
        report(rows[-1])


def bench_mapper(name, G, clip, id_loss, args, rows):
    text = clip.encode_text(["a face with a big smile"])
    first = None
    for preset in args.presets:
        v = get_preset("latent_mapper", "", preset).values
        if first is None or args.full:
            n = v["num_steps"] if args.full else args.steps + 1
            ticks = Ticks()
            t0 = time.perf_counter()
            M.train_latent_mapper(G, clip, text, config=dataclasses.replace(M.DEFAULTS, num_steps=n), id_loss=id_loss,
                                  callback=ticks, preview_every=10 ** 9)
            wall = time.perf_counter() - t0
            per = typical(ticks.step_seconds())
            first = (max(0.0, ticks.first() - per), per)
        rows.append(row(name, "latent_mapper", "", preset, first[0], {"num_steps": first[1]},
                        {"num_steps": v["num_steps"]}, wall if args.full else None))
        report(rows[-1])


def bench_global_directions(name, G, clip, args, rows):
    per_image = None  # seconds per channel and image: the relevance's cost grows linearly with the images
    for preset in args.presets:
        v = get_preset("global_directions", "", preset).values
        t0 = time.perf_counter()
        stats = GD.compute_s_statistics(G, num_samples=v["num_samples"])
        stats_s = time.perf_counter() - t0
        measured = None
        if per_image is None or args.full:
            ticks = Ticks(stop_after=0 if args.full else args.gd_chunks + 2)  # the start call, a warm-up chunk
            t0 = time.perf_counter()
            result = GD.compute_relevance(G, clip, stats, num_images=v["num_images"], callback=ticks)
            wall = time.perf_counter() - t0
            channels = result.relevance.shape[0]
            chunks = ticks.marks[1:]  # after the start call and the warm-up chunk
            rates = [(b[0] - a[0]) / (b[2] - a[2]) for a, b in zip(chunks, chunks[1:]) if b[2] > a[2]]
            per_image = typical(rates) / v["num_images"]
            measured = stats_s + wall if args.full else None
        r = row(name, "global_directions", "", preset, stats_s, {"channels": per_image * v["num_images"]},
                {"channels": channels}, measured)
        r["num_images"], r["num_samples"] = v["num_images"], v["num_samples"]
        rows.append(r)
        report(r)


def report(r: dict) -> None:
    per = ", ".join(f"{k} {v:.3f} s" for k, v in r["seconds_per_step"].items())
    steps = " + ".join(f"{v:,}" for v in r["steps"].values())
    measured = f"; whole run {format_seconds(r['measured_s'])}" if r["measured_s"] is not None else ""
    label = f"{r['kind']}{'/' + r['method'] if r['method'] else ''}"
    print(f"  {r['config']:8s} {label:28s} {r['preset']:9s} {steps:>10s} steps x ({per}) + set-up "
          f"{r['setup_s']:.1f} s = {format_seconds(r['estimate_s'])}{measured}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="demo64,demo128,demo256,f256", help=f"from {sorted(CONFIGS)}")
    ap.add_argument("--presets", default="quick,balanced", help=f"from {PRESETS}")
    ap.add_argument("--kinds", default="inversion,clip_optimize,latent_mapper,global_directions")
    ap.add_argument("--methods", default="", help="inversion methods to time (default: all)")
    ap.add_argument("--steps", type=int, default=3, help="steps timed after one warm-up step")
    ap.add_argument("--gd-chunks", type=int, default=2, help="global directions: chunks of channels timed")
    ap.add_argument("--full", action="store_true", help="run every step of each preset (slow at 256 px on a CPU)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    args.presets = args.presets.split(",")
    args.methods = [m for m in args.methods.split(",") if m]
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = args.kinds.split(",")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {load:.1f}; "
          f"{'whole runs' if args.full else f'{args.steps} timed steps per method'}")
    nets = {"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
            "vgg16_features": P.random_vgg16_features(seed=2)}
    clip = random_clip("ViT-B-32")
    from core.losses.arcface import IDLoss, random_arcface

    id_loss = IDLoss(random_arcface())
    rows: list[dict] = []
    for name in args.configs.split(","):
        G = core.build_generator(CONFIGS[name](), seed=0)
        BG.randomise_zero_init(G, 0)
        core.compute_w_avg(G, num_samples=2000, seed=0)
        print(f"\n== {name}: {G.arch} {G.img_resolution} px, w_dim {G.w_dim}, num_ws {G.num_ws}", flush=True)
        if "inversion" in kinds:
            bench_inversion(name, G, nets, args, rows)
        if "clip_optimize" in kinds:
            bench_clip(name, G, clip, args, rows)
        if "latent_mapper" in kinds:
            bench_mapper(name, G, clip, id_loss, args, rows)
        if "global_directions" in kinds:
            bench_global_directions(name, G, clip, args, rows)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.1f} at the start, {load_after:.1f} at the end")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                                        "load_start": load, "load_end": load_after, "full": args.full,
                                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
