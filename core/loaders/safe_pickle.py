"""A restricted unpickler for NVIDIA network pickles: it records objects and tensors and executes nothing.

NVIDIA's own loader `exec`s the Python source stored in every network pickle. Here each persistent object
becomes a `PersistentObject` holding its class name, constructor arguments and state (its embedded source is
checked against an allow-list of inert constructs, never run); storage records are parsed here and tensors
rebuilt through one checked path (`rebuild_tensor`); numpy records are checked before numpy allocates; every
other global must be on a short allow-list of data types. Sizes the file declares (opcode lengths, memo
indices, storage element counts, tensor and array shapes) are checked against the bytes it holds before
anything is allocated. Values a file can share through memo references are never repr'd or hashed
whole: error messages describe them within a bound (`describe`), and tuples are bounded in expanded size.
"""

from __future__ import annotations

import _compat_pickle
import ast
import collections
import io
import math
import pickle
import pickletools
import struct
from typing import Any, BinaryIO

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

from ..errors import CheckpointError, UnsafeCheckpointError
from ..files import describe, describe_error


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
        name = self.state.get("name", "")
        return name if isinstance(name, str) else ""

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
# An allow-list of inert constructs, derived from NVIDIA's own network modules (stylegan2-ada-pytorch
# training/networks.py and augment.py; stylegan3 training/networks_stylegan2.py, networks_stylegan3.py and
# augment.py): at import time they only import, define functions and classes, and bind literal tables.
# Function and method bodies are not checked, because importing a module does not run them.

# Modules a genuine NVIDIA network definition imports at top level (absolute imports only: NVIDIA's modules
# import their helpers as `from torch_utils import misc`; a relative import resolves against `__package__`,
# which the source could set).
_ALLOWED_IMPORTS = {"numpy", "torch", "scipy", "torch_utils", "dnnlib", "training", "math", "copy", "typing",
                    "functools", "collections", "re", "warnings", "enum", "dataclasses"}
# Decorators NVIDIA's modules use (plain dotted names, at most one per definition: a decorator is called when
# the module is imported).
_ALLOWED_FUNCTION_DECORATORS = {"staticmethod", "classmethod", "property", "misc.profiled_function",
                                "torch.jit.ignore", "torch.jit.unused"}
_ALLOWED_CLASS_DECORATORS = {"persistence.persistent_class"}
# Calls that may appear in a module-level constant, with constant arguments.
_ALLOWED_CALLS = {"np.sqrt", "np.float32", "np.float64", "np.array", "np.asarray", "float", "int", "dict", "list",
                  "tuple", "math.sqrt", "dnnlib.EasyDict"}
_KEYWORD_CALLS = {"dict", "dnnlib.EasyDict"}
# Library bases a network class may have (besides classes the source itself defines).
_ALLOWED_BASES = {"torch.nn.Module", "torch.nn.ModuleList", "torch.nn.ModuleDict", "torch.nn.Sequential",
                  "torch.autograd.Function", "nn.Module", "object"}
# The module that the first name of each allowed dotted decorator, call or base must be imported from, and
# nothing else may bind: `class misc:` or `import math as misc` would turn `@misc.profiled_function` into the
# file's own code.
_EXPECTED_ROOTS = {"misc": "torch_utils.misc", "persistence": "torch_utils.persistence", "np": "numpy",
                   "torch": "torch", "nn": "torch.nn", "math": "math", "dnnlib": "dnnlib"}
# Methods Python calls while a class statement runs, or when a later class statement subclasses it.
_CLASS_CREATION_HOOKS = {"__init_subclass__", "__set_name__", "__class_getitem__", "__prepare__", "__mro_entries__",
                         "__instancecheck__", "__subclasscheck__"}
