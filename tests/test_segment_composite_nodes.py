"""The Segment Composite node headless: mask-only and parser modes on a tiny 64 px generator with stand-in LPIPS/VGG
and a random face parser, IMAGE or fs-latent inputs, its input errors, live progress through the shared runner, the
embedding cache (in memory across a Stop and a re-queue, on disk when asked, emptied with the pack's caches)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

import core
from conftest import tiny_generator

STEPS = dict(w_steps=3, fs_steps=2, align_steps1=2, align_steps2=2, blend_steps=3, target_fill_steps=2)


@pytest.fixture(scope="module")
def G64():
    return tiny_generator("stylegan2", img_resolution=64)


@pytest.fixture()
def mod(pack, monkeypatch):
    """The node module, with seeded random perceptual networks (no download), on CPU, and an empty cache."""
    m = sys.modules[f"{pack.__name__}.nodes.segment_composite"]
    P = sys.modules[f"{pack.__name__}.core.losses.perceptual"]   # the pack's own modules, as the node sees them
    style_layers = sys.modules[f"{pack.__name__}.core.edits.segment_composite.pipeline"].STYLE_LAYERS
    nets = {"lpips_vgg": P.random_lpips("vgg"), "vgg16_features": P.random_vgg16_features(layers=style_layers)}
    asked = []

    def net(name, layers=None):
        asked.append((name, layers))
        return nets[name]

    monkeypatch.setattr(m, "perceptual_net", net)
    m.asked = asked
    m._embeddings.clear()
    # Small working sizes and prior for tiny generators (the reference's 512 / 256 px and 10^6 samples take minutes).
    config = sys.modules[f"{pack.__name__}.core.edits.segment_composite.config"]
    monkeypatch.setattr(config, "DEFAULTS", dataclasses.replace(config.DEFAULTS, seg_size=64, lpips_size=64,
                                                                prior_samples=2000))
    return m


def faces(G, seeds, size=None):
    """Generated faces as ComfyUI IMAGEs [1, H, W, 3] in [0, 1] (size: resized, e.g. a 1024 px Align Face output)."""
    out = []
    for s in seeds:
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            x = G.synthesis(G.mapping(z, None, truncation_psi=0.7), noise_mode="const")
        if size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous())
    return out


def random_parser(pack):
    """A BiSeNet face parser with seeded random weights (the pack's class, as Load Face Parser gives it)."""
    FP = sys.modules[f"{pack.__name__}.core.models.face_parsing"]
    return FP.random_face_parser("bisenet19", seed=3, input_size=64)


def top_half(h=64, w=64):
    m = torch.zeros(1, h, w)
    m[:, : h // 2] = 1
    return m


def run(node, G, **kw):
    args = dict(mode="realistic", region_classes="", seed=0, **STEPS, preview_every=1)
    args.update(kw)
    with torch.inference_mode():   # as ComfyUI runs nodes
        return node.composite(G, **args)


def state(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def test_mask_only_composite_outputs_and_live_progress(pack, mod, G64, monkeypatch):
    comfy_env = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    updates = []
    real_update = comfy_env.Progress.update
    monkeypatch.setattr(comfy_env.Progress, "update", lambda self, done, preview=None, losses=None: (
        updates.append((done, self.total, preview is not None, dict(losses or {}))),
        real_update(self, done, preview, losses)))
    node = pack.NODE_CLASS_MAPPINGS["SGS_SegmentComposite"]()
    base, ref = faces(G64, [1, 2], size=96)          # photos at another size than the generator's
    before = state(G64)
    out = run(node, G64, base=base, reference=ref, region_mask=top_half(40, 40), region_classes="hair")
    image, latent, mask, debug, report = out["result"]
    assert image.shape == (1, 64, 64, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert type(latent).__name__ == "Latent" and latent.space == "fs" and latent.features.shape[-2:] == (32, 32)
    assert mask.shape == (1, 64, 64) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    assert float(mask[:, :24].mean()) > 0.8 and float(mask[:, 40:].mean()) < 0.2   # the top half, resized
    assert debug.shape[0] == 1 and debug.shape[1] == 64 and debug.shape[2] % 64 == 0 and debug.shape[2] >= 128
    assert out["ui"]["text"] == [report] and "region_classes ignored" in report
    # Progress: every step of every stage, one global count, previews every step, loss terms for the status line.
    assert updates and all(u[2] for u in updates) and all(u[3] for u in updates)
    steps = [u[0] for u in updates]
    assert steps == sorted(steps) and steps[-1] == updates[-1][1]
    assert steps[-1] >= 2 * (STEPS["w_steps"] + STEPS["fs_steps"]) + STEPS["blend_steps"]
    for k, v in before.items():
        assert torch.equal(G64.state_dict()[k], v), k


def test_parser_mode_with_class_names_and_fs_latent_inputs(pack, mod, G64):
    node = pack.NODE_CLASS_MAPPINGS["SGS_SegmentComposite"]()
    parser = random_parser(pack)
    base, ref, look = faces(G64, [1, 2, 3])
    out = run(node, G64, base=base, reference=ref, appearance=look, parser=parser, region_classes="hair")
    image, latent, mask, debug, report = out["result"]
    assert image.shape == (1, 64, 64, 3) and latent.space == "fs" and mask.shape == (1, 64, 64)
    assert "(parser)" in report and "align reference" in report and debug.shape[2] > 3 * 64
    style_layers = sys.modules[f"{pack.__name__}.core.edits.segment_composite.pipeline"].STYLE_LAYERS
    assert ("vgg16_features", style_layers) in mod.asked     # VGG16 at the style loss's layers, with a parser
    mod.asked.clear()
    # An fs latent stands in for a photo (Invert Image ii2s+fs): same outputs, no embedding of that photo.
    L = sys.modules[f"{pack.__name__}.core.latents"]   # the pack's own classes, as other nodes would give them
    w = G64.mapping(torch.randn(1, G64.z_dim, generator=torch.Generator().manual_seed(1)), None)
    fs = L.fs_from_wplus(G64, L.Latent(w.detach(), "w+", L.generator_ref(G64)))
    out2 = run(node, G64, base_latent=fs, reference=ref, region_mask=top_half())
    assert out2["result"][0].shape == (1, 64, 64, 3) and "(mask-only)" in out2["result"][4]
    assert "w+ base" not in out2["result"][4]                 # the latent was not embedded again
    assert [name for name, _ in mod.asked] == ["lpips_vgg"]   # mask-only: no VGG16 (no style loss)


def test_input_errors_name_the_input_and_the_fix(pack, mod, G64):
    node = pack.NODE_CLASS_MAPPINGS["SGS_SegmentComposite"]()
    base, ref = faces(G64, [1, 2])
    wplus = core.Latent(torch.zeros(1, G64.num_ws, G64.w_dim), "w+", core.generator_ref(G64))
    cases = [
        (dict(reference=ref, region_mask=top_half()), "connect base .* or base_latent"),
        (dict(base=base, base_latent=wplus, reference=ref, region_mask=top_half()), "both base .* and base_latent"),
        (dict(base=base, reference_latent=wplus, region_mask=top_half()), "reference_latent is a w\\+ latent"),
        (dict(base=torch.cat([base, base]), reference=ref, region_mask=top_half()), "base holds 2 images"),
        (dict(base=base, reference=ref, region_mask=torch.ones(2, 64, 64)), "region_mask holds 2 masks"),
        (dict(base=base, reference=ref), "no region"),
        (dict(base=base, reference=ref, region_classes="hair"), "needs a face parser"),
        (dict(base=base, reference=ref, region_mask=top_half(), appearance_region=top_half()),
         "no appearance face"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            run(node, G64, **kwargs)
    parser = random_parser(pack)
    with pytest.raises(ValueError, match="beard"):
        run(node, G64, base=base, reference=ref, parser=parser, region_classes="beard")


def test_a_stop_keeps_the_embeddings_for_the_next_run(pack, mod, G64, monkeypatch):
    comfy_env = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    node = pack.NODE_CLASS_MAPPINGS["SGS_SegmentComposite"]()
    base, ref = faces(G64, [4, 5])
    embed = 2 * (STEPS["w_steps"] + STEPS["fs_steps"])   # both photos' embeddings
    calls, totals = [], []

    def interrupt():
        calls.append(1)
        if len(calls) == embed + 2:   # a Stop during the composite, after both embeddings
            raise comfy_env.StandInInterrupt()

    real_update = comfy_env.Progress.update
    monkeypatch.setattr(comfy_env, "throw_if_interrupted", interrupt)
    monkeypatch.setattr(comfy_env.Progress, "update", lambda self, done, preview=None, losses=None: (
        totals.append(self.total), real_update(self, done, preview, losses)))
    before = state(G64)
    with pytest.raises(comfy_env.StandInInterrupt):
        run(node, G64, base=base, reference=ref, region_mask=top_half())
    for k, v in before.items():
        assert torch.equal(G64.state_dict()[k], v), k
    (cache,) = [v for v in [mod._embeddings.get(k) for k in list(mod._embeddings._items)] if v is not None]
    assert len(cache) >= 2                      # both photos' embeddings survived the Stop
    calls.clear(), totals.clear()
    monkeypatch.setattr(comfy_env, "throw_if_interrupted", lambda: calls.append(1))
    run(node, G64, base=base, reference=ref, region_mask=top_half())
    assert len(calls) < embed and totals[-1] < embed   # re-queued: no embedding steps this time
    # ComfyUI freeing its models ("Free model and node cache") empties the embedding cache too.
    caches = sys.modules[f"{pack.__name__}.nodes.caches"]
    caches.release_models()
    assert len(mod._embeddings) == 0


def test_cache_embeddings_writes_under_the_output_folder(pack, mod, G64, tmp_path):
    node = pack.NODE_CLASS_MAPPINGS["SGS_SegmentComposite"]()
    base, ref = faces(G64, [6, 7])
    run(node, G64, base=base, reference=ref, region_mask=top_half(), cache_embeddings=True)
    folder = mod.embedding_cache(G64, True).directory
    assert folder.parent == tmp_path / "output" / "composite_embeddings"
    assert core.generator_ref(G64).fingerprint in folder.name
    assert len(list(folder.glob("*.safetensors"))) >= 4   # W+ and FS of both photos (and the W+ prior)
    mod._embeddings.clear()                               # as after a restart: only the files are left
    report = run(node, G64, base=base, reference=ref, region_mask=top_half(), cache_embeddings=True)["result"][4]
    assert "cached embeddings: base, reference" in report and "w+ base" not in report, report
    assert mod.embedding_cache(G64, False) is not mod.embedding_cache(G64, True)
