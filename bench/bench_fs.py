"""Benchmark the FS embedding: seconds per step of `core.edits.fs_embedding.embed_fs` vs a port of Barbershop's FS
step (ZPdesu/Barbershop `models/Embedding.py: invert_images_in_FS`, commit 088d7d0f) on the same weights, same run.

The port reproduces the reference's per-step work with our networks (the same generator weights, the same random
LPIPS-VGG, the same PCA prior):
- the codes are 18 (num_ws) separate tensors, stacked every step (`torch.stack(latent_S).unsqueeze(0)`), the first 7
  frozen; Adam over the 11 S tensors and F;
- the generator call `generator([latent_in], input_is_latent=True, start_layer=4, end_layer=8, layer_in=latent_F)`
  with rosinality's semantics (start at the 64 px block from F, skip=None: the RGB skip up to 32 px dropped, random
  noise every layer) is our staged run `run(latent_in, start=32, x=F, drop_skip=True, noise_mode='random')`;
- `gen_im_L = BicubicDownSample(factor=size // 256)(gen_im)` every step (its separable Keys-cubic (a = -0.5)
  convolution with reflect padding, written here), the target's 256 px copy made once (the reference resizes it
  with PIL when the image is loaded);
- loss = MSELoss(gen_im, ref_im) + LPIPS(gen_im_L, ref_im_L).sum() (both images through the network every step) +
  1e-3 * mean(((LeakyReLU(5)(latent_in) - mean) @ comp^T / stdev)^2) (`cal_p_norm_loss`), then backward and step.

Ours: `embed_fs` (area downsampling, the target's LPIPS features computed once, the same prior), timed by its
progress callback. Rounds alternate between the two loops so both see the same machine load; the first step of
each round is dropped (warm-up) and the median is reported. Random weights, a target rendered by another random
generator: only the timings mean something.

    flock /tmp/sgs-bench.lock python bench/bench_fs.py --configs f256 --steps 4 --rounds 3
"""

from __future__ import annotations

import argparse
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
from core import latents as L  # noqa: E402
from core.edits import fs_embedding as FS  # noqa: E402
from core.edits import inversion as I  # noqa: E402
from core.losses import perceptual as P  # noqa: E402

import bench_generator as BG  # noqa: E402


