"""Neural Style on random-weight VGG-19s: the Gram normalisations against their formulas, the layers, the PyTorch
tutorial's loop (written here as the reference) reproduced loss for loss, every method's loss falling, mask pairs
acting locally, luminance transfer keeping the content's chroma, the three weight formats read safely, and the
errors for wrong inputs."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import core
from core.edits import neural_style as NS
from core.losses import style as S
from core.losses import vgg19 as V
from core.optimize import FINISH


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vgg():
    return V.random_vgg19(seed=0)


# ------------------------------------------------------------------------------------------------
# The Gram matrix and the style loss


def test_gram_normalisations_match_their_formulas():
    f = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(1))
    a = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(2))
    n, c, h, w = f.shape
    raw = torch.stack([x.reshape(c, -1) @ x.reshape(c, -1).T for x in f])
    raw_a = torch.stack([x.reshape(c, -1) @ x.reshape(c, -1).T for x in a])
    torch.testing.assert_close(S.gram_matrix(f, normalize="none"), raw)
    # Gatys 2016 eq. 4: E_l = sum (G - A)^2 / (4 N^2 M^2), N = channels, M = positions
    e = ((raw - raw_a) ** 2).sum((1, 2)) / (4 * c ** 2 * (h * w) ** 2)
    d = S.gram_distance(S.gram_matrix(f), S.gram_matrix(a))
    torch.testing.assert_close(d, e)
    # the tutorial: features.view(a*b, c*d) @ .t() / (a*b*c*d) with its batch of one, F.mse_loss
    for k in range(n):
        x, y = f[k:k + 1], a[k:k + 1]
        gx = x.view(c, h * w) @ x.view(c, h * w).t() / (1 * c * h * w)
        gy = y.view(c, h * w) @ y.view(c, h * w).t() / (1 * c * h * w)
        torch.testing.assert_close(S.gram_matrix(x, normalize="tutorial")[0], gx)
        torch.testing.assert_close(S.gram_distance(S.gram_matrix(x, normalize="tutorial"),
                                                   S.gram_matrix(y, normalize="tutorial"), normalize="tutorial")[0],
                                   F.mse_loss(gx, gy))
    # Barbershop: features times the mask, F F^T / (N*C*H*W) over the whole map, MSE
    m = (rand(1, 1, h, w, seed=3) > 0.5).float()
    x, y = f[:1], a[:1]
    xm, ym = (x * m).view(c, -1), (y * m).view(c, -1)
    gb, ab = xm @ xm.t() / (c * h * w), ym @ ym.t() / (c * h * w)
    torch.testing.assert_close(S.gram_matrix(x, m, normalize="barbershop")[0], gb)
    torch.testing.assert_close(S.gram_distance(S.gram_matrix(x, m, normalize="barbershop"),
                                               S.gram_matrix(y, m, normalize="barbershop"),
                                               normalize="barbershop")[0], F.mse_loss(gb, ab))
    # masked Gatys Gram (Gatys 2017): the positions count is the mask's area
    gm = S.gram_matrix(x, m, normalize="gatys")[0]
    torch.testing.assert_close(gm, xm @ xm.t() / (2 * c * m.sum()))
    # crowsonkb: Gram / (H*W), sum d^2 / sum |d|
    gh, ah = raw[:1] / (h * w), raw_a[:1] / (h * w)
    dd = gh - ah
    torch.testing.assert_close(S.gram_distance(S.gram_matrix(x, normalize="hw"), S.gram_matrix(y, normalize="hw"),
                                               normalize="hw")[0], (dd ** 2).sum() / (dd.abs().sum() + 1e-8))
    # style_loss = sum of weighted distances
    sl = S.style_loss([f, a], [S.gram_matrix(a), S.gram_matrix(f)], weights=[0.25, 2.0])
    torch.testing.assert_close(sl, 0.25 * d + 2.0 * d)
    with pytest.raises(ValueError, match="normalize must be one of"):
        S.gram_matrix(f, normalize="paper")
    with pytest.raises(ValueError, match="does not fit features"):
        S.gram_matrix(f, torch.ones(1, 1, 2, 2))
    assert S.resize_mask(torch.ones(8, 8), (2, 4)).shape == (1, 1, 2, 4)
    half = torch.zeros(4, 4)
    half[:, :1] = 1
    torch.testing.assert_close(S.resize_mask(half, (2, 2))[0, 0], torch.tensor([[0.5, 0.0], [0.5, 0.0]]))
    torch.testing.assert_close(S.resize_mask(half, (2, 2), "nearest")[0, 0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_layers_of_each_method_and_the_vgg_layers(vgg):
    assert NS.METHODS["gatys2016"].content_layers == ("relu4_2",)
    assert NS.METHODS["gatys2016"].style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert NS.METHODS["gatys2016"].style_layer_weights == (0.2,) * 5 and NS.METHODS["gatys2016"].pooling == "avg"
    assert NS.METHODS["tutorial"].content_layers == ("conv2_2",)
    assert NS.METHODS["tutorial"].style_layers == ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1")
    assert (NS.METHODS["tutorial"].style_weight, NS.METHODS["tutorial"].pooling) == (1e6, "max")
    x = rand(1, 3, 32, 32)
    out = vgg(x, ["conv1_1", "relu1_1", "conv2_1", "pool1"])
    pre = (x - torch.tensor(V.IMAGENET_MEAN).reshape(1, 3, 1, 1)) / torch.tensor(V.IMAGENET_STD).reshape(1, 3, 1, 1)
    torch.testing.assert_close(out["conv1_1"], vgg.convs["conv1_1"](pre))
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].relu())
    assert out["pool1"].shape[2:] == (16, 16) and out["conv2_1"].shape[1] == 128
    avg = vgg(x, ["pool1"], pooling="avg")["pool1"]
    assert not torch.allclose(avg, out["pool1"])
    with pytest.raises(ValueError, match="unknown VGG-19 layers"):
        vgg(x, ["conv6_1"])


def _autograd_gram(f, m=None):
    """The plain Gram, every product left to autograd (the reference for gram_matrix's own backward)."""
    f = f if m is None else f * m
    flat = f.reshape(f.shape[0], f.shape[1], -1)
    return torch.bmm(flat, flat.transpose(1, 2))


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_gram_backward_and_layouts_match_autograd(n, layout):
    """gram_matrix reads the features in their layout and has its own one-product backward: values and gradients
    equal autograd's on the plain formula (float64: to rounding), the gradient in the features' layout."""
    g = torch.Generator().manual_seed(20)
    base = torch.randn(n, 6, 5, 7, dtype=torch.float64, generator=g)
    mask = torch.rand(1, 1, 5, 7, dtype=torch.float64, generator=g)
    upstream = torch.randn(n, 6, 6, dtype=torch.float64, generator=g)   # not symmetric
    for m in (None, mask):
        if layout == "channels_last":
            x = base.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        elif layout == "strided":
            wide = torch.stack([base, base], -1).reshape(n, 6, 5, 14).requires_grad_(True)
            x = wide[..., ::2]                                             # neither layout: made contiguous first
        else:
            x = base.clone().requires_grad_(True)
        ref_x = x.detach().clone().requires_grad_(True)
        for norm in ("gatys", "tutorial", "none"):
            got = S.gram_matrix(x, m, normalize=norm)
            k = got.detach()[0, 0, 0] / _autograd_gram(ref_x.detach(), m)[0, 0, 0]
            want = _autograd_gram(ref_x, m) * k
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
            (gx,) = torch.autograd.grad((got * upstream).sum(), x, retain_graph=True)
            (gr,) = torch.autograd.grad((want * upstream).sum(), ref_x)
            torch.testing.assert_close(gx, gr, rtol=1e-10, atol=1e-12)
            if layout == "channels_last" and m is None:
                assert gx.is_contiguous(memory_format=torch.channels_last) and not gx.is_contiguous()
    # second derivatives (create_graph) go through differentiable products
    x = base.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad((S.gram_matrix(x) * upstream).sum(), x, create_graph=True)
    (hx,) = torch.autograd.grad(gx.square().sum(), x)
    x2 = base.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad((_autograd_gram(x2) / (2 * 6 * 35) * upstream).sum(), x2, create_graph=True)
    torch.testing.assert_close(hx, torch.autograd.grad(gr.square().sum(), x2)[0], rtol=1e-10, atol=1e-12)
    # one contiguous image: the forward is the references' own torch.mm call, bit for bit
    f = base[:1].float()
    flat = f.view(6, -1)
    assert torch.equal(S.gram_matrix(f, normalize="none")[0], torch.mm(flat, flat.t()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_content_mse_equals_f_mse_loss_bit_for_bit_and_keeps_the_layout(dtype):
    """The tutorial's content loss: F.mse_loss's value and gradient exactly, the gradient in the features' layout
    (ATen's backward returns a contiguous one)."""
    for fmt in (torch.contiguous_format, torch.channels_last):
        f = torch.randn(1, 8, 5, 6, dtype=dtype, generator=torch.Generator().manual_seed(24))
        f = f.contiguous(memory_format=fmt).requires_grad_(True)
        p = torch.randn(1, 8, 5, 6, dtype=dtype, generator=torch.Generator().manual_seed(25))
        p = p.contiguous(memory_format=fmt)
        f2 = f.detach().clone().requires_grad_(True)
        a, b = NS.content_loss(f, p, "mse") * 3.7, F.mse_loss(f2, p).reshape(1) * 3.7
        a.backward()
        b.backward()
        assert torch.equal(a, b) and torch.equal(f.grad, f2.grad)
        assert f.grad.is_contiguous(memory_format=fmt)


def test_vgg_stops_at_the_deepest_layer_and_relu_in_place_keeps_gradients(vgg):
    """The forward runs no convolution past the deepest layer asked for; the in-place ReLUs (on conv outputs not
    returned) give the same features and input gradients as the plain conv -> relu chain."""
    calls = []
    hooks = [conv.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
             for name, conv in vgg.convs.items()]
    try:
        x = rand(1, 3, 32, 32, seed=21)
        for layers, last in ((["conv1_1", "conv3_1"], "conv3_1"), (["relu2_2"], "conv2_2"),
                             (["pool1", "relu1_1"], "conv1_2"), (["relu4_2", "relu1_1"], "conv4_2")):
            calls.clear()
            vgg(x, layers)
            assert calls[-1] == last and len(calls) == V.CONV_NAMES.index(last) + 1, (layers, calls)
        assert vgg(x, []) == {}
    finally:
        for h in hooks:
            h.remove()

    def plain(net, x, layers):   # conv -> relu -> (pool), nothing in place
        h, out = net.preprocess(x), {}
        for name in V.CONV_NAMES[:9]:
            h = net.convs[name](h)
            out[name] = h
            h = F.relu(h)
            out[name.replace("conv", "relu")] = h
            if name in ("conv1_2", "conv2_2", "conv3_4"):
                h = F.avg_pool2d(h, 2, 2)
        return {k: out[k] for k in layers}

    layers = ["relu1_1", "conv2_1", "relu3_1", "relu4_1"]
    for fmt in (torch.contiguous_format, torch.channels_last):
        x1 = rand(1, 3, 32, 32, seed=22).double().contiguous(memory_format=fmt).requires_grad_(True)
        x2 = x1.detach().clone().requires_grad_(True)
        net = V.random_vgg19(seed=0).double()
        a, b = net(x1, layers, "avg"), plain(net, x2, layers)
        for k in layers:
            torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-12)
        w = {k: rand(*a[k].shape, seed=23).double() for k in layers}
        (g1,) = torch.autograd.grad(sum((a[k] * w[k]).sum() for k in layers), x1)
        (g2,) = torch.autograd.grad(sum((b[k] * w[k]).sum() for k in layers), x2)
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# The tutorial's loop, written here as the reference


def tutorial_features(vgg) -> nn.Sequential:
    """torchvision's vgg19().features with `vgg`'s weights (the layout the tutorial walks)."""
    layers, c_in = [], 3
    state = V.vgg19_state(vgg, "torchvision")
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    seq = nn.Sequential(*layers)
    seq.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    return seq.eval()


def tutorial_run(cnn, content_img, style_img, num_steps, style_weight=1e6, content_weight=1, dtype=torch.float32):
    """advanced_source/neural_style_tutorial.py's get_style_model_and_losses + run_style_transfer, returning the
    loss of every closure evaluation."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1).to(dtype)
    std = torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1).to(dtype)

    class Normalization(nn.Module):
        def forward(self, img):
            return (img - mean) / std

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super().__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            self.loss = F.mse_loss(gram_matrix(input), self.target)
            return input

    content_layers, style_layers = ["conv_4"], ["conv_1", "conv_2", "conv_3", "conv_4", "conv_5"]
    model = nn.Sequential(Normalization())
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        else:
            name = f"pool_{i}"
        model.add_module(name, layer)
        if name in content_layers:
            cl = ContentLoss(model(content_img).detach())
            model.add_module(f"content_loss_{i}", cl)
            content_losses.append(cl)
        if name in style_layers:
            sl = StyleLoss(model(style_img).detach())
            model.add_module(f"style_loss_{i}", sl)
            style_losses.append(sl)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[:i + 1]
    input_img = content_img.clone()
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = torch.optim.LBFGS([input_img])
    losses = []
    run = [0]
    while run[0] <= num_steps:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = sum(sl.loss for sl in style_losses) * style_weight
            content_score = sum(cl.loss for cl in content_losses) * content_weight
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            losses.append(float(loss.detach()))
            return style_score + content_score

        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return losses, input_img.detach()


@pytest.mark.slow
@pytest.mark.parametrize("dtype, steps", [(torch.float64, 25), (torch.float32, 10)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_tutorial_method_reproduces_the_tutorials_loop(vgg, channels_last, dtype, steps):
    """Loss for loss to 1e-5. L-BFGS amplifies rounding (each evaluation's gradient steers the next): float32's
    last-bit differences (the order in which autograd sums a layer's gradients) reach 1e-5 after ~12 evaluations
    and percent after 30, so the long comparison runs in float64 (25 evaluations: past the first .step's 20)."""
    if dtype == torch.float32 and channels_last:
        steps = 5   # channels-last convolutions round differently again: 1e-5 holds for fewer evaluations
    content, style = rand(1, 3, 24, 24, seed=1).to(dtype), rand(1, 3, 24, 24, seed=2).to(dtype)
    net = V.random_vgg19(seed=0).to(dtype)
    ref, _ = tutorial_run(tutorial_features(net).to(dtype), content, style, steps, dtype=dtype)
    ours = NS.style_transfer(content, style, vgg=net, method="tutorial", size=24, steps=steps,
                             channels_last=channels_last)
    got = [h["loss"] for h in ours.history]
    assert len(got) == steps and len(ref) >= steps
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref[:steps]), rtol=1e-5, atol=0)
    assert got[-1] < got[0] / 2
    assert ours.image.dtype == dtype


@pytest.mark.parametrize("method", list(NS.METHODS))
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_decreases_for_every_method(vgg, method, optimizer):
    content, style = rand(1, 3, 32, 24, seed=3), rand(1, 3, 28, 28, seed=4)
    kw = {"scales": [24]} if method == "multiscale" else {}
    r = NS.style_transfer(content, style, vgg=vgg, method=method, size=32, steps=8, optimizer=optimizer,
                          lr=None if optimizer == NS.METHODS[method].optimizer else (1.0 if optimizer == "lbfgs"
                                                                                       else 0.02), **kw)
    losses = [h["loss"] for h in r.history]
    assert r.image.shape[:2] == (1, 3) and 0 <= float(r.image.min()) and float(r.image.max()) <= 1
    if method == "multiscale":   # one ladder per scale: compare within the last scale
        losses = losses[-8:]
    assert losses[-1] < losses[0], (method, optimizer, losses)


@pytest.mark.slow
def test_mask_pair_acts_inside_its_region_only(vgg):
    """Style A into the left half, style B into the right: A's Gram distance falls on the left, not on the right."""
    g = torch.Generator().manual_seed(5)
    content = torch.full((1, 3, 32, 32), 0.5) + 0.05 * torch.randn(1, 3, 32, 32, generator=g)
    a = torch.zeros(1, 3, 32, 32)
    a[:, 0, :, ::2] = 1.0                              # red stripes
    b = rand(1, 3, 32, 32, seed=6) * torch.tensor([0.0, 0.3, 1.0]).reshape(1, 3, 1, 1)
    left = torch.zeros(32, 32)
    left[:, :16] = 1
    r = NS.style_transfer(content.clamp(0, 1), [a, b], vgg=vgg, method="gatys2016", size=32, steps=25,
                          init="content", masks=[(left, None), (1 - left, None)], style_weight=1e4)
    layer = "relu1_1"

    def dist(img, region):
        f = vgg(img, [layer])[layer]
        m = S.resize_mask(region, f.shape[2:])
        target = S.gram_matrix(vgg(a, [layer])[layer])
        return float(S.gram_distance(S.gram_matrix(f, m), target))

    before_l, after_l = dist(content, left), dist(r.image, left)
    before_r, after_r = dist(content, 1 - left), dist(r.image, 1 - left)
    assert after_l < 0.5 * before_l, (before_l, after_l)
    assert after_l / before_l < 0.5 * after_r / before_r, (before_l, after_l, before_r, after_r)
    # red went into the left half only
    assert float(r.image[0, 0, :, :16].mean() - r.image[0, 2, :, :16].mean()) > \
        float(r.image[0, 0, :, 16:].mean() - r.image[0, 2, :, 16:].mean()) + 0.1


def test_luminance_keeps_the_contents_chroma(vgg):
    content = 0.3 + 0.4 * rand(1, 3, 32, 32, seed=7)
    style = rand(1, 3, 32, 32, seed=8)
    r = NS.style_transfer(content, style, vgg=vgg, method="tutorial", size=32, steps=10, color="luminance")
    yiq_in, yiq_out = NS.rgb_to_yiq(content), NS.rgb_to_yiq(r.image)
    inside = ((r.image > 0.001) & (r.image < 0.999)).all(1, keepdim=True).expand(-1, 2, -1, -1)  # not clipped
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(yiq_out[:, 1:][inside], yiq_in[:, 1:][inside], atol=1e-5, rtol=0)
    assert float((yiq_out[:, :1] - yiq_in[:, :1]).abs().mean()) > 0.003   # the luminance was stylised
    keep = NS.style_transfer(content, style, vgg=vgg, method="tutorial", size=32, steps=10)
    assert float((NS.rgb_to_yiq(keep.image)[:, 1:] - yiq_in[:, 1:]).abs().mean()) > 1e-3


def test_histogram_matching_gives_the_style_the_contents_colours(vgg):
    content = rand(1, 3, 16, 16, seed=9) * torch.tensor([1.0, 0.5, 0.2]).reshape(1, 3, 1, 1)
    style = rand(1, 3, 20, 20, seed=10) * torch.tensor([0.2, 0.4, 1.0]).reshape(1, 3, 1, 1)
    m = NS.match_color(style, content)
    torch.testing.assert_close(m.reshape(3, -1).mean(1), content.reshape(3, -1).mean(1), atol=0.02, rtol=0)
    r = NS.style_transfer(content, style, vgg=vgg, method="tutorial", size=16, steps=3, color="histogram")
    assert r.image.shape == (1, 3, 16, 16)


@pytest.mark.slow
def test_several_styles_weights_frames_scales_and_finish(vgg):
    content = rand(2, 3, 24, 32, seed=11)
    a, b = rand(1, 3, 24, 24, seed=12), rand(1, 3, 30, 20, seed=13)
    # weight 1 on a, 0 on b is a alone
    one = NS.style_transfer(content[:1], [a, b], vgg=vgg, method="tutorial", size=32, steps=4, style_weights=[1, 0])
    alone = NS.style_transfer(content[:1], a, vgg=vgg, method="tutorial", size=32, steps=4)
    torch.testing.assert_close(one.image, alone.image)
    # frames: the second starts from the first's result when asked, so its first loss is lower
    same = torch.cat([content[:1], content[:1]])
    cold = NS.style_transfer(same, a, vgg=vgg, method="tutorial", size=32, steps=5)
    warm = NS.style_transfer(same, a, vgg=vgg, method="tutorial", size=32, steps=5, init_from_previous=True)
    assert cold.history[5]["loss"] == pytest.approx(cold.history[0]["loss"])
    assert warm.history[5]["loss"] < 0.9 * warm.history[0]["loss"]
    assert warm.image.shape == (2, 3, 24, 32) and warm.total == 10
    # scales: coarse to fine, each from the last
    ms = NS.style_transfer(content[:1], a, vgg=vgg, method="gatys2016", size=32, steps=2, scales=[24])
    assert ms.sizes == [(18, 24), (24, 32)] and ms.image.shape == (1, 3, 24, 32) and ms.total == 4
    # FINISH ends after that step; frames not reached come back as their content
    seen = []

    def cb(p):
        seen.append((p.step, p.total, p.phase, p.image.shape))
        return FINISH if p.step == 3 else None

    fin = NS.style_transfer(content, a, vgg=vgg, method="tutorial", size=32, steps=5, callback=cb)
    assert fin.finished_early and fin.steps_done == 3 and len(fin.history) == 3
    assert seen[0] == (1, 10, "style", (1, 3, 24, 32))
    torch.testing.assert_close(fin.image[1:], content[1:])
    # cancel: the callback's exception propagates
    with pytest.raises(KeyboardInterrupt):
        NS.style_transfer(content, a, vgg=vgg, method="multiscale", size=32, steps=5, scales=[24],
                          callback=lambda p: (_ for _ in ()).throw(KeyboardInterrupt()))


def test_input_errors(vgg):
    rgb = rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="grayscale"):
        NS.style_transfer(rand(1, 1, 32, 32), rgb, vgg=vgg)
    with pytest.raises(ValueError, match=r"style image 1 has 4 channels \(RGBA\)"):
        NS.style_transfer(rgb, rand(1, 4, 32, 32), vgg=vgg)
    with pytest.raises(ValueError, match="content mask 1 is 16x32 px but the content image is 32x32"):
        NS.style_transfer(rgb, rgb, vgg=vgg, masks=[(torch.ones(32, 16), None)])
    with pytest.raises(ValueError, match="style mask 1 is 8x8 px"):
        NS.style_transfer(rgb, rgb, vgg=vgg, masks=[(None, torch.ones(8, 8))])
    with pytest.raises(ValueError, match="2 mask pairs for 1 style images"):
        NS.style_transfer(rgb, rgb, vgg=vgg, masks=[(None, None), (None, None)])
    with pytest.raises(ValueError, match="method must be one of gatys2016, tutorial, multiscale"):
        NS.style_transfer(rgb, rgb, vgg=vgg, method="paper")
    with pytest.raises(ValueError, match="below the 16 px"):
        NS.style_transfer(rgb, rgb, vgg=vgg, size=8)
    with pytest.raises(ValueError, match="style_weights"):
        NS.style_transfer(rgb, rgb, vgg=vgg, style_weights=[1, 2])
    with pytest.raises(ValueError, match="color must be one of"):
        NS.style_transfer(rgb, rgb, vgg=vgg, color="sepia")


# ------------------------------------------------------------------------------------------------
# Weight files


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, *a, **k):
        raise OSError(f"network is unreachable ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    folder = tmp_path / "perceptual"
    folder.mkdir()
    return folder


def test_each_weight_format_loads_with_its_preprocessing(offline):
    x = rand(1, 3, 16, 16)
    ref = V.random_vgg19(seed=3)
    torch.save(V.vgg19_state(ref, "torchvision"), offline / "vgg19-dcbb9e9d.pth")
    tv = V.load_vgg19(model_dirs=[offline])
    assert tv.format == "torchvision"
    torch.testing.assert_close(tv(x, ["relu3_1"])["relu3_1"], ref(x, ["relu3_1"])["relu3_1"])
    # Caffe's conversion: the same layout, told by its name; BGR 0-255 minus the mean
    torch.save(V.vgg19_state(ref, "caffe"), offline / "vgg19-d01eb7cb.pth")
    caffe = V.load_vgg19("vgg19-d01eb7cb.pth", model_dirs=[offline])
    assert caffe.format == "caffe"
    expect = ref.convs["conv1_1"](x.flip(1) * 255 - torch.tensor(V.CAFFE_MEAN_BGR).reshape(1, 3, 1, 1))
    torch.testing.assert_close(caffe(x, ["conv1_1"])["conv1_1"], expect)
    # ... or by its un-renamed classifier keys under any name
    raw = V.vgg19_state(ref, "caffe")
    raw["classifier.1.weight"] = raw.pop("classifier.0.bias")
    torch.save(raw, offline / "my_vgg.pth")
    assert V.load_vgg19("my_vgg.pth", model_dirs=[offline]).format == "caffe"
    # AdaIN's normalised VGG: its own layout, a 1x1 input conv, reflection padding, ceil-mode pooling
    adain = V.random_vgg19(seed=4, format="adain")
    torch.save(V.vgg19_state(adain), offline / "vgg_normalised.pth")
    got = V.load_vgg19("vgg_normalised.pth", model_dirs=[offline])
    assert got.format == "adain"
    pre = F.pad(adain.input_conv(x), (1, 1, 1, 1), mode="reflect")
    torch.testing.assert_close(got(x, ["conv1_1"])["conv1_1"], F.conv2d(pre, adain.convs["conv1_1"].weight,
                                                                         adain.convs["conv1_1"].bias))
    assert got(rand(1, 3, 15, 15), ["pool1"])["pool1"].shape[2:] == (8, 8)   # ceil mode
    # format override and safetensors twins
    from safetensors.torch import save_file

    save_file(V.vgg19_state(ref, "torchvision"), str(offline / "custom.safetensors"))
    assert V.load_vgg19(str(offline / "custom.safetensors"), format="caffe").format == "caffe"


def test_missing_and_wrong_weight_files_are_refused(offline, tmp_path):
    with pytest.raises(core.MissingWeightsError) as e:
        V.load_vgg19(model_dirs=[offline])
    msg = str(e.value)
    assert "vgg19-dcbb9e9d.pth" in msg and "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in msg
    assert str(offline) in msg and "network is unreachable" in msg
    with pytest.raises(core.MissingWeightsError, match="vgg_normalised.pth.*naoto0804"):
        V.load_vgg19("vgg_normalised.pth", model_dirs=[offline])
    target = offline / "vgg19-dcbb9e9d.pth"
    target.write_bytes(b"not a torch file")
    with pytest.raises(core.CheckpointError, match="cannot read VGG-19 weights"):
        V.load_vgg19(model_dirs=[offline])
    # VGG-16 saved under VGG-19's name
    vgg16 = {f"features.{i}.weight": torch.zeros(64, 3, 3, 3) for i in V.VGG16_INDEX}
    torch.save(vgg16, target)
    with pytest.raises(core.CheckpointError, match="a VGG-16 \\(13 convolutions\\), not VGG-19"):
        V.load_vgg19(model_dirs=[offline])
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.1.running_mean": torch.zeros(64)}, target)
    with pytest.raises(core.CheckpointError, match="batch-normalised VGG"):
        V.load_vgg19(model_dirs=[offline])
    torch.save({"encoder.weight": torch.zeros(2, 2)}, target)
    with pytest.raises(core.CheckpointError, match="no VGG-19 convolutions found"):
        V.load_vgg19(model_dirs=[offline])
    state = V.vgg19_state(V.random_vgg19(seed=1))
    state["features.28.weight"] = torch.zeros(512, 512, 1, 1)
    torch.save(state, target)
    with pytest.raises(core.CheckpointError, match=r"features.28.weight \(conv5_1\) has shape \[512, 512, 1, 1\]"):
        V.load_vgg19(model_dirs=[offline])
    state = V.vgg19_state(V.random_vgg19(seed=1))
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, target)
    with pytest.raises(core.CheckpointError, match="not finite"):
        V.load_vgg19(model_dirs=[offline])
    state = V.vgg19_state(V.random_vgg19(seed=1))
    del state["features.34.bias"]
    torch.save(state, target)
    with pytest.raises(core.CheckpointError, match=r"missing \['features.34.bias'\]"):
        V.load_vgg19(model_dirs=[offline])

    class Boom:
        def __reduce__(self):
            return os.system, ("echo pwned > " + str(tmp_path / "pwned"),)

    with zipfile.ZipFile(target, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Boom(), protocol=2))
    with pytest.raises(core.CheckpointError):
        V.load_vgg19(model_dirs=[offline])
    assert not (tmp_path / "pwned").exists()
