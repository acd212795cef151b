"""The Neural Style node: a VGG-19 stand-in from models/perceptual, previews and status through the shared
optimisation runner, a batch of frames, mask pairs from MASK inputs, cancel, and the missing-file message."""

from __future__ import annotations

import sys

import pytest
import torch

from core.losses import vgg19 as V


@pytest.fixture()
def env(pack, tmp_path, monkeypatch):
    comfy_env = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, *a, **k):
        raise OSError(f"network is unreachable ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    folder = tmp_path / "models" / "perceptual"
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(comfy_env, "torch_device", lambda choice="auto": torch.device("cpu"))
    sys.modules[f"{pack.__name__}.nodes.neural_style"]._vggs.clear()
    return comfy_env, folder


def images(n, h, w, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_neural_style_node_runs_frames_with_masks_and_previews(pack, env, monkeypatch):
    comfy_env, folder = env
    torch.save(V.vgg19_state(V.random_vgg19(seed=0)), folder / "vgg19-dcbb9e9d.pth")
    previews, freed = [], []
    real_update = comfy_env.Progress.update
    monkeypatch.setattr(comfy_env.Progress, "update",
                        lambda self, done, preview=None, losses=None: (previews.append(preview is not None),
                                                                       real_update(self, done, preview, losses)))
    monkeypatch.setattr(comfy_env, "free_memory", lambda: freed.append(True))
    node = pack.NODE_CLASS_MAPPINGS["SGS_NeuralStyle"]()
    spec = node.INPUT_TYPES()
    assert spec["required"]["backbone"][0][:3] == V.known_file_names()
    mask = torch.zeros(1, 24, 32)
    mask[:, :, :16] = 1
    with torch.inference_mode():
        out = node.stylize(images(2, 24, 32), images(2, 20, 20, seed=1), "tutorial", "vgg19-dcbb9e9d.pth", 32, 4, 0,
                           content_mask=mask, preview_every=2, init_from_previous=True)
    image, report = out["result"]
    assert image.shape == (2, 24, 32, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert "Neural Style (tutorial): 2 image(s), 8 of 8 steps" in report and out["ui"]["text"] == [report]
    assert previews == [False, True] * 4 and freed
    with pytest.raises(ValueError, match="content_mask has 3 masks for 2 style images"):
        node.stylize(images(1, 24, 32), images(2, 20, 20), "tutorial", "vgg19-dcbb9e9d.pth", 32, 2, 0,
                     content_mask=torch.ones(3, 24, 32))
    with torch.inference_mode():   # Load Image's MASK of a photo without alpha: 64x64 zeros
        out = node.stylize(images(1, 24, 32), images(1, 20, 20), "tutorial", "vgg19-dcbb9e9d.pth", 32, 1, 0,
                           content_mask=torch.zeros(1, 64, 64))
    assert "content mask is all zero" in out["result"][1]
    with pytest.raises(ValueError, match="style_weights: expected numbers"):
        node.stylize(images(1, 24, 32), images(1, 20, 20), "tutorial", "vgg19-dcbb9e9d.pth", 32, 2, 0,
                     style_weights="a lot")
    with pytest.raises(ValueError, match="has 4 channels \\(RGBA\\)"):
        node.stylize(torch.rand(1, 24, 32, 4), images(1, 20, 20), "tutorial", "vgg19-dcbb9e9d.pth", 32, 2, 0)


def test_neural_style_node_cancel_and_missing_weights(pack, env, monkeypatch):
    comfy_env, folder = env
    node = pack.NODE_CLASS_MAPPINGS["SGS_NeuralStyle"]()
    errors = sys.modules[f"{pack.__name__}.core.errors"]
    with pytest.raises(errors.MissingWeightsError, match="vgg_normalised.pth.*naoto0804.*" + str(folder)):
        node.stylize(images(1, 24, 32), images(1, 20, 20), "gatys2016", "vgg_normalised.pth", 32, 2, 0)
    torch.save(V.vgg19_state(V.random_vgg19(seed=0, format="adain")), folder / "vgg_normalised.pth")
    calls = []

    class Interrupted(Exception):
        pass

    def interrupt():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted()

    monkeypatch.setattr(comfy_env, "throw_if_interrupted", interrupt)
    with pytest.raises(Interrupted):
        node.stylize(images(1, 24, 32), images(1, 20, 20), "gatys2016", "vgg_normalised.pth", 32, 20, 0)
    assert len(calls) == 3
