"""Shared test fixtures: tiny seeded generators, and the pack imported the way ComfyUI imports it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import core  # noqa: E402  (needs the repository root on sys.path)

PACK_NAME = "stylegan_studio"


def tiny_config(arch: str = "stylegan2", **overrides) -> core.GeneratorConfig:
    """A generator small enough for CPU tests (32 px, 16-d latents, <= 32 channels)."""
    if arch == "stylegan2":
        syn = core.StyleGAN2Config(**{"channel_base": 512, "channel_max": 32, "conv_clamp": 256,
                                      **overrides.pop("synthesis", {})})
    else:
        syn = core.StyleGAN3Config(**{"channel_base": 512, "channel_max": 32, **overrides.pop("synthesis", {})})
    fields = dict(arch=arch, z_dim=16, w_dim=16, img_resolution=32, mapping=core.MappingConfig(num_layers=2),
                  synthesis=syn)
    fields.update(overrides)
    return core.GeneratorConfig(**fields)


def tiny_generator(arch: str = "stylegan2", seed: int = 0, **overrides) -> core.Generator:
    G = core.build_generator(tiny_config(arch, **overrides), seed=seed)
    core.compute_w_avg(G, num_samples=500, seed=seed)
    G.info.name = f"tiny-{arch}"
    return G


# open_clip configs of seeded random CLIP models for tests: the tiniest (32 px images, one layer each) and a small one
# (64 px, two layers) where a test needs CLIP's losses to separate prompts.
TINY_CLIP_CFG = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
SMALL_CLIP_CFG = {"embed_dim": 32,
                  "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def register_tiny_clip(tmp_path_factory, name: str, cfg: dict) -> None:
    """Make the open_clip architecture `name` (a tiny test config) known to open_clip, so `random_clip(name)` and
    `load_clip(name, ...)` can build it."""
    import json

    import open_clip

    path = tmp_path_factory.mktemp("clip_cfg") / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(path))


def tiny_clip(tmp_path_factory, name: str, cfg: dict, seed: int = 0):
    """A `core.models.clip.ClipModel` of the tiny architecture `cfg` with seeded random weights."""
    from core.models.clip import random_clip

    register_tiny_clip(tmp_path_factory, name, cfg)
    return random_clip(name, seed=seed)


@pytest.fixture(scope="session")
def G2() -> core.Generator:
    return tiny_generator("stylegan2")


@pytest.fixture(scope="session")
def G3() -> core.Generator:
    return tiny_generator("stylegan3")


def load_pack():
    """Import the repository as the package 'stylegan_studio', as ComfyUI imports a custom node folder."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    spec.loader.exec_module(pack)
    return pack


@pytest.fixture()
def pack(tmp_path, monkeypatch):
    """The pack, with its fallback model/input/output folders in a temporary directory."""
    monkeypatch.setenv("STYLEGAN_STUDIO_HOME", str(tmp_path))
    for kind in ("MODELS", "INPUT", "OUTPUT"):
        monkeypatch.delenv(f"STYLEGAN_STUDIO_{kind}", raising=False)
    (tmp_path / "models" / "stylegan").mkdir(parents=True)
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    return load_pack()


@pytest.fixture(params=["stylegan2", "stylegan3"])
def arch(request) -> str:
    return request.param


_NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(params=[pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=_NEEDS_CUDA)])
def device(request) -> torch.device:
    """Every device the tests can use here: the CPU, and CUDA where present (skipped otherwise)."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float16], ids=["float32", "float16"])
def dtype(request, device) -> torch.dtype:
    """The precision the synthesis runs in; float16 only on CUDA (fp16 blocks run in float32 elsewhere)."""
    if request.param == torch.float16 and device.type != "cuda":
        pytest.skip("float16 synthesis runs on CUDA only")
    return request.param


def on_device(G: core.Generator, device: torch.device, dtype: torch.dtype = torch.float32) -> core.Generator:
    """`G` moved to `device` (in place), running its fp16-trained blocks in float16 if `dtype` is float16
    (precision 'auto'), everything in float32 otherwise."""
    G = G.to(device)
    G.precision = "auto" if dtype == torch.float16 else "float32"
    return G


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
