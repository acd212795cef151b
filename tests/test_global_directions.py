"""StyleCLIP global directions on tiny generators and a tiny random open_clip model: S statistics, the resumable
relevance computation (and its prefix cache), the text edit, and StyleCLIP's own files."""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from core.models import clip as C  # noqa: E402
from core.edits import global_directions as GD  # noqa: E402
from core.networks.style_space import flatten_s, s_channel_count, s_layout  # noqa: E402
from conftest import tiny_clip, TINY_CLIP_CFG, tiny_config, tiny_generator  # noqa: E402

TINY = "SGS-GlobalDirections-Tiny"
TINY_CFG = TINY_CLIP_CFG
N_IMAGES = 4
FAST = dict(num_images=N_IMAGES, batch_size=64)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture(scope="module")
def stats(G2):
    return GD.compute_s_statistics(G2, num_samples=1000, batch_size=384)


@pytest.fixture(scope="module")
def directions(G2, clip, stats):
    return GD.compute_relevance(G2, clip, stats, **FAST)


def non_torgb_mask(G) -> torch.Tensor:
    return torch.cat([torch.full([layer.channels], not layer.is_torgb and layer.name != "input")
                      for layer in s_layout(G)])


def sample_styles(G, n=3, seed=11):
    ws = G.mapping(torch.from_numpy(np.random.RandomState(seed).randn(n, G.z_dim)).float(), None, truncation_psi=0.7)
    return flatten_s(G.synthesis.w_to_s(ws))


# ------------------------------------------------------------------------------------------------
# Statistics


def test_statistics_match_a_direct_computation(G2, stats):
    assert stats.mean.shape == stats.std.shape == (s_channel_count(G2),)  # ToRGB included
    assert stats.mean.dtype == stats.std.dtype == torch.float32
    # The reference's z stream (np.random.RandomState(seed).randn(n, z_dim)), ψ 0.7 on every layer, population std.
    z = torch.from_numpy(np.random.RandomState(GD.DEFAULTS.seed).randn(1000, G2.z_dim)).float()
    s = flatten_s(G2.synthesis.w_to_s(G2.mapping(z, None, truncation_psi=0.7))).double()
    torch.testing.assert_close(stats.mean, s.mean(0).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.std, s.std(0, unbiased=False).float(), atol=1e-5, rtol=1e-5)
    assert stats.num_samples == 1000 and stats.truncation_psi == 0.7 and stats.truncation_cutoff is None
    assert stats.fingerprint == core.generator_ref(G2).fingerprint
    # Reproducible for a seed and independent of the batch size; another seed differs.
    again = GD.compute_s_statistics(G2, num_samples=1000, batch_size=1000)
    torch.testing.assert_close(again.mean, stats.mean, atol=1e-6, rtol=1e-6)
    other = GD.compute_s_statistics(G2, num_samples=1000, seed=6)
    assert not torch.allclose(other.mean, stats.mean)


def test_statistics_of_stylegan3_include_the_input_layer(G3):
    seen = []
    st = GD.compute_s_statistics(G3, num_samples=50, batch_size=20, callback=lambda d, t: seen.append((d, t)))
    assert st.mean.shape == (s_channel_count(G3),) and s_layout(G3)[0].name == "input"
    assert seen == [(20, 50), (40, 50), (50, 50)]
    # NVIDIA initialises the input's affine to the identity transform (weight 0), so it does not vary here.
    assert bool((st.std[:4] == 0).all()) and bool((st.std[4:] > 0).all())


# ------------------------------------------------------------------------------------------------
# Relevance