_MAX_POWER = 64  # `2 ** 0.3` is a constant; `10 ** 10 ** 9` would hang the import
_checked_sources: dict[int, str] = {}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return "?" if inner == "?" else f"{inner}.{node.attr}"
    return "?"


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_constant(node: ast.AST | None) -> bool:
    """Whether `node` is a constant built without looking up any name: literals, containers of them, signs
    and bounded arithmetic on numbers."""
    if isinstance(node, ast.Constant):
        return not isinstance(node.value, (bytes, str)) or len(node.value) <= 100_000
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_constant(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return None not in node.keys and all(_is_constant(e) for e in [*node.keys, *node.values])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
        numbers = all(isinstance(v, ast.Constant) and type(v.value) in (int, float) or
                      isinstance(v, ast.UnaryOp) and _is_constant(v) for v in (node.left, node.right))
        if isinstance(node.op, ast.Pow):
            exponent = node.right.value if isinstance(node.right, ast.Constant) else None
            return numbers and isinstance(exponent, (int, float)) and abs(exponent) <= _MAX_POWER
        return numbers
    return False


class _SourceChecker:
    """The allow-list of inert constructs, with every name the module binds while it is imported.

    Why bindings matter: `float = evil` or `class misc:` earlier in the file turns an allowed `float(1)` or
    `@misc.profiled_function` into a call of the file's own code. So an allowed call, decorator or library
    base must start with a name nothing in the source binds (a builtin), or one bound only by the expected
    import; and attribute access or subscripts may not start from a name the source defines (a class
    attribute can be a descriptor whose `__get__` runs code). Bindings are collected over the module and
    class bodies (which run at import) with every construct; function bodies run only when called, which
    nothing at import can do, except for `global` declarations there, which are counted as module bindings.
    """

    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.bound: dict[str, list[str]] = {}  # name -> "import:<module>", "class" or "other", per binding
        self._collect(tree.body)

    def first_unsafe(self) -> ast.AST | None:
        """The first statement (or part of one) that is not inert, else None."""
        return self._statements(self.tree.body)

    def _bind(self, name: str, kind: str) -> None:
        self.bound.setdefault(name, []).append(kind)

    def _collect(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    root = alias.name.split(".")[0]
                    self._bind(alias.asname or root, f"import:{alias.name if alias.asname else root}")
            elif isinstance(stmt, ast.ImportFrom):
                for alias in stmt.names:
                    module = "." * stmt.level + (stmt.module or "")
                    self._bind(alias.asname or alias.name, f"import:{module}.{alias.name}")
            elif isinstance(stmt, ast.ClassDef):
                self._bind(stmt.name, "class")
                self._collect_expressions([*stmt.decorator_list, *stmt.bases, *stmt.keywords])
                self._collect(stmt.body)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._bind(stmt.name, "other")
                args = stmt.args
                self._collect_expressions([*stmt.decorator_list, *args.defaults, *args.kw_defaults, stmt.returns,
                                           *(a.annotation for a in [*args.posonlyargs, *args.args,
                                                                    *args.kwonlyargs, args.vararg, args.kwarg] if a)])
                for node in ast.walk(stmt):  # `global x` in a body rebinds the module's x when it runs
                    if isinstance(node, ast.Global):
                        for name in node.names:
                            self._bind(name, "other")
            else:
                self._collect_expressions([stmt])

    def _collect_expressions(self, nodes: list) -> None:
        """Every name any construct inside `nodes` binds (over-approximated: comprehension and lambda
        variables count too)."""
        for top in nodes:
            for node in ast.walk(top) if top is not None else ():
                if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                    self._bind(node.id, "other")
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self._bind(node.name, "other")
                elif isinstance(node, ast.alias):
                    self._bind(node.asname or node.name.split(".")[0], "other")
                elif isinstance(node, (ast.Global, ast.Nonlocal)):
                    for name in node.names:
                        self._bind(name, "other")
                elif isinstance(node, ast.ExceptHandler) and node.name:
                    self._bind(node.name, "other")
                elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                    self._bind(node.name, "other")
                elif isinstance(node, ast.MatchMapping) and node.rest:
                    self._bind(node.rest, "other")

    # --- names ---

    def _trusted_name(self, dotted: str) -> bool:
        """Whether an allowed decorator, call or base name (from the allow-lists) means what it says: a plain
        name nothing in the source binds (a builtin), or a dotted name whose first name is bound only by the
        import of its expected module."""
        if dotted == "?":
            return False
        root = dotted.split(".")[0]
        kinds = self.bound.get(root)
        if "." not in dotted:
            return kinds is None
        expected = _EXPECTED_ROOTS.get(root)
        return expected is not None and kinds is not None and all(k == f"import:{expected}" for k in kinds)

    def _inert_reference(self, node: ast.AST) -> bool:
        """A name or dotted name whose evaluation runs none of the file's code: a plain name (a dict lookup),
        or attributes of a builtin or of an imported module (never of something the source defines, never a
        dunder attribute)."""
        dotted = _dotted(node)
        if dotted == "?":
            return False
        parts = dotted.split(".")
        if len(parts) == 1:
            return True
        if any(p.startswith("__") for p in parts[1:]):
            return False
        kinds = self.bound.get(parts[0])
        return kinds is None or all(k.startswith("import:") for k in kinds)

    def _literal(self, node: ast.AST | None, *, calls: bool = False) -> bool:
        """Whether evaluating `node` only builds a value: constants, containers, names and inert dotted
        names, and (where `calls`) an allowed call with constant arguments. No lambdas, comprehensions,
        f-strings, walrus, subscripts or other calls."""
        if node is None or _is_constant(node):
            return True
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self._inert_reference(node) and not _dotted(node).split(".")[-1].startswith("__")
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return all(self._literal(e, calls=calls) for e in node.elts)
        if isinstance(node, ast.Dict):
            return None not in node.keys and all(self._literal(e, calls=calls) for e in [*node.keys, *node.values])
        if calls and isinstance(node, ast.Call):
            name = _dotted(node.func)
            return (name in _ALLOWED_CALLS and self._trusted_name(name) and all(_is_constant(a) for a in node.args)
                    and (not node.keywords or name in _KEYWORD_CALLS)
                    and all(k.arg is not None and _is_constant(k.value) for k in node.keywords))
        return False

    def _annotation(self, node: ast.AST | None) -> bool:
        """Annotations are evaluated at definition: names, inert dotted names, text, None, `X[...]` of those
        where X is a builtin or imported (subscripting the file's own object would call its methods)."""
        if node is None or isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str)):
            return True
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self._inert_reference(node)
        if isinstance(node, ast.Subscript):
            root = _dotted(node.value).split(".")[0]
            kinds = self.bound.get(root, [])
            return (self._annotation(node.value) and all(k.startswith("import:") for k in kinds)
                    and self._annotation(node.slice))
        if isinstance(node, ast.Tuple):
            return all(self._annotation(e) for e in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # `int | None`
            return self._annotation(node.left) and self._annotation(node.right)
        return False

    # --- statements ---

    def _decorators(self, decorators: list[ast.expr], allowed: set[str]) -> ast.AST | None:
        if len(decorators) > 1:  # stacked descriptors (`@classmethod @property`) call their function on access
            return decorators[1]
        for deco in decorators:
            if _dotted(deco) not in allowed or not self._trusted_name(_dotted(deco)):
                return deco
        return None

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> ast.AST | None:
        """The first part of a `def` statement evaluated at definition time that is not inert, else None."""
        if in_class and node.name in _CLASS_CREATION_HOOKS or not in_class and _is_dunder(node.name):
            return node
        if getattr(node, "type_params", None):  # Python 3.12 `def f[T: bound]()`
            return node
        bad = self._decorators(node.decorator_list, _ALLOWED_FUNCTION_DECORATORS)
        if bad is not None:
            return bad
        args = node.args
        for expr in [*args.defaults, *args.kw_defaults]:
            if not self._literal(expr):
                return expr
        every_arg = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        for annotation in [*(a.annotation for a in every_arg if a is not None), node.returns]:
            if not self._annotation(annotation):
                return annotation
        return None

    def _class(self, node: ast.ClassDef) -> ast.AST | None:
        if _is_dunder(node.name) or getattr(node, "type_params", None):
            return node
        bad = self._decorators(node.decorator_list, _ALLOWED_CLASS_DECORATORS)
        if bad is not None:
            return bad
        if node.keywords:  # metaclass=..., or keywords handed to a base's __init_subclass__
            return node.keywords[0].value
        for base in node.bases:
            name = _dotted(base)
            own_class = isinstance(base, ast.Name) and set(self.bound.get(name, [])) == {"class"}
            if not own_class and not (name in _ALLOWED_BASES and self._trusted_name(name)):
                return base
        return self._statements(node.body, in_class=True)

    def _assignment(self, stmt: ast.Assign | ast.AnnAssign) -> ast.AST | None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        for target in targets:
            names = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
            for name in names:
                # `x.attr = ...` / `x[i] = ...` call __setattr__ / __setitem__; a dunder (`__package__`,
                # `__name__`, `__class__`, `__builtins__`, ...) changes how Python treats the module or class
                if not isinstance(name, ast.Name) or _is_dunder(name.id):
                    return target
        if isinstance(stmt, ast.AnnAssign) and not self._annotation(stmt.annotation):
            return stmt.annotation
        return None if self._literal(stmt.value, calls=True) else stmt.value

    def _import(self, stmt: ast.Import | ast.ImportFrom, in_class: bool) -> ast.AST | None:
        if in_class or any(alias.name == "*" for alias in stmt.names):
            return stmt
        if isinstance(stmt, ast.ImportFrom) and stmt.level > 0:
            return stmt  # relative: resolved against __package__/__name__; NVIDIA's modules never use one
        names = [alias.name for alias in stmt.names] if isinstance(stmt, ast.Import) else [stmt.module or ""]
        if any(name.split(".")[0] not in _ALLOWED_IMPORTS for name in names):
            return stmt
        if any(_is_dunder(alias.asname or alias.name.split(".")[0]) for alias in stmt.names):
            return stmt
        return None

    def _statements(self, body: list[ast.stmt], in_class: bool = False) -> ast.AST | None:
        """The first statement (or part of one) in a module or class body that is not on the inert
        allow-list: docstrings, imports of `_ALLOWED_IMPORTS` (absolute, no `*`), `pass`, function definitions
        (see `_function`), classes with allowed bases and decorators and no keywords, and assignments of
        literals to plain, non-dunder names. Nothing else (`if`, `try`, `for`, `with`, `del`, `global`,
        expressions, ...) runs in a genuine module's body."""
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                bad = self._import(stmt, in_class)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bad = self._function(stmt, in_class)
            elif isinstance(stmt, ast.ClassDef):
                bad = self._class(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                bad = self._assignment(stmt)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and \
                    isinstance(stmt.value.value, str) or isinstance(stmt, ast.Pass):
                bad = None  # docstring, pass
            else:
                bad = stmt
            if bad is not None:
                return bad
        return None


def check_embedded_source(source: str, class_name: str) -> None:
    """Refuse network source that would do anything but define classes and functions when imported.

    The source is never executed here; a genuine NVIDIA checkpoint's source only imports numpy/torch/NVIDIA's
    helpers, defines classes and functions and binds literal tables, so anything outside that allow-list
    (`_SourceChecker`) marks a crafted file.
    """
    key = hash(source)
    if _checked_sources.get(key) == source:
        return
    try:
        tree = ast.parse(source.removeprefix("\ufeff"))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise UnsafeCheckpointError(f"the network source embedded in the pickle does not parse "
                                    f"({describe_error(e)})") from e
    try:
        bad = _SourceChecker(tree).first_unsafe()
    except RecursionError as e:  # expressions nested thousands deep: no genuine source looks like that
        raise UnsafeCheckpointError("the network source embedded in the pickle nests expressions thousands deep; "
                                    "a genuine StyleGAN checkpoint never does. Nothing from the file was "
                                    "executed") from e
    if bad is not None:
        try:
            snippet = ast.get_source_segment(source.removeprefix("\ufeff"), bad) or type(bad).__name__
        except (RecursionError, ValueError):
            snippet = type(bad).__name__
        snippet = " ".join(snippet.split())[:120]
        raise UnsafeCheckpointError(
            f"the network code embedded in this pickle would run `{snippet}` (line {getattr(bad, 'lineno', '?')}) "
            f"when NVIDIA's loader imports it; a genuine StyleGAN checkpoint never contains such code. "
            f"Nothing from the file was executed. Use a checkpoint from a source you trust, or ask its author "
            f"for a .safetensors export")
    defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    if class_name not in defined:
        raise UnsafeCheckpointError(
            f"the pickle claims an object of class {describe(class_name)}, but its embedded source defines "
            f"{describe(sorted(defined)) if defined else 'no classes'}; the file is corrupt or crafted")
    _checked_sources[key] = source


# --- The unpickler -----------------------------------------------------------------------------------

# A genuine record's fields (the persistent-object state NVIDIA's `torch_utils.persistence` writes) and the
# container types they hold; anything else is a damaged or crafted file.
_STATE_DICT_FIELDS = ("_init_kwargs", "_modules", "_parameters", "_buffers")
_STATE_SEQUENCE_FIELDS = ("_init_args", "_non_persistent_buffers_set")


def _check_record_state(class_name: str, state: dict) -> None:
    """Refuse a persistent-object state whose standard fields have the wrong container type (CheckpointError
    naming the class and the field), so readers can rely on dicts of str keys and sequences."""
    for name in _STATE_DICT_FIELDS:
        value = state.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise CheckpointError(f"the {class_name[:100]} record's {name} is a {type(value).__name__}, expected a "
                                  f"dict; the file is damaged or crafted")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise CheckpointError(f"the {class_name[:100]} record's {name} has a non-text key {describe(bad[0])}; "
                                  f"the file is damaged or crafted")
    for name in _STATE_SEQUENCE_FIELDS:
        value = state.get(name)
        if value is not None and not isinstance(value, (tuple, list, set, frozenset)):
            raise CheckpointError(f"the {class_name[:100]} record's {name} is a {type(value).__name__}, expected a "
                                  f"tuple, list or set; the file is damaged or crafted")


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafeCheckpointError(f"malformed persistent object record in the pickle ({type(meta).__name__} "
                                    f"{describe(meta, 60)}, expected a dict with type 'class')")
    for field, kind in (("class_name", str), ("module_src", str), ("state", dict)):
        if not isinstance(meta.get(field), kind):
            raise CheckpointError(f"a persistent object record in the pickle has a {field} of type "
                                  f"{type(meta.get(field)).__name__}, expected a {kind.__name__}; the file is "
                                  f"damaged or crafted")
    check_embedded_source(meta["module_src"], meta["class_name"])
    _check_record_state(meta["class_name"], meta["state"])
    return PersistentObject(meta)


# --- Declared lengths --------------------------------------------------------------------------------

class _BoundedReader:
    """Read-only view of a binary file that never returns (or asks the OS for) more than the bytes left in it,
    so a declared length larger than the file cannot size a buffer."""

    def __init__(self, f: BinaryIO, end: int):
        self.f, self.end = f, end

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.end - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        left = max(0, self.end - self.f.tell())
        return self.f.readline(left if limit is None or limit < 0 else min(limit, left))


def check_declared_lengths(f: BinaryIO, where: str = "the pickle") -> None:
    """Walk the opcodes of the pickle that starts at `f`'s position, without building anything, and refuse
    one whose declared byte counts (BINBYTES8, BINUNICODE8, BYTEARRAY8, FRAME, ...) exceed the bytes left in
    the file; then rewind `f`.

    Why: Python's unpickler allocates a buffer of the declared size before it reads, so a few bytes declaring
    a 4 GB string would reserve 4 GB; and it sizes its memo table by the largest index stored, so memo
    indices must count up as a pickler writes them. `pickletools.genops` reads through `_BoundedReader` and only ever
    holds one opcode's argument, which is at most the file's size.

    Raises:
        CheckpointError: a declared length runs past the end of the file, or the opcodes are malformed.
    """
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    memo = 0  # memo slots a pickler would have numbered so far
    try:
        for opcode, arg, _pos in pickletools.genops(_BoundedReader(f, end)):
            # genops reads every declared argument through the bounded reader; a FRAME only announces the
            # length of what follows, which the unpickler would then read in one piece.
            if opcode.name == "FRAME" and arg > end - f.tell():
                raise ValueError(f"a frame of {arg} bytes, but only {end - f.tell()} remain")
            # The unpickler sizes (and zero-fills) its memo table to twice the largest index stored: a 12-byte
            # pickle storing at index 10**8 costs 1.5 GB. Picklers number memo entries 0, 1, 2, ...
            if opcode.name == "MEMOIZE":
                memo += 1
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not isinstance(arg, int) or not 0 <= arg <= memo:
                    raise ValueError(f"memo index {arg} where a pickler would write at most {memo}")
                memo = max(memo, arg + 1)
    except (ValueError, EOFError) as e:  # genops: "expected N bytes in a bytes8, but only M remain", bad opcode
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CheckpointError(f"{where} is truncated or corrupt: it declares more data than it holds, or a "
                              f"malformed opcode ({reason}); nothing was allocated for it. Download the file "
                              f"again") from e
    finally:
        f.seek(start)


# --- Tensor records ----------------------------------------------------------------------------------

# A broadcast (stride-0) or overlapping view may show more values than its storage holds only up to this
# many: NVIDIA stores every buffer (noise, filters, transforms) as a real storage, so a genuine checkpoint
# never needs more, and a larger one would turn a few stored bytes into gigabytes once copied.
MAX_BROADCAST_NUMEL = 4096
_MAX_DIMS = 16
_MAX_INDEX = 1 << 48  # no real size, stride or offset comes near this; it keeps the products below exact


def _int_tuple(values: Any, field: str, where: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)):
        raise CheckpointError(f"a tensor in {where} does not fit its storage: its {field} is a "
                              f"{type(values).__name__}, expected a tuple of integers; the file is damaged or crafted")
    if len(values) > _MAX_DIMS:
        raise CheckpointError(f"a tensor in {where} does not fit its storage: it has {len(values)} "
                              f"dimensions (at most {_MAX_DIMS}); the file is damaged or crafted")
    for v in values:
        if type(v) is not int or not 0 <= v < _MAX_INDEX:  # noqa: E721 - bool and numpy ints are not record ints
            raise CheckpointError(f"a tensor in {where} does not fit its storage: its {field} is "
                                  f"{describe(values)}, expected non-negative integers below 2**48; the file is "
                                  f"damaged or crafted")
    return tuple(values)


def _flat_storage(storage: Any, where: str) -> torch.Tensor:
    """A tensor over the whole of `storage` (one `_load_storage` returned, or a torch storage)."""
    if isinstance(storage, torch.storage.TypedStorage):
        return torch.empty(0, dtype=storage.dtype).set_(storage)
    if isinstance(storage, torch.storage.UntypedStorage):
        return torch.empty(0, dtype=torch.uint8).set_(storage)
    if isinstance(storage, torch.Tensor):  # as_strided addresses the tensor's whole storage
        return storage.detach()
    raise UnsafeCheckpointError(f"a tensor in {where} is not backed by one of its storages")


def rebuild_tensor(storage, offset, size, stride, *, hooks=None, where: str = "the pickle") -> torch.Tensor:
    """The tensor a pickled tensor record (`torch._utils._rebuild_tensor_v2`'s arguments) describes, as a view
    of `storage`, after checking the record against the storage: no autograd hooks (they would run on
    backward); a real storage (one `_load_storage` returned, or a tensor read from an archive); size, stride
    and offset non-negative integers; the last element inside the storage's bytes (torch would otherwise grow
    the storage silently, and uninitialised memory would become weights); and no view showing more values than
    its storage holds (stride 0 or overlapping strides) unless it is tiny (`MAX_BROADCAST_NUMEL`).

    This is the one "tensor record -> tensor" path: both restricted unpicklers (NVIDIA network pickles here,
    TorchScript archives in `core.losses.nvidia_vgg16`) use it.

    Raises:
        UnsafeCheckpointError: hooks, or a record not backed by a storage.
        CheckpointError: the record does not fit its storage (a damaged or crafted file).
    """
    if hooks:  # genuine checkpoints never carry autograd hooks; they would be called on backward
        raise UnsafeCheckpointError(f"a tensor in {where} carries autograd hooks")
    flat = _flat_storage(storage, where)
    size = _int_tuple(size, "size", where)
    stride = _int_tuple(stride, "stride", where)
    if type(offset) is not int or not 0 <= offset < _MAX_INDEX:  # noqa: E721
        raise CheckpointError(f"a tensor in {where} does not fit its storage: its storage offset is "
                              f"{describe(offset)}, expected a non-negative integer; the file is damaged or crafted")
    if len(size) != len(stride):
        raise CheckpointError(f"a tensor in {where} does not fit its storage: size {list(size)} but stride "
                              f"{list(stride)} (their lengths differ); the file is damaged or crafted")
    itemsize = flat.element_size()
    capacity = flat.untyped_storage().nbytes() // itemsize
    numel = math.prod(size)
    record = (f"size {list(size)}, stride {list(stride)}, offset {offset}; its storage holds {capacity} "
              f"{str(flat.dtype).replace('torch.', '')} values")
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= capacity:
            raise CheckpointError(f"a tensor in {where} does not fit its storage ({record}): it reaches value "
                                  f"{last}, past the storage's end; the file is damaged or crafted (a tensor must "
                                  f"lie inside the data the file holds)")
        if numel > MAX_BROADCAST_NUMEL and (numel > capacity or any(s == 0 and n > 1 for n, s in zip(size, stride))):
            raise CheckpointError(f"a tensor in {where} ({record}) repeats stored values to show {numel} values "
                                  f"(stride 0 or overlapping strides); a checkpoint stores every weight, so the "
                                  f"file is crafted or damaged. Refused before anything was expanded")
    elif offset > capacity:
        raise CheckpointError(f"a tensor in {where} does not fit its storage ({record}): it starts past the "
                              f"storage's end; the file is damaged or crafted")
    return flat.as_strided(size, stride, offset)


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


# --- Object construction opcodes --------------------------------------------------------------------

class GuardedUnpickler(pickle._Unpickler):
    """Python's unpickler with the two opcodes that act on an already-built object restricted to the types
    that need them: BUILD (`inst.__setstate__(state)`) only on `BUILD_TARGETS`, NEWOBJ (`cls.__new__(cls)`,
    which skips the checks in `__init__`) only for `NEW_TARGETS`.

    Why: BUILD on a tensor calls `Tensor.__setstate__`, i.e. `tensor.set_(storage, offset, size, stride)`,
    which would bypass `rebuild_tensor`'s checks (a stride-0 view of any size); BUILD on a record object
    would overwrite fields after they were checked. The pure-Python implementation is used because the C
    one's opcodes cannot be overridden; `check_declared_lengths` runs first either way.
    """

    BUILD_TARGETS: tuple[type, ...] = ()
    NEW_TARGETS: tuple[type, ...] = ()
    # Hashing a tuple hashes every element, again each time (tuples do not cache their hash), so a tuple that
    # shares one inner tuple through memo references (`t = (t,) * 10`, nine levels in 200 bytes) would take
    # minutes to use as a dict key. Each tuple's expanded size is bounded, and so is the total over every
    # tuple the file builds or fetches again from the memo; genuine checkpoints hold small tuples (sizes,
    # strides, arguments), far below both.
    MAX_TUPLE_WEIGHT = 1 << 16
    MAX_TUPLE_WORK = 10_000_000
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, *, max_bytes: int):
        super().__init__(file)
        self.max_bytes = max_bytes  # no argument can be longer than the data holds
        self._tuple_weights: dict[int, tuple[int, tuple]] = {}  # id -> (expanded size, the tuple, kept alive)
        self._tuple_work = 0

    def _weight(self, value: Any) -> int:
        if not isinstance(value, tuple):
            return 1
        known = self._tuple_weights.get(id(value))
        return known[0] if known is not None and known[1] is value else 1 + len(value)

    def _charge(self, weight: int) -> None:
        self._tuple_work += weight
        if self._tuple_work > self.MAX_TUPLE_WORK:
            raise CheckpointError(f"the pickle uses tuples of {self._tuple_work} elements in all, counting each "
                                  f"reuse (at most {self.MAX_TUPLE_WORK}); hashing them would take minutes, and a "
                                  f"genuine checkpoint holds small tuples. The file is crafted")

    def _weigh_new_tuple(self) -> None:
        """Record the expanded size of the tuple just pushed, refusing one past `MAX_TUPLE_WEIGHT`."""
        value = self.stack[-1]
        weight = 1 + sum(self._weight(v) for v in value)
        if weight > self.MAX_TUPLE_WEIGHT:
            raise CheckpointError(f"the pickle builds a tuple of {weight} elements counting the nested tuples it "
                                  f"shares (at most {self.MAX_TUPLE_WEIGHT}); hashing it would take time "
                                  f"exponential in the file's size, and a genuine checkpoint holds small tuples. "
                                  f"The file is crafted")
        self._tuple_weights[id(value)] = (weight, value)
        self._charge(weight)

    def _charge_top(self) -> None:
        if isinstance(self.stack[-1], tuple):
            self._charge(self._weight(self.stack[-1]))

    def load_tuple(self):
        super().load_tuple()
        self._weigh_new_tuple()

    def load_tuple1(self):
        super().load_tuple1()
        self._weigh_new_tuple()

    def load_tuple2(self):
        super().load_tuple2()
        self._weigh_new_tuple()

    def load_tuple3(self):
        super().load_tuple3()
        self._weigh_new_tuple()

    def load_dup(self):
        super().load_dup()
        self._charge_top()

    def load_get(self):
        super().load_get()
        self._charge_top()

    def load_binget(self):
        super().load_binget()
        self._charge_top()

    def load_long_binget(self):
        super().load_long_binget()
        self._charge_top()

    def load_bytearray8(self):
        # Python's version makes a zero-filled bytearray of the declared length before reading into it.
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self.max_bytes:
            raise CheckpointError(f"the pickle declares a {n}-byte array but holds {self.max_bytes} bytes in all; "
                                  f"the file is truncated or crafted")
        b = bytearray(n)
        self.readinto(b)
        self.append(b)

    def load_build(self):
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if not isinstance(inst, self.BUILD_TARGETS) or isinstance(inst, torch.Tensor):
            raise UnsafeCheckpointError(f"the pickle sets the state of a {type(inst).__name__} after building it, "
                                        f"which genuine checkpoints never do (for a tensor it would bypass the "
                                        f"size checks); nothing from the file was executed")
        super().load_build()

    def load_newobj(self):
        self._check_new(self.stack[-2] if len(self.stack) >= 2 else None)
        super().load_newobj()

    def load_newobj_ex(self):
        self._check_new(self.stack[-3] if len(self.stack) >= 3 else None)
        super().load_newobj_ex()

    def _check_new(self, cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.NEW_TARGETS)):
            raise UnsafeCheckpointError(f"the pickle creates a {getattr(cls, '__name__', type(cls).__name__)} "
                                        f"without its constructor, which genuine checkpoints never do; nothing "
                                        f"from the file was executed")

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    for _opcode, _method in ((pickle.TUPLE, load_tuple), (pickle.TUPLE1, load_tuple1), (pickle.TUPLE2, load_tuple2),
                             (pickle.TUPLE3, load_tuple3), (pickle.DUP, load_dup), (pickle.GET, load_get),
                             (pickle.BINGET, load_binget), (pickle.LONG_BINGET, load_long_binget)):
        dispatch[_opcode[0]] = _method
    del _opcode, _method
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


