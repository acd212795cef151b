"""StyleCLIP latent optimisation (Patashnik et al. 2021, `optimization/run_optimization.py`): edit a latent so
the image matches a text, staying close to where it started.

loss = D_CLIP(G(w), text) + λ_L2 · ‖w − w_s‖² + λ_ID · (1 − cos(ArcFace(G(w)), ArcFace(G(w_s))))

with D_CLIP = 1 − cosine similarity, Adam at lr 0.1 under NVIDIA's projector schedule (ramp up over 5 %, cosine
down over the last 25 %), 300 steps, λ_L2 = 0.008, λ_ID = 0 (the reference's defaults). The latent is
optimised in W+ or in S (StyleSpace: the per-layer styles; ‖·‖² summed over layers, as the reference does).
The reference feeds CLIP un-normalised [−1, 1] images (an acknowledged bug); the CLIP wrapper normalises
them unless asked to reproduce that.

An optional neutral text turns the CLIP term into the directional loss of StyleGAN-NADA:
1 − cos(E(G(w)) − E(G(w_s)), E(text) − E(neutral)), which edits only what differs between the two texts.
At the start (w = w_s) the image has not changed, so that cosine is 0/0: CLIP's rounding noise gives it a gradient of
arbitrary direction and a size up to ~1e6 times a later step's, which Adam's second moment would remember for
thousands of steps (the edit stalls). The first step therefore descends the linearised loss
1 − ⟨E(G(w)) − E(G(w_s)), ΔT⟩ (the same value, 1, at the start; gradient −Jᵀ·ΔT) and Adam starts afresh at step 2,
as Train Weight Shift does (core.edits.weight_shift.train).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import LatentError
from ..latents import Latent, latent_to_styles, latent_to_ws, styles_to_latent
from ..losses.clip import clip_directional_loss, clip_global_loss, text_direction
from ..optimize import (ProgressCallback, StepProgress, finish_requested, autograd_ready, check_finite, descend, loss_values,
                        projector_lr, set_lr, trainable)

SPACES = ("w+", "s")


@dataclass(frozen=True)
class CLIPOptimizeConfig:
    """The reference's defaults (StyleCLIP optimization/run_optimization.py)."""

    num_steps: int = 300
    lr: float = 0.1
    l2_lambda: float = 0.008
    id_lambda: float = 0.0
    space: str = "w+"
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    noise_mode: str = "const"
    clip_normalize: bool = True              # False feeds CLIP raw [-1, 1] images, as the reference did (its bug)


DEFAULTS = CLIPOptimizeConfig()


CLIPOptimizeProgress = StepProgress  # the record's name before the shared harness (core.optimize)


@dataclass
class CLIPOptimizeResult:
    latent: Latent                           # w+, or s for S-space runs
    image: torch.Tensor                      # [N, 3, R, R]
    styles: Optional[dict[str, torch.Tensor]]  # the optimised S, for S-space runs
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    clip_distance: Optional[torch.Tensor] = None  # [N] final 1 − cos to the text
    clip_distance_start: Optional[torch.Tensor] = None

    def report(self) -> str:
        lines = [f"CLIP latent optimisation: {len(self.history)} steps in {self.seconds:.1f} s"]
        if self.clip_distance is not None:
            for i, (a, b) in enumerate(zip(self.clip_distance_start.tolist(), self.clip_distance.tolist())):
                lines.append(f"image {i}: CLIP distance to the text {a:.4f} -> {b:.4f}")
        return "\n".join(lines)


