"""Benchmark inversion: seconds per optimisation step, ours vs NVIDIA's projector.py loop on the same weights.

For each config it builds a random generator (the same weights on both sides), a target image rendered from a
random w, and times `--steps` steps of our NVIDIA-projector recipe (`core.invert_image(method='projector')`) and,
with `--nvidia-src PATH` (a stylegan2-ada-pytorch checkout), of NVIDIA's own `projector.project()` loop. Both use
the same perceptual network: NVIDIA's loop loads `vgg16.pt` by URL, which is replaced here by a stand-in that
returns our LPIPS-VGG features (random weights: no download is possible here), so the comparison measures the
loops and the generators, not two different VGGs. The other methods (image2stylegan, ii2s, pti) are timed on
our side only. Prints s/step per method and the ratio NVIDIA/ours.

    python bench/bench_invert.py --configs f256 --steps 3
    python bench/bench_invert.py --configs f256,f1024 --nvidia-src ../stylegan2-ada-pytorch
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core import invert as I  # noqa: E402
from core.losses import perceptual as P  # noqa: E402

import bench_generator as BG  # noqa: E402


class NvidiaVGGStandIn(torch.nn.Module):
    """Called like NVIDIA's TorchScript vgg16 (`vgg16(img_0_255, resize_images=False, return_lpips=True)`);
    returns flattened LPIPS features whose squared distance is our LPIPS-VGG distance."""

    def __init__(self, lpips: torch.nn.Module):
        super().__init__()
        self.lpips = lpips

    def forward(self, img: torch.Tensor, resize_images: bool = False, return_lpips: bool = True) -> torch.Tensor:
        x = img / 127.5 - 1
        return torch.cat([f.flatten(1) for f in self.lpips.lpips_features(x)], dim=1)


def time_steps(fn, steps: int) -> list[float]:
    """Per-step times of a loop that calls `tick()` after each step."""
    marks = []

    def tick(*_):
        marks.append(time.perf_counter())

    start = time.perf_counter()
    fn(tick)
    marks = [start] + marks
    return [b - a for a, b in zip(marks, marks[1:])][1:]  # drop the first step (warm-up)


def nvidia_projector(src: str):
    sys.path.insert(0, src)
    import projector  # noqa: F401  (NVIDIA's, from the given checkout)

    return sys.modules["projector"]


def run_nvidia(projector, G_ref, target_0_255: torch.Tensor, steps: int, lpips, w_avg_samples: int,
               fused_modconv=None) -> list[float]:
    """Per-step times of NVIDIA's `project()`. `fused_modconv=False` makes their synthesis use its unfused
    modulated convolution (on CPU their default fused path, with a weight that requires grad, falls back to
    PyTorch's slow unfold convolution)."""
    stand_in = NvidiaVGGStandIn(lpips)
    syn_cls = type(G_ref.synthesis)
    real_forward = syn_cls.forward
    marks = []
    real_jit_load, real_open = torch.jit.load, projector.dnnlib.util.open_url
    # The loop prints its loss every step; count those prints as step marks.
    class Ticker(io.StringIO):
        def write(self, s):
            if s.startswith("step"):
                marks.append(time.perf_counter())
            return len(s)

    try:
        if fused_modconv is not None:
            syn_cls.forward = lambda self, ws, **kw: real_forward(self, ws, **{**kw, "fused_modconv": fused_modconv})
        torch.jit.load = lambda f, *a, **k: stand_in
        projector.dnnlib.util.open_url = lambda url, *a, **k: contextlib.nullcontext(io.BytesIO())
        start = time.perf_counter()
        with contextlib.redirect_stdout(Ticker()):
            projector.project(G_ref, target_0_255, num_steps=steps, w_avg_samples=w_avg_samples,
                              device=torch.device("cpu"), verbose=True)
    finally:
        torch.jit.load, projector.dnnlib.util.open_url = real_jit_load, real_open
        syn_cls.forward = real_forward
    marks = [start] + marks
    return [b - a for a, b in zip(marks, marks[1:])][1:]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="f256,f1024", help=f"comma-separated, from {sorted(BG.CONFIGS)}")
    ap.add_argument("--steps", type=int, default=4, help="steps per method (the first is not timed)")
    ap.add_argument("--methods", default=",".join(I.METHODS), help="our methods to time")
    ap.add_argument("--nvidia-src", default=None, help="stylegan2-ada-pytorch checkout (projector.py)")
    ap.add_argument("--w-avg-samples", type=int, default=10_000, help="samples for w_avg/w_std on both sides")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--nvidia-modes", default="shipped,unfused",
                    help="NVIDIA settings to time: 'shipped' (projector.py as is) and/or 'unfused' (fused_modconv=False)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    nvidia = BG.NvidiaSource(args.nvidia_src, allow_plugins=False) if args.nvidia_src else None
    projector = nvidia_projector(nvidia.path) if nvidia else None
    nets = {"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
            "vgg16_features": P.random_vgg16_features(seed=2)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; perceptual networks: random-weight "
          f"LPIPS-VGG / AlexNet / VGG16 (same on both sides)")
    for name in args.configs.split(","):
        G = core.build_generator(BG.CONFIGS[name](), seed=0)
        BG.randomise_zero_init(G, 0)
        core.compute_w_avg(G, num_samples=2000, seed=0)
        with torch.no_grad():
            w = G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(1)), None,
                          truncation_psi=0.7)
            target = G.synthesis(w)
        print(f"\n== {name}: {G.arch} {G.img_resolution} px")
        ours = {}
        for method in args.methods.split(","):
            prior = I.compute_w_prior(G, 20_000) if method == "ii2s" else None
            times = time_steps(lambda tick: I.invert_image(
                G, target, method=method, num_steps=args.steps, tune_steps=args.steps, perceptual=nets,
                prior=prior, callback=tick, ), args.steps)
            ours[method] = statistics.median(times)
            print(f"   ours   {method:15s} {ours[method]:7.3f} s/step (median of {len(times)})")
        if projector is not None and G.arch == "stylegan2":
            ref = nvidia.build(G)
            for mode in args.nvidia_modes.split(","):
                times = run_nvidia(projector, ref, (target[0] + 1) * 127.5, args.steps, nets["lpips_vgg"],
                                   args.w_avg_samples, fused_modconv=None if mode == "shipped" else False)
                t = statistics.median(times)
                print(f"   NVIDIA projector.py ({mode:8s}) {t:7.3f} s/step (median of {len(times)}); "
                      f"ours/NVIDIA speed-up {t / ours['projector']:.2f}x")


if __name__ == "__main__":
    main()