@pytest.mark.slow
def test_relevance_rows_are_the_references_fs3_rows(G2, clip, stats, directions):
    """Each measured row equals a direct implementation of SingleChannel.py + GetFs on plain from_s renders."""
    mask = non_torgb_mask(G2)
    assert torch.equal(directions.done, mask)  # default: every layer but the ToRGBs
    assert bool((directions.relevance[~mask] == 0).all())
    torch.testing.assert_close(directions.relevance[mask].norm(dim=1), torch.ones(int(mask.sum())))
    z = torch.from_numpy(np.random.RandomState(stats.seed).randn(N_IMAGES, G2.z_dim)).float()
    base = G2.synthesis.w_to_s(G2.mapping(z, None, truncation_psi=stats.truncation_psi))
    offset = directions.layer_slices()["b16.conv1"].start
    for c in (0, 7):
        feats = []
        for sign in (-1, 1):
            styles = {k: v.clone() for k, v in base.items()}
            styles["b16.conv1"][:, c] = stats.mean[offset + c] + sign * 5.0 * stats.std[offset + c]
            img = G2.synthesis.from_s(styles, noise_mode="const")
            img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).float() / 127.5 - 1
            feats.append(F.normalize(clip.encode_image(img), dim=-1))
        row = F.normalize(F.normalize(feats[1] - feats[0], dim=-1).mean(0), dim=0)
        torch.testing.assert_close(directions.relevance[offset + c], row, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_relevance_is_deterministic_for_a_seed(G2, clip, stats, directions):
    again = GD.compute_relevance(G2, clip, stats, **FAST)
    assert torch.equal(again.relevance, directions.relevance) and torch.equal(again.done, directions.done)
    other = GD.compute_relevance(G2, clip, stats, layers=["b8.conv0"], seed=99, **FAST)
    rows = other.layer_slices()["b8.conv0"]
    assert not torch.allclose(other.relevance[rows], directions.relevance[rows])


@pytest.mark.slow
def test_prefix_cache_equals_the_plain_render(G2, G3):
    for G, layer_names in ((G2, ["b4.conv1", "b8.conv1", "b16.torgb", "b32.conv0", "b32.conv1"]),
                           (G3, ["input", "L0_36_32", "L7_52_32", "L13_32_16"])):
        r = GD.render.Renderer(G.synthesis, G.img_resolution)
        base = G.synthesis.w_to_s(G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1)), None))
        prefix, at = None, 0
        for name in layer_names:
            stage = r.stage_of[name]
            prefix, at = r.run(base, prefix, at, stage), stage
            # Same batch as the cached prefix: the very same computation, bit for bit.
            idx, chans, values = torch.arange(3), torch.tensor([0, 3, 1]), torch.tensor([3.0, -2.0, 0.5])
            cached = GD.render.perturbed_renders(r, base, prefix, stage, name, chans, values, idx)
            plain = GD.render.perturbed_renders(r, base, None, stage, name, chans, values, idx, use_prefix=False)
            assert torch.equal(cached, plain), name
            # Another batch size: equal up to float rounding (the plain render itself changes that much with N).
            idx, chans = torch.tensor([2, 0, 1, 2, 0]), torch.tensor([0, 1, 3, 3, 2])
            values = torch.tensor([3.0, -2.0, 0.5, 4.0, -1.0])
            cached = GD.render.perturbed_renders(r, base, prefix, stage, name, chans, values, idx)
            plain = GD.render.perturbed_renders(r, base, None, stage, name, chans, values, idx, use_prefix=False)
            torch.testing.assert_close(cached, plain, atol=2e-5, rtol=1e-5)
            # ... and the plain path is the public renderer with that channel changed.
            styles = {k: v[idx].clone() for k, v in base.items()}
            styles[name][torch.arange(5), chans] = values
            assert torch.equal(plain, G.synthesis.from_s(styles, noise_mode="const"))


@pytest.mark.slow
def test_stylegan3_defaults_skip_input_and_torgb(G3, clip):
    st = GD.compute_s_statistics(G3, num_samples=64)
    d = GD.compute_relevance(G3, clip, st, layers=["L13_32_16"], num_images=2, batch_size=64)
    assert d.num_done == 16
    plain = GD.compute_relevance(G3, clip, st, layers=["L13_32_16"], num_images=2, batch_size=64, prefix_cache=False)
    # The renders are quantised to 8 bits before CLIP (as the reference saves them), so a channel whose effect is
    # about one 8-bit level can flip a few pixels between two float paths that differ by rounding, and its
    # normalised row with them; every other row must agree. (Here one channel of the 16 does that.)
    rows_close = torch.isclose(d.relevance, plain.relevance, atol=1e-5, rtol=1e-5).all(dim=1)
    assert int((~rows_close).sum()) <= 1, (~rows_close).nonzero().flatten().tolist()
    assert [layer.name for layer in GD.directions.reference_layers(G3)] == [n for n in G3.synthesis.layer_names[:-1]]


