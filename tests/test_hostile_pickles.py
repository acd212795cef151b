"""Issue 13, NVIDIA pickle path: crafted records are refused with specific errors naming the file, before
anything large is allocated; the embedded-source check is an allow-list of inert constructs.

Hostile files are built by `forge` (section "issue 13: NVIDIA pickle path") from the tiny fixtures.
"""

from __future__ import annotations

import codecs
import collections
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import core
import forge
from core import files
from core.loaders import safe_pickle
from core.loaders.safe_pickle import MAX_BROADCAST_NUMEL, check_embedded_source, rebuild_tensor

REPO = Path(__file__).resolve().parent.parent
FX = "ada_skip"  # a StyleGAN2-ADA fixture; "sg3_t" for StyleGAN3


def write(tmp_path, data: bytes, name: str = "evil.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def with_tensor(tmp_path, value, layer: str = "mapping", name: str = "w_avg", group: str = "_buffers",
                file: str = "evil.pkl") -> Path:
    objects = forge.nvidia_objects_with(forge.load_fixture(FX), layer, group, name, value)
    return write(tmp_path, forge.dumps(objects), file)


def refused(path: Path, match: str, error=core.CheckpointError) -> str:
    with pytest.raises(error, match=match) as e:
        core.load_generator(path)
    assert str(path) in str(e.value), str(e.value)
    return str(e.value)


# --- 1. Tensor records are checked against their storage -----------------------------------------------

def test_stride0_record_stretched_to_a_huge_shape_is_refused(tmp_path):
    record = forge.tensor_record(torch.ones(1), size=(100_000, 100_000), stride=(0, 0))
    path = with_tensor(tmp_path, record)
    assert path.stat().st_size < 1_000_000
    message = refused(path, "repeats stored values to show 10000000000 values")
    assert "stride 0" in message


def test_overlapping_strides_are_refused(tmp_path):
    record = forge.tensor_record(torch.ones(4200), size=(4096, 64), stride=(1, 1))  # 262144 values of 4200
    refused(with_tensor(tmp_path, record), "overlapping strides")


def test_record_larger_than_its_storage_is_refused_without_growing_it(tmp_path):
    values = torch.ones(8)
    record = forge.tensor_record(values, size=(1024,), stride=(1,))
    message = refused(with_tensor(tmp_path, record), r"reaches value 1023, past the storage's end")
    assert "8 float32 values" in message


@pytest.mark.parametrize("size, stride, offset, match", [
    ((4,), (-1,), 3, "non-negative integers"),
    ((-4,), (1,), 0, "non-negative integers"),
    ((2 ** 62,), (1,), 0, "below 2\\*\\*48"),
    ((4.0,), (1,), 0, "non-negative integers"),
    ((True,), (1,), 0, "non-negative integers"),
    ((4,), (1, 1), 0, "lengths differ"),
    ((4,), (1,), -1, "storage offset is -1"),
    ((4,), (1,), 6, "past the storage's end"),
    ((0,), (1,), 99, "starts past the storage's end"),
])
def test_malformed_size_stride_offset_are_refused(size, stride, offset, match, tmp_path):
    record = forge.tensor_record(torch.ones(8), size=size, stride=stride, offset=offset)
    refused(with_tensor(tmp_path, record), match)


def test_tiny_broadcast_views_are_accepted_and_read_correctly():
    flat = torch.arange(4, dtype=torch.float32)
    t = rebuild_tensor(flat, 1, (3, 2), (0, 1))
    assert t.tolist() == [[1, 2], [1, 2], [1, 2]]
    big = rebuild_tensor(torch.ones(1), 0, (MAX_BROADCAST_NUMEL,), (0,))
    assert big.numel() == MAX_BROADCAST_NUMEL and big.untyped_storage().nbytes() == 4
    with pytest.raises(core.CheckpointError, match="repeats stored values"):
        rebuild_tensor(torch.ones(1), 0, (MAX_BROADCAST_NUMEL + 1,), (0,))


def test_rebuild_never_grows_the_storage():
    storage = torch.ones(8).untyped_storage()
    with pytest.raises(core.CheckpointError, match="past the storage's end"):
        rebuild_tensor(torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True),
                       4, (8,), (1,))
    assert storage.nbytes() == 32


@pytest.mark.parametrize("declared, header, match", [
    (1 << 40, None, r"declares 1099511627776 values"),   # would make torch.load reserve 4 TB
    (8, None, r"declares 8 values .* but holds 16 bytes"),
    (4, 5, r"data header 5"),
])
def test_storage_record_must_hold_the_bytes_it_declares(declared, header, match, tmp_path):
    data = forge.storage_record_bytes(torch.ones(4), declared_numel=declared, header_numel=header)
    record = forge.Reduce(torch._utils._rebuild_tensor_v2, forge.storage_record(data), 0, (4,), (1,), False,
                          collections.OrderedDict())
    refused(with_tensor(tmp_path, record), match)


