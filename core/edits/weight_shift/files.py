"""Weight shift files: one `.safetensors` per shift (tensors keyed by our parameter names, raw stored-weight units,
float32), every metadata field checked on load; importers for NaviGAN shift files and StyleGAN-NADA checkpoints.

Metadata (string -> string, as methods-edits A.5 lists it): `format` = SHIFT_FORMAT, `version`, `base` (the base
generator's GeneratorRef as JSON), `base_sha256` (`core.latents.weights_digest` of the base), `w_dim`,
`img_resolution`, `source` ('sgs' | 'navigan' | 'nada'), `norm` ('raw' | 'unit', with `scale`), `recommended_k`
('lo,hi'), `layer`, and how it was made where known: `name`, `prompt`, `neutral_prompt`, `clip_model`, `loss`,
`lambda_clip`, `lambda_l2`, `lr`, `steps`, `batch`, `k_train`. Any other metadata of the shift is kept in `extra`
(a bounded JSON object of plain values). `load_weight_shift` returns the same Python values `save_weight_shift`
was given (numbers as numbers, `recommended_k` as a (lo, hi) tuple).

The importers read `torch.save` files with `core.files.read_state_dict` (declared sizes checked first, then
`torch.load(weights_only=True)`: nothing in the file is executed) and convert rosinality names with the rosinality
loader's own `convert_rosinality_state`.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch

from ...config import MAX_RESOLUTION
from ...errors import CheckpointError
from ...files import describe, meta_field, read_safetensors, read_state_dict, write_safetensors
from ...latents import GeneratorRef
from ...loaders.rosinality import convert_rosinality_state, extract_rosinality_state
from ...networks import Generator
from .shift import MAX_K, WeightShift, applied_shifts, layer_of, make_shift

SHIFT_FORMAT = "stylegan-studio-weight-shift"
SHIFT_SUFFIX = ".safetensors"
SHIFT_VERSION = 1
KNOWN_VERSIONS = (1,)
SOURCES = ("sgs", "navigan", "nada")
NORMS = ("raw", "unit")
MAX_SHIFT_TENSORS = 1024         # a NADA delta of a 1024 px model changes about 90; a trained shift one
MAX_TENSOR_NAME = 200            # 'synthesis.b1024.conv1.affine.weight' is 35 characters
MAX_PROMPT_CHARS = 1000          # CLIP reads 77 tokens; a longer text is not a prompt
MAX_EXTRA_CHARS = 16384          # the `extra` JSON object
MAX_EXTRA_KEYS = 64
MAX_STEPS = 10_000_000
MAX_BATCH = 10_000
MAX_HYPER = 1e6                  # lambdas and lr: far beyond any that trains
SHIFT_HINT = "expected a weight shift written by Save Weight Shift / Train Weight Shift"
_PathLike = Union[str, os.PathLike]

# ------------------------------------------------------------------------------------------------
# Metadata fields: one parser per field (text -> value, ValueError when invalid) and one encoder (value -> text).


def _int_parser(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"-?[0-9]{1,12}", text.strip()) or not low <= int(text) <= high:
            raise ValueError(f"expected a whole number in {low}..{high}, got {describe(text)}")
        return int(text)
    return parse


def _float_parser(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if len(text) > 40:
            raise ValueError(f"expected a number in {low:g}..{high:g}, got {describe(text)}")
        value = float(text)
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"expected a finite number in {low:g}..{high:g}, got {describe(text)}")
        return value
    return parse


def _text_parser(longest: int, pattern: Optional[str] = None) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) > longest:
            raise ValueError(f"{len(text):,} characters long, at most {longest:,} expected")
        if pattern is not None and not re.fullmatch(pattern, text):
            raise ValueError(f"expected {pattern}, got {describe(text)}")
        return text
    return parse


def _choice_parser(choices: tuple) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {describe(text)}")
        return text
    return parse


def _parse_version(text: str) -> int:
    version = _int_parser(0, 10**6)(text)
    if version not in KNOWN_VERSIONS:
        known = ", ".join(map(str, KNOWN_VERSIONS))
        raise ValueError(f"version {version} is not one this StyleGAN Studio reads ({known}); a newer StyleGAN "
                         f"Studio wrote it: update the pack")
    return version


def _parse_k_range(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(text) > 80 or len(parts) != 2:
        raise ValueError(f"expected 'lo,hi' (e.g. '-3,3'), got {describe(text)}")
    lo, hi = (_float_parser(-MAX_K, MAX_K)(p.strip()) for p in parts)
    if not lo < hi:
        raise ValueError(f"expected lo < hi within ±{MAX_K:g}, got {describe(text)}")
    return lo, hi


def _parse_digest(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"expected a SHA-256 as 64 lowercase hex digits, got {describe(text)}")
    return text


def _parse_extra(text: str) -> dict:
    if len(text) > MAX_EXTRA_CHARS:
        raise ValueError(f"{len(text):,} characters long, at most {MAX_EXTRA_CHARS:,} expected")
    value = json.loads(text)
    _check_extra(value)
    return value


def _check_extra(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    if len(value) > MAX_EXTRA_KEYS:
        raise ValueError(f"{len(value)} entries, at most {MAX_EXTRA_KEYS} expected")
    for key, item in value.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key):
            raise ValueError(f"entry names are short words, got {describe(key)}")
        if key in FIELDS or key == "format":
            raise ValueError(f"entry {key!r} is a field of its own")
        items = item if isinstance(item, list) else [item]
        if isinstance(item, list) and len(item) > 64:
            raise ValueError(f"entry {key!r} is a list of {len(item)} values, at most 64 expected")
        for v in items:
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise ValueError(f"entry {key!r} must be a number, text, true/false, null or a list of those, got "
                                 f"{describe(v)}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"entry {key!r} is not finite")
            if isinstance(v, str) and len(v) > MAX_PROMPT_CHARS:
                raise ValueError(f"entry {key!r} is {len(v):,} characters long, at most {MAX_PROMPT_CHARS:,}")


def _encode_number(value: Any, integer: bool) -> str:
    ok = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok:
        raise ValueError(f"expected {'a whole number' if integer else 'a number'}, got {describe(value)}")
    return str(int(value)) if integer else repr(float(value))


def _encode_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {describe(value)}")
    return value


def _encode_k_range(value: Any) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"expected (lo, hi), got {describe(value)}")
    return ",".join(_encode_number(v, False) for v in value)


# key: (parse, encode). Required fields come first.
FIELDS: dict[str, tuple[Callable[[str], Any], Callable[[Any], str]]] = {
    "version": (_parse_version, lambda v: _encode_number(v, True)),
    "base": (GeneratorRef.from_json, lambda v: json.dumps(v.to_dict())),
    "base_sha256": (_parse_digest, _encode_text),
    "w_dim": (_int_parser(1, 10**6), lambda v: _encode_number(v, True)),
    "source": (_choice_parser(SOURCES), _encode_text),
    "norm": (_choice_parser(NORMS), _encode_text),
    "recommended_k": (_parse_k_range, _encode_k_range),
    "scale": (_float_parser(0.0, 1e12), lambda v: _encode_number(v, False)),
    "img_resolution": (_int_parser(1, MAX_RESOLUTION), lambda v: _encode_number(v, True)),
    "layer": (_text_parser(4000, r"[A-Za-z0-9_.,]*"), _encode_text),
    "name": (_text_parser(200), _encode_text),
    "prompt": (_text_parser(MAX_PROMPT_CHARS), _encode_text),
    "neutral_prompt": (_text_parser(MAX_PROMPT_CHARS), _encode_text),
    "clip_model": (_text_parser(200), _encode_text),
    "loss": (_text_parser(32, r"[A-Za-z0-9_+-]*"), _encode_text),
    "lambda_clip": (_float_parser(0.0, MAX_HYPER), lambda v: _encode_number(v, False)),
    "lambda_l2": (_float_parser(0.0, MAX_HYPER), lambda v: _encode_number(v, False)),
    "lr": (_float_parser(0.0, MAX_HYPER), lambda v: _encode_number(v, False)),
    "steps": (_int_parser(0, MAX_STEPS), lambda v: _encode_number(v, True)),
    "batch": (_int_parser(0, MAX_BATCH), lambda v: _encode_number(v, True)),
    "k_train": (_float_parser(-MAX_K, MAX_K), lambda v: _encode_number(v, False)),
    "extra": (_parse_extra, lambda v: json.dumps(v)),
}
REQUIRED = ("version", "base", "base_sha256", "w_dim", "source", "norm", "recommended_k")
_STORED = {"version", "base", "base_sha256", "w_dim", "extra"}   # not part of WeightShift.metadata
_NAME = re.compile(r"[A-Za-z0-9_.]{1,%d}" % MAX_TENSOR_NAME)


def _unique_layers(names) -> str:
    return ",".join(dict.fromkeys(layer_of(n) for n in names))


def _encode_metadata(shift: WeightShift) -> dict[str, str]:
    """The file's metadata for `shift` (each value checked by the field's own parser, so every file written can be
    read back); ValueError naming the field otherwise."""
    given = dict(shift.metadata)
    extra = {k: given.pop(k) for k in list(given) if k not in FIELDS}
    for key in _STORED:
        if key in given:
            raise ValueError(f"weight shift metadata must not set {key!r}: the file writes it itself")
    values: dict[str, Any] = {"version": SHIFT_VERSION, "base": shift.base, "base_sha256": shift.base_digest,
                              "w_dim": shift.base.w_dim, "source": "sgs", "norm": "raw", "recommended_k": (-3.0, 3.0),
                              "layer": _unique_layers(shift.tensors)}
    values.update({k: v for k, v in given.items() if v is not None})
    if extra:
        try:
            _check_extra(json.loads(json.dumps(extra)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"weight shift metadata outside the known fields ({', '.join(sorted(extra)[:8])}) must "
                             f"be plain short values: {e}") from e
        values["extra"] = extra
    meta = {}
    for key, value in values.items():
        parse, encode = FIELDS[key]
        try:
            meta[key] = encode(value)
            parse(meta[key])
        except (TypeError, ValueError) as e:
            raise ValueError(f"weight shift metadata field {key!r} is invalid: {e}") from e
    _check_norm(meta.get("norm"), "scale" in meta)
    return meta


def _check_norm(norm: str, has_scale: bool) -> None:
    if norm == "unit" and not has_scale:
        raise ValueError("norm 'unit' needs a 'scale' (the norm of the shift)")
    if norm == "raw" and has_scale:
        raise ValueError("a 'scale' belongs to norm 'unit' only")


def _check_tensors(tensors: Mapping[str, Any], where: str) -> None:
    """ValueError naming the tensor: too many, a name that is not a parameter name, not float, not finite."""
    if not tensors:
        raise ValueError(f"{where} holds no tensors, so there is nothing to apply")
    if len(tensors) > MAX_SHIFT_TENSORS:
        raise ValueError(f"{where} holds {len(tensors):,} tensors, at most {MAX_SHIFT_TENSORS:,} expected")
    for name, t in tensors.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"{where} has a tensor named {describe(name)}, not a parameter name like "
                             f"'synthesis.b16.conv1.weight'")
        if not torch.is_tensor(t) or not t.is_floating_point():
            raise ValueError(f"{where} tensor {name!r} has dtype {getattr(t, 'dtype', type(t).__name__)}; shift "
                             f"tensors are floating point")
        if not torch.isfinite(t.to(torch.float32)).all():   # float64 beyond float32's range is infinite there
            raise ValueError(f"{where} tensor {name!r} holds NaN or infinite values (as float32); applying it "
                             f"would break the generator")


# ------------------------------------------------------------------------------------------------
# Save / load


def save_weight_shift(shift: WeightShift, path: _PathLike) -> Path:
    """Write `shift` to `path` (SHIFT_SUFFIX appended when missing) as float32 safetensors, atomically, with its
    base identity and how it was made in the metadata. Returns the path written.

    Raises:
        ValueError: a tensor that is not a finite float, or a metadata value the loader would refuse (the
            message names the field), so no file is written that cannot be read back.
    """
    path = Path(path)
    if path.suffix != SHIFT_SUFFIX:
        path = path.with_name(path.name + SHIFT_SUFFIX)
    _check_tensors(shift.tensors, "the weight shift")
    meta = _encode_metadata(shift)
    tensors = {k: v.detach().to("cpu", torch.float32) for k, v in shift.tensors.items()}
    return write_safetensors(path, tensors, format=SHIFT_FORMAT, metadata=meta)


def load_weight_shift(path: _PathLike) -> WeightShift:
    """Read a weight shift written by `save_weight_shift`.

    Every metadata field is checked (required ones present; numbers finite and in range; texts bounded;
    `recommended_k` ordered within ±MAX_K; a known version; `w_dim` agreeing with the base) and every tensor (at
    most MAX_SHIFT_TENSORS, parameter-like names, floating point, finite; returned as float32). Whether the
    tensors fit a generator is checked when the shift is applied (`apply_weight_shifts`), which also refuses a
    shift made for another generator, naming the one it needs.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: naming the file and the field or tensor: unreadable, not a weight shift, a field
            missing or invalid, a bad tensor.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path, what="weight shift", format=SHIFT_FORMAT, hint=SHIFT_HINT)
    values: dict[str, Any] = {}
    for key, (parse, _) in FIELDS.items():
        value = meta_field(meta, key, path, "weight shift", parse=parse,
                           default=... if key in REQUIRED else None, hint=SHIFT_HINT)
        if value is not None:
            values[key] = value
    unknown = sorted(set(meta) - set(FIELDS) - {"format"})
    if unknown:
        raise CheckpointError(f"{path}: weight shift metadata has unknown field(s) "
                              f"{', '.join(describe(k, 40) for k in unknown[:5])}; a newer StyleGAN Studio or another "
                              f"program wrote it; {SHIFT_HINT}")
    base: GeneratorRef = values["base"]
    if values["w_dim"] != base.w_dim:
        raise CheckpointError(f"{path}: weight shift metadata field 'w_dim' is {values['w_dim']} but its base "
                              f"generator {describe(base.name)} has w_dim {base.w_dim}; the file is damaged; "
                              f"{SHIFT_HINT}")
    try:
        _check_norm(values["norm"], "scale" in values)
    except ValueError as e:
        raise CheckpointError(f"{path}: weight shift metadata field 'norm' is invalid ({e}); {SHIFT_HINT}") from e
    try:
        _check_tensors(tensors, "the weight shift")
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}; {SHIFT_HINT}") from e
    metadata = {k: v for k, v in values.items() if k not in _STORED}
    metadata.update(values.get("extra", {}))
    return WeightShift({k: v.float().contiguous() for k, v in tensors.items()}, base, values["base_sha256"],
                       metadata)


