"""Winograd F(4x4, 3x3) convolutions (core.ops.winograd) against F.conv2d: every padding, odd map sizes, bias,
accumulation, batches, several bands, both layouts; the kernel transform against its formula; the errors; the
shared workspace without stale state and bounded; and the buffered VGG-19 / Neural Style with it against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.edits import neural_style as NS
from core.losses import style as S
from core.losses import vgg19 as V
from core.losses import vgg19_buffered as B
from core.ops import winograd as W

# F(4x4, 3x3) in float32 rounds differently from a direct convolution: ~1e-5 of the output's largest magnitude
# (measured up to 1.3e-5 on random maps); a wrong transform constant or a misplaced tile is off by O(1)
TOL = 4e-5


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def assert_conv_close(got, want):
    err = (got - want).abs().max() / want.abs().max()
    assert err < TOL, f"max |winograd - conv2d| / max |conv2d| = {err:.2e}"


@pytest.mark.parametrize("c_in,c_out,h,w,padding,bias,accumulate,n", [
    (8, 16, 16, 16, 1, True, False, 1),
    (8, 16, 13, 9, 1, True, False, 1),      # the last tiles overhang the output
    (8, 16, 13, 9, 0, True, False, 2),      # 'valid' (AdaIN's reflection-padded maps), a batch
    (16, 8, 5, 7, 2, False, True, 1),       # 'full' (the input gradient of a valid convolution), accumulated
    (32, 32, 16, 16, 1, True, True, 1),     # accumulated with a bias, tiles exact
    (4, 4, 3, 3, 1, False, False, 1),       # one tile, mostly padding
    (3, 5, 1, 1, 1, True, False, 1),        # a single pixel
])
@pytest.mark.parametrize("bands", ["one band", "many bands"])
def test_equals_conv2d(c_in, c_out, h, w, padding, bias, accumulate, n, bands, monkeypatch):
    if bands == "many bands":   # one tile row per band
        monkeypatch.setattr(W, "MIN_BAND_TILES", 1)
    ws = W.Workspace(chunk_bytes=1 if bands == "many bands" else 4 * 2 ** 20)
    x = rand(n, c_in, h, w, seed=1).contiguous(memory_format=torch.channels_last)
    k = rand(c_out, c_in, 3, 3, seed=2)
    b = rand(c_out, seed=3) if bias else None
    want = F.conv2d(x.contiguous(), k, b, padding=padding)
    start = rand(*want.shape, seed=4).contiguous(memory_format=torch.channels_last)
    out = start.clone() if accumulate else torch.full_like(start, float("nan"))
    assert W.WinogradConv(k, b, padding, ws)(x, out, accumulate=accumulate) is out
    assert_conv_close(out, want + start if accumulate else want)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_other_layouts_and_one_workspace_for_several_convolutions():
    ws = W.Workspace()
    x = rand(1, 16, 20, 20, seed=1)                                  # contiguous (NCHW) in and out
    k1, k2 = rand(32, 16, 3, 3, seed=2), rand(16, 32, 3, 3, seed=3)
    a, b = W.WinogradConv(k1, None, 1, ws), W.WinogradConv(k2, rand(16, seed=4), 1, ws)
    y1 = torch.empty(1, 32, 20, 20)
    a(x, y1)
    assert_conv_close(y1, F.conv2d(x, k1, padding=1))
    y2 = torch.empty(1, 16, 20, 20)
    b(y1, y2)
    assert_conv_close(y2, F.conv2d(y1, k2, rand(16, seed=4), padding=1))
    # the shared scratch holds nothing over: a's result again, bit for bit
    y1b = torch.empty_like(y1)
    a(x, y1b)
    assert torch.equal(y1, y1b)


def test_scratch_memory_does_not_grow_with_the_map(monkeypatch):
    monkeypatch.setattr(W, "MIN_BAND_TILES", 1)
    ws = W.Workspace(chunk_bytes=64 * 2 ** 10)
    conv = W.WinogradConv(rand(8, 8, 3, 3), None, 1, ws)
    for size in (16, 96):
        x = rand(1, 8, size, size).contiguous(memory_format=torch.channels_last)
        out = torch.empty(1, 8, size, size).contiguous(memory_format=torch.channels_last)
        conv(x, out)
        assert_conv_close(out, F.conv2d(x, rand(8, 8, 3, 3), padding=1))
        assert max(t.numel() * t.element_size() for t in ws._flat.values()) <= 64 * 2 ** 10


def test_kernel_transform_is_g_g_gt_in_float64():
    k = rand(3, 2, 3, 3, seed=5)
    u = W.transform_weight(k)
    g = torch.tensor(W._G, dtype=torch.float64)
    assert u.shape == (36, 2, 3) and u.dtype == torch.float32
    for o in range(3):
        for i in range(2):
            want = (g @ k[o, i].double() @ g.T).reshape(36)
            torch.testing.assert_close(u[:, i, o].double(), want, rtol=0, atol=1e-6)
    assert W.transform_weight(k.double()).dtype == torch.float64


def test_errors():
    k = rand(4, 2, 3, 3)
    with pytest.raises(ValueError, match="3x3 kernels"):
        W.WinogradConv(rand(4, 2, 5, 5))
    with pytest.raises(ValueError, match="padding must be 0, 1 or 2"):
        W.WinogradConv(k, padding=3)
    with pytest.raises(ValueError, match=r"needs an output \[1, 4, 6, 6\]"):
        W.WinogradConv(k)(rand(1, 2, 6, 6), torch.empty(1, 4, 5, 5))
    with pytest.raises(ValueError, match="needs an output"):
        W.WinogradConv(k)(rand(1, 3, 6, 6), torch.empty(1, 4, 6, 6))   # wrong input channels
    with pytest.raises(ValueError, match="has no 3x3 output"):
        W.WinogradConv(k, padding=0)(rand(1, 2, 2, 2), torch.empty(1, 4, 0, 0))


def test_worthwhile():
    assert W.worthwhile(64, 128, 128, 128) and W.worthwhile(128, 64, 128, 128) and W.worthwhile(512, 512, 32, 32)
    assert not W.worthwhile(64, 64, 256, 256)      # about even with oneDNN
    assert not W.worthwhile(3, 64, 256, 256)       # conv1_1
    assert not W.worthwhile(256, 256, 16, 16)      # a small map
    assert not W.worthwhile(32, 512, 64, 64)


# -- in the buffered VGG-19 ------------------------------------------------------------------------------------

def _loss(feats, sinks):
    total = 0
    for i, (name, f) in enumerate(feats.items()):
        g = S.gram_matrix(f, normalize="gatys", grad_into=sinks.get(name))
        total = total + g.square().sum() * (i + 1)
        if i == 0:
            total = total + NS.content_loss(f, torch.zeros_like(f), "mse", sinks.get(name)).sum()
    return total


@pytest.mark.parametrize("fmt,layers,pooling", [
    ("torchvision", ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"], "max"),              # tutorial
    ("torchvision", ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"], "avg"),   # gatys2016
    ("adain", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"], "max"),                                # reflection pad
])
def test_buffered_vgg_with_winograd_equals_autograd(fmt, layers, pooling, monkeypatch):
    monkeypatch.setattr(W, "MIN_PIXELS", 1)      # every layer with enough channels, even on small test maps
    vgg = V.random_vgg19(seed=0, format=fmt)
    x = torch.rand(1, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        ref = _loss(vgg(xr.contiguous(memory_format=torch.channels_last), layers, pooling), {})
        (ref_grad,) = torch.autograd.grad(ref, xr)
    runner = B.BufferedVGG(vgg, layers, pooling, winograd=True)
    xb = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = B.VGGObjective.apply(vgg.preprocess(xb), runner, _loss)
        (grad,) = torch.autograd.grad(loss, xb)
    used = {(name, backward) for name, backward, _ in runner._wino}
    assert ("conv2_1", False) in used and ("conv2_1", True) in used and ("conv3_1", False) in used
    assert not any(name in ("conv1_1", "conv1_2") for name, _ in used)
    assert set(runner._kernels) == {(n, bw) for n in runner.names for bw in (False, True)} - used  # no unused copies
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-4, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-3 * ref_grad.abs().max().item())
    # switched off: oneDNN only, as exact as before
    plain = B.BufferedVGG(vgg, layers, pooling, winograd=False)
    loss_plain, _ = plain.run(vgg.preprocess(x), _loss)
    assert not plain._wino
    torch.testing.assert_close(loss_plain, ref.detach(), rtol=1e-5, atol=0)


def test_style_transfer_with_winograd_follows_the_same_run(monkeypatch):
    vgg = V.random_vgg19(seed=0)
    content = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    style = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    runs = {}
    for on in (True, False):
        monkeypatch.setattr(B, "default_enabled", lambda on=on: on)
        made = []
        real_init = B.BufferedVGG.__init__

        def init(self, *a, **k):
            real_init(self, *a, **k)
            made.append(self)

        monkeypatch.setattr(B.BufferedVGG, "__init__", init)
        runs[on] = NS.style_transfer(content, style, vgg=vgg, method="tutorial", size=128, steps=4)
        monkeypatch.setattr(B.BufferedVGG, "__init__", real_init)
        assert made and all(r.winograd is on for r in made)
        assert bool(made[0]._wino) is on   # at 128 px conv2_x (64² maps) and conv3_1 (32²) qualify
    got = torch.tensor([h["loss"] for h in runs[True].history])
    want = torch.tensor([h["loss"] for h in runs[False].history])
    torch.testing.assert_close(got, want, rtol=1e-3, atol=0)
    assert (runs[True].image - runs[False].image).abs().max() < 1e-2