def test_storage_record_parser_reads_genuine_records():
    values = torch.randn(5, 3)
    for t in (values, values.half(), values.double(), values > 0, (values * 100).long()):
        fn, args = t.__reduce_ex__(2)[:2]
        data = args[0].__reduce__()[1][0]
        flat = safe_pickle._load_storage(data)
        assert flat.dtype == t.dtype and torch.equal(flat.reshape(t.shape), t)


# --- numpy records ------------------------------------------------------------------------------------

@pytest.mark.parametrize("record, match, error", [
    (forge.numpy_array_record((100_000, 100_000)), r"declares shape \[100000, 100000\].*holds 16 bytes",
     core.CheckpointError),
    (forge.numpy_array_record((4,), initial_shape=(10 ** 10,)), "unexpected type or initial shape",
     core.UnsafeCheckpointError),
    (forge.numpy_array_record((10 ** 8,), dtype="O", raw=b""), "not plain data", core.UnsafeCheckpointError),
    (forge.numpy_array_record((-1,)), "non-negative integers", core.CheckpointError),
    (forge.numpy_frombuffer_record((100_000, 100_000)), r"declares shape \[100000, 100000\]", core.CheckpointError),
    (forge.Reduce(np.ndarray, (10 ** 10,), "f4"), r"calls numpy\.ndarray", core.UnsafeCheckpointError),
])
def test_numpy_records_are_checked_before_numpy_allocates(record, match, error, tmp_path):
    objects = forge.nvidia_objects(forge.load_fixture(FX))
    objects["training_set_kwargs"]["sneaky"] = record  # plain data the loader never uses, read all the same
    refused(write(tmp_path, forge.dumps(objects)), match, error)


def test_tf_pickle_with_a_stretched_variable_is_refused(tmp_path):
    fx = forge.load_fixture("tf_skip")
    path = forge.write_tf_pickle(fx, tmp_path / "tf.pkl")
    data = path.read_bytes()
    genuine = core.load_generator(path)  # the genuine file loads (legacy numpy records)
    assert genuine.info.source_format == "nvidia-tf-pkl"
    evil = forge.dumps({"G": forge.numpy_array_record((1 << 20, 1 << 20))}, protocol=2, legacy_numpy=True)
    refused(write(tmp_path, evil), "declares shape")
    assert len(data) > 0


# --- Declared pickle lengths ----------------------------------------------------------------------------

@pytest.mark.parametrize("opcode, match", [("bytes8", "4000000000 bytes in a bytes8"),
                                           ("unicode8", "4000000000 bytes in a unicodestring8"),
                                           ("bytearray8", "4000000000 bytes in a bytearray8"),
                                           ("frame", "a frame of 4000000000 bytes")])
def test_huge_declared_lengths_are_refused_before_allocation(opcode, match, tmp_path):
    path = write(tmp_path, forge.long_declared_pickle(opcode))
    message = refused(path, "declares more data than it holds")
    assert match in message, message


def test_huge_memo_index_is_refused_before_the_memo_grows(tmp_path):
    refused(write(tmp_path, forge.huge_memo_index_pickle()), "memo index 100000000 where a pickler would write at "
                                                             "most 0")


@pytest.mark.parametrize("opcode", ["bytes8", "bytearray8", "frame"])
def test_huge_declared_length_inside_a_storage_record_is_refused(opcode, tmp_path):
    inner = forge.storage_record_bytes(torch.ones(2))
    inner = forge.long_declared_pickle(opcode) + inner[15:]  # the first header pickle declares 4 GB
    record = forge.Reduce(torch._utils._rebuild_tensor_v2, forge.storage_record(inner), 0, (2,), (1,), False,
                          collections.OrderedDict())
    refused(with_tensor(tmp_path, record), "tensor storage record|4000000000-byte array")


# --- Codecs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, match", [
    (("abc", "no-such-codec"), "uses codec 'no-such-codec'"),
    (("abc", "rot13"), "uses codec 'rot13'"),
    (("abc", "utf-16"), "uses codec 'utf-16'"),
    (("abc", "latin1", "ignore"), "errors='ignore'"),
    (("\u20ac", "latin1"), "beyond latin1"),
])
def test_codec_abuse_is_a_checkpoint_error(args, match, tmp_path):
    objects = forge.nvidia_objects(forge.load_fixture(FX))
    objects["training_set_kwargs"]["sneaky"] = forge.Reduce(codecs.encode, *args)
    refused(write(tmp_path, forge.dumps(objects)), match)


# --- 3. Module trees, malformed records, settings -----------------------------------------------------

