"""Generator behaviour: configuration, shapes, mapping/truncation, noise, batching, gradients."""

from __future__ import annotations

import math

import pytest
import torch

import core
from conftest import on_device, tiny_config, tiny_generator


def test_config_json_round_trip(arch):
    cfg = tiny_config(arch)
    assert core.GeneratorConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("change, message", [
    (dict(img_resolution=48), "power of two"),
    (dict(z_dim=0), "z_dim"),
    (dict(c_dim=-1), "c_dim"),
])
def test_invalid_config_is_refused_with_reason(change, message):
    with pytest.raises(core.CheckpointError, match=message):
        tiny_config("stylegan2", **change)


def test_unknown_arch_is_refused():
    with pytest.raises(core.CheckpointError, match="stylegan4"):
        core.GeneratorConfig(arch="stylegan4")


def test_unknown_config_key_is_refused():
    data = tiny_config("stylegan2").to_dict()
    data["synthesis"]["magic"] = 1
    with pytest.raises(core.CheckpointError, match="magic"):
        core.GeneratorConfig.from_dict(data)


@pytest.mark.parametrize("arch, num_ws", [("stylegan2", 2 * 5 - 2), ("stylegan3", 16)])
def test_shapes_and_api(arch, num_ws, device):
    G = on_device(tiny_generator(arch), device)
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution) == (16, 16, num_ws, 32)
    z = torch.randn(3, 16, device=device)
    ws = G.mapping(z, None)
    assert ws.shape == (3, num_ws, 16)
    img = G.synthesis(ws)
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32 and img.is_contiguous()
    assert torch.allclose(G(z), img, atol=1e-6)
    assert not any(p.requires_grad for p in G.parameters())


def test_seeded_build_is_deterministic():
    a, b, c = (core.build_generator(tiny_config(), seed=s) for s in (1, 1, 2))
    z = torch.randn(1, 16)
    assert torch.equal(a(z), b(z))
    assert not torch.allclose(a(z), c(z))


def test_truncation_matches_definition(G2):
    z = torch.randn(2, 16)
    ws = G2.mapping(z, None)
    assert torch.allclose(G2.mapping(z, None, truncation_psi=0.0), G2.w_avg.expand_as(ws))
    half = G2.mapping(z, None, truncation_psi=0.5)
    assert torch.allclose(half, G2.w_avg + 0.5 * (ws - G2.w_avg), atol=1e-6)
    cut = G2.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(cut[:, :3], half[:, :3]) and torch.allclose(cut[:, 3:], ws[:, 3:])


def test_batch_equals_single_samples(arch):
    """Batch 1 uses weight modulation, larger batches activation scaling: both give the same images."""
    G = tiny_generator(arch)
    ws = G.mapping(torch.randn(3, 16), None)
    together = G.synthesis(ws)
    alone = torch.cat([G.synthesis(ws[i:i + 1]) for i in range(3)])
    assert (together - alone).abs().max() < 1e-4


def test_noise_modes():
    G = tiny_generator("stylegan2")
    with torch.no_grad():
        for name in G.synthesis.noise_layer_names:
            G.synthesis.get_submodule(name).noise_strength.fill_(0.5)
    ws = G.mapping(torch.randn(1, 16), None)
    const = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const, G.synthesis(ws, noise_mode="const"))
    assert not torch.allclose(const, G.synthesis(ws, noise_mode="none"))
    g1 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(5))
    g2 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(5))
    assert torch.equal(g1, g2) and not torch.allclose(g1, const)
    # Explicit noise maps override the mode for those layers.
    zeros = {name: torch.zeros(1, 1, G.synthesis.get_submodule(name).resolution,
                               G.synthesis.get_submodule(name).resolution) for name in G.synthesis.noise_layer_names}
    assert torch.allclose(G.synthesis(ws, noise_mode="const", noise=zeros), G.synthesis(ws, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="loud")


def test_gradients_reach_ws_and_leave_generator_untouched(arch, device, dtype):
    G = on_device(tiny_generator(arch), device, dtype)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    ws = G.mapping(torch.randn(2, 16, device=device), None).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = G.synthesis(ws).square().mean()
        loss.backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())


