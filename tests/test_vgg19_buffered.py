"""The buffered VGG-19 (Neural Style's CPU path) against autograd through `VGG19.forward`, the specification: the
same loss and input gradient for every kind of layer set (pre- and post-ReLU maps, pools, max and average pooling,
odd sizes), buffers reused across calls without stale state, the gradient sinks of `gram_matrix` / `content_loss`,
and style transfer giving the same run on either path."""

from __future__ import annotations

import pytest
import torch

from core.edits import neural_style as NS
from core.losses import style as S
from core.losses import vgg19 as V
from core.losses import vgg19_buffered as B

pytestmark = pytest.mark.skipif(not B.BufferedVGG.supported(V.random_vgg19(0), torch.zeros(1), "max"),
                                reason="no oneDNN in-place convolution in this torch build")


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vgg():
    return V.random_vgg19(seed=0)


def _loss(feats, sinks, weights, targets, use_sinks=True):
    """A loss touching every layer in several ways: a random linear term, Gram distances (through the sink when
    given) and a content MSE (sink) on the first layer."""
    sinks = sinks if use_sinks else {}
    total = 0
    for i, (name, f) in enumerate(feats.items()):
        total = total + (f * weights[name]).sum() * 1e-3
        g = S.gram_matrix(f, normalize="gatys", grad_into=sinks.get(name))
        total = total + S.gram_distance(g, targets[name], normalize="gatys").sum()
        if i == 0:
            total = total + NS.content_loss(f, torch.zeros_like(f), "mse", sinks.get(name)).sum()
    return total


LAYER_SETS = {
    "tutorial": (["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"], "max"),
    "gatys2016": (["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"], "avg"),
    "pools and both sides of a ReLU": (["conv1_2", "relu1_2", "pool1", "relu2_2", "pool3"], "max"),
    "one pool, average": (["pool2"], "avg"),
}


@pytest.fixture(scope="module")
def nets(vgg):
    return {"torchvision": vgg, "caffe": V.random_vgg19(seed=1, format="caffe"),
            "adain": V.random_vgg19(seed=2, format="adain")}


@pytest.mark.parametrize("case", list(LAYER_SETS))
@pytest.mark.parametrize("hw,fmt", [((32, 32), "torchvision"), ((37, 45), "torchvision"), ((37, 45), "adain"),
                                    ((33, 32), "caffe")])
def test_loss_and_input_gradient_equal_autograd(nets, case, hw, fmt):
    vgg = nets[fmt]
    layers, pooling = LAYER_SETS[case]
    x = rand(1, 3, *hw, seed=1)
    with torch.no_grad():
        ref_feats = vgg(x.flip(3), layers, pooling)   # targets from another image
    targets = {n: S.gram_matrix(f, normalize="gatys") for n, f in ref_feats.items()}
    weights = {n: torch.randn(f.shape, generator=torch.Generator().manual_seed(i))
               for i, (n, f) in enumerate(ref_feats.items())}

    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        ref = _loss(vgg(xr.contiguous(memory_format=torch.channels_last), layers, pooling), {}, weights, targets)
        (ref_grad,) = torch.autograd.grad(ref, xr)

    runner = B.BufferedVGG(vgg, layers, pooling)
    xb = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = B.VGGObjective.apply(vgg.preprocess(xb), runner, lambda f, s: _loss(f, s, weights, targets))
        (grad,) = torch.autograd.grad(loss * 2, xb)
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-5, atol=0)
    tol = dict(rtol=1e-4, atol=1e-5 * ref_grad.abs().max().item())
    torch.testing.assert_close(grad, 2 * ref_grad, **tol)

    h = vgg.preprocess(x)
    loss1, grad_h = runner.run(h, lambda f, s: _loss(f, s, weights, targets))
    assert grad_h.shape == h.shape and grad_h.is_contiguous(memory_format=torch.channels_last)
    # the loss without the sinks (every gradient through autograd) gives the same
    loss2, grad2 = runner.run(h, lambda f, s: _loss(f, s, weights, targets, use_sinks=False))
    torch.testing.assert_close(loss2, loss1, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad2, grad_h, rtol=1e-4, atol=1e-5 * grad_h.abs().max().item())


