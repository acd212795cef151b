"""StyleSpace S (Wu et al. 2021): layout, channel counts and flat `[N, total]` views of per-layer styles.

S is the set of style vectors s = A(w) of every modulated layer (StyleGAN2: each conv and each ToRGB;
StyleGAN3: the Fourier input's 4-value transform, each layer and the ToRGB). `G.synthesis.w_to_s(ws)`
computes it and `G.synthesis.from_s(styles)` renders from it; this module describes its layout.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class SLayer(NamedTuple):
    """One layer of S, in forward order."""

    name: str                               # Key in `w_to_s` dicts, e.g. 'b8.conv0', 'b8.torgb', 'L3_36_512'.
    channels: int                           # Length of its style vector.
    w_index: int                            # Which w of `ws` `[N, num_ws, w_dim]` its affine reads.
    is_torgb: bool                          # A ToRGB layer (StyleCLIP's 6048 vs 9088 channel counts differ by these)?


def _synthesis(G: nn.Module) -> nn.Module:
    synthesis = getattr(G, "synthesis", G)
    if not hasattr(synthesis, "style_layers"):
        raise ValueError(f"expected a Generator or its synthesis network, got {type(G).__name__}")
    return synthesis


def s_layout(G: nn.Module) -> list[SLayer]:
    """The S layout of generator `G` (or `G.synthesis`), read from its modules: `[(name, channels, w_index, is_torgb)]`.

    Works on a network built on the 'meta' device (no weights are read).
    """
    return [SLayer(layer.name, layer.channels, layer.w_index, layer.is_torgb)
            for layer in _synthesis(G).style_layers()]


def s_channel_count(G: nn.Module, torgb: bool = True) -> int:
    """Number of S channels: every style entry, or without the ToRGB layers if `torgb` is False.

    StyleGAN2 config F at 1024 px: 6048 without ToRGB, 9088 with (StyleCLIP's counts). For StyleGAN3 the
    count includes the input layer's 4 transform values, so it equals `flatten_s(w_to_s(ws)).shape[1]`.
    """
    return sum(layer.channels for layer in s_layout(G) if torgb or not layer.is_torgb)


def flatten_s(styles: dict[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate S `{name: [N, channels]}` in the dict's order (`w_to_s`'s forward order) into `[N, total]`."""
    if not styles:
        raise ValueError("flatten_s needs a non-empty styles dict; build one with G.synthesis.w_to_s(ws)")
    return torch.cat(list(styles.values()), dim=1)


def unflatten_s(G: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split `flat` `[N, s_channel_count(G)]` back into `{name: [N, channels]}` in `G`'s forward order (views)."""
    layout = s_layout(G)
    total = sum(layer.channels for layer in layout)
    if flat.ndim != 2 or flat.shape[1] != total:
        raise ValueError(f"flat styles must have shape [N, {total}] for this generator, got {list(flat.shape)}; "
                         f"flatten a complete w_to_s(ws) dict of the same generator")
    parts = flat.split([layer.channels for layer in layout], dim=1)
    return {layer.name: part for layer, part in zip(layout, parts)}


__all__ = ["SLayer", "s_layout", "s_channel_count", "flatten_s", "unflatten_s"]

