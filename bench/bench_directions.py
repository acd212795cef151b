"""Benchmark latent direction discovery: SeFa (three variants) and GANSpace, ours vs the references' computations.

For each config (default f1024: StyleGAN2 config-f at 1024 px, random weights: timings do not depend on them) it
times, interleaved round by round in one process so that load on a shared machine hits both alike:

  * SeFa, ours: `core.directions.sefa(G, variant=...)` for 'rosinality', 'genforce' and 'torgb' (float64, sorted,
    signed, with the Directions record);
  * SeFa, references restated here on the same weights: rosinality `closed_form_factorization.py`
    (`torch.svd(cat(weights)).V`, float32), genforce `utils.factorize_weight` (numpy, column-normalised,
    `np.linalg.eig`), dfl `sefa.py` (`torch.linalg.eigh(AᵀA)` float32);
  * GANSpace, ours: `core.directions.ganspace` (streaming float64 covariance, eigh) for `--samples` samples;
  * GANSpace, dfl's `ganspace.py` restated: map in batches of 500, keep every w, `torch.pca_lowrank(niter=4)`.

Prints the median seconds per call and the ratio reference / ours, with the load average (timings on a busy
machine are inflated; the ratios survive better than the absolute numbers).

    python bench/bench_directions.py                     # f1024, 3 rounds, 10 000 GANSpace samples
    python bench/bench_directions.py --quick             # f1024, 1 round, 2 000 samples (< 3 minutes)
    python bench/bench_directions.py --configs f256,sg3t1024 --rounds 5 --samples 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core.directions import ganspace, sefa, sefa_layers  # noqa: E402

import bench_generator as BG  # noqa: E402


def _weights(G, variant: str) -> list[torch.Tensor]:
    modules = dict(G.synthesis.named_modules())
    return [modules[n].affine.weight.detach() for n in sefa_layers(G, variant)]


def ref_rosinality(G) -> torch.Tensor:
    return torch.svd(torch.cat(_weights(G, "rosinality"), 0)).V


def ref_genforce(G) -> np.ndarray:
    w = np.concatenate([t.numpy().T for t in _weights(G, "genforce")], axis=1).astype(np.float32)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    _, vecs = np.linalg.eig(w.dot(w.T))
    return vecs.T


def ref_torgb(G, num: int) -> torch.Tensor:
    A = torch.cat(_weights(G, "torgb"), 0).float()
    vals, vecs = torch.linalg.eigh(A.t() @ A)
    top = torch.argsort(vals.abs(), descending=True)[:num]
    return torch.nn.functional.normalize(vecs[:, top].t(), dim=-1)


@torch.no_grad()
def ref_ganspace(G, num_samples: int, num_components: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ws, left = [], num_samples
    while left > 0:
        n = min(500, left)
        ws.append(G.mapping(torch.randn(n, G.z_dim, generator=gen), None)[:, 0])
        left -= n
    W = torch.cat(ws)
    Wc = W - W.mean(0)
    _, S, V = torch.pca_lowrank(Wc, q=num_components, center=False, niter=4)
    return V.t() * (S / (Wc.shape[0] - 1) ** 0.5).unsqueeze(1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, args) -> None:
    G = core.build_generator(BG.CONFIGS[name](), seed=0)
    G.eval()
    cases = {}
    for variant in ("rosinality", "genforce", "torgb"):
        cases[f"sefa {variant}"] = (lambda v=variant: sefa(G, variant=v, num=args.num),
                                    {"rosinality": lambda: ref_rosinality(G), "genforce": lambda: ref_genforce(G),
                                     "torgb": lambda: ref_torgb(G, args.num)}[variant])
    cases[f"ganspace n={args.samples}"] = (
        lambda: ganspace(G, num_samples=args.samples, num_components=args.num, seed=0),
        lambda: ref_ganspace(G, args.samples, args.num, 0))
    times = {k: ([], []) for k in cases}
    for _ in range(args.rounds):
        for key, (ours, ref) in cases.items():   # interleaved: ours then the reference, case by case, each round
            times[key][0].append(timed(ours))
            times[key][1].append(timed(ref))
    print(f"\n{name}: {G.img_resolution} px {G.arch}, w_dim {G.w_dim}, num_ws {G.num_ws}, {args.rounds} round(s), "
          f"torch threads {torch.get_num_threads()}, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'case':<28}{'ours s':>10}{'ref s':>10}{'ref/ours':>10}")
    for key, (ours, ref) in times.items():
        o, r = statistics.median(ours), statistics.median(ref)
        print(f"{key:<28}{o:>10.3f}{r:>10.3f}{r / o:>10.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="f1024", help=f"comma-separated, from {sorted(BG.CONFIGS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=10_000, help="GANSpace samples")
    p.add_argument("--num", type=int, default=16, help="directions / components")
    p.add_argument("--quick", action="store_true", help="1 round, 2 000 GANSpace samples")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.samples = 1, 2000
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in args.configs.split(","):
        bench(name.strip(), args)


if __name__ == "__main__":
    main()
