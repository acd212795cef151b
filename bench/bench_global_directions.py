"""Benchmark StyleCLIP global directions: the edit (α/β change → new S latent) and the relevance precompute.

(a) Edit latency on StyleGAN2 config-f generators (random weights; C = 9088 S channels at 1024 px, 6048 of
    them measured, D = 512 as ViT-B/32): our `global_direction_edit` with its cached tables, for an α/β change
    (same text: the input latent's S and relevance·Δt are unchanged) and for a new text, and two straightforward implementations timed in the same run:
    the reference's way in numpy (fs3·Δt, threshold, per-layer split × σ, per-layer add) and a naive torch one
    (full [C, D] product and masks on every call). Target: < 50 ms on CPU at 1024 px. Also printed: w_to_s,
    paid once per new input latent.
(b) Relevance precompute at 256 px (config-f, real ViT-B-32 architecture with random weights): seconds per
    channel for a few channels of every conv layer, with the prefix cache and with plain full renders,
    extrapolated linearly to the reference's 100 images and every channel; and, for the first layer, the
    reference's way of rendering (one image per forward pass).

    python bench/bench_global_directions.py                       # CPU, all threads
    python bench/bench_global_directions.py --quick               # edit + 3 layers of the precompute
    python bench/bench_global_directions.py --device cuda --precompute-res 1024 --num-images 8 --out gd.json

Timings do not depend on the weights, so random ones are used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import core  # noqa: E402
from bench_generator import CONFIGS  # noqa: E402  (the config-f generators, defined once there)
from core.edits import global_directions as GD  # noqa: E402
from core.models.clip import random_clip  # noqa: E402
from core.networks.style_space import flatten_s, s_layout  # noqa: E402

CONFIG_OF_RES = {256: "f256", 512: "f512", 1024: "f1024"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn, iters: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_directions(G, *, embed_dim: int = 512, seed: int = 0) -> GD.GlobalDirections:
    """Statistics from a few mapped samples and random unit relevance rows for the non-ToRGB channels."""
    stats = GD.compute_s_statistics(G, num_samples=512, batch_size=256)
    mask = torch.cat([torch.full([layer.channels], not layer.is_torgb) for layer in s_layout(G)])
    gen = torch.Generator().manual_seed(seed)
    relevance = torch.zeros([mask.numel(), embed_dim])
    relevance[mask] = torch.nn.functional.normalize(torch.randn([int(mask.sum()), embed_dim], generator=gen), dim=-1)
    return GD.GlobalDirections(stats=stats, relevance=relevance, done=mask,
                               layers=tuple((layer.name, layer.channels) for layer in s_layout(G)),
                               generator_name=G.info.name, clip_name="ViT-B-32", num_images=100)


# ------------------------------------------------------------------------------------------------
# Straightforward edits, timed against ours


def edit_numpy_reference(s_layers: list, fs3: np.ndarray, dt: np.ndarray, std_layers: list, torgb: list,
                         alpha: float, beta: float) -> list:
    """The reference's way (its data layout: per-layer arrays, fs3 of the conv channels only), written plainly."""
    r = fs3 @ dt
    ds = r.copy()
    ds[np.abs(r) < beta] = 0
    m = np.abs(ds).max()
    if m > 0:
        ds /= m
    out, start = [], 0
    for s, std, is_rgb in zip(s_layers, std_layers, torgb):
        if is_rgb:
            out.append(s.copy())
            continue
        part = ds[start:start + s.shape[1]]
        start += s.shape[1]
        out.append(s + alpha * part * std)
    return out


