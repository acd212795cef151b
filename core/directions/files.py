"""Direction files: our tagged safetensors (save/load) and importers for the files people have (InterFaceGAN `.npy`
and `.pt` boundaries, rosinality's SeFa `factor.pt`, GANSpace `.npz`, dfl/ComfyUI-StyleGan `component_NN`
safetensors), one `load_direction_file` that tells them apart. Nothing in a file is ever executed: `.npy`/`.npz` are
read with `allow_pickle=False` after their headers are checked against the file, `.pt` with
`torch.load(weights_only=True)` after `core.files.check_torch_file`."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import (check_tensor_sizes, check_torch_file, describe, describe_error, is_torchscript_archive,
                     meta_field, read_safetensors, safetensors_format, write_safetensors)
from ..latents import GeneratorRef
from .base import (DIRECTION_SPACES, MAX_DIRECTIONS, MAX_DIRECTION_ELEMENTS, METHODS, Directions, SEFA_VARIANTS,
                   check_layer_range)

DIRECTIONS_FORMAT = "stylegan-studio-directions"
DIRECTIONS_VERSION = 1
DIRECTION_SUFFIXES = (".safetensors", ".npy", ".npz", ".pt", ".pth")
MAX_DIRECTION_FILE_BYTES = 256 << 20   # 16 M float32 values (MAX_DIRECTION_ELEMENTS) are 64 MB; a GANSpace npz with
                                       # its activation components a little more
MAX_NPZ_ENTRIES = 64                   # GANSpace writes 8
MAX_CKPT_CHARS = 1000
DIRECTIONS_HINT = ("use a direction file: ours (Discover SeFa/GANSpace Directions), InterFaceGAN .npy/.pt "
                   "boundaries, rosinality's SeFa factor.pt, a GANSpace .npz or dfl/ComfyUI-StyleGan component_NN "
                   ".safetensors")
_PathLike = Union[str, os.PathLike]


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: {why}; {DIRECTIONS_HINT}")


# --- Our format ----------------------------------------------------------------------------------

def save_directions(d: Directions, path: _PathLike) -> Path:
    """Write `d` as `.safetensors` (atomically): tensors 'vectors' [K, (num_ws,) dim] and 'scales' [K] float32;
    metadata format/version, names (JSON list), space, method, variant, generator (GeneratorRef JSON, '' if none),
    layers ('start,end' or ''), info (JSON object)."""
    meta = {"version": str(DIRECTIONS_VERSION), "names": json.dumps(list(d.names)), "space": d.space,
            "method": d.method, "variant": d.variant,
            "generator": "" if d.generator is None else json.dumps(d.generator.to_dict()),
            "layers": "" if d.layers is None else f"{d.layers[0]},{d.layers[1]}",
            "info": json.dumps(d.info, allow_nan=False)}
    return write_safetensors(path, {"vectors": d.vectors, "scales": d.scales}, format=DIRECTIONS_FORMAT,
                             metadata=meta)


def _parse_version(text: str) -> int:
    if text != str(DIRECTIONS_VERSION):
        raise ValueError(f"version {describe(text)} is not one this StyleGAN Studio reads ({DIRECTIONS_VERSION}); a "
                         f"newer StyleGAN Studio wrote it: update the pack")
    return DIRECTIONS_VERSION


def _parse_names(text: str) -> tuple:
    if len(text) > MAX_DIRECTIONS * 210:
        raise ValueError(f"{len(text):,} characters, too long for {MAX_DIRECTIONS} names")
    names = json.loads(text)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected a JSON list of names, got {describe(names)}")
    return tuple(names)


def _choice(choices: tuple):
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {choices}, got {describe(text)}")
        return text
    return parse


def _parse_generator(text: str) -> Optional[GeneratorRef]:
    return None if text == "" else GeneratorRef.from_json(text)


def _parse_layers(text: str) -> Optional[tuple]:
    if text == "":
        return None
    m = re.fullmatch(r"([0-9]{1,4}),([0-9]{1,4})", text)
    if not m:
        raise ValueError(f"expected 'start,end' or '', got {describe(text)}")
    return check_layer_range((int(m.group(1)), int(m.group(2))))


def _parse_info(text: str) -> dict:
    if len(text) > 65536:
        raise ValueError(f"{len(text):,} characters, at most 65,536")
    info = json.loads(text)
    if not isinstance(info, dict):
        raise ValueError(f"expected a JSON object, got {describe(info)}")
    return info


def _float_tensor(path: Path, tensors: dict, name: str) -> torch.Tensor:
    if name not in tensors:
        raise _refuse(path, f"the direction file has no {name!r} tensor (found {sorted(tensors)[:8]})")
    t = tensors[name]
    if not t.is_floating_point():
        raise _refuse(path, f"tensor {name!r} has dtype {t.dtype}; direction files hold float tensors")
    return t.float()


def _check_size(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"direction file not found: {path}; {DIRECTIONS_HINT}")
    size = path.stat().st_size
    if size > MAX_DIRECTION_FILE_BYTES:
        raise _refuse(path, f"the file is {size / 2**20:,.0f} MiB; direction files are at most "
                            f"{MAX_DIRECTION_FILE_BYTES >> 20} MiB (is this a generator checkpoint?)")


def load_directions(path: _PathLike) -> Directions:
    """Read a file written by `save_directions`; every tensor and metadata field is checked.

    Raises FileNotFoundError, or CheckpointError naming the file and the field: not ours, another version, a
    field missing or invalid, tensors of the wrong dtype/shape, NaN, too many directions."""
    path = Path(path)
    _check_size(path)
    hint = "save directions with Discover SeFa/GANSpace Directions"
    tensors, meta = read_safetensors(path, what="direction file", format=DIRECTIONS_FORMAT, hint=hint)
    extra = sorted(set(tensors) - {"vectors", "scales"})
    if extra:
        raise _refuse(path, f"the direction file holds unexpected tensors {extra[:8]}")
    vectors, scales = _float_tensor(path, tensors, "vectors"), _float_tensor(path, tensors, "scales")
    field = lambda key, parse, **kw: meta_field(meta, key, path, "direction file", parse=parse, hint=hint, **kw)  # noqa
    field("version", _parse_version)
    fields = dict(names=field("names", _parse_names), space=field("space", _choice(DIRECTION_SPACES)),
                  method=field("method", _choice(METHODS)), variant=field("variant", _choice(SEFA_VARIANTS + ("",))),
                  generator=field("generator", _parse_generator), layers=field("layers", _parse_layers, default=None),
                  info=field("info", _parse_info, default={}))
    return _make(path, vectors, scales=scales, **fields)


def _make(path: Path, vectors: torch.Tensor, **fields: Any) -> Directions:
    """Directions(...) with its validation errors turned into CheckpointErrors naming the file."""
    if vectors.numel() > MAX_DIRECTION_ELEMENTS:
        raise _refuse(path, f"the file holds {vectors.numel():,} direction values, at most "
                            f"{MAX_DIRECTION_ELEMENTS:,}")
    try:
        return Directions(vectors, **fields)
    except ValueError as e:
        raise _refuse(path, f"the file holds invalid directions: {e}") from e


# --- numpy files (InterFaceGAN .npy, GANSpace .npz) ------------------------------------------------

def _npy_header(f, path: Path, what: str, data_bytes: int) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of the .npy stream `f` after its header is checked: float dtype (no pickled objects), data
    size equal to what the file holds (a header cannot make numpy allocate more than the file)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except ValueError as e:
        raise _refuse(path, f"{what} is not a readable .npy array ({describe_error(e)})") from e
    if dtype.hasobject:
        raise _refuse(path, f"{what} holds Python objects (dtype {dtype}), which numpy would unpickle; direction "
                            f"arrays hold floats")
    if dtype.kind != "f":
        raise _refuse(path, f"{what} has dtype {dtype}; direction arrays hold floats")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.itemsize != data_bytes - f.tell():
        raise _refuse(path, f"{what} declares shape {list(shape)} ({count * dtype.itemsize:,} bytes) but holds "
                            f"{data_bytes - f.tell():,} bytes of data; the file is truncated or forged")
    return tuple(shape), dtype


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        _npy_header(f, path, "the array", path.stat().st_size)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _refuse(path, f"not a readable .npy array ({describe_error(e)})") from e


def _boundary(path: Path, array: torch.Tensor, name: str, space: str, source: str) -> Directions:
    """One InterFaceGAN boundary: [dim], [1, dim] or per-layer [1, num_ws, dim]."""
    shape = list(array.shape)
    if array.ndim == 1:
        array = array.unsqueeze(0)
    elif not (array.ndim in (2, 3) and shape[0] == 1):
        raise _refuse(path, f"an InterFaceGAN boundary has shape [dim], [1, dim] or [1, num_ws, dim] (e.g. [1, 512] "
                            f"or the pose boundary [1, 18, 512]), got {shape}")
    info = {"source": source, "file": path.name[:200], "shape": shape}
    return _make(path, array.float(), names=(name,), space=space, method="interfacegan", info=info)


def _ganspace_space(path: Path) -> str:
    """GANSpace names its W-space files '..._n{N}_w[_seed{S}].npz' and its Z-space files without '_w'."""
    return "w" if re.search(r"_w(_seed[0-9]+)?$", path.stem) else "z"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    size = path.stat().st_size
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise _refuse(path, f"not a readable .npz archive ({describe_error(e)})") from e
    out = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_NPZ_ENTRIES:
            raise _refuse(path, f"the archive has {len(infos):,} entries, a GANSpace file has 8")
        total = sum(i.file_size for i in infos)
        if total > MAX_DIRECTION_FILE_BYTES or total > 1032 * size + (1 << 20):
            raise _refuse(path, f"the archive inflates to {total:,} bytes from {size:,}; the file is forged")
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or "/" in name or name.count(".") != 1:
                raise _refuse(path, f"the archive holds {describe(name)}, not a .npy array; GANSpace files hold "
                                    f"lat_comp.npy, lat_stdev.npy, ...")
            with zf.open(info) as f:
                _npy_header(f, path, f"array {name!r}", info.file_size)
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in ("lat_comp", "lat_stdev", "var_ratio", "lat_mean"):
                if key in npz.files:
                    out[key] = npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise _refuse(path, f"not a readable .npz archive ({describe_error(e)})") from e
    return out


def import_ganspace(path: _PathLike, *, space: Optional[str] = None) -> Directions:
    """GANSpace components (harskish/ganspace `.npz`): row k = lat_comp[k] (unit) x lat_stdev[k], so strength 1 =
    one σ, as GANSpace's `sigma` slider; scales = lat_stdev. `space` None: from the name ('_w' = W space)."""
    path = Path(path)
    _check_size(path)
    arrays = _read_npz(path)
    if "lat_comp" not in arrays or "lat_stdev" not in arrays:
        raise _refuse(path, f"a GANSpace .npz holds 'lat_comp' and 'lat_stdev', this one {sorted(arrays)}")
    comp, stdev = torch.from_numpy(arrays["lat_comp"].astype(np.float32)), \
        torch.from_numpy(arrays["lat_stdev"].astype(np.float32))
    k = comp.shape[0] if comp.ndim else 0
    if comp.ndim == 3 and comp.shape[1] == 1:
        comp = comp[:, 0]
    if comp.ndim != 2 or stdev.shape != (k,):
        raise _refuse(path, f"GANSpace lat_comp must be [K, 1, dim] or [K, dim] with lat_stdev [K], got "
                            f"{list(arrays['lat_comp'].shape)} and {list(arrays['lat_stdev'].shape)}")
    if not torch.isfinite(stdev).all() or (stdev <= 0).any():
        raise _refuse(path, "GANSpace lat_stdev must be finite and positive")
    info: dict = {"source": "ganspace-npz", "file": path.name[:200], "space_from": "argument" if space else "name"}
    space = space or _ganspace_space(path)
    if "var_ratio" in arrays and arrays["var_ratio"].shape == (k,) and np.isfinite(arrays["var_ratio"]).all():
        info["var_ratio"] = [float(v) for v in arrays["var_ratio"]]
    names = tuple(f"ganspace_{i:02d}" for i in range(k))
    return _make(path, comp * stdev[:, None], names=names, space=space, method="ganspace", scales=stdev, info=info)


