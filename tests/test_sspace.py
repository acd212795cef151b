"""StyleSpace: w_to_s / from_s round trips, layout, flat views, channel counts, gradients."""

from __future__ import annotations

import pytest
import torch

import core
from core.networks.style_space import flatten_s, s_channel_count, s_layout, unflatten_s
from conftest import tiny_generator

VARIANTS = {
    "sg2-skip": ("stylegan2", {}),
    "sg2-orig": ("stylegan2", {"synthesis": {"architecture": "orig"}}),
    "sg2-resnet": ("stylegan2", {"synthesis": {"architecture": "resnet"}}),
    "sg2-cond": ("stylegan2", {"c_dim": 3}),
    "sg3-t": ("stylegan3", {}),
    "sg3-r": ("stylegan3", {"synthesis": {"conv_kernel": 1, "use_radial_filters": True}}),
}
_CACHE: dict[str, core.Generator] = {}


@pytest.fixture(params=list(VARIANTS))
def G(request) -> core.Generator:
    if request.param not in _CACHE:
        arch, overrides = VARIANTS[request.param]
        _CACHE[request.param] = tiny_generator(arch, seed=3, **overrides)
    return _CACHE[request.param]


def distinct_ws(G, n=2, seed=0) -> torch.Tensor:
    """W+ codes with a different w per layer, so a wrong w_index cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    return G.w_avg + 0.7 * torch.randn([n, G.num_ws, G.w_dim], generator=g)


def mapped_ws(G, n=2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.eye(G.c_dim)[torch.arange(n) % G.c_dim] if G.c_dim else None
    return G.mapping(torch.randn([n, G.z_dim], generator=g), c, truncation_psi=0.7)


def test_round_trip_reproduces_synthesis(G):
    ws = torch.cat([distinct_ws(G, n=1), mapped_ws(G, n=1)])
    for noise_mode in ("const", "none") if G.arch == "stylegan2" else ("const",):  # StyleGAN3 has no noise
        expected = G.synthesis(ws, noise_mode=noise_mode)
        got = G.synthesis.from_s(G.synthesis.w_to_s(ws), noise_mode=noise_mode)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-5


def test_w_to_s_is_ordered_and_reads_the_right_w(G):
    ws = distinct_ws(G)
    styles = G.synthesis.w_to_s(ws)
    layout = s_layout(G)
    assert list(styles) == [layer.name for layer in layout]
    modules = dict(G.synthesis.named_modules())
    for layer in layout:
        assert styles[layer.name].shape == (2, layer.channels)
        # S is the raw affine output: ToRGB's 1/sqrt(fan_in) weight gain is applied inside the layer.
        expected = modules[layer.name].affine(ws[:, layer.w_index])
        assert torch.equal(styles[layer.name], expected), layer.name
    # Changing one w changes exactly the styles whose layer reads it.
    k = G.num_ws - 1
    moved = ws.clone()
    moved[:, k] += 1
    styles2 = G.synthesis.w_to_s(moved)
    for layer in layout:
        changed = not torch.equal(styles[layer.name], styles2[layer.name])
        if layer.name != "input":  # StyleGAN3's input affine is zero-initialised: constant in w
            assert changed == (layer.w_index == k), layer.name


def test_layout_covers_every_modulated_layer_and_every_w(G):
    layout = s_layout(G)
    affines = [name.rsplit(".affine", 1)[0] for name, _ in G.synthesis.named_modules() if name.endswith(".affine")]
    assert sorted(layer.name for layer in layout) == sorted(affines)
    assert {layer.w_index for layer in layout} == set(range(G.num_ws))
    torgb = [layer.name for layer in layout if layer.is_torgb]
    if G.arch == "stylegan3":
        assert layout[0].name == "input" and layout[0].channels == 4
        assert torgb == [G.synthesis.layer_names[-1]]
    elif G.config.synthesis.architecture == "skip":
        assert torgb == [f"b{r}.torgb" for r in G.synthesis.block_resolutions]
    else:
        assert torgb == [f"b{G.img_resolution}.torgb"]


def test_one_channel_edit_changes_the_image(G):
    styles = G.synthesis.w_to_s(mapped_ws(G, n=1))
    kept = {k: v.clone() for k, v in styles.items()}
    base = G.synthesis.from_s(styles)
    names = [layer.name for layer in s_layout(G) if layer.name != "input"]
    for name in (names[0], names[-1]):  # the first conv and the last ToRGB
        edited = dict(styles)
        edited[name] = styles[name].clone()
        edited[name][:, 0] += 5
        assert (G.synthesis.from_s(edited) - base).abs().max() > 1e-4, name
    assert all(torch.equal(styles[k], kept[k]) for k in styles)  # from_s and the edits left S untouched


def test_partial_override_through_forward(G):
    ws = distinct_ws(G, n=1)
    styles = G.synthesis.w_to_s(ws)
    name = s_layout(G)[-2].name
    assert torch.equal(G.synthesis(ws, styles={name: styles[name]}), G.synthesis(ws))
    edited = {name: styles[name] * 1.5}
    full = dict(styles, **edited)
    assert torch.allclose(G.synthesis(ws, styles=edited), G.synthesis.from_s(full), atol=1e-6)


def test_flatten_unflatten_round_trip(G):
    styles = G.synthesis.w_to_s(distinct_ws(G, n=3))
    flat = flatten_s(styles)
    assert flat.shape == (3, s_channel_count(G))
    back = unflatten_s(G, flat)
    assert list(back) == list(styles)
    for name in styles:
        assert torch.equal(back[name], styles[name])
    assert torch.equal(flatten_s(back), flat)
    with pytest.raises(ValueError, match=rf"\[N, {s_channel_count(G)}\]"):
        unflatten_s(G, flat[:, :-1])


def test_gradients_reach_every_style(G):
    styles = {k: v.detach().clone().requires_grad_(True) for k, v in G.synthesis.w_to_s(mapped_ws(G, n=1)).items()}
    G.synthesis.from_s(styles).square().mean().backward()
    for name, s in styles.items():
        assert s.grad is not None and torch.isfinite(s.grad).all(), name
        if name != "input":  # a 4-value transform; its gradient may vanish at the identity
            assert s.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in G.parameters())


def test_gradients_flow_from_s_back_to_ws(G):
    ws = mapped_ws(G, n=1).requires_grad_(True)
    G.synthesis.from_s(G.synthesis.w_to_s(ws)).sum().backward()
    assert torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0


def test_works_under_inference_mode(G):
    ws = mapped_ws(G, n=1)
    expected = G.synthesis(ws)
    with torch.inference_mode():
        styles = G.synthesis.w_to_s(ws)
        got = G.synthesis.from_s(styles)
    assert (got - expected).abs().max().item() <= 1e-5


def test_channel_counts_of_stylegan2_config_f_1024():
    config = core.GeneratorConfig(arch="stylegan2", img_resolution=1024, synthesis=core.StyleGAN2Config())
    G = core.Generator(config)  # unseeded: 30M uninitialised weights, never touched (~0.03 s; 'meta' costs seconds)
    assert s_channel_count(G, torgb=False) == 6048
    assert s_channel_count(G) == 9088
    assert s_channel_count(G.synthesis) == 9088
    layout = s_layout(G)
    assert len(layout) == 26 and sum(layer.is_torgb for layer in layout) == 9
    assert layout[:3] == [("b4.conv1", 512, 0, False), ("b4.torgb", 512, 1, True), ("b8.conv0", 512, 1, False)]
    assert layout[-1] == ("b1024.torgb", 32, 17, True)


def test_bad_styles_are_refused_with_reason(G2):
    styles = G2.synthesis.w_to_s(mapped_ws(G2))
    first = next(iter(styles))
    with pytest.raises(ValueError, match="missing"):
        G2.synthesis.from_s({k: v for k, v in styles.items() if k != first})
    with pytest.raises(ValueError, match="unknown style layer"):
        G2.synthesis.from_s(dict(styles, bogus=styles[first]))
    with pytest.raises(ValueError, match=r"must have shape \[N, "):
        G2.synthesis.from_s(dict(styles, **{first: styles[first][:, :-1]}))
    with pytest.raises(ValueError, match="batch size"):
        G2.synthesis.from_s(dict(styles, **{first: styles[first][:1]}))
    ws = mapped_ws(G2, n=2)
    with pytest.raises(ValueError, match="batch size"):  # a partial override must match the batch of ws
        G2.synthesis(ws, styles={first: styles[first][:1]})
    with pytest.raises(ValueError, match="non-empty"):
        G2.synthesis.from_s({})
    with pytest.raises(ValueError, match=r"ws must have shape"):
        G2.synthesis.w_to_s(torch.zeros(1, 3, G2.w_dim))
    with pytest.raises(ValueError, match="Generator or its synthesis"):
        s_layout(torch.nn.Linear(2, 2))


def record_layer_outputs(G, styles):
    """Render from S and return (image, {layer name: its output}, names in the order the layers ran)."""
    outputs, order = {}, []
    names = {layer.name for layer in s_layout(G)}
    hooks = []
    for name, module in G.synthesis.named_modules():
        if name in names:
            def hook(module, args, out, name=name):
                outputs[name] = out.detach().clone()
                order.append(name)
            hooks.append(module.register_forward_hook(hook))
    try:
        image = G.synthesis.from_s(styles)
    finally:
        for h in hooks:
            h.remove()
    return image, outputs, order


def test_style_edit_acts_only_through_its_layer(G):
    styles = G.synthesis.w_to_s(mapped_ws(G))
    base_img, base, order = record_layer_outputs(G, styles)
    assert order == [layer.name for layer in s_layout(G)]  # S order is the order the layers run
    torgb = {layer.name for layer in s_layout(G) if layer.is_torgb}
    for k in (1, len(order) // 2, len(order) - 2):
        name = order[k]
        edited = dict(styles, **{name: styles[name] + 3 * (torch.arange(styles[name].shape[1]) == 0)})
        img, out, _ = record_layer_outputs(G, edited)
        assert not torch.equal(out[name], base[name]), name
        assert not torch.equal(img, base_img), name
        for earlier in order[:k]:  # nothing upstream of the edited layer moves
            assert torch.equal(out[earlier], base[earlier]), (name, earlier)
        if name in torgb:  # a ToRGB style reaches the image only, never the feature maps
            for other in order[k + 1:]:
                if other not in torgb:
                    assert torch.equal(out[other], base[other]), (name, other)


def test_gradient_in_s_is_the_gradient_the_w_path_uses(G):
    """Chaining dL/dS (from `from_s`) through the affines gives exactly dL/dws of the plain forward.

    A finite-difference check is too noisy in float32 through lrelu kinks; this one catches a detached,
    double-scaled or mis-routed style just the same.
    """
    ws = mapped_ws(G).requires_grad_(True)
    probe = torch.randn(G.synthesis(ws).shape, generator=torch.Generator().manual_seed(1))
    (grad_ws,) = torch.autograd.grad((G.synthesis(ws) * probe).sum(), ws)
    styles = {k: v.detach().requires_grad_(True) for k, v in G.synthesis.w_to_s(ws).items()}
    grad_s = torch.autograd.grad((G.synthesis.from_s(styles) * probe).sum(), list(styles.values()))
    (chained,) = torch.autograd.grad(list(G.synthesis.w_to_s(ws).values()), ws, grad_outputs=grad_s)
    assert grad_ws.abs().max() > 0
    torch.testing.assert_close(chained, grad_ws, rtol=1e-4, atol=1e-5 * grad_ws.abs().max().item())
