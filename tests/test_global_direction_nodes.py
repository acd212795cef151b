"""Global-direction nodes headless: the precompute is cached next to the checkpoint and reused, a cancelled run
resumes, a StyleCLIP fs3.npy is accepted, and the edit node sweeps alpha as a batch of s latents."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from core.networks.style_space import s_channel_count  # noqa: E402
from conftest import tiny_clip, TINY_CLIP_CFG, tiny_generator  # noqa: E402

TINY = "SGS-GDNodes-Tiny"
TINY_CFG = TINY_CLIP_CFG


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture()
def env(pack, tmp_path, monkeypatch):
    mod = sys.modules[f"{pack.__name__}.nodes.global_directions"]
    mod._cache.clear()
    monkeypatch.setattr(mod.comfy_env, "free_memory", lambda: None)
    G = tiny_generator("stylegan2")
    path = core.save_generator(G, tmp_path / "models" / "stylegan" / "tiny.safetensors")
    G_file = pack.core.load_generator(path)
    yield mod, G_file, path
    mod._cache.clear()


SETTINGS = dict(num_images=2, num_samples=300, layers="all conv layers")


@pytest.mark.slow
def test_compute_caches_next_to_checkpoint_and_reuses(pack, env, clip, monkeypatch):
    mod, G, ckpt = env
    node = pack.NODE_CLASS_MAPPINGS["SGS_ComputeGlobalDirections"]()
    out = node.compute(G, clip, **SETTINGS)
    directions, info = out["result"]
    files = [p for p in ckpt.parent.iterdir() if p.name.startswith("tiny.safetensors.global-directions-")]
    assert len(files) == 1 and str(files[0]) in info
    assert directions.num_done == s_channel_count(G, torgb=False) and "208 of 320" in info
    # Not listed as a checkpoint by Load StyleGAN.
    assert "tiny.safetensors" in mod.comfy_env.list_models() and len(mod.comfy_env.list_models()) == 1
    # A new session (empty memory cache) reads the file and computes nothing.
    mod._cache.clear()
    with monkeypatch.context() as m:
        m.setattr(mod.GD, "compute_s_statistics", lambda *a, **k: pytest.fail("statistics recomputed"))
        m.setattr(mod.GD.relevance, "relevance_rows", lambda *a, **k: pytest.fail("relevance recomputed"))
        again, _ = node.compute(G, clip, **SETTINGS)["result"]
    assert torch.equal(again.relevance, directions.relevance)
    # Queued again in the same session: the directions from memory, with the report shown on the node as well.
    cached = node.compute(G, clip, **SETTINGS)
    assert cached["result"][0] is again and cached["ui"]["text"] == [cached["result"][1]]
    assert "cached in memory" in cached["result"][1]
    # Deleting the file means computing again, even with the directions still in memory.
    files[0].unlink()
    recomputed, info = node.compute(G, clip, **SETTINGS)["result"]
    assert files[0].is_file() and "cached in memory" not in info
    assert torch.equal(recomputed.relevance, directions.relevance)
    # Other settings get their own file.
    node.compute(G, clip, **{**SETTINGS, "num_images": 1})
    assert len([p for p in ckpt.parent.iterdir() if ".global-directions-" in p.name]) == 2


@pytest.mark.slow
def test_cancelled_precompute_resumes_where_it_stopped(pack, env, clip, monkeypatch):
    mod, G, ckpt = env
    node = pack.NODE_CLASS_MAPPINGS["SGS_ComputeGlobalDirections"]()
    reference, _ = node.compute(G, clip, **SETTINGS)["result"]
    for p in ckpt.parent.glob("*.global-directions-*"):
        p.unlink()
    mod._cache.clear()

    class Interrupted(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted()

    monkeypatch.setattr(mod.comfy_env, "throw_if_interrupted", interrupt)
    with pytest.raises(Interrupted):
        node.compute(G, clip, **SETTINGS)
    partial = pack.core.edits.global_directions.load_directions(next(ckpt.parent.glob("*.global-directions-*")), G)
    assert 0 < partial.num_done < reference.num_done
    monkeypatch.setattr(mod.comfy_env, "throw_if_interrupted", lambda: None)
    measured = []
    real = mod.GD.relevance.relevance_rows
    monkeypatch.setattr(mod.GD.relevance, "relevance_rows", lambda *a, **k: measured.append(len(a[6])) or real(*a, **k))
    resumed, _ = node.compute(G, clip, **SETTINGS)["result"]
    assert torch.equal(resumed.relevance, reference.relevance)
    assert sum(measured) == reference.num_done - partial.num_done  # exactly the channels left


@pytest.mark.slow
def test_reference_fs3_is_accepted(pack, env, clip):
    mod, G, ckpt = env
    rows = s_channel_count(G, torgb=False)
    fs3 = np.random.RandomState(0).randn(rows, 32).astype(np.float32)
    np.save(ckpt.parent / "fs3.npy", fs3 / np.linalg.norm(fs3, axis=1, keepdims=True))
    assert "fs3.npy" in mod.reference_files()
    node = pack.NODE_CLASS_MAPPINGS["SGS_ComputeGlobalDirections"]()
    # fs3 files were measured with ViT-B-32: another CLIP is refused with the name of the right one.
    with pytest.raises(ValueError, match="measured with CLIP ViT-B-32.*load ViT-B-32"):
        node.compute(G, clip, **SETTINGS, reference_fs3="fs3.npy")
    vit_b_32 = copy.copy(clip)  # the tiny model standing in for ViT-B-32 (same embedding size as this fs3)
    vit_b_32.name = "ViT-B-32"
    directions, info = node.compute(G, vit_b_32, **SETTINGS, reference_fs3="fs3.npy")["result"]
    assert directions.source == "styleclip-fs3" and directions.num_done == rows and "fs3.npy" in info
    # A CLIP of the right architecture whose source does not name OpenAI's weights is used, with a warning.
    assert "measured with ViT-B-32 'openai' weights, and this CLIP comes from random" in info
    np.save(ckpt.parent / "fs3_wrong.npy", fs3[:-1])
    with pytest.raises(ValueError, match="fs3 has 207 rows"):
        node.compute(G, vit_b_32, **SETTINGS, reference_fs3="fs3_wrong.npy")


def test_cache_stays_out_of_folders_outside_the_model_folders(pack, env, tmp_path):
    mod, G, ckpt = env
    G.info.source = str(tmp_path / "elsewhere" / "model.pkl")  # e.g. recorded in a converted file's metadata
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.pkl").write_bytes(b"")
    assert mod.cache_path(G, "k").parent == mod.comfy_env.output_dir() / "global_directions"
    G.info.source = str(ckpt)
    assert mod.cache_path(G, "k").parent == ckpt.parent


@pytest.mark.slow
def test_edit_node_sweeps_alpha_and_beta_semantics(pack, env, clip):
    mod, G, _ = env
    directions, _ = pack.NODE_CLASS_MAPPINGS["SGS_ComputeGlobalDirections"]().compute(G, clip, **SETTINGS)["result"]
    node = pack.NODE_CLASS_MAPPINGS["SGS_GlobalDirectionEdit"]()
    latent = pack.core.sample_latents(G, [1, 2], space="w+", truncation_psi=0.7)
    start = pack.core.convert_latent(G, latent, "s").tensor
    out = node.edit(G, latent, clip, directions, "a smiling face", "a face", 3.0, 0.0, sweep_frames=5)
    edited, report = out["result"]
    assert edited.space == "s" and edited.batch_size == 10 and "alpha -3 .. 3 in 5 frames" in report
    frames = edited.tensor.reshape(2, 5, -1)
    torch.testing.assert_close(frames[:, 2], start)  # alpha 0 in the middle of the sweep
    torch.testing.assert_close(frames[:, 4] - start, start - frames[:, 0])  # symmetric
    assert f"{directions.num_done} of {directions.num_done} measured channels changed" in report  # beta 0: all
    images = pack.core.synthesize(G, edited)
    assert images.shape == (10, 3, 32, 32)
    same, report = node.edit(G, latent, clip, directions, "a smiling face", "a face", 3.0, 1.0)["result"]
    assert torch.equal(same.tensor, start) and "0 of" in report and "lower beta" in report
    with pytest.raises(ValueError, match="same text embedding"):
        node.edit(G, latent, clip, directions, "a face", "a face", 3.0, 0.1)
