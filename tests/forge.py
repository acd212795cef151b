"""Write real-format StyleGAN checkpoints from the tiny test fixtures, with no NVIDIA or rosinality code.

Each fixture (`tests/fixtures/<variant>.safetensors`) was made once, outside this repository, by running the
reference implementation on a tiny random network. It holds:

- tensors `net/<name>`: the reference generator's weights (random numbers we drew), named as the reference
  stores them (NVIDIA state-dict names, TensorFlow variable paths, or rosinality state-dict names); values
  were rounded to float16 before the reference ran, so most are stored as float16 without loss and are
  read back as float32, the dtype real checkpoints use;
- tensors `expected/<name>`: z, c, ws = mapping(z, c, truncation_psi=0.7) and images =
  synthesis(ws, noise_mode='const', force_fp32=True) computed by the reference code, for batch 1 and 3;
- metadata `record_zlib_b64`: JSON (zlib-compressed, base64) describing every object in the real checkpoint
  (module, class name, constructor arguments, plain attributes, tensor names in order); tagged values
  (`{"__type__": ...}`) restore tuples, dict subclasses and numpy types exactly. Networks the loader never
  reads (D, augment_pipe, unused TensorFlow variables) are recorded by tensor shape only;
- metadata `info`: how the fixture was made (reference code, constructor arguments, truncation_psi).

The writers below turn a fixture back into a checkpoint file laid out exactly like the real one (same pickle
globals, same object states); only the network source NVIDIA embeds is replaced by a placeholder that
defines the class names. The fake `torch_utils` / `dnnlib` modules exist in `sys.modules` only while dumping.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import io
import json
import pickle
import sys
import types
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_FORMAT = "sgs-test-fixture/1"

TensorMap = dict[str, torch.Tensor]


# --- Fixtures ------------------------------------------------------------------------------------------

@dataclass
class Fixture:
    """One variant: reference weights, the checkpoint's record tree and the reference outputs."""

    name: str
    kind: str                 # 'nvidia', 'nvidia-tf' or 'rosinality'
    record: Any               # decoded JSON record (see the module docstring)
    net: TensorMap            # reference weights by their reference names
    expected: TensorMap       # z1, c1, ws1, img1, z3, c3, ws3, img3, ws3_psi1
    info: dict                # free-form description written by the fixture builder
    derived: dict = field(default_factory=dict)  # values computed once from the record (caches)

    @property
    def truncation_psi(self) -> float:
        return float(self.info["truncation_psi"])


