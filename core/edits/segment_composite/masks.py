"""Masks for Segment Composite: checking what the user connected, resizing, Barbershop's dilation / erosion, the
32x32 mixing weights, and the label-map fill of the target segmentation.

Soft masks (B.6): values in [0, 1] are kept for blending (F mixing weights, masked LPIPS) and binarised at 0.5
where labels are needed (the target segmentation, the region's class).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ...latents import FS_RESOLUTION

RANGE_TOLERANCE = 0.125     # as core.edits.inversion: values this far outside [0, 1] are rounding, not a mistake
MORPH_SIZE = 256            # the reference dilates / erodes at 256 px


def check_mask(mask, what: str, frame: Optional[tuple[int, int]] = None, *, allow_full: bool = True,
               allow_empty: bool = False, hint_full: str = "") -> torch.Tensor:
    """A user's mask `[H, W]`, `[1, H, W]` or `[1, 1, H, W]` in [0, 1] → `[1, 1, H, W]` float32 on CPU.

    frame: (h, w) of the image the mask belongs to; a mask of another aspect ratio is refused (it would cover the
    wrong pixels), one of the same shape at another size is resized later. Refused with a ValueError saying what to
    do: another rank or batch, NaN/inf, values outside [0, 1], no pixel >= 0.5 (empty), every pixel >= 0.5 when
    `allow_full` is False."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{what} must be a mask tensor [1, H, W] in [0, 1] (or class names with a parser), got "
                        f"{type(mask).__name__}")
    m = mask.detach()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"{what} must be a mask [1, H, W] (or [H, W]), got shape {list(mask.shape)}")
    if m.shape[0] != 1:
        raise ValueError(f"{what} is a batch of {m.shape[0]} masks, but a composite takes one mask per input; pick "
                         f"one (e.g. with ComfyUI's batch nodes)")
    if 0 in m.shape[2:]:
        raise ValueError(f"{what} has no pixels (shape {list(mask.shape)})")
    h, w = m.shape[2:]
    if h != w:
        raise ValueError(f"{what} is {w}x{h}, but the composite works on square aligned faces; crop or resize the "
                         f"mask to the aligned image's square")
    if frame is not None and frame[0] != frame[1]:
        raise ValueError(f"{what}: its image is {frame[1]}x{frame[0]}, not square; align the face first")
    m = m.to("cpu", torch.float32)
    bad = ~torch.isfinite(m)
    if bad.any():
        raise ValueError(f"{what} contains NaN or infinite values ({int(bad.sum()):,} of {m.numel():,}); masks are "
                         f"in [0, 1]: fix the node that made it")
    lo, hi = float(m.min()), float(m.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{what} has values from {lo:.4g} to {hi:.4g}, but masks are in [0, 1]; a 0..255 mask must "
                         f"be divided by 255 first")
    m = m.clamp(0, 1)
    inside = m >= 0.5
    if not allow_empty and not bool(inside.any()):
        raise ValueError(f"{what} is empty (no pixel >= 0.5; its largest value is {hi:.3g}): there is no region to "
                         f"take; connect a mask that marks the region with 1")
    if not allow_full and bool(inside.all()):
        raise ValueError(f"{what} covers the whole image{hint_full}")
    return m


def resize_mask(m: torch.Tensor, size: int) -> torch.Tensor:
    """`[N, 1, H, W]` → `[N, 1, size, size]`: area filter when shrinking, bilinear when enlarging (B.6)."""
    if m.shape[-1] == size and m.shape[-2] == size:
        return m
    if m.shape[-1] > size:
        return F.interpolate(m, size=(size, size), mode="area")
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def nearest(m: torch.Tensor, size: int) -> torch.Tensor:
    """Label-derived masks between sizes, as the reference resizes them ('nearest')."""
    if m.shape[-1] == size and m.shape[-2] == size:
        return m
    return F.interpolate(m, size=(size, size), mode="nearest")


def _cross_max(m: torch.Tensor, pad_value: float) -> torch.Tensor:
    p = F.pad(m, (1, 1, 1, 1), value=pad_value)
    return torch.stack([p[..., 1:-1, 1:-1], p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2],
                        p[..., 1:-1, 2:]]).amax(0)


