"""Strict state-dict loading shared by every converter: every key and every shape is checked."""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import CheckpointError
from ..networks import Generator


def load_state_strict(G: Generator, state: Mapping[str, torch.Tensor], what: str,
                      optional: tuple[str, ...] = ("mapping.w_avg",)) -> list[str]:
    """Copy `state` into `G`; raise CheckpointError naming missing, unexpected or mis-shaped tensors.

    Keys listed in `optional` may be absent (they keep their current value); returns those that were.
    """
    expected = G.state_dict()
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {list(state[k].shape)} vs expected {list(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) {_preview(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) {_preview(shapes)}")
    if problems:
        raise CheckpointError(f"{what}: the weights do not fit the architecture described by the file "
                              f"({G.config.arch}, {G.img_resolution} px): " + "; ".join(problems))
    for k, v in state.items():
        if not torch.is_tensor(v):
            raise CheckpointError(f"{what}: entry {k!r} is a {type(v).__name__}, expected a tensor")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{what}: tensor {k!r} contains NaN or infinite values; the file is corrupt")
    with torch.no_grad():
        for k, v in expected.items():
            if k in state:
                v.copy_(state[k].to(v.dtype))
    return [k for k in optional if k not in state]


def _preview(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"
