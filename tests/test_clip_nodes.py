"""CLIP nodes headless: Load CLIP / Load ArcFace from the pack's model folders (and their errors), CLIP Latent
Optimize in W+ and S with a tiny random open_clip model and a tiny generator (preview, cancel, inference mode)."""

from __future__ import annotations

import sys

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from core.models import clip as C  # noqa: E402
from conftest import register_tiny_clip, SMALL_CLIP_CFG, tiny_generator  # noqa: E402

TINY = "SGS-ClipNodes-Tiny"
TINY_CFG = SMALL_CLIP_CFG


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    register_tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture()
def mods(pack, monkeypatch):
    """The pack's nodes.models (Load CLIP, ArcFace) and comfy_env, with the Hugging Face Hub unreachable (no downloads)."""
    pack_clip = sys.modules[f"{pack.__name__}.core.models.clip"]
    for mod in (C, pack_clip):
        monkeypatch.setattr(mod, "_hub_reachable", lambda timeout=3.0: False)
        mod.clear_clip_cache()
    yield sys.modules[f"{pack.__name__}.nodes.models"], sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    pack_clip.clear_clip_cache()


def errors(pack):
    """The pack's error classes (the pack imports its own copy of `core`)."""
    return sys.modules[f"{pack.__name__}.core.errors"]


@pytest.fixture()
def clip_file(pack, tmp_path):
    from safetensors.torch import save_file

    model = C.random_clip(TINY, seed=0)
    folder = tmp_path / "models" / "text_encoders" / "sub"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.model.state_dict().items()}, str(folder / "tiny.safetensors"))
    return model, "sub/tiny.safetensors"


def test_load_clip_lists_and_loads_files_from_the_clip_folders(pack, mods, clip_file, tmp_path):
    clip_nodes, comfy_env = mods
    ref, name = clip_file
    assert comfy_env.clip_dirs() == [tmp_path / "models" / "text_encoders", tmp_path / "models" / "clip"]
    choices = clip_nodes.LoadCLIP.INPUT_TYPES()["required"]["weights"][0]
    assert choices[0].startswith("auto") and name in choices
    node = pack.NODE_CLASS_MAPPINGS["SGS_LoadCLIP"]()
    (clip,) = node.load(TINY, name, "openai", "cpu", "fp32")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(clip.encode_image(x), ref.encode_image(x), atol=1e-6, rtol=0)
    assert node.load(TINY, name, "openai", "cpu", "fp32")[0] is clip  # cached
    assert node.load(TINY, name, "openai", "cpu", "fp16")[0].dtype == torch.float16


def test_load_clip_auto_offline_names_file_and_folders(pack, mods, tmp_path):
    node = pack.NODE_CLASS_MAPPINGS["SGS_LoadCLIP"]()
    with pytest.raises(errors(pack).MissingWeightsError) as e:
        node.load("ViT-B-32", "auto (by tag: models folder, else download)", "openai", "cpu", "fp32")
    msg = str(e.value)
    assert "ViT-B-32-openai.safetensors" in msg and str(tmp_path / "models" / "text_encoders") in msg


@pytest.mark.slow
def test_load_arcface_from_the_arcface_folder_and_missing_file(pack, tmp_path):
    from safetensors.torch import save_file

    from core.losses import arcface as A

    node = pack.NODE_CLASS_MAPPINGS["SGS_LoadArcFace"]()
    with pytest.raises(errors(pack).MissingWeightsError, match="model_ir_se50.pth.*models/arcface"):
        node.load("cpu")
    ref = A.random_arcface(seed=3)
    (tmp_path / "models" / "arcface").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(tmp_path / "models" / "arcface" / "model_ir_se50.safetensors"))
    (net,) = node.load("cpu")
    assert node.load("cpu")[0] is net and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(A.arcface_features(net, x), A.arcface_features(ref.eval(), x))


@pytest.fixture(scope="module")
def tiny_clip():
    return C.random_clip(TINY, seed=0)


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2")


def _distances(report):
    line = next(l for l in report.splitlines() if l.startswith("image 0"))
    a, b = line.rsplit(" ", 3)[-3], line.rsplit(" ", 3)[-1]
    return float(a), float(b)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["w+", "s"])
