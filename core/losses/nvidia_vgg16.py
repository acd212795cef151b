"""NVIDIA's `vgg16.pt` (stylegan2-ada-pytorch's metrics network) read as data and rebuilt as our LPIPS-VGG.

The file is a TorchScript archive: a zip with the network's code (`code/`), its tensors (`data/N`) and a
pickle (`data.pkl`) of the module tree. `torch.jit.load` would run that code, so we never call it: a
restricted unpickler reads `data.pkl`, records every module as a plain object, rebuilds tensors from the
zip's raw storages and refuses any other global. The computation is rebuilt in our own `LPIPS`.

What the file computes, from public code (its TorchScript source could not be read here):
- torch-fidelity's test `tests/torch_pure/lpips/test_lpips.py` checks that
  `(f(x) - f(y)).square().sum(-1)`, with `f = vgg16(img, resize_images=False, return_lpips=True)` on
  [0, 255] images, equals LPIPS v0.1-VGG (torchvision's VGG16 and lpips' `vgg.pth`) to 1e-5 at 32, 100
  and 299 px; NVIDIA's projector.py and PPL use exactly that call.
- genforce's perceptual model (`models/perceptual_model.py`) loads the file's tensors
  `layers.conv1..conv13` as VGG16's conv1_1..conv5_3 (ImageNet-normalised RGB input), `layers.fc1..fc3`
  as the classifier and `lpips0..lpips4` (`[C, 1, 1]`) as the LPIPS linear weights, and publishes the
  file's SHA-256 (also used by other projects to pin it).
So `load_nvidia_vgg16` builds LPIPS-VGG from exactly those tensors, checking every name and shape, and by
default also the SHA-256. Only the `return_lpips=True, resize_images=False` call is provided (the one the
projector and PPL use): the output is a flat vector per image whose squared distance is LPIPS; its
element order may differ from NVIDIA's, which changes no distance.
"""

from __future__ import annotations

import collections
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from ..errors import CheckpointError, MissingWeightsError, UnsafeCheckpointError
from ..files import describe, describe_error
from ..loaders.safe_pickle import GuardedUnpickler, check_declared_lengths, rebuild_tensor
from .perceptual import LPIPS, LPIPS_CHANNELS, load_backbone_state

PathLike = Union[str, Path]

NVIDIA_VGG16_FILE = "vgg16.pt"
NVIDIA_VGG16_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"
NVIDIA_VGG16_SHA256 = "b437eb095feaeb0b83eb3fa11200ebca4548ee39a07fb944a417ddc516cc07c3"

# torchvision `features` index of VGG16 conv k (1-based, conv1_1 = 1 ... conv5_3 = 13).
_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


class NvidiaVGG16(nn.Module):
    """Stand-in for NVIDIA's `vgg16.pt` called as `vgg16(img, resize_images=False, return_lpips=True)`:
    images `[N, 3, H, W]` in [0, 255] -> `[N, D]` features whose squared distance is LPIPS-VGG v0.1.
    `self.lpips` is the same network as an `LPIPS` on [-1, 1] images."""

    def __init__(self, lpips: LPIPS):
        super().__init__()
        if lpips.net != "vgg":
            raise ValueError(f"NVIDIA's vgg16.pt is LPIPS-VGG, got LPIPS-{lpips.net}")
        self.lpips = lpips

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_features: bool = False,
                return_lpips: bool = False) -> torch.Tensor:
        # Defaults as in NVIDIA's file, so that calls written for it read the same here.
        if resize_images or return_features or not return_lpips:
            raise ValueError("only vgg16(img, resize_images=False, return_lpips=True) is supported (the call "
                             "NVIDIA's projector and PPL make); for the 4096-d metric features use NVIDIA's "
                             "metric code")
        feats = self.lpips.lpips_features(img / 127.5 - 1)  # [0, 255] -> [-1, 1]
        return torch.cat([f.flatten(1) for f in feats], dim=1)


