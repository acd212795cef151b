"""The live status of optimising nodes (step, loss terms, ETA) sent as `stylegan_studio.progress` events,
without ComfyUI: the sender is replaced by a recorder and the clock by a fake one."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys

import pytest
import torch

from core.edits import inversion as I

P = pytest.importorskip("core.losses.perceptual")


@pytest.fixture()
def env(pack, monkeypatch):
    """comfy_env with `send_event` recording (event, payload) pairs instead of sending."""
    mod = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    sent = []
    monkeypatch.setattr(mod, "send_event", lambda event, data: sent.append((event, data)))
    return mod, sent


def statuses(mod, sent) -> list[dict]:
    return [data for event, data in sent if event == mod.PROGRESS_EVENT]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_status_payload_eta_and_throttling(env):
    mod, sent = env
    clock = Clock()
    progress = mod.Progress(10, node_id=7, max_rate=2.0, clock=clock)
    for step in range(1, 11):
        clock.t += 0.125  # 8 steps a second, events at most 2 a second
        progress.update(step, losses={"lpips": torch.tensor(0.5), "mse": 0.25})
    events = statuses(mod, sent)
    assert [d["step"] for d in events] == [1, 5, 9, 10]  # throttled, but the last step always goes out
    first, last = events[0], events[-1]
    assert first == {"node": "7", "prompt_id": None, "step": 1, "total": 10, "losses": {"lpips": 0.5, "mse": 0.25},
                     "elapsed": 0.125, "eta": 1.125, "finished": False}
    assert type(first["losses"]["lpips"]) is float  # tensors become plain JSON numbers
    assert events[1]["eta"] == 0.625 and events[2]["eta"] == 0.125
    assert last["finished"] and last["eta"] == 0 and last["elapsed"] == 1.25
    progress.finish()  # the last step already went out: nothing more
    assert len(statuses(mod, sent)) == 4


def test_eta_follows_the_step_rate_not_the_set_up_time(env):
    mod, sent = env
    clock = Clock()
    progress = mod.Progress(100, max_rate=0, clock=clock)  # max_rate 0: no throttling
    clock.t += 30.0  # e.g. computing the II2S prior before the first step
    progress.update(1, losses={"loss": 1.0})
    for step in range(2, 11):
        clock.t += 0.5
        progress.update(step, losses={"loss": 1.0})
    events = statuses(mod, sent)
    assert len(events) == 10
    assert events[0]["eta"] == pytest.approx(30.0 * 99)  # one step seen: set-up included, nothing better known
    assert events[-1]["eta"] == pytest.approx(0.5 * 90) and events[-1]["elapsed"] == pytest.approx(34.5)


def test_finish_sends_the_held_back_status_of_an_early_stop(env):
    mod, sent = env
    clock = Clock()
    progress = mod.Progress(50, max_rate=1.0, clock=clock)
    for step in range(1, 6):
        clock.t += 0.1
        progress.update(step, losses={"loss": float(step)})
    assert [d["step"] for d in statuses(mod, sent)] == [1]
    progress.finish()  # stopped at step 5 of 50
    events = statuses(mod, sent)
    assert [d["step"] for d in events] == [1, 5]
    assert events[-1]["finished"] and events[-1]["eta"] == 0 and events[-1]["losses"] == {"loss": 5.0}
    progress.finish()
    assert len(statuses(mod, sent)) == 2


def test_progress_without_losses_sends_no_event(env):
    mod, sent = env
    progress = mod.Progress(3)
    for step in range(1, 4):
        progress.update(step)
    progress.finish()
    assert sent == []


def test_sender_outside_comfyui_only_logs(pack, caplog):
    mod = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    assert not mod.IN_COMFYUI and mod._executing_ids() == (None, None)
    with caplog.at_level(logging.DEBUG, logger="stylegan_studio"):
        mod.send_event(mod.PROGRESS_EVENT, {"step": 1})
    assert any(mod.PROGRESS_EVENT in r.getMessage() for r in caplog.records)


def test_sender_targets_the_prompts_client_only(pack, monkeypatch):
    mod = sys.modules[f"{pack.__name__}.nodes.comfy_env"]

    class Server:
        client_id = "browser-1"

        def __init__(self):
            self.sent = []

        def send_sync(self, event, data, sid=None):
            self.sent.append((event, data, sid))

    server = Server()
    monkeypatch.setattr(mod, "IN_COMFYUI", True)
    monkeypatch.setattr(mod, "_prompt_server", lambda: server)
    mod.send_event(mod.PROGRESS_EVENT, {"step": 1})
    assert server.sent == [(mod.PROGRESS_EVENT, {"step": 1}, "browser-1")]
    server.client_id = None  # a prompt queued without a client id: no broadcast to every browser
    mod.send_event(mod.PROGRESS_EVENT, {"step": 2})
    assert len(server.sent) == 1


@pytest.fixture(scope="module")
def nets():
    return {"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
            "vgg16_features": P.random_vgg16_features(seed=2)}


@pytest.fixture()
def invert_node(pack, env, nets, monkeypatch):
    mod = sys.modules[f"{pack.__name__}.nodes.inversion"]
    monkeypatch.setattr(mod, "perceptual_nets", lambda method: {k: nets[k] for k in I.PERCEPTUAL_NEEDS[method]})
    return pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"](), mod


@pytest.mark.parametrize("method, terms", [("image2stylegan", {"mse", "vgg", "loss"}),
                                           ("projector", {"lpips", "noise_reg", "loss"})])
def test_invert_node_reports_its_loss_terms(invert_node, env, G2, method, terms):
    node, _ = invert_node
    mod, sent = env
    target = torch.rand(1, G2.img_resolution, G2.img_resolution, 3, generator=torch.Generator().manual_seed(0))
    node.invert(G2, target, method, 3, 0, preview_every=1)
    events = statuses(mod, sent)
    assert [d["step"] for d in events][-1] == 3 and all(d["total"] == 3 for d in events)
    last = events[-1]
    assert last["finished"] and terms <= set(last["losses"]), last["losses"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in last["losses"].values())
    assert last["node"] is None and last["prompt_id"] is None  # outside ComfyUI there is no executing node


def test_invert_node_closes_the_status_of_a_pti_early_stop(invert_node, env, G2, monkeypatch):
    node, mod_nodes = invert_node
    mod, sent = env
    # An LPIPS threshold every image meets: PTI stops at its first tuning step, far before `total`.
    monkeypatch.setitem(mod_nodes.I.METHOD_DEFAULTS, "pti", dataclasses.replace(
        mod_nodes.I.METHOD_DEFAULTS["pti"], tune_lpips_stop=1e9))
    target = torch.rand(1, G2.img_resolution, G2.img_resolution, 3, generator=torch.Generator().manual_seed(1))
    node.invert(G2, target, "pti", 2, 0, tune_steps=20)
    events = statuses(mod, sent)
    last = events[-1]
    assert last["total"] == 22 and last["step"] == 3 and last["finished"]
    assert {"mse", "lpips_alex"} <= set(last["losses"])
