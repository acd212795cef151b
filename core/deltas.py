"""Weight deltas: compact, shareable changes to a generator's tensors (PTI tuning, optimised noise maps).

A delta holds `tuned - base` for only the tensors that changed, with the identity of the base generator, so
a file made for one model is refused by another. Applying one never modifies the base generator: it returns
a copy. Files are safetensors (no pickles).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from .errors import CheckpointError
from .files import meta_field, read_safetensors, write_safetensors
from .latents import GeneratorRef, generator_ref
from .networks import Generator

DELTA_FORMAT = "stylegan-studio-weight-delta"
DELTA_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class WeightDelta:
    """`tensors[name]` = tuned − base for state-dict entries of the base generator (same shapes)."""

    tensors: dict[str, torch.Tensor]
    base: GeneratorRef
    kind: str = "pti"                      # What made it: 'pti', 'noise' (projector noise maps), ...
    metadata: dict = field(default_factory=dict)

    @property
    def num_values(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def describe(self) -> str:
        return (f"{self.kind} delta for {self.base.name}: {len(self.tensors)} tensors, "
                f"{self.num_values / 1e6:.2f} M values")


def clone_generator(G: Generator) -> Generator:
    """An independent copy of `G` whose tensors autograd can use.

    Tensors created under `torch.inference_mode()` (as ComfyUI loads models) cannot be saved for backward;
    copying outside inference mode gives ordinary tensors. The copy forgets the cached fingerprint.
    """
    # A weight-shifted copy keeps its base (core.edits.weight_shift) to stack later shifts on; the clone's weights
    # are its own from here on, so it forgets both (and does not copy the base).
    memo = {id(G.__dict__[k]): None for k in ("_sgs_shift_base", "_sgs_shifts") if k in G.__dict__}
    with torch.inference_mode(False):
        G2 = copy.deepcopy(G, memo)
    G2.__dict__.pop("_sgs_shift_base", None)
    G2.__dict__.pop("_sgs_shifts", None)
    G2.info.extra.pop("_fingerprint", None)
    return G2


def compute_weight_delta(base: Generator, tuned: Generator, *, kind: str = "pti", dtype: str = "float32",
                         atol: float = 0.0, metadata: Optional[dict] = None) -> WeightDelta:
    """The tensors of `tuned` that differ from `base` (by more than `atol`), as differences in `dtype`.

    `dtype` 'float16' halves the file; the rounding error is relative to the delta, not to the weight.
    """
    if dtype not in DELTA_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DELTA_DTYPES)}, got {dtype!r}")
    b, t = base.state_dict(), tuned.state_dict()
    if b.keys() != t.keys():
        raise ValueError("the tuned generator has a different structure from the base generator")
    tensors = {}
    with torch.no_grad():
        for name, tb in b.items():
            d = t[name].detach().to(tb.device, torch.float32) - tb.detach().float()
            if tb.is_floating_point() and d.abs().max() > atol:
                tensors[name] = d.to(DELTA_DTYPES[dtype]).cpu().contiguous()
    return WeightDelta(tensors, generator_ref(base), kind, dict(metadata or {}))


def apply_weight_delta(G: Generator, delta: WeightDelta, *, scale: float = 1.0,
                       check_base: bool = True) -> Generator:
    """A copy of `G` with `scale * delta` added. `G` itself is not modified.

    Raises:
        CheckpointError: the delta was made for a different generator (shapes or weights differ); set
            `check_base=False` to apply it to a same-shaped fine-tune anyway.
    """
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"the delta's scale (strength) must be a finite number, got {scale!r}")
    ref = generator_ref(G)
    state = G.state_dict()
    for name, d in delta.tensors.items():
        if name not in state:
            raise CheckpointError(f"this {delta.kind} delta was made for {delta.base.name} and does not fit "
                                  f"{G.info.name}: it has no tensor {name[:80]!r}; load the generator it was made for")
        if tuple(state[name].shape) != tuple(d.shape):
            raise CheckpointError(f"this {delta.kind} delta was made for {delta.base.name} and does not fit "
                                  f"{G.info.name}: tensor {name!r} is {list(d.shape)} in the delta but "
                                  f"{list(state[name].shape)} in the generator; load the generator it was made for")
        if not state[name].is_floating_point() or not d.is_floating_point():
            raise CheckpointError(f"this {delta.kind} delta changes {name!r}, which is not a floating-point weight "
                                  f"(delta {d.dtype}, generator {state[name].dtype}); only weights can be tuned, so "
                                  f"the delta is damaged or was not written by StyleGAN Studio")
        if not torch.isfinite(d).all():
            raise CheckpointError(f"this {delta.kind} delta holds NaN or infinite values in {name!r}; applying it "
                                  f"would break the generator: make the delta again")
    if check_base and ref.fingerprint != delta.base.fingerprint:
        raise CheckpointError(f"this {delta.kind} delta was made for {delta.base.name} (fingerprint "
                              f"{delta.base.fingerprint}) but {G.info.name} has different weights ({ref.fingerprint}); "
                              f"load {delta.base.name}")
    G2 = clone_generator(G)
    with torch.no_grad():
        target = G2.state_dict()
        for name, d in delta.tensors.items():
            target[name].add_(d.to(target[name].device, torch.float32).to(target[name].dtype), alpha=float(scale))
    G2.info.name = f"{G.info.name}+{delta.kind}" if scale == 1 else f"{G.info.name}+{scale:g}x{delta.kind}"
    # kind and scale last: a delta's own metadata may hold keys of the same name, but never overrides them.
    G2.info.extra["deltas"] = list(G.info.extra.get("deltas", [])) + [{**delta.metadata, "kind": delta.kind,
                                                                       "scale": float(scale)}]
    return G2


DELTA_HINT = "expected a file written by Save Weight Delta"


def save_weight_delta(delta: WeightDelta, path: Union[str, Path]) -> Path:
    """Write `delta` as safetensors (atomically) with its base generator's identity in the metadata."""
    meta = {"kind": delta.kind, "base": delta.base.to_dict(), "metadata": delta.metadata}
    return write_safetensors(path, delta.tensors, format=DELTA_FORMAT, metadata=meta)


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _parse_kind(text: str) -> str:
    # The kind becomes part of the tuned generator's name, so it is a short plain word ('pti', 'noise').
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", text):
        raise ValueError(f"expected a short name of letters, digits, '_' or '-' (like 'pti'), got {text[:40]!r}")
    return text


