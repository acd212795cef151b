"""A restricted unpickler for NVIDIA network pickles: it records objects and tensors and executes nothing.

NVIDIA's own loader `exec`s the Python source stored in every network pickle. Here each persistent object
becomes a `PersistentObject` holding its class name, constructor arguments and state; tensors are rebuilt
with `torch.load(weights_only=True)`; every other global must be on a short allow-list of data types.
"""

from __future__ import annotations

import _compat_pickle
import ast
import collections
import io
import pickle
from typing import Any, BinaryIO

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

from ..errors import CheckpointError, UnsafeCheckpointError
from ..files import refused_global


class PersistentObject:
    """Stand-in for an object pickled through `torch_utils.persistence` (a network or a layer)."""

    def __init__(self, meta: dict):
        self.class_name: str = meta["class_name"]
        self.module_src: str = meta["module_src"]
        self.state: dict = meta["state"]

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def modules(self) -> dict:
        return dict(self.state.get("_modules") or {})

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


class TFNetwork:
    """Stand-in for `dnnlib.tflib.network.Network` (TensorFlow-era pickles): keeps its state dict."""

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError("TensorFlow network state is not a dict")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs") or {})

    @property
    def components(self) -> dict:
        return dict(self.state.get("components") or {})

    @property
    def variables(self) -> list:
        return list(self.state.get("variables") or [])


class EasyDict(dict):
    """Stand-in for `dnnlib.EasyDict` (a dict with attribute access; only its items are kept)."""


# --- Embedded-source check -------------------------------------------------------------------------

# Modules a genuine NVIDIA network definition imports at top level.
_ALLOWED_IMPORTS = {"numpy", "torch", "scipy", "torch_utils", "dnnlib", "training", "math", "copy", "typing",
                    "functools", "collections", "re", "warnings", "enum", "dataclasses"}
# Calls that may appear where Python evaluates them at import time (defaults, class bodies).
_ALLOWED_CALLS = {"np.sqrt", "np.float32", "np.float64", "np.array", "np.asarray", "float", "int", "dict", "list",
                  "tuple", "math.sqrt", "dnnlib.EasyDict", "torch.float32"}
_checked_sources: dict[int, str] = {}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _check_expr(node: ast.AST | None) -> ast.AST | None:
    """Return the first node of an import-time expression that could have effects, else None."""
    if node is None or isinstance(node, ast.Lambda):  # a lambda's body does not run at definition
        return None
    if isinstance(node, ast.Call):
        if _dotted(node.func) not in _ALLOWED_CALLS:
            return node
    elif isinstance(node, (ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom, ast.ListComp, ast.SetComp,
                           ast.DictComp, ast.GeneratorExp)):
        return node
    for child in ast.iter_child_nodes(node):
        bad = _check_expr(child)
        if bad is not None:
            return bad
    return None


def _check_function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST | None:
    for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
        if isinstance(expr, ast.Call) or _check_expr(expr) is not None:
            return expr
    return None


def _check_statements(body: list[ast.stmt]) -> ast.AST | None:
    """Walk statements that run when the module is imported (module and class bodies)."""
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in stmt.names] if isinstance(stmt, ast.Import) else [stmt.module or ""]
            if stmt.__class__ is ast.ImportFrom and stmt.level > 0:
                continue  # relative import of the package's own modules
            if any(name.split(".")[0] not in _ALLOWED_IMPORTS for name in names):
                return stmt
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bad = _check_function(stmt)
            if bad is not None:
                return bad
        elif isinstance(stmt, ast.ClassDef):
            for expr in [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords)]:
                if isinstance(expr, ast.Call) or _check_expr(expr) is not None:
                    return expr
            bad = _check_statements(stmt.body)
            if bad is not None:
                return bad
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            bad = _check_expr(stmt.value)
            if bad is not None:
                return bad
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring
        elif isinstance(stmt, ast.Pass):
            continue
        else:
            return stmt
    return None


def check_embedded_source(source: str, class_name: str) -> None:
    """Refuse network source that would do anything but define classes and functions when imported.

    The source is never executed here; a genuine NVIDIA checkpoint's source only imports
    numpy/torch/NVIDIA's helpers and defines classes, so anything else marks a crafted file.
    """
    key = hash(source)
    if _checked_sources.get(key) == source:
        return
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as e:
        raise UnsafeCheckpointError(f"the network source embedded in the pickle does not parse ({e})") from e
    bad = _check_statements(tree.body)
    if bad is not None:
        snippet = ast.get_source_segment(source, bad) or type(bad).__name__
        snippet = " ".join(snippet.split())[:120]
        raise UnsafeCheckpointError(
            f"the network code embedded in this pickle would run `{snippet}` (line {getattr(bad, 'lineno', '?')}) "
            f"when NVIDIA's loader imports it; a genuine StyleGAN checkpoint never contains such code. "
            f"Nothing from the file was executed. Use a checkpoint from a source you trust, or ask its author "
            f"for a .safetensors export")
    defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    if class_name not in defined:
        raise UnsafeCheckpointError(
            f"the pickle claims an object of class {class_name!r}, but its embedded source defines "
            f"{sorted(defined) or 'no classes'}; the file is corrupt or crafted")
    _checked_sources[key] = source


