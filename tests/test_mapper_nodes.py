"""Latent-mapper nodes headless: training saves a mapper file that Load Latent Mapper lists and reads, a cancelled
training resumes from its checkpoint and ends where an uninterrupted one does, a StyleCLIP .pt mapper loads, and
Apply Latent Mapper edits (and sweeps) any latent."""

from __future__ import annotations

import math
import sys

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from conftest import tiny_clip, TINY_CLIP_CFG, tiny_generator  # noqa: E402

TINY = "SGS-MapperNodes-Tiny"
TINY_CFG = TINY_CLIP_CFG
FAST = dict(num_steps=6, coarse=True, medium=True, fine=True, id_lambda=0.0, num_train_latents=6,
            checkpoint_every=2, preview_every=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture()
def env(pack, monkeypatch):
    mod = sys.modules[f"{pack.__name__}.nodes.latent_mapper"]
    mod._cache.clear()
    monkeypatch.setattr(mod.comfy_env, "free_memory", lambda: None)
    G = tiny_generator("stylegan2", img_resolution=64)  # num_ws 10: all three groups have layers
    yield mod, G
    mod._cache.clear()


def test_train_saves_a_mapper_that_load_and_apply_use(pack, env, clip):
    mod, G = env
    train = pack.NODE_CLASS_MAPPINGS["SGS_TrainLatentMapper"]()
    mapper, report = train.train(G, clip, "a bright red face", "red face", **FAST)["result"]
    checkpoint, final = mod.training_paths("red face")
    assert final.is_file() and checkpoint.is_file() and str(final) in report and "6 steps" in report
    assert "red face.safetensors" in mod.mapper_files() and not any("training" in n for n in mod.mapper_files())
    loaded, info = pack.NODE_CLASS_MAPPINGS["SGS_LoadLatentMapper"]().load("red face.safetensors")["result"]
    assert "'a bright red face'" in info and "coarse, medium, fine" in info and "tiny-stylegan2" in info
    latent = pack.core.sample_latents(G, [1, 2], space="w", truncation_psi=0.7)
    ws = pack.core.latent_to_ws(G, latent)
    apply = pack.NODE_CLASS_MAPPINGS["SGS_ApplyLatentMapper"]()
    edited, report = apply.apply(G, latent, loaded, 1.0)["result"]
    assert edited.space == "w+" and edited.tensor.shape == ws.shape
    with torch.no_grad():
        expected = ws + 0.1 * mapper(ws)
    torch.testing.assert_close(edited.tensor, expected)
    assert "'a bright red face' mapper" in report and "strength 1" in report
    sweep, report = apply.apply(G, latent, loaded, 2.0, sweep_frames=3)["result"]
    frames = sweep.tensor.reshape(2, 3, G.num_ws, G.w_dim)
    torch.testing.assert_close(frames[:, 0], ws)                               # strength 0: unchanged
    torch.testing.assert_close(frames[:, 1], expected)                         # strength 1: the trained edit
    torch.testing.assert_close(frames[:, 2] - frames[:, 1], frames[:, 1] - frames[:, 0])
    assert "strength 0 .. 2 in 3 frames" in report
    assert pack.core.synthesize(G, sweep).shape == (6, 3, 64, 64)


@pytest.mark.slow
def test_cancelled_training_resumes_to_the_same_mapper(pack, env, clip, monkeypatch):
    mod, G = env
    train = pack.NODE_CLASS_MAPPINGS["SGS_TrainLatentMapper"]()
    reference, _ = train.train(G, clip, "a bright red face", "uninterrupted", **FAST)["result"]

    class Interrupted(Exception):
        pass

    steps = []

    def interrupt():
        steps.append(1)
        if len(steps) == 3:
            raise Interrupted()

    monkeypatch.setattr(mod.comfy_env, "throw_if_interrupted", interrupt)
    with pytest.raises(Interrupted):
        train.train(G, clip, "a bright red face", "cancelled", **FAST)
    checkpoint, final = mod.training_paths("cancelled")
    assert checkpoint.is_file() and not final.exists()
    monkeypatch.setattr(mod.comfy_env, "throw_if_interrupted", lambda: None)
    resumed, report = train.train(G, clip, "a bright red face", "cancelled", **FAST)["result"]
    assert "resumed at step 3" in report
    a, b = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Other settings under the same name: refused, with the node's way out.
    with pytest.raises(ValueError, match=r"different training run.*config\.l2_lambda.*another mapper_name"):
        train.train(G, clip, "a bright red face", "cancelled", **FAST, l2_lambda=0.5)
    again, _ = train.train(G, clip, "a bright red face", "cancelled", **FAST, l2_lambda=0.5, resume=False)["result"]
    assert not torch.equal(again.state_dict()["coarse.fc0.weight"], b["coarse.fc0.weight"])


def test_train_node_errors(pack, env, clip):
    _, G = env
    train = pack.NODE_CLASS_MAPPINGS["SGS_TrainLatentMapper"]()
    with pytest.raises(ValueError, match="no ArcFace is connected.*set id_lambda to 0"):
        train.train(G, clip, "a red face", "x", **{**FAST, "id_lambda": 0.1})
    with pytest.raises(ValueError, match="not a plain file name"):
        train.train(G, clip, "a red face", "../escape", **FAST)
    with pytest.raises(ValueError, match="text is empty"):
        train.train(G, clip, "  ", "x", **FAST)
    other = tiny_generator("stylegan2")  # 32 px: num_ws 8
    foreign = pack.core.sample_latents(other, [1], space="w+")
    with pytest.raises(pack.core.LatentError, match=r"made for tiny-stylegan2 \(num_ws x w_dim \(8, 16\)\)"):
        train.train(G, clip, "a red face", "x", **FAST, latents=foreign)


def test_apply_refuses_s_latents_and_other_generators(pack, env):
    mod, G = env
    mapper = pack.core.edits.latent_mapper.LatentMapper(G.w_dim, G.num_ws)
    mapper.info.text = "t"
    apply = pack.NODE_CLASS_MAPPINGS["SGS_ApplyLatentMapper"]()
    s = pack.core.convert_latent(G, pack.core.sample_latents(G, [1], space="w"), "s")
    with pytest.raises(ValueError, match="edit w\\+ latents.*before the StyleSpace edit"):
        apply.apply(G, s, mapper, 1.0)
    small = tiny_generator("stylegan2")  # 32 px: num_ws 8
    with pytest.raises(ValueError, match=r"w\+ 10 x 16.*w\+ 8 x 16"):
        apply.apply(small, pack.core.sample_latents(small, [1], space="w"), mapper, 1.0)


def test_load_node_reads_a_styleclip_mapper_and_reports_missing_files(pack, env):
    mod, G = env
    folder = mod.comfy_env.mapper_dirs()[0]
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    state = {f"mapper.{g}_mapping.mapping.{i}.{k}": (torch.randn(16, 16, generator=gen) / 0.01 if k == "weight"
                                                     else torch.zeros(16))
             for g in ("course", "medium") for i in range(1, 5) for k in ("weight", "bias")}
    torch.save({"state_dict": state, "opts": {"description": "afro hairstyle", "stylegan_size": 64,
                                              "no_fine_mapper": True}}, folder / "afro.pt")
    assert "afro.pt" in mod.mapper_files()
    mapper, info = pack.NODE_CLASS_MAPPINGS["SGS_LoadLatentMapper"]().load("afro.pt")["result"]
    assert mapper.pixel_norm == "layers" and "'afro hairstyle'" in info and "coarse, medium" in info
    latent = pack.core.sample_latents(G, [3], space="w+")
    edited, _ = pack.NODE_CLASS_MAPPINGS["SGS_ApplyLatentMapper"]().apply(G, latent, mapper, 1.0)["result"]
    assert torch.equal(edited.tensor[:, 8:], latent.tensor[:, 8:])  # no fine mapper: fine layers untouched
    assert not torch.equal(edited.tensor[:, :8], latent.tensor[:, :8]) and math.isfinite(edited.tensor.sum().item())
    with pytest.raises(FileNotFoundError, match="models/latent_mappers"):
        pack.NODE_CLASS_MAPPINGS["SGS_LoadLatentMapper"]().load("missing.safetensors")


@pytest.mark.slow
def test_load_node_follows_retraining_and_symlinks_and_refuses_paths(pack, env, clip, tmp_path):
    mod, G = env
    train = pack.NODE_CLASS_MAPPINGS["SGS_TrainLatentMapper"]
    load = pack.NODE_CLASS_MAPPINGS["SGS_LoadLatentMapper"]
    train().train(G, clip, "a bright red face", "grow", **FAST)
    first = load.IS_CHANGED("grow.safetensors")
    train().train(G, clip, "a bright red face", "grow", **{**FAST, "num_steps": 8})  # extended under the same name
    assert load.IS_CHANGED("grow.safetensors") != first  # so ComfyUI reloads instead of reusing its cached output
    mapper, _ = load().load("grow.safetensors")["result"]
    assert mapper.info.config.num_steps == 8
    # A mapper file linked into the folder (common for model files) loads; names leaving the folder do not.
    elsewhere = tmp_path / "elsewhere" / "linked.safetensors"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(mod.training_paths("grow")[1].read_bytes())
    (mod.comfy_env.mapper_dirs()[0] / "linked.safetensors").symlink_to(elsewhere)
    assert "linked.safetensors" in mod.mapper_files()
    linked, _ = load().load("linked.safetensors")["result"]
    assert torch.equal(linked.state_dict()["coarse.fc0.weight"], mapper.state_dict()["coarse.fc0.weight"])
    for bad in ("../elsewhere/linked.safetensors", str(elsewhere)):
        with pytest.raises(ValueError, match="must be a file name inside models/latent_mappers"):
            load().load(bad)
