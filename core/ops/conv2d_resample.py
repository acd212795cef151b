"""conv2d_resample: 2-D convolution combined with FIR upsampling or downsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .upfirdn2d import Padding, filter_size, parse_padding, upfirdn2d, upfirdn2d_ref


def _resample_padding(f, up: int, down: int, padding: Padding) -> list[int]:
    """Padding w.r.t. the upsampled image, widened so the filter keeps the output size `up/down` x input."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    return [px0, px1, py0, py1]


def conv2d_resample_ref(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1,
                        down: int = 1, padding: Padding = 0, groups: int = 1, flip_weight: bool = True,
                        flip_filter: bool = False) -> torch.Tensor:
    """Reference: FIR-upsample `x` by `up` (gain up**2), convolve with `w`, FIR-downsample by `down`.

    Args:
        x: `[N, C_in, H, W]`.
        w: `[C_out, C_in // groups, kh, kw]`.
        f: filter from `setup_filter` (None = box of size 1).
        padding: padding w.r.t. the upsampled image (int, [x, y] or [x0, x1, y0, y1]).
        flip_weight: True = correlation (like `torch.nn.functional.conv2d`), False = convolution.
    """
    p = _resample_padding(f, up, down, padding)
    x = upfirdn2d_ref(x, f if up > 1 else None, up=up, padding=p, gain=up ** 2, flip_filter=flip_filter)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        x = upfirdn2d_ref(x, f, down=down, flip_filter=flip_filter)
    return x


class _WeightGradNCHW(torch.autograd.Function):
    """F.conv2d of channels-last activations whose weight gradient is computed on NCHW copies. On x86 CPUs oneDNN's
    weight gradient on channels-last maps is 2-3.7x slower than on NCHW ones (measured on AVX2 for StyleGAN's
    shapes), while its forward and input gradient are faster channels-last: this keeps the fast ones and moves only
    the weight gradient (two activation-sized copies, far cheaper than the difference). Same numbers as autograd's
    up to float rounding; the backward's ops are differentiable, so create_graph works."""

    @staticmethod
    def forward(ctx, x, w, bias, stride: list, padding: list, groups: int):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, groups, bias is not None)
        return F.conv2d(x, w, bias, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, groups, has_bias = ctx.conf
        conv_bw = torch.ops.aten.convolution_backward
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = conv_bw(gy, x, w, None, stride, padding, [1, 1], False, [0, 0], groups, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = conv_bw(gy.contiguous(), x.contiguous(), w, None, stride, padding, [1, 1], False, [0, 0], groups,
                         [False, True, False])[1]
        if has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None


def _conv2d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
            padding=0, groups: int = 1) -> torch.Tensor:
    """F.conv2d, with the weight gradient taken on NCHW copies where that is faster (CPU float32 channels-last
    activations and a weight that needs a gradient: generator tuning, e.g. PTI)."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and w.requires_grad and torch.is_grad_enabled()
            and x.shape[1] > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
        pad = [padding, padding] if isinstance(padding, int) else list(padding)
        return _WeightGradNCHW.apply(x, w, bias, [stride, stride], pad, groups)
    return F.conv2d(x, w, bias, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1,
                    down: int = 1, padding: Padding = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Same result as `conv2d_resample_ref` (plus an optional `bias` `[C_out]` added to the output).

    Upsampling convolves at the low resolution with a strided transposed convolution and filters
    afterwards; downsampling filters first and convolves with a stride, so no multiply touches an
    inserted zero or a discarded output.
    """
    kh, kw = w.shape[2], w.shape[3]
    px0, px1, py0, py1 = _resample_padding(f, up, down, padding)

    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv2d(x, w if flip_weight else w.flip([2, 3]), bias, padding=[py0, px0], groups=groups)
        x = F.pad(x, [px0, px1, py0, py1])
        return _conv2d(x, w if flip_weight else w.flip([2, 3]), bias, groups=groups)

    if kw == 1 and kh == 1 and down == 1:  # 1x1 conv commutes with upsampling: convolve at low res
        x = _conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter, bias=bias)

    if up == 1:  # downsampling only: filter, then strided conv
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d(x, w if flip_weight else w.flip([2, 3]), bias, stride=down, groups=groups)

    # Upsampling: a transposed convolution with stride `up` followed by the FIR filter. The
    # transposed convolution is split into its `up`**2 output phases, each an ordinary convolution
    # of `x` with every `up`-th kernel tap (so no multiply touches an inserted zero); the phases are
    # interleaved straight into the zero-padded image the filter needs, whose bias it adds for free.
    # Relative to the full transposed-convolution output the filter pads by (p0, p1) per axis.
    x = _upsample_conv_polyphase(x, w if flip_weight else w.flip([2, 3]), up, groups,
                                 (px0 - (kw - 1), px1 - (kw - up)), (py0 - (kh - 1), py1 - (kh - up)))
    x = upfirdn2d(x, f, gain=up ** 2, flip_filter=flip_filter, bias=bias if down == 1 else None)
    if down > 1:
        x = _add_bias(upfirdn2d(x, f, down=down, flip_filter=flip_filter), bias)
    return x