# ------------------------------------------------------------------------------------------------
# Importers


NAVIGAN_HINT = ("expected a NaviGAN shift file (torch.save({'layer_ix': int, 'shift': tensor [1, 1, out, in, k, k]}), "
                "as NaviGAN's save_deformation writes it)")
NADA_HINT = "expected a StyleGAN-NADA checkpoint (torch.save({'g_ema': rosinality generator state, 'g_optim': ...}))"


def _unshifted(G: Generator, what: str) -> None:
    if applied_shifts(G):
        raise ValueError(f"import the {what} for the unshifted generator: {G.info.name} already has weight shifts "
                         f"applied (use the generator before Apply Weight Shifts)")


def _rosinality_conv(i: int) -> str:
    """Our parameter name of rosinality's `convs[i].conv.weight`, from the rosinality loader's own conversion."""
    (name,) = convert_rosinality_state({f"convs.{i}.conv.weight": torch.zeros(1, 1)}, "rosinality name")
    return name


def import_navigan(path: _PathLike, G: Generator) -> WeightShift:
    """A WeightShift from a NaviGAN shift file for `G` (the StyleGAN2 generator it was found on).

    NaviGAN adds its shift to rosinality's raw conv weight `convs[layer_ix]` ([1, out, in, k, k], the units of our
    weights): the tensor becomes our `synthesis.b{2^(3 + i//2)}.conv{i%2}.weight` (through the rosinality loader's
    own name conversion), unchanged, so k = 1 is NaviGAN's saved deformation and k in -1..1 is the range NaviGAN
    renders (metadata norm 'unit', scale = the shift's norm, recommended_k (-1, 1)).

    Raises:
        CheckpointError: naming the file: unreadable or unsafe, not a NaviGAN shift, a bad `layer_ix` (with the
            range `G` has), a shift of the wrong shape for that layer, non-finite or all-zero values.
    """
    path = Path(path)
    _unshifted(G, "NaviGAN shift")
    return _from_navigan(read_state_dict(path, what="NaviGAN shift", hint=NAVIGAN_HINT), path, G)