def test_clip_latent_optimize_node(pack, mods, G, tiny_clip, space, monkeypatch):
    clip_nodes, comfy_env = mods
    freed, previews = [], []
    monkeypatch.setattr(comfy_env, "free_memory", lambda: freed.append(True))
    real_update = comfy_env.Progress.update
    monkeypatch.setattr(comfy_env.Progress, "update",
                        lambda self, done, preview=None, losses=None: (previews.append(preview is not None),
                                                                       real_update(self, done, preview, losses)))
    before = {k: v.clone() for k, v in G.state_dict().items()}
    latent = core.sample_latents(G, [3, 4], space="w", truncation_psi=0.7)
    node = pack.NODE_CLASS_MAPPINGS["SGS_CLIPLatentOptimize"]()
    with torch.inference_mode():  # as ComfyUI runs nodes
        out = node.optimize(G, latent, tiny_clip, "a bright red face", space, 12, 0.008, preview_every=5)
    lat, images, report = out["result"]
    assert lat.space == space and lat.batch_size == 2 and images.shape == (2, 32, 32, 3)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert out["ui"]["text"] == [report] and "12 steps" in report
    start, end = _distances(report)
    assert end < start
    torch.testing.assert_close(core.synthesize(G, lat).clamp(-1, 1), comfy_to_gen(images), atol=2 / 255, rtol=0)
    assert previews == [False] * 4 + [True] + [False] * 4 + [True] + [False, True]
    assert freed and all(torch.equal(v, before[k]) for k, v in G.state_dict().items())


def comfy_to_gen(images):
    return images.permute(0, 3, 1, 2) * 2 - 1


def test_clip_latent_optimize_cancel_and_bad_inputs(pack, mods, G, tiny_clip, monkeypatch):
    clip_nodes, comfy_env = mods
    freed, calls = [], []

    class Interrupted(Exception):
        pass

    def interrupt():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted()

    monkeypatch.setattr(comfy_env, "throw_if_interrupted", interrupt)
    monkeypatch.setattr(comfy_env, "free_memory", lambda: freed.append(True))
    node = pack.NODE_CLASS_MAPPINGS["SGS_CLIPLatentOptimize"]()
    latent = core.sample_latents(G, [1])
    with pytest.raises(Interrupted):
        node.optimize(G, latent, tiny_clip, "smile", "w+", 50, 0.008)
    assert len(calls) == 3 and freed  # stopped at the third step, memory released
    monkeypatch.setattr(comfy_env, "throw_if_interrupted", lambda: None)
    with pytest.raises(ValueError, match="text is empty"):
        node.optimize(G, latent, tiny_clip, "  ", "w+", 5, 0.008)
    with pytest.raises(ValueError, match="no ArcFace is connected"):
        node.optimize(G, latent, tiny_clip, "smile", "w+", 5, 0.008, id_lambda=0.1)
    s_latent = core.convert_latent(G, latent, "s")
    with pytest.raises(errors(pack).LatentError, match="only be optimised in S"):
        node.optimize(G, s_latent, tiny_clip, "smile", "w+", 2, 0.008)


@pytest.mark.slow
def test_clip_latent_optimize_with_identity_and_neutral_text(pack, mods, G, tiny_clip, monkeypatch):
    from core.losses import arcface as A

    _, comfy_env = mods
    terms = []
    monkeypatch.setattr(comfy_env.Progress, "update",
                        lambda self, done, preview=None, losses=None: terms.append(set(losses)))
    node = pack.NODE_CLASS_MAPPINGS["SGS_CLIPLatentOptimize"]()
    with torch.inference_mode():
        arc = A.random_arcface(seed=1).eval().requires_grad_(False)
        out = node.optimize(G, core.sample_latents(G, [2]), tiny_clip, "a smiling face", "w+", 3, 0.008,
                            neutral_text="a face", arcface=arc, id_lambda=0.1)
    assert out["result"][0].space == "w+" and terms == [{"clip", "l2", "id", "loss"}] * 3