class BicubicDownsample(torch.nn.Module):
    """Barbershop's `BicubicDownSample(factor)`: a separable Keys cubic kernel (a = -0.5) of 4 * factor taps, stride
    `factor`, reflect padding, applied to each RGB channel (its per-step resize of the generated image to 256 px)."""

    def __init__(self, factor: int, a: float = -0.5):
        super().__init__()
        self.factor = factor
        size = 4 * factor
        x = ((torch.arange(size, dtype=torch.float64) - size // 2 + 0.5) / factor).abs()
        k = torch.where(x <= 1, (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1,
                        torch.where(x < 2, a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a, torch.zeros_like(x)))
        k = (k / k.sum()).float()
        self.register_buffer("kh", k.reshape(1, 1, size, 1).repeat(3, 1, 1, 1))
        self.register_buffer("kw", k.reshape(1, 1, 1, size).repeat(3, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = max(4 * self.factor - self.factor, 0)
        x = F.pad(x, (0, 0, pad // 2, pad - pad // 2), mode="reflect")
        x = F.conv2d(x, self.kh.to(x), stride=(self.factor, 1), groups=3)
        x = F.pad(x, (pad // 2, pad - pad // 2, 0, 0), mode="reflect")
        return F.conv2d(x, self.kw.to(x), stride=(1, self.factor), groups=3)


def reference_fs_loop(G: core.Generator, target: torch.Tensor, latent_w: torch.Tensor, prior: I.WPrior,
                      lpips: torch.nn.Module, steps: int, tick, seed: int = 0) -> None:
    """The reference's FS loop (see the module docstring); `tick()` after every step."""
    torch.manual_seed(seed)
    first = L.fs_first_w(G)
    down = BicubicDownsample(max(1, G.img_resolution // 256))
    target_small = I.downsample_to(target)          # made once, as the reference's dataset does (PIL LANCZOS)
    x_mean, x_comp, x_stdev = prior.mean, prior.components, prior.stdev
    with torch.no_grad():
        f_init = G.synthesis.run(latent_w, stop=32, noise_mode="random").x.float()
    latent_f = f_init.clone().detach().requires_grad_(True)
    latent_s = []
    for i in range(G.num_ws):
        tmp = latent_w[0, i].clone()
        tmp.requires_grad = i >= first
        latent_s.append(tmp)
    opt = torch.optim.Adam(latent_s[first:] + [latent_f], lr=FS.DEFAULTS.lr)
    mse = torch.nn.MSELoss()
    for _ in range(steps):
        opt.zero_grad()
        latent_in = torch.stack(latent_s).unsqueeze(0)
        gen = G.synthesis.run(latent_in, start=32, x=latent_f, drop_skip=True, noise_mode="random").img
        loss = mse(gen, target) + lpips(down(gen), target_small).sum()
        p_norm = (F.leaky_relu(latent_in, negative_slope=5) - x_mean).bmm(x_comp.T.unsqueeze(0)) / x_stdev
        loss = loss + FS.DEFAULTS.prior_weight * p_norm.pow(2).mean()
        loss.backward()
        opt.step()
        tick()


def timed(fn) -> list[float]:
    marks = [time.perf_counter()]
    fn(lambda *_: marks.append(time.perf_counter()))
    return [b - a for a, b in zip(marks, marks[1:])][1:]   # the first step is warm-up


def bench(name: str, args) -> dict:
    G = core.build_generator(BG.CONFIGS[name](), seed=0)
    BG.randomise_zero_init(G, 0)                    # noise strengths non-zero: random noise costs what it costs
    core.compute_w_avg(G, num_samples=2000, seed=0)
    other = core.build_generator(BG.CONFIGS[name](), seed=1)
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        target = other.synthesis(other.mapping(z, None, truncation_psi=0.7), noise_mode="const").clamp(-1, 1)
        latent = L.Latent(G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(3)), None,
                                    truncation_psi=0.7), "w+", L.generator_ref(G))
    lpips = P.random_lpips("vgg", seed=0).eval().requires_grad_(False)
    prior = I.compute_w_prior(G, args.prior_samples)
    ours, ref = [], []
    for _ in range(args.rounds):
        ours += timed(lambda tick: FS.embed_fs(G, target, latent, num_steps=args.steps, perceptual={"lpips_vgg": lpips},
                                               prior=prior, callback=tick))
        ref += timed(lambda tick: reference_fs_loop(G, target, latent.tensor, prior, lpips, args.steps, tick))
    o, r = statistics.median(ours), statistics.median(ref)
    return {"config": name, "resolution": G.img_resolution, "ours": o, "reference": r, "ratio": r / o,
            "n": (len(ours), len(ref))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="f256", help=f"comma-separated, StyleGAN2 from {sorted(BG.CONFIGS)}")
    p.add_argument("--steps", type=int, default=4, help="steps per round and loop (the first is not timed)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating ours / the reference port")
    p.add_argument("--prior-samples", type=int, default=20_000, help="samples of the II2S PCA prior (both loops)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'config':8} {'res':>5} {'ours s/step':>12} {'reference s/step':>17} {'ratio':>6}  (median of n steps)")
    for name in args.configs.split(","):
        row = bench(name.strip(), args)
        print(f"{row['config']:8} {row['resolution']:>5} {row['ours']:>12.3f} {row['reference']:>17.3f} "
              f"{row['ratio']:>5.2f}x  n={row['n'][0]}/{row['n'][1]}", flush=True)


if __name__ == "__main__":
    main()
