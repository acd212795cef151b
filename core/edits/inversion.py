"""Inversion: real images into StyleGAN latents (Image2StyleGAN, NVIDIA's projector, II2S, PTI).

`invert_image(G, target, method=...)` optimises a latent (and, for the projector, the noise maps; for PTI,
then the generator's weights) so that `G` reproduces `target`. The input generator is never modified:
anything tuned lives in a copy and is also returned as a compact `WeightDelta`. Gradients are enabled
inside, so it works under ComfyUI's `torch.inference_mode()`.

References (the numbers are those of each method's public code):
- Image2StyleGAN (Abdal et al. 2019): W+, Adam lr 0.01, MSE + Σ VGG16 feature MSE (conv1_1, conv1_2,
  conv3_2, conv4_2) on 256 px, initialised at the mean w.
- NVIDIA projector (stylegan2-ada-pytorch `projector.py`): one w + all noise maps, LPIPS-VGG at 256 px,
  noise autocorrelation regulariser 1e5, lr 0.1 with 5 % ramp-up and cosine ramp-down over the last 25 %,
  latent noise 0.05·w_std·max(0, 1 − t/0.75)², 1000 steps.
- II2S (Zhu et al. 2020): W+ from the mean w, MSE + LPIPS-VGG at 256 px + 0.001 × PCA prior on
  LeakyReLU(5)(w), Adam lr 0.01, fresh random noise every step, 1300 steps.
- PTI (Roich et al. 2021): projector pivot (lr 5e-3, 450 steps), then all weights tuned with Adam lr 3e-4
  on MSE + LPIPS-AlexNet, at most 350 steps, early stop at LPIPS ≤ 0.06.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..deltas import WeightDelta, clone_generator, compute_weight_delta
from ..errors import LatentError
from ..files import read_safetensors, write_safetensors
from ..latents import Latent, check_latent_count, generator_ref, mapped_w_covariance
from ..log import logger
from ..networks import Generator
from ..optimize import (ProgressCallback, StepProgress, finish_requested, autograd_ready, check_finite, descend, has_inference_tensors,
                        loss_values, projector_lr, set_lr, trainable)

METHODS = ("image2stylegan", "projector", "ii2s", "pti")
ENCODER_METHODS = ("e4e", "restyle")       # encoders (core.edits.encoder_inversion): no optimisation, no preset
DEFAULT_METHOD = "ii2s"
PERCEPTUAL_RESOLUTION = 256                # Every reference computes its perceptual loss at 256 px.
PRIOR_MIN_STDEV = 0.01                     # II2S prior: floor on a direction's spread, relative to the largest.


@dataclass(frozen=True)
class InversionConfig:
    """Hyperparameters of one method; the defaults of `METHOD_DEFAULTS` are the references' values."""

    num_steps: int                         # Optimisation steps (for PTI: pivot steps).
    lr: float                              # Adam learning rate (peak, for the projector schedule).
    space: str = "w+"                      # Optimised latent: 'w' (one w for every layer) or 'w+'.
    init: str = "w_avg"                    # Start point: 'w_avg' (mean w).
    mse_weight: float = 0.0                # Pixel MSE at full resolution, images in [-1, 1].
    lpips_weight: float = 0.0              # LPIPS-VGG distance at 256 px.
    vgg_weight: float = 0.0                # Σ MSE of VGG16 features (Image2StyleGAN) at 256 px.
    prior_weight: float = 0.0              # II2S PCA prior on LeakyReLU(5)(w).
    noise_reg_weight: float = 0.0          # Projector noise autocorrelation regulariser.
    optimize_noise: bool = False           # Optimise the noise maps (projector).
    keep_noise: bool = False               # Return a generator holding the optimised noise maps. The references
                                           # discard them (their final image uses the original noise).
    noise_mode: str = "const"              # Noise during optimisation: 'const' or 'random' (II2S).
    lr_schedule: str = "constant"          # 'constant' or 'projector' (ramp up 5 %, cosine down 25 %).
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    w_noise_factor: float = 0.0            # Projector latent noise: factor·w_std·max(0, 1 − t/ramp)².
    w_noise_ramp: float = 0.75
    w_avg_samples: int = 10_000            # Samples for w_avg / w_std.
    tune_steps: int = 0                    # PTI: generator tuning steps after the pivot.
    tune_lr: float = 3e-4                  # PTI: Adam lr for the weights.
    tune_mse_weight: float = 1.0           # PTI: MSE weight while tuning.
    tune_lpips_weight: float = 1.0         # PTI: LPIPS-AlexNet weight while tuning.
    tune_lpips_stop: float = 0.06          # PTI: stop tuning once every image's LPIPS-AlexNet is this low.