def clip_optimize(G, latent: Latent, text_embedding: torch.Tensor, clip, *,
                  config: CLIPOptimizeConfig = DEFAULTS, neutral_embedding: Optional[torch.Tensor] = None,
                  id_loss=None, callback: Optional[ProgressCallback] = None) -> CLIPOptimizeResult:
    """Optimise `latent` (any batch) toward `text_embedding` ([D] or [1, D], normalised).

    In W+ (`config.space` 'w+') the latent may be z, w or w+ and the result is w+; in S ('s') it may also be an
    s latent (e.g. an earlier S edit) and the result is an s latent.

    `clip` has `encode_image(images [-1, 1]) -> normalised [N, D]` (differentiable); `id_loss`, needed when
    `config.id_lambda > 0`, is called as `id_loss(images, reference_images) -> scalar`. The generator is not
    modified. Works under ComfyUI's inference mode.

    `callback` receives a `StepProgress` after every step (phase 'clip'; `image` the current render, `params`
    the latent after the step: 'ws' `[N, num_ws, w_dim]`, or 'styles/<layer>' for S-space runs); raise in it to
    cancel (nothing is returned, G is unchanged); return `core.optimize.FINISH` to end after this step with the
    current latent.
    """
    if config.space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {config.space!r}")
    if config.num_steps < 1 or config.lr <= 0:
        raise ValueError(f"num_steps must be >= 1 and lr > 0, got {config.num_steps} and {config.lr}")
    if config.id_lambda > 0 and id_loss is None:
        raise ValueError("id_lambda > 0 needs an identity loss (load ArcFace)")
    if latent.space == "s" and config.space != "s":
        raise LatentError("an S (StyleSpace) latent can only be optimised in S: choose space 's'")
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        work = autograd_ready(G)
        device = work.w_avg.device
        if latent.space == "s":
            s_start = {k: autograd_ready(v.detach()).to(device).float().clone()
                       for k, v in latent_to_styles(work, latent).items()}
        else:
            ws_start = autograd_ready(latent_to_ws(work, latent).detach().to(device).float()).clone()
            if config.space == "s":
                with torch.no_grad():
                    s_start = {k: v.detach().clone() for k, v in work.synthesis.w_to_s(ws_start).items()}

        def embed(images: torch.Tensor) -> torch.Tensor:  # CLIP may sit on another device than the generator
            return clip.encode_image(images, normalize=config.clip_normalize).to(device)

        text = autograd_ready(text_embedding.detach()).to(device).float().reshape(1, -1)
        text = F.normalize(text, dim=-1)
        with torch.no_grad():
            start_images = (work.synthesis.from_s(s_start, noise_mode=config.noise_mode) if config.space == "s" else
                            work.synthesis(ws_start, noise_mode=config.noise_mode))
            start_emb = embed(start_images).detach()
        direction = None
        if neutral_embedding is not None:
            neutral = F.normalize(autograd_ready(neutral_embedding.detach()).to(device).float().reshape(1, -1), dim=-1)
            direction = text_direction(text, neutral)
        if config.space == "s":
            params = {k: trainable(v) for k, v in s_start.items()}
            opt_list = list(params.values())
        else:
            w_opt = trainable(ws_start)
            opt_list = [w_opt]
        optimizer = torch.optim.Adam(opt_list, lr=config.lr)
        history: list[dict] = []
        for step in range(config.num_steps):
            set_lr(optimizer, projector_lr(step / config.num_steps, config.lr, config.lr_rampup, config.lr_rampdown))
            if config.space == "s":
                images = work.synthesis.from_s(params, noise_mode=config.noise_mode)
                l2 = sum(((params[k] - s_start[k]) ** 2).sum() for k in params)
            else:
                images = work.synthesis(w_opt, noise_mode=config.noise_mode)
                l2 = ((w_opt - ws_start) ** 2).sum()
            emb = embed(images)
            linear = direction is not None and step == 0
            if direction is None:
                clip_term = clip_global_loss(emb, text).mean()
            elif linear:  # the start: no change has no direction (see the module docstring)
                clip_term = (1 - ((emb - start_emb) * direction).sum(-1)).mean()
            else:
                clip_term = clip_directional_loss(emb, start_emb, direction).mean()
            loss = clip_term + config.l2_lambda * l2
            terms = {"clip": clip_term, "l2": l2}
            if config.id_lambda > 0:
                terms["id"] = id_loss(images, start_images)
                loss = loss + config.id_lambda * terms["id"]
            check_finite(loss, terms, step=step + 1, what="CLIP optimisation")
            descend(optimizer, loss)
            if linear:  # the linearised step's gradient scale must not stay in Adam's moments
                optimizer = torch.optim.Adam(opt_list, lr=config.lr)
            record = loss_values(terms, loss)
            history.append(record)
            if callback is not None:
                current = ({f"styles/{k}": v.detach().clone() for k, v in params.items()} if config.space == "s"
                           else {"ws": w_opt.detach().clone()})
                if finish_requested(callback(StepProgress(step + 1, config.num_steps, "clip", record,
                                                          images.detach(), current))):
                    break
        with torch.no_grad():
            if config.space == "s":
                styles = {k: v.detach() for k, v in params.items()}
                final = work.synthesis.from_s(styles, noise_mode=config.noise_mode)
            else:
                styles = None
                ws_out = w_opt.detach()
                final = work.synthesis(ws_out, noise_mode=config.noise_mode)
            d_end = clip_global_loss(embed(final), text)
            d_start = clip_global_loss(start_emb, text)
    if styles is not None:
        out_latent = styles_to_latent(G, styles, c=latent.c)
    else:
        out_latent = Latent(ws_out.to(latent.tensor.device), "w+", latent.generator, c=latent.c)
    return CLIPOptimizeResult(out_latent, final, styles, history, time.perf_counter() - t0, d_end.cpu(),
                              d_start.cpu())