def test_3000_deep_module_tree_is_refused(tmp_path):
    objects = forge.deep_module_chain(forge.load_fixture(FX), 3000)
    refused(write(tmp_path, forge.dumps(objects)), "nested more than 32 levels deep")


def test_cyclic_module_tree_is_refused(tmp_path):
    objects = forge.cyclic_module_objects(forge.load_fixture(FX))
    refused(write(tmp_path, forge.dumps(objects)), "is the same record as the generator")


def test_deeply_nested_pickle_is_refused_without_recursion_error(tmp_path):
    path = write(tmp_path, forge.nested_list_pickle(200_000))
    refused(path, "not a StyleGAN network pickle")


@pytest.mark.parametrize("group, name, value, match", [
    ("", "_init_kwargs", [1, 2], "Generator record's _init_kwargs is a list, expected a dict"),
    ("", "_modules", "abc", "_modules is a str, expected a dict"),
    ("", "_init_args", 5, "_init_args is a int, expected a tuple"),
    ("_init_kwargs", "z_dim", "512", r"recorded setting z_dim is '512' \(str\), expected an integer"),
    ("_init_kwargs", "img_resolution", [1024], "img_resolution is \\[1024\\]"),
    ("_init_kwargs", "c_dim", True, "c_dim is True"),
    ("_init_kwargs", "mapping_kwargs", [1, 2], "mapping_kwargs is \\[1, 2\\]"),
    ("_init_kwargs", "synthesis_kwargs", "x", "synthesis_kwargs is 'x'"),
    ("_init_kwargs", "w_dim", float("nan"), "w_dim is nan"),
])
def test_malformed_generator_records_name_the_file_and_field(group, name, value, match, tmp_path):
    objects = forge.nvidia_objects_with(forge.load_fixture(FX), "", group, name, value)
    refused(write(tmp_path, forge.dumps(objects)), match)


def test_malformed_persistent_record_state_is_named(tmp_path):
    objects = forge.nvidia_objects(forge.load_fixture(FX))
    objects["G_ema"].meta["state"] = [1, 2, 3]
    refused(write(tmp_path, forge.dumps(objects)), "has a state of type list, expected a dict")


@pytest.mark.parametrize("taps, match", [
    ([0, 0, 0, 0], "sums to zero"),
    ([1, -1], "sums to zero"),
    ([1, float("nan"), 1], "finite filter taps"),
    ("abc", "a list of filter taps"),
    (list(range(1, 200)), "1 to 64 finite filter taps"),
])
def test_zero_or_malformed_resample_filter_is_refused(taps, match, tmp_path):
    objects = forge.nvidia_objects_with(forge.load_fixture(FX), "", "_init_kwargs", "synthesis_kwargs",
                                        {"resample_filter": taps})
    refused(write(tmp_path, forge.dumps(objects)), match)


def test_zero_stylegan3_filter_is_refused(tmp_path):
    fx = forge.load_fixture("sg3_t")
    g_ema = dict(fx.net)
    key = next(k for k in g_ema if k.endswith("up_filter"))
    g_ema[key] = torch.zeros_like(g_ema[key])
    path = forge.write_nvidia_pickle(fx, tmp_path / "zero.pkl", g_ema=g_ema)
    refused(path, f"the filter {key} in the file is all zero")


def test_huge_dimension_from_kwargs_is_a_checkpoint_error(tmp_path):
    objects = forge.nvidia_objects_with(forge.load_fixture(FX), "", "_init_kwargs", "w_dim", 10 ** 12)
    with pytest.raises(core.CheckpointError) as e:
        core.load_generator(write(tmp_path, forge.dumps(objects)))
    assert str(tmp_path / "evil.pkl") in str(e.value)


# --- 2. Embedded source: an allow-list of inert constructs ---------------------------------------------

_HEAD = "import torch\nfrom torch_utils import persistence\n"
_TAIL = "\n@persistence.persistent_class\nclass Generator(torch.nn.Module):\n    pass\n"