def test_gradients_reach_weights_when_enabled():
    """PTI-style tuning: weights that require grad get gradients through the fast paths."""
    G = tiny_generator("stylegan2").requires_grad_(True)
    ws = G.mapping(torch.randn(1, 16), None).detach()
    with torch.enable_grad():
        G.synthesis(ws).mean().backward()
    grads = [p.grad for p in G.synthesis.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_conditional_mapping_requires_labels():
    G = tiny_generator("stylegan2", c_dim=4)
    with pytest.raises(core.LatentError, match="conditional"):
        G.mapping(torch.randn(1, 16), None)
    c = torch.nn.functional.one_hot(torch.tensor([2]), 4).float()
    assert G.mapping(torch.randn(1, 16), c).shape == (1, G.num_ws, 16)


def test_mapping_rejects_wrong_z_shape(G2):
    with pytest.raises(core.LatentError, match=r"\[N, 16\]"):
        G2.mapping(torch.randn(1, 15), None)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_stylegan2_architectures_render(architecture):
    G = tiny_generator("stylegan2", synthesis=dict(architecture=architecture))
    img = G(torch.randn(2, 16))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    assert hasattr(G.synthesis.b8, "torgb") == (architecture == "skip")
    assert hasattr(G.synthesis.b8, "skip") == (architecture == "resnet")


def test_stylegan3_radial_config_renders():
    G = tiny_generator("stylegan3", synthesis=dict(conv_kernel=1, use_radial_filters=True))
    img = G(torch.randn(1, 16))
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    radial = [n for n in G.synthesis.layer_names if getattr(G.synthesis, n).down_radial]
    assert radial and all(getattr(G.synthesis, n).down_filter.ndim == 2 for n in radial)


def test_clamp_limits_activations():
    """conv_clamp bounds every layer output, so huge weights cannot overflow."""
    G = tiny_generator("stylegan2", synthesis=dict(conv_clamp=1.0))
    with torch.no_grad():
        for p in G.synthesis.parameters():
            p.mul_(50)
    img = G(torch.randn(1, 16))
    n_rgb_layers = math.log2(32) - 1  # skip architecture: one ToRGB per block, each clamped to +-1
    assert img.abs().max() <= n_rgb_layers + 1e-4


@pytest.mark.parametrize("arch", ["stylegan2", "stylegan3"])
def test_precision_setting_reaches_every_block(arch):
    G = tiny_generator(arch)
    blocks = [m for m in G.synthesis.children() if "force_fp32" in m.forward.__code__.co_varnames]
    assert blocks
    seen: list[bool] = []
    handles = [b.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["force_fp32"]), with_kwargs=True)
               for b in blocks]
    ws = G.mapping(torch.randn(1, G.z_dim), None)
    try:
        assert G.precision == "auto"
        G.synthesis(ws)
        assert seen == [False] * len(blocks)
        G.precision = "float32"
        seen.clear()
        G.synthesis(ws)
        assert seen == [True] * len(blocks)
        seen.clear()
        G.synthesis(ws, force_fp32=False)  # an explicit argument wins over the setting
        assert seen == [False] * len(blocks)
    finally:
        for h in handles:
            h.remove()
    with pytest.raises(ValueError, match="precision must be one of"):
        G.precision = "float16"


def test_load_generator_sets_precision(tmp_path):
    core.save_generator(tiny_generator("stylegan2"), tmp_path / "g.safetensors")
    assert core.load_generator(tmp_path / "g.safetensors").precision == "auto"
    assert core.load_generator(tmp_path / "g.safetensors", precision="float32").precision == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        core.load_generator(tmp_path / "g.safetensors", precision="half")
