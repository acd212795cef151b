"""upfirdn2d: upsample by zero insertion, pad, FIR-filter, downsample (the resampling op of StyleGAN2/3).

`upfirdn2d_ref` is the specification: it does literally what the name says. `upfirdn2d` computes the
same result without ever materialising the zero-stuffed image (polyphase transposed convolution for
upsampling, strided convolution for downsampling); tests hold the two to float32 round-off.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from .impl import RecomputeGrad, triton_kernels, use_triton

Padding = Union[int, Sequence[int]]


def parse_scaling(scaling: Union[int, Sequence[int]]) -> tuple[int, int]:
    """Return (sx, sy) from an int or an [x, y] pair."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    assert sx >= 1 and sy >= 1, scaling
    return sx, sy


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """Return (x0, x1, y0, y1) from an int, an [x, y] pair or an [x0, x1, y0, y1] quadruple."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    assert len(padding) == 4, padding
    return padding[0], padding[1], padding[2], padding[3]


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Return (width, height) of a 1-D (separable) or 2-D filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    assert f.ndim in (1, 2), f.shape
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f, *, normalize: bool = True, flip_filter: bool = False, gain: float = 1.0,
                 separable: bool | None = None) -> torch.Tensor:
    """Prepare a FIR filter for `upfirdn2d`.

    Args:
        f: taps as a list, array or tensor: `[taps]`, `[fh, fw]`, a scalar, or None (identity).
        normalize: scale so the filter keeps a constant (DC) signal unchanged.
        flip_filter: flip the taps.
        gain: overall signal gain.
        separable: return a 1-D separable filter; None = separable for 1-D input of >= 8 taps,
            else the 2-D outer product (the choice NVIDIA's code makes, kept so filters compare equal).

    Returns:
        float32 tensor `[taps]` (separable) or `[fh, fw]`.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in (0, 1, 2) and f.numel() > 0
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def _output_size(in_size: int, up: int, down: int, p0: int, p1: int, taps: int) -> int:
    return (in_size * up + p0 + p1 - taps + down) // down


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding: Padding = 0,
                  flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Reference upfirdn2d: the specification the fast path is tested against.

    For each channel of `x` `[N, C, H, W]`: insert `up - 1` zeros after every sample, pad by
    `padding` (negative crops), convolve with `f` (correlate if `flip_filter`) keeping only outputs
    whose footprint lies inside the padded image, multiply by `gain`, keep every `down`-th sample.
    A 1-D `f` is applied separably along x then y.
    """
    assert x.ndim == 4, f"expected [N, C, H, W], got {list(x.shape)}"
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)

    # Zero insertion: every sample followed by up-1 zeros along each axis.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)

    # Pad (positive) then crop (negative padding).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    # Convolution = correlation with the flipped filter.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::downy, ::downx]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding: Padding = 0,
              flip_filter: bool = False, gain: float = 1.0, *, bias: torch.Tensor | None = None,
              impl: str | None = None) -> torch.Tensor:
    """Fast upfirdn2d; same arguments and result as `upfirdn2d_ref` (plus `bias` `[C]`, added at the end).

    `impl` picks the PyTorch path below or the Triton kernel (see `impl.py`; None = the `ops_impl`
    setting, "torch" by default); the Triton path needs equal x/y factors.

    Upsampling runs as a depthwise transposed convolution with stride `up` (a polyphase filter: no
    multiplications by inserted zeros), downsampling as a strided depthwise convolution, so only the
    kept outputs are computed. Symmetric padding is the convolution's own, so no padded copy is
    made. The result keeps the memory format of `x`.
    """
    assert x.ndim == 4, f"expected [N, C, H, W], got {list(x.shape)}"
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    if bias is not None:
        bias = bias.to(device=x.device, dtype=x.dtype)
    if impl != "torch" and use_triton(x, impl, "upfirdn2d", None if upx == upy and downx == downy
                                      else "different x and y factors"):
        return fused_resample(x, f, up=upx, down=downx, padding=(px0, px1, py0, py1), flip_filter=flip_filter,
                              gain=gain, b=bias)
    if f is None:
        if upx == upy == 1:  # pure pad/crop/decimate
            x = F.pad(x, [px0, px1, py0, py1])
            x = x[:, :, ::downy, ::downx] if downx > 1 or downy > 1 else x
            x = x * gain if gain != 1 else x
            return x if bias is None else x + bias.reshape(1, -1, 1, 1)
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    if f.ndim == 1:
        x = _upfirdn_axis(x, f, upx, downx, px0, px1, dim=3, flip_filter=flip_filter)
        return _upfirdn_axis(x, f, upy, downy, py0, py1, dim=2, flip_filter=flip_filter, bias=bias)
    return _upfirdn_2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, bias)


def fused_resample(x: torch.Tensor, f: torch.Tensor | None, *, up: int, down: int,
                   padding: tuple[int, int, int, int], flip_filter: bool, gain: float, b: torch.Tensor | None,
                   act: str = "linear", alpha: float = 0.0, act_gain: float = 1.0,
                   clamp: float | None = None) -> torch.Tensor:
    """Triton: `clamp(act(upfirdn2d(x, f, ...) + b, alpha) * act_gain)` in one kernel ("linear", "relu",
    "lrelu"); differentiable (the backward recomputes the PyTorch path)."""
    from .bias_act import bias_act_ref, can_modify_inplace

    assert act in ("linear", "relu", "lrelu"), act

    def fast(xs: torch.Tensor, bs: torch.Tensor | None) -> torch.Tensor:
        return triton_kernels().resample_act(
            xs, fu=f, fd=None, up=up, down1=down, down2=1, padding=padding, flip_filter=flip_filter,
            gain_u=gain, b_pre=None, b_post=bs, act=0 if act == "linear" else 1,
            slope=0.0 if act == "relu" else alpha, gain=act_gain, clamp=clamp, stage2=False)

    def ref(xs: torch.Tensor, bs: torch.Tensor | None) -> torch.Tensor:
        y = upfirdn2d(xs, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="torch")
        return bias_act_ref(y, bs, act=act, alpha=alpha, gain=act_gain, clamp=clamp)

    if can_modify_inplace(x, b):
        return fast(x, b)
    return RecomputeGrad.apply(fast, ref, x.shape[1], x, b)


def _crop_and_padding(x: torch.Tensor, pads: list[int]) -> tuple[torch.Tensor, list[int], list[int]]:
    """Split [x0, x1, y0, y1] padding into a crop of `x` (a view), the symmetric part a convolution
    pads by itself ([y, x]) and a remainder for F.pad (all zero when the padding is symmetric)."""
    x0, x1, y0, y1 = pads
    h, w = x.shape[2], x.shape[3]
    x = x[:, :, max(-y0, 0): h - max(-y1, 0), max(-x0, 0): w - max(-x1, 0)]
    x0, x1, y0, y1 = (max(p, 0) for p in pads)
    sym_x, sym_y = min(x0, x1), min(y0, y1)
    return x, [sym_y, sym_x], [x0 - sym_x, x1 - sym_x, y0 - sym_y, y1 - sym_y]


def _depthwise(x: torch.Tensor, k: torch.Tensor, pads: list[int], stride, bias: torch.Tensor | None) -> torch.Tensor:
    """Correlate every channel of `x` with the 2-D kernel `k` `[kh, kw]` after padding by [x0, x1, y0, y1]."""
    c = x.shape[1]
    x, sym, rest = _crop_and_padding(x, pads)
    if any(rest):
        x = F.pad(x, rest)
    return F.conv2d(x, k[None, None].expand(c, 1, *k.shape), bias, stride=stride, padding=sym, groups=c)


def _upfirdn_axis(x, f, up, down, p0, p1, *, dim, flip_filter, bias=None):
    """Resample along one axis (dim 3 = x, dim 2 = y) with 1-D taps `f`."""
    taps = f.numel()
    if up == 1 and down == 1 and taps == 1 and p0 == 0 and p1 == 0:
        x = x * f[0] if float(f[0]) != 1 else x
        return x if bias is None else x + bias.reshape(1, -1, 1, 1)
    c = x.shape[1]
    length = x.shape[dim]
    out_len = _output_size(length, up, down, p0, p1, taps)
    shape = [1, taps] if dim == 3 else [taps, 1]
    if up == 1:
        # Correlate the padded signal with the flipped taps, striding by `down`.
        k = (f if flip_filter else f.flip(0)).reshape(shape)
        pads = [p0, p1, 0, 0] if dim == 3 else [0, 0, p0, p1]
        y = _depthwise(x, k, pads, (1, down) if dim == 3 else (down, 1), bias)
    else:
        # Full convolution of the zero-stuffed signal = transposed conv with stride `up`.
        # Output sample m of the reference is z[m + taps - 1 - p0].
        k = f.flip(0) if flip_filter else f
        k = k.reshape(1, 1, *shape).expand(c, 1, *shape)
        stride = (1, up) if dim == 3 else (up, 1)
        z = F.conv_transpose2d(x, k, stride=stride, groups=c)
        start = taps - 1 - p0
        full = length * up + p0 + p1 - taps + 1
        pad_lo, pad_hi = -start, start + full - z.shape[dim]
        pad = [pad_lo, pad_hi, 0, 0] if dim == 3 else [0, 0, pad_lo, pad_hi]
        y = F.pad(z, pad)
        if down > 1:
            y = y[:, :, :, ::down] if dim == 3 else y[:, :, ::down, :]
        if bias is not None:
            y = y + bias.reshape(1, -1, 1, 1)
    assert y.shape[dim] == out_len, (y.shape, out_len)
    return y


def _upfirdn_2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, bias=None):
    """Resample with a non-separable 2-D filter."""
    c = x.shape[1]
    fh, fw = f.shape
    out_h = _output_size(x.shape[2], upy, downy, py0, py1, fh)
    out_w = _output_size(x.shape[3], upx, downx, px0, px1, fw)
    if upx == 1 and upy == 1:
        k = f if flip_filter else f.flip([0, 1])
        y = _depthwise(x, k, [px0, px1, py0, py1], (downy, downx), bias)
    else:
        k = f.flip([0, 1]) if flip_filter else f
        z = F.conv_transpose2d(x, k[None, None].expand(c, 1, fh, fw), stride=(upy, upx), groups=c)
        sy, sx = fh - 1 - py0, fw - 1 - px0
        full_h = x.shape[2] * upy + py0 + py1 - fh + 1
        full_w = x.shape[3] * upx + px0 + px1 - fw + 1
        y = F.pad(z, [-sx, sx + full_w - z.shape[3], -sy, sy + full_h - z.shape[2]])
        if downx > 1 or downy > 1:
            y = y[:, :, ::downy, ::downx]
        if bias is not None:
            y = y + bias.reshape(1, -1, 1, 1)
    assert y.shape[2:] == (out_h, out_w), (y.shape, out_h, out_w)
    return y


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up=2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample `[N, C, H, W]` by `up` with filter `f`; output is `up` times the input size."""
    upx, upy = parse_scaling(up)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down=2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Downsample `[N, C, H, W]` by `down` with filter `f`; output is the input size over `down`."""
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1.0) -> torch.Tensor:
    """Filter `[N, C, H, W]` with `f`, padded so the output has the input's size."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)
