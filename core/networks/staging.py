"""Staged synthesis: the state a partial run of a synthesis network returns, and the shape check at its stages."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import torch

Stage = Union[int, str]
"""A stage of a synthesis network: a block resolution (StyleGAN2, e.g. 32 for 'b32') or a layer name
(StyleGAN3: 'input' for the Fourier features, then 'L0_36_512', ...). `synthesis.stages` lists them in order."""


class SynthesisState(NamedTuple):
    """Where `SynthesisNetwork.run` stopped; pass `x`, `img` and `stage` (as `start`) back to continue.

    `x` is kept in the dtype and memory format the next stage reads (fp16 after blocks that run in fp16 on
    CUDA; channels-last on CPU and CUDA), so a continued run computes exactly what one uninterrupted run does.
    """

    x: torch.Tensor                          # Features after `stage`: [N, C, H, W] (StyleGAN2: H = W = stage).
    img: Optional[torch.Tensor]              # StyleGAN2 'skip': the RGB skip so far [N, img_channels, H, W] float32;
                                             # after the last stage of any network: the image; otherwise None.
    stage: Stage                             # The last stage that ran (what `x` is the output of).


def stage_range(stages: Sequence[Stage], start: Optional[Stage], stop: Optional[Stage]) -> tuple[int, int]:
    """Indices into `stages` of the first and the last stage a run from `start` (exclusive: the stage its
    features come from; None = from the beginning) to `stop` (inclusive; None = to the end) runs."""
    for name, value in (("start", start), ("stop", stop)):
        if value is not None and value not in stages:
            raise ValueError(f"{name} must be None or one of this network's stages {list(stages)}, got {value!r}")
    first = 0 if start is None else stages.index(start) + 1
    last = len(stages) - 1 if stop is None else stages.index(stop)
    if first > last:
        raise ValueError(f"stop={stop!r} must come after start={start!r}: nothing to run")
    return first, last


def check_shape(tensor: torch.Tensor, shape: Sequence[Optional[int]], where: str, name: str, hint: str = "") -> None:
    """Raise ValueError "b16: expected x [2, 512, 8, 8], got [2, 256, 8, 8]" unless `tensor` has `shape` (None
    matches any size), as NVIDIA's `misc.assert_shape`. Compares Python ints only: no device sync."""
    if tensor.ndim != len(shape) or any(want is not None and have != want for have, want in zip(tensor.shape, shape)):
        expected = ", ".join("*" if s is None else str(int(s)) for s in shape)
        raise ValueError(f"{where}: expected {name} [{expected}], got {list(tensor.shape)}{hint}")


__all__ = ["Stage", "SynthesisState", "stage_range", "check_shape"]