def fixture_names(kind: Optional[str] = None) -> list[str]:
    """Names of the checkpoint fixtures in `FIXTURES` (other .safetensors files there are skipped)."""
    from safetensors import safe_open

    names = []
    for path in sorted(FIXTURES.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("format") != FIXTURE_FORMAT:
                continue
        if kind is None or load_fixture(path.stem).kind == kind:
            names.append(path.stem)
    return names


_cache: dict[str, Fixture] = {}


def load_fixture(name: str) -> Fixture:
    """Read `tests/fixtures/<name>.safetensors` (cached; callers must not modify the tensors)."""
    if name not in _cache:
        from safetensors import safe_open

        path = FIXTURES / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != FIXTURE_FORMAT:
            raise ValueError(f"{path} is not a test fixture (format={meta.get('format')!r})")
        record = json.loads(zlib.decompress(base64.b64decode(meta["record_zlib_b64"])))
        _cache[name] = Fixture(
            name=name, kind=meta["kind"], record=record,
            net={k[4:]: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()
                 if k.startswith("net/")},
            expected={k[9:]: v for k, v in tensors.items() if k.startswith("expected/")},
            info=json.loads(meta["info"]))
    return _cache[name]


def perturbed(tensors: TensorMap, seed: int = 1) -> TensorMap:
    """A deterministic, clearly different copy of a generator's weights (stands in for the training G).

    Fixed resampling filters are left alone, as training never changes them.
    """
    out = {}
    for k, v in tensors.items():
        if v.is_floating_point() and not k.endswith(("filter", "kernel")):
            gen = torch.Generator().manual_seed(seed * 2**32 + zlib.crc32(k.encode()))  # independent of key order
            out[k] = v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        else:
            out[k] = v.clone()
    return out


# --- Fake modules that exist only while dumping ---------------------------------------------------------

CODE_RAN: list = []  # what CodeRunningPayload appends to if a loader runs the pickled call


def _record_run():
    CODE_RAN.append(1)
    return {}


class CodeRunningPayload:
    """Pickles as a call of `_record_run`: a loader that executes pickled code leaves a mark in CODE_RAN."""

    def __reduce__(self):
        return (_record_run, ())


def _named(obj, module: str, name: str):
    obj.__module__ = module
    obj.__qualname__ = obj.__name__ = name
    return obj


def _reconstruct_persistent_obj(meta):  # never called: only its pickled name matters
    raise AssertionError("placeholder for torch_utils.persistence._reconstruct_persistent_obj")


_named(_reconstruct_persistent_obj, "torch_utils.persistence", "_reconstruct_persistent_obj")


class EasyDict(dict):
    """Pickles as `dnnlib.util.EasyDict`."""


_named(EasyDict, "dnnlib.util", "EasyDict")


class TFNetwork:
    """Pickles as `dnnlib.tflib.network.Network`; `__getstate__` gives the TensorFlow state dict."""

    def __init__(self, state: dict):
        self._state = state

    def __getstate__(self) -> dict:
        return self._state


_named(TFNetwork, "dnnlib.tflib.network", "Network")


def _np_reconstruct(*args):
    raise AssertionError("placeholder for numpy.core.multiarray._reconstruct")


def _np_scalar(*args):
    raise AssertionError("placeholder for numpy.core.multiarray.scalar")


_named(_np_reconstruct, "numpy.core.multiarray", "_reconstruct")
_named(_np_scalar, "numpy.core.multiarray", "scalar")


class PersistentRecord:
    """Pickles exactly like a `torch_utils.persistence` object: a call of
    `torch_utils.persistence._reconstruct_persistent_obj(meta)` with no further state."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


_FAKE_MODULES = {
    "torch_utils": {},
    "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
    "dnnlib": {"EasyDict": EasyDict},
    "dnnlib.util": {"EasyDict": EasyDict},
    "dnnlib.tflib": {},
    "dnnlib.tflib.network": {"Network": TFNetwork},
}
_LEGACY_NUMPY = {"numpy.core.multiarray": {"_reconstruct": _np_reconstruct, "scalar": _np_scalar}}
_MISSING = object()


@contextlib.contextmanager
def fake_modules(legacy_numpy: bool = False):
    """Put the stand-in modules into `sys.modules` for the duration of a dump, then restore what was there."""
    fakes = dict(_FAKE_MODULES, **(_LEGACY_NUMPY if legacy_numpy else {}))
    saved = {name: sys.modules.get(name, _MISSING) for name in fakes}
    try:
        for name, attrs in fakes.items():
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
        yield
    finally:
        for name, old in saved.items():
            if old is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


class _Pickler(pickle.Pickler):
    """Optionally writes numpy arrays and scalars under numpy 1.x's global names, as old checkpoints do."""

    def __init__(self, f, protocol: int, legacy_numpy: bool):
        super().__init__(f, protocol=protocol)
        self.legacy_numpy = legacy_numpy

    def reducer_override(self, obj):
        if self.legacy_numpy and (type(obj) is np.ndarray or isinstance(obj, np.generic)):
            fn, *rest = obj.__reduce__()
            legacy = {"_reconstruct": _np_reconstruct, "scalar": _np_scalar}[fn.__name__]
            return (legacy, *rest)
        return NotImplemented


def dumps(obj: Any, *, protocol: int = 4, legacy_numpy: bool = False) -> bytes:
    """Pickle `obj` (which may hold `PersistentRecord`, `EasyDict`, `TFNetwork`) with the fake modules present."""
    buf = io.BytesIO()
    with fake_modules(legacy_numpy):
        _Pickler(buf, protocol, legacy_numpy).dump(obj)
    return buf.getvalue()


# --- Record tree -> Python objects ---------------------------------------------------------------------

def placeholder_source(module: str, class_names: Iterable[str]) -> str:
    """A stand-in for the module source NVIDIA embeds: it only defines the class names (no NVIDIA code)."""
    lines = [f'"""Placeholder for {module}: a real checkpoint embeds the full network source here."""', "",
             "import torch", "from torch_utils import persistence", ""]
    for name in sorted(set(class_names)):
        lines += ["", "@persistence.persistent_class", f"class {name}(torch.nn.Module):", "    pass", ""]
    return "\n".join(lines)


def _class_names_by_module(node: Any, out: dict[str, set]) -> dict[str, set]:
    if isinstance(node, dict):
        if node.get("__type__") == "persistent":
            out.setdefault(node["module"], set()).add(node["class_name"])
        for v in node.values():
            _class_names_by_module(v, out)
    elif isinstance(node, list):
        for v in node:
            _class_names_by_module(v, out)
    return out


class _Decoder:
    """Turns the JSON record into the objects a real pickle holds; `tensor(ref)` supplies each tensor."""

    def __init__(self, tensor: Callable[[dict], torch.Tensor], sources: dict[str, str]):
        self.tensor = tensor
        self.sources = sources

    def __call__(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self(x) for x in v]
        if not isinstance(v, dict):
            return v
        kind, value = v["__type__"], v.get("value")
        if kind == "tuple":
            return tuple(self(x) for x in value)
        if kind in ("dict", "EasyDict", "OrderedDict"):
            cls = {"dict": dict, "EasyDict": EasyDict, "OrderedDict": collections.OrderedDict}[kind]
            return cls((self(k), self(x)) for k, x in value)
        if kind == "set":
            return set(self(x) for x in value)
        if kind == "float":
            return float(value)
        if kind == "np.scalar":
            return np.dtype(v["dtype"]).type(value)
        if kind == "np.ndarray":
            return np.array(value, dtype=np.dtype(v["dtype"])).reshape(v["shape"])
        if kind == "tensor":
            t = self.tensor(v)
            return torch.nn.Parameter(t, requires_grad=bool(v.get("requires_grad", False))) if v["param"] else t
        if kind == "persistent":
            state = {k: self(x) for k, x in v["state"]}
            meta = dict(type="class", version=v.get("version", 6), module_src=self.sources[v["module"]],
                        class_name=v["class_name"], state=state)
            return PersistentRecord(meta)
        raise ValueError(f"unknown record tag {kind!r}")


def _shape_tensor(ref: dict) -> torch.Tensor:
    """Tensors the fixture stores by shape only (D, augment pipe): deterministic, never used by the loader."""
    n = int(np.prod(ref["shape"])) if ref["shape"] else 1
    values = torch.linspace(-1, 1, n) if n > 1 else torch.zeros(n)
    return values.reshape(ref["shape"]).to(getattr(torch, ref.get("dtype", "float32")))


def _tensor_source(tensors: TensorMap) -> Callable[[dict], torch.Tensor]:
    def get(ref: dict) -> torch.Tensor:
        if "key" not in ref:
            return _shape_tensor(ref)
        if ref["key"] not in tensors:
            raise KeyError(ref["key"])
        return tensors[ref["key"]].clone()
    return get


# --- NVIDIA stylegan2-ada-pytorch / stylegan3 pickles -------------------------------------------------

def nvidia_tensors(fx: Fixture, which: str = "G_ema") -> TensorMap:
    """The generator weights the forged pickle holds for `which` ('G_ema' = the reference, 'G' = perturbed)."""
    return dict(fx.net) if which == "G_ema" else perturbed(fx.net)


def _referenced_keys(node: Any, out: set) -> set:
    if isinstance(node, dict):
        if node.get("__type__") == "tensor" and "key" in node:
            out.add(node["key"])
        for v in node.values():
            _referenced_keys(v, out)
    elif isinstance(node, list):
        for v in node:
            _referenced_keys(v, out)
    return out


def _drop_missing(node: Any, present: TensorMap) -> Any:
    """Remove tensor entries whose key is absent from `present` (used to forge a file with a tensor missing)."""
    if isinstance(node, list):
        out = []
        for x in node:
            if (isinstance(x, list) and len(x) == 2 and isinstance(x[1], dict)
                    and x[1].get("__type__") == "tensor" and "key" in x[1] and x[1]["key"] not in present):
                continue
            out.append(_drop_missing(x, present))
        return out
    if isinstance(node, dict):
        return {k: _drop_missing(v, present) for k, v in node.items()}
    return node


def nvidia_objects(fx: Fixture, *, keys: Iterable[str] = ("G", "D", "G_ema", "augment_pipe", "training_set_kwargs"),
                   g_ema: Optional[TensorMap] = None, g: Optional[TensorMap] = None) -> dict:
    """The top-level dict of an NVIDIA snapshot pickle, in the reference's key order."""
    assert fx.kind == "nvidia", fx.kind
    rec = fx.record
    tensors = {"G_ema": dict(fx.net) if g_ema is None else g_ema,
               "G": nvidia_tensors(fx, "G") if g is None else g}
    if "sources" not in fx.derived:  # one placeholder string per module, shared like NVIDIA's
        fx.derived["sources"] = {m: placeholder_source(m, names)
                                 for m, names in _class_names_by_module(rec, {}).items()}
        fx.derived["referenced"] = _referenced_keys(rec["G_ema"], set())
    sources = fx.derived["sources"]
    out = {}
    for key in rec["order"]:
        if key not in keys:
            continue
        if key in ("G", "G_ema"):
            complete = fx.derived["referenced"] <= tensors[key].keys()
            tree = rec["G_ema"] if complete else _drop_missing(rec["G_ema"], tensors[key])
            out[key] = _Decoder(_tensor_source(tensors[key]), sources)(tree)
        else:
            out[key] = _Decoder(_tensor_source({}), sources)(rec[key])
    return out


def write_nvidia_pickle(fx: Fixture, path: Path, *, protocol: int = 4, legacy_numpy: bool = False, **kwargs) -> Path:
    """Write `fx` as an NVIDIA snapshot pickle (dict with G, D, G_ema, augment_pipe, training_set_kwargs).

    `keys`, `g_ema` and `g` are passed to `nvidia_objects` (select entries, replace weights by name).
    """
    path = Path(path)
    path.write_bytes(dumps(nvidia_objects(fx, **kwargs), protocol=protocol, legacy_numpy=legacy_numpy))
    return path


# --- TensorFlow-era NVIDIA pickles --------------------------------------------------------------------

def _tf_network(node: dict, tensors: TensorMap, prefix: str = "") -> TFNetwork:
    decode = _Decoder(lambda ref: None, {})
    variables = []
    for name, ref in node["variables"]:
        if "key" in ref:
            key = ref["key"]
            if key not in tensors:
                continue
            value = tensors[key]
        else:
            value = _shape_tensor(ref)
        variables.append((name, value.numpy().astype(np.float32)))
    state = {
        "version": node["version"],
        "name": node["name"],
        "static_kwargs": decode(node["static_kwargs"]),
        "components": {name: _tf_network(child, tensors) for name, child in node["components"]},
        "build_module_src": f'"""Placeholder for {node["build_module"]}: a real checkpoint embeds the network '
                            f'source here."""\n\n\ndef {node["build_func_name"]}(*args, **kwargs):\n    pass\n',
        "build_func_name": node["build_func_name"],
        "variables": variables,
    }
    return TFNetwork(state)


def tf_tensors(fx: Fixture, which: str = "Gs") -> TensorMap:
    return dict(fx.net) if which == "Gs" else perturbed(fx.net)


def write_tf_pickle(fx: Fixture, path: Path, *, protocol: int = 4, legacy_numpy: bool = True,
                    gs: Optional[TensorMap] = None, g: Optional[TensorMap] = None,
                    order: Optional[Iterable[str]] = None) -> Path:
    """Write `fx` as a TensorFlow-era pickle: the tuple (G, D, Gs) of `dnnlib.tflib.network.Network`."""
    assert fx.kind == "nvidia-tf", fx.kind
    rec = fx.record
    nets = {"Gs": _tf_network(rec["Gs"], tf_tensors(fx, "Gs") if gs is None else gs),
            "G": _tf_network(dict(rec["Gs"], name="G"), tf_tensors(fx, "G") if g is None else g),
            "D": _tf_network(rec["D"], {})}
    data = tuple(nets[k] for k in (order or rec["order"]))
    if len(data) == 1:
        data = data[0]
    path = Path(path)
    path.write_bytes(dumps(data, protocol=protocol, legacy_numpy=legacy_numpy))
    return path


# --- rosinality / pSp checkpoints ---------------------------------------------------------------------

def write_rosinality_pt(fx: Fixture, path: Path, *, latent_avg: bool = True, args: bool = True,
                        training_state: bool = False, layout: str = "rosinality", legacy_format: bool = False,
                        g_ema: Optional[TensorMap] = None) -> Path:
    """Write `fx` as a `torch.save` checkpoint.

    layout 'rosinality': {'g_ema', 'latent_avg', 'args'} (+ 'g', 'd', optimiser states, 'ada_aug_p' with
    `training_state`, as rosinality's train.py writes them); 'psp': pSp / e4e style {'state_dict':
    {'encoder.*', 'decoder.*'}, 'opts', 'latent_avg' repeated once per style layer}.
    """
    assert fx.kind == "rosinality", fx.kind
    rec = fx.record
    source = fx.net if g_ema is None else g_ema
    state = collections.OrderedDict((k, source[k].clone()) for k in rec["state_keys"] if k in source)
    state.update((k, v.clone()) for k, v in source.items() if k not in state and k != "latent_avg")
    avg = fx.net["latent_avg"].clone()
    if layout == "rosinality":
        ckpt: dict = {}
        if training_state:
            ckpt["g"] = collections.OrderedDict(perturbed(dict(state)))
            ckpt["d"] = collections.OrderedDict([("convs.0.0.weight", torch.zeros(8, 3, 1, 1)),
                                                 ("final_linear.1.bias", torch.zeros(1))])
        ckpt["g_ema"] = state
        if training_state:
            group = {"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                     "params": [0, 1]}
            ckpt["g_optim"] = {"state": {}, "param_groups": [dict(group)]}
            ckpt["d_optim"] = {"state": {}, "param_groups": [dict(group)]}
        if args:
            ckpt["args"] = argparse.Namespace(**rec["args"])
        if training_state:
            ckpt["ada_aug_p"] = 0.0
        if latent_avg:
            ckpt["latent_avg"] = avg
    elif layout == "psp":
        sd = collections.OrderedDict([("encoder.input_layer.0.weight", torch.zeros(4, 3, 3, 3))])
        sd.update((f"decoder.{k}", v) for k, v in state.items())
        n_styles = fx.expected["ws1"].shape[1]
        ckpt = {"state_dict": sd, "opts": {"encoder_type": "GradualStyleEncoder", "output_size": rec["args"]["size"],
                                           "start_from_latent_avg": True, "learn_in_w": False}}
        if latent_avg:
            ckpt["latent_avg"] = avg.repeat(n_styles, 1)
    else:
        raise ValueError(layout)
    path = Path(path)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)
    return path


# --- issue 13: face alignment and landmarks ---------------------------------------------------------------------
# Hostile landmark texts, POSE_KEYPOINT frames and alignment transforms, as a user (or a crafted workflow) can hand
# them to Align Face / Unalign Face. Each builder is deterministic and makes only what it names.

def ibug_face(cx: float = 100.0, cy: float = 100.0, s: float = 40.0) -> list[list[float]]:
    """68 iBUG points of a schematic upright face: eye centres s apart at (cx -/+ s/2, cy), mouth corners at
    (cx -/+ s/3, cy + 0.9 s); the other points sit at the face's centre. Plain floats, ready for json.dumps."""
    pts = [[cx, cy + 0.5 * s] for _ in range(68)]
    ring = [(-3, 0), (-1, -1), (1, -1), (3, 0), (1, 1), (-1, 1)]
    for k, (dx, dy) in enumerate(ring):
        pts[36 + k] = [cx - s / 2 + dx * s / 40, cy + dy * s / 40]
        pts[42 + k] = [cx + s / 2 + dx * s / 40, cy + dy * s / 40]
    pts[48], pts[54] = [cx - s / 3, cy + 0.9 * s], [cx + s / 3, cy + 0.9 * s]
    return pts


def huge_landmarks_json(min_chars: int) -> str:
    """Valid JSON, a list of 68-point faces, at least `min_chars` long (to test the size bound before parsing)."""
    face = json.dumps(ibug_face())
    count = min_chars // (len(face) + 2) + 1
    return "[" + ", ".join([face] * count) + "]"


def landmarks_json_with(token: str, point: int = 40, axis: int = 0) -> str:
    """One 68-point face as JSON text with coordinate `axis` of point `point` (0-based) replaced by the raw JSON
    `token` ("NaN", "Infinity", "1e400", a 5,000-digit integer, '"12"', "true", "null", "[1, 2]", ...)."""
    pts = ibug_face()
    marker = 987654.125
    pts[point][axis] = marker
    return json.dumps(pts).replace(repr(marker), token, 1)


def pose_frame(points: list[list[float]], confidence: float = 0.9, canvas: tuple[Any, Any] = (200, 200),
               **person: Any) -> dict:
    """A ComfyUI POSE_KEYPOINT frame with one person whose face is `points` (flattened to x, y, c triples);
    `person` entries override that person's fields (e.g. face_keypoints_2d="abc")."""
    flat = [v for x, y in points for v in (x, y, confidence)]
    return {"people": [{"face_keypoints_2d": flat, **person}], "canvas_width": canvas[0],
            "canvas_height": canvas[1]}


def hostile_transforms() -> dict[str, dict]:
    """Alignment transforms (as `AlignTransform.to_dict` writes them) that no Align Face could have made."""
    square = [[0.0, 0.0], [0.0, 10.0], [10.0, 10.0], [10.0, 0.0]]
    return {
        "nan corner": {"quad": [[float("nan"), 0.0]] + square[1:], "source_size": [20, 20], "output_size": 8},
        "inf corner": {"quad": [[float("inf"), 0.0]] + square[1:], "source_size": [20, 20], "output_size": 8},
        "1e308 corners": {"quad": [[1e308, 0.0], [0.0, 10.0], [10.0, 10.0], [-1e308, 0.0]], "source_size": [20, 20],
                          "output_size": 8},
        "zero source": {"quad": square, "source_size": [0, 0], "output_size": 8},
        "3 corners": {"quad": square[:3], "source_size": [20, 20], "output_size": 8},
        "huge output": {"quad": square, "source_size": [20, 20], "output_size": 10**9},
        "string size": {"quad": square, "source_size": ["big", 20], "output_size": 8},
        "1e400 output": {"quad": square, "source_size": [20, 20], "output_size": float("inf")},
    }


# --- issue 13: inversion inputs, latent and weight-delta files ------------------------------------------
# Hostile latent / weight-delta files, written without the pack's writer (which refuses what these hold).

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                      torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def write_tagged_safetensors(path: Path, tensors: TensorMap, metadata: dict[str, Any]) -> Path:
    """A well-formed safetensors file holding `tensors` (any dtype, any values) and `metadata` (values that are
    not strings are JSON-encoded, as the pack's writer does)."""
    from safetensors.torch import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return Path(path)


def latent_metadata(ref: dict, *, space: str = "w", **fields: Any) -> dict[str, Any]:
    """The metadata Save Latent writes for a latent of the generator `ref` (GeneratorRef.to_dict()); `fields`
    replace or add entries (a value None removes the entry)."""
    meta: dict[str, Any] = {"format": "stylegan-studio-latent", "space": space, "generator": ref,
                            "truncation_psi": "1.0", "truncation_cutoff": ""}
    meta.update(fields)
    return {k: v for k, v in meta.items() if v is not None}


def write_latent_file(path: Path, latent: torch.Tensor, ref: dict, *, c: Optional[torch.Tensor] = None,
                      **fields: Any) -> Path:
    """A latent file with tensor `latent` (and labels `c`) and Save Latent's metadata, `fields` replaced."""
    tensors = {"latent": latent} if c is None else {"latent": latent, "c": c}
    return write_tagged_safetensors(path, tensors, latent_metadata(ref, **fields))


def write_huge_batch_latent(path: Path, ref: dict, *, batch: int = 100_000) -> Path:
    """A tiny latent file whose header declares a `[batch, w_dim]` float32 latent but holds 16 bytes of data."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in latent_metadata(ref).items()}
    size = batch * int(ref["w_dim"]) * 4
    header = {"__metadata__": meta, "latent": {"dtype": "F32", "shape": [batch, int(ref["w_dim"])],
                                               "data_offsets": [0, size]}}
    return write_raw_safetensors(path, header, b"\0" * 16)


def delta_metadata(ref: dict, **fields: Any) -> dict[str, Any]:
    """The metadata Save Weight Delta writes for a delta of the generator `ref`; `fields` replace entries (None
    removes one)."""
    meta: dict[str, Any] = {"format": "stylegan-studio-weight-delta", "kind": "pti", "base": ref,
                            "metadata": {"method": "pti", "steps": 3}}
    meta.update(fields)
    return {k: v for k, v in meta.items() if v is not None}


def write_delta_file(path: Path, tensors: TensorMap, ref: dict, **fields: Any) -> Path:
    """A weight-delta file with `tensors` and Save Weight Delta's metadata, `fields` replaced."""
    return write_tagged_safetensors(path, tensors, delta_metadata(ref, **fields))


def nested_json(depth: int) -> str:
    """A JSON text nested `depth` lists deep (json.loads raises RecursionError past ~1000)."""
    return "[" * depth + "]" * depth


# --- issue 13: where we write (recorded sources, temporary files of killed writers) -------------------

def write_recorded_source(genuine: Path, path: Path, source: str) -> Path:
    """A copy of the StyleGAN Studio .safetensors `genuine` whose metadata records `source` (any string, e.g. an
    existing file outside the model folders) as where the generator came from. Nothing else changes: the file
    loads, and the generator's `info.source` is `source`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(genuine), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["info"])
    info["source"] = source
    meta["info"] = json.dumps(info)
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def dead_pid() -> int:
    """The pid of a process that has just exited (not reused yet, for a test's few seconds)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_leftover(target: Path, pid: int, *, counter: int = 0, torch_hub: bool = False,
                   age_seconds: float = 0.0) -> Path:
    """What a writer killed while writing `target` leaves: `core.files.atomic_write`'s `<name>.<pid>-<n>.partial`,
    or with `torch_hub` the `<that>.<32 hex>.partial` torch.hub's downloader writes first; last written
    `age_seconds` ago."""
    import os
    import time
    import uuid

    path = Path(target).with_name(f"{Path(target).name}.{pid}-{counter}.partial")
    if torch_hub:
        path = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    path.write_bytes(b"half a file")
    if age_seconds:
        t = time.time() - age_seconds
        os.utime(path, (t, t))
    return path


# --- issue 13: config bounds, torch-zip and safetensors reading ---------------------------------------
# Small files that declare much more than they hold. Each is well formed up to the one lie it tells, so the
# reader reaches the check that must refuse it (and, without that check, would allocate what the lie says).

import struct as _struct  # imported here so this section stays independent of the others
import zipfile as _zipfile


def _torch_zip_entries(obj: Any) -> tuple[list[str], dict[str, bytes]]:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with _zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        names = zf.namelist()
        return names, {n: zf.read(n) for n in names}


def _declare_numel(pickle_bytes: bytes, old: int, new: int) -> bytes:
    """Replace the element count `old` (a BININT1) of the one storage / size record by `new` (a BININT)."""
    out = pickle_bytes
    for tail in (b"t", b"N", b"\x85"):  # end of the storage tuple (zip / legacy), the 1-D size tuple
        out = out.replace(b"K" + bytes([old]) + tail, b"J" + _struct.pack("<i", new) + tail)
    assert out != pickle_bytes
    return out


def _zeros_deflated(n: int) -> tuple[bytes, int]:
    """(raw deflate stream, CRC-32) of `n` zero bytes (n a multiple of 16 MiB), made from one compressed 16 MiB
    block repeated: a full flush makes each block independent of the ones before it."""
    chunk = 1 << 24
    assert n % chunk == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    crc, zeros = 0, bytes(chunk)
    for _ in range(n // chunk):
        crc = zlib.crc32(zeros, crc)
    return block * (n // chunk) + comp.flush(zlib.Z_FINISH), crc


def _write_zip(path: Path, entries: list[tuple[str, int, bytes, int, int]], *,
               local_sizes: Optional[dict[str, int]] = None) -> Path:
    """A zip file from (name, method, stored bytes, crc, inflated size) entries, written by hand so the stored
    bytes can be precompressed; `local_sizes` makes a local header declare another inflated size than the
    central directory."""
    out, central = bytearray(), bytearray()
    for name, method, raw, crc, size in entries:
        offset, encoded = len(out), name.encode()
        local_size = (local_sizes or {}).get(name, size)
        out += _struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(raw), local_size,
                            len(encoded), 0) + encoded + raw
        central += _struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(raw),
                                size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = _struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return _write(path, bytes(out + central + end))


def _bomb_entries(inflated_bytes: int) -> list[tuple[str, int, bytes, int, int]]:
    names, data = _torch_zip_entries({"a": torch.zeros(4)})
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    data[pkl] = _declare_numel(data[pkl], 4, inflated_bytes // 4)
    entries = []
    for n in names:
        if n.endswith("/data/0"):
            raw, crc = _zeros_deflated(inflated_bytes)
            entries.append((n, _zipfile.ZIP_DEFLATED, raw, crc, inflated_bytes))
        else:
            entries.append((n, _zipfile.ZIP_STORED, data[n], zlib.crc32(data[n]), len(data[n])))
    return entries


def write_torch_zip_bomb(path: Path, inflated_bytes: int = 1 << 30) -> Path:
    """A `.pt` of about inflated_bytes / 1000 bytes whose one storage entry inflates (deflate) to `inflated_bytes`
    of zeros; its pickle declares the matching element count, so every declared size agrees with every other
    (torch.load inflates it all)."""
    return _write_zip(path, _bomb_entries(inflated_bytes))


def write_torch_zip_lying_local_header(path: Path, inflated_bytes: int = 1 << 28) -> Path:
    """A zip bomb whose central directory declares 16 inflated bytes for the storage (so a check that reads only
    the directory passes it) while its local header and its data say `inflated_bytes`."""
    entries = [(n, m, raw, crc, 16 if n.endswith("/data/0") else size)
               for n, m, raw, crc, size in _bomb_entries(inflated_bytes)]
    storage = next(e[0] for e in entries if e[0].endswith("/data/0"))
    return _write_zip(path, entries, local_sizes={storage: inflated_bytes})


def write_torch_zip_duplicate_entry(path: Path) -> Path:
    """A `.pt` whose storage entry appears twice (a reader may take either: the first small, the second not)."""
    names, data = _torch_zip_entries({"a": torch.zeros(4)})
    with _zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(n, data[n])
        storage = next(n for n in names if n.endswith("/data/0"))
        zf.writestr(storage, bytes(16))
    return Path(path)


def write_torch_stride0(path: Path, numel: int = 100_000_000) -> Path:
    """A `.pt` holding one 16-byte storage shown as a `numel`-element tensor with stride 0 (the first copy of it
    costs numel * 4 bytes)."""
    names, data = _torch_zip_entries({"a": torch.zeros(4)})
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    size_and_stride = data[pkl].replace(b"K\x04\x85", b"J" + _struct.pack("<i", numel) + b"\x85")
    data[pkl] = size_and_stride.replace(b"K\x01\x85", b"K\x00\x85")  # stride (1,) -> (0,)
    with _zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(n, data[n])
    return Path(path)


def write_torch_legacy_huge_storage(path: Path, numel: int = 500_000_000) -> Path:
    """A legacy (pre-zip) `torch.save` file of a few hundred bytes whose one storage declares `numel` float32
    elements (torch allocates a storage of that size before it reads the data)."""
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    head, storage = raw[:-(8 + 16)], raw[-(8 + 16):]  # ... storage keys | int64 numel | 4 float32
    head = _declare_numel(head, 4, numel)
    return _write(path, head + _struct.pack("<q", numel) + storage[8:])


def _write(path: Path, data: bytes) -> Path:
    Path(path).write_bytes(data)
    return Path(path)


def write_raw_safetensors(path: Path, header: Any, data: bytes = b"", *, header_len: Optional[int] = None) -> Path:
    """A safetensors file from a header (a dict, written as JSON, or raw bytes) and a data section, with an
    optional lying header length."""
    if isinstance(header, bytes):
        text = header
    else:  # padded to 8 bytes, as the safetensors writer does
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
    n = len(text) if header_len is None else header_len
    return _write(path, _struct.pack("<Q", n) + text + data)


def write_stylegan_safetensors(path: Path, config: Any, *, info: Any = None,
                               tensors: Optional[TensorMap] = None) -> Path:
    """A StyleGAN Studio `.safetensors` with the given 'config' (a dict, written as JSON, or raw text) and
    'info' metadata, and `tensors` (default: one tiny tensor): the metadata is what is on trial."""
    from safetensors.torch import save_file

    meta = {"format": "stylegan-studio", "format_version": "1",
            "config": config if isinstance(config, str) else json.dumps(config)}
    if info is not None:
        meta["info"] = info if isinstance(info, str) else json.dumps(info)
    save_file(tensors if tensors is not None else {"mapping.w_avg": torch.zeros(4)}, str(path), metadata=meta)
    return Path(path)


def stylegan_config(**changes: Any) -> dict:
    """A valid tiny StyleGAN2 config dict (`GeneratorConfig.to_dict()` layout) with `changes` applied;
    'mapping.x' / 'synthesis.x' keys change the nested settings."""
    cfg: dict = {"arch": "stylegan2", "z_dim": 32, "c_dim": 0, "w_dim": 32, "img_resolution": 16, "img_channels": 3,
                 "mapping": {"num_layers": 2}, "synthesis": {"channel_base": 256, "channel_max": 32}}
    for key, value in changes.items():
        if "." in key:
            part, sub = key.split(".", 1)
            cfg[part][sub] = value
        else:
            cfg[key] = value
    return cfg


def rosinality_state_with_names(extra: dict[str, torch.Tensor]) -> dict:
    """A minimal rosinality checkpoint dict (`{'g_ema': ...}`) whose state holds the mapping/4x4 tensors and
    `extra` (hostile names)."""
    state = {"style.1.weight": torch.zeros(8, 8), "style.1.bias": torch.zeros(8),
             "conv1.conv.weight": torch.zeros(1, 8, 8, 3, 3), "to_rgb1.conv.weight": torch.zeros(1, 3, 8, 1, 1),
             "convs.0.conv.weight": torch.zeros(1, 8, 8, 3, 3), "convs.1.conv.weight": torch.zeros(1, 8, 8, 3, 3)}
    state.update(extra)
    return {"g_ema": state}


def write_nvidia_pickle_with_settings(fx: Fixture, path: Path, *, mapping_num_layers: Any = None,
                                      **kwargs: Any) -> Path:
    """An NVIDIA snapshot of `fx` whose G_ema records other settings: `mapping_num_layers` in the mapping
    network's attributes, and constructor arguments `kwargs` ('synthesis_kwargs.x' for a nested one). The
    weights stay those of `fx`: only the declared settings lie."""
    import copy
    import dataclasses

    record = copy.deepcopy(fx.record)
    g_state = record["G_ema"]["state"]
    init = dict(g_state)["_init_kwargs"]["value"]
    for key, value in kwargs.items():
        outer, _, inner = key.partition(".")
        entry = next((e for e in init if e[0] == outer), None)
        if entry is None:
            init.append([outer, value])
        elif inner:
            nested = entry[1]["value"]
            found = next((e for e in nested if e[0] == inner), None)
            if found is None:
                nested.append([inner, value])
            else:
                found[1] = value
        else:
            entry[1] = value
    if mapping_num_layers is not None:
        mapping = dict(dict(g_state)["_modules"]["value"])["mapping"]
        next(e for e in mapping["state"] if e[0] == "num_layers")[1] = mapping_num_layers
    return write_nvidia_pickle(dataclasses.replace(fx, record=record, derived={}), path, keys=("G_ema",))


# --- issue 13: NVIDIA pickle path (hostile records) ---------------------------------------------------

class Reduce:
    """Pickles as `fn(*args)` (then `__setstate__(state)` when `state` is given): any record a crafted file
    could hold, with real globals."""

    def __init__(self, fn, *args, state: Any = None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def tensor_record(values: torch.Tensor, size, stride, offset: int = 0) -> Reduce:
    """A `torch._utils._rebuild_tensor_v2` record over `values`' real storage with any size/stride/offset."""
    fn, args = values.__reduce_ex__(2)[:2]
    return Reduce(fn, args[0], offset, tuple(size), tuple(stride), *args[4:])


def storage_record_bytes(values: torch.Tensor, *, declared_numel: Optional[int] = None,
                         header_numel: Optional[int] = None) -> bytes:
    """The bytes of a `torch.storage._load_from_bytes` record (a legacy `torch.save` of one storage), with the
    element count its header pickle declares and the count before the data optionally replaced."""
    import struct

    values = values.detach().contiguous().float()
    numel = values.numel() if declared_numel is None else declared_numel

    class _PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel, None) if obj == "STORAGE" else None

    def part(obj) -> bytes:
        buf = io.BytesIO()
        _PidPickler(buf, protocol=2).dump(obj)
        return buf.getvalue()

    raw = values.numpy().tobytes()
    head = part(0x1950A86A20F9469CFC6C) + part(1001) + part({"protocol_version": 1001, "little_endian": True,
                                                               "type_sizes": {"short": 2, "int": 4, "long": 4}})
    return (head + part("STORAGE") + part(["0"])
            + struct.pack("<q", numel if header_numel is None else header_numel) + raw)


def storage_record(data: bytes) -> Reduce:
    return Reduce(torch.storage._load_from_bytes, data)


def numpy_array_record(shape, dtype: str = "float32", raw: bytes = b"\0" * 16,
                       initial_shape=(0,)) -> Reduce:
    """numpy's protocol-2 array record `_reconstruct(ndarray, initial_shape, b'b')` + `__setstate__` with any
    declared shape, dtype and raw bytes."""
    fn = np.ndarray.__reduce__(np.zeros(1))[0]
    return Reduce(fn, np.ndarray, tuple(initial_shape), b"b", state=(1, tuple(shape), np.dtype(dtype), False, raw))


def numpy_frombuffer_record(shape, buf: bytes = b"\0" * 16, dtype: str = "float32") -> Reduce:
    """numpy's protocol-5 array record `_frombuffer(buffer, dtype, shape, order)`."""
    fn = np.zeros(1).__reduce_ex__(5)[0]
    return Reduce(fn, bytes(buf), np.dtype(dtype), tuple(shape), "C")


def long_declared_pickle(opcode: str, declared: int = 4_000_000_000) -> bytes:
    """A few bytes that declare `declared` bytes of data: opcode 'bytes8', 'unicode8', 'bytearray8' or 'frame'."""
    import struct

    code = {"bytes8": b"\x8e", "unicode8": b"\x8d", "bytearray8": b"\x96", "frame": b"\x95"}[opcode]
    tail = b"N." if opcode == "frame" else b"x" * 64  # a frame's content follows; here only None
    return b"\x80\x05" + code + struct.pack("<Q", declared) + tail


def nvidia_objects_with(fx: Fixture, layer: str, group: str, name: str, value: Any, **kwargs) -> dict:
    """`nvidia_objects(fx)` with `G_ema.<layer>` state `group[name]` (group '_buffers', '_parameters',
    '_init_kwargs' or '' for the state itself) replaced by `value`."""
    objects = nvidia_objects(fx, **kwargs)
    record = objects["G_ema"]
    for part in [p for p in layer.split(".") if p]:
        record = record.meta["state"]["_modules"][part]
    state = record.meta["state"]
    if group:
        state[group] = dict(state.get(group) or {}, **{name: value})
    else:
        state[name] = value
    return objects


def deep_module_chain(fx: Fixture, depth: int) -> dict:
    """NVIDIA objects whose G_ema has a chain of `depth` nested sub-modules under `mapping`. The chain is also
    listed first, deepest record first, so each record is pickled before its parent refers to it (a memo
    lookup): the pickler never recurses deeply, while the loaded tree is `depth` levels deep."""
    objects = nvidia_objects(fx)
    source = objects["G_ema"].meta["module_src"]
    chain: list = []
    for i in range(depth):
        state = {"_modules": {"m": chain[-1]} if chain else {}, "_parameters": {}, "_buffers": {}}
        chain.append(PersistentRecord(dict(type="class", version=6, module_src=source, class_name="Generator",
                                           state=state)))
    mapping = objects["G_ema"].meta["state"]["_modules"]["mapping"]
    mapping.meta["state"]["_modules"] = dict(mapping.meta["state"].get("_modules") or {}, deep=chain[-1])
    return {"chain": chain, **objects}


def nested_list_pickle(depth: int) -> bytes:
    """A pickle of a list nested `depth` deep, written opcode by opcode (the pickler itself would recurse)."""
    return b"\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."


def cyclic_module_objects(fx: Fixture) -> dict:
    """NVIDIA objects whose G_ema.synthesis lists G_ema itself as a sub-module (a cycle the pickle's memo
    allows: the modules dict is pickled first, so the back reference is a memo lookup)."""
    objects = nvidia_objects(fx)
    g = objects["G_ema"]
    modules = g.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]
    modules = g.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"] = dict(modules)
    modules["loop"] = g
    return {"prelude": modules, **objects}


def huge_memo_index_pickle(index: int = 100_000_000) -> bytes:
    """12 bytes that store None at memo index `index` (the unpickler would size its memo to 2 * index)."""
    import struct

    return b"\x80\x04N" + b"r" + struct.pack("<I", index) + b"."


# --- issue 13 (probe follow-up): pickles whose structure, not size, is the payload ---------------------------

def write_torch_zip_pickle(path: Path, pickle_bytes: bytes) -> Path:
    """A torch.save zip archive whose data.pkl is `pickle_bytes` (hand-written opcodes)."""
    import zipfile

    names, data = _torch_zip_entries({})
    data[next(n for n in names if n.endswith("/data.pkl"))] = pickle_bytes
    with zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(n, data[n])
    return Path(path)


def deep_long_key_pickle(depth: int, key_len: int, refs: int) -> bytes:
    """{key: {key: ... {key: [leaf] + [leaf] * (refs - 1)}}} nested `depth` deep under one memoised `key_len`-byte
    key: a few KB that a walker building dotted names while it walks turns into depth x key_len bytes per object."""
    import struct as _st

    key = b"k" * key_len
    return (b"\x80\x02}X" + _st.pack("<I", key_len) + key + b"q\x00" + b"}h\x00" * (depth - 1) + b"]}q\x01a("
            + b"h\x01" * (refs - 1) + b"e" + b"s" * depth + b".")


# --- issue 13: restricted unpickler (embedded source bindings, bounded messages) ---

def shared_list_bomb(levels: int = 6, width: int = 10) -> list:
    """A list whose repr is exponential but whose pickle is tiny: one list shared through memo references
    (`dag = [dag] * 10` per level; 6 levels: a few hundred bytes pickled, a 330 MB repr)."""
    dag: Any = ["x" * 300]
    for _ in range(levels):
        dag = [dag] * width
    return dag


def shared_tuple_bomb(levels: int = 9, width: int = 10, leaf: str = "x") -> tuple:
    """A tuple whose hash is exponential but whose pickle is tiny (`t = (t,) * 10` per level: nine levels in
    about 200 bytes; tuples do not cache their hash, so using it as a dict key would take minutes)."""
    bomb: Any = (leaf,)
    for _ in range(levels):
        bomb = (bomb,) * width
    return bomb


def torchscript_archive_with_persistent_id(path: Path, pid: Any) -> Path:
    """A zip shaped like a TorchScript archive whose data.pkl holds one persistent id `pid` (anything)."""
    import pickle
    import zipfile

    class _PidPickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return pid if obj is _marker else None

    _marker = object()
    buf = io.BytesIO()
    _PidPickler(buf, protocol=2).dump({"weight": _marker})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buf.getvalue())
        archive.writestr("archive/version", "3\n")
    return path


# --- issue 15: weight shift files, NaviGAN shift files, StyleGAN-NADA checkpoints ---------------------
# Written the way the pack and the two projects write them (no NaviGAN / NADA code): a shift file is a tagged
# safetensors with string metadata; NaviGAN's save_deformation writes torch.save({'layer_ix': int, 'shift':
# [1, 1, out, in, k, k]}); StyleGAN-NADA's train.py writes torch.save({'g_ema': rosinality state, 'g_optim': ...}).

def shift_metadata(ref: dict, digest: str, **fields: Any) -> dict[str, Any]:
    """The metadata Save Weight Shift writes for a shift of generator `ref` (GeneratorRef.to_dict()) with weights
    digest `digest`; `fields` replace or add entries (None removes one)."""
    meta: dict[str, Any] = {"format": "stylegan-studio-weight-shift", "version": "1", "base": ref,
                            "base_sha256": digest, "w_dim": str(ref["w_dim"]), "source": "sgs", "norm": "raw",
                            "recommended_k": "-3.0,3.0", "layer": "b8.conv1", "prompt": "a face with a big nose",
                            "neutral_prompt": "a face", "clip_model": "ViT-B/32", "loss": "directional",
                            "lambda_clip": "10.0", "lambda_l2": "0.05", "lr": "0.002", "steps": "200", "batch": "2",
                            "k_train": "1.0"}
    meta.update(fields)
    return {k: v for k, v in meta.items() if v is not None}


def write_shift_file(path: Path, tensors: TensorMap, ref: dict, digest: str, **fields: Any) -> Path:
    """A weight shift file holding `tensors` (any dtype, any values) with Save Weight Shift's metadata, `fields`
    replaced."""
    return write_tagged_safetensors(path, tensors, shift_metadata(ref, digest, **fields))


def navigan_shift(shape, scale: float = 60.0, seed: int = 0) -> torch.Tensor:
    """A NaviGAN shift for a rosinality conv weight `[1, out, in, k, k]` (`shape` without the 1): a random
    direction of unit Frobenius norm times `scale`, shaped [1, 1, out, in, k, k] as save_deformation stores it."""
    d = torch.randn([1, 1, *shape], generator=torch.Generator().manual_seed(seed))
    return d / d.norm() * scale


def write_navigan_shift(path: Path, layer_ix: Any, shift: Any, *, legacy_format: bool = False, **extra: Any) -> Path:
    """torch.save({'layer_ix': layer_ix, 'shift': shift, **extra}) (the zip format torch.save writes since torch 1.6,
    or the legacy one)."""
    torch.save({"layer_ix": layer_ix, "shift": shift, **extra}, Path(path),
               _use_new_zipfile_serialization=not legacy_format)
    return Path(path)


def nada_state(fx: Fixture, changes: dict[str, float], seed: int = 3) -> TensorMap:
    """The rosinality fixture's generator state (no latent_avg) with each tensor named in `changes` moved by that
    much times a seeded random tensor: a stand-in for a StyleGAN-NADA fine-tune of it."""
    out = {k: v.clone() for k, v in fx.net.items() if k != "latent_avg"}
    for i, (name, amount) in enumerate(changes.items()):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        out[name] = out[name] + amount * torch.randn(out[name].shape, generator=gen)
    return out


def write_nada_checkpoint(path: Path, g_ema: Any, *, g_optim: bool = True) -> Path:
    """torch.save({'g_ema': g_ema, 'g_optim': an Adam state}) as StyleGAN-NADA's train.py writes its checkpoints."""
    ckpt: dict = {"g_ema": collections.OrderedDict(g_ema) if isinstance(g_ema, dict) else g_ema}
    if g_optim:
        ckpt["g_optim"] = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4),
                                         "exp_avg_sq": torch.zeros(4)}},
                           "param_groups": [{"lr": 0.0016, "betas": (0.0, 0.992), "eps": 1e-8, "weight_decay": 0,
                                             "amsgrad": False, "params": [0]}]}
    torch.save(ckpt, Path(path))
    return Path(path)


