"""FS latents (Barbershop's F/S space): made from W+, rendered, saved, loaded, interpolated; the FS embedding; the
nodes that carry them."""

from __future__ import annotations

import pytest
import torch

import core
from core import latents as L
from core.ops.upfirdn2d import upsample2d
from conftest import tiny_generator
from forge import latent_metadata, write_tagged_safetensors


@pytest.fixture(scope="module")
def G64() -> core.Generator:
    """A tiny StyleGAN2 at 64 px: the smallest with a block after the 32 px one (num_ws 10, S = ws[:, 7:])."""
    return tiny_generator("stylegan2", img_resolution=64)


@pytest.fixture(scope="module")
def wplus(G64) -> L.Latent:
    return L.sample_latents(G64, [3, 4], space="w+")


def _perturbed(ws: torch.Tensor, index: int) -> torch.Tensor:
    out = ws.clone()
    out[:, index] += torch.randn(out[:, index].shape, generator=torch.Generator().manual_seed(index))
    return out


# ------------------------------------------------------------------------------------------------
# The space


@pytest.mark.parametrize("architecture", ["skip", "orig", "resnet"])
def test_keep_reproduces_the_wplus_image_exactly(architecture):
    G = tiny_generator("stylegan2", img_resolution=64, synthesis={"architecture": architecture})
    lat = L.sample_latents(G, [1, 2, 3], space="w+")
    fs = L.fs_from_wplus(G, lat, skip="keep")
    assert fs.space == "fs" and fs.features.shape == (3, 16, 32, 32) and torch.equal(fs.tensor, lat.tensor)
    assert (fs.features_img is None) == (architecture != "skip")
    assert torch.equal(L.synthesize(G, fs), L.synthesize(G, lat))   # bit-exact on this CPU


def test_drop_is_the_staged_run_without_the_32px_skip(G64, wplus):
    fs = L.fs_from_wplus(G64, wplus)                                 # Barbershop's convention is the default
    assert fs.fs_skip == "drop" and fs.features_img is None
    ws = wplus.tensor
    s = G64.synthesis.run(ws, stop=32)
    direct = G64.synthesis.run(ws, start=32, x=s.x, drop_skip=True).img
    image = L.synthesize(G64, fs)
    assert torch.allclose(image, direct, atol=1e-6)
    # What 'drop' loses against the W+ image: exactly the RGB skip at 32 px, upsampled to the output (the skip
    # path is linear), a blurry low-frequency image.
    lost = L.synthesize(G64, wplus) - image
    assert torch.allclose(lost, upsample2d(s.img, G64.synthesis.b64.resample_filter), atol=1e-5)
    assert lost.abs().max() > 1e-2


@pytest.mark.parametrize("resolution", [64, 256, 512, 1024])
def test_first_w_of_the_blocks_after_32px(resolution):
    G = tiny_generator("stylegan2", img_resolution=resolution,
                       synthesis={"channel_base": 2 * resolution, "channel_max": 8})
    first = L.fs_first_w(G)
    assert first == 7 and G.num_ws - first == {64: 3, 256: 7, 512: 9, 1024: 11}[resolution]  # 1024: Barbershop's 11
    if resolution > 256:
        return  # the reading below is the same at every size; rendered at two sizes to keep the test fast
    ws = L.sample_latents(G, [0], space="w+").tensor
    x = G.synthesis.run(ws, stop=32).x
    after = lambda w: G.synthesis.run(w, start=32, x=x, drop_skip=True).img  # noqa: E731
    base = after(ws)
    assert torch.equal(after(_perturbed(ws, first - 1)), base)      # the codes before S are not read
    assert not torch.allclose(after(_perturbed(ws, first)), base)   # S[0] is
    assert not torch.allclose(after(_perturbed(ws, G.num_ws - 1)), base)


