"""The pack's model caches are bounded and ComfyUI's memory management empties them (a fake
comfy.model_management stands in for ComfyUI)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import core
from conftest import tiny_generator


@pytest.fixture()
def caches(pack):
    mod = sys.modules[f"{pack.__name__}.nodes.caches"]
    mod.release_models()
    yield mod
    mod.release_models()


@pytest.fixture()
def comfy_env(pack):
    return sys.modules[f"{pack.__name__}.nodes.comfy_env"]


def module_on(device: str) -> torch.nn.Module:
    return torch.nn.Linear(4, 4, device=device)


def test_model_cache_is_a_bounded_lru_that_counts_loads(caches):
    cache = caches.ModelCache("test_lru", max_items=2)
    try:
        assert cache.get_or_load("a", lambda: module_on("cpu")) is cache.get_or_load("a", lambda: 1 / 0)
        cache.get_or_load("b", lambda: module_on("cpu"))
        cache.get("a")  # a is now the most recently used
        cache.get_or_load("c", lambda: module_on("cpu"))
        assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
        assert cache.loads == 3
        stats = caches.memory_stats()["test_lru"]
        size = (16 + 4) * 4
        assert stats == {"entries": 2, "max_items": 2, "loads": 3, "bytes": 2 * size, "alive": 2,
                         "alive_bytes": 2 * size}  # the evicted "b" was held by nothing else: gone
        held = cache.get("a")
        cache.clear()
        assert caches.memory_stats()["test_lru"]["alive"] == 1 and held is not None  # dropped, still referenced
        with pytest.raises(ValueError, match="max_items must be at least 1"):
            caches.ModelCache("test_bad", max_items=0)
    finally:
        caches.CACHES.pop("test_lru")


def test_every_cache_of_the_pack_is_registered_and_bounded(caches):
    names = {"generators", "perceptual", "arcface", "latent_mappers", "ii2s_priors", "global_directions",
             "composite_embeddings"}
    assert names <= set(caches.CACHES)
    assert all(1 <= c.max_items <= 4 for c in caches.CACHES.values())


@pytest.mark.slow
def test_release_by_device_keeps_the_other_devices(caches):
    cache = caches.ModelCache("test_devices", max_items=4)
    try:
        cache.put("cpu", module_on("cpu"))
        cache.put("meta", module_on("meta"))  # stands in for a GPU: another device, no memory
        assert caches.release_models(torch.device("meta")) == 1
        assert "cpu" in cache and "meta" not in cache
        assert caches.release_models() >= 1 and len(cache) == 0
    finally:
        caches.CACHES.pop("test_devices")


def test_same_device_treats_a_missing_index_as_any():
    from stylegan_studio.nodes.caches import same_device

    assert same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert not same_device(torch.device("cuda:1"), torch.device("cuda:0"))
    assert not same_device(torch.device("cpu"), torch.device("meta"))


def test_release_runs_the_clip_hook_and_survives_a_failing_hook(pack, caches, monkeypatch):
    clip = sys.modules[f"{pack.__name__}.core.models.clip"]
    cleared = []
    monkeypatch.setattr(clip, "clear_clip_cache", lambda: cleared.append(True))
    caches.add_release_hook("test_broken", lambda device: 1 / 0)
    try:
        caches.release_models()
    finally:
        caches._RELEASE_HOOKS.pop("test_broken")
    assert cleared


def test_a_released_generator_is_read_from_disk_again(pack, caches, tmp_path):
    core.save_generator(tiny_generator("stylegan2"), tmp_path / "models" / "stylegan" / "tiny.safetensors")
    load = pack.NODE_CLASS_MAPPINGS["SGS_LoadStyleGAN"]().load
    cache = caches.CACHES["generators"]
    G = load("tiny.safetensors", device="cpu")["result"][0]
    loads = cache.loads
    assert load("tiny.safetensors", device="cpu")["result"][0] is G and cache.loads == loads
    assert caches.memory_stats()["generators"]["bytes"] > 0
    caches.release_models()
    assert len(cache) == 0 and caches.memory_stats()["generators"]["bytes"] == 0
    G2 = load("tiny.safetensors", device="cpu")["result"][0]
    assert G2 is not G and cache.loads == loads + 1
    load("tiny.safetensors", device="cpu", dtype="float32")  # more versions than the cache holds
    load("tiny.safetensors", device="cpu", network="G")
    assert len(cache) == cache.max_items == 2


def fake_model_management(free_bytes: int):
    """The parts of comfy.model_management the hooks use; ComfyUI's unload_all_models calls free_memory(1e30)."""
    mm = types.ModuleType("comfy.model_management")
    mm.calls = []
    mm.free_bytes = free_bytes

    def free_memory(memory_required, device, keep_loaded=[]):
        mm.calls.append(("free_memory", memory_required, str(device)))
        return ["unloaded"]

    def unload_all_models():
        mm.free_memory(1e30, torch.device("meta"))

    mm.free_memory = free_memory
    mm.unload_all_models = unload_all_models
    mm.get_free_memory = lambda dev=None, torch_free_too=False: mm.free_bytes
    mm.soft_empty_cache = lambda force=False: mm.calls.append(("soft_empty_cache",))
    return mm


