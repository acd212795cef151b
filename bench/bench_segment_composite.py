"""Benchmark Segment Composite: seconds per step of every stage, ours (`core.segment_composite`) against a port of
Barbershop's loops (ZPdesu/Barbershop: Embedding / Alignment / Blending), at the same settings on the same weights
in the same run, extrapolated to the reference's step counts per image and per composite.

The port (written here, not the reference's code) does the reference's per-step work: fresh random noise in every
synthesis; its separable bicubic downsampler (Keys a = -0.5, 4·factor taps, reflect padding) before the parser
and before LPIPS; II2S / FS losses with LPIPS computed on both images every step (all five VGG blocks); the target
fill and the alignments with the parser on the full synthesis each step (two CE terms in 'realistic'); the style
term running VGG16's whole `features` stack (31 layers, as its VGG16_Activations loops) on the fixed structure image
and on the current one every step, upsampled to 256 first; the blending with two masked LPIPS modules that each run
all five blocks on both images. Ours: target LPIPS features computed once, one LPIPS pass a step for both blending
terms and blocks 1-3 only, the structure image's Gram matrices once, VGG16 up to relu4_3 only.

Both sides use the same random-weight networks with the real architectures (a 256 px StyleGAN2 config-f, LPIPS-VGG,
VGG16, a BiSeNet-19 parser), so the timings compare the loops, not the weights. Sizes scaled to 256 px: the parser and
the CE work at 256 (the reference: 512 for 1024 px images, half the resolution), LPIPS at 256 (as the reference).

    flock /tmp/sgs-bench.lock python bench/bench_segment_composite.py --steps 3
    python bench/bench_segment_composite.py --steps 3 --config f256 --threads 2

Prints a table of s/step per stage (median of the timed steps; the first step of each stage is a warm-up and not
counted) and the extrapolation: three uncached photos (3 × (W+ 1100 + FS 250) + 2 × (target 2×80 + align 140 + 100)
+ blend 400 steps) and cached embeddings (the alignments and the blending only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core.edits.segment_composite import DEFAULTS, EmbeddingCache, segment_composite  # noqa: E402
from core.edits.segment_composite.pipeline import STYLE_LAYERS  # noqa: E402
from core.latents import fs_first_w, synthesize_fs  # noqa: E402
from core.losses import perceptual as P  # noqa: E402
from core.models.face_parsing import random_face_parser  # noqa: E402

import bench_generator as BG  # noqa: E402


# ------------------------------------------------------------------------------------------------
# The reference's per-step work


def keys_kernel(factor: int, a: float = -0.5) -> torch.Tensor:
    """1-D bicubic (Keys) low-pass taps for downsampling by `factor`: 4·factor taps, normalised."""
    size = 4 * factor
    xs = [(i - size // 2 + 0.5) / factor for i in range(size)]

    def w(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        if x < 2:
            return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
        return 0.0
    k = torch.tensor([w(x) for x in xs], dtype=torch.float32)
    return k / k.sum()


class BicubicDown(torch.nn.Module):
    """Separable bicubic downsampling by an integer factor with reflect padding (the reference's BicubicDownSample
    does this per step before its parser and its LPIPS)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor
        k = keys_kernel(factor)
        self.register_buffer("k1", k.reshape(1, 1, -1, 1).repeat(3, 1, 1, 1))
        self.register_buffer("k2", k.reshape(1, 1, 1, -1).repeat(3, 1, 1, 1))

    def forward(self, x):
        pad = 4 * self.factor - self.factor
        top, left = pad // 2, pad // 2
        x = F.pad(x, (0, 0, top, pad - top), mode="reflect")
        x = F.conv2d(x, self.k1.to(x), stride=(self.factor, 1), groups=3)
        x = F.pad(x, (left, pad - left, 0, 0), mode="reflect")
        return F.conv2d(x, self.k2.to(x), stride=(1, self.factor), groups=3)