def edit_naive_torch(s: torch.Tensor, relevance: torch.Tensor, done: torch.Tensor, std: torch.Tensor,
                     dt: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Full [C, D] product and masks on every call (nothing precomputed)."""
    r = (relevance @ (dt / dt.norm())) * done
    keep = (r.abs() >= beta) & done
    r = torch.where(keep, r, torch.zeros_like(r))
    m = r.abs().max()
    return s + alpha * (r / m * std if m > 0 else torch.zeros_like(r))


def bench_edit(res: int, device: torch.device, iters: int, clip) -> dict:
    G = core.build_generator(CONFIGS[CONFIG_OF_RES[res]](), seed=0).to(device)
    G.info.name = f"config-f {res} (random)"
    d = random_directions(G)
    dt = torch.nn.functional.normalize(torch.randn(512, generator=torch.Generator().manual_seed(1)), dim=0)
    if clip is not None:  # a real Δt from the real architecture's text tower (random weights)
        dt = GD.direction_from_text(clip, "a smiling face", "a face")
    ws = G.mapping(torch.randn([1, G.z_dim], device=device), None, truncation_psi=0.7)
    with torch.no_grad():
        s = flatten_s(G.synthesis.w_to_s(ws))
    alpha, beta = 4.1, 0.1 * float((d.relevance @ dt).abs().max())  # a β that keeps a few % of the channels
    dt = dt.to(device)

    t0 = time.perf_counter()
    GD.global_direction_edit(s, d, dt, alpha=alpha, beta=beta)
    _sync(device)
    cold = time.perf_counter() - t0

    ours = _median_s(lambda: GD.global_direction_edit(s, d, dt, alpha=alpha, beta=beta), iters, device)
    # A new text each call (alternating two Δt defeats the per-Δt cache of relevance·Δt).
    dts = [dt, torch.nn.functional.normalize(dt + 0.1 * torch.randn_like(dt), dim=0)]
    turn = [0]

    def new_text():
        turn[0] ^= 1
        GD.global_direction_edit(s, d, dts[turn[0]], alpha=alpha, beta=beta)
    ours_new_dt = _median_s(new_text, iters, device)

    def to_s():
        with torch.no_grad():
            flatten_s(G.synthesis.w_to_s(ws))
    w_to_s = _median_s(to_s, iters, device)  # once per input latent, not per α/β change

    rel, done, std = d.relevance.to(device), d.done.to(device), d.stats.std.to(device)
    naive = _median_s(lambda: edit_naive_torch(s, rel, done, std, dt, alpha, beta), iters, device)

    layout = s_layout(G)
    s_np = [t.cpu().numpy() for t in G.synthesis.w_to_s(ws).values()]
    std_np = list(np.split(d.stats.std.numpy(), np.cumsum([layer.channels for layer in layout])[:-1]))
    fs3 = d.relevance[d.done].numpy()
    dt_np = dt.cpu().numpy()
    torgb = [layer.is_torgb for layer in layout]
    ref = _median_s(lambda: edit_numpy_reference(s_np, fs3, dt_np, std_np, torgb, alpha, beta), iters, device)

    # Same numbers as the reference's way?
    out, count = GD.global_direction_edit(s, d, dt, alpha=alpha, beta=beta)
    ref_out = np.concatenate(edit_numpy_reference(s_np, fs3, dt_np, std_np, torgb, alpha, beta), axis=1)
    diff = float(np.abs(out.cpu().numpy() - ref_out).max())
    return {"resolution": res, "channels": d.num_channels, "measured": d.num_done, "embed_dim": d.embed_dim,
            "beta": beta, "channels_edited": count, "ours_s": ours, "ours_new_text_s": ours_new_dt,
            "ours_first_call_s": cold,
            "w_to_s_s": w_to_s, "naive_torch_s": naive, "reference_numpy_s": ref,
            "max_abs_diff_vs_reference": diff}


# ------------------------------------------------------------------------------------------------
# Precompute


def bench_precompute(res: int, device: torch.device, num_images: int, channels: int, layer_names, clip,
                     repeats: int) -> dict:
    G = core.build_generator(CONFIGS[CONFIG_OF_RES[res]](), seed=0).to(device)
    G.info.name = f"config-f {res} (random)"
    stats = GD.compute_s_statistics(G, num_samples=512, batch_size=256)
    renderer = GD.render.Renderer(G.synthesis, G.img_resolution)
    layers = GD.directions.reference_layers(G)
    if layer_names:
        layers = [layer for layer in layers if layer.name in layer_names]
    offsets, start = {}, 0
    for layer in s_layout(G):
        offsets[layer.name] = start
        start += layer.channels
    batch = 2 * num_images * channels  # one pass per chunk, as compute_relevance batches them
    kw = dict(alpha=5.0, num_images=num_images, batch_size=batch)
    with torch.no_grad():
        base = G.synthesis.w_to_s(GD.statistics.LatentSampler(G, 5, 0.7, None).ws(num_images))
        first = layers[0]
        sl = slice(offsets[first.name], offsets[first.name] + first.channels)
        for _ in range(3):  # warm-up: first-touch allocations and kernel selection (slow for the first passes)
            GD.render.relevance_rows(renderer, clip, base, None, 0, first.name, range(channels), stats.mean[sl],
                               stats.std[sl], use_prefix=False, **kw)

        # The reference renders one image per forward pass (manipulate.py GenerateImg), then encodes them all.
        def timed_plain(render_batch: int) -> float:
            best = math.inf
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                GD.render.relevance_rows(renderer, clip, base, None, 0, first.name, range(channels), stats.mean[sl],
                                   stats.std[sl], alpha=5.0, num_images=num_images, batch_size=render_batch,
                                   use_prefix=False)
                _sync(device)
                best = min(best, (time.perf_counter() - t0) / channels)
            return best
        ref_style, batched = timed_plain(1), timed_plain(batch)
        rows = []
        prefix, at = None, 0
        for layer in layers:
            sl = slice(offsets[layer.name], offsets[layer.name] + layer.channels)
            stage = renderer.stage_of[layer.name]
            _sync(device)
            t0 = time.perf_counter()
            prefix, at = renderer.run(base, prefix, at, stage), stage   # once per layer, shared by its channels
            _sync(device)
            t_prefix = time.perf_counter() - t0
            chans = range(channels)
            timed = {}
            for mode, use_prefix in (("prefix", True), ("plain", False)) * repeats:  # interleaved, best of
                _sync(device)
                t0 = time.perf_counter()
                out = GD.render.relevance_rows(renderer, clip, base, prefix, stage, layer.name, chans, stats.mean[sl],
                                         stats.std[sl], use_prefix=use_prefix, **kw)
                _sync(device)
                timed[mode] = min(timed.get(mode, math.inf), (time.perf_counter() - t0) / channels)
                timed[mode + "_rows"] = out
            agree = float((timed["prefix_rows"] - timed["plain_rows"]).abs().max())
            rows.append({"layer": layer.name, "channels": layer.channels, "prefix_s_per_channel": timed["prefix"],
                         "plain_s_per_channel": timed["plain"], "prefix_render_s": t_prefix,
                         "max_abs_diff_prefix_vs_plain": agree})
            print(f"    {layer.name:10s} {layer.channels:4d} ch  prefix {timed['prefix']:7.2f} s/ch  "
                  f"plain {timed['plain']:7.2f} s/ch  x{timed['plain'] / timed['prefix']:5.2f}  "
                  f"|diff| {agree:.1e}", flush=True)
    scale = 100 / num_images  # renders and encodes grow linearly with the images per channel
    sampled = {r["layer"] for r in rows}
    all_layers = GD.directions.reference_layers(G)
    total_prefix = sum(r["prefix_s_per_channel"] * r["channels"] for r in rows) * scale
    total_plain = sum(r["plain_s_per_channel"] * r["channels"] for r in rows) * scale
    return {"resolution": res, "num_images_timed": num_images, "channels_timed_per_layer": channels, "repeats": repeats,
            "layers": rows, "layers_timed": len(rows), "layers_total": len(all_layers),
            "channels_in_timed_layers": sum(r["channels"] for r in rows),
            "channels_total": sum(layer.channels for layer in all_layers),
            "all_layers_timed": sampled == {layer.name for layer in all_layers},
            "estimate_100_images_prefix_h": total_prefix / 3600, "estimate_100_images_plain_h": total_plain / 3600,
            "reference_style_batch1_s_per_channel": ref_style,
            "first_layer_batched_plain_s_per_channel": batched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--edit-res", default="256,1024", help="generator resolutions for the edit latency")
    ap.add_argument("--iters", type=int, default=20, help="timed edits per implementation (median)")
    ap.add_argument("--precompute-res", type=int, default=256, help="generator resolution for the precompute (0: skip)")
    ap.add_argument("--num-images", type=int, default=2, help="images per channel timed (extrapolated to 100)")
    ap.add_argument("--channels", type=int, default=1, help="channels timed per layer (one pass)")
    ap.add_argument("--repeats", type=int, default=2, help="timings per layer and mode (the fastest is kept)")
    ap.add_argument("--layers", default="", help="comma-separated S layers to time (default: every conv layer)")
    ap.add_argument("--quick", action="store_true", help="time only 3 layers of the precompute")
    ap.add_argument("--clip-arch", default="ViT-B-32")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clip = random_clip(args.clip_arch, device=device)
    result = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "clip_arch": args.clip_arch, "edit": [], "precompute": None}
    print(f"global directions on {device} ({torch.get_num_threads()} threads, torch {torch.__version__})")

    t0 = time.perf_counter()
    GD.direction_from_text(clip, "a brand new prompt", "a face")
    new_prompt = time.perf_counter() - t0
    cached = _median_s(lambda: GD.direction_from_text(clip, "a brand new prompt", "a face"), args.iters, device)
    result["direction_from_text"] = {"new_prompts_s": new_prompt, "cached_s": cached}
    print(f"  direction_from_text ({len(GD.STYLECLIP_TEMPLATES)} templates): two new prompts {new_prompt:.2f} s, "
          f"cached {cached * 1e3:.2f} ms")

    print("  (a) edit latency (median), config-f random weights, D = 512")
    for res in [int(r) for r in args.edit_res.split(",") if r]:
        e = bench_edit(res, device, args.iters, clip)
        result["edit"].append(e)
        print(f"    {res:4d} px: C {e['channels']} ({e['measured']} measured), {e['channels_edited']} edited | ours "
              f"{e['ours_s'] * 1e3:6.2f} ms, new text {e['ours_new_text_s'] * 1e3:.2f} ms (first call "
              f"{e['ours_first_call_s'] * 1e3:.1f} ms) | naive torch {e['naive_torch_s'] * 1e3:6.2f} ms "
              f"(x{e['naive_torch_s'] / e['ours_s']:.1f}), reference-style numpy {e['reference_numpy_s'] * 1e3:6.2f} ms "
              f"(x{e['reference_numpy_s'] / e['ours_s']:.1f}) | max |ours - reference| "
              f"{e['max_abs_diff_vs_reference']:.1e}  {'within' if e['ours_s'] < 0.05 else 'ABOVE'} the 50 ms target; "
              f"(w_to_s of a new input latent: {e['w_to_s_s'] * 1e3:.1f} ms)")

    if args.precompute_res:
        names = [n.strip() for n in args.layers.split(",") if n.strip()]
        if args.quick and not names:
            names = ["b4.conv1", f"b{args.precompute_res // 4}.conv0", f"b{args.precompute_res}.conv1"]
        print(f"  (b) relevance precompute, config-f {args.precompute_res} px, {args.clip_arch}: "
              f"{args.num_images} images x {args.channels} channel(s) per layer timed")
        p = bench_precompute(args.precompute_res, device, args.num_images, args.channels, names, clip, args.repeats)
        result["precompute"] = p
        which = "all" if p["all_layers_timed"] else f"the {p['layers_timed']} timed"
        print(f"    extrapolated to 100 images and {which} layers ({p['channels_in_timed_layers']} of "
              f"{p['channels_total']} channels): prefix cache {p['estimate_100_images_prefix_h']:.1f} h, plain "
              f"renders {p['estimate_100_images_plain_h']:.1f} h (x{p['estimate_100_images_plain_h'] / p['estimate_100_images_prefix_h']:.2f})")
        print(f"    first layer, one image per render+encode pass (the reference renders one at a time): {p['reference_style_batch1_s_per_channel']:.2f} s/ch vs "
              f"batched {p['first_layer_batched_plain_s_per_channel']:.2f} s/ch "
              f"(x{p['reference_style_batch1_s_per_channel'] / p['first_layer_batched_plain_s_per_channel']:.2f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
