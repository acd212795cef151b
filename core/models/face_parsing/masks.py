"""Mask refinements shared by the face-parsing nodes: grow (dilate) or shrink (erode) by pixels, then feather."""

from __future__ import annotations

import torch
import torch.nn.functional as F

GROW_DEFAULT = 0      # pixels; negative shrinks
FEATHER_DEFAULT = 0   # pixels of soft edge (Gaussian sigma = feather / 2)
MAX_GROW = 256
MAX_FEATHER = 256


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """`[N, H, W]` mask in [0, 1] dilated by `pixels` (a square of side 2·pixels + 1), eroded when negative."""
    pixels = int(pixels)
    if pixels == 0:
        return mask
    k = 2 * abs(pixels) + 1
    x = mask.unsqueeze(1)
    if pixels > 0:
        return F.max_pool2d(x, k, 1, abs(pixels)).squeeze(1)
    return 1 - F.max_pool2d(1 - x, k, 1, abs(pixels)).squeeze(1)


def feather_mask(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """`[N, H, W]` mask blurred with a separable Gaussian of sigma `pixels / 2` (radius `pixels`), edges
    replicated; 0 leaves it as it is."""
    if pixels <= 0:
        return mask
    sigma = float(pixels) / 2
    radius = max(1, int(round(pixels)))
    t = torch.arange(-radius, radius + 1, dtype=mask.dtype, device=mask.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(mask.unsqueeze(1), (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(x, kernel.view(1, 1, -1, 1)).squeeze(1).clamp(0, 1)


def refine_mask(mask: torch.Tensor, grow: int = GROW_DEFAULT, feather: float = FEATHER_DEFAULT) -> torch.Tensor:
    """grow_mask then feather_mask (`[N, H, W]`, float)."""
    if abs(int(grow)) > MAX_GROW or not 0 <= float(feather) <= MAX_FEATHER:
        raise ValueError(f"grow must be within ±{MAX_GROW} px and feather within 0..{MAX_FEATHER} px, got "
                         f"{grow} and {feather}")
    return feather_mask(grow_mask(mask.float(), grow), feather)