@pytest.mark.slow
def test_cancel_leaves_a_checkpoint_and_resume_equals_an_uninterrupted_run(G2, clip, stats, tmp_path):
    kw = dict(layers=["b8.conv1", "b16.conv0"], num_images=N_IMAGES, batch_size=16)   # 2 channels per chunk
    full = GD.compute_relevance(G2, clip, stats, **kw)
    ckpt = tmp_path / "gd.safetensors"
    calls = []

    def cancel_after_five(p):
        calls.append((p.step, p.total))
        if len(calls) == 6:  # the start, then five chunks
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        GD.compute_relevance(G2, clip, stats, checkpoint=ckpt, callback=cancel_after_five, **kw)
    assert calls[0] == (0, 64) and calls[-1] == (10, 64)
    partial = GD.load_directions(ckpt, G2, clip)
    assert partial.num_done == 10 and not list(ckpt.parent.glob("*.tmp"))

    # Resume from the file (saving after every chunk this time), then from a state object.
    seen = []
    resumed = GD.compute_relevance(G2, clip, None, checkpoint=ckpt, checkpoint_interval=0,
                                   callback=lambda p: seen.append(p.step), **kw)
    assert seen[0] == 10 and seen[-1] == 64 and len(seen) == 1 + 27
    assert torch.equal(resumed.relevance, full.relevance) and torch.equal(resumed.done, full.done)
    assert torch.equal(GD.load_directions(ckpt).relevance, full.relevance)
    again = GD.compute_relevance(G2, clip, stats, state=partial, **kw)
    assert torch.equal(again.relevance, full.relevance)
    assert partial.num_done == 10  # the state passed in is not modified


def test_resume_with_other_settings_is_refused(G2, clip, stats, tmp_path):
    ckpt = tmp_path / "gd.safetensors"
    GD.compute_relevance(G2, clip, stats, layers=["b4.conv1"], checkpoint=ckpt, **FAST)
    with pytest.raises(GD.DirectionsError, match="alpha 5.0 vs 3.0"):
        GD.compute_relevance(G2, clip, stats, layers=["b4.conv1"], checkpoint=ckpt, alpha=3.0, **FAST)
    with pytest.raises(GD.DirectionsError, match="clip_fingerprint"):
        GD.compute_relevance(G2, C.random_clip(TINY, seed=1), stats, layers=["b4.conv1"], checkpoint=ckpt, **FAST)


def test_low_resolution_render_measures_only_earlier_layers(G2, clip, stats):
    d = GD.compute_relevance(G2, clip, stats, resolution=8, **FAST)
    measured = [name for name, sl in d.layer_slices().items() if bool(d.done[sl].any())]
    assert measured == ["b4.conv1", "b8.conv0", "b8.conv1"] and d.resolution == 8
    with pytest.raises(ValueError, match="come after the 8 px render"):
        GD.compute_relevance(G2, clip, stats, resolution=8, layers="b16.conv0", **FAST)
    with pytest.raises(ValueError, match="one of"):
        GD.compute_relevance(G2, clip, stats, resolution=12, **FAST)
    orig = tiny_generator("stylegan2", synthesis={"architecture": "orig"})
    with pytest.raises(ValueError, match="'skip'"):
        GD.compute_relevance(orig, clip, GD.compute_s_statistics(orig, num_samples=8), resolution=8, **FAST)


