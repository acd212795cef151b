""""Finish now" and Stop on the four optimising nodes, headless: the finish flag ends each optimiser after the current
step with a valid result and a report that says so; a Stop (ComfyUI's interrupt, here its stand-in) writes the result
so far to the output folder, says where, and still propagates."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from core.edits import inversion as I

P = pytest.importorskip("core.losses.perceptual")
open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from conftest import tiny_clip, TINY_CLIP_CFG, tiny_generator  # noqa: E402

TINY = "SGS-Finish-Tiny"
TINY_CFG = TINY_CLIP_CFG


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture(scope="module")
def nets():
    return {"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
            "vgg16_features": P.random_vgg16_features(seed=2)}


@pytest.fixture()
def env(pack, nets, monkeypatch):
    """(nodes.optimize, comfy_env, sent events, act) where `act(k, what)` makes the k-th progress update press
    "Finish now" ('finish') or Stop ('stop')."""
    opt = sys.modules[f"{pack.__name__}.nodes.optimize"]
    cenv = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    inv = sys.modules[f"{pack.__name__}.nodes.inversion"]
    monkeypatch.setattr(inv, "perceptual_nets", lambda method: {k: nets[k] for k in I.PERCEPTUAL_NEEDS[method]})
    monkeypatch.setattr(cenv, "free_memory", lambda: None)
    sent = []
    monkeypatch.setattr(cenv, "send_event", lambda event, data: sent.append((event, data)))
    calls = []

    def act(k: int, what: str):
        calls.clear()

        def hook():
            calls.append(1)
            if len(calls) == k:
                if what == "finish":
                    opt.request_finish(None)   # outside ComfyUI the running node's id is None
                else:
                    raise cenv.StandInInterrupt()

        monkeypatch.setattr(cenv, "throw_if_interrupted", hook)

    return opt, cenv, sent, act


def image(G, seed=0):
    return torch.rand(1, G.img_resolution, G.img_resolution, 3, generator=torch.Generator().manual_seed(seed))


def test_finish_route_checks_its_body_and_flags_the_node(pack):
    opt = sys.modules[f"{pack.__name__}.nodes.optimize"]
    assert opt.finish_route({"node_id": "12"}) == {"ok": True, "running": False}
    assert "12" in opt._finish_requests
    for bad in ({}, {"node_id": ""}, {"node_id": None}, []):
        with pytest.raises(ValueError, match="node_id"):
            opt.finish_route(bad)
    opt._finish_requests.clear()


def test_a_finish_request_before_the_run_is_not_for_it(pack, env, G2):
    opt, _, _, _ = env
    opt.request_finish(None)   # e.g. pressed just after the previous run ended
    node = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]()
    report = node.invert(G2, image(G2), "image2stylegan", 3, 0)["result"][3]
    assert "image2stylegan: 3 steps" in report and "finished early" not in report


@pytest.mark.parametrize("method", ["image2stylegan", "projector"])
def test_invert_finish_now_returns_the_current_latent(pack, env, G2, method):
    opt, _, sent, act = env
    act(3, "finish")
    node = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]()
    out = node.invert(G2, image(G2), method, 10, 0)
    latent, G_out, images, report, _ = out["result"]
    assert "finished early at step 3 of 10" in report and f"{method}: 3 steps" in report
    assert latent.batch_size == 1 and images.shape == (1, 32, 32, 3) and G_out is G2
    assert torch.isfinite(latent.tensor).all()
    assert sent[-1][1]["finished"] and sent[-1][1]["step"] == 3
    assert not opt._finish_requests and not opt._running   # nothing left behind for the next run


def test_pti_finished_in_the_pivot_skips_the_tuning(pack, env, G2):
    _, _, _, act = env
    act(2, "finish")
    node = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]()
    latent, G_out, _, report, delta = node.invert(G2, image(G2), "pti", 4, 0, tune_steps=5)["result"]
    assert "finished early at step 2 of 9" in report and "the pivot" in report
    assert latent.space == "w" and delta is None and G_out is G2


def test_pti_finished_while_tuning_keeps_the_tuned_copy(pack, env, G2, monkeypatch):
    inv = sys.modules[f"{pack.__name__}.nodes.inversion"]
    monkeypatch.setitem(inv.I.METHOD_DEFAULTS, "pti", __import__("dataclasses").replace(
        inv.I.METHOD_DEFAULTS["pti"], tune_lpips_stop=0.0))
    _, _, _, act = env
    act(5, "finish")
    node = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]()
    _, G_out, _, report, delta = node.invert(G2, image(G2), "pti", 3, 0, tune_steps=6)["result"]
    assert "finished early at step 5 of 9" in report and G_out is not G2 and delta is not None


def test_invert_stop_saves_the_latent_so_far_and_says_where(pack, env, G2, caplog):
    _, cenv, sent, act = env
    act(4, "stop")
    node = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]()
    with caplog.at_level(logging.WARNING), pytest.raises(cenv.StandInInterrupt):
        node.invert(G2, image(G2), "image2stylegan", 20, 0)
    files = sorted((cenv.output_dir() / "inversions").glob("image2stylegan_stopped_*.safetensors"))
    assert len(files) == 1
    saved = pack.core.load_latent(files[0])
    assert saved.space == "w+" and saved.tensor.shape == (1, G2.num_ws, G2.w_dim)
    # Stopped in the update after step 3: the latent of step 3, listed where Load Latent finds it.
    message = f"stopped at step 3 of 20; the latent so far is saved as output/inversions/{files[0].name}"
    assert message in caplog.text
    assert sent[-1][1]["note"].startswith(message) and "Load Latent" in sent[-1][1]["note"]
    assert f"inversions/{files[0].name} [output]" in cenv.list_latent_files()


def test_pti_stop_while_tuning_saves_the_pivot_and_the_weights(pack, env, G2, monkeypatch):
    inv = sys.modules[f"{pack.__name__}.nodes.inversion"]
    monkeypatch.setitem(inv.I.METHOD_DEFAULTS, "pti", __import__("dataclasses").replace(
        inv.I.METHOD_DEFAULTS["pti"], tune_lpips_stop=0.0))
    _, cenv, sent, act = env
    act(6, "stop")
    node = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]()
    with pytest.raises(cenv.StandInInterrupt):
        node.invert(G2, image(G2), "pti", 3, 0, tune_steps=6)
    folder = cenv.output_dir() / "inversions"
    latent_file, = folder.glob("pti_stopped_0*.safetensors")
    delta_file, = folder.glob("pti_stopped_delta_*.safetensors")
    assert pack.core.load_latent(latent_file).space == "w"
    delta = pack.core.deltas.load_weight_delta(delta_file)
    assert delta.kind == "pti" and delta.tensors
    assert "Apply Weight Delta" in sent[-1][1]["note"]


def test_clip_optimize_finish_and_stop(pack, env, clip):
    _, cenv, _, act = env
    G = tiny_generator("stylegan2")
    latent = core.sample_latents(G, [1])
    node = pack.NODE_CLASS_MAPPINGS["SGS_CLIPLatentOptimize"]()
    act(2, "finish")
    lat, images, report = node.optimize(G, latent, clip, "a red face", "w+", 8, 0.008)["result"]
    assert "2 steps" in report and "finished early at step 2 of 8" in report and lat.space == "w+"
    act(3, "stop")
    with pytest.raises(cenv.StandInInterrupt):
        node.optimize(G, latent, clip, "a red face", "s", 8, 0.008)
    saved, = (cenv.output_dir() / "clip_edits").glob("clip_stopped_*.safetensors")
    assert pack.core.load_latent(saved).space == "s"


def test_mapper_finish_saves_the_checkpoint_and_returns_the_mapper(pack, env, clip):
    _, cenv, sent, act = env
    mod = sys.modules[f"{pack.__name__}.nodes.latent_mapper"]
    G = tiny_generator("stylegan2", img_resolution=64)
    fast = dict(coarse=True, medium=True, fine=True, id_lambda=0.0, num_train_latents=6, checkpoint_every=100,
                preview_every=100)
    train = pack.NODE_CLASS_MAPPINGS["SGS_TrainLatentMapper"]()
    act(3, "finish")
    mapper, report = train.train(G, clip, "a red face", "early", num_steps=10, **fast)["result"]
    checkpoint, final = mod.training_paths("early")
    assert checkpoint.is_file() and final.is_file()
    assert "finished early at step 3 of 10" in report and "3 steps" in report
    assert mapper(torch.zeros(1, G.num_ws, G.w_dim)).shape == (1, G.num_ws, G.w_dim)
    # Stop: the checkpoint is where the run continues from, and the status line says so.
    act(2, "stop")
    with pytest.raises(cenv.StandInInterrupt):
        train.train(G, clip, "a red face", "stopped", num_steps=10, **fast)
    checkpoint, _ = mod.training_paths("stopped")
    assert checkpoint.is_file()
    assert "saved in the checkpoint output/latent_mappers/stopped.training.safetensors" in sent[-1][1]["note"]


@pytest.mark.slow
def test_global_directions_finish_keeps_the_measured_channels(pack, env, clip, tmp_path):
    _, _, _, act = env
    mod = sys.modules[f"{pack.__name__}.nodes.global_directions"]
    mod._cache.clear()
    G = tiny_generator("stylegan2")
    path = core.save_generator(G, tmp_path / "models" / "stylegan" / "tiny.safetensors")
    G = pack.core.load_generator(path)
    node = pack.NODE_CLASS_MAPPINGS["SGS_ComputeGlobalDirections"]()
    settings = dict(num_images=2, num_samples=300, layers="all conv layers")
    act(4, "finish")
    directions, info = node.compute(G, clip, **settings)["result"]
    assert 0 < directions.num_done < 208 and "Finish now" in info and "finished early at step" in info
    # Not kept in memory: queued again, it continues from the file to the end.
    act(10_000, "finish")
    full, info = node.compute(G, clip, **settings)["result"]
    assert full.num_done == 208 and "finished early" not in info
    mod._cache.clear()
