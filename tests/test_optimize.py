"""The optimisation harness (core.optimize) and the CLIP losses, on problems small enough to check by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from core.files import meta_json, read_safetensors, write_safetensors
from core.losses.clip import clip_directional_loss, clip_global_loss, text_direction
from core.optimize import (Checkpoint, StepProgress, autograd_ready, check_finite, descend, loss_values,
                           projector_lr, set_lr, signature_diff, trainable)


# ------------------------------------------------------------------------------------------------
# Tensors and modules autograd can use


def test_trainable_under_inference_mode_is_a_fresh_leaf_and_leaves_the_input_alone():
    with torch.inference_mode():
        t = torch.arange(4.0)
        p = trainable(t)
        assert p.requires_grad and p.is_leaf and not p.is_inference()
        with torch.inference_mode(False):
            (p * p).sum().backward()
    torch.testing.assert_close(p.grad, 2 * torch.arange(4.0))
    assert t.is_inference() and not t.requires_grad and torch.equal(t, torch.arange(4.0))
    q = torch.ones(3, requires_grad=True)
    r = trainable(q)
    assert r is not q and r.is_leaf and r.data_ptr() != q.data_ptr()


def test_autograd_ready_copies_only_what_autograd_cannot_use():
    with torch.inference_mode():
        cached = torch.nn.Linear(3, 2)  # a model loaded under ComfyUI's inference mode
        x = torch.ones(2, 3)
    ready = autograd_ready(cached)
    assert ready is not cached and all(t.is_inference() for t in cached.parameters())
    assert not any(t.is_inference() for t in ready.parameters())
    ready.weight.data.add_(1.0)  # the copy is the optimiser's: the cached model never changes
    assert not torch.equal(ready.weight, cached.weight)
    with torch.inference_mode(False), torch.enable_grad():
        w = trainable(torch.zeros(2, 3))
        (ready(autograd_ready(x)) * w[:, :2].sum()).sum().backward()
    assert w.grad is not None
    normal = torch.nn.Linear(3, 2)
    assert autograd_ready(normal) is normal and autograd_ready(None) is None
    y = torch.ones(2)
    assert autograd_ready(y) is y and not autograd_ready(x).is_inference()


# ------------------------------------------------------------------------------------------------
# One step


def test_check_finite_names_the_step_and_the_term():
    check_finite(torch.tensor(1.5), {"mse": torch.tensor(1.5)}, step=3)  # finite: nothing happens
    terms = {"mse": torch.tensor(0.5), "lpips": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError, match=r"the inversion diverged at step 7 \(loss term 'lpips' is nan\); "
                                                  r"lower the learning rate \(was 0.1\)"):
        check_finite(terms["mse"] + terms["lpips"], terms, step=7, what="the inversion",
                     hint="lower the learning rate (was 0.1)")
    big = {"a": torch.tensor(3e38), "b": torch.tensor(3e38)}  # each finite, the sum overflows: the total is named
    with pytest.raises(FloatingPointError, match=r"at step 2 \(loss term 'loss' is inf\); lower the learning rate"):
        check_finite(big["a"] + big["b"], big, step=2)


def test_loss_values_schedule_and_signature_diff():
    assert loss_values({"mse": torch.tensor(0.25)}, torch.tensor(1.0)) == {"mse": 0.25, "loss": 1.0}
    assert projector_lr(0.0, 0.1, 0.05, 0.25) == 0.0
    assert projector_lr(0.5, 0.1, 0.05, 0.25) == pytest.approx(0.1)
    assert projector_lr(0.875, 0.1, 0.05, 0.25) == pytest.approx(0.05)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    set_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] == 0.25
    a = {"config": {"lr": 0.5, "steps": 2}, "seed": 1, "text": "x"}
    b = {"config": {"lr": 0.1, "steps": 2}, "seed": 2, "text": "x", "extra": 1}
    assert signature_diff(a, b) == ["config.lr", "extra", "seed"] and signature_diff(a, a) == []


# ------------------------------------------------------------------------------------------------
# A tiny resumable optimiser on the harness: everything a method does, in a few lines


TARGET = torch.linspace(-1.0, 1.0, 8)
FORMAT = "test-tiny-checkpoint"


def _noise(seed: int, step: int) -> torch.Tensor:  # per-step randomness from (seed, step): nothing to store
    return torch.randn(8, generator=torch.Generator().manual_seed(seed * 1000 + step)) * 0.1


def fit(num_steps: int, *, checkpoint: Optional[Path] = None, every: int = 3, callback=None, seed: int = 0):
    """Adam on ‖x + noise − target‖² with the projector schedule; checkpointed, cancellable, resumable."""
    x = trainable(torch.zeros(8))
    opt = torch.optim.Adam([x], lr=0.1)
    start, history = 0, []
    if checkpoint is not None and checkpoint.is_file():
        t, meta = read_safetensors(checkpoint, what="tiny checkpoint", format=FORMAT)
        start = meta_json(meta, "step", checkpoint, "tiny checkpoint")
        with torch.no_grad():
            x.copy_(t["x"])
        opt.load_state_dict({"state": {0: {"step": t["adam.step"], "exp_avg": t["adam.exp_avg"],
                                           "exp_avg_sq": t["adam.exp_avg_sq"]}},
                             "param_groups": opt.state_dict()["param_groups"]})
        history = [{"loss": float(v)} for v in t["history"]]

    def write(path: Path) -> None:
        state = opt.state_dict()["state"][0]
        write_safetensors(path, {"x": x, "history": torch.tensor([h["loss"] for h in history], dtype=torch.float64),
                                 **{f"adam.{k}": v for k, v in state.items()}},
                          format=FORMAT, metadata={"step": ckpt.step})

    ckpt = Checkpoint(checkpoint, write, start=start, every_steps=every, what="tiny")
    for step in range(start, num_steps):
        set_lr(opt, projector_lr(step / num_steps, 0.1, 0.05, 0.25))
        loss = (x + _noise(seed, step) - TARGET).square().sum()
        check_finite(loss, step=step + 1)
        descend(opt, loss)
        history.append(loss_values({}, loss))
        ckpt.completed(step + 1, final=step + 1 == num_steps)
        if callback is not None:
            with ckpt.on_interrupt():
                callback(StepProgress(step + 1, num_steps, "fit", history[-1], params={"x": x.detach().clone()}))
    return x.detach(), history


def test_progress_is_one_based_and_a_raising_callback_cancels():
    seen = []
    fit(6, callback=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6] and {p.total for p in seen} == {6}
    assert all(p.phase == "fit" and set(p.losses) == {"loss"} and p.image is None and p.reference is None
               for p in seen)
    assert not torch.equal(seen[0].params["x"], seen[-1].params["x"])  # copies, not views of the live tensor

    def stop_at_2(p):
        if p.step == 2:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        fit(6, callback=stop_at_2)


@pytest.mark.parametrize("cancel_at", [4, 6])  # between checkpoints, and on a checkpointed step
def test_checkpoint_round_trip_and_resume_equals_an_uninterrupted_run(tmp_path, cancel_at):
    full_x, full_history = fit(10)
    path = tmp_path / "tiny.safetensors"
    saved_steps = []

    def cancel(p):
        saved_steps.append(meta_json(read_safetensors(path, what="t")[1], "step", path, "t") if path.exists() else 0)
        if p.step == cancel_at:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        fit(10, checkpoint=path, callback=cancel)
    # Written every 3 steps; the cancel writes the step it interrupted (no completed step is lost).
    assert saved_steps == [0, 0, 3, 3, 3, 6][:cancel_at]
    tensors, meta = read_safetensors(path, what="tiny checkpoint", format=FORMAT)
    assert meta_json(meta, "step", path, "t") == cancel_at and len(tensors["history"]) == cancel_at
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # atomic: no temporary files left
    x, history = fit(10, checkpoint=path)
    assert torch.equal(x, full_x) and history == full_history
    assert meta_json(read_safetensors(path, what="t")[1], "step", path, "t") == 10  # the last step is written


def test_checkpoint_saves_by_time_finishes_and_survives_a_failing_write(tmp_path, caplog):
    writes = []
    ckpt = Checkpoint(tmp_path / "c", lambda p: (writes.append(ckpt.step), p.write_text("x")), start=2,
                      every_seconds=0.0)
    assert not ckpt.unsaved
    ckpt.completed(5)
    assert writes == [5] and not ckpt.unsaved
    ckpt.finish()  # nothing new, the file exists: no write
    assert writes == [5]
    never = Checkpoint(None, lambda p: pytest.fail("no path: never written"), every_steps=1)
    never.completed(1, final=True)
    never.finish()

    def broken(path):
        raise OSError("disk full")

    failing = Checkpoint(tmp_path / "d", broken, every_steps=100, what="run")
    failing.completed(1)
    with pytest.raises(KeyboardInterrupt):  # the cancel propagates; the failed save is only logged
        with failing.on_interrupt():
            raise KeyboardInterrupt("stop")
    assert "could not save progress" in caplog.text and "disk full" in caplog.text


# ------------------------------------------------------------------------------------------------
# CLIP losses


def test_clip_losses_are_one_minus_cosine():
    g = torch.Generator().manual_seed(0)
    img, ref = (F.normalize(torch.randn(3, 16, generator=g), dim=-1) for _ in range(2))
    text, neutral = (F.normalize(torch.randn(1, 16, generator=g), dim=-1) for _ in range(2))
    torch.testing.assert_close(clip_global_loss(img, text), 1 - F.cosine_similarity(img, text.expand(3, -1)))
    direction = text_direction(text, neutral)
    expected = 1 - F.cosine_similarity(img - ref, (text - neutral).expand(3, -1))   # StyleGAN-NADA eq. 2
    torch.testing.assert_close(clip_directional_loss(img, ref, direction), expected)
    assert float(clip_global_loss(text, text)) == pytest.approx(0.0, abs=1e-6)
    # An image moved exactly along the text direction has no directional loss, whatever its start.
    torch.testing.assert_close(clip_directional_loss(ref + 0.3 * (text - neutral), ref, direction), torch.zeros(3),
                               atol=1e-6, rtol=0)
