"""StyleSpace (Wu et al. 2021, "StyleSpace Analysis"): the per-layer style vectors of a synthesis network.

S holds, for every modulated layer in forward order, the output of its affine transform A(w): the vector
the layer multiplies into its convolution weights. It is the space StyleCLIP's global directions edit.

Layout helpers (`s_layout`, `s_channel_count`, `flatten_s`, `unflatten_s`) describe S for a whole generator:
`G.synthesis.w_to_s(ws)` computes it and `G.synthesis.from_s(styles)` renders from it.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

import torch
from torch import nn

from .staging import Stage


class StyleLayer(NamedTuple):
    """One entry of the S layout, read from the built modules."""

    name: str                               # Module path inside the synthesis network, e.g. 'b8.conv0'.
    module: nn.Module                       # The layer; `module.affine` computes its style from w.
    w_index: int                            # Which of the `num_ws` w vectors feeds its affine.
    is_torgb: bool                          # A ToRGB layer (not demodulated)?
    stage: Stage                            # The stage of `synthesis.run` that reads it (e.g. 8 for 'b8.conv0').

    @property
    def channels(self) -> int:
        return int(self.module.affine.out_features)


class StyleSpaceMixin:
    """`w_to_s` / `from_s` for a synthesis network that defines `style_layers()` and takes `styles=` in forward."""

    def style_layers(self) -> list[StyleLayer]:  # pragma: no cover - each network defines it
        raise NotImplementedError

    def w_to_s(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map `ws` `[N, num_ws, w_dim]` to S: `{layer name: [N, channels]}` float32, in forward order.

        Each entry is exactly the style `forward(ws)` computes for that layer (eq. 1 of Wu et al.: s = A(w)),
        before any fixed per-layer gain (ToRGB's 1/sqrt(fan_in) is applied inside the layer), so
        `from_s(w_to_s(ws))` equals `forward(ws)`. Differentiable with respect to `ws`.
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        return {layer.name: layer.module.affine(ws[:, layer.w_index]) for layer in self.style_layers()}

    def from_s(self, styles: dict[str, torch.Tensor], **synthesis_kwargs) -> torch.Tensor:
        """Render from a complete S dict (`w_to_s`'s keys, each `[N, channels]`) to `[N, C, R, R]` float32.

        Takes the keyword arguments of `forward` (`noise_mode`, `noise`, `force_fp32`, `generator`,
        `fused_modconv`). Gradients flow into every style tensor.
        """
        if not styles:
            raise ValueError("from_s needs a non-empty styles dict; build one with w_to_s(ws)")
        return self(None, styles=styles, **synthesis_kwargs)  # forward checks every layer is present

    def check_styles(self, styles: dict[str, torch.Tensor], *, complete: bool, batch: Optional[int] = None,
                     required: Optional[Iterable[str]] = None) -> None:
        """Raise ValueError unless `styles` names known layers with `[N, channels]` tensors (all of them if
        `complete`, else at least those in `required`), all with the same N (equal to `batch` when given: the
        batch size of the ws they join)."""
        if not isinstance(styles, dict):
            raise ValueError(f"styles must be a dict {{layer name: [N, channels] tensor}}, got {type(styles).__name__}")
        layers = {layer.name: layer.channels for layer in self.style_layers()}
        unknown = [k for k in styles if k not in layers]
        if unknown:
            raise ValueError(f"unknown style layer(s) {unknown}; this network's layers are {list(layers)}")
        missing = [k for k in (layers if complete or required is None else required) if k not in styles]
        if (complete or required is not None) and missing:
            raise ValueError(f"styles is missing layer(s) {missing}; pass every key of w_to_s(ws)")
        for name, s in styles.items():
            if not torch.is_tensor(s) or s.ndim != 2 or s.shape[1] != layers[name]:
                shape = list(s.shape) if torch.is_tensor(s) else type(s).__name__
                raise ValueError(f"style {name!r} must have shape [N, {layers[name]}], got {shape}")
            if batch is not None and s.shape[0] != batch:
                raise ValueError(f"all styles need the batch size of ws and of each other: {name!r} has "
                                 f"{s.shape[0]}, expected {batch}; expand a single style with .expand(N, -1)")
            batch = s.shape[0]

    def prepare_inputs(self, ws: Optional[torch.Tensor], styles: Optional[dict[str, torch.Tensor]],
                       stages: Optional[list[Stage]] = None) -> tuple[Optional[torch.Tensor], dict[str, torch.Tensor]]:
        """Check and convert the inputs of a synthesis run: `ws` `[N, num_ws, w_dim]` (or None) and the S
        overrides `styles` to float32. Without `ws`, `styles` must hold every layer read by `stages` (None:
        every stage). Returns `(ws, styles)`; `styles` is `{}` when there are no overrides."""
        if ws is not None and (ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim):
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if styles:
            required = None
            if ws is None and stages is not None:
                wanted = set(stages)
                required = [layer.name for layer in self.style_layers() if layer.stage in wanted]
            self.check_styles(styles, complete=ws is None and stages is None, required=required,
                              batch=None if ws is None else ws.shape[0])
            styles = {name: s.to(torch.float32) for name, s in styles.items()}
        elif ws is None:
            raise ValueError("synthesis needs ws [N, num_ws, w_dim] or a complete styles dict (see from_s)")
        return (None if ws is None else ws.to(torch.float32)), (styles or {})


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


__all__ = ["StyleLayer", "StyleSpaceMixin", "SLayer", "s_layout", "s_channel_count", "flatten_s", "unflatten_s"]