class Port:
    """Barbershop's loops, step by step (timing only: the results are not used)."""

    def __init__(self, G, parser, lpips, vgg, cfg, prior):
        self.G, self.parser, self.lpips, self.cfg, self.prior = G, parser, lpips, cfg, prior
        R = G.img_resolution
        self.down_seg = BicubicDown(max(1, R // cfg.seg_size))
        self.down_256 = BicubicDown(max(1, R // cfg.lpips_size))
        full = P._vgg16_features(30)                               # VGG16_Activations runs all 31 layers
        own = vgg.features.state_dict()
        full.load_state_dict({**full.state_dict(), **own})
        self.vgg_full = full.eval().requires_grad_(False)
        self.vgg_taps = [3, 8, 15, 22]
        self.first = fs_first_w(G)
        self.gen = torch.Generator().manual_seed(0)

    def synth(self, ws):
        return self.G.synthesis(ws, noise_mode="random", generator=self.gen)

    def synth_fs(self, ws, feats):
        return synthesize_fs(self.G, ws, feats, None, noise_mode="random", generator=self.gen)

    def seg(self, img):
        return self.parser.logits(self.down_seg(img))

    def embed_loss(self, img, target, target_small, ws):
        loss = self.cfg.l2_lambda * (img - target).square().mean()
        loss = loss + self.cfg.percept_lambda * self.lpips(self.down_256(img), target_small).sum()   # both images
        return loss + self.cfg.p_norm_lambda * self.prior.loss(ws)

    def w_plus(self, target, steps, tick):
        G = self.G
        latent = [G.w_avg.detach().clone().reshape(1, -1).requires_grad_(True) for _ in range(G.num_ws)]
        opt = torch.optim.Adam(latent, lr=self.cfg.lr)
        small = self.down_256(target)
        for _ in range(steps):
            opt.zero_grad()
            ws = torch.stack(latent, 1)
            loss = self.embed_loss(self.synth(ws), target, small, ws)
            loss.backward()
            opt.step()
            tick()
        return torch.stack(latent, 1).detach()

    def fs(self, target, wplus, steps, tick):
        with torch.no_grad():
            F0 = self.G.synthesis.run(wplus, stop=32, noise_mode="random", generator=self.gen).x
        feats = F0.clone().requires_grad_(True)
        codes = [wplus[:, i].clone().requires_grad_(i >= self.first) for i in range(self.G.num_ws)]
        opt = torch.optim.Adam(codes[self.first:] + [feats], lr=self.cfg.lr)
        small = self.down_256(target)
        for _ in range(steps):
            opt.zero_grad()
            ws = torch.stack(codes, 1)
            loss = self.embed_loss(self.synth_fs(ws, feats), target, small, ws)
            loss.backward()
            opt.step()
            tick()

    def ce_steps(self, init, target, steps, tick, realistic=False, style=None):
        cfg = self.cfg
        w = init.clone().requires_grad_(True)
        end = init[:, cfg.align_layers:].detach()
        opt = torch.optim.Adam([w], lr=cfg.lr)
        bg_w = torch.zeros(self.parser.num_classes)
        bg_w[0] = 1
        for _ in range(steps):
            opt.zero_grad()
            img = self.synth(torch.cat([w[:, :cfg.align_layers], end], 1))
            lg = self.seg(img)
            if realistic:
                loss = F.cross_entropy(lg, target, weight=1 - bg_w) + F.cross_entropy(lg, target, weight=bg_w)
            else:
                loss = cfg.ce_lambda * F.cross_entropy(lg, target)
            if style is not None:
                hm = (lg.argmax(1) == 17).float()[:, None]
                hm = F.interpolate(hm, size=(cfg.lpips_size,) * 2, mode="nearest")
                loss = loss + cfg.style_lambda * self.style(style[0], self.down_256(img) * hm, style[1], hm)
            loss.backward()
            opt.step()
            tick()

    def vgg_acts(self, x):
        out = []
        for i, layer in enumerate(self.vgg_full):
            x = layer(x)
            if i in self.vgg_taps:
                out.append(x)
        return out

    def style(self, x, x_hat, m1, m2):
        up = lambda t: F.interpolate(t, scale_factor=256 / t.shape[-1], mode="bilinear", align_corners=True)  # noqa
        x, x_hat = up(x * m1), up(x_hat * m2)
        with torch.no_grad():
            a = self.vgg_acts(x)
        b = self.vgg_acts(x_hat)
        loss = 0
        for fa, fb in zip(a, b):
            ma = F.interpolate(m1, scale_factor=fa.shape[-1] / m1.shape[-1], mode="nearest")
            mb = F.interpolate(m2, scale_factor=fb.shape[-1] / m2.shape[-1], mode="nearest")
            ga, gb = (f * m for f, m in ((fa, ma), (fb, mb)))
            n, c, h, w_ = ga.shape
            ga = torch.mm(ga.reshape(c, h * w_), ga.reshape(c, h * w_).t()) / (n * c * h * w_)
            gb = torch.mm(gb.reshape(c, h * w_), gb.reshape(c, h * w_).t()) / (n * c * h * w_)
            loss = loss + F.mse_loss(ga, gb)
        return loss / len(a)

    def blend(self, ws1, ws3, feats, im1, im3, face, hair, steps, tick):
        u = torch.zeros(1, self.G.num_ws, self.G.w_dim, requires_grad=True)
        opt = torch.optim.Adam([u], lr=self.cfg.lr)
        for _ in range(steps):
            opt.zero_grad()
            img = self.down_256(self.synth_fs(ws1 + u * (ws3 - ws1), feats))
            loss = 0
            for ref, mask in ((im1, face), (im3, hair)):       # two modules, each runs five blocks on both images
                both = self.lpips.unit_features(torch.cat([img, ref]))
                loss = loss + self.lpips.masked_distance([f[:1] for f in both], [f[1:] for f in both], mask,
                                                         (1, 2, 3), size=tuple(img.shape[2:])).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                u.clamp_(0, 1)
            tick()


# ------------------------------------------------------------------------------------------------


class Timer:
    def __init__(self):
        self.times: dict[str, list[float]] = {}
        self.last = None
        self.stage = None

    def start(self, stage):
        self.stage, self.last = stage, time.perf_counter()

    def tick(self, stage=None):
        now = time.perf_counter()
        self.times.setdefault(stage or self.stage, []).append(now - self.last)
        self.last = now

    def per_step(self, stage):
        t = self.times.get(stage, [])
        t = t[1:] if len(t) > 1 else t        # the first step of a stage warms up
        return statistics.median(t) if t else float("nan")


STAGES = [("W+ embedding", "w+", 1100, 3), ("FS embedding", "fs", 250, 3), ("target fill", "target", 160, 2),
          ("align base", "align base", 140, 2), ("align reference", "align reference", 100, 2),
          ("blend", "blend", 400, 1)]


def quality(resolution: int = 64) -> None:
    """The quick preset's quality loss against the reference preset, stage by stage, on a tiny generator with
    random-weight LPIPS / parser stand-ins (INDICATIVE ONLY: random networks, not faces). Every stage runs with a
    constant learning rate from a fixed start, so quick's stage is a prefix of the reference's: one reference run
    gives both losses (at quick's step count and at the reference's) for each stage from the same start."""
    import sys as _sys
    _sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_generator
    from core.edits.presets import get_preset
    G = tiny_generator("stylegan2", img_resolution=resolution)
    lpips = P.random_lpips("vgg", seed=0)
    vgg = P.random_vgg16_features(1, layers=STYLE_LAYERS)
    size = min(32, resolution)
    parser = random_face_parser("bisenet19", seed=0, input_size=size)
    quick = get_preset("segment_composite", "", "quick").values
    ref = get_preset("segment_composite", "", "reference").values
    cfg = replace(DEFAULTS, seg_size=size, lpips_size=size, prior_samples=10_000)
    with torch.no_grad():
        ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
        photos = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
    curves: dict[str, list[float]] = {}
    key = {"w+": "w_steps", "fs": "fs_steps", "target": "target_fill_steps", "align base": "align_steps1",
           "align reference": "align_steps2", "blend": "blend_steps"}
    print(f"quick vs reference preset, {resolution} px tiny generator, random LPIPS/VGG/BiSeNet (indicative only)")
    print(f"{'stage':<18}{'start':>10}{'quick':>10}{'reference':>11}{'quick gap':>11}", flush=True)

    def row(phase):
        values = curves[phase]
        k = key[phase.split(" ")[0]] if phase.split(" ")[0] in ("w+", "fs") else key[phase]
        q, r = quick[k], ref[k]          # the target fill: its first pass (the second starts afresh)
        lq, lr_ = values[min(q, len(values)) - 1], values[min(r, len(values)) - 1]
        print(f"{phase:<18}{values[0]:>10.4f}{lq:>10.4f}{lr_:>11.4f}"
              f"{(lq - lr_) / max(abs(values[0] - lr_), 1e-12):>10.0%}", flush=True)

    def cb(p):
        if curves and p.phase not in curves:
            row(list(curves)[-1])
        curves.setdefault(p.phase, []).append(p.losses.get("loss", sum(p.losses.values())))
    mask = torch.zeros(1, resolution, resolution)
    mask[..., : resolution * 2 // 5] = 1
    t0 = time.perf_counter()
    segment_composite(G, photos[:1], photos[1:2], "hair", parser=parser, config=cfg, lpips=lpips, vgg=vgg,
                      cache=EmbeddingCache(), callback=cb)
    seconds = time.perf_counter() - t0
    row(list(curves)[-1])
    print(f"reference run: {seconds / 60:.1f} min")
    print("quick gap: the share of the reference's loss reduction (start -> reference) quick has not made")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quality", action="store_true", help="measure the quick preset's loss gap instead (tiny nets)")
    ap.add_argument("--config", default="f256", help="bench_generator config (default f256: config-f at 256 px)")
    ap.add_argument("--steps", type=int, default=3, help="steps per stage on each side (the first is a warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quality:
        quality()
        return
    torch.manual_seed(0)
    G = core.build_generator(BG.CONFIGS[args.config](), seed=0)
    core.compute_w_avg(G, num_samples=1000, seed=0)
    G.requires_grad_(False).eval()
    R = G.img_resolution
    size = min(256, R)
    lpips = P.random_lpips("vgg", seed=0)
    vgg = P.random_vgg16_features(1, layers=STYLE_LAYERS)
    parser = random_face_parser("bisenet19", seed=0, input_size=size)
    n = args.steps
    cfg = replace(DEFAULTS, w_steps=n, fs_steps=n, target_fill_steps=n, align_steps1=n, align_steps2=n,
                  blend_steps=n, seg_size=size, lpips_size=size, prior_samples=10_000)
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
        photos = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
    cache = EmbeddingCache()
    prior = cache.prior(G, cfg.prior_samples)

    print(f"Segment Composite bench: {args.config} ({R} px, num_ws {G.num_ws}), {n} steps per stage, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    # ours: one run, three uncached photos, parser path, the appearance distinct from the reference
    ours = Timer()
    ours.last = time.perf_counter()

    def cb(p):
        phase = p.phase.split(" (")[0]
        phase = "w+" if phase.startswith("w+ ") else "fs" if phase.startswith("fs ") else phase
        phase = "align reference" if phase == "align appearance" else phase
        ours.tick(phase)
    t0 = time.perf_counter()
    res = segment_composite(G, photos[0:1], photos[1:2], "hair", appearance=photos[2:3], parser=parser, config=cfg,
                            lpips=lpips, vgg=vgg, cache=cache, callback=cb)
    ours_total = time.perf_counter() - t0
    # the stage boundaries: the first step of each stage includes its set-up (the warm-up we drop)

    port = Port(G, parser, lpips, vgg, cfg, prior)
    pt = Timer()
    target = torch.randint(0, parser.num_classes, (1, size, size))
    t0 = time.perf_counter()
    for i in range(3):
        pt.start("w+")
        wplus = port.w_plus(photos[i:i + 1], n, pt.tick)
        pt.start("fs")
        port.fs(photos[i:i + 1], wplus, n, pt.tick)
    init = G.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1)
    with torch.no_grad():
        struct = port.down_256(port.synth(init))
        hm = torch.ones(1, 1, size, size)
    for _ in range(2):
        pt.start("target")
        port.ce_steps(init, target, n, pt.tick, realistic=True)
        port.ce_steps(init, target, n, pt.tick, realistic=True)
        pt.start("align base")
        port.ce_steps(init, target, n, pt.tick)
        pt.start("align reference")
        port.ce_steps(init, target, n, pt.tick, style=(struct, hm))
    feats = res.latent.features
    small = port.down_256(photos)
    face = torch.ones(1, 1, size, size)
    pt.start("blend")
    port.blend(init, init, feats, small[:1], small[2:3], face, face, n, pt.tick)
    port_total = time.perf_counter() - t0

    print(f"\n{'stage':<18}{'ours s/step':>12}{'port s/step':>13}{'port/ours':>11}")
    full_o = full_p = cached_o = cached_p = 0.0
    for label, key, ref_steps, count in STAGES:
        o, p = ours.per_step(key), pt.per_step(key)
        print(f"{label:<18}{o:>12.3f}{p:>13.3f}{p / o:>10.2f}x")
        full_o += o * ref_steps * count
        full_p += p * ref_steps * count
        if key not in ("w+", "fs"):
            cached_o += o * ref_steps * count
            cached_p += p * ref_steps * count
    print(f"\nmeasured wall time of the timed runs: ours {ours_total:.1f} s, port {port_total:.1f} s")
    print("extrapolated to the reference's step counts (3 photos, appearance != reference):")
    print(f"  uncached: ours {full_o / 60:.1f} min, port {full_p / 60:.1f} min ({full_p / full_o:.2f}x); "
          f"per photo embedding ours {(full_o - cached_o) / 3 / 60:.1f} min, port {(full_p - cached_p) / 3 / 60:.1f} min")
    print(f"  cached embeddings: ours {cached_o / 60:.1f} min, port {cached_p / 60:.1f} min "
          f"({cached_p / cached_o:.2f}x); a repeat run with our cache vs the port recomputing everything: "
          f"{full_p / cached_o:.2f}x")


if __name__ == "__main__":
    main()
