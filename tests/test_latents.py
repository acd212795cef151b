"""Latents: NVIDIA seeds, spaces, interpolation, style mixing, latent files and compatibility checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import core
from core import latents as L
import core.networks.style_space  # noqa: F401  (core.networks.style_space.* below)
from conftest import tiny_generator


def test_nvidia_seed_mode_reproduces_gen_images_z():
    # NVIDIA's gen_images.py / generate.py: z = np.random.RandomState(seed).randn(1, G.z_dim)
    z = L.seeds_to_z([0, 42, 2 ** 32 - 1], 512, seed_mode="nvidia")
    for row, seed in zip(z, [0, 42, 2 ** 32 - 1]):
        expected = torch.from_numpy(np.random.RandomState(seed).randn(1, 512)).float()[0]
        assert torch.equal(row, expected)
    assert z[0, :3].tolist() == pytest.approx([1.7640524, 0.4001572, 0.9787380], abs=1e-6)


def test_torch_seed_mode_is_reproducible_and_different():
    a = L.seeds_to_z([7], 16, seed_mode="torch")
    assert torch.equal(a, L.seeds_to_z([7], 16, seed_mode="torch"))
    assert not torch.allclose(a, L.seeds_to_z([7], 16, seed_mode="nvidia"))


@pytest.mark.parametrize("text, seeds", [("3", [3]), ("1, 2,5-7", [1, 2, 5, 6, 7]), ("0-0", [0])])
def test_parse_seeds(text, seeds):
    assert L.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "5-2", "1,,x", "0-20000"])
def test_parse_seeds_rejects_bad_text(text):
    with pytest.raises(ValueError, match="seed"):
        L.parse_seeds(text)


def test_sample_spaces_agree(G2):
    z = L.sample_latents(G2, [3, 4], space="z", truncation_psi=0.6)
    w = L.sample_latents(G2, [3, 4], space="w", truncation_psi=0.6)
    wp = L.sample_latents(G2, [3, 4], space="w+", truncation_psi=0.6)
    assert (z.tensor.shape, w.tensor.shape, wp.tensor.shape) == ((2, 16), (2, 16), (2, G2.num_ws, 16))
    expected = G2.mapping(L.seeds_to_z([3, 4], 16), None, truncation_psi=0.6)
    for latent in (z, w, wp):
        assert torch.allclose(L.latent_to_ws(G2, latent), expected, atol=1e-6)


def test_cutoff_turns_w_into_w_plus(G2):
    lat = L.sample_latents(G2, [1], space="w", truncation_psi=0.5, truncation_cutoff=2)
    assert lat.space == "w+"
    full = G2.mapping(L.seeds_to_z([1], 16), None)
    assert torch.allclose(lat.tensor[:, 2:], full[:, 2:]) and not torch.allclose(lat.tensor[:, :2], full[:, :2])


def test_conditional_sampling_needs_a_class():
    G = tiny_generator("stylegan2", c_dim=3)
    with pytest.raises(core.LatentError, match="class index 0..2"):
        L.sample_latents(G, [0])
    lat = L.sample_latents(G, [0], class_idx=2, space="z")
    assert lat.c.tolist() == [[0, 0, 1]]
    assert L.synthesize(G, lat).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("space, method", [("z", "auto"), ("w", "auto"), ("w+", "lerp"), ("w", "slerp")])
def test_interpolation_includes_both_endpoints(G2, space, method):
    a = L.sample_latents(G2, [1, 2], space=space)
    b = L.sample_latents(G2, [3, 4], space=space)
    frames = L.interpolate_latents(a, b, 5, method=method)
    t = frames.tensor.reshape(2, 5, *a.tensor.shape[1:])
    assert torch.equal(t[:, 0], a.tensor) and torch.equal(t[:, -1], b.tensor)
    assert frames.space == space and frames.batch_size == 10


def test_lerp_midpoint_and_slerp_geometry():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mid = L.slerp(a, b, torch.tensor(0.5))
    assert torch.allclose(mid, torch.tensor([[2 ** -0.5, 2 ** -0.5]]))  # stays on the unit circle
    assert torch.allclose(L.slerp(a * 3, b * 3, torch.tensor(0.25)).norm(), torch.tensor(3.0))


def test_slerp_of_coincident_endpoints_is_safe():
    a = torch.randn(1, 512)
    out = L.slerp(a, a.clone(), torch.linspace(0, 1, 7).reshape(7, 1))
    assert torch.isfinite(out).all() and torch.allclose(out, a.expand(7, -1), atol=1e-6)


def test_interpolation_layer_range_keeps_other_layers(G2):
    a = L.sample_latents(G2, [1], space="w")
    b = L.sample_latents(G2, [2], space="w")
    with pytest.raises(core.LatentError, match="generator"):
        L.interpolate_latents(a, b, 3, layer_start=2, layer_end=4)
    frames = L.interpolate_latents(a, b, 3, layer_start=2, layer_end=4, G=G2)
    assert frames.space == "w+"
    ws_a = L.latent_to_ws(G2, a)
    for f in frames.tensor:
        assert torch.equal(f[:2], ws_a[0, :2]) and torch.equal(f[4:], ws_a[0, 4:])
    assert torch.allclose(frames.tensor[-1, 2:4], L.latent_to_ws(G2, b)[0, 2:4])


def test_interpolation_mixed_spaces_and_broadcast(G2):
    a = L.sample_latents(G2, [1], space="z")
    b = L.sample_latents(G2, [2, 3], space="w")
    frames = L.interpolate_latents(a, b, 4, G=G2)
    assert frames.space == "w+" and frames.batch_size == 8
    with pytest.raises(core.LatentError, match="batch sizes"):
        L.interpolate_latents(L.sample_latents(G2, [1, 2]), L.sample_latents(G2, [3, 4, 5]), 3)


def test_interpolation_rejects_one_frame(G2):
    a = L.sample_latents(G2, [1])
    with pytest.raises(ValueError, match="at least 2"):
        L.interpolate_latents(a, a, 1)


def test_style_mix_takes_exactly_the_chosen_layers(G2):
    base = L.sample_latents(G2, [1, 2], space="w")
    style = L.sample_latents(G2, [9], space="w")
    mixed = L.mix_styles(G2, base, style, [0, 1, 5])
    wb, ws = L.latent_to_ws(G2, base), L.latent_to_ws(G2, style)
    for i in range(G2.num_ws):
        src = ws[0] if i in (0, 1, 5) else None
        assert torch.equal(mixed.tensor[:, i], src[i].expand(2, -1) if src is not None else wb[:, i])


def test_style_mix_presets_stylegan2_convention():
    G = tiny_generator("stylegan2", img_resolution=128)  # 12 layers
    assert L.style_mix_layers(G, "coarse") == [0, 1, 2, 3]
    assert L.style_mix_layers(G, "middle") == [4, 5, 6, 7]
    assert L.style_mix_layers(G, "fine") == [8, 9, 10, 11]


def test_style_mix_presets_stylegan3_cover_all_layers():
    G3 = tiny_generator("stylegan3", img_resolution=128)
    groups = [L.style_mix_layers(G3, p) for p in L.STYLE_MIX_PRESETS]
    assert sorted(sum(groups, [])) == list(range(G3.num_ws))
    assert groups[0][0] == 0 and max(groups[0]) < min(groups[1]) <= max(groups[1]) < min(groups[2])


def test_style_mix_preset_missing_in_small_model(G2):
    with pytest.raises(core.LatentError, match="no fine layers"):
        L.style_mix_layers(G2, "fine")  # 32 px: nothing above 32 px


@pytest.mark.parametrize("text, layers", [("0-3", [0, 1, 2, 3]), ("7, 1-2", [1, 2, 7])])
def test_parse_layers(text, layers):
    assert L.parse_layers(text, 8) == layers


@pytest.mark.parametrize("text", ["", "8", "3-1", "x"])
def test_parse_layers_rejects(text):
    with pytest.raises(ValueError, match="layer"):
        L.parse_layers(text, 8)


def test_latent_file_round_trip(G2, tmp_path):
    lat = L.sample_latents(G2, [1, 2], space="z", truncation_psi=0.7, truncation_cutoff=3)
    path = L.save_latent(lat, tmp_path / "a.safetensors")
    back = L.load_latent(path)
    assert back.space == "z" and back.generator == lat.generator and torch.equal(back.tensor, lat.tensor)
    assert (back.truncation_psi, back.truncation_cutoff) == (0.7, 3)
    assert torch.allclose(L.synthesize(G2, back), L.synthesize(G2, lat))
    assert not (tmp_path / "a.safetensors.partial").exists()


def test_incompatible_latent_is_refused_with_reason(G2, tmp_path):
    other = tiny_generator("stylegan2", w_dim=8, z_dim=8)
    other.info.name = "other-model"
    lat = L.sample_latents(other, [0], space="w+")
    with pytest.raises(core.LatentError, match=r"made for other-model .* tiny-stylegan2 needs"):
        L.synthesize(G2, lat)
    loaded = L.load_latent(L.save_latent(lat, tmp_path / "o.safetensors"))
    with pytest.raises(core.LatentError, match="other-model"):
        L.check_compatible(loaded, G2)


def test_same_shape_latent_from_another_model_is_accepted(G2):
    twin = tiny_generator("stylegan2", seed=5)
    lat = L.sample_latents(twin, [0])
    assert lat.generator.fingerprint != L.generator_ref(G2).fingerprint
    assert L.synthesize(G2, lat).shape == (1, 3, 32, 32)


def test_non_latent_file_is_refused(tmp_path, G2):
    core.save_generator(G2, tmp_path / "g.safetensors")
    with pytest.raises(core.CheckpointError, match="not a StyleGAN Studio latent"):
        L.load_latent(tmp_path / "g.safetensors")
    with pytest.raises(FileNotFoundError):
        L.load_latent(tmp_path / "missing.safetensors")


def test_nan_latent_is_refused(G2):
    bad = torch.full((1, 16), float("nan"))
    with pytest.raises(core.LatentError, match="NaN"):
        L.Latent(bad, "w", L.generator_ref(G2))


def test_wrong_shape_latent_is_refused(G2):
    with pytest.raises(core.LatentError, match=r"shape \[N, 8, 16\]"):
        L.Latent(torch.zeros(1, 5, 16), "w+", L.generator_ref(G2))


def test_synthesize_reports_progress_and_can_be_cancelled(G2):
    calls = []
    lat = L.sample_latents(G2, list(range(5)))
    L.synthesize(G2, lat, chunk_size=2, callback=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        L.synthesize(G2, lat, chunk_size=2, callback=cancel)


def test_w_plus_cannot_become_z(G2):
    with pytest.raises(core.LatentError, match="cannot be turned back into z"):
        L.convert_latent(G2, L.sample_latents(G2, [0]), "z")


# --- S (StyleSpace) latents ------------------------------------------------------------------------

def test_s_latent_renders_like_its_w(arch, tmp_path):
    G = tiny_generator(arch)
    lat = L.sample_latents(G, [1, 2, 3], space="w+", truncation_psi=0.7)
    s = L.convert_latent(G, lat, "s")
    assert s.space == "s" and s.tensor.shape == (3, core.networks.style_space.s_channel_count(G)) and s.generator.s_dim > 0
    torch.testing.assert_close(L.synthesize(G, s, chunk_size=2), L.synthesize(G, lat), atol=1e-5, rtol=0)
    styles = L.latent_to_styles(G, s)
    assert list(styles) == [layer.name for layer in core.networks.style_space.s_layout(G)]
    # Round trip through a file keeps space and channel count.
    back = L.load_latent(L.save_latent(s, tmp_path / "s.safetensors"))
    assert back.space == "s" and back.generator == s.generator and torch.equal(back.tensor, s.tensor)


def test_s_latent_has_no_w_form_and_clear_errors(G2):
    s = L.convert_latent(G2, L.sample_latents(G2, [0]), "s")
    with pytest.raises(core.LatentError, match="no w/w\\+ form"):
        L.latent_to_ws(G2, s)
    with pytest.raises(core.LatentError, match="no w\\+ layers"):
        L.interpolate_latents(s, s, 3, layer_start=0, layer_end=2, G=G2)
    with pytest.raises(core.LatentError, match="shape"):
        L.Latent(s.tensor[:, :-1], "s", s.generator)
    with pytest.raises(ValueError, match="convert_latent"):
        L.sample_latents(G2, [0], space="s")


def test_s_interpolation_matches_w_interpolation(G2):
    # Every style is affine in its w, so lerp in S between S(w_a) and S(w_b) is S of the lerp in W (exactly, up to
    # float rounding); mixing an s and a w latent converts the w one.
    a, b = L.sample_latents(G2, [4]), L.sample_latents(G2, [5])
    in_w = L.interpolate_latents(a, b, 5)
    sa, sb = L.convert_latent(G2, a, "s"), L.convert_latent(G2, b, "s")
    in_s = L.interpolate_latents(sa, sb, 5)
    torch.testing.assert_close(in_s.tensor, L.convert_latent(G2, in_w, "s").tensor, atol=1e-5, rtol=0)
    mixed = L.interpolate_latents(sa, b, 5, G=G2)
    assert mixed.space == "s"
    torch.testing.assert_close(mixed.tensor, in_s.tensor, atol=1e-5, rtol=0)


def test_old_latent_files_without_s_dim_still_load(G2, tmp_path):
    import json

    from safetensors.torch import load_file, safe_open, save_file

    path = L.save_latent(L.sample_latents(G2, [0]), tmp_path / "old.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    ref = json.loads(meta["generator"])
    del ref["s_dim"]
    meta["generator"] = json.dumps(ref)
    save_file(load_file(str(path)), str(path), metadata=meta)
    lat = L.load_latent(path)
    assert lat.generator.s_dim == 0
    L.check_compatible(lat, G2)
    assert L.convert_latent(G2, lat, "s").generator.s_dim == core.networks.style_space.s_channel_count(G2)
