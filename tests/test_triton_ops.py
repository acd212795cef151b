"""Triton kernels (core/ops/triton_resample.py) against the pure-PyTorch `_ref` ops.

Without CUDA the kernels run on CPU tensors under TRITON_INTERPRET=1 (the interpreter runs each
program in numpy, so tensors stay tiny); with CUDA they run compiled on the GPU. triton decides at
`@triton.jit` time, for its own library functions too, whether a kernel is interpreted, so the
variable is set here, at collection, before anything imports triton. If something imported triton
earlier in this process, the tests rerun this file in a fresh process instead.
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KERNEL_MODULE = "core.ops.triton_resample"
_old_env = os.environ.get("TRITON_INTERPRET")
_imported_before = "triton" in sys.modules
if DEVICE == "cpu" and not _imported_before:
    os.environ["TRITON_INTERPRET"] = "1"
try:
    pytest.importorskip("triton", reason="triton is not installed (PyTorch's Linux wheels ship it); the Triton "
                                         "kernels are optional and the PyTorch path needs no triton")
    from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
    import triton.language.standard as _tl_standard  # noqa: E402

    # True when this process can run the kernels: compiled on CUDA, or triton interpreted throughout.
    RUNNABLE = DEVICE == "cuda" or isinstance(_tl_standard.zeros, InterpretedFunction)
    kernels = importlib.import_module(KERNEL_MODULE) if RUNNABLE else None
finally:
    if _old_env is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _old_env

from core.networks.stylegan3 import design_lowpass_filter  # noqa: E402
from core.ops import (filtered_lrelu, filtered_lrelu_ref, ops_impl, setup_filter, upfirdn2d,  # noqa: E402
                      upfirdn2d_bias_act, upfirdn2d_bias_act_ref, upfirdn2d_ref)
from core.ops import impl as impl_mod  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_in_fresh_process_when_triton_was_imported_compiled():
    """triton was imported (compiled mode) before this file on a machine without CUDA: run it alone."""
    if RUNNABLE:
        pytest.skip("the kernels run in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.fixture(autouse=True)
def interpreter(request, monkeypatch):
    """The kernel module, with TRITON_INTERPRET=1 on CPU while the test runs."""
    if request.node.name.startswith("test_in_fresh_process"):
        yield None
        return
    if not RUNNABLE:
        pytest.skip("triton was imported compiled before this file; test_in_fresh_process runs these")
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(impl_mod, "_kernels", kernels)
    monkeypatch.setattr(impl_mod, "_import_error", None)
    yield kernels


@pytest.fixture
def launches(interpreter, monkeypatch):
    """Counts kernel launches, so a test knows the Triton path really ran."""
    calls = []
    real = interpreter.resample_act

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(interpreter, "resample_act", counted)
    return calls


def rand(*shape, seed=0, scale=1.0, requires_grad=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale
    return x.to(DEVICE).requires_grad_(requires_grad)


def dev(f):
    return None if f is None else f.to(DEVICE)


def taps(n, seed=0):
    """An asymmetric low-pass-ish filter of `n` taps (asymmetry catches flip mistakes)."""
    return setup_filter(torch.rand(n, generator=torch.Generator().manual_seed(seed)) + 0.2).to(DEVICE)


def close(a, b, what):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    a, b = a.detach(), b.detach()
    a, b = a.detach(), b.detach()
    tol = 2e-5 * max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {tol:.3g}"


def check_forward_backward(fn_ref, fn, inputs, what):
    """Forward values and gradients w.r.t. every input of `fn` (Triton) against `fn_ref` (reference)."""
    y_ref, y = fn_ref(*inputs), fn(*inputs)
    close(y, y_ref, f"{what} forward")
    gy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    wrt = [t for t in inputs if t is not None]
    for g, g_ref, name in zip(torch.autograd.grad(y, wrt, gy), torch.autograd.grad(y_ref, wrt, gy), "xb"):
        close(g, g_ref, f"{what} d/d{name}")


# ---------------------------------------------------------------- filtered_lrelu

RADIAL_12 = dev(design_lowpass_filter(12, 10.0, 4.0, 32.0, radial=True))  # StyleGAN3-R's 2-D down filter

# (up, down, fu, fd, padding, gain, slope, clamp, flip_filter, bias)
FLRELU_CASES = {
    "up2_down2_even": (2, 2, taps(12), taps(12, 1), [9, 8, 9, 8], math.sqrt(2), 0.2, 0.5, False, True),
    "up2_down2_flip": (2, 2, taps(12), taps(12, 1), [9, 8, 9, 8], math.sqrt(2), 0.2, 0.5, True, True),
    "up4_down2_asym": (4, 2, taps(24), taps(12, 1), [10, 8, 9, 11], math.sqrt(2), 0.2, None, False, True),
    "up2_down2_odd_taps": (2, 2, taps(5), taps(7, 1), [3, 2, 4, 1], 2.0, 0.1, 0.8, True, True),
    "up2_down2_radial": (2, 2, taps(12), RADIAL_12, [9, 8, 9, 8], math.sqrt(2), 0.2, 0.5, False, True),
    "up1_down2": (1, 2, None, taps(6, 1), [0, 1, 2, 0], math.sqrt(2), 0.2, None, False, False),
    "up2_down1": (2, 1, taps(4), None, [2, 1, 1, 2], 1.5, 0.3, 1.0, False, True),
    "up4_down4": (4, 4, taps(8), taps(9, 1), [5, 4, 5, 4], math.sqrt(2), 0.2, None, True, True),
    "torgb": (1, 1, None, None, 0, 1.0, 1.0, 0.6, False, True),
}


@pytest.mark.parametrize("case", FLRELU_CASES)
def test_filtered_lrelu_matches_reference(case, launches):
    up, down, fu, fd, padding, gain, slope, clamp, flip, with_bias = FLRELU_CASES[case]
    x = rand(2, 2, 7, 6, seed=1)
    b = rand(2, seed=2) if with_bias else None
    kw = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip)
    check_forward_backward(lambda x, b: filtered_lrelu_ref(x, fu, fd, b, **kw),
                           lambda x, b: filtered_lrelu(x, fu, fd, b, impl="triton", **kw), (x, b), case)
    assert len(launches) == 1


@pytest.mark.parametrize("layer", ["L0_36_32", "L5_52_32", "L13_32_16", "L14_32_3"])
def test_filtered_lrelu_stylegan3_layers(layer, launches, G3):
    """The exact filters, factors, padding, gain, slope and clamp of a StyleGAN3 generator's layers."""
    lay = getattr(G3.synthesis, layer)
    kw = dict(up=lay.up_factor, down=lay.down_factor, padding=lay.padding, gain=1 if lay.is_torgb else math.sqrt(2),
              slope=1 if lay.is_torgb else 0.2, clamp=lay.conv_clamp)
    x = rand(1, 1, *lay.in_hw, seed=3, scale=200.0)  # large enough that the +-256 clamp acts
    b = rand(1, seed=4)
    fu, fd = dev(lay.up_filter), dev(lay.down_filter)
    check_forward_backward(lambda x, b: filtered_lrelu_ref(x, fu, fd, b, **kw),
                           lambda x, b: filtered_lrelu(x, fu, fd, b, impl="triton", **kw), (x, b), layer)
    assert len(launches) == 1


