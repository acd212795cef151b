"""Fast ops against their `_ref` specifications: values, memory formats, gradients, in-place safety, chunking."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from core.networks.stylegan3 import design_lowpass_filter
from core.ops import (bias_act, bias_act_ref, conv2d_resample, conv2d_resample_ref, filtered_lrelu,
                      filtered_lrelu_ref, modulated_conv2d, modulated_conv2d_ref, setup_filter, upfirdn2d,
                      upfirdn2d_ref)
from core.ops.bias_act import ACTIVATIONS

F64 = dict(dtype=torch.float64)
EXACT = dict(rtol=1e-10, atol=1e-10)  # float64: the fast paths reorder sums, nothing else


def rand(*shape, seed=0, channels_last=False, requires_grad=False):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), **F64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


FILTERS = {
    "none": None,
    "box1": setup_filter([1]),
    "taps4_2d": setup_filter([1, 3, 3, 1]),                     # StyleGAN2's filter (outer product)
    "taps4_sep": setup_filter([1, 3, 3, 1], separable=True),
    "taps3_2d": setup_filter([1, 2, 1]),
    "taps5_sep_gain": setup_filter([1, 4, 6, 4, 1], separable=True, gain=2.0),
    "taps8_sep": setup_filter([1, 2, 4, 7, 7, 4, 2, 1]),       # >= 8 taps: separable by default
    "rect_2d": setup_filter(torch.tensor([[1.0, 2.0, 1.0], [0.5, 3.0, 2.0]])),  # non-square, non-symmetric
}
for name in list(FILTERS):
    if FILTERS[name] is not None:
        FILTERS[name] = FILTERS[name].to(torch.float64)


# ------------------------------------------------------------------------------------------------
# upfirdn2d


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (3, 1), (1, 3), (2, 2), (4, 2), ([2, 1], [1, 2])])
@pytest.mark.parametrize("padding", [0, 1, [2, 1], [1, 2, 0, 3], [-1, 2, 1, -2], [3, 3, 3, 3]])
def test_upfirdn2d_matches_reference(fname, up, down, padding):
    f = FILTERS[fname]
    for channels_last, flip_filter in itertools.product([False, True], [False, True]):
        x = rand(2, 3, 7, 6, channels_last=channels_last)
        try:
            expected = upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
        except RuntimeError:  # padding crops the whole image: the reference refuses too
            with pytest.raises(RuntimeError):
                upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
            continue
        got = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
        torch.testing.assert_close(got, expected, **EXACT)


def test_upfirdn2d_bias_and_memory_format():
    x = rand(1, 4, 5, 5, channels_last=True)
    b = rand(4, seed=1)
    f = FILTERS["taps4_2d"]
    for kw in (dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1), dict(padding=[1, 2, 2, 1])):
        got = upfirdn2d(x, f, bias=b, **kw)
        torch.testing.assert_close(got, upfirdn2d_ref(x, f, **kw) + b.reshape(1, -1, 1, 1), **EXACT)
        assert got.is_contiguous(memory_format=torch.channels_last), kw


def test_upfirdn2d_reference_is_literal_definition():
    """Pin the specification itself on a hand-computable case: zero insertion, pad, flipped convolution."""
    x = torch.tensor([[[[1.0, 2.0]]]], **F64)
    f = torch.tensor([[1.0, 10.0]], **F64)
    # Zero insertion -> [1, 0, 2, 0]; pad 1 left -> [0, 1, 0, 2, 0]; convolution with [1, 10] = correlation
    # with [10, 1]: [1, 10, 2, 20]; every 2nd sample -> [1, 2].
    got = upfirdn2d_ref(x, f, up=[2, 1], down=[1, 1], padding=[1, 0, 0, 0])
    torch.testing.assert_close(got, torch.tensor([[[[1.0, 10.0, 2.0, 20.0]]]], **F64))
    torch.testing.assert_close(upfirdn2d(x, f, up=[2, 1], padding=[1, 0, 0, 0]), got)


# ------------------------------------------------------------------------------------------------
# conv2d_resample


CONV_CASES = [
    # up, down, kernel, padding, groups
    (1, 1, 3, 1, 1), (1, 1, 3, 0, 2), (1, 1, 1, 0, 1), (1, 1, 3, [1, 0, 2, 1], 1),
    (2, 1, 3, 1, 1), (2, 1, 3, 0, 2), (2, 1, 1, 0, 1), (2, 1, 2, 1, 1), (2, 1, 4, [2, 1, 0, 1], 1),
    (3, 1, 3, 1, 1), (3, 1, 2, 0, 1), (4, 1, 3, [0, -1, 1, 2], 1),
    (1, 2, 3, 1, 1), (1, 2, 1, 0, 1), (1, 2, 3, 0, 2), (1, 3, 3, 2, 1),
    (2, 2, 3, 1, 1),
]


@pytest.mark.parametrize("up,down,kernel,padding,groups", CONV_CASES)
@pytest.mark.parametrize("fname", ["taps4_2d", "taps4_sep", "taps3_2d", "rect_2d"])
def test_conv2d_resample_matches_reference(up, down, kernel, padding, groups, fname):
    f = FILTERS[fname]
    w = rand(6, 4 // groups, kernel, kernel, seed=2)
    b = rand(6, seed=3)
    for channels_last, flip_weight, flip_filter in itertools.product([False, True], repeat=3):
        x = rand(2, 4, 7, 6, channels_last=channels_last)
        expected = conv2d_resample_ref(x, w, f, up=up, down=down, padding=padding, groups=groups,
                                       flip_weight=flip_weight, flip_filter=flip_filter)
        got = conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups,
                              flip_weight=flip_weight, flip_filter=flip_filter)
        torch.testing.assert_close(got, expected, **EXACT)
        got_b = conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups,
                                flip_weight=flip_weight, flip_filter=flip_filter, bias=b)
        torch.testing.assert_close(got_b, expected + b.reshape(1, -1, 1, 1), **EXACT)


def test_conv2d_resample_keeps_channels_last():
    x = rand(1, 4, 6, 6, channels_last=True)
    w = rand(8, 4, 3, 3, seed=1)
    for kw in (dict(padding=1), dict(up=2, padding=1), dict(down=2, padding=1)):
        y = conv2d_resample(x, w, FILTERS["taps4_2d"], **kw)
        assert y.is_contiguous(memory_format=torch.channels_last), kw


# ------------------------------------------------------------------------------------------------
# modulated_conv2d


MODCONV_CASES = [
    # demodulate, up, padding, kernel, input_gain, prenormalize, out_gain, with_bias
    (True, 1, 1, 3, None, None, 1.0, False),
    (True, 2, 1, 3, None, None, math.sqrt(2), True),
    (False, 1, 0, 1, None, None, 1.0, True),          # ToRGB
    (True, 1, 2, 3, "vector", "stylegan3", 1.0, True),  # StyleGAN3 layer (padding = kernel - 1)
    (True, 1, 0, 1, "scalar", "stylegan3", 1.0, False),
    (True, 1, 1, 3, None, "fp16", 0.5, True),
    (False, 1, 0, 1, "batch", None, 1.0, False),
]


@pytest.mark.parametrize("demodulate,up,padding,kernel,input_gain,prenormalize,out_gain,with_bias", MODCONV_CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_modulated_conv2d_matches_reference(demodulate, up, padding, kernel, input_gain, prenormalize, out_gain,
                                            with_bias, batch):
    w = rand(5, 4, kernel, kernel, seed=1)
    s = rand(batch, 4, seed=2)
    b = rand(5, seed=3) if with_bias else None
    gain = {None: None, "scalar": torch.tensor(0.7, **F64), "vector": rand(4, seed=4).abs() + 0.5,
            "batch": rand(batch, 4, seed=5).abs() + 0.5}[input_gain]
    f = FILTERS["taps4_2d"]
    kw = dict(demodulate=demodulate, up=up, padding=padding, resample_filter=f, input_gain=gain,
              prenormalize=prenormalize, flip_weight=up == 1)
    for channels_last, fused in itertools.product([False, True], [True, False, None]):
        x = rand(batch, 4, 6, 6, seed=6, channels_last=channels_last)
        expected = modulated_conv2d_ref(x, w, s, **kw) * out_gain
        if b is not None:
            expected = expected + b.reshape(1, -1, 1, 1)
        got = modulated_conv2d(x, w, s, out_gain=out_gain, bias=b, fused=fused, **kw)
        torch.testing.assert_close(got, expected, **EXACT)


def test_modulated_conv2d_scales_activations_when_only_the_styles_are_optimised(monkeypatch):
    """fused=None: one sample modulates the weights, except when the styles need a gradient through a fixed weight
    (the inversion / editing loops): then the weight-gradient convolution is avoided by scaling the activations.
    Either way the value and the style gradient are the reference's."""
    import sys
    M = sys.modules["core.ops.modulated_conv2d"]   # the package exports a function of the same name
    seen = []
    real = M.conv2d_resample

    def spy(x, w, *a, **k):
        seen.append(k.get("groups", 1) if w.requires_grad or not torch.is_grad_enabled() else "fixed")
        return real(x, w, *a, **k)

    monkeypatch.setattr(M, "conv2d_resample", spy)
    x, w, s = rand(1, 4, 6, 6, seed=6), rand(5, 4, 3, 3, seed=1), rand(1, 4, seed=2)
    kw = dict(padding=1)
    with torch.no_grad():
        M.modulated_conv2d(x, w, s, **kw)
    styles = s.clone().requires_grad_(True)
    y = M.modulated_conv2d(x, w, styles, **kw)
    weight = w.clone().requires_grad_(True)
    M.modulated_conv2d(x, weight, styles, **kw)
    assert seen == [1, "fixed", 1]   # no grad: weights; styles only: the shared fixed weight; both: weights
    (g,) = torch.autograd.grad(y.square().sum(), styles)
    sr = s.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(modulated_conv2d_ref(x, w, sr, **kw).square().sum(), sr)
    torch.testing.assert_close(g, gr, **EXACT)