@pytest.mark.slow
def test_out_of_memory_retries_with_smaller_passes(G2, clip, stats, monkeypatch, caplog):
    render = GD.render.perturbed_renders
    sizes = []

    def limited(renderer, base, prefix, stage, layer, channels, values, image_idx, **kw):
        sizes.append(len(image_idx))
        if len(image_idx) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return render(renderer, base, prefix, stage, layer, channels, values, image_idx, **kw)

    monkeypatch.setattr(GD.render, "perturbed_renders", limited)
    d = GD.compute_relevance(G2, clip, stats, layers=["b4.conv1"], num_images=N_IMAGES, batch_size=32)
    assert sizes[:3] == [32, 16, 8] and set(sizes[2:]) == {8}  # halved twice, then kept for the rest of the run
    assert d.num_done == 32 and "out of memory" in caplog.text
    torch.testing.assert_close(d.relevance[d.done].norm(dim=1), torch.ones(32))


# ------------------------------------------------------------------------------------------------
# Edit


def test_text_direction_is_the_references_dt(clip):
    assert len(GD.STYLECLIP_TEMPLATES) == 79 and "a photo of many {}." not in GD.STYLECLIP_TEMPLATES
    dt = GD.direction_from_text(clip, "a smiling face", "a face")
    t, n = clip.encode_text(["a smiling face", "a face"], templates=GD.STYLECLIP_TEMPLATES)
    torch.testing.assert_close(dt, (t - n) / (t - n).norm())
    assert dt.shape == (32,) and abs(float(dt.norm()) - 1) < 1e-6
    with pytest.raises(ValueError, match="same text embedding"):
        GD.direction_from_text(clip, "a face", "a face")


@pytest.mark.slow
def test_edit_thresholds_and_strength(G2, clip, directions):
    s = sample_styles(G2)
    dt = GD.direction_from_text(clip, "a smiling face", "a face")
    r = directions.relevance @ dt
    measured = directions.done

    out, n = GD.global_direction_edit(s, directions, dt, alpha=5.0, beta=float(r.abs().max()) + 1e-3)
    assert n == 0 and torch.equal(out, s)

    out, n = GD.global_direction_edit(s, directions, dt, alpha=5.0, beta=0.0)
    assert n == int(measured.sum())
    assert bool((out[:, measured] != s[:, measured]).all()) and torch.equal(out[:, ~measured], s[:, ~measured])

    beta = float(r[measured].abs().median())
    out, n = GD.global_direction_edit(s, directions, dt, alpha=5.0, beta=beta)
    keep = measured & (r.abs() >= beta)
    assert n == int(keep.sum()) and 0 < n < int(measured.sum())
    expected = torch.where(keep, r, torch.zeros_like(r)) / r[keep].abs().max() * directions.stats.std * 5.0
    torch.testing.assert_close(out - s, expected.expand_as(s), atol=1e-5, rtol=1e-5)

    minus, _ = GD.global_direction_edit(s, directions, dt, alpha=-5.0, beta=beta)
    torch.testing.assert_close(minus - s, -(out - s), atol=1e-5, rtol=1e-5)

    same, n0 = GD.global_direction_edit(s, directions, dt, alpha=0.0, beta=beta)
    assert torch.equal(same, s) and n0 == n

    # relevance·Δt is cached per Δt: another text, then the first again, gives each its own edit.
    dt2 = GD.direction_from_text(clip, "a face with blue hair", "a face")
    other, _ = GD.global_direction_edit(s, directions, dt2, alpha=5.0, beta=beta)
    r2 = directions.relevance @ dt2
    keep2 = measured & (r2.abs() >= beta)
    expected2 = torch.where(keep2, r2, torch.zeros_like(r2)) / r2[keep2].abs().max() * directions.stats.std * 5.0
    torch.testing.assert_close(other - s, expected2.expand_as(s), atol=1e-5, rtol=1e-5)
    assert torch.equal(GD.global_direction_edit(s, directions, dt, alpha=5.0, beta=beta)[0], out)
    # The edited S renders (and the input is untouched).
    assert G2.synthesis.from_s(core.networks.style_space.unflatten_s(G2, out)).shape == (3, 3, 32, 32)