METHOD_DEFAULTS: dict[str, InversionConfig] = {
    "image2stylegan": InversionConfig(num_steps=1500, lr=0.01, mse_weight=1.0, vgg_weight=1.0),
    "projector": InversionConfig(num_steps=1000, lr=0.1, space="w", lpips_weight=1.0, noise_reg_weight=1e5,
                                 optimize_noise=True, lr_schedule="projector", w_noise_factor=0.05),
    "ii2s": InversionConfig(num_steps=1300, lr=0.01, mse_weight=1.0, lpips_weight=1.0, prior_weight=1e-3,
                            noise_mode="random"),
    "pti": InversionConfig(num_steps=450, lr=5e-3, space="w", lpips_weight=1.0, noise_reg_weight=1e5,
                           optimize_noise=True, lr_schedule="projector", w_noise_factor=0.05, tune_steps=350),
}

# Perceptual networks each method needs: 'lpips_vgg', 'lpips_alex', 'vgg16_features'.
PERCEPTUAL_NEEDS: dict[str, tuple[str, ...]] = {
    "image2stylegan": ("vgg16_features",),
    "projector": ("lpips_vgg",),
    "ii2s": ("lpips_vgg",),
    "pti": ("lpips_vgg", "lpips_alex"),
}


InversionProgress = StepProgress  # the record's name before the shared harness (core.optimize)