# --- The unpickler -----------------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise UnsafeCheckpointError("malformed persistent object record in the pickle")
    if not isinstance(meta.get("class_name"), str) or not isinstance(meta.get("module_src"), str):
        raise UnsafeCheckpointError("persistent object record without class name or source")
    check_embedded_source(meta["module_src"], meta["class_name"])
    return PersistentObject(meta)


def _load_storage(data: bytes):
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpointError("tensor storage record is not bytes")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        refused = refused_global(e)
        if refused is None:
            raise  # malformed bytes: reported as a corrupt file by the caller
        raise UnsafeCheckpointError(
            f"a tensor storage record in the pickle holds Python objects, not tensor data ({refused}); "
            f"nothing from the file was executed") from e


def rebuild_tensor(storage, offset, size, stride, *, hooks=None, where: str = "the pickle") -> torch.Tensor:
    """The tensor a pickled tensor record (`torch._utils._rebuild_tensor_v2`'s arguments) describes, as a view
    of `storage`, after checking the record: no autograd hooks (they would run on backward), a real storage (one
    `torch.load` returned, or a tensor read from an archive) and a size/stride/offset inside it.

    Shared by both restricted unpicklers (NVIDIA network pickles here, TorchScript archives in
    `core.losses.nvidia_vgg16`).

    Raises:
        UnsafeCheckpointError: hooks, or a record not backed by a storage.
        CheckpointError: the record does not fit its storage (a damaged file).
    """
    if hooks:  # genuine checkpoints never carry autograd hooks; they would be called on backward
        raise UnsafeCheckpointError(f"a tensor in {where} carries autograd hooks")
    if isinstance(storage, torch.storage.TypedStorage):
        flat = torch.empty(0, dtype=storage.dtype).set_(storage)
    elif isinstance(storage, torch.storage.UntypedStorage):
        flat = torch.empty(0, dtype=torch.uint8).set_(storage)
    elif isinstance(storage, torch.Tensor):  # as_strided addresses the tensor's whole storage
        flat = storage
    else:
        raise UnsafeCheckpointError(f"a tensor in {where} is not backed by one of its storages")
    try:
        return flat.as_strided(tuple(int(n) for n in size), tuple(int(n) for n in stride), int(offset))
    except (RuntimeError, TypeError, ValueError, OverflowError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"a tensor in {where} does not fit its storage ({why}); the file is damaged") from e


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    t = rebuild_tensor(storage, storage_offset, size, stride, hooks=backward_hooks)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, torch.Tensor):
        raise UnsafeCheckpointError("parameter record without a tensor")
    if backward_hooks:  # as in rebuild_tensor
        raise UnsafeCheckpointError("a tensor in the pickle carries autograd hooks")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafeCheckpointError("numpy array record of an unexpected type")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_frombuffer(buf, dtype, shape, order, axis_order=None):
    """Protocol-5 pickles store numpy arrays as `numpy._core.numeric._frombuffer(buffer, dtype, shape, order)`."""
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpointError("numpy array record of an unexpected type")
    array = np.frombuffer(buf, dtype=dtype)
    if order == "K" and axis_order is not None:
        return array.reshape(shape, order="C").transpose(axis_order)
    return array.reshape(shape, order=order)


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """Protocol-2 pickles store bytes as `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise UnsafeCheckpointError("malformed bytes record in the pickle")
    return text.encode(encoding, errors)


_TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool")}

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("_codecs", "encode"): _codecs_encode,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    **{("torch", name): dtype for name, dtype in _TORCH_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals above and refuses everything else."""

    def find_class(self, module: str, name: str):
        # Protocol 0-2 pickles written by Python 3 use Python 2 module names (`__builtin__.set`); map them
        # back as the standard unpickler does, then apply the allow-list.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise UnsafeCheckpointError(
                f"the pickle asks for `{module}.{name}`, which a StyleGAN checkpoint never needs; refusing to "
                f"load it (nothing from the file was executed)")
        return target

    def persistent_load(self, pid):
        raise UnsafeCheckpointError("the pickle uses persistent ids; it is not a plain network pickle")


def restricted_load(f: BinaryIO) -> Any:
    """Unpickle `f` with `RestrictedUnpickler`."""
    return RestrictedUnpickler(f).load()