# --- Storage records ---------------------------------------------------------------------------------
# `torch.storage._load_from_bytes(data)`: `data` is a legacy `torch.save` of one storage: five small pickles
# (magic number, protocol version, system info, the storage as a persistent id, the list of storage keys),
# then per key an int64 element count and the raw little-endian values. It is parsed here rather than handed
# to `torch.load`, which allocates the element count the record declares before reading any data.

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_TYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _StorageRef:
    __slots__ = ("dtype", "key", "numel", "view")

    def __init__(self, dtype: torch.dtype, key: str, numel: int, view: tuple | None):
        self.dtype, self.key, self.numel, self.view = dtype, key, numel, view


class _StorageRecordUnpickler(GuardedUnpickler):
    """Reads the small pickles of a storage record: storage types are the only globals, and the one
    persistent id becomes a `_StorageRef` (nothing is allocated)."""

    def find_class(self, module: str, name: str):
        if module in ("torch", "torch.storage") and name in _STORAGE_TYPES:
            return _StorageType(_STORAGE_TYPES[name])
        raise UnsafeCheckpointError(f"a tensor storage record in the pickle holds Python objects, not tensor data "
                                    f"(GLOBAL {module[:100]}.{name[:100]}); nothing from the file was executed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and type(pid[4]) is int
                and 0 <= pid[4] < _MAX_INDEX):
            raise CheckpointError(f"a tensor storage record in the pickle has a malformed header "
                                  f"{describe(pid)}; the file is damaged or crafted")
        view = pid[5]
        if view is not None and not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                                     and all(type(v) is int and 0 <= v < _MAX_INDEX for v in view[1:])):
            raise CheckpointError(f"a tensor storage record in the pickle has a malformed view {describe(view)}; "
                                  f"the file is damaged or crafted")
        return _StorageRef(pid[1].dtype, pid[2], pid[4], view)


