"""FS embedding (Barbershop, Zhu et al. 2021): from a W+ latent, optimise the 32 px features F and the later w codes S.

`embed_fs(G, image, init)` starts from `init` (usually II2S's W+ inversion of the same image: `invert_image(...,
method='ii2s')`), takes F = `G.synthesis.run(ws, stop=32).x` and S = ws[:, 7:] (`core.latents.fs_first_w`), and
optimises both with Adam so that the blocks after 32 px reproduce the image; ws[:, :7] stay frozen (they only made
F). The result is an fs latent (`core.latents.Latent`, space 'fs') that Synthesize renders. FS reconstructs photos
far better than W+ (F has 32 x 32 x 512 free values) while S stays editable.

Reference: ZPdesu/Barbershop `models/Embedding.py: invert_images_in_FS` (commit 088d7d0f): Adam lr 0.01, 250 steps
(`FS_steps`), loss = MSE at full size + LPIPS-VGG at 256 px + 1e-3 x the II2S PCA prior on LeakyReLU(5) of all the
codes (the frozen ones included); the generated image starts from F with the 32 px RGB skip dropped; noise random
every step. Its documented F regulariser `l_F_lambda * mean((F - F_init)^2)` (l_F_lambda 0.1) is never applied: the
loss is called without F (`cal_loss(im_dict, latent_in)`); here it is the switch `apply_l_F`, off by default, so
the default is what the reference code does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional

import torch
from torch import nn

from ..deltas import clone_generator
from ..errors import LatentError
from ..latents import (DEFAULT_FS_SKIP, FS_SKIPS, Latent, check_compatible, check_fs_generator, fs_first_w,
                       fs_from_wplus, generator_ref, synthesize_fs)
from ..networks import Generator
from ..optimize import (ProgressCallback, StepProgress, autograd_ready, check_finite, descend, finish_requested,
                        has_inference_tensors, loss_values, trainable)
from . import inversion as I

NOISE_MODES = ("random", "const")
INVERSION_METHOD = "ii2s+fs"               # Invert Image's method that runs II2S, then this embedding
W_STEPS = 1100                             # Barbershop's II2S steps before the FS embedding (`W_steps`)


@dataclass(frozen=True)
class FSConfig:
    """Hyperparameters of the FS embedding; the defaults are Barbershop's (`main.py` argparse)."""

    num_steps: int = 250                   # `FS_steps`.
    lr: float = 0.01                       # Adam learning rate (`learning_rate`).
    mse_weight: float = 1.0                # `l2_lambda`: pixel MSE at full size, images in [-1, 1].
    lpips_weight: float = 1.0              # `percept_lambda`: LPIPS-VGG at 256 px.
    prior_weight: float = 1e-3             # `p_norm_lambda`: the II2S PCA prior on every code.
    apply_l_F: bool = False                # Apply the F regulariser (documented; the reference never applies it).
    l_F_lambda: float = 0.1                # `l_F_lambda`: weight of mean((F - F_init)^2) when applied.
    noise_mode: str = "random"             # Noise while optimising: 'random' (the reference: fresh maps every
                                           # step, so F and S do not fit one noise draw and render alike with any
                                           # noise_mode) or 'const' (the stored maps: fits exactly what a 'const'
                                           # render shows).
    skip: str = DEFAULT_FS_SKIP            # 'drop' (Barbershop) or 'keep' the RGB skip at 32 px (see fs_from_wplus).


DEFAULTS = FSConfig()


@dataclass
class FSResult:
    """latent: the fs latent `[N]`; image: its reconstruction `[N, 3, R, R]` in [-1, 1] on CPU (noise_mode 'const');
    psnr `[N]` (dB on [0, 1]); lpips `[N]` (LPIPS-VGG at 256 px); start_losses / losses: the loss terms (summed over
    the batch, 'loss' the weighted total) of the start point and of the result, both with the stored noise maps."""

    latent: Latent
    image: torch.Tensor
    steps: int
    seconds: float
    psnr: torch.Tensor
    lpips: torch.Tensor
    start_losses: dict[str, float]
    losses: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        return I.run_report(f"fs: {self.steps} steps in {self.seconds:.1f} s ({self.seconds / max(1, self.steps):.3f} "
                            f"s/step); loss {self.start_losses['loss']:.4g} (W+ start) -> {self.losses['loss']:.4g}",
                            self.psnr, self.lpips, self.notes)