HOSTILE_SOURCES = {
    "lambda decorator": "@(lambda f: f)\ndef helper():\n    pass\n",
    "call decorator on a function": "@torch.no_grad()\ndef helper():\n    pass\n",
    "unknown decorator name": "@print\ndef helper():\n    pass\n",
    "class decorator call": "@persistence.persistent_class(1)\nclass A(torch.nn.Module):\n    pass\n",
    "__init_subclass__": "class Base:\n    def __init_subclass__(cls):\n        print('ran')\n",
    "__set_name__ descriptor": "class D:\n    def __set_name__(self, owner, name):\n        pass\n",
    "descriptor assigned in class body": "class A:\n    d = D()\n",
    "__class_getitem__": "class A:\n    def __class_getitem__(cls, item):\n        pass\n",
    "metaclass keyword": "class A(torch.nn.Module, metaclass=type):\n    pass\n",
    "subclass keyword": "class A(torch.nn.Module, flag=True):\n    pass\n",
    "call as a base": "class A(type('B', (), {})):\n    pass\n",
    "default that calls": "def helper(x=print('ran')):\n    pass\n",
    "walrus in a default": "def helper(x=(y := 1)):\n    pass\n",
    "lambda default": "def helper(x=lambda: 0):\n    pass\n",
    "f-string with a call": "NAME = f\"{print('ran')}\"\n",
    "f-string default": "def helper(x=f\"{print('ran')}\"):\n    pass\n",
    "star import": "from torch import *\n",
    "annotation that calls": "def helper(x: print('ran')):\n    pass\n",
    "return annotation call": "def helper() -> print('ran'):\n    pass\n",
    "comprehension": "TABLE = [print(i) for i in range(3)]\n",
    "subscript assignment": "torch.x = 1\n",
    "module __getattr__": "def __getattr__(name):\n    return name\n",
    "huge power": "N = 10 ** 10 ** 9\n",
    "if statement": "if True:\n    pass\n",
    "try statement": "try:\n    pass\nexcept Exception:\n    pass\n",
    "with statement": "with open('x'):\n    pass\n",
    "import in class": "class A:\n    import os\n",
    "expression statement": "torch.manual_seed\n",
    "getattr dunder": "X = torch.__class__\n",
    "kwargs unpack in dict": "X = {**{}}\n",
    # Names an allowed call, decorator or base relies on, rebound by the file itself (issue 13 red team)
    "builtin call rebound by assignment": "def evil(*a):\n    open('/tmp/x', 'w')\nfloat = evil\nX = float(1)\n",
    "builtin call rebound by def": "def float(*a):\n    pass\nX = float(1)\n",
    "builtin call rebound by import": "import numpy as float\nX = float(1)\n",
    "builtin call rebound by a global in a function": "def f():\n    global int\n    int = 1\nX = int(1)\n",
    "builtin call rebound after its use": "X = list((1,))\nlist = print\n",
    "staticmethod rebound": "def evil(f):\n    pass\nstaticmethod = evil\n@staticmethod\ndef g():\n    pass\n",
    "property rebound": "def evil(f):\n    pass\nproperty = evil\n@property\ndef g():\n    pass\n",
    "classmethod rebound": "def classmethod(f):\n    pass\n@classmethod\ndef g():\n    pass\n",
    "decorator rebound in a class body": ("class A(torch.nn.Module):\n    property = print\n    @property\n"
                                          "    def x(self):\n        pass\n"),
    "class shadowing misc": ("class misc:\n    @staticmethod\n    def profiled_function(f):\n        pass\n"
                             "@misc.profiled_function\ndef g():\n    pass\n"),
    "class shadowing persistence": ("class persistence:\n    @staticmethod\n    def persistent_class(c):\n"
                                    "        pass\n"),
    "misc imported from elsewhere": "import math as misc\n@misc.profiled_function\ndef g():\n    pass\n",
    "misc rebound after its import": ("from torch_utils import misc\nmisc = 1\n@misc.profiled_function\n"
                                      "def g():\n    pass\n"),
    "torch rebound": "torch = 1\n",
    "np imported from torch": "import torch as np\nX = np.sqrt(2)\n",
    "stacked decorators": "class A:\n    @classmethod\n    @property\n    def x(cls):\n        pass\n",
    "decorator on a class": "@staticmethod\nclass A:\n    pass\n",
    # Dunder names and relative imports
    "__package__ assignment": "__package__ = 'this'\n",
    "__name__ assignment": "__name__ = 'this.x'\n",
    "__spec__ assignment": "__spec__ = None\n",
    "__path__ assignment": "__path__ = []\n",
    "__builtins__ assignment": "__builtins__ = {}\n",
    "annotated dunder assignment": "__name__: str = 'this.x'\n",
    "dunder in a tuple target": "A, __package__ = 1, 'this'\n",
    "dunder import alias": "import numpy as __builtins__\n",
    "module-level dunder def": "def __dir__():\n    pass\n",
    "class-level dunder assignment": "class A:\n    __class_getitem__ = print\n",
    "class-level __class__": "class A:\n    __class__ = int\n",
    "relative import": "from . import y\n",
    "relative import after __package__": "__package__ = 'os'\nfrom . import path\n",
    "relative import of a module": "from .. import z\n",
    # Statements a genuine module body never holds
    "global statement": "global X\n",
    "del statement": "X = 1\ndel X\n",
    "for statement": "for X in []:\n    pass\n",
    "while statement": "while False:\n    pass\n",
    "augmented assignment": "X = 1\nX += 1\n",
    "starred target": "*X, Y = (1, 2)\n",
    # Bases, attribute access and arguments that reach the file's own objects
    "base bound by assignment": "Base = float\nclass A(Base):\n    pass\n",
    "own class rebound before use as a base": "class A(torch.nn.Module):\n    pass\nA = print\nclass B(A):\n    pass\n",
    "base from an import": "from torch_utils.misc import profiled_function as Base\nclass A(Base):\n    pass\n",
    "library base outside the list": "import enum\nclass A(enum.Enum):\n    X = 1\n",
    "attribute of the file's own class": "class A:\n    pass\nX = A.x\n",
    "default reading the file's own class": "class A:\n    pass\ndef f(x=A.x):\n    pass\n",
    "annotation subscripting the file's own class": "class A:\n    pass\ndef f(x: A[0]):\n    pass\n",
    "call with a name argument": ("import numpy as np\nclass A:\n    def __array__(self):\n        pass\n"
                                  "X = np.array(A)\n"),
    "dict of the file's own class": "class A:\n    def keys():\n        pass\nX = dict(A)\n",
    "keywords on a numpy call": "import numpy as np\nX = np.array(0, dtype='V2000000000')\n",
}