# --- torch files (.pt: InterFaceGAN tensors of e4e/NADA/HyperStyle, rosinality's factor.pt) ----------------------

def _read_torch(path: Path) -> Any:
    if is_torchscript_archive(path):
        raise _refuse(path, "a TorchScript archive, not a direction file; reading it would run code stored in it")
    data_bytes = check_torch_file(path, what="direction file", hint=DIRECTIONS_HINT)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means a damaged, foreign or unsafe file
        raise _refuse(path, f"cannot read the file safely; it holds more than tensors (code or objects that "
                            f"weights_only loading refuses) or is damaged ({describe_error(e)})") from e
    check_tensor_sizes(obj, path, data_bytes, what="direction file")
    return obj


def import_torch_directions(path: _PathLike, *, space: Optional[str] = None) -> Directions:
    """A `.pt`/`.pth`: a float tensor is an InterFaceGAN boundary ([1, 512] or the pose [1, 18, 512], as e4e, NADA
    and HyperStyle ship them); a dict {'ckpt': str, 'eigvec': [dim, dim]} is rosinality's SeFa factor (columns are
    the directions, unit, in order of singular value)."""
    path = Path(path)
    _check_size(path)
    obj = _read_torch(path)
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point():
            raise _refuse(path, f"the tensor has dtype {obj.dtype}; a boundary is a float tensor")
        return _boundary(path, obj.detach(), path.stem[:200] or "boundary", space or "w", "interfacegan-pt")
    if isinstance(obj, dict) and "eigvec" in obj:
        eig = obj["eigvec"]
        if not isinstance(eig, torch.Tensor) or not eig.is_floating_point() or eig.ndim != 2 or \
                eig.shape[0] != eig.shape[1]:
            raise _refuse(path, f"rosinality's factor.pt holds 'eigvec' [dim, dim] float, got {describe(eig)}")
        ckpt = obj.get("ckpt", "")
        info = {"source": "rosinality-factor", "file": path.name[:200],
                "ckpt": ckpt[:MAX_CKPT_CHARS] if isinstance(ckpt, str) else ""}
        k = eig.shape[1]
        return _make(path, eig.detach().float().t().contiguous(), names=tuple(f"sefa_{i:02d}" for i in range(k)),
                     space=space or "w", method="sefa", variant="rosinality", info=info)
    keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else None
    raise _refuse(path, f"holds {describe(obj) if keys is None else 'a dict with keys ' + str(keys)}: neither an "
                        f"InterFaceGAN boundary tensor nor rosinality's SeFa factor ({{'ckpt', 'eigvec'}})")