def _storage_pickle(f: io.BytesIO) -> Any:
    # In memory, the pure-Python unpickler reads at most what the bytes hold, and its memo is a dict: no
    # opcode scan is needed here (BYTEARRAY8 is bounded by `GuardedUnpickler`).
    return _StorageRecordUnpickler(f, max_bytes=len(f.getbuffer())).load()


def _load_storage(data: bytes) -> torch.Tensor:
    """The values of one storage record, as a flat tensor over exactly the bytes the record holds."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpointError("tensor storage record is not bytes")

    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"a tensor storage record in the pickle ({len(data)} bytes) {why}; the file is "
                               f"damaged or crafted")

    f = io.BytesIO(data)
    try:
        magic, protocol, sys_info = _storage_pickle(f), _storage_pickle(f), _storage_pickle(f)
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
            raise damaged("is not a torch storage")
        if sys_info.get("little_endian", True) is not True:
            raise damaged("holds big-endian values, which are not supported")
        ref, keys = _storage_pickle(f), _storage_pickle(f)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            struct.error, OverflowError, MemoryError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise damaged(f"cannot be read ({describe_error(e)})") from e
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise damaged("does not describe exactly one storage")
    itemsize = torch.empty((), dtype=ref.dtype).element_size()
    header = f.read(8)
    if len(header) != 8:
        raise damaged("ends before its data")
    (count,) = struct.unpack("<q", header)
    nbytes = ref.numel * itemsize
    left = len(data) - f.tell()
    if count != ref.numel or nbytes != left:
        raise damaged(f"declares {ref.numel} values ({nbytes} bytes; data header {count}) but holds {left} bytes")
    start = f.tell()  # one copy of the values (a writable buffer of their own, as torch.load would give)
    values = torch.frombuffer(bytearray(memoryview(data)[start:start + nbytes]), dtype=ref.dtype) if nbytes \
        else torch.empty(0, dtype=ref.dtype)
    if ref.view is not None:
        _, start, length = ref.view
        if start + length > ref.numel:
            raise damaged(f"has a view of values {start}..{start + length} past its {ref.numel} values")
        values = values[start:start + length].clone()
    return values


# --- numpy records -----------------------------------------------------------------------------------
# numpy arrays arrive as `_reconstruct(ndarray, (0,), b'b')` followed by `__setstate__((version, shape, dtype,
# is_fortran, raw))` (protocols 2-4), or `_frombuffer(buffer, dtype, shape, order)` (protocol 5). numpy's own
# `__setstate__` allocates the declared shape for object arrays (and crashes on some malformed states), and
# `ndarray(shape)` allocates any shape; so dtypes are records until used, and every shape is checked against
# the bytes the file holds before numpy sees it.

_NUMPY_KINDS = "biufcSU"  # booleans, integers, floats, complex, bytes and text: plain data, no objects


class _DtypeRecord:
    """Stand-in for a pickled `numpy.dtype(spec, align, copy)` (+ byte order from its state)."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        if not isinstance(spec, str) or len(spec) > 8:
            raise UnsafeCheckpointError(f"numpy dtype record {describe(spec)} in the pickle is not a plain data type")
        try:
            dtype = np.dtype(spec)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"numpy dtype record {spec!r} in the pickle is not a dtype ({e})") from e
        if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafeCheckpointError(f"numpy dtype {spec!r} in the pickle is not plain data (numbers or text)")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise CheckpointError(f"numpy dtype record in the pickle has a malformed state {describe(state)}")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _as_dtype(value: Any) -> np.dtype:
    if isinstance(value, _DtypeRecord):
        return value.dtype
    if isinstance(value, (str, bytes)) and value in ("b", b"b"):  # `_reconstruct`'s placeholder dtype
        return np.dtype("b")
    raise UnsafeCheckpointError(f"a numpy array record in the pickle has dtype {describe(value)}, not a dtype record")


