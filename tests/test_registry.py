"""Nodes are declared once: ComfyUI's mappings, the web extension's lists and the example-workflow script all come
from the registry, and released ids and display names never change."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import types

import pytest

from conftest import REPO

# Released: saved workflows refer to these ids. A new node adds to the registry only. The names are the plain ones;
# every display name carries the pack's suffix (issue 14: "Invert Image" and "Load CLIP" were core nodes' names too).
RELEASED = {
    "SGS_LoadStyleGAN": "Load StyleGAN", "SGS_DemoGenerator": "Demo Generator (random)",
    "SGS_SaveStyleGAN": "Save StyleGAN as safetensors", "SGS_SampleLatent": "Sample Latent",
    "SGS_Synthesize": "Synthesize Image", "SGS_InterpolateLatents": "Interpolate Latents",
    "SGS_StyleMix": "Style Mix", "SGS_SaveLatent": "Save Latent", "SGS_LoadLatent": "Load Latent",
    "SGS_AlignFace": "Align Face", "SGS_UnalignFace": "Unalign Face", "SGS_InvertImage": "Invert Image",
    "SGS_SaveWeightDelta": "Save Weight Delta", "SGS_ApplyWeightDelta": "Apply Weight Delta",
    "SGS_LoadCLIP": "Load CLIP", "SGS_LoadArcFace": "Load ArcFace (identity)",
    "SGS_CLIPLatentOptimize": "CLIP Latent Optimize", "SGS_ComputeGlobalDirections": "Compute Global Directions",
    "SGS_GlobalDirectionEdit": "Global Direction Edit", "SGS_TrainLatentMapper": "Train Latent Mapper",
    "SGS_LoadLatentMapper": "Load Latent Mapper", "SGS_ApplyLatentMapper": "Apply Latent Mapper",
}


@pytest.fixture()
def registry(pack):
    return sys.modules[f"{pack.__name__}.nodes.registry"]


def test_released_ids_and_display_names_never_change(pack):
    assert {k: pack.NODE_DISPLAY_NAME_MAPPINGS.get(k) for k in RELEASED} == {
        k: f"{v} (StyleGAN)" for k, v in RELEASED.items()}


def test_every_display_name_marks_the_pack_and_is_unique(pack, registry):
    names = list(pack.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert names and all(n.endswith(registry.PACK_SUFFIX) and n.count("(StyleGAN)") == 1 for n in names), names
    assert len(set(names)) == len(names)
    # Core ComfyUI nodes the pack's plain names collided with.
    assert not {"Invert Image", "Load CLIP"} & set(names)


# The frontend's node search (Fuse.js: threshold 0.3, location 0, distance 100) scores an exact match by where it
# starts, position / 100, and drops it above 0.3: "stylegan" typed in the search box finds a node only when
# "(StyleGAN)" starts within the first 30 characters of its display name. Frontend 1.27.10 left out "Encode Image
# (e4e / pSp / ReStyle) (StyleGAN)" this way (tests/test_browser.py checks it in the real frontend).
SEARCH_MATCH_LIMIT = 30


def test_every_node_is_found_by_searching_for_the_pack(pack):
    too_long = {node_id: name for node_id, name in pack.NODE_DISPLAY_NAME_MAPPINGS.items()
                if name.lower().index("stylegan") > SEARCH_MATCH_LIMIT}
    assert not too_long, (f"display names the node search box misses for 'stylegan' (keep the name before "
                          f"' (StyleGAN)' to {SEARCH_MATCH_LIMIT - 2} characters): {too_long}")


def test_suffix_is_added_once(registry, monkeypatch):
    monkeypatch.setattr(registry, "NODES", {})

    class A:
        pass

    class B:
        pass

    registry.register_node("SGS_A", "Thing A")(A)
    registry.register_node("SGS_B", "Thing B (StyleGAN)")(B)
    assert registry.display_name_mappings() == {"SGS_A": "Thing A (StyleGAN)", "SGS_B": "Thing B (StyleGAN)"}


def test_comfyui_mappings_are_the_registry(pack, registry):
    assert pack.NODE_CLASS_MAPPINGS == {e.id: e.cls for e in registry.NODES.values()}
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == {e.id: e.display_name for e in registry.NODES.values()}


def test_optimising_nodes_are_those_that_run_an_optimisation(registry):
    info = registry.web_info()
    # The released optimising nodes stay optimising; a new method's nodes join without editing this test.
    assert set(info["optimising"]) >= {"SGS_InvertImage", "SGS_CLIPLatentOptimize", "SGS_ComputeGlobalDirections",
                                       "SGS_TrainLatentMapper"}
    assert "SGS_Synthesize" in info["frames"] and info["prefix"] == "SGS_"
    assert not set(info["optimising"]) & {"SGS_Synthesize", "SGS_LoadStyleGAN", "SGS_SampleLatent"}
    # Each optimising node's module runs it through the one helper (progress, preview, status, cancel, cleanup).
    for node_id in info["optimising"]:
        module = sys.modules[registry.NODES[node_id].cls.__module__]
        assert module.run_optimisation.__module__.endswith("nodes.optimize"), node_id


def test_register_node_refuses_bad_and_duplicate_ids(registry):
    with pytest.raises(ValueError, match="must start with 'SGS_'"):
        registry.register_node("LoadThing", "Load Thing")

    class Other:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        registry.register_node("SGS_LoadStyleGAN", "Load StyleGAN")(Other)
    assert registry.NODES["SGS_LoadStyleGAN"].cls is not Other


def test_web_extension_keeps_no_list_of_nodes():
    for script in (REPO / "web").glob("*.js"):
        ids = re.findall(r"[\"']SGS_[A-Za-z]+[\"']", script.read_text())
        assert not ids, f"{script.name} names nodes {ids}: declare them in nodes/registry.py"


def test_routes_serve_the_registry_and_the_caches(pack, monkeypatch):
    web = pytest.importorskip("aiohttp.web")
    comfy_env = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    server = types.SimpleNamespace(routes=web.RouteTableDef())
    monkeypatch.setattr(comfy_env, "IN_COMFYUI", True)
    monkeypatch.setattr(comfy_env, "_prompt_server", lambda: server)
    routes = {"/stylegan_studio/test": lambda: {"ok": [1, 2]}}
    assert comfy_env.add_json_routes(routes) and comfy_env.add_json_routes(routes)  # the second adds nothing
    (route,) = list(server.routes)
    assert route.path == "/stylegan_studio/test" and route.method == "GET"
    response = asyncio.run(route.handler(None))
    assert json.loads(response.text) == {"ok": [1, 2]}


def test_no_server_no_routes(pack):
    comfy_env = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    assert comfy_env.add_json_routes({"/stylegan_studio/test": dict}) is False


def test_example_workflow_script_reads_the_node_slots(pack):
    spec = importlib.util.spec_from_file_location("sgs_make_examples", REPO / "scripts" / "make_example_workflows.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.load_pack() is pack  # the pack already imported, not a second copy
    inputs, outputs = script.slots("SGS_InvertImage")
    assert inputs == [("generator", "SGS_GENERATOR", False), ("image", "IMAGE", False), ("mask", "MASK", True),
                      ("encoder", "SGS_ENCODER", True)]  # issue 19: the optional encoder (e4e / restyle, start)
    assert outputs == [("latent", "SGS_LATENT"), ("generator", "SGS_GENERATOR"), ("reconstruction", "IMAGE"),
                       ("report", "STRING"), ("delta", "SGS_WEIGHT_DELTA")]
    for name in pack.NODE_CLASS_MAPPINGS:  # every node can be placed in an example
        script.slots(name)


def test_warnings_logged_while_a_node_runs_are_shown_on_the_node(pack):
    """A latent from another generator renders, and the node's report says so (not only the server console)."""
    import core

    nodes = pack.NODE_CLASS_MAPPINGS
    a = core.build_generator(core.GeneratorConfig(arch="stylegan2", z_dim=16, w_dim=16, img_resolution=16,
                                                  mapping=core.MappingConfig(num_layers=2),
                                                  synthesis=core.StyleGAN2Config(channel_base=128, channel_max=16)),
                             seed=0)
    b = core.build_generator(a.config, seed=1)
    a.info.name, b.info.name = "model-a", "model-b"
    latent = core.sample_latents(a, [0], space="w")
    out = nodes["SGS_Synthesize"]().synthesize(b, latent, "const")
    text = out["ui"]["text"]
    assert any(line.startswith("warning: this latent was made with model-a; model-b has the same shape but other "
                               "weights") for line in text), text
    quiet = nodes["SGS_Synthesize"]().synthesize(a, latent, "const")
    assert not any(line.startswith("warning:") for line in (quiet.get("ui", {}).get("text") or [])
                   if isinstance(quiet, dict))