class ExecPayload:
    """Pickles as `exec(source)`: source that marks CODE_RAN if a loader ever runs it."""

    def __reduce__(self):
        return (exec, ("import forge; forge.CODE_RAN.append('exec')",))


# --- issue 19: pSp / e4e / ReStyle encoder checkpoints ---------------------------------------------------------

ENCODER_TYPES = {"psp": "GradualStyleEncoder", "e4e": "Encoder4Editing", "restyle_psp": "BackboneEncoder",
                 "restyle_e4e": "ProgressiveBackboneEncoder"}


def encoder_checkpoint(kind: str, encoder_state: TensorMap, latent_avg: torch.Tensor, *,
                       decoder: Optional[TensorMap] = None, size: Optional[int] = None, **opts: Any) -> dict:
    """A checkpoint laid out as the references' coach saves it: {'state_dict': encoder.* (+ decoder.*), 'opts': a
    plain dict, 'latent_avg', 'global_step', 'best_val_loss'} (e4e names the size `stylegan_size`, the others
    `output_size`)."""
    sd = collections.OrderedDict((f"encoder.{k}", v.clone()) for k, v in encoder_state.items())
    if decoder is not None:
        sd.update((f"decoder.{k}", v.clone()) for k, v in decoder.items() if k != "latent_avg")
    o: dict[str, Any] = {"encoder_type": ENCODER_TYPES[kind], "input_nc": 6 if kind.startswith("restyle") else 3,
                         "start_from_latent_avg": True, "learn_in_w": False, "dataset_type": "ffhq_encode",
                         "checkpoint_path": None, "device": "cuda:0", "lr": 0.0001, "id_lambda": 0.1}
    if size is not None:
        o["stylegan_size" if kind == "e4e" else "output_size"] = size
    o.update(opts)
    return {"state_dict": sd, "opts": o, "latent_avg": latent_avg.clone(), "global_step": 300000,
            "best_val_loss": 0.123}