@dataclass
class InversionResult:
    """latent: w or w+ `[N, ...]`; image: final reconstruction `[N, 3, R, R]` in [-1, 1] on CPU;
    generator: the input generator, or a tuned copy (projector noise maps, PTI weights) whose difference
    from the input is `delta`; psnr `[N]` (dB, on [0, 1] images); lpips `[N]` (LPIPS-VGG at 256 px, when
    that network was available)."""

    latent: Latent
    image: torch.Tensor
    generator: Generator
    delta: Optional[WeightDelta]
    method: str
    steps: int
    seconds: float
    psnr: torch.Tensor
    lpips: Optional[torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        return run_report(f"{self.method}: {self.steps} steps in {self.seconds:.1f} s "
                          f"({self.seconds / max(1, self.steps):.3f} s/step)", self.psnr, self.lpips,
                          ([self.delta.describe()] if self.delta is not None else []) + self.notes)


def run_report(head: str, psnr: torch.Tensor, lpips: Optional[torch.Tensor], notes: list[str]) -> str:
    """The text every inversion-like result reports: `head`, one line per image (PSNR, LPIPS when measured), then
    `notes`."""
    lines = [head]
    for i in range(len(psnr)):
        lp = "" if lpips is None else f", LPIPS {float(lpips[i]):.4f}"
        lines.append(f"image {i}: PSNR {float(psnr[i]):.2f} dB{lp}")
    return "\n".join(lines + list(notes))


# ------------------------------------------------------------------------------------------------
# Targets


# Targets are images in [-1, 1], but a generator's raw output overshoots that range (a tiny random one reaches
# ±4) and inverting such an output is a normal use, so the core accepts overshoot up to ±TARGET_MAX_ABS and
# refuses only values no image in [-1, 1] has: another convention (0..255) that would be fitted silently and
# badly. ComfyUI IMAGEs are checked more tightly, against [0, 1], where they are converted (nodes/convert.py).
TARGET_MAX_ABS = 10.0
MASK_RANGE_TOLERANCE = 0.125               # masks are in [0, 1]; values this far outside are rounding, not a mistake


def _value_range(x: torch.Tensor) -> tuple[float, float]:
    lo, hi = torch.aminmax(x.detach())
    return float(lo), float(hi)


def prepare_target(images: torch.Tensor, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """Images `[N, C, H, W]` in [-1, 1] → `[N, 3, resolution, resolution]` in [-1, 1], plus notes.

    Grayscale is repeated to RGB, an alpha channel dropped, other sizes resized (area filter when
    shrinking, bicubic when enlarging; non-square images are stretched, so align faces first).
    Refused with a ValueError saying what to do: an empty batch, more than `MAX_LATENTS` images, NaN or infinite
    values, values beyond ±`TARGET_MAX_ABS` (another convention, e.g. 0..255).
    """
    notes: list[str] = []
    if images.ndim != 4:
        raise ValueError(f"target images must be [N, C, H, W], got shape {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("the target batch is empty (0 images): nothing to invert; connect at least one image")
    check_latent_count(images.shape[0], f"a batch of {images.shape[0]:,} target images",
                       split="invert fewer images per run")
    if 0 in images.shape[2:]:
        raise ValueError(f"the target image has no pixels (shape {list(images.shape)}); connect a real image")
    if not images.is_floating_point():
        raise ValueError(f"target images must be floating point in [-1, 1], got dtype {images.dtype}")
    bad = ~torch.isfinite(images)
    if bad.any():
        raise ValueError(f"the target image contains NaN or infinite values ({int(bad.sum()):,} of "
                         f"{images.numel():,}); fix the node that made it (images are in [-1, 1], a ComfyUI IMAGE in "
                         f"[0, 1])")
    lo, hi = _value_range(images)
    if max(-lo, hi) > TARGET_MAX_ABS:
        raise ValueError(f"the target image has values from {lo:.4g} to {hi:.4g}, but images are in [-1, 1] (a "
                         f"generator's own output may overshoot up to ±{TARGET_MAX_ABS:g}); an image in 0..255 must "
                         f"be scaled first (x / 127.5 - 1)")
    c = images.shape[1]
    if c == 1:
        images = images.repeat(1, 3, 1, 1)
        notes.append("grayscale image repeated to RGB")
    elif c == 4:
        images = images[:, :3]
        notes.append("alpha channel ignored (connect a MASK to ignore the background)")
    elif c != 3:
        raise ValueError(f"target images need 1, 3 or 4 channels, got {c}")
    h, w = images.shape[2:]
    if (h, w) != (resolution, resolution):
        if h != w:
            notes.append(f"image {w}x{h} is not square: stretched to {resolution}x{resolution}; align or crop first")
        else:
            notes.append(f"image resized from {w}x{h} to the generator's {resolution}x{resolution}")
        mode = "area" if h >= resolution and w >= resolution else "bicubic"
        images = F.interpolate(images.float(), size=(resolution, resolution), mode=mode,
                               **({} if mode == "area" else {"align_corners": False})).clamp(-1, 1)
    return images.float().contiguous(), notes


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether sizes (h, w) `a` and `b` have one aspect ratio, within one pixel of rounding at either size."""
    (ha, wa), (hb, wb) = a, b
    return abs(ha * wb / wa - hb) <= 1 or abs(hb * wa / wb - ha) <= 1


def prepare_mask(mask: Optional[torch.Tensor], n: int, resolution: int,
                 image_size: Optional[tuple[int, int]] = None) -> Optional[torch.Tensor]:
    """Mask `[N or 1, H, W]` or `[N, 1, H, W]` in [0, 1] (1 = fit this pixel) → `[N, 1, R, R]`.

    `image_size` (h, w): the size of the images the mask belongs to, before they are resized. A mask of another
    size is resized with them when its aspect ratio is the same (within a pixel); another aspect ratio would
    stretch the mask over the wrong pixels and is refused. Also refused with a ValueError saying what to do:
    NaN or infinite values, values far outside [0, 1], a batch other than 1 or N, a mask that selects no pixel
    of some image.
    """
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be [H, W], [N, H, W] or [N, 1, H, W], got shape {list(mask.shape)}")
    if mask.shape[0] not in (1, n):
        raise ValueError(f"mask must be one for all images or one per image: got {mask.shape[0]} masks for {n} "
                         f"image{'s' if n != 1 else ''}; connect a single mask or a batch of {n}")
    if 0 in mask.shape[2:]:
        raise ValueError(f"the mask has no pixels (shape {list(mask.shape)}); connect a real mask or none")
    hm, wm = mask.shape[2:]
    if image_size is not None and (hm, wm) != tuple(image_size):
        h, w = image_size
        if not _same_aspect((hm, wm), (h, w)):
            raise ValueError(f"the mask is {wm}x{hm} but the image is {w}x{h}: their aspect ratios differ, so the "
                             f"mask would be stretched over the wrong pixels; resize or crop the mask to {w}x{h} (a "
                             f"mask of the same shape at another size, e.g. {2 * w}x{2 * h}, is resized "
                             f"automatically)")
    mask = mask.float()
    bad = ~torch.isfinite(mask)
    if bad.any():
        raise ValueError(f"the mask contains NaN or infinite values ({int(bad.sum()):,} of {mask.numel():,}); masks "
                         f"are in [0, 1] (1 = fit this pixel): fix the node that made it")
    lo, hi = _value_range(mask)
    if lo < -MASK_RANGE_TOLERANCE or hi > 1 + MASK_RANGE_TOLERANCE:
        raise ValueError(f"the mask has values from {lo:.4g} to {hi:.4g}, but masks are in [0, 1] (1 = fit this "
                         f"pixel); a 0..255 mask must be divided by 255 first")
    mask = F.interpolate(mask, size=(resolution, resolution), mode="bilinear", align_corners=False)
    mask = mask.clamp(0, 1).expand(n, 1, resolution, resolution)
    empty = (mask.flatten(1).amax(1) <= 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"the mask is empty for image{'s' if len(empty) > 1 else ''} "
                         f"{', '.join(map(str, empty[:10]))}{', ...' if len(empty) > 10 else ''}: no pixel would be "
                         f"fitted. Mark the pixels to fit with 1 (with Invert Image's 'ignore inside mask', leave "
                         f"some pixels at 0), or connect no mask to fit the whole image")
    return mask.contiguous()


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR `[N]` in dB of images in [-1, 1], measured on [0, 1]."""
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def downsample_to(x: torch.Tensor, size: int = PERCEPTUAL_RESOLUTION) -> torch.Tensor:
    """Area-downsample to `size` when larger, as every reference does before its perceptual network."""
    return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] > size else x


# ------------------------------------------------------------------------------------------------
# Statistics of W: mean and spread (projector), PCA prior (II2S)


def w_stats(G: Generator, num_samples: int = 10_000, *, seed: int = 123,
            batch_size: int = 4096) -> tuple[torch.Tensor, float]:
    """(w_avg `[w_dim]`, w_std) from `num_samples` mapped z, as NVIDIA's projector computes them
    (z from `np.random.RandomState(seed)`; w_std = sqrt(Σ‖w − w_avg‖² / n))."""
    device = G.w_avg.device
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim)).float()
    c = None
    if G.c_dim:  # conditional models: average over uniformly drawn classes
        idx = torch.from_numpy(np.random.RandomState(seed + 1).randint(0, G.c_dim, num_samples))
        c = F.one_hot(idx, G.c_dim).float()
    ws = []
    with torch.no_grad():
        for i in range(0, num_samples, batch_size):
            ws.append(G.mapping(z[i:i + batch_size].to(device), None if c is None else c[i:i + batch_size].to(device),
                                truncation_psi=1)[:, 0].double().cpu())
    w = torch.cat(ws)
    w_avg = w.mean(0)
    w_std = float(((w - w_avg).square().sum() / num_samples).sqrt())
    return w_avg.float(), w_std


