"""The optimisation harness every editing method runs on: trainable copies, one progress record, the finite-loss
check, the learning-rate schedule, cancel through the callback, and checkpoint/resume.

Each method keeps its own loop, written top to bottom (NVIDIA's `project()` style); what they all repeat lives here:

- `trainable(t)` / `autograd_ready(x)`: tensors and modules that autograd can use, even when they were made under
  ComfyUI's `torch.inference_mode()`; the caller's tensors and cached modules are never modified.
- `StepProgress`: what every optimiser's `callback(p)` receives after each step. A callback cancels by raising
  (ComfyUI's interrupt); each method documents what it keeps when that happens. A callback that returns `FINISH`
  ("Finish now") ends the run after that step: the method returns its current result normally
  (`finish_requested(answer)` is the check every loop makes).
- `check_finite(loss, terms, step=..., what=...)`: one error, naming the step and the loss term that diverged.
- `projector_lr`, `set_lr`, `descend`, `loss_values`: the small pieces of a step.
- `Checkpoint`: when a resumable run writes its state (every k steps and/or every t seconds, after the last step,
  and when interrupted between steps), written by the method with `core.files` (atomic, tagged); `signature_diff`
  says which settings make a checkpoint belong to another run.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar, Union

import torch
from torch import nn

from .log import logger


# ------------------------------------------------------------------------------------------------
# Progress


@dataclass
class StepProgress:
    """What an optimiser's callback receives after each step (one record for every method)."""

    step: int                      # steps completed, 1..total (1-based), over all phases
    total: int                     # steps planned over all phases (early stops end sooner)
    phase: str                     # 'latent' | 'tune' | 'clip' | 'train' | 'relevance' ...
    losses: dict[str, float]       # this step's loss terms ('loss' = the total where there is one)
    image: Optional[torch.Tensor] = None   # [N,3,R,R] in [-1,1], detached current result; None when not rendered
    params: dict[str, torch.Tensor] = field(default_factory=dict)  # detached copies of current parameters
                                           # ('ws', 'noise/<layer>', 'styles', ...) where the method has them
    reference: Optional[torch.Tensor] = None   # e.g. the unedited image shown next to `image` (mapper preview)
    model: Optional[nn.Module] = None      # the module being trained, LIVE (not a copy), where a method trains one
                                           # (PTI's tuned generator): what a stopped run can still save


ProgressCallback = Callable[[StepProgress], Any]


class _Finish:
    """The value a progress callback returns to end the run after the current step ("Finish now")."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FINISH"


FINISH = _Finish()


def finish_requested(answer: Any) -> bool:
    """Whether a callback's return value asks the run to end now (`FINISH`); anything else (None) goes on."""
    return answer is FINISH


# ------------------------------------------------------------------------------------------------
# Tensors and modules autograd can use


def trainable(t: torch.Tensor) -> torch.Tensor:
    """A fresh leaf copy of `t` that requires grad: the parameter an optimiser updates. Works under
    `torch.inference_mode()` and on inference tensors; `t` itself is never touched."""
    with torch.inference_mode(False):
        return t.detach().clone().requires_grad_(True)


def has_inference_tensors(module: nn.Module) -> bool:
    """Whether `module` holds parameters or buffers made under inference mode (which backward cannot save)."""
    return any(t.is_inference() for t in list(module.parameters()) + list(module.buffers()))


T = TypeVar("T", torch.Tensor, nn.Module, None)


def autograd_ready(x: T) -> T:
    """`x` itself when autograd can use it, else a copy that it can: a tensor made under inference mode is cloned,
    a module holding such tensors is deep-copied (so a model that ComfyUI loaded and caches is never changed).
    None passes through. Call it with inference mode off (the copy must be a normal tensor)."""
    if x is None:
        return None
    with torch.inference_mode(False):
        if isinstance(x, torch.Tensor):
            return x.clone() if x.is_inference() else x
        if has_inference_tensors(x):
            return copy.deepcopy(x)
    return x


# ------------------------------------------------------------------------------------------------
# One step


def check_finite(loss: torch.Tensor, terms: Optional[Mapping[str, Union[torch.Tensor, float]]] = None, *,
                 step: int, what: str = "the optimisation", hint: str = "lower the learning rate") -> None:
    """Raise FloatingPointError when `loss` is NaN or infinite, naming the step and the first loss term that is
    (or the total when every term is finite, e.g. an overflow in the weighted sum).

    One device sync, as every method already paid for its check. `step` is the number the method reports."""
    if bool(torch.isfinite(loss)):
        return
    name, value = "loss", float(loss.detach())
    for key, v in (terms or {}).items():
        v = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
        if not math.isfinite(v):
            name, value = key, v
            break
    raise FloatingPointError(f"{what} diverged at step {step} (loss term {name!r} is {value}); {hint}")