def test_modulated_conv2d_reference_is_equation():
    """The reference itself against eqs. 1-3 written out for one output pixel."""
    x, w, s = rand(1, 3, 3, 3), rand(2, 3, 3, 3, seed=1), rand(1, 3, seed=2)
    y = modulated_conv2d_ref(x, w, s, padding=0)
    wm = w * s.reshape(1, 3, 1, 1)
    wd = wm / (wm.square().sum([1, 2, 3], keepdim=True) + 1e-8).sqrt()
    torch.testing.assert_close(y[0, :, 0, 0], (wd * x[0:1]).sum([1, 2, 3]), **EXACT)


# ------------------------------------------------------------------------------------------------
# bias_act


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("dim,shape", [(1, (2, 5, 3, 4)), (1, (3, 5)), (0, (5, 2))])
@pytest.mark.parametrize("alpha,gain,clamp", [(None, None, None), (0.1, 2.0, 0.5), (None, 1.0, 1.0)])
def test_bias_act_matches_reference_and_definition(act, dim, shape, alpha, gain, clamp):
    x = rand(*shape)
    b = rand(shape[dim], seed=1)
    expected = bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    # The definition, written out independently.
    spec = ACTIVATIONS[act]
    a = spec.def_alpha if alpha is None else alpha
    g = spec.def_gain if gain is None else gain
    y = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    y = {"linear": y, "relu": y.clamp(min=0), "lrelu": torch.where(y >= 0, y, y * a),
         "tanh": torch.tanh(y), "sigmoid": torch.sigmoid(y)}[act] * g
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    torch.testing.assert_close(expected, y, **EXACT)
    got = bias_act(x.clone(), b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, inplace=True)
    torch.testing.assert_close(got, expected, **EXACT)