@pytest.mark.parametrize("case", list(HOSTILE_SOURCES))
def test_source_outside_the_allow_list_is_refused(case):
    with pytest.raises(core.UnsafeCheckpointError, match="would run `.*` \\(line \\d+\\)"):
        check_embedded_source(_HEAD + HOSTILE_SOURCES[case] + _TAIL, "Generator")


@pytest.mark.parametrize("case", list(HOSTILE_SOURCES)[:6])
def test_hostile_source_in_a_file_is_refused_naming_it(case, tmp_path):
    objects = forge.nvidia_objects(forge.load_fixture(FX))
    objects["G_ema"].meta["module_src"] = _HEAD + HOSTILE_SOURCES[case] + _TAIL
    message = refused(write(tmp_path, forge.dumps(objects)), "embedded in this pickle would run",
                      core.UnsafeCheckpointError)
    assert "Nothing from the file was executed" in message


INERT_SOURCE = '''\ufeff"""Docstring."""

import numpy as np
import torch
from torch_utils import misc, persistence
from torch_utils.ops import upfirdn2d

wavelets = {"haar": [0.7071067811865476, 0.7071067811865476], "db1": [-1.0, +2.5]}
SCALE = 2 ** 0.3


@misc.profiled_function
def modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True,
                     flip_weight=True, fused_modconv=True):
    def inner(y=np.sqrt(2)):  # nested definitions are not run at import
        return print(y)
    return inner()


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Docstring."""

    magnitude = 1.0

    def __init__(self, in_channels: int, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=[1, 3, 3, 1], conv_clamp=None, channels_last=False,
                 first_stopband=2 ** 2.1, layer_kwargs={}, scale=-1.5) -> None:
        super().__init__()

    @staticmethod
    def design_lowpass_filter(numtaps, cutoff, width, fs, radial=False):
        pass

    def extra_repr(self):
        return f"{self.magnitude:g}"


@persistence.persistent_class
class Generator(SynthesisLayer):
    pass
'''


def test_inert_nvidia_like_source_passes():
    check_embedded_source(INERT_SOURCE, "Generator")
    check_embedded_source(forge.placeholder_source("training.networks", ["Generator"]), "Generator")


NVIDIA_SOURCES = [Path("/work/ref/sg2ada/training/networks.py"), Path("/work/ref/sg2ada/training/augment.py")]
# Git mirrors of NVIDIA's repositories, where this machine has them (read with `git show`; never committed).
NVIDIA_MIRRORS = {
    Path("/work/.mirror/NVlabs+stylegan2-ada-pytorch/repo"): ["training/networks.py", "training/augment.py"],
    Path("/work/.mirror/NVlabs+stylegan3/repo"): ["training/networks_stylegan2.py", "training/networks_stylegan3.py",
                                                 "training/augment.py"],
}


@pytest.mark.skipif(not all(p.is_file() for p in NVIDIA_SOURCES), reason="no local copy of NVIDIA's sources")
@pytest.mark.parametrize("path", NVIDIA_SOURCES, ids=lambda p: p.name)
def test_genuine_nvidia_sources_pass(path):
    """Only where a local reference copy exists (never committed): NVIDIA's own modules pass the allow-list."""
    source = path.read_text(encoding="utf-8")
    check_embedded_source(source, "Generator" if "networks" in path.name else "AugmentPipe")


@pytest.mark.parametrize("repo, path", [(r, p) for r, ps in NVIDIA_MIRRORS.items() for p in ps],
                         ids=lambda v: getattr(v, "name", v))
