"""One global step count over every stage of a Segment Composite run."""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from ...optimize import StepProgress, finish_requested


class Stages:
    """Planned stages (name, steps) with one step count across them. `callback(StepProgress)` sees every step with
    the global `step`/`total` and the stage name as `phase`; FINISH ends the current stage early (the run goes on
    with the next stage); raising cancels the run."""

    def __init__(self, plan: list[tuple[str, int]], callback=None):
        self.plan = [(name, int(steps)) for name, steps in plan]
        self.total = sum(s for _, s in self.plan)
        self.callback = callback
        self.done = 0                 # steps of the stages already over
        self.seconds: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def steps_of(self, name: str) -> int:
        return next((s for n, s in self.plan if n == name), 0)

    def begin(self, name: str) -> None:
        self._start[name] = time.perf_counter()

    def end(self, name: str) -> None:
        """The stage is over (all its steps or finished early): the count moves past all its planned steps."""
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - self._start.pop(name, time.perf_counter())
        self.done += self.steps_of(name)

    def report(self, name: str, step: int, losses: dict, image: Optional[torch.Tensor] = None, **extra) -> bool:
        """Stage `name` finished its step `step` (1-based): tell the callback; True when it asks to finish the
        stage now."""
        if self.callback is None:
            return False
        answer = self.callback(StepProgress(self.done + step, self.total, name, losses,
                                            None if image is None else image.detach(), **extra))
        return finish_requested(answer)

    def forward(self, name: str):
        """A callback for a nested optimiser (invert_image) reporting as stage `name`: its StepProgress renumbered
        into the global count; its answer goes back (FINISH ends that optimiser's run)."""
        if self.callback is None:
            return None

        def cb(p: StepProgress) -> Any:
            return self.callback(StepProgress(self.done + p.step, self.total, name, p.losses, p.image, p.params))
        return cb


__all__ = ["Stages"]