def test_bias_act_inplace_leaves_grad_inputs_untouched():
    x = rand(2, 3, 4, 4, requires_grad=True)
    b = rand(3, seed=1, requires_grad=True)
    before = x.detach().clone()
    y = bias_act(x, b, act="lrelu", clamp=0.5, inplace=True)
    assert y.data_ptr() != x.data_ptr()
    torch.testing.assert_close(x.detach(), before, rtol=0, atol=0)
    y.sum().backward()
    assert x.grad is not None and b.grad is not None
    # Without grad the same call works in place (that is the point of the flag).
    z = rand(2, 3, 4, 4)
    with torch.no_grad():
        assert bias_act(z, b.detach(), act="lrelu", inplace=True).data_ptr() == z.data_ptr()


# ------------------------------------------------------------------------------------------------
# filtered_lrelu


def _lowpass(taps, cutoff, fs, radial=False):
    f = design_lowpass_filter(taps, cutoff, cutoff, fs, radial=radial)
    return None if f is None else f.to(torch.float64)


FLRELU_CASES = [
    # up, down, fu taps, fd taps, radial, padding, clamp
    (2, 2, 12, 12, False, [11, 10, 11, 10], None),
    (2, 2, 12, 12, False, [10, 9, 8, 7], 0.3),
    (4, 2, 24, 12, False, [15, 14, 15, 14], 1.0),
    (2, 4, 12, 24, True, [20, 21, 20, 21], None),
    (1, 1, 1, 1, False, 0, 0.5),            # ToRGB-like: no resampling
    (2, 1, 12, 1, False, [6, 5, 6, 5], None),
    (1, 2, 1, 12, False, [5, 6, 5, 6], None),
]


