"""upfirdn2d_bias_act: FIR resampling followed by bias, activation, gain and clamp (StyleGAN2's resample + bias_act)."""

from __future__ import annotations

import torch

from .bias_act import ACTIVATIONS, bias_act, bias_act_ref, can_modify_inplace
from .impl import use_triton
from .upfirdn2d import Padding, fused_resample, parse_padding, parse_scaling, upfirdn2d, upfirdn2d_ref

# Activations the Triton kernel computes (relu is lrelu with slope 0).
TRITON_ACTS = ("linear", "relu", "lrelu")


def upfirdn2d_bias_act_ref(x: torch.Tensor, f: torch.Tensor | None, b: torch.Tensor | None = None, up=1, down=1,
                           padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0, act: str = "linear",
                           alpha: float | None = None, act_gain: float | None = None,
                           clamp: float | None = None) -> torch.Tensor:
    """Reference: `bias_act_ref(upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain), b, act=act,
    alpha=alpha, gain=act_gain, clamp=clamp)`; `x` `[N, C, H, W]`, `b` `[C]`."""
    y = upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return bias_act_ref(y, b, act=act, alpha=alpha, gain=act_gain, clamp=clamp)


def upfirdn2d_bias_act(x: torch.Tensor, f: torch.Tensor | None, b: torch.Tensor | None = None, up=1, down=1,
                       padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0, act: str = "linear",
                       alpha: float | None = None, act_gain: float | None = None, clamp: float | None = None,
                       *, impl: str | None = None) -> torch.Tensor:
    """Same result as `upfirdn2d_bias_act_ref`. The Triton path (`impl`, see `impl.py`) computes it in
    one kernel (resampled tile, bias, activation, gain and clamp in registers, one write); the PyTorch
    path is `upfirdn2d` then an in-place `bias_act` when autograd allows it."""
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else float(alpha)
    act_gain = spec.def_gain if act_gain is None else float(act_gain)
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    unsupported = None
    if act not in TRITON_ACTS:
        unsupported = f"act={act!r} (only {', '.join(TRITON_ACTS)})"
    elif upx != upy or downx != downy:
        unsupported = "different x and y factors"
    if use_triton(x, impl, "upfirdn2d_bias_act", unsupported):
        return fused_resample(x, f, up=upx, down=downx, padding=parse_padding(padding), flip_filter=flip_filter,
                              gain=gain, b=b, act=act, alpha=alpha, act_gain=act_gain, clamp=clamp)
    y = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="torch")
    fresh = y is not x and can_modify_inplace(x)
    return bias_act(y, b, act=act, alpha=alpha, gain=act_gain, clamp=clamp, inplace=fresh)