def test_edit_rejects_wrong_shapes(G2, directions):
    with pytest.raises(ValueError, match=r"styles_flat must be \[N, 320\]"):
        GD.global_direction_edit(torch.zeros(1, 300), directions, torch.ones(32))
    with pytest.raises(ValueError, match=r"delta_t must be \[32\]"):
        GD.global_direction_edit(torch.zeros(1, 320), directions, torch.ones(512))


# ------------------------------------------------------------------------------------------------
# Files


def test_save_load_round_trip_and_mismatch_errors(G2, clip, directions, tmp_path):
    path = GD.save_directions(directions, tmp_path / "d.safetensors")
    back = GD.load_directions(path, G2, clip)
    assert torch.equal(back.relevance, directions.relevance) and torch.equal(back.done, directions.done)
    assert torch.equal(back.stats.mean, directions.stats.mean) and back.layers == directions.layers
    assert (back.num_images, back.alpha, back.seed, back.clip_name) == (N_IMAGES, 5.0, 5, TINY)
    assert "208 of 320 S channels" in back.describe()

    other = tiny_generator("stylegan2", seed=1)
    with pytest.raises(GD.DirectionsError, match="fingerprint"):
        GD.load_directions(path, other)
    assert GD.load_directions(path, other, strict=False).num_done == 208
    with pytest.raises(GD.DirectionsError, match="320 S channels"):
        GD.load_directions(path, tiny_generator("stylegan3"))
    with pytest.raises(GD.DirectionsError, match="other weights"):
        GD.load_directions(path, G2, C.random_clip(TINY, seed=1))
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(core.CheckpointError, match="cannot read"):
        GD.load_directions(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="compute_relevance"):
        GD.load_directions(tmp_path / "missing.safetensors")


def write_s_mean_std(path, G, scale=1.0):
    layout = s_layout(G)
    m = [np.full(layer.channels, i, np.float32) for i, layer in enumerate(layout)]
    sd = [np.full(layer.channels, scale * (i + 1), np.float32) for i, layer in enumerate(layout)]
    with open(path, "wb") as f:
        pickle.dump([m, sd], f, protocol=3)  # as GetCode.py wrote it (Python 3.7's default protocol)
    return torch.from_numpy(np.concatenate(m)), torch.from_numpy(np.concatenate(sd))


def test_reference_fs3_and_s_mean_std(G2, clip, tmp_path):
    rows = int(non_torgb_mask(G2).sum())
    fs3 = np.random.RandomState(0).randn(rows, 32).astype(np.float32)
    fs3 /= np.linalg.norm(fs3, axis=1, keepdims=True)
    np.save(tmp_path / "fs3.npy", fs3)
    mean, std = write_s_mean_std(tmp_path / "S_mean_std", G2)
    d = GD.load_reference_fs3(tmp_path / "fs3.npy", G2, s_mean_std=tmp_path / "S_mean_std")
    assert torch.equal(d.done, non_torgb_mask(G2)) and d.source == "styleclip-fs3"
    assert torch.equal(d.relevance[d.done], torch.from_numpy(fs3))  # rows in our forward order, as stored
    assert torch.equal(d.stats.mean, mean) and torch.equal(d.stats.std, std)
    s = sample_styles(G2)
    out, n = GD.global_direction_edit(s, d, GD.direction_from_text(clip, "a red face", "a face"), beta=0.0)
    assert n == rows and torch.equal(out[:, ~d.done], s[:, ~d.done])
    # Saved and re-read, a reference file checks the CLIP architecture by name (its weights are unknown).
    path = GD.save_directions(d, tmp_path / "ref.safetensors")
    with pytest.raises(GD.DirectionsError, match="ViT-B-32"):
        GD.load_directions(path, G2, clip)

    np.save(tmp_path / "wrong.npy", fs3[:-3])
    with pytest.raises(GD.DirectionsError, match=f"205 rows.*needs {rows}"):
        GD.load_reference_fs3(tmp_path / "wrong.npy", G2, s_mean_std=tmp_path / "S_mean_std")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(core.UnsafeCheckpointError):
        GD.load_reference_fs3(tmp_path / "objects.npy", G2)