def test_genuine_nvidia_sources_from_mirrors_pass(repo, path):
    if not repo.is_dir():
        pytest.skip("no mirror of NVIDIA's repository")
    run = subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:{path}"], capture_output=True)
    if run.returncode != 0:
        pytest.skip(f"{path} not in the mirror")
    check_embedded_source(run.stdout.decode("utf-8"), "AugmentPipe" if "augment" in path else "Generator")


def test_allowed_constructs_with_their_expected_imports_pass():
    """The binding rules refuse shadowing, not the constructs: the same decorators, calls and bases pass
    when their names come from the expected imports (also as dotted imports)."""
    source = ("import numpy as np\nimport torch.nn\nimport math\nfrom torch_utils import misc\n"
              "import torch_utils.persistence as persistence\n"
              "X = float(1)\nY = np.sqrt(2.0)\nZ = dict(a=1)\nW = math.sqrt(2)\n"
              "@misc.profiled_function\ndef f(x: np.ndarray = np.pi, y: dict[str, int] = None) -> torch.Tensor:\n"
              "    float = print  # a function body runs only when called\n    return float\n"
              "class Base(torch.nn.Module):\n    @staticmethod\n    def g(x):\n        pass\n"
              "    @property\n    def p(self):\n        pass\n"
              "@persistence.persistent_class\nclass Generator(Base):\n    def __init__(self, misc=1):\n"
              "        super().__init__()\n")
    check_embedded_source(source, "Generator")


def _import_source(source: str, name: str, folder) -> None:
    """Import `source` as a module, as NVIDIA's loader imports a pickle's embedded source (the control of the
    red-team tests: these sources really do run code when imported)."""
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def test_accepted_sources_do_nothing_when_run(tmp_path, monkeypatch):
    """What the allow-list accepts really is inert: running it (as NVIDIA's loader would, with stand-ins for
    NVIDIA's helpers) creates no file, and the refused red-team sources would have."""
    import types

    fake = types.ModuleType("torch_utils")
    fake.misc = types.SimpleNamespace(profiled_function=lambda f: f)
    fake.persistence = types.SimpleNamespace(persistent_class=lambda c: c)
    fake.__path__ = []  # a package, so that `from torch_utils.ops import upfirdn2d` resolves
    fake.ops = types.ModuleType("torch_utils.ops")
    fake.ops.upfirdn2d = None
    monkeypatch.setitem(sys.modules, "torch_utils.ops", fake.ops)
    monkeypatch.setitem(sys.modules, "torch_utils", fake)
    monkeypatch.setitem(sys.modules, "torch_utils.misc", fake.misc)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake.persistence)
    marker = tmp_path / "ran"
    evil = f"def evil(*a, **k):\n    open({str(marker)!r}, 'w').close()\n"
    sources = {
        "float": evil + "float = evil\nX = float(1)\n",
        "staticmethod": evil + "staticmethod = evil\n@staticmethod\ndef g():\n    pass\n",
        "misc": ("class misc:\n    @staticmethod\n    def profiled_function(f):\n"
                 f"        open({str(marker)!r}, 'w').close()\n@misc.profiled_function\ndef g():\n    pass\n"),
    }
    for name, body in sources.items():
        source = _HEAD + body + _TAIL
        _import_source(source, f"redteam_{name}", tmp_path)  # the control: importing it does run code
        assert marker.exists(), name
        marker.unlink()
        with pytest.raises(core.UnsafeCheckpointError):
            check_embedded_source(source, "Generator")
    inert = INERT_SOURCE.removeprefix("\ufeff")
    check_embedded_source(inert, "Generator")
    _import_source(inert, "inert", tmp_path)
    assert not marker.exists()


# --- 3b. Messages describe untrusted values within bounds (a shared-list pickle has an exponential repr) ---

def _bomb_files(tmp_path) -> dict[str, Path]:
    fx = forge.load_fixture(FX)
    bomb = forge.shared_list_bomb(6)
    files = {}

    def add(name, objects):
        files[name] = write(tmp_path, forge.dumps(objects), f"{name}.pkl")

    add("dtype", dict(forge.nvidia_objects(fx), x=forge.Reduce(np.dtype, bomb)))
    add("codec", dict(forge.nvidia_objects(fx), x=forge.Reduce(codecs.encode, "x", bomb)))
    objects = forge.nvidia_objects(fx)
    add("meta", dict(objects, x=forge.Reduce(objects["G_ema"].__reduce__()[0], bomb)))
    objects = forge.nvidia_objects(fx)
    objects["G_ema"].meta["state"]["_init_kwargs"]["z_dim"] = bomb
    add("setting", objects)
    # Keys must hash: the largest shared tuple the unpickler accepts (41371 elements, an 11 MB repr).
    add("keys", {forge.shared_tuple_bomb(4, 14, "x" * 300): 1})
    add("storage", forge.nvidia_objects_with(fx, "mapping", "_buffers", "w_avg", forge.Reduce(
        torch._utils._rebuild_tensor_v2, forge.storage_record(forge.storage_record_bytes(torch.ones(4))),
        bomb, (4,), (1,), False, collections.OrderedDict())))
    return files