def _is_navigan(data: Mapping) -> bool:
    return "layer_ix" in data and "shift" in data


def _from_navigan(data: Mapping, path: Path, G: Generator) -> WeightShift:
    if not _is_navigan(data):
        raise CheckpointError(f"{path}: not a NaviGAN shift file (keys: "
                              f"{', '.join(describe(k, 40) for k in list(data)[:8])}); {NAVIGAN_HINT}")
    ix, shift = data["layer_ix"], data["shift"]
    if torch.is_tensor(ix) and ix.ndim == 0 and not ix.is_floating_point() and ix.dtype != torch.bool:
        ix = int(ix)
    params = dict(G.named_parameters())
    convs = list(itertools.takewhile(lambda n: n in params, map(_rosinality_conv, range(64))))
    if not convs:
        raise CheckpointError(f"{path}: NaviGAN shifts are for StyleGAN2 generators, but {G.info.name} is {G.arch} "
                              f"(no rosinality convs[0], {_rosinality_conv(0)}); load the StyleGAN2 generator the "
                              f"shift was made for")
    if isinstance(ix, bool) or not isinstance(ix, int) or not 0 <= ix < len(convs):
        raise CheckpointError(f"{path}: NaviGAN 'layer_ix' must be a rosinality conv index in 0..{len(convs) - 1} "
                              f"for {G.info.name}, got {describe(ix)}; the file was made for another generator or is "
                              f"damaged")
    if not torch.is_tensor(shift) or not shift.is_floating_point():
        raise CheckpointError(f"{path}: NaviGAN 'shift' must be a floating-point tensor, got {describe(shift)}; "
                              f"{NAVIGAN_HINT}")
    name = convs[ix]
    want = tuple(params[name].shape)
    x = shift
    while x.ndim > len(want) and x.shape[0] == 1:
        x = x[0]
    if tuple(x.shape) != want:
        raise CheckpointError(f"{path}: NaviGAN 'shift' is {list(shift.shape)}, but rosinality convs[{ix}] of "
                              f"{G.info.name} ({name}) needs [1, 1, {', '.join(map(str, want))}]; the shift was made "
                              f"for another generator: load that one")
    x = x.detach().to(torch.float32)
    if not torch.isfinite(x).all():
        raise CheckpointError(f"{path}: NaviGAN 'shift' holds NaN or infinite values; the file is damaged")
    scale = float(x.double().norm())
    if scale == 0.0:
        raise CheckpointError(f"{path}: NaviGAN 'shift' is all zeros, so it changes nothing; the file is damaged")
    return make_shift(G, {name: x}, source="navigan", norm="unit", scale=scale, recommended_k=(-1.0, 1.0),
                      layer=layer_of(name), name=path.stem[:200], img_resolution=int(G.img_resolution))