@pytest.mark.parametrize("up,down,fu_taps,fd_taps,radial,padding,clamp", FLRELU_CASES)
def test_filtered_lrelu_matches_reference(up, down, fu_taps, fd_taps, radial, padding, clamp):
    fu = _lowpass(fu_taps, 2.0, 8.0 * up)
    fd = _lowpass(fd_taps, 2.0, 8.0 * up, radial=radial)
    b = rand(5, seed=1)
    for channels_last in (False, True):
        x = rand(2, 5, 9, 9, channels_last=channels_last)
        kw = dict(up=up, down=down, padding=padding, gain=math.sqrt(2), slope=0.2, clamp=clamp)
        expected = filtered_lrelu_ref(x, fu, fd, b, **kw)
        torch.testing.assert_close(filtered_lrelu(x, fu, fd, b, **kw), expected, **EXACT)
        # Chunked over channels (1 and 2 channels at a time), with and without autograd.
        for chunk in (1, 2 * 20 * 20):
            torch.testing.assert_close(filtered_lrelu(x, fu, fd, b, chunk_elements=chunk, **kw), expected, **EXACT)
            xg = x.detach().clone().requires_grad_(True)
            torch.testing.assert_close(filtered_lrelu(xg, fu, fd, b, chunk_elements=chunk, **kw), expected, **EXACT)


def test_filtered_lrelu_chunking_keeps_gradients():
    fu, fd = _lowpass(12, 2.0, 16.0), _lowpass(12, 2.0, 16.0)
    kw = dict(up=2, down=2, padding=[11, 10, 11, 10], clamp=0.5)
    grads = []
    for chunk in (1, 2 ** 26):
        x = rand(1, 4, 8, 8, requires_grad=True)
        b = rand(4, seed=1, requires_grad=True)
        (filtered_lrelu(x, fu, fd, b, chunk_elements=chunk, **kw) * rand(1, 4, 8, 8, seed=2)).sum().backward()
        grads.append((x.grad, b.grad))
    torch.testing.assert_close(grads[0], grads[1], **EXACT)


# ------------------------------------------------------------------------------------------------
# Gradients: autograd through the fast paths equals autograd through the references, and gradcheck.


def _grads(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    weight = rand(*out.shape, seed=99)
    (out * weight).sum().backward()
    return [t.grad for t in inputs]


@pytest.mark.parametrize("kw", [dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1),
                                dict(up=2, down=2, padding=[1, 2, 2, 1]), dict(padding=[1, 2, 0, 1])])
def test_upfirdn2d_gradients(kw):
    f = FILTERS["taps4_2d"]
    x = rand(1, 2, 5, 4, channels_last=True)
    torch.testing.assert_close(_grads(lambda t: upfirdn2d(t, f, **kw), x),
                               _grads(lambda t: upfirdn2d_ref(t, f, **kw), x), **EXACT)
    assert torch.autograd.gradcheck(lambda t: upfirdn2d(t, FILTERS["taps4_sep"], **kw), [x.clone().requires_grad_()])