def _array_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int) and type(shape) is int:  # noqa: E721
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) > _MAX_DIMS or \
            any(type(n) is not int or not 0 <= n < _MAX_INDEX for n in shape):  # noqa: E721
        raise CheckpointError(f"a numpy array record in the pickle has shape {describe(shape)}; expected up to "
                              f"{_MAX_DIMS} non-negative integers; the file is damaged or crafted")
    return tuple(shape)


class _PickledArray(np.ndarray):
    """The array `_reconstruct` returns: its `__setstate__` checks the state before numpy's runs."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise CheckpointError(f"a numpy array record in the pickle has a malformed state {describe(state)}")
        version, (shape, dtype, fortran, raw) = (state[0] if len(state) == 5 else 1), state[-4:]
        shape, dtype = _array_shape(shape), _as_dtype(dtype)
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafeCheckpointError(f"a numpy array record in the pickle holds a {type(raw).__name__} "
                                        f"instead of raw bytes (object arrays are never part of a checkpoint)")
        expected = math.prod(shape) * dtype.itemsize
        if len(raw) != expected:
            raise CheckpointError(f"a numpy array record in the pickle declares shape {list(shape)} of {dtype} "
                                  f"({expected} bytes) but holds {len(raw)} bytes; the file is damaged or crafted")
        super().__setstate__((version, shape, dtype, bool(fortran), bytes(raw)))


class _NdarrayType:
    """What the pickle gets for `numpy.ndarray`: only usable as `_reconstruct`'s first argument (calling
    `ndarray(shape)` from a pickle would allocate any shape)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        raise UnsafeCheckpointError(f"the pickle calls numpy.ndarray{describe(args, 60)} itself, which numpy's "
                                    f"own pickles never do (it would allocate any shape); nothing was allocated")


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not _NdarrayType or _array_shape(shape) != (0,):
        raise UnsafeCheckpointError("numpy array record of an unexpected type or initial shape")
    _as_dtype(dtype)
    return np.ndarray.__new__(_PickledArray, (0,), "b")


