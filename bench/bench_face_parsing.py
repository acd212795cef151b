"""Benchmark the BiSeNet face parser against the reference code's forward (zllrunning/face-parsing.PyTorch), on the
same random weights, in the same run.

Timed, interleaved, each `--repeats` times after one warm-up (median reported):

  * ours:      `FaceParser.logits(images)`: resize to 512 + normalisation + BiSeNet with BatchNorm folded into
               the convolutions, channels-last (`fuse_bisenet`), main head only (the auxiliary heads only served
               training, and every user of these files reads output 0);
  * ours+aux:  our unfused BiSeNet (the file's layout) computing all three heads, as the reference does;
  * reference: the reference `BiSeNet(n_classes)(x)` on the same normalised 512 px input.

The reference code is never part of the pack: give a checkout with `--reference PATH` (or $SGS_FACE_PARSING_REF),
e.g. one fetched with `git clone https://github.com/zllrunning/face-parsing.PyTorch`; without it only our timings
are printed. Its `Resnet18.init_weight` (a torchvision download) is skipped; the weights are random either way.

    python bench/bench_face_parsing.py --reference /tmp/face-parsing.PyTorch
    python bench/bench_face_parsing.py --reference /tmp/face-parsing.PyTorch --batch 4 --device cuda

The numbers are only comparable within one run (other processes change absolute times; the ratio is the result).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models import face_parsing as FP  # noqa: E402


def reference_bisenet(folder: str, n_classes: int):
    """The reference BiSeNet from a checkout, without its torchvision download at construction."""
    sys.path.insert(0, str(folder))
    import resnet  # noqa: PLC0415 - the checkout's module

    resnet.Resnet18.init_weight = lambda self: None
    import model  # noqa: PLC0415

    return model.BiSeNet(n_classes).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=os.environ.get("SGS_FACE_PARSING_REF"),
                    help="a checkout of zllrunning/face-parsing.PyTorch (or $SGS_FACE_PARSING_REF)")
    ap.add_argument("--classes", type=int, default=19, choices=[16, 19])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=512, help="input images' size (resized to 512 by ours)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    parser = FP.random_face_parser("bisenet19" if args.classes == 19 else "barbershop16", seed=0).to(device)
    images = (torch.rand(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
              * 2 - 1).to(device)
    with torch.no_grad():
        normalised = parser.preprocess(images)
    plain = FP.random_bisenet(args.classes, seed=0).to(device)
    runs = {"ours": lambda: parser.logits(images), "ours+aux": lambda: plain(normalised, aux=True)}
    ref = None
    if args.reference and Path(args.reference, "model.py").is_file():
        ref = reference_bisenet(args.reference, args.classes)
        with torch.no_grad():
            ref.load_state_dict(plain.state_dict())
        ref = ref.to(device)
        runs["reference"] = lambda: ref(normalised)
    else:
        print(f"reference not timed: give a checkout of zllrunning/face-parsing.PyTorch with --reference or "
              f"$SGS_FACE_PARSING_REF (got {args.reference!r})")

    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        if ref is not None:  # the same weights give the same logits
            diff = float((runs["ours"]() - runs["reference"]()[0]).abs().max())
            print(f"max |ours - reference| logits: {diff:.3g}")
        for k, f in runs.items():  # warm-up
            f()
        order = list(runs)
        for r in range(args.repeats):
            # interleaved, the order rotated each round: load changes and cache effects hit every side alike
            for k in order[r % len(order):] + order[:r % len(order)]:
                f = runs[k]
                sync(device)
                t0 = time.perf_counter()
                f()
                sync(device)
                times[k].append(time.perf_counter() - t0)
    print(f"BiSeNet-{args.classes} at 512 px, batch {args.batch}, {args.image_size} px input, device {device}, "
          f"threads {torch.get_num_threads()}, {args.repeats} repeats (median, min):")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:10s} {med[k] * 1000:9.1f} ms  (min {min(v) * 1000:.1f} ms)")
    if ref is not None:
        print(f"speed ratio reference / ours = {med['reference'] / med['ours']:.2f}x  (goal >= 1.0x); "
              f"reference / ours+aux = {med['reference'] / med['ours+aux']:.2f}x")


if __name__ == "__main__":
    main()
