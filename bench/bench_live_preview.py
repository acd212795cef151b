"""Benchmark Direction Edit's live preview: milliseconds per preview through the real route handler
(`nodes.live_preview.preview_route`: checks, apply_directions, the reduced render, JPEG encoding) at several preview
sizes, against a full-size render of the same edit (what a queued run renders), for generators of 256 and 1024 px.

Generators have random weights in NVIDIA's architectures (StyleGAN2 config-f channel widths: 256 px with
channel_base 16384, 1024 px with 32768; 8 mapping layers) and the pack's Demo Generator (channel_max 128), which the
example workflow and the browser test use. For each generator and each iteration, the full render and every
preview size are timed one after another (interleaved), so their ratios survive a loaded machine; the load average
is printed before and after. The preview's budget is 300 ms (`BUDGET_MS`): the route halves the preview size of a
source whose preview took longer, so the last column says which size the route settles on.

    python bench/bench_live_preview.py            # demo256, f256, f1024; previews 256/128/64/32 px; 3 iterations
    python bench/bench_live_preview.py --quick    # one iteration (< 3 min on 2 cores)
    python bench/bench_live_preview.py --configs demo256,f256 --iters 5 --px 256,128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from demo import load_pack  # noqa: E402  (the pack imported as ComfyUI imports it)

pack = load_pack()
core = pack.core
live = sys.modules[f"{pack.__name__}.nodes.live_preview"]
L = core.latents


def build(name: str):
    """(generator, description) for a config name."""
    if name.startswith("demo"):
        res = int(name[4:])
        syn = core.StyleGAN2Config(channel_base=4096, channel_max=128, conv_clamp=256)
        cfg = core.GeneratorConfig(arch="stylegan2", img_resolution=res, mapping=core.MappingConfig(num_layers=2),
                                   synthesis=syn)
        what = f"Demo Generator {res} px (channel_max 128)"
    else:
        res = int(name[1:])
        base = 32768 if res >= 1024 else 16384
        syn = core.StyleGAN2Config(channel_base=base, channel_max=512, conv_clamp=256)
        cfg = core.GeneratorConfig(arch="stylegan2", img_resolution=res, mapping=core.MappingConfig(num_layers=8),
                                   synthesis=syn)
        what = f"StyleGAN2 config-f {res} px (channel_base {base}, random weights)"
    G = core.build_generator(cfg, seed=0).eval()
    G.info.name = name
    return G, what


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="demo256,f256,f1024", help="demo<res> and/or f<res>, comma-separated")
    ap.add_argument("--px", default="256,128,64,32", help="preview sizes asked for, comma-separated")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one iteration, previews 256 and 64 px")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.quick:
        args.iters, args.px = 1, "256,64"
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(p) for p in args.px.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load()} (before)")
    print(f"budget {live.BUDGET_MS:.0f} ms per preview; times are medians of {args.iters} interleaved iteration(s)\n")
    header = f"{'generator':<8} {'full render':>12} " + " ".join(f"{f'preview {p}':>16}" for p in sizes) + \
        f" {'route settles on':>18}"
    print(header, flush=True)
    for name in args.configs.split(","):
        G, what = build(name)
        latent = L.sample_latents(G, [0], space="w")
        directions = core.directions.sefa(G, num=4)
        strengths = iter(range(1, 10_000))

        def edit(values):
            return core.directions.apply_directions(G, latent, [(directions, 0, values["strength"])])

        def check(body):
            return {"strength": live.finite_number(body, "strength", -100, 100)}

        token = live.keep_source(f"bench-{name}", G, edit, check)
        source = live._sources.get(token)
        full, previews = [], {p: [] for p in sizes}
        with torch.inference_mode():
            # Warm-up: one untimed full render and one preview per size (first calls allocate and pick kernels).
            L.synthesize(G, edit({"strength": 0.5}), chunk_size=1)
            for p in sizes:
                source.px = 0
                live.preview_route({"token": token, "px": p, "strength": 0.5})
            for it in range(args.iters):
                t0 = time.perf_counter()
                L.synthesize(G, edit({"strength": float(next(strengths) % 20)}), chunk_size=1)
                full.append((time.perf_counter() - t0) * 1000)
                for p in sizes:
                    source.px = 0  # a fixed size for the table (no adaptation between sizes)
                    answer = live.preview_route({"token": token, "px": p, "strength": float(next(strengths) % 20)})
                    previews[p].append((answer["ms"], answer["px"]))
        # What the adaptive route settles on, starting from 256 px (a few drags' worth of requests).
        source.px = 0
        settled = None
        for _ in range(4 if args.quick else 6):
            settled = live.preview_route({"token": token, "px": 256, "strength": float(next(strengths) % 20)})
        med = statistics.median(full)
        cells = []
        for p in sizes:
            ms = statistics.median(m for m, _ in previews[p])
            got = previews[p][0][1]
            cells.append(f"{ms:7.0f} ms@{got:<4d}({med / ms:4.1f}x)")
        print(f"{name:<8} {med:9.0f} ms " + " ".join(f"{c:>16}" for c in cells) +
              f" {settled['px']:>6d} px {settled['ms']:5.0f} ms   {what}", flush=True)
        live._sources.pop(token)
    print(f"\nload average {load()} (after). 'ms@N': the route's time for a preview rendered at N px (StyleGAN2: the "
          "synthesis stops after the N px block), '(Kx)': full render time / preview time.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