def test_fs3_of_layers_up_to_128px_is_accepted(tmp_path):
    # A 256 px generator: SingleChannel.py as published measures only the conv layers up to 128 px.
    G = core.build_generator(tiny_config("stylegan2", img_resolution=256, synthesis={"channel_max": 8}), seed=0)
    low = [layer for layer in GD.directions.reference_layers(G) if not layer.name.startswith("b256")]
    assert GD.reference_layer_names(G, GD.REFERENCE_MAX_LAYER_RESOLUTION) == [layer.name for layer in low]
    rows, all_rows = sum(layer.channels for layer in low), sum(layer.channels for layer in GD.directions.reference_layers(G))
    write_s_mean_std(tmp_path / "S_mean_std", G)
    np.save(tmp_path / "fs3.npy", np.ones([rows, 16], np.float32))
    d = GD.load_reference_fs3(tmp_path / "fs3.npy", G, s_mean_std=tmp_path / "S_mean_std")
    assert d.num_done == rows and not bool(d.done[d.layer_slices()["b256.conv0"]].any())
    np.save(tmp_path / "bad.npy", np.ones([rows + 1, 16], np.float32))
    with pytest.raises(GD.DirectionsError, match=f"needs {all_rows} or {rows}"):
        GD.load_reference_fs3(tmp_path / "bad.npy", G, s_mean_std=tmp_path / "S_mean_std")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_s_mean_std_pickle_is_read_safely(G2, tmp_path):
    with open(tmp_path / "evil", "wb") as f:
        pickle.dump([[_Evil()], []], f)
    with pytest.raises(core.UnsafeCheckpointError, match="os.system|posix.system"):
        GD.read_reference_s_mean_std(tmp_path / "evil", G2)
    with open(tmp_path / "short", "wb") as f:
        pickle.dump([[np.zeros(32, np.float32)], [np.ones(32, np.float32)]], f)
    with pytest.raises(GD.DirectionsError, match="list of 11 float arrays"):
        GD.read_reference_s_mean_std(tmp_path / "short", G2)


@pytest.mark.slow
def test_prefix_out_of_memory_falls_back_to_full_renders(G2, clip, stats, monkeypatch, caplog):
    kw = dict(layers=["b8.conv1", "b16.conv0"], num_images=N_IMAGES, batch_size=16)
    plain = GD.compute_relevance(G2, clip, stats, **kw, prefix_cache=False)
    real = GD.render.Renderer.run

    def run(self, styles, state, start, stop=None):
        if stop is not None and stop >= 2:  # the prefix before the second layer does not fit
            raise GD.render.OOM_ERRORS("CUDA out of memory (simulated)")
        return real(self, styles, state, start, stop)

    monkeypatch.setattr(GD.render.Renderer, "run", run)
    with caplog.at_level("WARNING", logger="stylegan_studio"):
        d = GD.compute_relevance(G2, clip, stats, **kw)
    assert "not enough memory to cache the renders before b16.conv0" in caplog.text
    torch.testing.assert_close(d.relevance, plain.relevance, atol=1e-5, rtol=1e-5)


def test_edit_with_nothing_relevant_and_damaged_fs3(G2, directions, tmp_path):
    styles = torch.zeros([1, directions.num_channels])
    empty = dataclasses.replace(directions, relevance=torch.zeros_like(directions.relevance))
    out, count = GD.global_direction_edit(styles, empty, torch.ones(directions.embed_dim) / 4, alpha=5.0, beta=0.0)
    assert count == 0 and torch.equal(out, styles)  # no division by a zero maximum
    fs3 = np.ones([s_channel_count(G2, torgb=False), 32], dtype=np.float32)
    fs3[3, 1] = np.nan
    np.save(tmp_path / "fs3.npy", fs3)
    with pytest.raises(GD.DirectionsError, match="NaN or infinite values \\(1 of"):
        GD.load_reference_fs3(tmp_path / "fs3.npy", G2)
