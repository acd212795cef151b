"""Triton kernel: FIR resampling + bias/activation (+ a second FIR resampling) in one pass over the image.

Imported lazily (only when the Triton path is chosen, see `impl.py`): importing it imports triton, and
`TRITON_INTERPRET=1` must be set before that import for the kernel to run on CPU tensors.

One kernel serves filtered_lrelu and upfirdn2d + bias_act. Per axis, every FIR step of StyleGAN
(zero insertion by `up`, padding, FIR filter, keeping every `down`-th sample) is a linear map, i.e. a
banded matrix whose entries are filter taps. A program takes one output tile and computes

    t   = U_y @ (x_tile + b_pre) @ U_x^T         stage 1: upsample (and/or downsample) [T_Y, T_X]
    y   = clamp(act(t + b_post) * gain)          bias, leaky ReLU, gain, clamp, in registers
    out = D_y @ y @ D_x^T                        stage 2 (filtered_lrelu only): downsample [O_Y, O_X]

with `tl.dot` on matrices built from the taps inside the program, so the upsampled image exists only as
one tile in registers / shared memory and never in global memory. A separable (1-D) filter is one
term; a 2-D filter (e.g. StyleGAN3's radial down filter, StyleGAN2's 4x4 [1,3,3,1] outer product) is
split exactly into a sum of rank-1 terms by an SVD, one matrix pair per term.

The backward of filtered_lrelu (`filtered_lrelu_grad`) is the transposed chain per input tile,
dX = U^T [act'(U x) * (D^T G D)] U, with the stage-1 values recomputed from x over the tile's reach
instead of stored (NVIDIA's op stores their signs), so it too never writes the upsampled image.

Per axis (length L in, taps K, factors up/down, padding p0, correlation taps g = the filter flipped
unless flip_filter, gain folded in): stage-1 output t[i] = sum_s x[s] * g[s*up + p0 - i*down]
(taps outside [0, K) are zero), which is exactly `upfirdn2d_ref`'s zero-insert, pad, convolve and
decimate; stage 2 is the same map with up = 1 and no padding.
"""

from __future__ import annotations

import math
import weakref

import torch
import triton
import triton.language as tl

# Activation codes (constexpr in the kernel).
ACT_LINEAR, ACT_LRELU = 0, 1


@triton.jit
def _band(gptr, rows, cols, up, down, pad, taps: tl.constexpr):
    """[len(rows), len(cols)] matrix M[i, s] = g[s*up + pad - i*down] (0 outside the taps)."""
    k = cols[None, :] * up + pad - rows[:, None] * down
    return tl.load(gptr + k, mask=(k >= 0) & (k < taps), other=0.0)


