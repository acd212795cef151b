"""Direction nodes run headless: discovery saves to models/stylegan_directions, Load Directions lists and reads
every format there, schema defaults come from core."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_generator


def test_discover_nodes_save_and_load_lists_them(pack, tmp_path):
    nodes = pack.NODE_CLASS_MAPPINGS
    DR = pack.core.directions
    G = tiny_generator("stylegan2")
    spec = nodes["SGS_DiscoverSeFaDirections"].INPUT_TYPES()["required"]
    assert spec["variant"][1]["default"] == DR.DEFAULT_SEFA_VARIANT and spec["num"][1]["default"] == DR.DEFAULT_SEFA_NUM
    spec = nodes["SGS_DiscoverGANSpaceDirections"].INPUT_TYPES()["required"]
    assert spec["num_samples"][1]["default"] == DR.DEFAULT_GANSPACE_SAMPLES

    out = nodes["SGS_DiscoverSeFaDirections"]().discover(G, "genforce", 4, 2, 6, "")
    d, info = out["result"]
    assert d.count == 4 and d.variant == "genforce" and d.layers == (2, 6)
    folder = tmp_path / "models" / "stylegan_directions"
    assert (folder / "tiny-stylegan2_sefa_genforce.safetensors").is_file() and "saved to" in info
    out = nodes["SGS_DiscoverSeFaDirections"]().discover(G, "genforce", 4, 0, 0, "")   # never overwrites
    assert out["result"][0].layers is None and (folder / "tiny-stylegan2_sefa_genforce_2.safetensors").is_file()
    g, _ = nodes["SGS_DiscoverGANSpaceDirections"]().discover(G, 500, 3, 1, 0, 0, "my gs")["result"]
    assert g.method == "ganspace" and (folder / "my_gs.safetensors").is_file()

    np.save(folder / "smile.npy", np.ones((1, G.w_dim), np.float32))
    choices = nodes["SGS_LoadDirections"].INPUT_TYPES()["required"]["direction_file"][0]
    assert choices == ["my_gs.safetensors", "smile.npy", "tiny-stylegan2_sefa_genforce.safetensors",
                       "tiny-stylegan2_sefa_genforce_2.safetensors"]
    loaded, text = nodes["SGS_LoadDirections"]().load("my_gs.safetensors", "auto", G)["result"]
    assert torch.equal(loaded.vectors, g.vectors) and text.startswith("ours file")
    smile, text = nodes["SGS_LoadDirections"]().load("smile.npy", "z")["result"]
    assert smile.space == "z" and smile.method == "interfacegan" and "interfacegan-npy" in text
    assert nodes["SGS_LoadDirections"].IS_CHANGED("smile.npy")
    assert "not found" in nodes["SGS_LoadDirections"].VALIDATE_INPUTS("gone.npy")
    with pytest.raises(ValueError, match="must be a file name inside models/stylegan_directions"):
        nodes["SGS_LoadDirections"]().load("../secret.npy", "auto")
    wide = tiny_generator("stylegan2", w_dim=8, z_dim=8)
    with pytest.raises(pack.core.LatentError, match="have 16 values, but tiny-stylegan2 has w_dim 8"):
        nodes["SGS_LoadDirections"]().load("my_gs.safetensors", "auto", wide)


def test_discover_layer_range_is_checked(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    G = tiny_generator("stylegan2")
    with pytest.raises(pack.core.LatentError, match="layer_start .. layer_end"):
        nodes["SGS_DiscoverSeFaDirections"]().discover(G, "rosinality", 2, 6, 3, "")