# --- safetensors: ours or dfl/ComfyUI-StyleGan's component_NN files ---------------------------------------------

_COMPONENT = re.compile(r"component_([0-9]{1,4})")


def import_dfl(path: _PathLike, *, space: Optional[str] = None) -> Directions:
    """dfl/ComfyUI-StyleGan directions: tensors 'component_00'.. each [w_dim] (or [1, w_dim]); metadata 'method'
    ('sefa': unit eigenvectors of all synthesis + ToRGB affines, our variant 'torgb'; 'ganspace': components scaled
    to 1σ, so scales = their norms) and an optional 'component_order' (JSON list of the tensor names)."""
    path = Path(path)
    _check_size(path)
    tensors, meta = read_safetensors(path, what="direction file", hint=DIRECTIONS_HINT)
    names = [k for k in tensors if _COMPONENT.fullmatch(k)]
    if not names or len(names) != len(tensors):
        other = sorted(k for k in tensors if not _COMPONENT.fullmatch(k))[:8]
        raise _refuse(path, f"not a direction file: dfl's files hold only 'component_NN' tensors, this one "
                            f"{other or 'none'}")
    if len(names) > MAX_DIRECTIONS:
        raise _refuse(path, f"{len(names):,} components, at most {MAX_DIRECTIONS}")
    if "component_order" in meta:
        order = meta_field(meta, "component_order", path, "direction file", parse=_parse_names, hint=DIRECTIONS_HINT)
        if sorted(order) != sorted(names):
            raise _refuse(path, f"metadata 'component_order' lists {list(order)[:8]}, which is not the file's "
                                f"tensors {sorted(names)[:8]}")
        names = list(order)
    else:
        names.sort(key=lambda n: int(_COMPONENT.fullmatch(n).group(1)))
    rows = []
    for n in names:
        t = tensors[n]
        if not t.is_floating_point() or not (t.ndim == 1 or (t.ndim == 2 and t.shape[0] == 1)):
            raise _refuse(path, f"tensor {n!r} is {describe(t)}; each component is a float [w_dim] vector")
        rows.append(t.reshape(-1).float())
    if len({r.numel() for r in rows}) != 1:
        raise _refuse(path, f"the components have different lengths {sorted({r.numel() for r in rows})}")
    vectors = torch.stack(rows)
    method = meta.get("method", "")
    info = {"source": "dfl-safetensors", "file": path.name[:200], "dfl_method": method[:32]}
    if method == "sefa":
        return _make(path, vectors, names=tuple(names), space=space or "w", method="sefa", variant="torgb",
                     info=info)
    if method == "ganspace":
        norms = vectors.norm(dim=1)
        if not torch.isfinite(norms).all() or (norms <= 0).any():
            raise _refuse(path, "a GANSpace component is zero or not finite")
        return _make(path, vectors, names=tuple(names), space=space or "w", method="ganspace", scales=norms,
                     info=info)
    return _make(path, vectors, names=tuple(names), space=space or "w", method="imported", info=info)