def test_exponential_repr_pickles_are_refused_quickly_with_little_memory(tmp_path):
    import time
    import tracemalloc

    files = _bomb_files(tmp_path)
    files["vgg16"] = forge.torchscript_archive_with_persistent_id(tmp_path / "vgg16.pt",
                                                                  ("evil", forge.shared_list_bomb(6)))
    from core.losses.nvidia_vgg16 import read_torchscript_tensors

    for name, path in files.items():
        assert path.stat().st_size < 1_000_000, (name, path.stat().st_size)
        load = read_torchscript_tensors if name == "vgg16" else core.load_generator
        # CPU seconds of this process (other jobs on a shared CI machine do not count), timed without tracemalloc,
        # which slows the pure-Python unpickler. A bound, not a speed target: the repr would take minutes and GBs.
        start = time.process_time()
        with pytest.raises(core.CheckpointError):
            load(path)
        seconds = time.process_time() - start
        tracemalloc.start()
        with pytest.raises(core.CheckpointError) as e:
            load(path)
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        message = str(e.value)
        assert str(path) in message and len(message) < 1500, (name, message)
        assert peak < 10 and seconds < 2, (name, peak, seconds, message)


@pytest.mark.parametrize("case", ["deep", "reused"])
def test_tuple_hash_bombs_are_refused_before_hashing(case, tmp_path):
    """Tuples do not cache their hash: a dict keyed by a tuple sharing nested tuples 9 levels deep (about
    200 bytes) would take minutes to build, and a medium one reused through memo references adds up."""
    import time

    fx = forge.load_fixture(FX)
    # Built as `OrderedDict([(key, 1)])` records: making the dict here would hash the key in this process.
    if case == "deep":
        extra = forge.Reduce(collections.OrderedDict, [(forge.shared_tuple_bomb(9), 1)])
        match = r"builds a tuple of 211111 elements"
    else:
        key = forge.shared_tuple_bomb(4)  # 11111 elements: allowed once, not 1000 times
        extra = forge.Reduce(collections.OrderedDict, [(key, i) for i in range(1000)])
        match = r"uses tuples of \d+ elements in all"
    path = write(tmp_path, forge.dumps(dict(forge.nvidia_objects(fx), x=extra)))
    start = time.process_time()  # CPU seconds of this process: building the dict would take minutes of them
    refused(path, match)
    assert time.process_time() - start < 5


def test_describe_is_bounded():
    bomb = forge.shared_list_bomb(7)  # a 3.3 GB repr
    text = files.describe(bomb)
    assert text.startswith("[[[[[[[['xxx") and len(text) <= 83, text
    assert files.describe("y" * 10 ** 6).startswith("'yyy") and len(files.describe("y" * 10 ** 6)) < 90
    assert files.describe(10 ** 5000) == "<int of 16610 bits>"
    assert files.describe({"a": (1, 2.5, None)}) == "{'a': (1, 2.5, None)}"
    assert files.describe(collections.OrderedDict(a=1)) == "OrderedDict({'a': 1})"
    assert files.describe(torch.ones(2, 3)) == "<tensor [2, 3] float32>"
    error = files.describe_error(KeyError(bomb))
    assert error.startswith("KeyError: [[[") and len(error) < 120, error


# --- 4. Memory: tiny hostile files cost little before they are refused; nothing is cached -------------

