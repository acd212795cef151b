"""Speed-up switches (core/accel.py): every switch off is today's path bit for bit; each switch against the plain path."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from core import accel
from core.accel import AUTOCAST_TOLERANCE, AccelConfig, set_accel, tf32_mode

from conftest import tiny_generator


@pytest.fixture(scope="module", params=["stylegan2", "stylegan3"])
def G(request):
    return tiny_generator(request.param)


@pytest.fixture(autouse=True)
def plain_after(request):
    """Every test leaves the module-scoped generator on the plain path."""
    yield
    if "G" in request.fixturenames:
        set_accel(request.getfixturevalue("G"))


def latents(G, n=2, seed=1):
    return G.mapping(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)), None)


def test_defaults_are_the_plain_path(G):
    assert G.synthesis.accel == AccelConfig()
    assert not AccelConfig().wraps_forward and AccelConfig().describe() == "plain"
    ws = latents(G)
    expected = G.synthesis.run(ws).img.contiguous()      # the forward as it was before the switches existed
    assert torch.equal(G.synthesis(ws), expected)
    # Switches explicitly off are the same object of settings, the same code path, the same bits.
    set_accel(G, compile="off", autocast="off", channels_last=True, tf32=None)
    assert not G.synthesis.accel.wraps_forward
    assert torch.equal(G.synthesis(ws), expected)


def test_settings_are_checked():
    for bad in (dict(compile="fast"), dict(autocast="fp16"), dict(channels_last="yes"), dict(tf32=1.0),
                dict(backend="cudagraphs"), dict(kernels="cuda")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AccelConfig(**bad)
    with pytest.raises(TypeError, match="set_accel needs a core Generator"):
        set_accel(torch.nn.Linear(2, 2), compile="default")
    assert AccelConfig(compile="reduce-overhead", tf32=True).describe() == "compile=reduce-overhead, tf32=True"


def test_kernels_switch_runs_the_ops_with_that_impl(G, monkeypatch):
    from core.ops import impl as ops_impl

    seen = []
    run = type(G.synthesis).run

    def spy(self, *args, **kwargs):
        seen.append(ops_impl.current_impl())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(type(G.synthesis), "run", spy)
    ws = latents(G)
    plain = G.synthesis(ws)
    cfg = set_accel(G, kernels="auto")      # Triton on CUDA tensors; these are CPU tensors: the PyTorch path
    assert cfg.wraps_forward and cfg.describe() == "kernels=auto"
    assert torch.equal(G.synthesis(ws), plain)
    assert seen == ["torch", "auto"] and ops_impl.current_impl() == "torch"   # restored after the render


def test_set_accel_on_generator_or_synthesis_and_copies_inherit(G):
    cfg = set_accel(G.synthesis, channels_last=False)
    assert G.synthesis.accel is cfg and not cfg.channels_last
    assert copy.deepcopy(G).synthesis.accel == cfg      # editing methods' copies render the same way
    assert set_accel(G, cfg, autocast="bfloat16") == AccelConfig(channels_last=False, autocast="bfloat16")
    assert set_accel(G) == AccelConfig()


def test_channels_last_switch(G):
    ws = latents(G)
    expected = G.synthesis(ws)
    set_accel(G, channels_last=False)
    seen = []
    convs = [m for m in G.synthesis.modules() if hasattr(m, "weight") and getattr(m, "weight").ndim == 4]
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for m in convs]
    try:
        out = G.synthesis(ws)
    finally:
        for h in hooks:
            h.remove()
    four_d = [x for x in seen if x.ndim == 4 and x.shape[1] > 1 and x.shape[2] > 1]
    assert four_d and all(x.is_contiguous() for x in four_d)   # NCHW activations throughout
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))


def test_autocast_bfloat16_within_stated_tolerance(G):
    ws = latents(G, n=1)   # bfloat16 convolutions are slow on CPUs without native bf16
    expected = G.synthesis(ws)
    set_accel(G, autocast="bfloat16")
    out = G.synthesis(ws)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    err = float((out - expected).abs().max()) / float(expected.abs().max())
    assert 0 < err <= AUTOCAST_TOLERANCE["bfloat16"], err   # it did run in bfloat16, and stays within the bound
    set_accel(G)
    assert torch.equal(G.synthesis(ws), expected)           # switched off again: the same bits


def test_tf32_mode_restores_the_process_settings():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for wanted in (True, False):
        with tf32_mode(wanted):
            assert torch.backends.cuda.matmul.allow_tf32 is wanted and torch.backends.cudnn.allow_tf32 is wanted
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(RuntimeError):
        with tf32_mode(not before[0]):
            raise RuntimeError("boom")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with tf32_mode(None):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_tf32_switch_is_exact_on_cpu(G):
    ws = latents(G)
    expected = G.synthesis(ws)
    set_accel(G, tf32=True)
    assert G.synthesis.accel.wraps_forward
    assert torch.equal(G.synthesis(ws), expected)   # TF32 only exists on CUDA


def test_compile_failure_falls_back_with_one_warning(G, monkeypatch, caplog):
    def broken(mode, backend):
        def fn(*args):
            raise RuntimeError("inductor: no C++ compiler")
        return fn

    monkeypatch.setattr(accel, "compiled_forward", broken)
    ws = latents(G)
    expected = G.synthesis(ws)
    work = copy.deepcopy(G)
    set_accel(work, compile="default")
    with caplog.at_level("WARNING", logger="stylegan_studio"):
        assert torch.equal(work.synthesis(ws), expected)
        assert torch.equal(work.synthesis(ws), expected)
    warnings = [r for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0].getMessage()
    # A user error is the plain path's own error, not hidden behind the compiler.
    with pytest.raises(Exception) as info:
        work.synthesis(ws[:, :1])
    assert "compile" not in str(info.value)


@pytest.mark.slow
def test_compiled_capture_matches_plain_forward_and_gradients(G, mode="default"):
    """Dynamo's capture of the whole forward (aot_eager: the graphs inductor would get, without code generation),
    forward and backward, and a new batch size (a recompile, never a wrong graph). ('reduce-overhead' is the same
    capture; its CUDA-graph part runs on CUDA only.)"""
    ws = latents(G, n=2)
    expected = G.synthesis(ws)
    w = ws.clone().requires_grad_(True)
    G.synthesis(w).square().sum().backward()
    grad = w.grad.clone()

    set_accel(G, compile=mode, backend="aot_eager")
    assert torch.equal(G.synthesis(ws), expected)
    w.grad = None
    G.synthesis(w).square().sum().backward()
    assert torch.equal(w.grad, grad)
    ws3 = latents(G, n=3, seed=2)
    out3 = G.synthesis(ws3)
    # The compiled graph ran: a capture failure would have fallen back to the plain path (equal by construction).
    assert not G.synthesis.__dict__.get("accel_failed"), G.synthesis.__dict__.get("accel_failed")
    set_accel(G)
    assert torch.equal(out3, G.synthesis(ws3))


@pytest.mark.skipif(os.environ.get("SGS_INDUCTOR_TESTS") != "1",
                    reason="inductor code generation takes minutes on CPU; set SGS_INDUCTOR_TESTS=1")
def test_inductor_within_float_rounding(G):
    ws = latents(G)
    expected = G.synthesis(ws)
    set_accel(G, compile="default")
    out = G.synthesis(ws)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