@pytest.fixture()
def hooked(caches, comfy_env, monkeypatch):
    mm = fake_model_management(free_bytes=10)
    monkeypatch.setattr(comfy_env, "_mm", mm)
    monkeypatch.setattr(comfy_env, "IN_COMFYUI", True)
    original = mm.free_memory
    assert comfy_env.install_memory_hooks(caches.release_models)
    assert comfy_env.install_memory_hooks(caches.release_models)  # again: no second wrapper
    assert mm.free_memory.sgs_original is original and list(mm.free_memory.sgs_hooks) == ["stylegan_studio"]
    assert list(mm.unload_all_models.sgs_hooks) == ["stylegan_studio"]
    cache = caches.ModelCache("test_hooked", max_items=4)
    cache.put("cpu", module_on("cpu"))
    cache.put("meta", module_on("meta"))
    yield mm, cache
    caches.CACHES.pop("test_hooked")


@pytest.mark.slow
def test_free_model_and_node_cache_releases_everything(hooked):
    mm, cache = hooked
    mm.unload_all_models()  # what POST /free with unload_models runs
    assert len(cache) == 0
    assert ("free_memory", 1e30, "meta") in mm.calls and ("soft_empty_cache",) in mm.calls


def test_making_room_releases_only_when_comfyui_could_not(hooked):
    mm, cache = hooked
    assert mm.free_memory(5, torch.device("meta")) == ["unloaded"]  # 10 bytes free: ComfyUI made enough room
    assert len(cache) == 2
    mm.free_memory(100, torch.device("meta"))  # still short: our models on that device go
    assert "cpu" in cache and "meta" not in cache
    assert mm.calls[-1] == ("soft_empty_cache",)


def test_a_failing_release_never_breaks_comfyui(hooked, comfy_env, caches):
    mm, cache = hooked

    def broken(device):
        raise RuntimeError("boom")

    comfy_env.install_memory_hooks(broken)
    try:
        assert mm.free_memory(1e30, torch.device("meta")) == ["unloaded"]
        mm.unload_all_models()
    finally:
        comfy_env.install_memory_hooks(caches.release_models)
    assert len(cache) == 2  # the broken hook replaced ours (same name): nothing released, nothing raised


def test_hooks_are_not_installed_outside_comfyui(comfy_env, caches):
    assert not comfy_env.IN_COMFYUI and comfy_env.install_memory_hooks(caches.release_models) is False


def test_release_forgets_the_face_detectors(pack, monkeypatch):
    """The face_alignment detectors core keeps (one per device) go with the pack's other models."""
    det = pack.core.landmarks.FANDetector
    monkeypatch.setattr(det, "_cache", {"cpu": object()})
    pack.nodes.caches.release_models()
    assert det._cache == {}
