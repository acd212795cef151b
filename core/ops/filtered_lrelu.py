"""filtered_lrelu: StyleGAN3's alias-free nonlinearity (bias, upsample, leaky ReLU, clamp, downsample)."""

from __future__ import annotations

import math

import torch

from .bias_act import bias_act, bias_act_ref, can_modify_inplace
from .impl import RecomputeGrad, triton_kernels, use_triton
from .upfirdn2d import Padding, filter_size, parse_padding, upfirdn2d, upfirdn2d_ref

# Upper bound on the upsampled intermediate of one channel chunk in the fast path, in elements.
# 2**26 float32 elements = 256 MiB; NVIDIA's reference materialises all channels at once
# (7.3 GB at 1024 px), which is what made StyleGAN3 inversion impractical outside a datacenter GPU.
CHUNK_ELEMENTS = 2 ** 26


def _output_hw(x: torch.Tensor, fu, fd, up: int, down: int, padding: Padding) -> tuple[int, int]:
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = parse_padding(padding)
    out_w = (x.shape[3] * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (x.shape[2] * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    return out_h, out_w


def filtered_lrelu_ref(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                       b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding: Padding = 0,
                       gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                       flip_filter: bool = False) -> torch.Tensor:
    """Reference (Karras et al. 2021, sec. 3.2): for each channel of `x` `[N, C, H, W]`,
    add `b` `[C]`, upsample by `up` with `fu` (gain up**2, `padding` w.r.t. the upsampled image),
    leaky ReLU with `slope`, multiply by `gain`, clamp to +-`clamp`, filter with `fd` and keep
    every `down`-th sample.
    """
    x = bias_act_ref(x, b)
    x = upfirdn2d_ref(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter)
    x = bias_act_ref(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding: Padding = 0,
                   gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                   flip_filter: bool = False, chunk_elements: int = CHUNK_ELEMENTS,
                   impl: str | None = None) -> torch.Tensor:
    """Same result as `filtered_lrelu_ref`.

    The PyTorch path (impl "torch") uses polyphase resampling, in-place activation, and processes
    channels in chunks so the upsampled intermediate never exceeds `chunk_elements`. The Triton
    path (`impl` "triton", or "auto" on CUDA; None = the `ops_impl` setting, see `impl.py`) runs
    upsample, bias/activation/clamp and downsample in one kernel per output tile, so the upsampled
    image never exists in memory; its backward recomputes the PyTorch path chunk by chunk.
    """
    n, c, h, w = x.shape
    px0, px1, py0, py1 = parse_padding(padding)
    fu_w, fu_h = filter_size(fu)
    tmp_elems = n * (h * up + py0 + py1 - fu_h + 1) * (w * up + px0 + px1 - fu_w + 1)
    chunk = max(1, min(c, chunk_elements // max(tmp_elems, 1)))
    if use_triton(x, impl, "filtered_lrelu"):
        def fast(xs: torch.Tensor, bs: torch.Tensor | None) -> torch.Tensor:
            return triton_kernels().resample_act(
                xs, fu=fu, fd=fd, up=up, down1=1, down2=down, padding=(px0, px1, py0, py1),
                flip_filter=flip_filter, gain_u=up ** 2, b_pre=bs, b_post=None, act=1, slope=slope, gain=gain,
                clamp=clamp, stage2=True)

        def ref(xs: torch.Tensor, bs: torch.Tensor | None) -> torch.Tensor:
            return filtered_lrelu(xs, fu, fd, bs, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                  clamp=clamp, flip_filter=flip_filter, chunk_elements=chunk_elements, impl="torch")

        if can_modify_inplace(x, b):  # no graph needed
            return fast(x, b)
        return RecomputeGrad.apply(fast, ref, chunk, x, b)

    def run(xs: torch.Tensor, bs: torch.Tensor | None) -> torch.Tensor:
        if bs is not None:
            xs = xs + bs.to(xs.dtype).reshape(1, -1, 1, 1)
        y = upfirdn2d(xs, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter)
        y = bias_act(y, act="lrelu", alpha=slope, gain=gain, clamp=clamp, inplace=True)
        return upfirdn2d(y, fd, down=down, flip_filter=flip_filter)

    if chunk >= c:
        return run(x, b)
    starts = range(0, c, chunk)
    if not can_modify_inplace(x, b):
        return torch.cat([run(x[:, i:i + chunk], None if b is None else b[i:i + chunk]) for i in starts], dim=1)
    out_h, out_w = _output_hw(x, fu, fd, up, down, padding)
    fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty([n, c, out_h, out_w], dtype=x.dtype, device=x.device, memory_format=fmt)
    for i in starts:
        out[:, i:i + chunk] = run(x[:, i:i + chunk], None if b is None else b[i:i + chunk])
    return out
