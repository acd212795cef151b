"""Rendering weight shifts: one latent at several strengths k (the k sweep the seed paper shows, k in −3..3)."""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import torch

from ...latents import Latent, latent_to_ws
from .shift import WeightShift, apply_weight_shifts


def _frame_shifts(shifts: Sequence[tuple[WeightShift, float]], k: float,
                  vary: Optional[int]) -> list[tuple[WeightShift, float]]:
    if vary is None:
        return [(s, float(ki) * k) for s, ki in shifts]
    return [(s, k if i == vary else float(ki)) for i, (s, ki) in enumerate(shifts)]


def render_k_sweep(G, latent: Latent, shifts: Sequence[tuple[WeightShift, float]], ks: Sequence[float], *,
                   vary: Optional[int] = None, noise_mode: str = "const") -> torch.Tensor:
    """Render `latent` (N images) with the shifts at each strength in `ks`.

    Args:
        G: the generator the shifts were made for (or a shifted copy of it: the frames stack on its shifts).
        latent: z / w / w+ `Latent` of N images.
        shifts: `[(shift, k), ...]`, at least one.
        ks: the frame strengths (finite; each frame's k must stay within ±MAX_K after scaling).
        vary: None: every shift's k is multiplied by the frame's k (one shift given at k = 1 renders at exactly
            the frame's k); an index into `shifts`: that shift is rendered at the frame's k and the others keep
            their own k.
        noise_mode: 'const' (default), 'random' or 'none', as `synthesis`.

    Returns:
        `[len(ks) · N, 3, R, R]` float32 in [-1, 1], ordered k outer, latent inner (frame f, image n at row
        f·N + n), so one image's frames are every N-th row. A frame whose shifts are all at k = 0 is the base
        render bit for bit (`apply_weight_shifts` skips k = 0).

    Raises:
        ValueError: no shifts or no ks, a k that is not finite, `vary` out of range, a scaled k beyond ±MAX_K.
        CheckpointError: a shift made for another generator.
    """
    shifts = [(s, k) for s, k in shifts]
    if not shifts:
        raise ValueError("render_k_sweep needs at least one (shift, k) pair")
    ks = list(ks)
    if not ks:
        raise ValueError("render_k_sweep needs at least one k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not math.isfinite(float(k)):
            raise ValueError(f"every k of a sweep must be a finite number, got {k!r}")
    if vary is not None and (isinstance(vary, bool) or not isinstance(vary, numbers.Integral)
                             or not 0 <= vary < len(shifts)):
        raise ValueError(f"vary must be None or the index of a shift 0..{len(shifts) - 1}, got {vary!r}")
    ws = latent_to_ws(G, latent)
    frames = []
    with torch.no_grad():
        for k in ks:
            G2 = apply_weight_shifts(G, _frame_shifts(shifts, float(k), vary))
            frames.append(G2.synthesis(ws, noise_mode=noise_mode).float())
    return torch.cat(frames)


__all__ = ["render_k_sweep"]
