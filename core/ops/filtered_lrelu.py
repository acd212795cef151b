"""filtered_lrelu: StyleGAN3's alias-free nonlinearity (bias, upsample, leaky ReLU, clamp, downsample)."""

from __future__ import annotations

import math

import torch

from .bias_act import bias_act, bias_act_ref, can_modify_inplace
from .impl import triton_kernels, use_triton
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
    image never exists in memory; its backward (w.r.t. `x` and `b`) is a second Triton kernel that
    recomputes the upsampled values of each tile from `x` instead of storing them.
    """
    n, c, h, w = x.shape
    px0, px1, py0, py1 = parse_padding(padding)
    fu_w, fu_h = filter_size(fu)
    tmp_elems = n * (h * up + py0 + py1 - fu_h + 1) * (w * up + px0 + px1 - fu_w + 1)
    chunk = max(1, min(c, chunk_elements // max(tmp_elems, 1)))
    if use_triton(x, impl, "filtered_lrelu"):
        args = dict(fu=fu, fd=fd, up=up, down=down, padding=(px0, px1, py0, py1), flip_filter=flip_filter,
                    slope=slope, gain=gain, clamp=clamp)
        if can_modify_inplace(x, b):  # no graph needed
            return _TritonFilteredLRelu.forward(None, x, b, args)
        return _TritonFilteredLRelu.apply(x, b, args)

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


class _TritonFilteredLRelu(torch.autograd.Function):
    """filtered_lrelu through the Triton kernels: forward and backward both fused per tile (first-order only).

    `args`: filtered_lrelu's keyword arguments (padding as (x0, x1, y0, y1)), plus optionally the
    kernels' `precision` for tl.dot ("ieee" by default; the benchmark tries "tf32x3")."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor | None, args: dict) -> torch.Tensor:
        if ctx is not None:
            ctx.args = args
            ctx.save_for_backward(x, b)
        return triton_kernels().resample_act(
            x, fu=args["fu"], fd=args["fd"], up=args["up"], down1=1, down2=args["down"], padding=args["padding"],
            flip_filter=args["flip_filter"], gain_u=args["up"] ** 2, b_pre=b, b_post=None, act=1,
            slope=args["slope"], gain=args["gain"], clamp=args["clamp"], stage2=True,
            precision=args.get("precision", "ieee"))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor):
        x, b = ctx.saved_tensors
        dx = triton_kernels().filtered_lrelu_grad(x, gy, b_pre=b, **ctx.args)
        db = dx.sum(dim=(0, 2, 3), dtype=torch.float32).to(b.dtype) if ctx.needs_input_grad[1] else None
        return (dx if ctx.needs_input_grad[0] else None), db, None