def _start(G: Generator, init: Latent, n: int, skip: str) -> Latent:
    """The fs latent the embedding starts from, expanded to `n` entries: `init` itself when it is fs, else made from
    its W+ codes."""
    if init.batch_size not in (1, n):
        raise LatentError(f"the init latent has {init.batch_size} entries for {n} images; give one, or one per image")
    if init.space == "fs":
        check_compatible(init, G)
        start = init
    elif init.space in ("w", "w+"):
        start = fs_from_wplus(G, init, skip=skip)
    else:
        raise LatentError(f"start the FS embedding from a w+ latent (II2S's inversion of the image), not a "
                          f"{init.space} latent")
    if start.batch_size == n:
        return start
    img = None if start.features_img is None else start.features_img.expand(n, -1, -1, -1)
    return Latent(start.tensor.expand(n, -1, -1), "fs", start.generator,
                  None if start.c is None else start.c.expand(n, -1),
                  features=start.features.expand(n, -1, -1, -1), features_img=img)


def embed_fs(G: Generator, image: torch.Tensor, init: Latent, *, num_steps: Optional[int] = None,
             lr: Optional[float] = None, apply_l_F: Optional[bool] = None, l_F_lambda: Optional[float] = None,
             skip: Optional[str] = None, noise_mode: Optional[str] = None, mask: Optional[torch.Tensor] = None,
             perceptual: Optional[Mapping[str, nn.Module]] = None, prior: Optional[I.WPrior] = None, seed: int = 0,
             callback: Optional[ProgressCallback] = None, step_offset: int = 0, total_steps: Optional[int] = None,
             config: Optional[FSConfig] = None) -> FSResult:
    """Embed `image` in `G`'s FS space, starting from `init` (Barbershop's `invert_images_in_FS`).

    Args:
        G: a StyleGAN2 generator of at least 64 px (not modified; runs on its own device).
        image: targets `[N, C, H, W]` in [-1, 1] (resized to G's resolution with a note, as `invert_image`).
        init: the start: a w / w+ latent (1 or N entries; usually II2S's inversion of `image`), or an fs latent to
            continue from (its skip convention is kept).
        num_steps, lr, apply_l_F, l_F_lambda, skip, noise_mode: override `config`'s values (`FSConfig` documents
            each; default `DEFAULTS`, the reference's).
        mask: `[N or 1, H, W]` in [0, 1]: only pixels with weight > 0 are fitted.
        perceptual: {'lpips_vgg': network}; loaded with `core.losses.perceptual` when missing.
        prior: the II2S prior (`inversion.compute_w_prior`); computed from G (10^6 samples) when missing.
        seed: seeds the random noise.
        callback: after every step, a `StepProgress` (phase 'fs'; step counted from `step_offset`, of
            `total_steps`, so a node running II2S first shows one bar; `params`: 'ws' `[N, num_ws, w_dim]` and
            'features' F after the step). Raise in it to cancel (G is untouched, nothing returned); return
            `core.optimize.FINISH` to end after this step with the current latent.

    Returns:
        `FSResult`: the fs latent (tied to G), its reconstruction, PSNR / LPIPS, the losses of the start and of the
        result (both with the stored noise maps, so they compare), the history.
    """
    cfg = replace(config or DEFAULTS, **{k: v for k, v in dict(
        num_steps=num_steps, lr=lr, apply_l_F=apply_l_F, l_F_lambda=l_F_lambda, skip=skip,
        noise_mode=noise_mode).items() if v is not None})
    if isinstance(cfg.num_steps, bool) or not isinstance(cfg.num_steps, int) or cfg.num_steps < 0:
        raise ValueError(f"num_steps must be a whole number >= 0, got {cfg.num_steps!r}")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"lr must be a positive number (the reference uses 0.01), got {cfg.lr!r}")
    if not (math.isfinite(cfg.l_F_lambda) and cfg.l_F_lambda >= 0):
        raise ValueError(f"l_F_lambda must be a number >= 0 (the reference documents 0.1), got {cfg.l_F_lambda!r}")
    if cfg.skip not in FS_SKIPS:
        raise ValueError(f"skip must be one of {FS_SKIPS}, got {cfg.skip!r}")
    if cfg.noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {cfg.noise_mode!r}")
    check_fs_generator(G)
    device = G.w_avg.device
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        images, notes = I.prepare_target(image.detach().clone(), G.img_resolution)
        images = images.to(device)
        n = images.shape[0]
        mask_t = I.prepare_mask(None if mask is None else mask.detach().clone(), n, G.img_resolution,
                                image_size=tuple(image.shape[-2:]))
        mask_t = None if mask_t is None else mask_t.to(device)
        start = _start(G, init, n, cfg.skip)
        nets = I.perceptual_networks("ii2s", perceptual, device)
        if cfg.prior_weight and prior is None:
            notes.append("II2S prior computed from the generator (pass a cached prior to skip this)")
            prior = I.compute_w_prior(G, seed=seed)
        if prior is not None:  # made under inference mode, its tensors could not be saved for backward
            prior = replace(prior, mean=autograd_ready(prior.mean), components=autograd_ready(prior.components),
                            stdev=autograd_ready(prior.stdev))
        work = clone_generator(G) if has_inference_tensors(G) else G
        loss_fn = I.ReconstructionLoss(I.InversionConfig(num_steps=cfg.num_steps, lr=cfg.lr, mse_weight=cfg.mse_weight,
                                                         lpips_weight=cfg.lpips_weight, prior_weight=cfg.prior_weight),
                                       images, mask_t, nets, prior)
        first = fs_first_w(work)
        frozen = autograd_ready(start.tensor[:, :first].to(device, torch.float32)).detach()
        f_init = autograd_ready(start.features.to(device, torch.float32)).detach().contiguous()
        img32 = None if start.features_img is None else autograd_ready(start.features_img.to(device, torch.float32))
        s_opt = trainable(start.tensor[:, first:].to(device, torch.float32))
        f_opt = trainable(f_init)
        params = [s_opt, f_opt]
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
        gen = torch.Generator(device=device).manual_seed(int(seed))

        def loss(noise: str, generator=None):
            ws = torch.cat([frozen, s_opt], dim=1)
            synth = synthesize_fs(work, ws, f_opt, img32, noise_mode=noise, generator=generator)
            total, terms = loss_fn(synth, ws, {})
            if cfg.apply_l_F:
                terms["l_F"] = (f_opt - f_init).square().flatten(1).mean(1).sum()
                total = total + cfg.l_F_lambda * terms["l_F"]
            return synth, total, terms

        with torch.no_grad():
            _, total, terms = loss("const")
            start_losses = loss_values(terms, total)
        total_steps = total_steps if total_steps is not None else step_offset + cfg.num_steps
        history: list[dict[str, float]] = []
        for step in range(cfg.num_steps):
            synth, total, terms = loss(cfg.noise_mode, gen if cfg.noise_mode == "random" else None)
            check_finite(total, terms, step=step + 1, what="the FS embedding",
                         hint=f"lower the learning rate (was {cfg.lr})")
            descend(opt, total, inputs=params)
            record = loss_values(terms, total)
            history.append(record)
            if callback is not None:
                current = {"ws": torch.cat([frozen, s_opt], dim=1).detach().clone(), "features": f_opt.detach().clone()}
                if finish_requested(callback(StepProgress(step_offset + step + 1, total_steps, "fs", record,
                                                          synth.detach(), current))):
                    break
        with torch.no_grad():
            final, total, terms = loss("const")
            losses = loss_values(terms, total)
            lp = nets["lpips_vgg"](I.downsample_to(final), I.downsample_to(images)).flatten()
            quality = I.psnr(final, images)
            ws = torch.cat([frozen, s_opt], dim=1)
    latent = Latent(ws.detach().float().cpu().contiguous(), "fs", generator_ref(G),
                    None if start.c is None else start.c.detach().cpu(),
                    features=f_opt.detach().float().cpu().contiguous(),
                    features_img=None if img32 is None else img32.detach().float().cpu().contiguous())
    return FSResult(latent=latent, image=final.detach().float().cpu(), steps=len(history),
                    seconds=time.perf_counter() - t0, psnr=quality.cpu(), lpips=lp.detach().cpu(),
                    start_losses=start_losses, losses=losses, history=history, notes=notes)


__all__ = ["FSConfig", "DEFAULTS", "FSResult", "embed_fs", "NOISE_MODES", "INVERSION_METHOD", "W_STEPS"]