def dilate(m: torch.Tensor, iterations: int) -> torch.Tensor:
    """Grey dilation with the 3x3 cross, `iterations` times (scipy.ndimage.binary_dilation's default structure, as
    the reference applies it; identical on binary masks, the maximum on soft ones)."""
    for _ in range(iterations):
        m = _cross_max(m, 0.0)
    return m


def erode(m: torch.Tensor, iterations: int) -> torch.Tensor:
    """Grey erosion with the 3x3 cross. Pixels outside the image count as inside the mask, so a region touching
    the border (hair at the crop's edge, a full mask) is not eaten from there; scipy's binary_erosion, which the
    reference uses, erodes from the border (border_value 0)."""
    for _ in range(iterations):
        m = 1 - _cross_max(1 - m, 0.0)
    return m


def scaled_iterations(smooth: int, size: int) -> int:
    """`smooth` is in pixels at 256 px (the reference's mask size); masks at a smaller size get proportionally fewer
    iterations (at least 1 when smooth > 0)."""
    if smooth <= 0:
        return 0
    return max(1, int(round(smooth * size / MORPH_SIZE)))


def mix_weight(m: torch.Tensor) -> torch.Tensor:
    """A mask `[1, 1, h, w]` → the F-mixing weight at 32x32 `[1, 1, 32, 32]`: bicubic, as the reference (bicubic
    overshoots slightly outside [0, 1] there, and the reference keeps that; so do we)."""
    return F.interpolate(m.float(), size=(FS_RESOLUTION, FS_RESOLUTION), mode="bicubic", align_corners=False)


def fill_labels(labels: torch.Tensor, unknown: torch.Tensor, choices: Sequence[int], *,
                wanted: Optional[torch.Tensor] = None, max_iterations: Optional[int] = None) -> torch.Tensor:
    """Fill the `unknown` pixels of a label map `[H, W]` (long) with labels from `choices`, by nearest-label
    diffusion: known pixels whose label is one of `choices` are seeds; each round, every unknown pixel with
    seeded 4-neighbours takes the most frequent of their labels (ties: the earlier in `choices`), until every
    reachable pixel is filled (or, with `wanted`, every wanted pixel: the rest may stay unfilled). Unreachable
    pixels get choices[0].

    This replaces the reference's `cv2.inpaint(..., INPAINT_NS)` on the 0/1 map "region or not" (OpenCV is not a
    dependency). The reference then casts the inpainted value to uint8, which truncates: a disoccluded pixel gets
    the region's label only where the inpainting gives exactly 1 (deep inside the region), background elsewhere.
    The nearest label is the same answer there and a less arbitrary one at the boundary."""
    labels = labels.clone()
    choices = list(choices)
    unknown = unknown.bool().clone()
    onehot = torch.stack([(labels == c) & ~unknown for c in choices]).float()[:, None]   # [K, 1, H, W]
    kernel = torch.tensor([[0., 1., 0.], [1., 0., 1.], [0., 1., 0.]]).reshape(1, 1, 3, 3)
    limit = max_iterations if max_iterations is not None else labels.shape[0] + labels.shape[1]
    wanted = None if wanted is None else wanted.bool()
    for _ in range(limit):
        if not bool((unknown if wanted is None else unknown & wanted).any()):
            break
        votes = F.conv2d(onehot, kernel, padding=1)[:, 0]                       # [K, H, W]
        has = votes.sum(0) > 0
        grow = unknown & has
        if not bool(grow.any()):
            break
        # argmax of votes with ties to the earlier choice: add a tiny decreasing bias
        bias = torch.linspace(0, -1e-3, len(choices)).reshape(-1, 1, 1)
        pick = (votes + bias).argmax(0)
        for k, c in enumerate(choices):
            sel = grow & (pick == k)
            labels[sel] = c
            onehot[k, 0][sel] = 1.0
        unknown &= ~grow
    labels[unknown] = choices[0]
    return labels


__all__ = ["check_mask", "resize_mask", "nearest", "dilate", "erode", "scaled_iterations", "mix_weight",
           "fill_labels"]
