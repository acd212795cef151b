"""Inversion: every method reconstructs an image the generator made, cancels cleanly, never touches G."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

import core
from core import deltas as D
from core.edits import inversion as I
from conftest import tiny_generator

P = pytest.importorskip("core.losses.perceptual")


@pytest.fixture(scope="module")
def nets():
    return {"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
            "vgg16_features": P.random_vgg16_features(seed=2)}


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2")


@pytest.fixture(scope="module")
def prior(G):
    return I.compute_w_prior(G, 20_000)


@pytest.fixture(scope="module")
def target(G):
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None, truncation_psi=0.7), noise_mode="const")


def state(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def assert_unchanged(G, before):
    after = G.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert not any(p.requires_grad for p in G.parameters())


# Random perceptual networks give small LPIPS values, so PTI's early stop (LPIPS-AlexNet <= 0.06, meant for
# the real network) would end tuning at once: the tests switch it off.
PTI_NO_EARLY_STOP = dataclasses.replace(I.METHOD_DEFAULTS["pti"], tune_lpips_stop=0.0)
# Steps and the PSNR each method must reach on the tiny 32 px generator (start: ~11-13 dB at the mean w).
RECIPES = {"image2stylegan": (120, {"lr": 0.05}, 20.0), "projector": (120, {}, 20.0), "ii2s": (120, {"lr": 0.05}, 20.0),
           "pti": (60, {"tune_steps": 40, "config": PTI_NO_EARLY_STOP}, 20.0)}


@pytest.mark.slow
@pytest.mark.parametrize("method", I.METHODS)
def test_each_method_reconstructs_a_generated_image(G, target, nets, prior, method):
    steps, kwargs, min_psnr = RECIPES[method]
    before = state(G)
    with torch.no_grad():
        start = G.synthesis(G.w_avg.reshape(1, 1, -1).repeat(2, G.num_ws, 1))
    start_psnr = I.psnr(start, target)
    start_lpips = nets["lpips_vgg"](start, target)
    seen = []
    r = I.invert_image(G, target, method=method, num_steps=steps, perceptual=nets, prior=prior,
                       callback=seen.append, **kwargs)
    assert_unchanged(G, before)
    assert r.image.shape == target.shape and r.latent.batch_size == 2
    assert r.latent.space == ("w" if method in ("projector", "pti") else "w+")
    assert (r.psnr > min_psnr).all() and (r.psnr > start_psnr + 5).all(), (start_psnr, r.psnr)
    assert (r.lpips < start_lpips * 0.7).all(), (start_lpips, r.lpips)
    assert [p.step for p in seen] == list(range(1, len(seen) + 1)) and len(seen) == r.steps
    assert seen[0].total == steps + kwargs.get("tune_steps", 0)
    # The reconstruction is what the returned generator renders from the returned latent, which is tied to it
    # (rendering it there is not "a latent made for another generator", PTI's tuned copy included).
    assert r.latent.generator.fingerprint == core.generator_ref(r.generator).fingerprint
    again = core.synthesize(r.generator, r.latent)
    torch.testing.assert_close(again, r.image, atol=1e-5, rtol=0)
    if method == "pti":
        assert r.generator is not G and r.delta is not None and r.delta.kind == "pti"
        assert {p.phase for p in seen} == {"latent", "tune"}
        tuned = D.apply_weight_delta(G, r.delta)  # the stored delta reproduces the tuned generator
        torch.testing.assert_close(core.synthesize(tuned, r.latent), r.image, atol=2e-3, rtol=0)
        assert_unchanged(G, before)
    else:
        assert r.generator is G and r.delta is None
    assert "PSNR" in r.report() and f"{r.steps} steps" in r.report()


@pytest.mark.slow
def test_cancel_mid_run_leaves_generator_untouched(G, target, nets):
    before = state(G)

    class Cancelled(Exception):
        pass

    def cancel_at_5(p):
        if p.step == 5:
            raise Cancelled

    for method in ("pti", "ii2s"):
        with pytest.raises(Cancelled):
            I.invert_image(G, target, method=method, num_steps=3 if method == "pti" else 20, tune_steps=20,
                           perceptual=nets, prior=I.compute_w_prior(G, 2000), callback=cancel_at_5,
                           config=PTI_NO_EARLY_STOP if method == "pti" else None)
        assert_unchanged(G, before)


@pytest.mark.slow
def test_works_under_inference_mode_with_a_generator_loaded_there(target, nets):
    # ComfyUI runs nodes, including the loader, under torch.inference_mode().
    with torch.inference_mode():
        G = tiny_generator("stylegan2")
        r = I.invert_image(G, target.clone(), method="pti", num_steps=5, tune_steps=5, perceptual=nets,
                           config=PTI_NO_EARLY_STOP)
    assert r.steps == 10 and torch.isfinite(r.image).all()
    assert r.history[0]["loss"] != r.history[-1]["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ii2s", "image2stylegan", "projector"])
def test_every_input_may_come_from_inference_mode(method):
    """In ComfyUI the generator, the perceptual networks, the II2S prior and the image are all made under
    torch.inference_mode() by earlier nodes; autograd must not touch any of them."""
    with torch.inference_mode():
        G = tiny_generator("stylegan2")
        z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5))
        image = G.synthesis(G.mapping(z, None), noise_mode="const")
        inference_nets = {"lpips_vgg": P.random_lpips("vgg", seed=0), "vgg16_features": P.random_vgg16_features(2)}
        prior = I.compute_w_prior(G, 2000)
        assert prior.components.is_inference()
        r = I.invert_image(G, image, method=method, num_steps=4, perceptual=inference_nets, prior=prior)
    assert r.steps == 4 and torch.isfinite(r.image).all()


@pytest.mark.slow
def test_mask_ignores_pixels_outside_it(G, target, nets):
    mask = torch.zeros([1, 32, 32])
    mask[:, 8:24, 8:24] = 1
    changed = target.clone()
    changed[:, :, :4] = 1.0  # differs only where the mask is 0
    # Pixel losses ignore them exactly; perceptual networks still see them through their receptive fields
    # (the reconstruction is composited over the target outside the mask), so check the MSE-only recipe.
    mse_only = dataclasses.replace(I.METHOD_DEFAULTS["image2stylegan"], vgg_weight=0.0, num_steps=15)
    kwargs = dict(method="image2stylegan", perceptual=nets, config=mse_only)
    a = I.invert_image(G, target, mask=mask, **kwargs)
    b = I.invert_image(G, changed, mask=mask, **kwargs)
    torch.testing.assert_close(a.latent.tensor, b.latent.tensor, atol=0, rtol=0)
    c = I.invert_image(G, changed, **kwargs)
    assert not torch.equal(a.latent.tensor, c.latent.tensor)


@pytest.mark.slow
def test_projector_keep_noise_returns_noise_delta(G, target, nets):
    before = state(G)
    cfg = dataclasses.replace(I.METHOD_DEFAULTS["projector"], keep_noise=True, num_steps=30)
    r = I.invert_image(G, target, method="projector", config=cfg, perceptual=nets)
    assert r.delta is not None and r.delta.kind == "noise"
    assert all(k.endswith("noise_const") for k in r.delta.tensors)
    assert set(r.delta.tensors) == {f"synthesis.{n}.noise_const" for n in G.synthesis.noise_layer_names}
    for k in r.delta.tensors:  # the stored maps are zero-mean, unit-variance, as the projector keeps them
        v = r.generator.state_dict()[k]
        assert abs(float(v.mean())) < 1e-4 and abs(float(v.square().mean()) - 1) < 1e-3
    assert_unchanged(G, before)


def test_target_preparation_notes_and_errors():
    x = torch.rand(1, 4, 64, 64) * 2 - 1
    y, notes = I.prepare_target(x, 32)
    assert y.shape == (1, 3, 32, 32) and any("alpha" in n for n in notes) and any("resized" in n for n in notes)
    torch.testing.assert_close(y[0, 0], x[0, 0].reshape(32, 2, 32, 2).mean([1, 3]), atol=1e-6, rtol=0)  # area
    y, notes = I.prepare_target(torch.zeros(2, 1, 32, 32), 32)
    assert y.shape == (2, 3, 32, 32) and notes == ["grayscale image repeated to RGB"]
    _, notes = I.prepare_target(torch.zeros(1, 3, 40, 32), 32)
    assert "not square" in notes[0]
    with pytest.raises(ValueError, match="NaN"):
        I.prepare_target(torch.full([1, 3, 32, 32], float("nan")), 32)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        I.prepare_target(torch.zeros(3, 32, 32), 32)
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        I.prepare_target(torch.zeros(1, 2, 32, 32), 32)
    with pytest.raises(ValueError, match="mask is empty"):
        I.prepare_mask(torch.zeros(1, 32, 32), 1, 32)
    with pytest.raises(ValueError, match="mask must be"):
        I.prepare_mask(torch.ones(3, 32, 32), 2, 32)


def test_invert_image_argument_errors(G, target, nets):
    with pytest.raises(ValueError, match="method must be one of"):
        I.invert_image(G, target, method="hyperstyle", perceptual=nets)  # e4e is a method since issue 19
    with pytest.raises(ValueError, match="lr > 0"):
        I.invert_image(G, target, method="ii2s", lr=-1.0, perceptual=nets)
    with pytest.raises(core.LatentError, match="w or w\\+"):
        I.invert_image(G, target, method="ii2s", num_steps=1, perceptual=nets,
                       init_latent=core.sample_latents(G, [0, 1], space="z"), prior=I.compute_w_prior(G, 1000))

    class NaNFeatures(torch.nn.Module):  # stands in for anything that makes the loss non-finite
        def forward(self, x):
            return [x * float("nan")]

    with pytest.raises(FloatingPointError, match="diverged at step 0"):
        I.invert_image(G, target, method="image2stylegan", num_steps=5, perceptual={"vgg16_features": NaNFeatures()})


def test_init_latent_starts_there(G, target, nets):
    lat = core.sample_latents(G, [3, 4], space="w+")
    r = I.invert_image(G, target, method="image2stylegan", num_steps=1, lr=1e-9, perceptual=nets, init_latent=lat)
    torch.testing.assert_close(r.latent.tensor, lat.tensor, atol=1e-6, rtol=0)


def test_projector_schedule_matches_reference_formula():
    lr = 0.1
    assert I.projector_lr(0.0, lr, 0.05, 0.25) == 0.0
    assert I.projector_lr(0.025, lr, 0.05, 0.25) == pytest.approx(0.05)       # half-way up the ramp
    assert I.projector_lr(0.5, lr, 0.05, 0.25) == pytest.approx(0.1)
    assert I.projector_lr(0.875, lr, 0.05, 0.25) == pytest.approx(0.05)      # half-way down the cosine
    assert I.projector_lr(0.999, lr, 0.05, 0.25) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.004 * math.pi)))


def test_noise_regularizer_values():
    flat = {"a": torch.ones(1, 1, 16, 16)}
    # A constant map: autocorrelation 1 at every octave (16 and 8 px), x and y -> 4 terms of 1.
    assert float(I.noise_regularizer(flat)) == pytest.approx(4.0)
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)])
    assert float(I.noise_regularizer({"b": checker[None, None]})) == pytest.approx(2.0)  # (-1)² twice
    white = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    assert float(I.noise_regularizer({"c": white})) < 1e-3


def test_w_stats_follow_nvidia_definition(G):
    w_avg, w_std = I.w_stats(G, 500, seed=123)
    z = torch.from_numpy(np.random.RandomState(123).randn(500, G.z_dim)).float()
    w = G.mapping(z, None)[:, 0].double()
    torch.testing.assert_close(w_avg, w.mean(0).float(), atol=1e-6, rtol=0)
    assert w_std == pytest.approx(float(((w - w.mean(0)).square().sum() / 500).sqrt()), rel=1e-6)


def test_w_prior_whitens_mapped_samples_and_round_trips(G, prior, tmp_path):
    w = G.mapping(torch.randn(20_000, G.z_dim, generator=torch.Generator().manual_seed(9)), None)[:, 0]
    v = torch.nn.functional.leaky_relu(w, 5.0) - prior.mean
    coords = (v @ prior.components.t()) / prior.stdev
    torch.testing.assert_close(coords.mean(0), torch.zeros(G.w_dim), atol=0.05, rtol=0)
    torch.testing.assert_close(coords.std(0), torch.ones(G.w_dim), atol=0.05, rtol=0)
    assert float(prior.loss(w[:, None], min_stdev=0)) == pytest.approx(float(coords.square().mean()), rel=1e-4)
    path = I.save_w_prior(prior, tmp_path / "g.pkl.ii2s-prior")
    loaded = I.load_w_prior(path, G)
    torch.testing.assert_close(loaded.components, prior.components)
    assert I.load_w_prior(path, tiny_generator("stylegan2", seed=7)) is None  # another generator: recompute
    assert I.load_w_prior(tmp_path / "missing", G) is None
    (tmp_path / "bad").write_bytes(b"\x00" * 20)
    assert I.load_w_prior(tmp_path / "bad", G) is None


def test_weight_delta_files_and_base_checks(G, tmp_path):
    tuned = D.clone_generator(G)
    with torch.no_grad():
        tuned.synthesis.b8.conv0.weight.add_(0.5)
    delta = D.compute_weight_delta(G, tuned, dtype="float32")
    assert list(delta.tensors) == ["synthesis.b8.conv0.weight"]
    path = D.save_weight_delta(delta, tmp_path / "d.safetensors")
    loaded = D.load_weight_delta(path)
    assert loaded.base == delta.base and loaded.kind == "pti"
    G2 = D.apply_weight_delta(G, loaded)
    torch.testing.assert_close(G2.synthesis.b8.conv0.weight, tuned.synthesis.b8.conv0.weight)
    G3 = D.apply_weight_delta(G, loaded, scale=-1.0)
    torch.testing.assert_close(G3.synthesis.b8.conv0.weight, G.synthesis.b8.conv0.weight - 0.5)
    assert not torch.equal(G.synthesis.b8.conv0.weight, G2.synthesis.b8.conv0.weight)  # base untouched
    with pytest.raises(core.CheckpointError, match="different weights"):
        D.apply_weight_delta(tiny_generator("stylegan2", seed=3), loaded)
    with pytest.raises(core.CheckpointError, match="does not fit"):
        D.apply_weight_delta(tiny_generator("stylegan3"), loaded)
    core.save_latent(core.sample_latents(G, [0]), tmp_path / "latent.safetensors")
    with pytest.raises(core.CheckpointError, match="not a StyleGAN Studio weight delta"):
        D.load_weight_delta(tmp_path / "latent.safetensors")
    with pytest.raises(FileNotFoundError):
        D.load_weight_delta(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------------------------------------
# Nodes (headless)


@pytest.fixture()
def invert_node(pack, nets, monkeypatch):
    mod = sys.modules[pack.__name__ + ".nodes.inversion"]
    monkeypatch.setattr(mod, "perceptual_nets", lambda method: {k: nets[k] for k in I.PERCEPTUAL_NEEDS[method]})
    freed = []
    monkeypatch.setattr(mod.comfy_env, "free_memory", lambda: freed.append(True))
    monkeypatch.setitem(mod.I.METHOD_DEFAULTS, "pti", dataclasses.replace(mod.I.METHOD_DEFAULTS["pti"],
                                                                          tune_lpips_stop=0.0))
    return pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"](), mod, freed


def to_comfy(images):
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()


@pytest.mark.slow
def test_invert_node_outputs_and_report(invert_node, G, target):
    node, mod, freed = invert_node
    rgba = torch.cat([to_comfy(target), torch.ones(2, 32, 32, 1)], dim=-1)
    out = node.invert(G, rgba, "pti", num_steps=4, seed=0, tune_steps=3, preview_every=2)
    latent, G2, images, report, delta = out["result"]
    assert latent.space == "w" and latent.batch_size == 2 and images.shape == (2, 32, 32, 3)
    assert G2 is not G and delta.kind == "pti" and out["ui"]["text"] == [report]
    assert "alpha channel ignored" in report and "pti: 7 steps" in report and "image 1: PSNR" in report
    assert freed  # memory released after the run
    out = node.invert(G, to_comfy(target)[:1], "image2stylegan", num_steps=2, seed=0)
    assert out["result"][1] is G and out["result"][4] is None


def test_invert_node_ii2s_prior_cached_next_to_checkpoint(invert_node, G, target, tmp_path, monkeypatch):
    node, mod, _ = invert_node
    path = core.save_generator(G, tmp_path / "models" / "stylegan" / "g.safetensors")
    G_file = core.load_generator(path)
    mod._priors.clear()
    calls = []
    real = mod.I.compute_w_prior
    monkeypatch.setattr(mod.I, "compute_w_prior", lambda G_, **kw: calls.append(1) or real(G_, 2000))
    node.invert(G_file, to_comfy(target)[:1], "ii2s", num_steps=2, seed=0)
    cache = path.with_name(path.name + ".ii2s-prior")
    assert cache.is_file() and calls == [1]
    mod._priors.clear()  # a new session reads the file instead of recomputing
    node.invert(G_file, to_comfy(target)[:1], "ii2s", num_steps=2, seed=0)
    assert calls == [1]
    assert "g.safetensors" in pack_models(tmp_path) and not any("prior" in n for n in pack_models(tmp_path))


def pack_models(tmp_path):
    return [p.name for p in (tmp_path / "models" / "stylegan").iterdir()
            if p.suffix in (".pkl", ".pt", ".pth", ".safetensors")]


def test_invert_node_cancel_frees_memory(invert_node, G, target, monkeypatch):
    node, mod, freed = invert_node

    class Interrupted(Exception):
        pass

    calls = []

    def interrupt_at_3():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted

    monkeypatch.setattr(mod.comfy_env, "throw_if_interrupted", interrupt_at_3)
    before = state(G)
    with pytest.raises(Interrupted):
        node.invert(G, to_comfy(target), "projector", num_steps=50, seed=0)
    assert len(calls) == 3 and freed
    assert_unchanged(G, before)


def test_invert_node_mask_modes(invert_node, G, target):
    node, _, _ = invert_node
    img = to_comfy(target)[:1]
    keep = torch.zeros(1, 32, 32)
    keep[:, 4:28, 4:28] = 1
    a = node.invert(G, img, "image2stylegan", num_steps=3, seed=0, mask=keep)["result"][0]
    b = node.invert(G, img, "image2stylegan", num_steps=3, seed=0, mask=1 - keep, mask_mode="ignore inside mask")
    torch.testing.assert_close(a.tensor, b["result"][0].tensor, atol=0, rtol=0)


def test_load_image_mask_of_an_opaque_photo_means_no_mask(invert_node, G, target):
    """ComfyUI's Load Image gives a 64x64 all-zero MASK for a photo without transparency; with the default mode
    that is 'no mask' (the whole image is fitted, as without one), with a note, not an error."""
    node, _, _ = invert_node
    img = to_comfy(target)[:1]
    plain = node.invert(G, img, "image2stylegan", num_steps=3, seed=0)["result"]
    for mode in ("fit inside mask", "ignore inside mask"):
        out = node.invert(G, img, "image2stylegan", num_steps=3, seed=0, mask=torch.zeros(1, 64, 64), mask_mode=mode)
        torch.testing.assert_close(out["result"][0].tensor, plain[0].tensor, atol=0, rtol=0)
        assert "the mask is all zero, which is what Load Image gives for a photo without transparency: fitted the " \
               "whole image" in out["result"][3]


def test_delta_nodes_save_and_apply(pack, invert_node, G, target):
    node, _, _ = invert_node
    _, G2, _, _, delta = node.invert(G, to_comfy(target)[:1], "pti", num_steps=2, seed=0, tune_steps=2)["result"]
    saved = pack.NODE_CLASS_MAPPINGS["SGS_SaveWeightDelta"]().save(delta, "deltas/pti")
    path = saved["result"][0]
    assert path.endswith(".safetensors") and "saved to" in saved["ui"]["text"][0]
    apply_cls = pack.NODE_CLASS_MAPPINGS["SGS_ApplyWeightDelta"]
    names = apply_cls.INPUT_TYPES()["required"]["delta_file"][0]
    name = next(n for n in names if n.startswith("deltas/pti"))
    assert apply_cls.VALIDATE_INPUTS(name) is True and "not found" in apply_cls.VALIDATE_INPUTS("nope.safetensors")
    G3, info = apply_cls().apply(G, name, 1.0)["result"]
    lat = core.sample_latents(G, [1])
    torch.testing.assert_close(core.synthesize(G3, lat), core.synthesize(G2, lat), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="only Invert Image with method 'pti'"):
        pack.NODE_CLASS_MAPPINGS["SGS_SaveWeightDelta"]().save(None, "x")
