"""Global directions, step 3: a text direction and the edit in S (eq. 6 of the paper)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .directions import DEFAULTS, STYLECLIP_TEMPLATES, GlobalDirections

def direction_from_text(clip, target: str, neutral: str, *,
                        templates: Sequence[str] = STYLECLIP_TEMPLATES) -> torch.Tensor:
    """Δt `[D]` float32 (on CLIP's device): the normalised difference of the template-averaged text embeddings
    of `target` and `neutral` (MapTS.py `zeroshot_classifier` + `GetDt` l.178-203 with classnames
    [target, neutral]: each template embedding normalised, averaged, normalised; Δt = (t − n)/|t − n|).
    The default templates are the reference's 79 (CLIP's 80 without 'a photo of many {}.'); embeddings are
    cached by the CLIP model, so a repeated prompt costs nothing."""
    if not isinstance(target, str) or not isinstance(neutral, str):
        raise TypeError(f"target and neutral must be strings, got {type(target).__name__} and {type(neutral).__name__}")
    t, n = clip.encode_text([target, neutral], templates=tuple(templates))
    d = (t - n).float()
    norm = float(d.norm())
    if norm < 1e-6:
        raise ValueError(f"target {target!r} and neutral {neutral!r} give the same text embedding, so there is no "
                         f"direction; describe the change in the target (e.g. neutral 'a face', target 'a smiling face')")
    return d / norm


def global_direction_edit(styles_flat: torch.Tensor, directions: GlobalDirections, delta_t: torch.Tensor, *,
                          alpha: float = DEFAULTS.edit_alpha,
                          beta: float = DEFAULTS.edit_beta) -> tuple[torch.Tensor, int]:
    """s' = s + α·Δs with Δs from the text direction (eq. 6 of the paper; MapTS.py `GetBoundary` l.206-220,
    `SplitS` l.60-91, manipulate.py `MSCode` l.162-189).

    r = relevance·Δt over the measured channels; channels with |r| < β get 0; Δs = r / max|r| · σ (per-channel
    standard deviation); unmeasured channels (ToRGB, ...) are never changed. β above every |r| changes nothing
    and reports 0 channels (the reference would divide 0 by 0); β = 0 changes every measured channel.

    Args:
        styles_flat: S `[N, C]` (`flatten_s(G.synthesis.w_to_s(ws))`), any float dtype/device; not modified.
        directions: GlobalDirections of the same generator (C channels).
        delta_t: Δt `[D]` or `[1, D]` from `direction_from_text` (normalised here, which leaves its output as is).
        alpha: strength (reference range −10..10; the sign reverses the edit).
        beta: disentanglement threshold on |r| (reference range 0.08..0.3).

    Returns:
        (edited S `[N, C]` in `styles_flat`'s dtype and device, number of channels changed).
    """
    if styles_flat.ndim != 2 or styles_flat.shape[1] != directions.num_channels:
        raise ValueError(f"styles_flat must be [N, {directions.num_channels}] (flatten_s of w_to_s for "
                         f"{directions.generator_name or 'the generator of these directions'}), got "
                         f"{list(styles_flat.shape)}")
    d = delta_t.reshape(-1) if delta_t.ndim == 2 and delta_t.shape[0] == 1 else delta_t
    if d.ndim != 1 or d.shape[0] != directions.embed_dim:
        raise ValueError(f"delta_t must be [{directions.embed_dim}] (direction_from_text with the CLIP model of these "
                         f"directions, {directions.clip_name}), got {list(delta_t.shape)}")
    if not (math.isfinite(float(alpha)) and math.isfinite(float(beta)) and float(beta) >= 0):
        raise ValueError(f"alpha must be finite and beta finite and ≥ 0, got alpha={alpha}, beta={beta}")
    idx, _, std = directions.edit_tables(styles_flat.device)
    r, mag, mag_max = directions.channel_scores(d, styles_flat.device)
    keep = mag >= beta                                                               # the reference zeroes |r| < β
    count = int(keep.sum())
    out = styles_flat.clone()
    if count == 0 or alpha == 0 or float(mag_max) == 0:  # nothing relevant (e.g. all-zero rows)
        return out, 0 if float(mag_max) == 0 else count
    # The largest |r| is always kept (it is ≥ β whenever anything is), so it is the reference's max over the kept.
    ds = torch.where(keep, r, 0).mul_(std).mul_(float(alpha) / mag_max)              # α · r / max|r| · σ, [K]
    out.index_add_(1, idx, ds.to(out.dtype).unsqueeze(0).expand(out.shape[0], -1))
    return out, count


