"""Direction nodes in a real ComfyUI server (skipped unless COMFYUI_DIR is set): discovery writes into
models/stylegan_directions (registered with ComfyUI), Load Directions lists and reads those files and imported ones."""

from __future__ import annotations

import os

import numpy as np
import pytest

import core
from conftest import tiny_generator

pytestmark = pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"),
                                reason="set COMFYUI_DIR to a ComfyUI checkout to run integration tests")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from comfyui_server import ComfyServer

    srv = ComfyServer(tmp_path_factory.mktemp("comfyui"))
    core.save_generator(tiny_generator("stylegan2"), srv.models / "tiny.safetensors")
    folder = srv.root / "models" / "stylegan_directions"
    folder.mkdir(parents=True)
    np.save(folder / "smile.npy", np.ones((1, 16), np.float32))            # an InterFaceGAN boundary for w_dim 16
    srv.start()
    yield srv
    srv.stop()


def node(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def test_discover_save_list_and_load_directions(server):
    load = node("SGS_LoadStyleGAN", ckpt_name="tiny.safetensors", device="auto", network="G_ema", dtype="auto")
    info = server.get("/object_info/SGS_LoadDirections")
    assert info["SGS_LoadDirections"]["input"]["required"]["direction_file"][0] == ["smile.npy"]
    prompt = {"1": load,
              "2": node("SGS_DiscoverSeFaDirections", generator=["1", 0], variant="torgb", num=4, layer_start=0,
                        layer_end=0, filename="tiny_sefa"),
              "3": node("SGS_DiscoverGANSpaceDirections", generator=["1", 0], num_samples=500, num_components=3,
                        seed=0, layer_start=2, layer_end=6, filename="tiny_gs"),
              "4": node("SGS_LoadDirections", direction_file="smile.npy", space="auto", generator=["1", 0]),
              "5": node("PreviewAny", source=["4", 1])}
    result = server.run_prompt(prompt, timeout=300)
    assert result["status"]["status_str"] == "success", result["status"]
    assert "4 w directions [16] by sefa (torgb)" in result["outputs"]["2"]["text"][0]
    assert "layers 2..5" in result["outputs"]["3"]["text"][0]
    assert "interfacegan-npy file" in result["outputs"]["4"]["text"][0], result["outputs"]
    folder = server.root / "models" / "stylegan_directions"
    assert (folder / "tiny_sefa.safetensors").is_file() and (folder / "tiny_gs.safetensors").is_file()
    listed = server.get("/object_info/SGS_LoadDirections")["SGS_LoadDirections"]["input"]["required"]
    assert listed["direction_file"][0] == ["smile.npy", "tiny_gs.safetensors", "tiny_sefa.safetensors"]
    again = server.run_prompt({"1": load, "4": node("SGS_LoadDirections", direction_file="tiny_sefa.safetensors",
                                                    space="auto", generator=["1", 0]),
                                "5": node("PreviewAny", source=["4", 1])})
    assert again["status"]["status_str"] == "success", again["status"]
    assert "ours file: 4 w directions" in again["outputs"]["4"]["text"][0]