def test_generators_without_fs_are_refused(G2, G3, wplus):
    with pytest.raises(core.LatentError, match="stylegan3: FS latents .* only StyleGAN2 has"):
        L.fs_from_wplus(G3, L.sample_latents(G3, [0], space="w+"))
    with pytest.raises(core.LatentError, match="renders at 32 px: .* at least 64 px"):
        L.fs_from_wplus(G2, L.sample_latents(G2, [0], space="w+"))
    fs = L.fs_from_wplus(tiny_generator("stylegan2", img_resolution=64), wplus)
    with pytest.raises(core.LatentError, match="renders at 32 px"):
        L.synthesize(G2, fs)
    with pytest.raises(core.LatentError, match="skip must be one of"):
        L.fs_from_wplus(tiny_generator("stylegan2", img_resolution=64), wplus, skip="half")


def test_fs_latent_fields_are_checked(G64, wplus):
    fs = L.fs_from_wplus(G64, wplus, skip="keep")
    ref = fs.generator
    with pytest.raises(core.LatentError, match="needs its features"):
        L.Latent(fs.tensor, "fs", ref)
    with pytest.raises(core.LatentError, match=r"features must have shape \[2, C, 32, 32\]"):
        L.Latent(fs.tensor, "fs", ref, features=fs.features[:1])
    with pytest.raises(core.LatentError, match=r"features must have shape"):
        L.Latent(fs.tensor, "fs", ref, features=fs.features[..., :16])
    with pytest.raises(core.LatentError, match="features_img contains NaN"):
        L.Latent(fs.tensor, "fs", ref, features=fs.features, features_img=fs.features_img * float("nan"))
    with pytest.raises(core.LatentError, match="features must be a floating-point"):
        L.Latent(fs.tensor, "fs", ref, features=fs.features.long())
    with pytest.raises(core.LatentError, match="only fs latents carry features"):
        L.Latent(fs.tensor, "w+", ref, features=fs.features)
    other = tiny_generator("stylegan2", img_resolution=64, synthesis={"channel_max": 8})
    with pytest.raises(core.LatentError, match=r"F channels .*\(10, 16, 16, 3\).* needs .*\(10, 16, 8, 3\)"):
        L.synthesize(other, fs)


def test_fs_converts_to_wplus_and_refuses_ws_use(G64, wplus):
    fs = L.fs_from_wplus(G64, wplus)
    assert torch.equal(L.convert_latent(G64, fs, "w+").tensor, wplus.tensor)
    assert L.convert_latent(G64, wplus, "fs").fs_skip == "drop"
    with pytest.raises(core.LatentError, match="fs latent .* Render it with Synthesize, or convert it to w\\+"):
        L.latent_to_ws(G64, fs)
    with pytest.raises(core.LatentError, match="already an fs latent"):
        L.fs_from_wplus(G64, fs)


# ------------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("skip", L.FS_SKIPS)
def test_fs_file_round_trip_is_bit_exact(G64, wplus, skip, tmp_path):
    fs = L.fs_from_wplus(G64, wplus, skip=skip)
    fs = L.Latent(fs.tensor, "fs", fs.generator, features=fs.features + 0.1 * torch.randn(fs.features.shape),
                  features_img=fs.features_img)    # an F no W+ code makes
    back = L.load_latent(L.save_latent(fs, tmp_path / "fs.safetensors"))
    assert back.space == "fs" and back.generator == fs.generator and back.fs_skip == skip
    assert torch.equal(back.tensor, fs.tensor) and torch.equal(back.features, fs.features)
    assert (back.features_img is None) if skip == "drop" else torch.equal(back.features_img, fs.features_img)
    assert torch.equal(L.synthesize(G64, back), L.synthesize(G64, fs))


def _fs_file(tmp_path, fs: L.Latent, name: str, *, tensors=None, **meta):
    t = {"latent": fs.tensor, "features": fs.features}
    if fs.features_img is not None:
        t["features_img"] = fs.features_img
    t.update(tensors or {})
    t = {k: v for k, v in t.items() if v is not None}
    fields = {"fs_skip": fs.fs_skip, **meta}
    return write_tagged_safetensors(tmp_path / name, t, latent_metadata(fs.generator.to_dict(), space="fs", **fields))