def test_recompute_backward_in_channel_chunks(launches):
    """RecomputeGrad (the backward of the upfirdn2d kernels) recomputes the PyTorch op one chunk at a time."""
    from core.ops.impl import RecomputeGrad

    f = taps(5)
    kw = dict(up=2, padding=[3, 2, 2, 3], gain=4.0, act="lrelu", act_gain=1.4, clamp=0.5)
    chunks = []

    def ref(xs, bs):
        chunks.append(xs.shape[1])
        return upfirdn2d_bias_act(xs, f, bs, impl="torch", **kw)

    x, b = rand(1, 3, 5, 5, seed=5), rand(3, seed=6)
    check_forward_backward(
        lambda x, b: upfirdn2d_bias_act_ref(x, f, b, **kw),
        lambda x, b: RecomputeGrad.apply(lambda xs, bs: upfirdn2d_bias_act(xs, f, bs, impl="triton", **kw), ref,
                                         1, x, b), (x, b), "chunked")
    assert chunks == [1, 1, 1] and len(launches) == 1


def test_filtered_lrelu_grad_wrt_input_only(launches):
    """Inversion differentiates w.r.t. the input only (bias a buffer / no grad)."""
    fu, fd = taps(12), taps(12, 1)
    x, b = rand(1, 2, 5, 5, seed=5), rand(2, seed=6, requires_grad=False)
    kw = dict(up=2, down=2, padding=[9, 8, 9, 8], clamp=0.5)
    (g,) = torch.autograd.grad(filtered_lrelu(x, fu, fd, b, impl="triton", **kw).sum(), x)
    (g_ref,) = torch.autograd.grad(filtered_lrelu_ref(x, fu, fd, b, **kw).sum(), x)
    close(g, g_ref, "d/dx")


