"""bias_act: add a per-channel bias, apply an activation, scale by a gain, clamp."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    func: Callable[[torch.Tensor, float], torch.Tensor]
    inplace: Callable[[torch.Tensor, float], torch.Tensor] | None
    def_alpha: float
    def_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), lambda x, a: F.relu_(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), lambda x, a: F.leaky_relu_(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), None, 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), None, 0.0, 1.0),
}


def _bias_shape(x: torch.Tensor, dim: int) -> list[int]:
    return [-1 if i == dim else 1 for i in range(x.ndim)]


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
                 alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Reference: `clamp(act(x + b, alpha) * gain, -clamp, clamp)`; `b` is `[x.shape[dim]]`.

    `gain` defaults to the activation's variance-preserving gain (sqrt 2 for (l)relu) as in StyleGAN.
    """
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else float(alpha)
    gain = spec.def_gain if gain is None else float(gain)
    if b is not None:
        x = x + b.to(x.dtype).reshape(_bias_shape(x, dim))
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def can_modify_inplace(*tensors: torch.Tensor | None) -> bool:
    """True when autograd cannot need the values of `tensors`, so they may be overwritten."""
    if not torch.is_grad_enabled():
        return True
    return not any(t is not None and t.requires_grad for t in tensors)


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             *, inplace: bool = False) -> torch.Tensor:
    """Same result as `bias_act_ref`.

    With `inplace=True` (allowed only for a freshly computed `x` that nobody else holds) the work is
    done in `x`'s own memory when autograd does not need it: one read-modify-write per step instead
    of a new tensor each time, which is what dominates the cost of these memory-bound steps on CPU.
    The positive gain is applied before the activation (act(g*y) = g*act(y) for relu/lrelu/linear).
    """
    spec = ACTIVATIONS[act]
    if not inplace or spec.inplace is None or not can_modify_inplace(x, b):
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    alpha = spec.def_alpha if alpha is None else float(alpha)
    gain = spec.def_gain if gain is None else float(gain)
    if b is not None:
        x.add_(b.to(x.dtype).reshape(_bias_shape(x, dim)))
    if gain != 1:
        x.mul_(gain)
    x = spec.inplace(x, alpha)
    if clamp is not None and clamp >= 0:
        x.clamp_(-clamp, clamp)
    return x