@pytest.mark.parametrize("up,down,kernel,padding", [(1, 1, 3, 1), (2, 1, 3, 1), (1, 2, 3, 1), (2, 1, 1, 0)])
def test_conv2d_resample_gradients(up, down, kernel, padding):
    f = FILTERS["taps4_2d"]
    x, w = rand(1, 2, 4, 4, channels_last=True), rand(3, 2, kernel, kernel, seed=1)
    kw = dict(up=up, down=down, padding=padding, flip_weight=up == 1)
    torch.testing.assert_close(_grads(lambda a, b: conv2d_resample(a, b, f, **kw), x, w),
                               _grads(lambda a, b: conv2d_resample_ref(a, b, f, **kw), x, w), **EXACT)
    assert torch.autograd.gradcheck(lambda a, b: conv2d_resample(a, b, f, **kw),
                                    [x.clone().requires_grad_(), w.clone().requires_grad_()])


@pytest.mark.parametrize("up,down,padding,kernel", [(1, 1, 1, 3), (1, 1, [1, 2, 0, 1], 3), (1, 2, 1, 3),
                                                     (2, 1, 1, 3), (2, 1, 0, 1)])
def test_conv2d_resample_weight_gradient_on_nchw_copies_matches_autograd(up, down, padding, kernel):
    """float32 channels-last on the CPU with a weight that needs a gradient takes `_WeightGradNCHW` (the weight
    gradient on NCHW copies): values, both gradients and a second-order gradient as plain autograd's."""
    import sys
    M = sys.modules["core.ops.conv2d_resample"]
    f = FILTERS["taps4_2d"].float()
    x = rand(1, 6, 9, 9, seed=1).float().contiguous(memory_format=torch.channels_last)
    w = rand(5, 6, kernel, kernel, seed=2).float()
    b = rand(5, seed=3).float()
    kw = dict(up=up, down=down, padding=padding, bias=b)
    calls = []
    real = M._WeightGradNCHW.apply
    fast = lambda x_, w_: M.conv2d_resample(x_, w_, f, **kw)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(M._WeightGradNCHW, "apply", lambda *a: calls.append(1) or real(*a))
        got = _grads(fast, x, w)
        assert calls   # the NCHW weight-gradient path ran
        xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        (gw,) = torch.autograd.grad(fast(xg, wg).square().sum(), wg, create_graph=True)
        (gx2,) = torch.autograd.grad(gw.square().sum(), xg)
    plain = lambda x_, w_: M.conv2d_resample(x_.contiguous(), w_, f, **kw)  # noqa: E731  NCHW: F.conv2d
    want = _grads(plain, x, w)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    (gw_ref,) = torch.autograd.grad(plain(xg, wg).square().sum(), wg, create_graph=True)
    (gx2_ref,) = torch.autograd.grad(gw_ref.square().sum(), xg)
    torch.testing.assert_close(gx2, gx2_ref, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("batch", [1, 2])
def test_modulated_conv2d_gradients(fused, up, batch):
    f = FILTERS["taps4_2d"]
    x, w, s = rand(batch, 3, 4, 4, channels_last=True), rand(2, 3, 3, 3, seed=1), rand(batch, 3, seed=2)
    b = rand(2, seed=3)
    kw = dict(up=up, padding=1, resample_filter=f, flip_weight=up == 1)
    fast = lambda x_, w_, s_, b_: modulated_conv2d(x_, w_, s_, fused=fused, out_gain=1.5, bias=b_, **kw)  # noqa: E731
    ref = lambda x_, w_, s_, b_: modulated_conv2d_ref(x_, w_, s_, **kw) * 1.5 + b_.reshape(1, -1, 1, 1)  # noqa: E731
    torch.testing.assert_close(_grads(fast, x, w, s, b), _grads(ref, x, w, s, b), **EXACT)
    assert torch.autograd.gradcheck(fast, [t.clone().requires_grad_() for t in (x, w, s, b)])


def test_filtered_lrelu_gradients():
    fu, fd = _lowpass(12, 2.0, 16.0), _lowpass(12, 2.0, 16.0)
    kw = dict(up=2, down=2, padding=[11, 10, 11, 10], clamp=0.5)
    x, b = rand(1, 2, 5, 5, channels_last=True), rand(2, seed=1)
    torch.testing.assert_close(_grads(lambda x_, b_: filtered_lrelu(x_, fu, fd, b_, **kw), x, b),
                               _grads(lambda x_, b_: filtered_lrelu_ref(x_, fu, fd, b_, **kw), x, b), **EXACT)
    assert torch.autograd.gradcheck(lambda x_, b_: filtered_lrelu(x_, fu, fd, b_, chunk_elements=30, **kw),
                                    [x.clone().requires_grad_(), b.clone().requires_grad_()])


@pytest.mark.parametrize("act", ["linear", "lrelu", "relu", "tanh"])
def test_bias_act_gradients(act):
    x, b = rand(2, 3, 4), rand(3, seed=1)
    torch.testing.assert_close(_grads(lambda x_, b_: bias_act(x_, b_, act=act, clamp=0.8, inplace=True), x, b),
                               _grads(lambda x_, b_: bias_act_ref(x_, b_, act=act, clamp=0.8), x, b), **EXACT)
    assert torch.autograd.gradcheck(lambda x_, b_: bias_act(x_, b_, act=act, inplace=True),
                                    [x.clone().requires_grad_(), b.clone().requires_grad_()])


# ------------------------------------------------------------------------------------------------
# design_lowpass_filter (StyleGAN3)


@pytest.mark.slow
@pytest.mark.parametrize("numtaps,cutoff,width,fs", [(12, 2.0, 2.17, 16.0), (24, 11.3, 8.0, 64.0),
                                                      (6, 45.2, 30.0, 256.0), (13, 3.0, 1.0, 20.0)])
def test_design_lowpass_filter_equals_scipy_firwin(numtaps, cutoff, width, fs):
    signal = pytest.importorskip("scipy.signal")
    expected = signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
    got = design_lowpass_filter(numtaps, cutoff, width, fs)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-7)


