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
            return F.conv2d(x, w if flip_weight else w.flip([2, 3]), bias, padding=[py0, px0], groups=groups)
        x = F.pad(x, [px0, px1, py0, py1])
        return F.conv2d(x, w if flip_weight else w.flip([2, 3]), bias, groups=groups)

    if kw == 1 and kh == 1 and down == 1:  # 1x1 conv commutes with upsampling: convolve at low res
        x = F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
        return _add_bias(x, bias)

    if up == 1:  # downsampling only: filter, then strided conv
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return F.conv2d(x, w if flip_weight else w.flip([2, 3]), bias, stride=down, groups=groups)

    # Upsampling: full transposed convolution with stride `up`, then the FIR filter. The filter's
    # padding shrinks by the kernel's extent (derivation in tests/test_ops.py); a crop both sides
    # share is done by the transposed conv's own padding so it is never computed.
    out_channels, in_per_group = w.shape[0], w.shape[1]
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    if flip_weight:
        wt = wt.flip([2, 3])
    px0, px1 = px0 - (kw - 1), px1 - (kw - up)
    py0, py1 = py0 - (kh - 1), py1 - (kh - up)
    pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
    x = F.conv_transpose2d(x, wt, stride=up, padding=[pyt, pxt], groups=groups)
    x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2, flip_filter=flip_filter)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return _add_bias(x, bias)


def _add_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias.reshape(1, -1, 1, 1)