def test_hostile_and_inconsistent_fs_files_are_refused(G64, wplus, tmp_path):
    keep, drop = L.fs_from_wplus(G64, wplus, skip="keep"), L.fs_from_wplus(G64, wplus, skip="drop")
    assert torch.equal(L.load_latent(_fs_file(tmp_path, keep, "ok.safetensors")).features, keep.features)
    cases = {
        "no_features": (drop, {"features": None}, {}, "without its 'features' tensor"),
        "skip_says_drop": (keep, {}, {"fs_skip": "drop"}, "fs_skip is 'drop' but the file holds"),
        "skip_says_keep": (drop, {}, {"fs_skip": "keep"}, "fs_skip is 'keep' but the file lacks"),
        "skip_missing": (drop, {}, {"fs_skip": None}, "fs_skip"),
        "skip_unknown": (drop, {}, {"fs_skip": "both"}, "fs_skip"),
        "batch_mismatch": (drop, {"features": drop.features[:1]}, {}, r"features must have shape \[2, C, 32, 32\]"),
        "not_32px": (drop, {"features": torch.zeros(2, 16, 16, 16)}, {}, "features must have shape"),
        "flat": (drop, {"features": torch.zeros(2, 16 * 32 * 32)}, {}, "features must have shape"),
        "nan": (drop, {"features": torch.full((2, 16, 32, 32), float("nan"))}, {}, "features contains NaN"),
        "int": (drop, {"features": torch.zeros(2, 16, 32, 32, dtype=torch.int32)}, {}, "dtype torch.int32"),
        "img_channels": (keep, {"features_img": torch.zeros(2, 99, 32, 32)}, {}, "features_img must have shape"),
        "stylegan3": (drop, {}, {"generator": {**drop.generator.to_dict(), "arch": "stylegan3"}},
                      "needs a StyleGAN2 generator of at least 64 px"),
        "num_ws_too_small": (drop, {"latent": drop.tensor[:, :8]},
                             {"generator": {**drop.generator.to_dict(), "num_ws": 8}}, "at least 64 px"),
    }
    for name, (fs, tensors, meta, message) in cases.items():
        path = _fs_file(tmp_path, fs, f"{name}.safetensors", tensors=tensors, **meta)
        with pytest.raises(core.LatentFileError, match=message):
            L.load_latent(path)
    # A w+ file carrying features is not an fs latent in disguise.
    path = write_tagged_safetensors(tmp_path / "wplus_features.safetensors",
                                    {"latent": wplus.tensor, "features": drop.features},
                                    latent_metadata(wplus.generator.to_dict(), space="w+"))
    with pytest.raises(core.LatentFileError, match=r"a w\+ latent file holds fs tensors \['features'\]"):
        L.load_latent(path)


# ------------------------------------------------------------------------------------------------
# Interpolation


def test_fs_interpolation_endpoints_are_exact(G64):
    a = L.fs_from_wplus(G64, L.sample_latents(G64, [1, 2], space="w+"), skip="keep")
    b = L.fs_from_wplus(G64, L.sample_latents(G64, [5], space="w+"), skip="keep")
    frames = L.interpolate_latents(a, b, 5)
    assert frames.space == "fs" and frames.batch_size == 10 and frames.fs_skip == "keep"
    for name in ("tensor", "features", "features_img"):
        f, x, y = getattr(frames, name), getattr(a, name), getattr(b, name)
        assert torch.equal(f[0], x[0]) and torch.equal(f[4], y[0])
        assert torch.equal(f[5], x[1]) and torch.equal(f[9], y[0])
        assert torch.allclose(f[2], (x[0].double() + y[0].double()).div(2).float(), atol=1e-6)
    images = L.synthesize(G64, frames, chunk_size=1)  # one at a time, as below: the same arithmetic
    assert torch.equal(images[0], L.synthesize(G64, a, chunk_size=1)[0])
    assert torch.equal(images[4], L.synthesize(G64, b, chunk_size=1)[0])