@triton.jit
def _resample_act_kernel(
    x_ptr, out_ptr, bpre_ptr, bpost_ptr,
    guy_ptr, gux_ptr, gdy_ptr, gdx_ptr,          # taps [R, K] per axis, stage 1 (u) and stage 2 (d)
    C, H, W, T_H, T_W, OUT_H, OUT_W,
    sxn, sxc, sxh, sxw, son, soc, soh, sow,
    up, down1, down2, py0, px0, off_y, off_x,
    slope, gain, clamp,
    KU_Y: tl.constexpr, KU_X: tl.constexpr, RU: tl.constexpr,
    KD_Y: tl.constexpr, KD_X: tl.constexpr, RD: tl.constexpr,
    BS_Y: tl.constexpr, BS_X: tl.constexpr, BT_Y: tl.constexpr, BT_X: tl.constexpr,
    BO_Y: tl.constexpr, BO_X: tl.constexpr,
    PRE_BIAS: tl.constexpr, POST_BIAS: tl.constexpr, ACT: tl.constexpr, CLAMP: tl.constexpr,
    STAGE2: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_nc = tl.program_id(0)
    n = pid_nc // C
    c = pid_nc % C
    # Output tile -> stage-1 tile (t) -> input tile (s).
    if STAGE2:
        oy0 = tl.program_id(1) * BO_Y
        ox0 = tl.program_id(2) * BO_X
        ty0 = oy0 * down2
        tx0 = ox0 * down2
    else:
        ty0 = tl.program_id(1) * BT_Y
        tx0 = tl.program_id(2) * BT_X
        oy0 = ty0
        ox0 = tx0
    # First input sample that reaches t0: ceil((t0*down1 - p0) / up); off_* (a multiple of up, > |p0|)
    # keeps the division on non-negative numbers.
    sy0 = (ty0 * down1 - py0 + off_y + up - 1) // up - off_y // up
    sx0 = (tx0 * down1 - px0 + off_x + up - 1) // up - off_x // up

    rs_y = sy0 + tl.arange(0, BS_Y)
    rs_x = sx0 + tl.arange(0, BS_X)
    xmask = (rs_y[:, None] >= 0) & (rs_y[:, None] < H) & (rs_x[None, :] >= 0) & (rs_x[None, :] < W)
    xp = x_ptr + n * sxn + c * sxc + rs_y[:, None] * sxh + rs_x[None, :] * sxw
    xt = tl.load(xp, mask=xmask, other=0.0).to(tl.float32)
    if PRE_BIAS:
        xt = tl.where(xmask, xt + tl.load(bpre_ptr + c).to(tl.float32), 0.0)

    rt_y = ty0 + tl.arange(0, BT_Y)
    rt_x = tx0 + tl.arange(0, BT_X)
    t = tl.zeros([BT_Y, BT_X], dtype=tl.float32)
    for r in tl.static_range(RU):
        uy = _band(guy_ptr + r * KU_Y, rt_y, rs_y, up, down1, py0, KU_Y)          # [BT_Y, BS_Y]
        uxt = tl.trans(_band(gux_ptr + r * KU_X, rt_x, rs_x, up, down1, px0, KU_X))  # [BS_X, BT_X]
        t += tl.dot(tl.dot(uy, xt, input_precision=PRECISION), uxt, input_precision=PRECISION)

    if POST_BIAS:
        t += tl.load(bpost_ptr + c).to(tl.float32)
    if ACT == 1:
        t = tl.where(t > 0, t, t * slope)
    t = t * gain
    if CLAMP:
        t = tl.minimum(tl.maximum(t, -clamp), clamp)

    if STAGE2:
        # Zero the rows/columns past the stage-1 image so garbage there can never reach a kept output.
        t = tl.where((rt_y[:, None] < T_H) & (rt_x[None, :] < T_W), t, 0.0)
        ro_y = oy0 + tl.arange(0, BO_Y)
        ro_x = ox0 + tl.arange(0, BO_X)
        o = tl.zeros([BO_Y, BO_X], dtype=tl.float32)
        for r in tl.static_range(RD):
            dy = _band(gdy_ptr + r * KD_Y, ro_y, rt_y, 1, down2, 0, KD_Y)            # [BO_Y, BT_Y]
            dxt = tl.trans(_band(gdx_ptr + r * KD_X, ro_x, rt_x, 1, down2, 0, KD_X))  # [BT_X, BO_X]
            o += tl.dot(tl.dot(dy, t, input_precision=PRECISION), dxt, input_precision=PRECISION)
    else:
        ro_y = rt_y
        ro_x = rt_x
        o = t
    omask = (ro_y[:, None] < OUT_H) & (ro_x[None, :] < OUT_W)
    op = out_ptr + n * son + c * soc + ro_y[:, None] * soh + ro_x[None, :] * sow
    tl.store(op, o.to(out_ptr.dtype.element_ty), mask=omask)


def _format_of(x: torch.Tensor) -> torch.memory_format:
    """Keep channels-last inputs channels-last (as the PyTorch path does); the kernel itself reads any strides."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


@triton.jit
def _filtered_lrelu_bwd_kernel(
    x_ptr, g_ptr, dx_ptr, bpre_ptr,
    guy_ptr, gux_ptr, gdy_ptr, gdx_ptr,
    C, H, W, T_H, T_W, OUT_H, OUT_W,
    sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
    up, down, py0, px0, off_oy, off_ox,
    slope, gain, clamp,
    KU_Y: tl.constexpr, KU_X: tl.constexpr, RU: tl.constexpr,
    KD_Y: tl.constexpr, KD_X: tl.constexpr, RD: tl.constexpr,
    BS: tl.constexpr, BS2_Y: tl.constexpr, BS2_X: tl.constexpr, BT_Y: tl.constexpr, BT_X: tl.constexpr,
    BO_Y: tl.constexpr, BO_X: tl.constexpr,
    PRE_BIAS: tl.constexpr, CLAMP: tl.constexpr, PRECISION: tl.constexpr,
):
    """Gradient of filtered_lrelu w.r.t. its input for one input tile: dX = U^T [act'(U x) * (D^T g)] U.

    The stage-1 values are recomputed from x over the tile's reach (no sign bits stored), so the
    backward, like the forward, never writes the upsampled image to memory."""
    pid_nc = tl.program_id(0)
    n = pid_nc // C
    c = pid_nc % C
    sy0 = tl.program_id(1) * BS
    sx0 = tl.program_id(2) * BS
    # Stage-1 samples that input sample s feeds: t in [s*up + p0 - K_u + 1, s*up + p0].
    ty0 = sy0 * up + py0 - KU_Y + 1
    tx0 = sx0 * up + px0 - KU_X + 1
    # Outputs that read stage-1 sample t: o in [ceil((t - K_d + 1) / down), floor(t / down)].
    oy0 = (ty0 - KD_Y + 1 + off_oy + down - 1) // down - off_oy // down
    ox0 = (tx0 - KD_X + 1 + off_ox + down - 1) // down - off_ox // down
    # Inputs the stage-1 tile needs: s' from ceil((t0 - p0) / up) = s0 - floor((K_u - 1) / up).
    s2y0 = sy0 - (KU_Y - 1) // up
    s2x0 = sx0 - (KU_X - 1) // up

    r2y = s2y0 + tl.arange(0, BS2_Y)
    r2x = s2x0 + tl.arange(0, BS2_X)
    xmask = (r2y[:, None] >= 0) & (r2y[:, None] < H) & (r2x[None, :] >= 0) & (r2x[None, :] < W)
    xt = tl.load(x_ptr + n * sxn + c * sxc + r2y[:, None] * sxh + r2x[None, :] * sxw, mask=xmask,
                 other=0.0).to(tl.float32)
    if PRE_BIAS:
        xt = tl.where(xmask, xt + tl.load(bpre_ptr + c).to(tl.float32), 0.0)
    rty = ty0 + tl.arange(0, BT_Y)
    rtx = tx0 + tl.arange(0, BT_X)
    t = tl.zeros([BT_Y, BT_X], dtype=tl.float32)
    for r in tl.static_range(RU):
        uy = _band(guy_ptr + r * KU_Y, rty, r2y, up, 1, py0, KU_Y)
        uxt = tl.trans(_band(gux_ptr + r * KU_X, rtx, r2x, up, 1, px0, KU_X))
        t += tl.dot(tl.dot(uy, xt, input_precision=PRECISION), uxt, input_precision=PRECISION)
    # d/dt of clamp(lrelu(t) * gain): torch's leaky_relu passes slope at t <= 0, clamp passes |v| <= clamp.
    dact = tl.where(t > 0, 1.0, slope) * gain
    if CLAMP:
        v = tl.where(t > 0, t, t * slope) * gain
        dact = tl.where((v >= -clamp) & (v <= clamp), dact, 0.0)
    tvalid = (rty[:, None] >= 0) & (rty[:, None] < T_H) & (rtx[None, :] >= 0) & (rtx[None, :] < T_W)
    dact = tl.where(tvalid, dact, 0.0)

    roy = oy0 + tl.arange(0, BO_Y)
    rox = ox0 + tl.arange(0, BO_X)
    gmask = (roy[:, None] >= 0) & (roy[:, None] < OUT_H) & (rox[None, :] >= 0) & (rox[None, :] < OUT_W)
    gt = tl.load(g_ptr + n * sgn + c * sgc + roy[:, None] * sgh + rox[None, :] * sgw, mask=gmask,
                 other=0.0).to(tl.float32)
    dy = tl.zeros([BT_Y, BT_X], dtype=tl.float32)
    for q in tl.static_range(RD):
        dyt = tl.trans(_band(gdy_ptr + q * KD_Y, roy, rty, 1, down, 0, KD_Y))   # [BT_Y, BO_Y]
        dx_ = _band(gdx_ptr + q * KD_X, rox, rtx, 1, down, 0, KD_X)             # [BO_X, BT_X]
        dy += tl.dot(tl.dot(dyt, gt, input_precision=PRECISION), dx_, input_precision=PRECISION)
    dt = dy * dact

    rsy = sy0 + tl.arange(0, BS)
    rsx = sx0 + tl.arange(0, BS)
    o = tl.zeros([BS, BS], dtype=tl.float32)
    for r in tl.static_range(RU):
        uyt = tl.trans(_band(guy_ptr + r * KU_Y, rty, rsy, up, 1, py0, KU_Y))  # [BS, BT_Y]
        ux = _band(gux_ptr + r * KU_X, rtx, rsx, up, 1, px0, KU_X)              # [BT_X, BS]
        o += tl.dot(tl.dot(uyt, dt, input_precision=PRECISION), ux, input_precision=PRECISION)
    omask = (rsy[:, None] < H) & (rsx[None, :] < W)
    tl.store(dx_ptr + n * sdn + c * sdc + rsy[:, None] * sdh + rsx[None, :] * sdw,
             o.to(dx_ptr.dtype.element_ty), mask=omask)


def filtered_lrelu_grad(x: torch.Tensor, gy: torch.Tensor, *, fu, fd, up: int, down: int,
                        padding: tuple[int, int, int, int], flip_filter: bool, b_pre: torch.Tensor | None,
                        slope: float, gain: float, clamp: float | None, precision: str = "ieee") -> torch.Tensor:
    """d filtered_lrelu / d x for the output gradient `gy` (same shape rules as `resample_act`'s stage 2)."""
    n, c, h, w = x.shape
    px0, px1, py0, py1 = padding
    guy, gux = device_terms(fu, flip_filter=flip_filter, gain=up ** 2, device=x.device)
    gdy, gdx = device_terms(fd, flip_filter=flip_filter, gain=1.0, device=x.device)
    kuy, kux, kdy, kdx = guy.shape[1], gux.shape[1], gdy.shape[1], gdx.shape[1]
    t_h = _axis_len(h, up, 1, py0, py1, kuy)
    t_w = _axis_len(w, up, 1, px0, px1, kux)
    assert gy.shape[2:] == (_axis_len(t_h, 1, down, 0, 0, kdy), _axis_len(t_w, 1, down, 0, 0, kdx)), gy.shape
    bs = 16
    bt_y, bt_x = _pow2((bs - 1) * up + kuy), _pow2((bs - 1) * up + kux)
    bo_y, bo_x = _pow2((bt_y + kdy - 2) // down + 2), _pow2((bt_x + kdx - 2) // down + 2)
    bs2_y, bs2_x = _pow2((bt_y + kuy - 2) // up + 2), _pow2((bt_x + kux - 2) // up + 2)
    dev = x.device
    dx = torch.empty([n, c, h, w], dtype=x.dtype, device=dev, memory_format=_format_of(x))
    bpre = guy if b_pre is None else b_pre.to(device=dev, dtype=torch.float32).contiguous()
    off_oy = down * ((abs(py0) + kuy + kdy) // down + 2)
    off_ox = down * ((abs(px0) + kux + kdx) // down + 2)
    grid = (n * c, triton.cdiv(h, bs), triton.cdiv(w, bs))
    _filtered_lrelu_bwd_kernel[grid](
        x, gy, dx, bpre, guy, gux, gdy, gdx,
        c, h, w, t_h, t_w, gy.shape[2], gy.shape[3],
        *x.stride(), *gy.stride(), *dx.stride(),
        up, down, py0, px0, off_oy, off_ox,
        float(slope), float(gain), float(clamp if clamp is not None else 0.0),
        KU_Y=kuy, KU_X=kux, RU=guy.shape[0], KD_Y=kdy, KD_X=kdx, RD=gdy.shape[0],
        BS=bs, BS2_Y=bs2_y, BS2_X=bs2_x, BT_Y=bt_y, BT_X=bt_x, BO_Y=bo_y, BO_X=bo_x,
        PRE_BIAS=b_pre is not None, CLAMP=clamp is not None and clamp >= 0, PRECISION=precision,
        num_warps=4 if max(bt_y, bt_x, bo_y, bo_x, bs2_y, bs2_x) <= 64 else 8,
    )
    return dx


def _pow2(v: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, int(v) - 1).bit_length())


def separable_terms(f: torch.Tensor | None, *, flip_filter: bool, gain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlation taps of `f` (from `setup_filter`, None = identity) as rank-1 terms, gain included.

    Returns (gy, gx), each float32 `[R, K]`, with sum_r outer(gy[r], gx[r]) = the 2-D correlation
    kernel (`gain` times `f`, flipped unless `flip_filter`). A 1-D filter is one term with `gain`
    split evenly between the axes (as `upfirdn2d_ref` applies it per axis); a 2-D filter is
    factorised by an SVD in float64, keeping the terms above float64 round-off.
    """
    if f is None:
        one = torch.tensor([[float(gain) ** 0.5]], dtype=torch.float32)
        return one, one.clone()
    f = f.detach().to(device="cpu", dtype=torch.float64)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        g = (f * math.sqrt(gain))[None]
        return g.float(), g.float().clone()
    u, s, vh = torch.linalg.svd(f * gain)
    keep = s > s[0] * 1e-12 if s[0] > 0 else s >= 0
    keep[0] = True
    root = s[keep].sqrt()
    gy = (u[:, keep] * root).t()
    gx = vh[keep] * root[:, None]
    return gy.float().contiguous(), gx.float().contiguous()


_taps_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def device_terms(f: torch.Tensor | None, *, flip_filter: bool, gain: float,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`separable_terms` on `device`, cached per filter tensor (and its version), so repeated calls with a
    network's filter buffers cost no SVD, no host-device copy and no synchronisation (CUDA graphs need that)."""
    key = (None if f is None else id(f), None if f is None else f._version, tuple(f.shape) if f is not None else (),
           str(device), bool(flip_filter), float(gain))
    hit = _taps_cache.get(key)
    if hit is None:
        hit = tuple(g.to(device) for g in separable_terms(f, flip_filter=flip_filter, gain=gain))
        _taps_cache[key] = hit
        if f is not None:  # forget the entry with the filter (its id may be reused afterwards)
            weakref.finalize(f, _taps_cache.pop, key, None)
    return hit


def _axis_len(length: int, up: int, down: int, p0: int, p1: int, taps: int) -> int:
    return (length * up + p0 + p1 - taps + down) // down


def resample_act(x: torch.Tensor, *, fu: torch.Tensor | None, fd: torch.Tensor | None, up: int, down1: int,
                 down2: int, padding: tuple[int, int, int, int], flip_filter: bool, gain_u: float,
                 b_pre: torch.Tensor | None, b_post: torch.Tensor | None, act: int, slope: float, gain: float,
                 clamp: float | None, stage2: bool, precision: str = "ieee") -> torch.Tensor:
    """Launch the kernel on `x` `[N, C, H, W]` (any float dtype; math in float32, output in x.dtype).

    Stage 1: upfirdn2d(x + b_pre, fu, up, down1, padding, flip_filter, gain_u); then
    clamp(act(. + b_post) * gain); stage 2 when `stage2`: upfirdn2d(., fd, down=down2, flip_filter).
    """
    assert x.ndim == 4 and x.is_floating_point(), x.shape
    n, c, h, w = x.shape
    px0, px1, py0, py1 = padding
    guy, gux = device_terms(fu, flip_filter=flip_filter, gain=gain_u, device=x.device)
    kuy, kux = guy.shape[1], gux.shape[1]
    t_h = _axis_len(h, up, down1, py0, py1, kuy)
    t_w = _axis_len(w, up, down1, px0, px1, kux)
    if stage2:
        gdy, gdx = device_terms(fd, flip_filter=flip_filter, gain=1.0, device=x.device)
        kdy, kdx = gdy.shape[1], gdx.shape[1]
        out_h = _axis_len(t_h, 1, down2, 0, 0, kdy)
        out_w = _axis_len(t_w, 1, down2, 0, 0, kdx)
        bo_y, bo_x = 16, 16
        bt_y = _pow2((bo_y - 1) * down2 + kdy)
        bt_x = _pow2((bo_x - 1) * down2 + kdx)
        grid = (n * c, triton.cdiv(out_h, bo_y), triton.cdiv(out_w, bo_x))
    else:
        gdy = gdx = guy
        kdy = kdx = 1
        out_h, out_w = t_h, t_w
        bt_y = bt_x = bo_y = bo_x = 32 if up * down1 <= 2 else 16
        grid = (n * c, triton.cdiv(out_h, bt_y), triton.cdiv(out_w, bt_x))
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"the resampled image would be empty ({out_h}x{out_w}) for input {h}x{w}, up={up}, "
                         f"padding={list(padding)} and filters of {kuy}/{kdy} taps: pad more or use a larger input")
    bs_y = _pow2(((bt_y - 1) * down1 + kuy - 1) // up + 2)
    bs_x = _pow2(((bt_x - 1) * down1 + kux - 1) // up + 2)
    dev = x.device
    out = torch.empty([n, c, out_h, out_w], dtype=x.dtype, device=dev, memory_format=_format_of(x))
    dummy = guy
    bpre = dummy if b_pre is None else b_pre.to(device=dev, dtype=torch.float32).contiguous()
    bpost = dummy if b_post is None else b_post.to(device=dev, dtype=torch.float32).contiguous()
    off_y = up * (abs(py0) // up + 2)
    off_x = up * (abs(px0) // up + 2)
    _resample_act_kernel[grid](
        x, out, bpre, bpost, guy, gux, gdy, gdx,
        c, h, w, t_h, t_w, out_h, out_w,
        *x.stride(), *out.stride(),
        up, down1, down2, py0, px0, off_y, off_x,
        float(slope), float(gain), float(clamp if clamp is not None else 0.0),
        KU_Y=kuy, KU_X=kux, RU=guy.shape[0], KD_Y=kdy, KD_X=kdx, RD=gdy.shape[0],
        BS_Y=bs_y, BS_X=bs_x, BT_Y=bt_y, BT_X=bt_x, BO_Y=bo_y, BO_X=bo_x,
        PRE_BIAS=b_pre is not None, POST_BIAS=b_post is not None, ACT=act,
        CLAMP=clamp is not None and clamp >= 0, STAGE2=stage2, PRECISION=precision,
        num_warps=4 if max(bt_y, bt_x, bs_y, bs_x) <= 64 else 8,
    )
    return out
