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

`--lpips-curve` measures quality per step instead (the issue's "a default recipe that reaches the reference's
1000-step LPIPS in fewer steps"): it runs the NVIDIA projector recipe for `--reference-steps` (1000) and our default
recipe (`core.edits.inversion.DEFAULT_METHOD`) for its default steps, evaluating LPIPS-VGG (at 256 px, as the report does)
of what each would return if stopped, every `--eval-every` steps, and prints the step at which ours first reaches
the reference's final LPIPS. Meaningful only with real data:

    python bench/bench_invert.py --lpips-curve --checkpoint stylegan2-ffhq-1024x1024.pkl \\
        --target aligned_face.png --perceptual ~/ComfyUI/models/perceptual --device cuda \\
        [--nvidia-src ../stylegan2-ada-pytorch]     # also NVIDIA's own projector.project() loop

Without --checkpoint / --target / --perceptual it uses the first --configs generator with random weights, a
target rendered from a random w and random-weight perceptual networks (a smoke run: the numbers mean nothing).
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
from core.edits import inversion as I  # noqa: E402
from core.losses import perceptual as P  # noqa: E402
from core.optimize import StepProgress  # noqa: E402

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


def perceptual_nets(folder=None) -> dict:
    """The inversion's perceptual networks: the real weight files in `folder`, or seeded random ones."""
    if folder:
        dirs = [folder]
        return {"lpips_vgg": P.load_lpips("vgg", model_dirs=dirs), "lpips_alex": P.load_lpips("alex", model_dirs=dirs),
                "vgg16_features": P.load_vgg16_features(model_dirs=dirs)}
    return {"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
            "vgg16_features": P.random_vgg16_features(seed=2)}


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


def _load_target(path: str, G, device) -> torch.Tensor:
    """An image file as `[1, 3, R, R]` in [-1, 1] at G's resolution (align the face first: Align Face)."""
    import numpy as np
    from PIL import Image

    im = Image.open(path).convert("RGB")
    if im.size != (G.img_resolution, G.img_resolution):
        print(f"   note: {path} is {im.size[0]}x{im.size[1]}; resized to {G.img_resolution} px")
        im = im.resize((G.img_resolution, G.img_resolution), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1
    return x.unsqueeze(0).to(device)


def _curve(G, target, method: str, steps: int, nets, prior, eval_net, every: int) -> list[tuple[int, float]]:
    """[(step, LPIPS-VGG of the result if the inversion stopped after that step)]."""
    points = []
    small_target = I.downsample_to(target)

    def cb(p: StepProgress) -> None:
        if "ws" not in p.params or not (p.step % every == 0 or p.step == p.total):
            return  # PTI's tuning steps carry no latent
        noise = {k[len("noise/"):]: v for k, v in p.params.items() if k.startswith("noise/")}
        with torch.no_grad():
            img = G.synthesis(p.params["ws"], noise_mode="const", noise=noise or None)
            points.append((p.step, float(eval_net(I.downsample_to(img), small_target).mean())))

    I.invert_image(G, target, method=method, num_steps=steps, perceptual=nets, prior=prior, callback=cb)
    return points


def lpips_curve(args, nets, nvidia, projector) -> None:
    device = torch.device(args.device)
    if args.checkpoint:
        G = core.load_generator(args.checkpoint, device=device)
    else:
        G = core.build_generator(BG.CONFIGS[args.configs.split(",")[0]](), seed=0)
        BG.randomise_zero_init(G, 0)
        core.compute_w_avg(G, num_samples=2000, seed=0)
        G = G.to(device)
    G.requires_grad_(False)
    if args.target:
        target = _load_target(args.target, G, device)
    else:
        with torch.no_grad():
            w = G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(1)).to(device), None,
                          truncation_psi=0.7)
            target = G.synthesis(w, noise_mode="const").clamp(-1, 1)
    nets = {k: v.to(device) for k, v in nets.items()}
    eval_net = nets["lpips_vgg"]
    method = I.DEFAULT_METHOD
    steps = args.recipe_steps or I.METHOD_DEFAULTS[method].num_steps
    prior = I.compute_w_prior(G, args.prior_samples) if method == "ii2s" else None
    print(f"\n== LPIPS per step: {G.info.name or 'random generator'} {G.img_resolution} px on {device}; "
          f"evaluated every {args.eval_every} steps")
    t0 = time.perf_counter()
    ref = _curve(G, target, "projector", args.reference_steps, nets, None, eval_net, args.eval_every)
    print(f"   NVIDIA projector recipe (ours):  LPIPS {ref[-1][1]:.4f} after {ref[-1][0]} steps "
          f"({time.perf_counter() - t0:.0f} s)")
    goal = ref[-1][1]
    if projector is not None and G.arch == "stylegan2":
        G_ref = nvidia.build(G.cpu())
        G.to(device)
        G_ref = G_ref.to(device)
        out = projector.project(G_ref, (target[0] + 1) * 127.5, num_steps=args.reference_steps,
                                w_avg_samples=args.w_avg_samples, device=device, verbose=False)
        with torch.no_grad():  # project() leaves its optimised noise in G_ref's noise buffers
            img = G_ref.synthesis(out[-1:].to(device), noise_mode="const")
            nv = float(eval_net(I.downsample_to(img), I.downsample_to(target)).mean())
        print(f"   NVIDIA projector.project():       LPIPS {nv:.4f} after {args.reference_steps} steps")
        goal = nv
    t0 = time.perf_counter()
    ours = _curve(G, target, method, steps, nets, prior, eval_net, args.eval_every)
    print(f"   ours ({method}, default recipe): LPIPS {ours[-1][1]:.4f} after {ours[-1][0]} steps "
          f"({time.perf_counter() - t0:.0f} s)")
    reach = next((step for step, lp in ours if lp <= goal), None)
    if reach is None:
        print(f"   ours did not reach the reference's LPIPS {goal:.4f} within {steps} steps")
    else:
        print(f"   ours reaches the reference's LPIPS {goal:.4f} at step {reach} "
              f"({args.reference_steps / reach:.2f}x fewer steps than the reference's {args.reference_steps})")
    print("   curve (step: reference / ours): " + ", ".join(
        f"{a[0]}: {a[1]:.4f} / {b[1]:.4f}" for a, b in zip(ref, ours)))


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
    ap.add_argument("--lpips-curve", action="store_true", help="measure LPIPS per step instead of time per step")
    ap.add_argument("--checkpoint", default=None, help="--lpips-curve: a real generator checkpoint")
    ap.add_argument("--target", default=None, help="--lpips-curve: an aligned face image")
    ap.add_argument("--perceptual", default=None, help="folder with the real VGG16 / LPIPS weight files")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reference-steps", type=int, default=1000, help="--lpips-curve: the reference's steps")
    ap.add_argument("--recipe-steps", type=int, default=0, help="--lpips-curve: our recipe's steps (0: default)")
    ap.add_argument("--eval-every", type=int, default=50, help="--lpips-curve: steps between LPIPS evaluations")
    ap.add_argument("--prior-samples", type=int, default=1_000_000, help="--lpips-curve: II2S prior samples")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    nvidia = BG.NvidiaSource(args.nvidia_src, allow_plugins=args.device != "cpu") if args.nvidia_src else None
    projector = nvidia_projector(nvidia.path) if nvidia else None
    nets = perceptual_nets(args.perceptual)
    if args.lpips_curve:
        lpips_curve(args, nets, nvidia, projector)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; perceptual networks: random-weight "
          f"LPIPS-VGG / AlexNet / VGG16 (same on both sides)")
    for name in args.configs.split(","):
        G = core.build_generator(BG.CONFIGS[name](), seed=0)
        BG.randomise_zero_init(G, 0)
        core.compute_w_avg(G, num_samples=2000, seed=0)
        with torch.no_grad():
            w = G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(1)), None,
                          truncation_psi=0.7)
            target = G.synthesis(w).clamp(-1, 1)   # a random network overshoots; a photo is in [-1, 1]
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