def test_fs_interpolation_refuses_mismatches(G64):
    w = L.sample_latents(G64, [1], space="w+")
    keep, drop = L.fs_from_wplus(G64, w, skip="keep"), L.fs_from_wplus(G64, w, skip="drop")
    with pytest.raises(core.LatentError, match="keeps the 32 px skip with one that drops it"):
        L.interpolate_latents(keep, drop, 3)
    with pytest.raises(core.LatentError, match="cannot interpolate a fs latent with a w\\+ latent"):
        L.interpolate_latents(drop, w, 3, G=G64)
    twin = tiny_generator("stylegan2", img_resolution=64, seed=9)
    with pytest.raises(core.LatentError, match="different generators"):
        L.interpolate_latents(drop, L.fs_from_wplus(twin, L.sample_latents(twin, [1], space="w+")), 3)
    with pytest.raises(core.LatentError, match="choose lerp or auto"):
        L.interpolate_latents(drop, drop, 3, method="slerp")
    with pytest.raises(core.LatentError, match="layer ranges apply to w\\+ latents"):
        L.interpolate_latents(drop, drop, 3, layer_start=2)


# ------------------------------------------------------------------------------------------------
# The FS embedding

P = pytest.importorskip("core.losses.perceptual")
from core.edits import fs_embedding as FS  # noqa: E402
from core.edits import inversion as I  # noqa: E402


@pytest.fixture(scope="module")
def nets():
    return {"lpips_vgg": P.random_lpips("vgg", seed=0)}


@pytest.fixture(scope="module")
def prior(G64):
    return I.compute_w_prior(G64, 20_000)


