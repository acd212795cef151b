"""A weight shift (PRMU 2022, seed 003): x added to one convolution's raw stored weights, rendered with a strength k.

θ' = θ + Σ kᵢ·xᵢ. Each x is keyed by the generator's own parameter name (`synthesis.b16.conv1.weight`) in raw
stored-weight units (before the 1/√fan_in gain, modulation and demodulation: the same units in NVIDIA and
rosinality layouts). Shifts of one layer add linearly; shifts of different layers apply together.

`apply_weight_shifts` never modifies the generator it is given: it returns a copy that shares every tensor the
shifts do not touch, with W + Σ kᵢxᵢ for the ones they do (a shift at k = 0 is skipped, so k = 0 is the base
bit for bit). `share_generator` + `set_tensor` are the same mechanism for training, where W + k·x must stay
differentiable in x.
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

from ...errors import CheckpointError
from ...latents import GeneratorRef, generator_ref, weights_digest
from ...networks import Generator

MAX_K = 10.0   # |k| beyond this only saturates (demodulation renormalises each filter); the node's slider is −5..5


@dataclass
class WeightShift:
    """`tensors[name]` = x for parameters of the base generator (same shapes), float32 on the CPU.

    `base` is the base generator's identity (what latents carry) and `base_digest` the SHA-256 of all its weights
    (`core.latents.weights_digest`): a shift is applied only to the generator it was made for. `metadata` holds
    how it was made (prompt, neutral_prompt, clip_model, loss, lambda_clip, lambda_l2, lr, steps, batch, k_train,
    recommended_k, norm, scale, source, layer), all JSON-serialisable."""

    tensors: dict[str, torch.Tensor]
    base: GeneratorRef
    base_digest: str
    metadata: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        """The shifted parameters' layer names ('b16.conv1'), in the generator's order as stored."""
        return [layer_of(name) for name in self.tensors]

    @property
    def label(self) -> str:
        """A short name for reports: the prompt, else the source, with the layer."""
        what = self.metadata.get("prompt") or self.metadata.get("source") or "shift"
        return f"{what!s:.60} @ {', '.join(self.layers)}"

    @property
    def recommended_k(self) -> tuple[float, float]:
        lo, hi = self.metadata.get("recommended_k", (-3.0, 3.0))
        return float(lo), float(hi)

    def norm(self) -> float:
        """‖x‖₂ over all its tensors."""
        return math.sqrt(sum(float(t.double().square().sum()) for t in self.tensors.values()))

    def describe(self) -> str:
        n = sum(t.numel() for t in self.tensors.values())
        return (f"weight shift '{self.label}' for {self.base.name}: {len(self.tensors)} tensor(s), "
                f"{n / 1e6:.2f} M values, norm {self.norm():.4g}")


class ShiftLayer(NamedTuple):
    """A layer a shift can train on: `name` 'b16.conv1', `param` its weight's state-dict name, `shape` of that
    weight, `resolution` of its output, `w_index` the W+ index that modulates it, `stage` where staged synthesis reaches it."""

    name: str
    param: str
    shape: tuple[int, ...]
    resolution: int
    w_index: int
    stage: object    # the stage of `synthesis.run` that holds it (e.g. 16 for 'b16.conv1')


def layer_of(param: str) -> str:
    """'synthesis.b16.conv1.weight' -> 'b16.conv1' (the parameter name without 'synthesis.' and the last part)."""
    parts = param.split(".")
    if parts and parts[0] == "synthesis":
        parts = parts[1:]
    return ".".join(parts[:-1]) if len(parts) > 1 else param


def conv_layers(G: Generator) -> list[ShiftLayer]:
    """The synthesis convolutions a shift can train on, in forward order (ToRGB layers excluded: they set colour,
    not shape). StyleGAN2: b4.conv1, b8.conv0, b8.conv1, ...; StyleGAN3: L0_..., L1_..., ..."""
    out = []
    for sl in G.synthesis.style_layers():
        if sl.is_torgb:
            continue
        weight = sl.module.weight
        if weight.ndim != 4:
            continue
        size = getattr(sl.module, "resolution", None)
        if size is None:   # StyleGAN3: out_size [w, h]
            size = max(int(v) for v in getattr(sl.module, "out_size", [0]))
        resolution = int(size)
        out.append(ShiftLayer(sl.name, f"synthesis.{sl.name}.weight", tuple(weight.shape), resolution,
                              int(sl.w_index), sl.stage))
    return out


def find_layer(G: Generator, layer: str) -> ShiftLayer:
    """The conv layer named `layer` ('b16.conv1', or its parameter name); ValueError listing the choices."""
    layers = conv_layers(G)
    for sl in layers:
        if layer in (sl.name, sl.param):
            return sl
    names = ", ".join(sl.name for sl in layers)
    raise ValueError(f"{G.info.name} has no convolution layer {str(layer)[:80]!r}; choose one of: {names}")


# ------------------------------------------------------------------------------------------------
# A copy that shares the base's tensors


def share_generator(G: Generator) -> Generator:
    """A copy of `G` whose parameters and buffers ARE `G`'s (no tensor is copied): replace some with `set_tensor`
    and the rest stay shared. The copy's `info` is its own (with the cached fingerprint kept: a shift leaves the
    mapping, and so every latent's meaning, as it was)."""
    memo = {id(t): t for t in itertools.chain(G.parameters(), G.buffers())}
    return copy.deepcopy(G, memo)


def set_tensor(G: Generator, param: str, value: torch.Tensor) -> None:
    """Put `value` where parameter `param` ('synthesis.b16.conv1.weight') of `G` is, as a plain tensor attribute
    (it may require grad). For copies from `share_generator` only: the module that holds it must be the copy's."""
    *path, attr = param.split(".")
    module: nn.Module = G
    for part in path:
        module = getattr(module, part)
    if attr in module._parameters:
        del module._parameters[attr]
    elif attr in module._buffers:
        del module._buffers[attr]
    setattr(module, attr, value)