def load_weight_delta(path: Union[str, Path]) -> WeightDelta:
    """Read a delta written by `save_weight_delta`.

    The metadata (base generator identity, kind, extra fields) and every tensor (floating point, finite) are
    checked here; shapes are checked against the generator by `apply_weight_delta`. Sizes declared in the file's
    header are checked against the file by the safetensors reader before anything is read.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: naming the file and what is wrong: unreadable, not a weight delta, a metadata field
            missing or invalid, no tensors, a tensor that is not floating point or holds NaN / infinite values.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path, what="weight delta", format=DELTA_FORMAT, hint=DELTA_HINT)
    base = meta_field(meta, "base", path, "weight delta", parse=GeneratorRef.from_json, hint=DELTA_HINT)
    extra = meta_field(meta, "metadata", path, "weight delta", parse=_json_object, default={}, hint=DELTA_HINT)
    kind = meta_field(meta, "kind", path, "weight delta", parse=_parse_kind, default="pti", hint=DELTA_HINT)
    if not tensors:
        raise CheckpointError(f"{path}: the weight delta holds no tensors, so there is nothing to apply; "
                              f"{DELTA_HINT}")
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: weight delta tensor {name[:80]!r} has dtype {t.dtype}; deltas are "
                                  f"float32, float16 or bfloat16; {DELTA_HINT}")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: weight delta tensor {name[:80]!r} holds NaN or infinite values; "
                                  f"applying it would break the generator: make the delta again ({DELTA_HINT})")
    return WeightDelta(tensors, base, kind, extra)