@pytest.fixture(scope="module")
def photo():
    """A target the tiny generator's W+ cannot reach exactly: another generator's image."""
    other = tiny_generator("stylegan2", img_resolution=64, seed=3)
    z = torch.randn([1, other.z_dim], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return other.synthesis(other.mapping(z, None), noise_mode="const")


@pytest.fixture(scope="module")
def ii2s(G64, photo, nets, prior):
    return I.invert_image(G64, photo, method="ii2s", num_steps=4, lr=0.05, perceptual=nets, prior=prior)


def _state(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def _assert_unchanged(G, before):
    after = G.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(p.requires_grad or p.grad is not None for p in G.parameters())


def _wplus_loss(G, photo, ws, nets, prior) -> float:
    """The FS embedding's loss (MSE + LPIPS + 1e-3 prior) of the W+ image of `ws`, stored noise maps."""
    cfg = I.InversionConfig(num_steps=1, lr=0.01, mse_weight=1.0, lpips_weight=1.0, prior_weight=1e-3)
    with torch.no_grad():
        total, _ = I.ReconstructionLoss(cfg, photo, None, nets, prior)(G.synthesis(ws, noise_mode="const"), ws, {})
    return float(total)


@pytest.mark.slow
@pytest.mark.parametrize("skip", L.FS_SKIPS)
def test_embed_fs_lowers_the_loss_below_the_wplus_embedding(G64, photo, nets, prior, ii2s, skip):
    before = _state(G64)
    w_loss = _wplus_loss(G64, photo, ii2s.latent.tensor, nets, prior)
    r = FS.embed_fs(G64, photo, ii2s.latent, num_steps=8, lr=0.03, skip=skip, perceptual=nets, prior=prior)
    assert r.latent.space == "fs" and r.latent.fs_skip == skip and r.steps == 8 and len(r.history) == 8
    if skip == "keep":   # the start is the W+ image itself ('drop' starts from it without the 32 px skip)
        assert r.start_losses["loss"] == pytest.approx(w_loss, rel=1e-5)
    else:
        assert r.start_losses["loss"] != pytest.approx(w_loss, rel=1e-3)
    assert r.losses["loss"] < 0.9 * w_loss
    # The codes before S are frozen; the result renders to the reported reconstruction.
    assert torch.equal(r.latent.tensor[:, :7], ii2s.latent.tensor[:, :7])
    assert not torch.equal(r.latent.tensor[:, 7:], ii2s.latent.tensor[:, 7:])
    assert torch.allclose(L.synthesize(G64, r.latent), r.image, atol=1e-5)
    assert "fs: 8 steps" in r.report() and "(W+ start)" in r.report()
    _assert_unchanged(G64, before)


@pytest.mark.slow
def test_the_F_regulariser_is_a_switch_off_by_default(G64, photo, nets, prior, ii2s):
    off = FS.embed_fs(G64, photo, ii2s.latent, num_steps=2, perceptual=nets, prior=prior)
    assert FS.DEFAULTS.apply_l_F is False and "l_F" not in off.losses   # what the reference code does
    on = FS.embed_fs(G64, photo, ii2s.latent, num_steps=2, apply_l_F=True, l_F_lambda=1e4, perceptual=nets,
                     prior=prior)
    assert on.start_losses["l_F"] == 0 and on.losses["l_F"] > 0
    f0 = L.fs_from_wplus(G64, ii2s.latent).features
    assert float((on.latent.features - f0).square().mean()) < float((off.latent.features - f0).square().mean())


@pytest.mark.slow
def test_embed_fs_continues_an_fs_latent_and_reports_progress(G64, photo, nets, prior, ii2s):
    seen = []
    start = L.fs_from_wplus(G64, ii2s.latent, skip="keep")
    r = FS.embed_fs(G64, photo, start, num_steps=3, perceptual=nets, prior=prior, step_offset=10, total_steps=13,
                    callback=lambda p: seen.append((p.step, p.total, p.phase, sorted(p.params))))
    assert seen == [(11 + i, 13, "fs", ["features", "ws"]) for i in range(3)]
    assert r.latent.fs_skip == "keep" and torch.equal(r.latent.features_img, start.features_img)
    from core.optimize import FINISH

    r = FS.embed_fs(G64, photo, start, num_steps=5, perceptual=nets, prior=prior, callback=lambda p: FINISH)
    assert r.steps == 1


@pytest.mark.slow
def test_embed_fs_cancel_leaves_the_generator_unchanged(G64, photo, nets, prior, ii2s):
    before = _state(G64)

    class Cancelled(Exception):
        pass

    def cancel(p):
        if p.step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        FS.embed_fs(G64, photo, ii2s.latent, num_steps=5, perceptual=nets, prior=prior, callback=cancel)
    _assert_unchanged(G64, before)


def test_embed_fs_errors(G2, G3, G64, photo, nets, prior):
    w = L.sample_latents(G64, [0], space="w+")
    with pytest.raises(core.LatentError, match="stylegan3: FS latents"):
        FS.embed_fs(G3, photo, L.sample_latents(G3, [0], space="w+"), num_steps=1, perceptual=nets)
    with pytest.raises(core.LatentError, match="renders at 32 px"):
        FS.embed_fs(G2, photo, L.sample_latents(G2, [0], space="w+"), num_steps=1, perceptual=nets)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        FS.embed_fs(G64, photo, w, lr=0.0, perceptual=nets, prior=prior)
    with pytest.raises(ValueError, match="skip must be one of"):
        FS.embed_fs(G64, photo, w, skip="half", perceptual=nets, prior=prior)
    with pytest.raises(core.LatentError, match="2 entries for 1 images"):
        FS.embed_fs(G64, photo, L.sample_latents(G64, [0, 1], space="w+"), num_steps=1, perceptual=nets,
                    prior=prior)
    with pytest.raises(core.LatentError, match="not a z latent"):
        FS.embed_fs(G64, photo, L.sample_latents(G64, [0], space="z"), num_steps=1, perceptual=nets, prior=prior)
    with pytest.raises(FloatingPointError, match="the FS embedding diverged at step 1"):
        FS.embed_fs(G64, photo, w, num_steps=2, lr=1e30, l_F_lambda=1e38, apply_l_F=True,
                    perceptual={"lpips_vgg": _NaNLPIPS()}, prior=prior)


class _NaNLPIPS(torch.nn.Module):
    def forward(self, x, y):
        return torch.full((x.shape[0], 1, 1, 1), float("nan")) + 0 * x.sum()


# ------------------------------------------------------------------------------------------------
# Nodes


def _to_comfy(images):
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()


@pytest.fixture()
def invert_node(pack, nets, prior, monkeypatch):
    import sys

    mod = sys.modules[pack.__name__ + ".nodes.inversion"]
    monkeypatch.setattr(mod, "perceptual_nets", lambda method: dict(nets))
    monkeypatch.setattr(mod, "prior_for", lambda G, callback=None: prior)
    monkeypatch.setattr(mod.comfy_env, "free_memory", lambda: None)
    return pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"](), mod


@pytest.mark.slow
def test_invert_image_node_fs_method(invert_node, G64, photo, monkeypatch):
    node, mod = invert_node
    assert "ii2s+fs" in node.INPUT_TYPES()["required"]["method"][0]
    seen = []
    real = mod.run_optimisation

    def recording(total, run, **kw):  # the progress records the node's bar receives
        return real(total, lambda cb: run(lambda p, *a: seen.append((p.step, p.total, p.phase)) or cb(p, *a)), **kw)

    monkeypatch.setattr(mod, "run_optimisation", recording)
    out = node.invert(G64, _to_comfy(photo), "ii2s+fs", num_steps=2, seed=0, tune_steps=3)
    latent, G_out, images, report, delta = out["result"]
    assert latent.space == "fs" and latent.fs_skip == "drop" and G_out is G64 and delta is None
    assert images.shape == (1, 64, 64, 3) and "ii2s: 2 steps" in report and "fs: 3 steps" in report
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5] and {t for _, t, _ in seen} == {5}
    assert [p for _, _, p in seen] == ["latent"] * 2 + ["fs"] * 3
    # The IMAGE is the fs latent's render (8-bit levels, as every IMAGE the pack outputs).
    assert torch.allclose(L.synthesize(G64, latent).clamp(-1, 1), images.permute(0, 3, 1, 2) * 2 - 1, atol=1 / 127)


def test_invert_image_node_fs_needs_a_32px_block(invert_node, G2, G3):
    node, _ = invert_node
    for G, message in ((G2, "renders at 32 px"), (G3, "stylegan3: FS latents")):
        with pytest.raises(ValueError, match=message):   # the pack's LatentError (the pack imports its own core)
            node.invert(G, torch.rand(1, 32, 32, 3), "ii2s+fs", num_steps=1, seed=0, tune_steps=1)


def test_a_stopped_fs_inversion_keeps_its_fs_latent(invert_node, G64, wplus):
    _, mod = invert_node
    fs = L.fs_from_wplus(G64, wplus)
    state = mod.RunState(last_params={"ws": fs.tensor, "features": fs.features})
    where = mod.save_stopped_inversion(G64, "ii2s+fs", state)
    path = next(mod.comfy_env.output_dir().glob("inversions/ii2s+fs_stopped*"))
    assert path.name in where
    back = L.load_latent(path)
    assert back.space == "fs" and torch.equal(back.features, fs.features)


def test_latent_nodes_carry_fs_latents(pack, G64):
    nodes = pack.NODE_CLASS_MAPPINGS
    fs = L.fs_from_wplus(G64, L.sample_latents(G64, [1, 2], space="w+"), skip="keep")
    out = nodes["SGS_Synthesize"]().synthesize(G64, fs, "const")["result"][0]
    assert torch.allclose(out.permute(0, 3, 1, 2) * 2 - 1, L.synthesize(G64, fs).clamp(-1, 1), atol=1 / 127)
    saved = nodes["SGS_SaveLatent"]().save(fs, "latents/fs")
    assert "fs latent" in saved["ui"]["text"][0] and "skip 'keep'" in saved["ui"]["text"][0]
    import sys

    comfy_env = sys.modules[pack.__name__ + ".nodes.comfy_env"]
    name = next(n for n in comfy_env.list_latent_files(L.LATENT_FORMAT) if "fs" in n)
    back, = nodes["SGS_LoadLatent"]().load(name, generator=G64)
    assert back.space == "fs" and torch.equal(back.features, fs.features)
    assert torch.equal(back.features_img, fs.features_img)
    frames, = nodes["SGS_InterpolateLatents"]().interpolate(back, fs, 3, "auto")
    assert frames.batch_size == 6 and torch.equal(frames.features[0], fs.features[0])
    with pytest.raises(ValueError, match="stylegan3: FS latents"):
        nodes["SGS_LoadLatent"]().load(name, generator=tiny_generator("stylegan3"))
