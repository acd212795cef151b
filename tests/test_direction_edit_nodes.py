"""Direction Edit / Direction Sweep headless, and the live-preview route's handler called as a function: the
preview is the node's own edit rendered small, every request value is checked, the cache is bounded and a newer
request supersedes an older one."""

from __future__ import annotations

import base64
import io
import sys
import threading

import pytest
import torch

import core
from conftest import load_pack, tiny_generator

# Everything from the pack's own modules (imported as ComfyUI imports it): its Latent and Directions classes.
pack_core = load_pack().core
L = pack_core.latents
P = pack_core.preview
LatentError = pack_core.errors.LatentError
apply_directions = pack_core.directions.apply_directions


def tiny(arch: str, folder):
    """A tiny seeded generator built by the pack's own modules (through a file, as ComfyUI would load it)."""
    path = core.save_generator(tiny_generator(arch), folder / f"tiny-{arch}.safetensors")
    return pack_core.load_generator(path)


@pytest.fixture(scope="module")
def G(tmp_path_factory):
    return tiny("stylegan2", tmp_path_factory.mktemp("g"))


@pytest.fixture(scope="module")
def dirs(G):
    return pack_core.directions.sefa(G, num=4)


@pytest.fixture()
def mods(pack):
    edit = sys.modules[f"{pack.__name__}.nodes.direction_edit"]
    live = sys.modules[f"{pack.__name__}.nodes.live_preview"]
    live._sources.clear()
    live._by_node.clear()
    yield edit, live
    live._sources.clear()
    live._by_node.clear()


def latents(G, n=2):
    return L.sample_latents(G, list(range(n)), space="w")


def decode(data_url: str) -> torch.Tensor:
    from PIL import Image
    import numpy as np

    assert data_url.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    return torch.from_numpy(np.array(img.convert("RGB"))).float()


def body(token, node_id="7", **values):
    return {"token": token, "node_id": node_id, "index": 0, "strength": 0.0, "index_2": 1, "strength_2": 0.0,
            "layer_start": 0, "layer_end": 0, **values}


def test_edit_matches_apply_directions_and_renders(mods, G, dirs):
    edit, _ = mods
    lat = latents(G)
    out = edit.DirectionEdit().edit(G, lat, dirs, 1, 5.0, unique_id="7")
    edited, images = out["result"]
    expected = apply_directions(G, lat, [(dirs, 1, 5.0)])
    assert edited.space == expected.space and torch.equal(edited.tensor, expected.tensor)
    assert images.shape == (2, 32, 32, 3)
    assert torch.allclose(images, L.synthesize(G, expected).add(1).div(2).clamp(0, 1).permute(0, 2, 3, 1),
                          atol=1 / 255 + 1e-6)
    live = out["ui"]["sgs_live"][0]
    assert len(live["token"]) == 32 and live["names"] == list(dirs.names) and live["range"] == dirs.strength_range
    assert set(live["inputs"]) == set(body(live["token"])) - {"token", "node_id"}  # what the browser sends
    assert "sefa_01" in out["ui"]["text"][0] or dirs.names[1] in out["ui"]["text"][0]


def test_second_direction_layers_and_conditional(mods, G, dirs):
    edit, _ = mods
    lat = latents(G, 1)
    node = edit.DirectionEdit()
    both = node.edit(G, lat, dirs, 0, 3.0, strength_2=-2.0, index_2=2)["result"][0]
    w = lat.tensor
    expected = w + 3.0 * dirs.vectors[0] - 2.0 * dirs.vectors[2]
    assert torch.allclose(L.latent_to_ws(G, both)[:, 0].cpu(), expected, atol=1e-5)

    ranged = node.edit(G, lat, dirs, 0, 4.0, layer_start=2, layer_end=4)["result"][0]
    assert ranged.space == "w+"
    moved = (ranged.tensor - w[:, None]).abs().amax(dim=-1)[0]
    assert moved[2:4].gt(0).all() and moved[:2].eq(0).all() and moved[4:].eq(0).all()

    cond = node.edit(G, lat, dirs, 0, 4.0, protected=dirs, protected_indices="1, 2")["result"][0]
    delta = L.latent_to_ws(G, cond)[:, 0].cpu() - w
    for j in (1, 2):
        assert abs(float(delta[0] @ dirs.vectors[j])) < 1e-4 * float(delta.norm())
    assert float(delta.norm()) > 0
    with pytest.raises(LatentError, match="layer_end"):
        node.edit(G, lat, dirs, 0, 1.0, layer_start=5, layer_end=3)


def test_sweep_uses_the_methods_range_by_default(mods, G, dirs):
    edit, _ = mods
    lat = latents(G, 2)
    images, swept = edit.DirectionSweep().sweep(G, lat, dirs, 3, 0.0, 0.0, 5)["result"]
    assert images.shape == (10, 32, 32, 3) and swept.batch_size == 10
    ws = L.latent_to_ws(G, swept)[:, 0].cpu()
    r = dirs.strength_range  # SeFa: the method's usual range, from core
    for k, s in enumerate([-r, -r / 2, 0.0, r / 2, r]):
        assert torch.allclose(ws[k], lat.tensor[0] + s * dirs.vectors[3], atol=1e-4)
    images, swept = edit.DirectionSweep().sweep(G, lat, dirs, 0, -1.0, 1.0, 1)["result"]
    assert swept.batch_size == 2  # one frame per latent: strength_from