# ---------------------------------------------------------------- upfirdn2d and upfirdn2d + bias_act

F4 = dev(setup_filter([1, 3, 3, 1]))  # StyleGAN2's resample filter: 2-D outer product, rank 1

# (f, up, down, padding, gain, flip_filter, act, alpha, act_gain, clamp)
UFD_CASES = {
    "sg2_upsample2d": (F4, 2, 1, [2, 1, 2, 1], 4.0, False, "linear", None, None, None),
    "sg2_conv_up_lrelu": (F4, 1, 1, [1, 2, 1, 2], 4.0, False, "lrelu", None, math.sqrt(2), 0.9),
    "sg2_downsample2d": (F4, 1, 2, [1, 1, 1, 1], 1.0, False, "lrelu", 0.2, 1.0, None),
    "sep8_up4_relu_flip": (taps(8), 4, 1, [4, 3, 5, 2], 16.0, True, "relu", None, 2.0, 1.5),
    "odd3_2d_down4": (dev(setup_filter(torch.tensor([[1.0, 2.0, 0.5], [0.3, 3.0, 1.0], [2.0, 1.0, 1.0]]))), 1, 4,
                      [1, 1, 2, 0], 1.0, True, "linear", None, None, 0.7),
    "none_crop": (None, 1, 1, [-1, 2, 0, -1], 3.0, False, "lrelu", 0.2, math.sqrt(2), None),
}


@pytest.mark.parametrize("case", UFD_CASES)
def test_upfirdn2d_bias_act_matches_reference(case, launches):
    f, up, down, padding, gain, flip, act, alpha, act_gain, clamp = UFD_CASES[case]
    x, b = rand(1, 2, 7, 9, seed=8), rand(2, seed=9)
    kw = dict(up=up, down=down, padding=padding, gain=gain, flip_filter=flip, act=act, alpha=alpha,
              act_gain=act_gain, clamp=clamp)
    check_forward_backward(lambda x, b: upfirdn2d_bias_act_ref(x, f, b, **kw),
                           lambda x, b: upfirdn2d_bias_act(x, f, b, impl="triton", **kw), (x, b), case)
    assert len(launches) == 1


@pytest.mark.parametrize("case", ["sg2_upsample2d", "sep8_up4_relu_flip", "odd3_2d_down4"])
def test_upfirdn2d_matches_reference(case, launches):
    f, up, down, padding, gain, flip = UFD_CASES[case][:6]
    x = rand(1, 2, 6, 5, seed=10)
    kw = dict(up=up, down=down, padding=padding, gain=gain, flip_filter=flip)
    check_forward_backward(lambda x: upfirdn2d_ref(x, f, **kw), lambda x: upfirdn2d(x, f, impl="triton", **kw),
                           (x,), case)
    assert len(launches) == 1


# ---------------------------------------------------------------- the switch

def test_default_and_auto_on_cpu_are_todays_path_exactly(launches):
    fu, fd = taps(12), taps(12, 1)
    x, b = rand(1, 2, 5, 5, seed=11, requires_grad=False), rand(2, seed=12, requires_grad=False)
    kw = dict(up=2, down=2, padding=[9, 8, 9, 8], clamp=0.5)
    today = filtered_lrelu(x, fu, fd, b, impl="torch", **kw)
    assert impl_mod.current_impl() == "torch"
    assert torch.equal(filtered_lrelu(x, fu, fd, b, **kw), today)
    with ops_impl("auto"):  # auto = Triton on CUDA tensors only
        assert torch.equal(filtered_lrelu(x, fu, fd, b, **kw), today)
        assert torch.equal(upfirdn2d(x, F4, up=2, padding=[2, 1, 2, 1]),
                           upfirdn2d(x, F4, up=2, padding=[2, 1, 2, 1], impl="torch"))
    assert launches == []


def test_context_switch_runs_the_kernel_and_restores(launches):
    fu, fd = taps(12), taps(12, 1)
    x = rand(1, 1, 5, 5, seed=13, requires_grad=False)
    with ops_impl("triton"):
        y = filtered_lrelu(x, fu, fd, None, up=2, down=2, padding=[9, 8, 9, 8])
        assert impl_mod.current_impl() == "triton"
    assert len(launches) == 1 and impl_mod.current_impl() == "torch"
    close(y, filtered_lrelu_ref(x, fu, fd, None, up=2, down=2, padding=[9, 8, 9, 8]), "context")
    assert torch.equal(filtered_lrelu(x, fu, fd, None, up=2, down=2, padding=[9, 8, 9, 8], impl="triton"), y)


