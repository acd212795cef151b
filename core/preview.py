"""Fast reduced-resolution renders for live previews (a slider being dragged): stop the synthesis early where the
network allows it, otherwise render in full and scale down."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from . import latents as L
from .networks.generator import Generator

PREVIEW_PX = 256        # the preview size a slider asks for by default
MIN_PREVIEW_PX = 16     # never smaller: below this a preview tells nothing


def stops_early(G: Generator) -> bool:
    """True when a smaller preview is also a cheaper one (StyleGAN2 with the 'skip' output: the synthesis stops
    early); otherwise previews render in full and are scaled down."""
    return getattr(G.synthesis, "architecture", None) == "skip" and bool(getattr(G.synthesis, "block_resolutions",
                                                                               None))


def preview_resolution(G: Generator, max_px: int) -> int:
    """The resolution `render_preview(G, ..., max_px=max_px)` renders at: for StyleGAN2 with the 'skip' output, the
    largest block resolution <= max_px (at least the first block's); otherwise min(max_px, img_resolution)."""
    max_px = max(MIN_PREVIEW_PX, int(max_px))
    synthesis = G.synthesis
    if stops_early(G):
        resolutions = synthesis.block_resolutions
        fitting = [r for r in resolutions if r <= max_px]
        return int(fitting[-1] if fitting else resolutions[0])
    return int(min(max_px, G.img_resolution))


def first_latent(latent: L.Latent) -> L.Latent:
    """The first latent of a batch (labels and fs features sliced alike); `latent` itself when it holds one."""
    if latent.batch_size == 1:
        return latent

    def head(t):
        return None if t is None else t[:1]

    return dataclasses.replace(latent, tensor=latent.tensor[:1], c=head(latent.c), features=head(latent.features),
                               features_img=head(latent.features_img))


@torch.no_grad()
def render_preview(G: Generator, latent: L.Latent, *, max_px: int = PREVIEW_PX,
                   noise_mode: str = L.DEFAULT_NOISE_MODE) -> torch.Tensor:
    """The first latent of `latent` rendered at about `max_px`: `[1, C, r, r]` float32 in about [-1, 1], on CPU.

    StyleGAN2 ('skip' output): the synthesis stops after the block at r = `preview_resolution(G, max_px)` and the
    image is its RGB skip there, i.e. the full image without the ToRGB contributions of the finer blocks (the fine
    detail; colours and shapes are those of the full image). Cost falls about 4x per halving of r. At r =
    img_resolution it is exactly the full image. Other networks (StyleGAN3, 'orig'/'resnet' outputs, s and fs
    latents) render in full and are scaled down (area filter): the same cost as a full render.
    """
    first = first_latent(latent)
    r = preview_resolution(G, max_px)
    if stops_early(G) and first.space in ("z", "w", "w+") and r < G.img_resolution:
        ws = L.latent_to_ws(G, first)
        img = G.synthesis.run(ws, stop=r, noise_mode=noise_mode).img
        return img.float().cpu()
    img = L.synthesize(G, first, noise_mode=noise_mode, chunk_size=1)
    if img.shape[-1] > r:
        img = F.interpolate(img, size=(r, r), mode="area")
    return img