def _buffer_ptrs(runner) -> dict:
    return {k: [t.data_ptr() for t in (v if isinstance(v, list) else [v])] for k, v in runner._bufs.items()}


def test_buffers_are_reused_and_hold_no_stale_state(vgg):
    layers, pooling = LAYER_SETS["tutorial"]
    h1 = vgg.preprocess(rand(1, 3, 40, 40, seed=2)).contiguous(memory_format=torch.channels_last)
    h2 = vgg.preprocess(rand(1, 3, 40, 40, seed=3)).contiguous(memory_format=torch.channels_last)

    def loss_fn(f, s):
        return sum(S.gram_matrix(v, normalize="tutorial", grad_into=s[n]).square().sum() for n, v in f.items())

    runner = B.BufferedVGG(vgg, layers, pooling)
    runner.run(h1, loss_fn)
    runner.run(h1, loss_fn)   # both gradient buffers of each shape made
    ptrs = _buffer_ptrs(runner)
    loss, grad = runner.run(h2, loss_fn)
    assert _buffer_ptrs(runner) == ptrs   # nothing allocated anew
    fresh_loss, fresh_grad = B.BufferedVGG(vgg, layers, pooling).run(h2, loss_fn)
    assert torch.equal(loss, fresh_loss) and torch.equal(grad, fresh_grad)
    # the returned gradient is not a buffer: the next call leaves it alone
    kept = grad.clone()
    runner.run(h1, loss_fn)
    assert torch.equal(grad, kept)
    # another size: new buffers, right answer
    h3 = vgg.preprocess(rand(1, 3, 24, 30, seed=4)).contiguous(memory_format=torch.channels_last)
    loss3, grad3 = runner.run(h3, loss_fn)
    ref3 = B.BufferedVGG(vgg, layers, pooling).run(h3, loss_fn)
    assert torch.equal(loss3, ref3[0]) and torch.equal(grad3, ref3[1]) and grad3.shape == h3.shape


def test_supported_only_where_the_path_is_exact(vgg, monkeypatch):
    x = torch.zeros(1, 3, 8, 8)
    assert B.BufferedVGG.supported(vgg, x, "max") and B.BufferedVGG.supported(vgg, x, "avg")
    assert B.BufferedVGG.supported(V.random_vgg19(0, format="caffe"), x, "max")
    assert B.BufferedVGG.supported(V.random_vgg19(0, format="adain"), x, "max")       # reflection padding too
    assert not B.BufferedVGG.supported(V.random_vgg19(0).double(), x.double(), "max")  # oneDNN: float32 only
    assert not B.BufferedVGG.supported(V.random_vgg19(0), x.double(), "max")
    monkeypatch.setattr(B, "_POINTWISE", None)                                        # a build without it
    assert not B.BufferedVGG.supported(vgg, x, "max")


def test_gram_sink_adds_the_gradient_or_leaves_it_to_autograd():
    f0 = torch.randn(1, 6, 5, 7, generator=torch.Generator().manual_seed(5)).contiguous(
        memory_format=torch.channels_last)
    target = torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(6))

    def grads(sink, mask=None):
        f = f0.detach().requires_grad_(True)
        loss = S.gram_distance(S.gram_matrix(f, mask, normalize="gatys", grad_into=sink), target).sum()
        (g,) = torch.autograd.grad(loss, f, allow_unused=True)
        return g

    ref = grads(None)
    start = torch.randn(f0.shape, generator=torch.Generator().manual_seed(7)).contiguous(
        memory_format=torch.channels_last)
    sink = start.clone()
    assert grads(sink) is None                              # nothing through autograd ...
    torch.testing.assert_close(sink - start, ref)           # ... all of it added into the sink
    # with a mask, or a sink of another layout, the sink is not used
    m = (rand(1, 1, 5, 7, seed=8) > 0.5).float()
    sink = torch.zeros_like(f0)
    assert grads(sink, m) is not None and not sink.any()
    sink = torch.zeros(f0.shape)                            # contiguous, the features channels-last
    torch.testing.assert_close(grads(sink), ref)
    assert not sink.any()