def load_nvidia_vgg16(path: PathLike, *, check_hash: bool = True, device=None) -> NvidiaVGG16:
    """Read NVIDIA's `vgg16.pt` without running any of its code and rebuild it (see the module docstring).

    Args:
        path: the file (from `NVIDIA_VGG16_URL`).
        check_hash: refuse a file whose SHA-256 is not the published one (`NVIDIA_VGG16_SHA256`); turn off
            for a copy re-saved with the same tensors (names and shapes are checked either way).

    Raises:
        MissingWeightsError: no such file (the message says where to get it).
        CheckpointError: another file, a different hash, or a tensor missing or of the wrong shape.
        UnsafeCheckpointError: the archive's pickle asks for anything but modules and tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{path}: no such file; download {NVIDIA_VGG16_URL} and save it there as "
                                  f"{NVIDIA_VGG16_FILE}")
    if check_hash:
        digest = _sha256(path)
        if digest != NVIDIA_VGG16_SHA256:
            raise CheckpointError(f"{path}: SHA-256 {digest} is not that of NVIDIA's vgg16.pt "
                                  f"({NVIDIA_VGG16_SHA256}); download it again from {NVIDIA_VGG16_URL}, or pass "
                                  f"check_hash=False for a copy re-saved with the same tensors")
    tensors = read_torchscript_tensors(path)
    backbone, lin = {}, {}
    c_in = 3
    shapes = {}
    for k, idx in enumerate(_CONV_INDEX, start=1):
        c_out = 64 if k <= 2 else 128 if k <= 4 else 256 if k <= 7 else 512
        shapes[f"layers.conv{k}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"layers.conv{k}.bias"] = (c_out,)
        backbone[f"features.{idx}.weight"] = f"layers.conv{k}.weight"
        backbone[f"features.{idx}.bias"] = f"layers.conv{k}.bias"
        c_in = c_out
    for k, c in enumerate(LPIPS_CHANNELS["vgg"]):
        shapes[f"lpips{k}"] = (c, 1, 1)
        lin[f"lins.{k}.weight"] = f"lpips{k}"
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise CheckpointError(f"{path}: not NVIDIA's vgg16.pt: tensors {missing[:4]}{' ...' if len(missing) > 4 else ''}"
                              f" are missing (found {sorted(tensors)[:6]}{' ...' if len(tensors) > 6 else ''})")
    for name, shape in shapes.items():
        t = tensors[name]
        if tuple(t.shape) != shape and not (name.startswith("lpips") and t.numel() == shape[0]):
            raise CheckpointError(f"{path}: tensor {name} has shape {list(t.shape)}, expected {list(shape)}")
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: tensor {name} is {t.dtype}, expected floating point")
    model = LPIPS("vgg")
    load_backbone_state(model.features, {k: tensors[v].float() for k, v in backbone.items()},
                        f"{path} (NVIDIA vgg16.pt)")
    model.load_lin_state({k: tensors[v].float().reshape(1, -1, 1, 1) for k, v in lin.items()},
                         f"{path} (NVIDIA vgg16.pt LPIPS weights)")
    out = NvidiaVGG16(model).eval().requires_grad_(False)
    return out.to(device) if device is not None else out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Reading a TorchScript archive as data


_MAX_PICKLE_BYTES = 64 << 20  # vgg16.pt's data.pkl is a few kilobytes


class ScriptObject:
    """Stand-in for a TorchScript object (`__torch__.<qualname>`): keeps the state it was pickled with."""

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"ScriptObject({self.qualname})"


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _tensor_rebuilders(where: str) -> dict[tuple[str, str], Any]:
    """`_rebuild_tensor_v2` / `_rebuild_parameter` for one archive: `rebuild_tensor` (the one checked "tensor
    record -> tensor" path), with errors naming the file."""

    def rebuild(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, requires_grad: bool = False,
                hooks: Any = None, *metadata: Any) -> torch.Tensor:
        return rebuild_tensor(storage, offset, size, stride, hooks=hooks, where=where)

    def parameter(data: torch.Tensor, requires_grad: bool = False, hooks: Any = None) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise UnsafeCheckpointError(f"{where}: a parameter record in the archive holds no tensor")
        return rebuild(data, data.storage_offset(), tuple(data.shape), data.stride(), requires_grad, hooks)

    return {("torch._utils", "_rebuild_tensor_v2"): rebuild, ("torch._utils", "_rebuild_parameter"): parameter}


def _build_list(items: Any) -> list:
    return list(items)


def _restore_type_tag(value: Any, type_str: Any = None) -> Any:
    return value


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _build_list,
    ("torch.jit._pickle", "build_doublelist"): _build_list,
    ("torch.jit._pickle", "build_boollist"): _build_list,
    ("torch.jit._pickle", "build_tensorlist"): _build_list,
    ("torch.jit._pickle", "build_genericlist"): _build_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


class _ArchiveUnpickler(GuardedUnpickler):
    BUILD_TARGETS = NEW_TARGETS = (ScriptObject,)  # modules are restored as NEWOBJ + BUILD(state)

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, where: str):
        super().__init__(io.BytesIO(data), max_bytes=len(data))
        self.archive, self.prefix, self.where = archive, prefix, where
        self.allowed = {**_ALLOWED, **_tensor_rebuilders(where)}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name[:100], (ScriptObject,), {"qualname": f"{module[:100]}.{name[:100]}"})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise UnsafeCheckpointError(f"{self.where}: the archive's pickle asks for {module[:100]}.{name[:100]}, which a "
                                    f"network's weights never need; nothing from the file was run")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"{self.where}: unexpected persistent record {describe(pid)} in the pickle")
        _, stype, key, _location, numel = pid
        if not isinstance(key, str) or type(numel) is not int or not 0 <= numel < 1 << 48:
            raise CheckpointError(f"{self.where}: malformed storage record {describe(pid)} in the archive's pickle; "
                                  f"the file is damaged")
        name = f"{self.prefix}/data/{key}"
        itemsize = torch.empty((), dtype=stype.dtype).element_size()
        try:
            declared = self.archive.getinfo(name).file_size
        except KeyError as e:
            raise CheckpointError(f"{self.where}: the archive lacks tensor storage {name}") from e
        # Checked before reading: the zip entry's size decides how much is inflated.
        if declared != numel * itemsize:
            raise CheckpointError(f"{self.where}: storage {name} holds {declared} bytes, expected "
                                  f"{numel * itemsize}; the file is damaged")
        raw = self.archive.read(name)
        if len(raw) != numel * itemsize:
            raise CheckpointError(f"{self.where}: storage {name} holds {len(raw)} bytes, expected "
                                  f"{numel * itemsize}; the file is damaged")
        return torch.frombuffer(bytearray(raw), dtype=stype.dtype) if raw else torch.empty(0, dtype=stype.dtype)