def _numpy_frombuffer(buf, dtype, shape, order, axis_order=None):
    """Protocol-5 pickles store numpy arrays as `numpy._core.numeric._frombuffer(buffer, dtype, shape, order)`."""
    dtype, shape = _as_dtype(dtype), _array_shape(shape)
    if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F", "K"):
        raise UnsafeCheckpointError("numpy array record of an unexpected type")
    expected = math.prod(shape) * dtype.itemsize
    if len(buf) != expected:
        raise CheckpointError(f"a numpy array record in the pickle declares shape {list(shape)} of {dtype} "
                              f"({expected} bytes) but holds {len(buf)} bytes; the file is damaged or crafted")
    array = np.frombuffer(buf, dtype=dtype)
    if order == "K" and axis_order is not None:
        axes = _array_shape(axis_order)
        if sorted(axes) != list(range(len(shape))):
            raise CheckpointError(f"a numpy array record in the pickle has axis order {describe(axis_order)}")
        return array.reshape(shape, order="C").transpose(axes)
    return array.reshape(shape, order="F" if order == "F" else "C")


def _numpy_scalar_record(dtype, data=None):
    """`numpy.core.multiarray.scalar(dtype, raw)`: one value of a plain dtype from exactly its bytes."""
    dtype = _as_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise CheckpointError(f"a numpy scalar record in the pickle holds {describe(data, 40)}, expected "
                              f"{dtype.itemsize} bytes of {dtype}; the file is damaged or crafted")
    return _numpy_scalar(dtype, bytes(data))