_MEASURE = textwrap.dedent("""
    import json, sys, tracemalloc
    sys.path.insert(0, {repo!r})
    import torch
    import core

    def status_mb(field):  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's at fork)
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    def start():  # reset the peak to the current RSS (Linux >= 4.0), then return the current RSS
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        return status_mb("VmRSS")

    def peak_mb():
        return status_mb("VmHWM")

    core.load_generator({warmup!r})  # warm the allocator and imports with a genuine file
    out = {{}}
    for path in {paths!r}:
        before = start()
        tracemalloc.start()
        try:
            core.load_generator(path)
            error = None
        except Exception as e:
            error = type(e).__name__ + ": " + str(e)
        traced = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        out[path] = {{"rss_mb": peak_mb() - before, "traced_mb": traced, "error": error}}
    before = start()  # control: the measurement sees a real 400 MB allocation
    torch.ones(100 * 2 ** 20)
    out["control"] = {{"rss_mb": peak_mb() - before}}
    print(json.dumps(out))
""")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak RSS is read from /proc (Linux)")
def test_tiny_hostile_files_are_refused_with_small_peak_memory(tmp_path):
    fx = forge.load_fixture(FX)
    files = {
        "stride0": with_tensor(tmp_path, forge.tensor_record(torch.ones(1), (100_000, 100_000), (0, 0)),
                               file="stride0.pkl"),
        "past_storage": with_tensor(tmp_path, forge.tensor_record(torch.ones(4), (10 ** 9,), (1,)),
                                    file="past.pkl"),
        "storage_numel": with_tensor(tmp_path, forge.Reduce(
            torch._utils._rebuild_tensor_v2,
            forge.storage_record(forge.storage_record_bytes(torch.ones(4), declared_numel=10 ** 9)),
            0, (4,), (1,), False, collections.OrderedDict()), file="storage.pkl"),
        "numpy_shape": write(tmp_path, forge.dumps(dict(forge.nvidia_objects(fx), x=forge.numpy_array_record(
            (100_000, 100_000)))), "numpy.pkl"),
        "bytes8": write(tmp_path, forge.long_declared_pickle("bytes8", 3 * 2 ** 30), "bytes8.pkl"),
        "frame": write(tmp_path, forge.long_declared_pickle("frame", 3 * 2 ** 30), "frame.pkl"),
        "memo": write(tmp_path, forge.huge_memo_index_pickle(), "memo.pkl"),
    }
    for path in files.values():
        assert path.stat().st_size < 1_000_000
    warmup = forge.write_nvidia_pickle(fx, tmp_path / "genuine.pkl")
    script = _MEASURE.format(repo=str(REPO), warmup=str(warmup), paths=[str(p) for p in files.values()])
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["control"]["rss_mb"] > 150, result["control"]  # the measurement can fail
    for name, path in files.items():
        r = result[str(path)]
        assert r["error"] and r["error"].startswith(("CheckpointError", "UnsafeCheckpointError")), (name, r)
        assert str(path) in r["error"], (name, r)
        assert r["rss_mb"] < 50 and r["traced_mb"] < 50, (name, r)


def test_refused_file_leaves_nothing_cached(pack, tmp_path):
    generator = sys.modules[f"{pack.__name__}.nodes.generator"]
    errors = sys.modules[f"{pack.__name__}.core.errors"]  # the pack's own copy of core
    checked = sys.modules[f"{pack.__name__}.core.loaders.safe_pickle"]._checked_sources
    generator._cache.clear()
    path = with_tensor(tmp_path, forge.tensor_record(torch.ones(1), (100_000, 100_000), (0, 0)))
    sources_before = dict(checked)
    with pytest.raises(errors.CheckpointError, match="repeats stored values"):
        generator._load_cached(path, "cpu", "G_ema", "")
    assert len(generator._cache) == 0
    objects = forge.nvidia_objects(forge.load_fixture(FX))
    objects["G_ema"].meta["module_src"] = _HEAD + HOSTILE_SOURCES["lambda decorator"] + _TAIL
    with pytest.raises(errors.UnsafeCheckpointError):
        generator._load_cached(write(tmp_path, forge.dumps(objects), "src.pkl"), "cpu", "G_ema", "")
    assert len(generator._cache) == 0
    hostile = objects["G_ema"].meta["module_src"]
    assert hostile not in checked.values() and all(checked[k] == v for k, v in sources_before.items())
    genuine = forge.write_nvidia_pickle(forge.load_fixture(FX), tmp_path / "genuine.pkl")
    generator._load_cached(genuine, "cpu", "G_ema", "")  # control: a genuine file is cached
    assert len(generator._cache) == 1
    generator._cache.clear()


# --- Objects modified after they were built ------------------------------------------------------------

def test_tensor_state_cannot_bypass_the_record_checks(tmp_path):
    """BUILD on a tensor would call `Tensor.__setstate__` = `set_(storage, offset, size, stride)`."""
    fn, args = torch.ones(2).__reduce_ex__(2)[:2]
    evil = forge.Reduce(fn, *args, state=(args[0], 0, (100_000, 100_000), (0, 0)))
    refused(with_tensor(tmp_path, evil), "sets the state of a Tensor after building it", core.UnsafeCheckpointError)


def test_persistent_record_cannot_be_modified_after_its_checks(tmp_path):
    objects = forge.nvidia_objects(forge.load_fixture(FX))
    g = objects["G_ema"]
    objects["G_ema"] = forge.Reduce(g.__reduce__()[0], g.meta, state={"module_src": "import os"})
    refused(write(tmp_path, forge.dumps(objects)), "sets the state of a PersistentObject",
            core.UnsafeCheckpointError)


def test_dtype_record_cannot_be_made_without_its_checks(tmp_path):
    data = b"\x80\x04cnumpy\ndtype\n)\x81."  # numpy.dtype.__new__(numpy.dtype): NEWOBJ, written by hand
    refused(write(tmp_path, data), "creates a _DtypeRecord without its constructor", core.UnsafeCheckpointError)