def read_torchscript_tensors(path: PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the modules in a TorchScript archive, by dotted name (as `state_dict()` names
    them), read without loading or running the archive's code."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a TorchScript archive (zip) ({e}); download it again") from e
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: not a TorchScript archive (no single <name>/data.pkl inside)")
        prefix = pkls[0].split("/")[0]
        order = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in archive.namelist() \
            else "little"
        if order != "little":
            raise CheckpointError(f"{path}: tensors stored {order}-endian; only little-endian archives are read")
        size = archive.getinfo(pkls[0]).file_size
        if size > _MAX_PICKLE_BYTES:
            raise CheckpointError(f"{path}: the archive's {pkls[0]} declares {size} bytes (a module tree's pickle "
                                  f"is far under {_MAX_PICKLE_BYTES}); not a network archive")
        try:
            data = archive.read(pkls[0])
            check_declared_lengths(io.BytesIO(data), f"{path}: the archive's {pkls[0]}")
            root = _ArchiveUnpickler(data, archive, prefix, str(path)).load()
        except (UnsafeCheckpointError, CheckpointError):
            raise
        except Exception as e:  # noqa: BLE001 - a malformed pickle in any way
            raise CheckpointError(f"{path}: the archive's data.pkl cannot be read ({describe_error(e)})") from e
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors, depth=0, seen=set(), where=str(path))
    return tensors


def _collect(obj: Any, prefix: str, out: dict, depth: int, seen: set, where: str) -> None:
    if depth > 32 or id(obj) in seen:  # a cycle, or a record shared many times (the walk would multiply)
        raise CheckpointError(f"{where}: the module tree in the archive is nested too deeply or repeats a module "
                              f"(at {prefix[:80]}); the file is damaged")
    seen.add(id(obj))
    if isinstance(obj, ScriptObject) and isinstance(getattr(obj, "state", None), dict):
        for name, value in obj.state.items():
            if not isinstance(name, str):  # str() of a key made of shared tuples would be exponential
                raise CheckpointError(f"{where}: a module in the archive has an attribute named "
                                      f"{describe(name)}, not a text name (at {prefix[:80]}); the file is damaged")
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
            elif isinstance(value, ScriptObject):
                _collect(value, f"{prefix}{name}.", out, depth + 1, seen, where)