def _bessel_j1(x: np.ndarray) -> np.ndarray:
    """J1(x) = (1/pi) * integral_0^pi cos(t - x sin t) dt (Bessel's integral), by the trapezoid rule,
    which converges geometrically for this periodic integrand."""
    t = np.linspace(0, np.pi, 4001)
    vals = np.cos(t[None, :] - np.asarray(x).reshape(-1, 1) * np.sin(t)[None, :])
    return np.trapezoid(vals, t, axis=1).reshape(np.shape(x)) / np.pi


def _kaiser_beta(numtaps, width_rel):
    atten = 2.285 * (numtaps - 1) * np.pi * width_rel + 7.95  # Kaiser's attenuation estimate (dB)
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


@pytest.mark.slow
@pytest.mark.parametrize("numtaps,cutoff,width,fs", [(12, 2.0, 2.17, 16.0), (24, 11.3, 8.0, 64.0),
                                                      (6, 45.2, 30.0, 256.0)])
def test_design_lowpass_filter_radial_is_windowed_jinc(numtaps, cutoff, width, fs):
    """Karras et al. 2021, appendix C / NVIDIA's code: f(r) = J1(2 pi f_c r) / (pi r), times the outer
    product of the Kaiser window, normalised to unit sum."""
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = _bessel_j1(2 * cutoff * np.pi * r) / (np.pi * r)
    window = np.kaiser(numtaps, _kaiser_beta(numtaps, width / (fs / 2)))
    f = f * np.outer(window, window)
    f /= f.sum()
    got = design_lowpass_filter(numtaps, cutoff, width, fs, radial=True)
    assert got.shape == (numtaps, numtaps)
    np.testing.assert_allclose(got.numpy(), f, rtol=1e-5, atol=1e-7)
    if numtaps > 1:
        try:
            import scipy.signal
            import scipy.special
        except ImportError:
            return
        beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
        assert beta == pytest.approx(_kaiser_beta(numtaps, width / (fs / 2)))
        np.testing.assert_allclose(_bessel_j1(np.linspace(0, 20, 50)), scipy.special.j1(np.linspace(0, 20, 50)),
                                   atol=1e-12)


def test_design_lowpass_filter_identity():
    assert design_lowpass_filter(1, 2.0, 1.0, 8.0) is None