@pytest.mark.parametrize("method", ["tutorial", "gatys2016", "multiscale"])
def test_style_transfer_is_the_same_run_on_either_path(vgg, method, monkeypatch):
    content, style = rand(1, 3, 40, 36, seed=1), rand(1, 3, 32, 32, seed=2)
    kw = dict(vgg=vgg, method=method, size=40, steps=4, scales=[32] if method == "multiscale" else None)
    calls = []
    real_run = B.BufferedVGG.run

    def counting_run(self, h, fn):
        calls.append(1)
        return real_run(self, h, fn)

    monkeypatch.setattr(B.BufferedVGG, "run", counting_run)
    fast = NS.style_transfer(content, style, **kw)
    assert len(calls) == fast.steps_done   # every evaluation went through the buffered path
    monkeypatch.setattr(B.BufferedVGG, "supported", staticmethod(lambda *a: False))
    slow = NS.style_transfer(content, style, **kw)
    assert len(calls) == fast.steps_done
    got = torch.tensor([h["loss"] for h in fast.history])
    want = torch.tensor([h["loss"] for h in slow.history])
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=0)   # the same loss at the same image
    # later steps: L-BFGS follows the same path to rounding; Adam divides each gradient entry by its own running
    # size, so an entry near zero moves a whole step either way on a last-bit difference
    adam = NS.METHODS[method].optimizer == "adam"
    torch.testing.assert_close(got, want, rtol=1e-2 if adam else 1e-4, atol=0)
    if adam:
        assert (fast.image - slow.image).abs().mean() < 5e-3
    else:
        torch.testing.assert_close(fast.image, slow.image, rtol=0, atol=1e-3)


def test_mask_pairs_take_the_autograd_gradients_on_the_buffered_path(vgg, monkeypatch):
    content, style_a, style_b = rand(1, 3, 32, 32, seed=1), rand(1, 3, 32, 32, seed=2), rand(1, 3, 32, 32, seed=3)
    left = torch.zeros(32, 32)
    left[:, :16] = 1
    masks = [(left, None), (1 - left, None)]
    kw = dict(vgg=vgg, method="gatys2016", size=32, steps=3, masks=masks)
    fast = NS.style_transfer(content, [style_a, style_b], **kw)
    monkeypatch.setattr(B.BufferedVGG, "supported", staticmethod(lambda *a: False))
    slow = NS.style_transfer(content, [style_a, style_b], **kw)
    got = torch.tensor([h["loss"] for h in fast.history])
    want = torch.tensor([h["loss"] for h in slow.history])
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=0)   # L-BFGS amplifies the last bits


def test_a_failing_buffered_path_falls_back_to_autograd_with_one_warning(vgg, monkeypatch, caplog):
    content, style = rand(1, 3, 32, 32, seed=1), rand(1, 3, 32, 32, seed=2)
    kw = dict(vgg=vgg, method="tutorial", size=32, steps=3)
    monkeypatch.setattr(B.BufferedVGG, "supported", staticmethod(lambda *a: False))
    slow = NS.style_transfer(content, style, **kw)
    monkeypatch.undo()

    def broken(*a, **k):
        raise RuntimeError("mkldnn_convolution_pointwise_binary_: unsupported")

    monkeypatch.setattr(B, "_conv_into", broken)
    monkeypatch.setattr("core.log._warned", set())
    with caplog.at_level("WARNING", logger="stylegan_studio"):
        got = NS.style_transfer(content, style, **kw)
    assert [h["loss"] for h in got.history] == [h["loss"] for h in slow.history]
    assert sum("buffered CPU path failed" in r.getMessage() for r in caplog.records) == 1