@dataclass
class WPrior:
    """II2S prior: PCA of v = LeakyReLU(slope 5)(w) over mapped samples. `mean [w_dim]`,
    `components [k, w_dim]` (rows), `stdev [k]`; the loss is the mean squared whitened coordinate."""

    mean: torch.Tensor
    components: torch.Tensor
    stdev: torch.Tensor
    num_samples: int
    fingerprint: str = ""

    def loss(self, ws: torch.Tensor, min_stdev: float = PRIOR_MIN_STDEV) -> torch.Tensor:
        """Mean over N, layers and components of ((LeakyReLU5(ws) − mean)·componentsᵀ / stdev)².

        Directions whose spread is below `min_stdev` × the largest are whitened as if they had that spread:
        they carry no visible content, and in a rank-deficient mapping network they would otherwise swamp
        the loss (the reference has no such floor; 0 turns it off)."""
        stdev = self.stdev.to(ws)
        stdev = stdev.clamp_min(float(stdev.max()) * min_stdev)
        v = F.leaky_relu(ws, negative_slope=5.0) - self.mean.to(ws)
        return ((v @ self.components.to(ws).t()) / stdev).square().mean()


def compute_w_prior(G: Generator, num_samples: int = 1_000_000, *, seed: int = 0, batch_size: int = 8192,
                    callback: Optional[Callable[[int, int], None]] = None) -> WPrior:
    """PCA prior of II2S from `num_samples` mapped z (the reference uses 10⁶), streamed in float64 so
    memory stays at one batch. `callback(done, total)` may raise to cancel."""
    mean, cov = mapped_w_covariance(G, num_samples, seed=seed, chunk=batch_size,
                                    transform=lambda w: F.leaky_relu(w, negative_slope=5.0), callback=callback)
    evals, evecs = torch.linalg.eigh(cov)                      # ascending
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(1e-12), evecs[:, order]
    return WPrior(mean.float(), evecs.t().float().contiguous(), evals.sqrt().float(), int(num_samples),
                  generator_ref(G).fingerprint)


PRIOR_FORMAT = "stylegan-studio-w-prior"


def save_w_prior(prior: WPrior, path: Union[str, Path]) -> Path:
    """Cache `prior` at `path` (safetensors, atomic), tagged with the generator's fingerprint."""
    return write_safetensors(path, {"mean": prior.mean, "components": prior.components, "stdev": prior.stdev},
                             format=PRIOR_FORMAT,
                             metadata={"num_samples": str(prior.num_samples), "fingerprint": prior.fingerprint})