def _phase_plan(length: int, up: int, taps: int, pad0: int, pad1: int, phase: int):
    """Where output phase `phase` of a stride-`up` transposed convolution lands in the padded image.

    The full transposed convolution of `length` samples with `taps` taps has `z_len = (length - 1) * up
    + taps` samples; z[up * r + phase] = sum_j x[r - j] * v[phase + j * up], i.e. phase `phase` is a
    correlation of x with `phase_taps` taps. The padded image has `z_len + pad0 + pad1` samples
    (negative pads crop) with padded[i] = z[i - pad0]. Returns (first, count, phase_taps, conv_pad,
    start): padded[first::up] holds `count` samples, taken from a correlation with symmetric padding
    `conv_pad` starting at its output `start`.
    """
    total = (length - 1) * up + taps + pad0 + pad1
    first = (phase + pad0) % up
    count = max(0, (total - first + up - 1) // up)
    phase_taps = max(0, (taps - phase + up - 1) // up)
    r0 = (first - pad0 - phase) // up  # index into the phase signal of padded[first]
    conv_pad = max(0, phase_taps - 1 - r0, r0 + count - length)
    start = r0 - (phase_taps - 1) + conv_pad
    return first, count, phase_taps, conv_pad, start


def _upsample_conv_polyphase(x: torch.Tensor, u: torch.Tensor, up: int, groups: int,
                             pad_x: tuple[int, int], pad_y: tuple[int, int]) -> torch.Tensor:
    """Zero-padded output of the stride-`up` transposed convolution of `x` with the kernel `v` = `u`
    flipped, computed phase by phase. `u` is `[C_out, C_in // groups, kh, kw]` in correlation
    orientation (so phase kernels are strided views of it: flipping small strided blocks is slow);
    `pad_x`, `pad_y` pad (or crop) the full transposed-convolution output.
    """
    n, _, h, w_in = x.shape
    kh, kw = u.shape[2], u.shape[3]
    plans_y = [_phase_plan(h, up, kh, pad_y[0], pad_y[1], p) for p in range(up)]
    plans_x = [_phase_plan(w_in, up, kw, pad_x[0], pad_x[1], p) for p in range(up)]
    out_h = (h - 1) * up + kh + pad_y[0] + pad_y[1]
    out_w = (w_in - 1) * up + kw + pad_x[0] + pad_x[1]
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format
    out = torch.empty([n, u.shape[0], out_h, out_w], dtype=x.dtype, device=x.device, memory_format=fmt)
    for py, (fy, ny, ty, qy, sy) in enumerate(plans_y):
        for px, (fx, nx, tx, qx, sx) in enumerate(plans_x):
            if ny == 0 or nx == 0:
                continue
            dst = out[:, :, fy::up, fx::up]
            if ty == 0 or tx == 0:  # kernel smaller than the stride: this phase is all inserted zeros
                dst.zero_()
                continue
            # Taps v[p + j * up], j = T-1..0, are u[K-1-p-(T-1)*up :: up].
            g = u[:, :, kh - 1 - py - (ty - 1) * up::up, kw - 1 - px - (tx - 1) * up::up]
            y = _conv2d(x, g, padding=[qy, qx], groups=groups)
            dst.copy_(y[:, :, sy:sy + ny, sx:sx + nx])
    return out


def _add_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias.reshape(1, -1, 1, 1)