def loss_values(terms: Mapping[str, torch.Tensor], loss: Optional[torch.Tensor] = None) -> dict[str, float]:
    """The step's loss terms as floats (the record `StepProgress.losses` and histories keep), with the total
    as 'loss' when given."""
    named = list(terms.items()) + ([("loss", loss)] if loss is not None else [])
    if not named:
        return {}
    device = named[0][1].device
    wide = torch.float32 if device.type == "mps" else torch.float64  # exact for every float dtype (MPS: no fp64)
    # One device-to-host copy for all of them (a GPU waits once per step, not once per term).
    values = torch.stack([v.detach().reshape(()).to(device, wide) for _, v in named]).tolist()
    return {k: v for (k, _), v in zip(named, values)}


def projector_lr(t: float, lr: float, rampup: float, rampdown: float) -> float:
    """NVIDIA projector's learning-rate schedule at progress t in [0, 1): linear ramp up over the first `rampup`
    of the run, cosine ramp down over the last `rampdown` (stylegan2-ada-pytorch projector.py)."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (for a schedule)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def descend(optimizer, loss: torch.Tensor, inputs: Optional[list[torch.Tensor]] = None) -> None:
    """One gradient step: clear the gradients, backpropagate `loss` (into `inputs` only, when given, so nothing
    accumulates on a frozen network), update."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=inputs)
    optimizer.step()


# ------------------------------------------------------------------------------------------------
# Checkpoint / resume


class Checkpoint:
    """When a resumable run writes its state to `path` (None: never). The method writes the file (`write(path)`,
    with `core.files.write_safetensors`: atomic and tagged) and reads it back when it resumes; this decides when.

    After each step call `completed(step)` once the state is consistent (the step fully applied): it writes every
    `every_steps` steps and/or when `every_seconds` have passed since the last write, and always with
    `final=True`. Code that runs between steps and may raise (the callback; ComfyUI's stop button) goes inside
    `with ckpt.on_interrupt():`, which writes the last completed step first if it is not on disk yet, so no
    completed step is lost. `finish()` writes what is still unsaved (or the file, if it does not exist).

    A resumed run ends exactly where an uninterrupted one would when the state written is everything the next
    steps depend on (the methods derive their randomness from (seed, step), so there is no generator state)."""

    def __init__(self, path: Optional[Union[str, Path]], write: Callable[[Path], Any], *, start: int = 0,
                 every_steps: Optional[int] = None, every_seconds: Optional[float] = None, what: str = "run"):
        self.path = None if path is None else Path(path)
        self.write = write
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.what = what
        self.step = self.saved_step = start      # what is done, and what is on disk (the start: resumed or nothing)
        self.last_write = time.monotonic()

    @property
    def unsaved(self) -> bool:
        return self.step != self.saved_step

    def save(self) -> None:
        if self.path is None:
            return
        self.write(self.path)
        self.saved_step, self.last_write = self.step, time.monotonic()

    def completed(self, step: int, *, final: bool = False) -> None:
        """Step `step` is done and the state is consistent: write it if it is due."""
        self.step = step
        if self.path is None:
            return
        due = final or (self.every_steps is not None and step % self.every_steps == 0) or \
            (self.every_seconds is not None and time.monotonic() - self.last_write >= self.every_seconds)
        if due:
            self.save()

    def finish(self) -> None:
        """The run ended normally: write what is not on disk yet."""
        if self.path is not None and (self.unsaved or not self.path.is_file()):
            self.save()

    @contextlib.contextmanager
    def on_interrupt(self) -> Iterator[None]:
        """Around code between steps: if it raises, write the last completed step (when unsaved), then re-raise.
        A failed write is logged, never hides why the run stopped."""
        try:
            yield
        except BaseException:
            if self.path is not None and self.unsaved:
                try:
                    self.save()
                    logger.info("%s: interrupted; progress saved to %s (step %d)", self.what, self.path, self.step)
                except Exception as e:  # noqa: BLE001 - never hide why the run stopped behind a failed save
                    logger.warning("%s: could not save progress to %s: %s", self.what, self.path, e)
            raise


def signature_diff(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Sorted names of the fields in which two run signatures (JSON-able dicts) differ; nested dicts by dotted
    name ('config.lr'). Empty when a checkpoint with signature `saved` may be resumed by the run `current`."""
    diffs = []
    for key in set(saved) | set(current):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += signature_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}")
    return sorted(diffs)


__all__ = ["StepProgress", "ProgressCallback", "FINISH", "finish_requested", "trainable", "autograd_ready",
           "has_inference_tensors", "check_finite", "loss_values", "projector_lr", "set_lr", "descend", "Checkpoint", "signature_diff"]