def load_w_prior(path: Union[str, Path], G: Optional[Generator] = None) -> Optional[WPrior]:
    """The prior cached at `path`, or None when it is missing, unreadable or made for another generator."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        t, meta = read_safetensors(path, what="II2S prior cache")
        prior = WPrior(t["mean"], t["components"], t["stdev"], int(meta.get("num_samples", 0)),
                       meta.get("fingerprint", ""))
    except Exception as e:  # noqa: BLE001 - a damaged cache is recomputed, never fatal
        logger.warning("ignoring unreadable II2S prior cache %s (%s); it will be recomputed", path, e)
        return None
    if G is not None and (prior.fingerprint != generator_ref(G).fingerprint or prior.mean.shape[0] != G.w_dim):
        logger.info("II2S prior cache %s belongs to another generator; recomputing", path)
        return None
    return prior


# ------------------------------------------------------------------------------------------------
# Loss pieces


def noise_regularizer(noise: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """NVIDIA projector's noise regulariser: squared autocorrelation at lag 1 (x and y) of every noise
    map, over an octave pyramid down to 8 px."""
    reg = torch.zeros([])
    for v in noise.values():
        x = v.reshape(-1, 1, *v.shape[-2:])
        reg = reg.to(x)
        while True:
            reg = reg + (x * torch.roll(x, shifts=1, dims=3)).mean().square()
            reg = reg + (x * torch.roll(x, shifts=1, dims=2)).mean().square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return reg


class _Loss:
    """The weighted loss of one method; returns (total, {term: value}) for a batch of synthesised images."""

    def __init__(self, cfg: InversionConfig, target: torch.Tensor, mask: Optional[torch.Tensor],
                 nets: Mapping[str, nn.Module], prior: Optional[WPrior]):
        self.cfg, self.target, self.mask, self.prior = cfg, target, mask, prior
        self.lpips = nets.get("lpips_vgg") if cfg.lpips_weight else None
        self.vgg = nets.get("vgg16_features") if cfg.vgg_weight else None
        self.target_small = downsample_to(target)
        self.mask_small = None if mask is None else downsample_to(mask)
        self.target_feats = self.target_lpips = None
        with torch.no_grad():
            if self.vgg is not None:
                self.target_feats = [f.detach() for f in self.vgg(self.target_small)]
            if self.lpips is not None and hasattr(self.lpips, "lpips_features"):
                # The target is fixed: its LPIPS features are computed once (as NVIDIA's projector does).
                self.target_lpips = [f.detach() for f in self.lpips.lpips_features(self.target_small)]

    def _masked(self, synth: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        # Outside the mask the reconstruction is replaced by the target, so those pixels cost nothing.
        return synth if mask is None else synth * mask + target * (1 - mask)

    def __call__(self, synth: torch.Tensor, ws: torch.Tensor,
                 noise: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, terms = self.cfg, {}
        n = synth.shape[0]
        if cfg.mse_weight:
            diff = (synth - self.target).square()
            if self.mask is not None:
                diff = diff * self.mask
                terms["mse"] = diff.flatten(1).sum(1).div(self.mask.flatten(1).sum(1) * 3).sum()
            else:
                terms["mse"] = diff.flatten(1).mean(1).sum()
        if self.lpips is not None or self.vgg is not None:
            small = self._masked(downsample_to(synth), self.target_small, self.mask_small)
            if self.target_lpips is not None:
                terms["lpips"] = sum((f - t).square().sum() for f, t in
                                     zip(self.lpips.lpips_features(small), self.target_lpips))
            elif self.lpips is not None:
                terms["lpips"] = self.lpips(small, self.target_small).sum()
            if self.vgg is not None:
                feats = self.vgg(small)
                terms["vgg"] = sum(F.mse_loss(f, t, reduction="none").flatten(1).mean(1).sum()
                                   for f, t in zip(feats, self.target_feats))
        if self.prior is not None and cfg.prior_weight:
            terms["prior"] = self.prior.loss(ws) * n
        if cfg.noise_reg_weight and noise:
            terms["noise_reg"] = noise_regularizer(noise)
        weights = {"mse": cfg.mse_weight, "lpips": cfg.lpips_weight, "vgg": cfg.vgg_weight,
                   "prior": cfg.prior_weight, "noise_reg": cfg.noise_reg_weight}
        total = sum(weights[k] * v for k, v in terms.items())
        return total, terms


ReconstructionLoss = _Loss  # the public name: the FS embedding (core.edits.fs_embedding) reuses II2S's loss


# ------------------------------------------------------------------------------------------------
# The optimisation


def invert_image(G: Generator, target: torch.Tensor, *, method: str = DEFAULT_METHOD,
                 num_steps: Optional[int] = None, lr: Optional[float] = None,
                 mask: Optional[torch.Tensor] = None, perceptual: Optional[Mapping[str, nn.Module]] = None,
                 prior: Optional[WPrior] = None, init_latent: Optional[Latent] = None,
                 tune_steps: Optional[int] = None, seed: int = 0,
                 callback: Optional[ProgressCallback] = None,
                 config: Optional[InversionConfig] = None, delta_dtype: str = "float16",
                 encoder=None, num_iterations: Optional[int] = None) -> InversionResult:
    """Invert `target` into `G`'s latent space.

    Args:
        G: generator (not modified; runs on its own device).
        target: images `[N, C, H, W]` in [-1, 1] (C = 1, 3 or 4; resized to G's resolution with a note).
        method: 'image2stylegan', 'projector', 'ii2s' or 'pti' (see the module docstring).
        num_steps, lr, tune_steps: override the method's defaults (`METHOD_DEFAULTS`); for PTI `num_steps`
            is the pivot and `tune_steps` the weight tuning.
        mask: `[N or 1, H, W]` in [0, 1]; only pixels with weight > 0 are fitted (e.g. ignore the background).
        perceptual: networks by name ('lpips_vgg', 'lpips_alex', 'vgg16_features'; `PERCEPTUAL_NEEDS[method]`
            says which); missing ones are loaded with `core.losses.perceptual` (which explains where to put
            weights when offline).
        prior: II2S prior; computed from G (10⁶ samples) when missing — pass a cached one.
        init_latent: start from this w / w+ latent instead of the mean w.
        seed: seeds the projector's initial noise maps, its latent noise and II2S's random noise.
        callback: called with a `StepProgress` after every step (phase 'latent', then 'tune' for PTI; `image` the
            current reconstruction; in the latent phase `params` holds the latent after the step, 'ws'
            `[N, num_ws, w_dim]`, and the optimised noise maps 'noise/<layer>' `[1, 1, r, r]`: rendering them with
            noise_mode 'const' gives what the inversion would return if it stopped there; in PTI's tune phase
            `model` is the tuned copy of G, live); raise in it to cancel (G stays untouched, nothing is returned),
            return `core.optimize.FINISH` to end after this step with the current result (PTI finished in the
            pivot phase skips the tuning).
        config: a full `InversionConfig` (overrides `method`'s defaults entirely).
        delta_dtype: storage dtype of the returned `WeightDelta`.
        encoder: a loaded pSp / e4e / ReStyle `core.models.encoders.Encoder`. Required by the encoder methods
            'e4e' (one pass of a pSp or e4e file) and 'restyle' (iterative; `num_iterations`, default 5), which do
            not optimise; with an optimising method the optimisation starts exactly at the encoder's w+ (a method
            that optimises one w, the projector and PTI, then optimises w+, as PTI does from e4e).

    Returns:
        `InversionResult` (latent, reconstruction, generator, delta, PSNR, LPIPS, timings, notes).
    """
    if method in ENCODER_METHODS:
        return _invert_with_encoder(G, target, method, encoder, num_iterations)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS + ENCODER_METHODS}, got {method!r}")
    cfg = config or METHOD_DEFAULTS[method]
    encoder_notes: list[str] = []
    if encoder is not None:
        if init_latent is not None:
            raise ValueError("give either init_latent or encoder as the start of the inversion, not both")
        from .encoder_inversion import encode_image

        encoded = encode_image(encoder, G, target, num_iterations=num_iterations, render=False)
        init_latent = encoded.latent
        encoder_notes = [f"started from the {encoder.info.kind} encoder's w+ ({encoded.iterations} "
                         f"pass{'es' if encoded.iterations != 1 else ''})"] + encoded.notes
        if cfg.space == "w":
            cfg = replace(cfg, space="w+")
            encoder_notes.append(f"{method} optimised w+ instead of one w, to start exactly at the encoder's latent")
    if not cfg.tune_steps:
        tune_steps = None  # only PTI tunes the generator
    overrides = {k: v for k, v in dict(num_steps=num_steps, lr=lr, tune_steps=tune_steps).items() if v is not None}
    cfg = replace(cfg, **overrides)
    if cfg.num_steps < 0 or cfg.tune_steps < 0 or not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise ValueError(f"num_steps and tune_steps must be >= 0 and lr > 0, got {cfg.num_steps}, {cfg.tune_steps}, "
                         f"{cfg.lr}")
    device = G.w_avg.device
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        images, notes = prepare_target(target.detach().clone(), G.img_resolution)
        images = images.to(device)
        n = images.shape[0]
        mask_t = prepare_mask(None if mask is None else mask.detach().clone(), n, G.img_resolution,
                              image_size=tuple(target.shape[-2:]))
        mask_t = None if mask_t is None else mask_t.to(device)
        nets = _perceptual_nets(method, perceptual, device)
        if cfg.prior_weight and prior is None:
            notes.append("II2S prior computed from the generator (pass a cached prior to skip this)")
            prior = compute_w_prior(G, seed=seed)
        if prior is not None:  # made under inference mode, its tensors could not be saved for backward
            prior = replace(prior, mean=autograd_ready(prior.mean), components=autograd_ready(prior.components),
                            stdev=autograd_ready(prior.stdev))
        keep_noise = cfg.optimize_noise and cfg.keep_noise and not cfg.tune_steps
        work = clone_generator(G) if (keep_noise or cfg.tune_steps or has_inference_tensors(G)) else G
        state = _optimise_latent(work, images, mask_t, cfg, nets, prior, init_latent, seed, callback,
                                 cfg.num_steps + cfg.tune_steps)
        ws, history = state["ws"], state["history"]
        delta = None
        if keep_noise and work.synthesis.noise_layer_names:
            _store_noise(work, state["noise"])
        if cfg.tune_steps and not state["finished"]:  # "Finish now" in the pivot phase ends PTI with the pivot
            _tune_generator(work, ws, images, mask_t, cfg, nets, callback, cfg.num_steps, history)
        with torch.no_grad():
            final = work.synthesis(ws, noise_mode="const")
            lp = nets["lpips_vgg"](downsample_to(final), downsample_to(images)).flatten() if "lpips_vgg" in nets else None
            quality = psnr(final, images)
        if work is not G:
            work.requires_grad_(False).eval()
            if keep_noise or cfg.tune_steps:
                kind = "pti" if cfg.tune_steps else "noise"
                delta = compute_weight_delta(G, work, kind=kind, dtype=delta_dtype,
                                             metadata={"method": method, "steps": len(history)})
                work.info.name = f"{G.info.name}+{kind}"
                if not delta.tensors:
                    delta, work = None, G
            else:
                work = G
    latent_space = "w" if cfg.space == "w" else "w+"
    lat = ws[:, 0] if latent_space == "w" else ws
    # Tied to the generator it reproduces the image with (PTI's tuned copy), so rendering it there is not reported
    # as "a latent made for another generator"; with the base generator it is the pivot, and that is reported.
    latent = Latent(lat.detach().float().cpu().contiguous(), latent_space, generator_ref(work))
    return InversionResult(latent=latent, image=final.detach().float().cpu(), generator=work, delta=delta,
                           method=method, steps=len(history), seconds=time.perf_counter() - t0,
                           psnr=quality.cpu(), lpips=None if lp is None else lp.detach().cpu(),
                           history=history, notes=encoder_notes + notes)


def _invert_with_encoder(G: Generator, target: torch.Tensor, method: str, encoder,
                         num_iterations: Optional[int]) -> InversionResult:
    """Methods 'e4e' and 'restyle': `core.edits.encoder_inversion.encode_image`, reported as an inversion."""
    from .encoder_inversion import encode_image

    if encoder is None:
        raise ValueError(f"method {method!r} needs an encoder: load a pSp, e4e or ReStyle checkpoint (Load Encoder) "
                         f"and connect it")
    iterative = encoder.info.iterative
    if method == "restyle" and not iterative:
        raise ValueError(f"method 'restyle' needs a ReStyle checkpoint, but {encoder.info.name} is {encoder.info.kind}"
                         f"; choose method 'e4e' (one pass) for it")
    if method == "e4e" and iterative:
        raise ValueError(f"{encoder.info.name} is a ReStyle encoder ({encoder.info.kind}); choose method 'restyle'")
    t0 = time.perf_counter()
    res = encode_image(encoder, G, target, num_iterations=num_iterations)
    with torch.no_grad():
        images, notes = prepare_target(target.detach().float(), G.img_resolution)
        quality = psnr(res.image, images.cpu())
    return InversionResult(latent=res.latent, image=res.image, generator=G, delta=None, method=method,
                           steps=res.iterations, seconds=time.perf_counter() - t0, psnr=quality, lpips=None,
                           history=[], notes=[f"{encoder.info.kind} encoder ({encoder.info.name}), no optimisation"]
                           + res.notes + notes)


def _perceptual_nets(method: str, given: Optional[Mapping[str, nn.Module]], device) -> dict[str, nn.Module]:
    nets = dict(given or {})
    for name in PERCEPTUAL_NEEDS[method]:
        if name not in nets:
            from ..losses import perceptual as P

            if name == "vgg16_features":
                nets[name] = P.load_vgg16_features()
            else:
                nets[name] = P.load_lpips("vgg" if name == "lpips_vgg" else "alex")
    out = {}
    for name, net in nets.items():
        net = autograd_ready(net).to(device).eval()
        net.requires_grad_(False)
        out[name] = net
    return out


perceptual_networks = _perceptual_nets  # (method, given, device): the networks `method` needs, ready for autograd


def _initial_ws(G: Generator, n: int, cfg: InversionConfig, init_latent: Optional[Latent],
                w_avg: torch.Tensor) -> torch.Tensor:
    """Starting ws `[N, 1 or num_ws, w_dim]` (1 when optimising a single w)."""
    device = G.w_avg.device
    if init_latent is not None:
        if init_latent.space == "z":
            raise LatentError("start the inversion from a w or w+ latent, not z")
        if init_latent.batch_size not in (1, n):
            raise LatentError(f"init latent has {init_latent.batch_size} entries for {n} images")
        from ..latents import latent_to_ws

        ws = latent_to_ws(G, init_latent).detach().to(device).expand(n, -1, -1).clone()
        return ws[:, :1].clone() if cfg.space == "w" else ws
    base = w_avg.to(device).reshape(1, 1, -1)
    return base.repeat(n, 1 if cfg.space == "w" else G.num_ws, 1)


def _optimise_latent(G: Generator, images: torch.Tensor, mask: Optional[torch.Tensor], cfg: InversionConfig,
                     nets: Mapping[str, nn.Module], prior: Optional[WPrior], init_latent: Optional[Latent],
                     seed: int, callback, total_steps: int) -> dict:
    device = images.device
    n = images.shape[0]
    gen = torch.Generator(device=device).manual_seed(int(seed))
    w_avg, w_std = (G.w_avg.detach().float(), 0.0)
    if cfg.w_noise_factor or cfg.init == "w_avg_sampled":
        w_avg, w_std = w_stats(G, cfg.w_avg_samples)
    w_opt = trainable(_initial_ws(G, n, cfg, init_latent, w_avg))
    params = [w_opt]
    noise: dict[str, torch.Tensor] = {}
    if cfg.optimize_noise:
        for name in G.synthesis.noise_layer_names:
            r = G.synthesis.get_submodule(name).resolution
            # One map per layer shared by the batch, so the tuned generator can hold it.
            noise[name] = trainable(torch.randn([1, 1, r, r], generator=gen, device=device))
        params += list(noise.values())
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=cfg.lr)
    loss_fn = _Loss(cfg, images, mask, nets, prior)
    history: list[dict[str, float]] = []
    synth = None
    finished = False  # "Finish now": the callback returned FINISH
    for step in range(cfg.num_steps):
        t = step / max(1, cfg.num_steps)
        if cfg.lr_schedule == "projector":
            set_lr(opt, projector_lr(t, cfg.lr, cfg.lr_rampup, cfg.lr_rampdown))
        w_in = w_opt
        if cfg.w_noise_factor:
            scale = w_std * cfg.w_noise_factor * max(0.0, 1.0 - t / cfg.w_noise_ramp) ** 2
            w_in = w_opt + torch.randn(w_opt.shape, generator=gen, device=device) * scale
        ws = w_in.expand(-1, G.num_ws, -1) if cfg.space == "w" else w_in
        synth = G.synthesis(ws, noise_mode=cfg.noise_mode, noise=noise or None,
                            generator=gen if cfg.noise_mode == "random" else None)
        total, terms = loss_fn(synth, ws, noise)
        # This message alone still counts from 0, as before the shared record (tests/test_invert.py matches
        # "diverged at step 0" for the first step); the record and every other message count from 1.
        check_finite(total, terms, step=step, what="the inversion", hint=f"lower the learning rate (was {cfg.lr})")
        descend(opt, total)
        if noise:
            with torch.no_grad():  # projector: keep every noise map zero-mean, unit-variance
                for v in noise.values():
                    v -= v.mean()
                    v *= v.square().mean().rsqrt()
        record = loss_values(terms, total)
        history.append(record)
        if callback is not None:
            current = {"ws": (w_opt.expand(-1, G.num_ws, -1) if cfg.space == "w" else w_opt).detach().clone()}
            current.update({f"noise/{k}": v.detach().clone() for k, v in noise.items()})
            if finish_requested(callback(StepProgress(step + 1, total_steps, "latent", record, synth.detach(),
                                                      current))):
                finished = True
                break
    ws = (w_opt.expand(-1, G.num_ws, -1) if cfg.space == "w" else w_opt).detach()
    return {"ws": ws.clone(), "noise": {k: v.detach() for k, v in noise.items()}, "history": history,
            "finished": finished}


def _store_noise(G: Generator, noise: Mapping[str, torch.Tensor]) -> None:
    """Write optimised noise maps into G's (copied) constant noise buffers."""
    with torch.no_grad():
        for name, v in noise.items():
            layer = G.synthesis.get_submodule(name)
            layer.noise_const.copy_(v.reshape(layer.noise_const.shape))


def _tune_generator(G: Generator, ws: torch.Tensor, images: torch.Tensor, mask: Optional[torch.Tensor],
                    cfg: InversionConfig, nets: Mapping[str, nn.Module], callback, step0: int,
                    history: list[dict[str, float]]) -> None:
    """PTI's second phase: tune every synthesis weight of the (copied) G on MSE + LPIPS-AlexNet."""
    alex = nets["lpips_alex"]
    params = [p for p in G.synthesis.parameters()]
    G.synthesis.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.tune_lr)
    total_steps = cfg.num_steps + cfg.tune_steps
    for step in range(cfg.tune_steps):
        synth = G.synthesis(ws, noise_mode="const")
        fit = synth if mask is None else synth * mask + images * (1 - mask)
        mse = (fit - images).square().flatten(1).mean(1)
        lp = alex(fit, images).flatten()
        total = (cfg.tune_mse_weight * mse + cfg.tune_lpips_weight * lp).sum()
        terms = {"mse": mse.detach().sum(), "lpips_alex": lp.detach().sum()}
        check_finite(total, terms, step=step0 + step + 1, what="PTI tuning", hint=f"lower tune_lr (was {cfg.tune_lr})")
        record = loss_values(terms, total)
        history.append(record)
        done = bool((lp <= cfg.tune_lpips_stop).all())  # the reference stops once LPIPS is low enough
        if not done:
            descend(opt, total)
        if callback is not None and finish_requested(
                callback(StepProgress(step0 + step + 1, total_steps, "tune", record, synth.detach(), model=G))):
            break
        if done:
            break
    G.synthesis.requires_grad_(False)