def test_bad_impl_is_refused():
    with pytest.raises(ValueError, match="impl must be one of 'auto', 'triton', 'torch', got 'cuda'"):
        filtered_lrelu(rand(1, 1, 4, 4), None, None, impl="cuda")
    with pytest.raises(ValueError, match="impl must be one of"):
        with ops_impl("fast"):
            pass


def test_unsupported_arguments_fall_back_with_one_warning(launches, monkeypatch, caplog):
    monkeypatch.setattr(impl_mod, "_warned", set())
    x, b = rand(1, 2, 5, 5, seed=14, requires_grad=False), rand(2, seed=15, requires_grad=False)
    with caplog.at_level(logging.WARNING, logger="stylegan_studio.ops"):
        for _ in range(2):
            y = upfirdn2d_bias_act(x, F4, b, padding=1, act="tanh", impl="triton")
        z = upfirdn2d(x, F4, up=[2, 1], padding=1, impl="triton")
    assert torch.equal(y, upfirdn2d_bias_act(x, F4, b, padding=1, act="tanh", impl="torch"))
    assert torch.equal(z, upfirdn2d(x, F4, up=[2, 1], padding=1, impl="torch"))
    assert launches == []
    messages = [r.getMessage() for r in caplog.records]
    assert sum("act='tanh'" in m for m in messages) == 1, messages
    assert sum("different x and y factors" in m for m in messages) == 1, messages


def test_cpu_tensor_without_interpreter_falls_back(launches, monkeypatch, caplog):
    monkeypatch.setattr(impl_mod, "_warned", set())
    monkeypatch.delenv("TRITON_INTERPRET")
    x = rand(1, 1, 5, 5, seed=16, requires_grad=False)
    with caplog.at_level(logging.WARNING, logger="stylegan_studio.ops"):
        y = upfirdn2d(x, F4, up=2, padding=[2, 1, 2, 1], impl="triton")
    assert torch.equal(y, upfirdn2d(x, F4, up=2, padding=[2, 1, 2, 1], impl="torch"))
    assert launches == [] and "TRITON_INTERPRET=1" in caplog.text


def test_stylegan3_layer_runs_the_kernel_under_the_switch(G3, launches):
    """A generator layer picks the kernel up through `ops_impl`, with the same result as today's path."""
    lay = copy.deepcopy(G3.synthesis.L14_32_3).to(DEVICE)  # ToRGB: 3 channels, cheap under the interpreter
    x = rand(1, lay.in_channels, *lay.in_hw, seed=17, requires_grad=False)
    w = rand(1, G3.w_dim, seed=18, requires_grad=False)
    with torch.no_grad():
        today = lay(x, w)
        with ops_impl("triton"):
            fused = lay(x, w)
    assert len(launches) == 1
    close(fused, today, "ToRGB layer")


def test_channels_last_stays_channels_last(launches):
    fu, fd = taps(4), taps(4, 1)
    x = rand(1, 3, 5, 5, seed=19, requires_grad=False).contiguous(memory_format=torch.channels_last)
    y = filtered_lrelu(x, fu, fd, None, up=2, down=2, padding=[3, 2, 3, 2], impl="triton")
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    close(y, filtered_lrelu_ref(x, fu, fd, None, up=2, down=2, padding=[3, 2, 3, 2]), "channels-last")


def test_filter_taps_are_prepared_once_per_filter(interpreter):
    f = taps(6)
    a = interpreter.device_terms(f, flip_filter=False, gain=4.0, device=torch.device(DEVICE))
    assert interpreter.device_terms(f, flip_filter=False, gain=4.0, device=torch.device(DEVICE))[0] is a[0]
    assert interpreter.device_terms(f, flip_filter=True, gain=4.0, device=torch.device(DEVICE))[0] is not a[0]
    with torch.no_grad():
        f.mul_(2)  # an in-place change is a new version: prepared again
    b = interpreter.device_terms(f, flip_filter=False, gain=4.0, device=torch.device(DEVICE))
    torch.testing.assert_close(b[0] * b[1][:, :1], a[0] * a[1][:, :1] * 2)