def test_preview_route_renders_the_nodes_edit(mods, G, dirs, monkeypatch):
    edit, live = mods
    lat = latents(G, 2)
    token = edit.DirectionEdit().edit(G, lat, dirs, 0, 0.0, unique_id="7")["ui"]["sgs_live"][0]["token"]
    rendered = []
    encode = live.encode_jpeg
    monkeypatch.setattr(live, "encode_jpeg", lambda image: rendered.append(image) or encode(image))
    a = live.preview_route(body(token, strength=0.0, px=32))
    b = live.preview_route(body(token, strength=15.0, px=32, layer_start=1, strength_2=-4.0))
    assert a["ok"] and a["px"] == 32 and a["resolution"] == 32 and a["ms"] > 0
    assert decode(a["image"]).shape == (32, 32, 3) and decode(b["image"]).shape == (32, 32, 3)
    # At full size the preview is exactly the node's own first image for the same values.
    ran = edit.DirectionEdit().edit(G, lat, dirs, 0, 15.0, layer_start=1, strength_2=-4.0)["result"][0]
    assert torch.allclose(rendered[1], L.synthesize(G, ran)[:1], atol=1e-5)  # batch 1 vs 2: another conv path
    assert not torch.equal(rendered[0], rendered[1])
    # Smaller: the synthesis stops early (the RGB skip of the 16 px block).
    small = live.preview_route(body(token, strength=15.0, px=16))
    assert small["px"] == 16 and decode(small["image"]).shape == (16, 16, 3)


def test_preview_of_a_set_with_one_direction(mods, G, dirs):
    # An InterFaceGAN boundary file holds one direction; the browser still sends the widget's index_2 (default 1).
    edit, live = mods
    one = dirs.select([0])
    assert one.count == 1
    token = edit.DirectionEdit().edit(G, latents(G, 1), one, 0, 2.0, unique_id="7")["ui"]["sgs_live"][0]["token"]
    assert live.preview_route(body(token, strength=2.0, px=16))["ok"]
    with pytest.raises(ValueError, match="index_2"):       # with a second strength, index_2 must exist
        live.preview_route(body(token, strength=2.0, strength_2=1.0, px=16))


def test_render_preview_stops_early(G, dirs, tmp_path):
    lat = apply_directions(G, latents(G, 3), [(dirs, 0, 4.0)])
    img = P.render_preview(G, lat, max_px=16)
    ws = L.latent_to_ws(G, lat)[:1]
    assert torch.equal(img, G.synthesis.run(ws, stop=16).img)
    assert torch.equal(P.render_preview(G, lat, max_px=256), L.synthesize(G, P.first_latent(lat)))
    G3 = tiny("stylegan3", tmp_path)
    assert P.render_preview(G3, L.sample_latents(G3, [0]), max_px=16).shape[-1] == 16  # scaled down


@pytest.mark.parametrize("change, message", [
    ({"strength": float("nan")}, "strength"), ({"strength": 1e6}, "strength"), ({"strength": "3"}, "strength"),
    ({"index": 4}, "index"), ({"index": 1.5}, "index"), ({"index": True}, "index"), ({"layer_end": 99}, "layer_end"),
    ({"px": 4096}, "px"), ({"node_id": "8"}, "node 7"), ({"token": "../../etc"}, "run the node once"),
    ({"token": "ab" * 16}, "run the node once"),
])
def test_preview_route_refuses_bad_values(mods, G, dirs, change, message):
    edit, live = mods
    token = edit.DirectionEdit().edit(G, latents(G, 1), dirs, 0, 0.0, unique_id="7")["ui"]["sgs_live"][0]["token"]
    request = {**body(token), **change}
    with pytest.raises(ValueError, match=message):
        live.preview_route(request)
    with pytest.raises(ValueError, match="JSON object"):
        live.preview_route(["not", "a", "dict"])


def test_preview_cache_is_bounded_and_per_node(mods, G, dirs):
    edit, live = mods
    node = edit.DirectionEdit()
    lat = latents(G, 1)
    assert node.edit(G, lat, dirs, 0, 0.0)["ui"]["sgs_live"][0]["token"] == ""  # no node id: nothing kept
    first = node.edit(G, lat, dirs, 0, 0.0, unique_id="1")["ui"]["sgs_live"][0]["token"]
    again = node.edit(G, lat, dirs, 0, 0.0, unique_id="1")["ui"]["sgs_live"][0]["token"]
    with pytest.raises(ValueError, match="no longer kept"):  # the node ran again: its old token is gone
        live.preview_route(body(first, node_id="1"))
    assert live.preview_route(body(again, node_id="1", px=16))["ok"]
    tokens = [node.edit(G, lat, dirs, 0, 0.0, unique_id=str(i))["ui"]["sgs_live"][0]["token"]
              for i in range(2, 2 + live.MAX_SOURCES)]
    assert len(live._sources) == live.MAX_SOURCES and len(live._by_node) <= live.MAX_SOURCES
    with pytest.raises(ValueError, match="no longer kept"):
        live.preview_route(body(again, node_id="1"))
    assert live.preview_route(body(tokens[-1], node_id=str(1 + live.MAX_SOURCES), px=16))["ok"]
    inner = node.edit(G, lat, dirs, 0, 0.0, unique_id="12:5")["ui"]["sgs_live"][0]["token"]  # inside a subgraph
    assert live.preview_route(body(inner, node_id="5", px=16))["ok"]
    with pytest.raises(ValueError, match="node 12:5"):
        live.preview_route(body(inner, node_id="2", px=16))


