"""Run an optimising core call as a node: progress bar, live preview, status line, cancel and memory cleanup."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import torch

from . import comfy_env
from .convert import generator_to_comfy, to_pil

T = TypeVar("T")


def preview_of(image: torch.Tensor, reference: Optional[torch.Tensor] = None):
    """PIL preview of the first image of a batch `[N, 3, R, R]` in [-1, 1]; with `reference` (e.g. the unedited
    image) the two side by side, reference on the left."""
    shown = image[:1] if reference is None else torch.cat([reference[:1].to(image), image[:1]], dim=3)
    return to_pil(generator_to_comfy(shown)[0])


def run_optimisation(total: int, run: Callable[[Callable], T], *, preview_every: int = 1) -> T:
    """Call `run(callback)` (which calls one core optimiser with `callback`) under the node's live progress.

    The callback accepts core's progress record (`core.optimize.StepProgress`, and the older per-method records):
    `step` (1-based) of `total`, `losses` {name: float}, `image` `[N, 3, R, R]` in [-1, 1] or None when not
    rendered this step, and optionally `reference` (or `original`) shown on the left of a side-by-side preview. It
    also accepts the plain `callback(done, total)` of loops without losses. Each call moves ComfyUI's progress bar,
    shows a preview every `preview_every` steps (and on the last), sends the status line (step, loss terms, ETA)
    and raises ComfyUI's interrupt exception when the user cancelled, which stops the core loop. However the run
    ends, the status line is closed (an early stop ends before `total`) and PyTorch's cached memory returned.
    """
    progress = comfy_env.Progress(total)
    every = max(1, int(preview_every))

    def callback(record, record_total=None) -> None:
        if record_total is not None:  # callback(done, total)
            progress.total = max(1, int(record_total))
            progress.update(int(record), losses={})
            return
        step = int(record.step)
        if getattr(record, "total", None):
            progress.total = max(1, int(record.total))
        image = getattr(record, "image", None)
        preview = None
        if image is not None and (step % every == 0 or step >= progress.total):
            reference = getattr(record, "reference", None)
            if reference is None:
                reference = getattr(record, "original", None)
            preview = preview_of(image, reference)
        progress.update(step, preview, losses=dict(getattr(record, "losses", None) or {}))

    try:
        result = run(callback)
        progress.finish()
    finally:
        comfy_env.free_memory()
    return result