def import_nada(path: _PathLike, G: Generator) -> WeightShift:
    """A WeightShift from a StyleGAN-NADA checkpoint fine-tuned from `G`: x = NADA − G for every tensor that
    differs at all (k = 1 is the NADA generator, k = 0 the base; recommended_k (0, 1)).

    The checkpoint's `g_ema` (rosinality names) is converted with the rosinality loader's own conversion. NADA
    keeps the mapping network frozen, so a mapping that differs from `G`'s means it was trained from another
    generator: refused, naming the tensors that differ.

    Raises:
        CheckpointError: naming the file: unreadable or unsafe, not a rosinality generator state, another
            architecture than `G`, a different mapping (another base), a changed buffer, nothing changed,
            non-finite values.
    """
    path = Path(path)
    _unshifted(G, "StyleGAN-NADA checkpoint")
    return _from_nada(read_state_dict(path, what="StyleGAN-NADA checkpoint", hint=NADA_HINT), path, G)


def _from_nada(data: Mapping, path: Path, G: Generator) -> WeightShift:
    what = str(path)
    state, _ = extract_rosinality_state(data, what)
    nada = convert_rosinality_state(state, what)
    base = G.state_dict()
    params = dict(G.named_parameters())
    need = f"load the generator it was fine-tuned from (not {G.info.name})"
    unknown = [k for k in nada if k not in base]
    if unknown:
        names = ", ".join(describe(k, 60) for k in unknown[:4])
        raise CheckpointError(f"{path}: the StyleGAN-NADA generator has tensors {G.info.name} lacks ({names}); it "
                              f"has another architecture; {need}")
    missing = [k for k in base if k not in nada and k != "mapping.w_avg"]
    if missing:
        raise CheckpointError(f"{path}: the StyleGAN-NADA generator lacks tensors of {G.info.name} "
                              f"({', '.join(missing[:4])}); it has another architecture or is incomplete; {need}")
    changed: dict[str, torch.Tensor] = {}
    mapping_differs, buffers_differ = [], []
    with torch.no_grad():
        for name, t in nada.items():
            b = base[name].detach().to("cpu", torch.float32)
            if not torch.is_tensor(t) or not t.is_floating_point() or tuple(t.shape) != tuple(b.shape):
                raise CheckpointError(f"{path}: StyleGAN-NADA tensor {name!r} is {describe(t)}, but {G.info.name} "
                                      f"has {list(b.shape)} float; {need}")
            t = t.detach().to("cpu", torch.float32)
            if not torch.isfinite(t).all():
                raise CheckpointError(f"{path}: StyleGAN-NADA tensor {name!r} holds NaN or infinite values; the "
                                      f"checkpoint is damaged")
            if torch.equal(t, b):
                continue
            if name.startswith("mapping."):
                mapping_differs.append(name)
            elif name not in params:
                buffers_differ.append(name)
            else:
                changed[name] = t - b
    if mapping_differs:
        raise CheckpointError(f"{path}: the StyleGAN-NADA generator's mapping network differs from {G.info.name}'s "
                              f"({', '.join(mapping_differs[:4])}); NADA keeps the mapping frozen, so it was "
                              f"fine-tuned from another generator; {need}")
    if buffers_differ:
        raise CheckpointError(f"{path}: the StyleGAN-NADA generator's fixed tensors differ from {G.info.name}'s "
                              f"({', '.join(buffers_differ[:4])}); NADA never trains them, so it was fine-tuned from "
                              f"another generator; {need}")
    if not changed:
        raise CheckpointError(f"{path}: the StyleGAN-NADA generator is identical to {G.info.name}, so there is no "
                              f"shift to import")
    if len(changed) > MAX_SHIFT_TENSORS:  # cannot happen for a StyleGAN2 generator; a bound all the same
        raise CheckpointError(f"{path}: {len(changed)} tensors differ, at most {MAX_SHIFT_TENSORS} expected")
    return make_shift(G, changed, source="nada", norm="raw", recommended_k=(0.0, 1.0),
                      layer=_unique_layers(changed), name=path.stem[:200], img_resolution=int(G.img_resolution))


def import_shift(path: _PathLike, G: Generator) -> WeightShift:
    """A `.pt` weight shift of either kind, read once: a NaviGAN shift file (it has 'layer_ix' and 'shift') or else
    a StyleGAN-NADA checkpoint, converted for `G` as `import_navigan` / `import_nada` do (same errors)."""
    path = Path(path)
    _unshifted(G, "shift file")
    data = read_state_dict(path, what="NaviGAN shift or StyleGAN-NADA checkpoint",
                           hint=f"{NAVIGAN_HINT}, or {NADA_HINT}")
    return _from_navigan(data, path, G) if _is_navigan(data) else _from_nada(data, path, G)


__all__ = ["SHIFT_FORMAT", "SHIFT_SUFFIX", "SHIFT_VERSION", "MAX_SHIFT_TENSORS", "save_weight_shift",
           "load_weight_shift", "import_navigan", "import_nada", "import_shift"]