def test_newer_request_supersedes_a_waiting_one(mods, G, dirs):
    edit, live = mods
    token = edit.DirectionEdit().edit(G, latents(G, 1), dirs, 0, 0.0, unique_id="7")["ui"]["sgs_live"][0]["token"]
    answers = {}
    with live._render_lock:  # a render in progress: both requests wait
        older = threading.Thread(target=lambda: answers.__setitem__("old", live.preview_route(body(token, px=16))))
        older.start()
        while live._sources.get(token).seq < 1:
            pass
        newer = threading.Thread(target=lambda: answers.__setitem__("new", live.preview_route(
            body(token, strength=3.0, px=16))))
        newer.start()
        while live._sources.get(token).seq < 2:
            pass
    older.join(30)
    newer.join(30)
    assert answers["old"] == {"ok": True, "superseded": True}
    assert answers["new"]["ok"] and "image" in answers["new"]


def test_slow_previews_render_smaller(mods, G, dirs, monkeypatch):
    edit, live = mods
    token = edit.DirectionEdit().edit(G, latents(G, 1), dirs, 0, 0.0, unique_id="7")["ui"]["sgs_live"][0]["token"]
    monkeypatch.setattr(live, "MIN_ADAPTIVE_PX", 16)
    monkeypatch.setattr(live, "BUDGET_MS", 0.0)  # every render is over budget
    assert live.preview_route(body(token, px=32))["px"] == 32
    assert live.preview_route(body(token, px=32))["px"] == 16
    assert live.preview_route(body(token, px=32))["px"] == 16  # never below MIN_ADAPTIVE_PX
    monkeypatch.setattr(live, "BUDGET_MS", 1e9)  # fast again: back up
    assert live.preview_route(body(token, px=32))["px"] == 16
    assert live.preview_route(body(token, px=32))["px"] == 32


def test_live_nodes_are_declared_in_the_registry(pack):
    registry = sys.modules[f"{pack.__name__}.nodes.registry"]
    live = registry.web_info()["live"]
    assert "SGS_DirectionEdit" in live
    for node_id in live:  # a live node must know its id to keep its run for the preview route
        assert registry.NODES[node_id].cls.INPUT_TYPES()["hidden"]["unique_id"] == "UNIQUE_ID"


def test_a_slow_generator_starts_small(mods, G, dirs, monkeypatch):
    _, live = mods
    edit = lambda values: apply_directions(G, latents(G, 1), [(dirs, 0, values["strength"])])  # noqa: E731
    check = lambda b: {"strength": live.finite_number(b, "strength", -10, 10)}  # noqa: E731
    monkeypatch.setattr(live, "MIN_ADAPTIVE_PX", 16)
    slow = live.keep_source("1", G, edit, check, full_ms=live.BUDGET_MS * 10)
    fast = live.keep_source("2", G, edit, check, full_ms=live.BUDGET_MS / 10)
    assert live.preview_route({"token": slow, "strength": 1.0, "px": 32})["px"] == 16
    assert live.preview_route({"token": fast, "strength": 1.0, "px": 32})["px"] == 32


def test_threaded_post_route_answers_from_a_worker_thread(pack, monkeypatch):
    import asyncio
    import json
    import types

    web = pytest.importorskip("aiohttp.web")
    comfy_env = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    server = types.SimpleNamespace(routes=web.RouteTableDef())
    monkeypatch.setattr(comfy_env, "IN_COMFYUI", True)
    monkeypatch.setattr(comfy_env, "_prompt_server", lambda: server)

    def handler(body):
        if body.get("bad"):
            raise ValueError("bad value")
        return {"thread": threading.current_thread().name, "echo": body["x"]}

    assert comfy_env.add_routes(post={"/stylegan_studio/test_threaded": handler}, threaded=True)
    (route,) = list(server.routes)

    class Request:
        def __init__(self, body):
            self.body = body

        async def json(self):
            return self.body

    ok = json.loads(asyncio.run(route.handler(Request({"x": 3}))).text)
    assert ok["echo"] == 3 and ok["thread"] != threading.main_thread().name
    bad = asyncio.run(route.handler(Request({"bad": True})))
    assert bad.status == 400 and json.loads(bad.text) == {"error": "bad value"}