# --- One entry point -----------------------------------------------------------------------------

FORMATS = ("ours", "interfacegan-npy", "ganspace-npz", "torch", "dfl")


def detect_direction_format(path: _PathLike) -> str:
    """Which importer reads `path` (one of FORMATS), from its suffix and, for safetensors, its metadata tag."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "interfacegan-npy"
    if suffix == ".npz":
        return "ganspace-npz"
    if suffix in (".pt", ".pth"):
        return "torch"
    if suffix == ".safetensors":
        tag = safetensors_format(path)
        if tag == DIRECTIONS_FORMAT:
            return "ours"
        if tag:
            raise _refuse(path, f"a StyleGAN Studio file of another kind ({tag!r}), not directions")
        return "dfl"
    raise _refuse(path, f"unknown suffix {describe(path.suffix)}; direction files end in "
                        f"{', '.join(DIRECTION_SUFFIXES)}")


def load_direction_file(path: _PathLike, *, space: Optional[str] = None) -> Directions:
    """Any supported direction file as Directions (see the module docstring; nothing in it is executed).

    space: 'w' or 'z' for files that do not say (InterFaceGAN boundaries and factor.pt: 'w' by default; GANSpace:
        from its name, '_w' = W); None = that default. Ours and dfl's files keep their own.

    Raises FileNotFoundError, or CheckpointError naming the file and what is wrong (unknown suffix, another kind of
    file, pickled objects or code, sizes that do not match the file, wrong shapes or dtypes, NaN).
    """
    path = Path(path)
    if space is not None and space not in DIRECTION_SPACES:
        raise ValueError(f"space must be None, 'w' or 'z', got {describe(space)}")
    _check_size(path)
    kind = detect_direction_format(path)
    if kind == "ours":
        return load_directions(path)
    if kind == "interfacegan-npy":
        array = torch.from_numpy(np.ascontiguousarray(_read_npy(path)).astype(np.float32))
        return _boundary(path, array, path.stem[:200] or "boundary", space or "w", "interfacegan-npy")
    if kind == "ganspace-npz":
        return import_ganspace(path, space=space)
    if kind == "torch":
        return import_torch_directions(path, space=space)
    return import_dfl(path, space=space)


__all__ = ["DIRECTIONS_FORMAT", "DIRECTION_SUFFIXES", "FORMATS", "save_directions", "load_directions",
           "load_direction_file", "detect_direction_format", "import_ganspace", "import_torch_directions",
           "import_dfl"]