_CODECS = ("latin1", "latin-1")  # what Python 3 writes for bytes in protocol 0-2 pickles


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """Protocol-2 pickles store bytes as `_codecs.encode(str, 'latin1')`; only that codec is accepted."""
    if not isinstance(text, str) or encoding not in _CODECS or errors != "strict":
        raise CheckpointError(f"a bytes record in the pickle uses codec {describe(encoding, 40)} (errors="
                              f"{describe(errors, 40)}); pickles store bytes only as 'latin1', so the file is damaged "
                              f"or crafted")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError as e:
        raise CheckpointError(f"a bytes record in the pickle holds characters beyond latin1 ({e.reason}); the file "
                              f"is damaged or crafted") from e


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
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _DtypeRecord,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar_record,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar_record,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("_codecs", "encode"): _codecs_encode,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    **{("torch", name): dtype for name, dtype in _TORCH_DTYPES.items()},
}


class RestrictedUnpickler(GuardedUnpickler):
    """Unpickler that resolves only the allow-listed globals above and refuses everything else."""

    # numpy arrays and dtypes and TensorFlow networks are restored with BUILD; dict types may carry attributes.
    BUILD_TARGETS = (_PickledArray, _DtypeRecord, TFNetwork, EasyDict, collections.OrderedDict)
    NEW_TARGETS = (TFNetwork, EasyDict, collections.OrderedDict, set, frozenset, torch.Size)

    def find_class(self, module: str, name: str):
        # Protocol 0-2 pickles written by Python 3 use Python 2 module names (`__builtin__.set`); map them
        # back as the standard unpickler does, then apply the allow-list.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise UnsafeCheckpointError(
                f"the pickle asks for `{module[:100]}.{name[:100]}`, which a StyleGAN checkpoint never needs; "
                f"refusing to load it (nothing from the file was executed)")
        return target

    def persistent_load(self, pid):
        raise UnsafeCheckpointError("the pickle uses persistent ids; it is not a plain network pickle")


def restricted_load(f: BinaryIO) -> Any:
    """Unpickle `f` with `RestrictedUnpickler`, after `check_declared_lengths` (a small file cannot make the
    unpickler reserve more memory than the file holds)."""
    check_declared_lengths(f)
    start = f.tell()
    size = f.seek(0, io.SEEK_END)
    f.seek(start)
    return RestrictedUnpickler(f, max_bytes=size - start).load()