# ------------------------------------------------------------------------------------------------
# Applying shifts


def _check_k(k) -> float:
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not math.isfinite(float(k)):
        raise ValueError(f"a weight shift's strength k must be a finite number, got {k!r}")
    if abs(float(k)) > MAX_K:
        raise ValueError(f"a weight shift's strength k must be within ±{MAX_K:g} (the paper uses −3..3; beyond "
                         f"±{MAX_K:g} demodulation only saturates the edit), got {float(k):g}")
    return float(k)


def check_shift_fits(G: Generator, shift: WeightShift, *, base_digest: Optional[str] = None) -> None:
    """Raise CheckpointError unless `shift` was made for `G` (its weights digest, or `base_digest` when given: the
    digest of the generator `G` was shifted from) and every tensor fits `G` (name, shape, finite)."""
    state = dict(G.named_parameters())
    need = f"load {shift.base.name}, the generator it was made for"
    for name, x in shift.tensors.items():
        if name not in state:
            raise CheckpointError(f"weight shift '{shift.label}' was made for {shift.base.name} and does not fit "
                                  f"{G.info.name}: it has no parameter {name[:80]!r}; {need}")
        if tuple(state[name].shape) != tuple(x.shape):
            raise CheckpointError(f"weight shift '{shift.label}' was made for {shift.base.name} and does not fit "
                                  f"{G.info.name}: {name!r} is {list(x.shape)} in the shift but "
                                  f"{list(state[name].shape)} in the generator; {need}")
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise CheckpointError(f"weight shift '{shift.label}' holds NaN, infinite or non-float values in "
                                  f"{name!r}; applying it would break the generator: train or import it again")
    digest = base_digest if base_digest is not None else weights_digest(G)
    if digest != shift.base_digest:
        raise CheckpointError(f"weight shift '{shift.label}' was made for {shift.base.name} (weights "
                              f"{shift.base_digest[:16]}), but {G.info.name} has other weights ({digest[:16]}); {need}")


def shifted_tensors(G: Generator, shifts: Sequence[tuple[WeightShift, float]]) -> dict[str, torch.Tensor]:
    """{parameter name: W + Σ kᵢ·xᵢ} for every parameter a shift with k ≠ 0 touches (summed in float32, on W's
    device, in W's dtype). Shifts are checked against `G` first (`check_shift_fits`)."""
    digest = weights_digest(G)
    sums: dict[str, torch.Tensor] = {}
    for shift, k in shifts:
        k = _check_k(k)
        check_shift_fits(G, shift, base_digest=digest)
        if k == 0:
            continue
        for name, x in shift.tensors.items():
            contrib = x.detach().to(torch.float32) * k
            sums[name] = contrib if name not in sums else sums[name] + contrib
    params = dict(G.named_parameters())
    out = {}
    with torch.no_grad():
        for name, dx in sums.items():
            w = params[name].detach()
            out[name] = (w.to(torch.float32) + dx.to(w.device)).to(w.dtype)
    return out


def apply_weight_shifts(G: Generator, shifts: Sequence[tuple[WeightShift, float]]) -> Generator:
    """A generator computing W + Σ kᵢ·xᵢ: a copy of `G` sharing every tensor the shifts do not touch. `G` is
    never modified. A generator that is itself the result of `apply_weight_shifts` is shifted from its base with
    the earlier shifts and these together (so chains of Apply nodes add up and are checked against the base).

    Raises:
        CheckpointError: a shift was made for another generator (its weights digest differs), or does not fit.
        ValueError: a k that is not a finite number within ±MAX_K.
    """
    applied = list(G.__dict__.get("_sgs_shifts", ()))
    base = G.__dict__.get("_sgs_shift_base", G)
    pairs = applied + [(s, _check_k(k)) for s, k in shifts]   # "1", True or None are not strengths
    new = shifted_tensors(base, pairs)
    G2 = share_generator(base)
    with torch.inference_mode(False):
        for name, value in new.items():
            set_tensor(G2, name, nn.Parameter(value, requires_grad=False))
    G2.__dict__["_sgs_shift_base"] = base
    G2.__dict__["_sgs_shifts"] = tuple(pairs)
    active = [(s, k) for s, k in pairs if k != 0]
    G2.info.name = base.info.name + "".join(f"+{k:g}x[{s.metadata.get('prompt') or s.layers[0]}]"[:48]
                                            for s, k in active)
    G2.info.extra["weight_shifts"] = [{"label": s.label, "k": k, "layers": s.layers, "base": s.base_digest[:16]}
                                      for s, k in pairs]
    return G2


def applied_shifts(G: Generator) -> list[tuple[WeightShift, float]]:
    """The (shift, k) pairs `G` was made with by `apply_weight_shifts` ([] for any other generator)."""
    return list(G.__dict__.get("_sgs_shifts", ()))


def shift_base(G: Generator) -> Generator:
    """The unshifted generator behind `G` (`G` itself when it is not a shifted copy)."""
    return G.__dict__.get("_sgs_shift_base", G)


def make_shift(G: Generator, tensors: dict[str, torch.Tensor], **metadata) -> WeightShift:
    """A WeightShift of `tensors` (float32 CPU copies) for generator `G` (its identity and weights digest)."""
    base = shift_base(G)
    if applied_shifts(G):
        raise ValueError("make the shift on the unshifted generator: this one already has weight shifts applied")
    clean = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in tensors.items()}
    return WeightShift(clean, generator_ref(base), weights_digest(base), dict(metadata))
