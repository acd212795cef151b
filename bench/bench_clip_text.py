"""Benchmark the template-averaged CLIP text embedding of a new prompt (StyleCLIP global directions: 80 ImageNet
templates): open_clip's full 77-token pass against our padding-free passes.

The architecture is open_clip's (ViT-B-32 by default) with random weights, since timings do not depend on the
weights. Prints the median seconds of --iters runs per mode, the speed-up over the full pass and the largest
difference of the features (which must stay at float rounding, ≤ 1e-5).

    python bench/bench_clip_text.py                        # ViT-B-32, CPU, all threads
    python bench/bench_clip_text.py --threads 4 --iters 5
    python bench/bench_clip_text.py --arch ViT-L-14 --device cuda --out bench/results/clip_text_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.models.clip import IMAGENET_TEMPLATES, random_clip  # noqa: E402

PROMPTS = ("a face with a big smile", "a person with blonde hair and blue eyes", "angry", "an old man with a beard",
           "a tanned face", "a woman wearing glasses and red lipstick")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--iters", type=int, default=3, help="prompts timed per mode (each a new prompt)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clip = random_clip(args.arch, device=device)
    templates = list(IMAGENET_TEMPLATES)
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" {i}") for i in range(args.iters)]

    modes = {"full 77 tokens": dict(truncate=False),
             "cut at longest": dict(truncate=True, group_by_length=False),
             "grouped by length": dict(truncate=True, group_by_length=True)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    max_diff = {m: 0.0 for m in modes}
    with torch.no_grad():
        warm = clip.tokenize([t.replace("{}", "warm up") for t in templates])
        for kw in modes.values():
            clip.encode_tokens(warm, **kw)
        for prompt in prompts:
            # Tokenising is part of a new prompt's cost; it is the same for every mode.
            tokens = clip.tokenize([t.replace("{}", prompt) for t in templates])
            ref = None
            for mode, kw in modes.items():
                _sync(device)
                t0 = time.perf_counter()
                feats = clip.encode_tokens(tokens, **kw)
                feats = torch.nn.functional.normalize(feats.float(), dim=-1).mean(0)
                _sync(device)
                times[mode].append(time.perf_counter() - t0)
                ref = feats if ref is None else ref
                max_diff[mode] = max(max_diff[mode], float((feats - ref).abs().max()))
        # The public call, end to end (tokenising, averaging, cache), for a prompt it has not seen.
        _sync(device)
        t0 = time.perf_counter()
        clip.encode_text("a brand new prompt for the cache", templates)
        _sync(device)
        encode_text_s = time.perf_counter() - t0

    lengths = (tokens.argmax(-1) + 1).float()
    print(f"{args.arch} on {device} ({torch.get_num_threads()} threads, torch {torch.__version__}); "
          f"{len(templates)} templates, last prompt's tokens: longest {int(lengths.max())}, mean {lengths.mean():.1f}")
    full = statistics.median(times["full 77 tokens"])
    result = {"arch": args.arch, "device": str(device), "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "templates": len(templates), "iters": args.iters,
              "encode_text_new_prompt_s": encode_text_s, "modes": {}}
    for mode in modes:
        med = statistics.median(times[mode])
        result["modes"][mode] = {"median_s": med, "speedup": full / med, "max_abs_diff": max_diff[mode]}
        print(f"  {mode:18s} {med:7.3f} s   x{full / med:5.2f}   max |diff| {max_diff[mode]:.2e}")
    print(f"  encode_text (new prompt, end to end) {encode_text_s:.3f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
