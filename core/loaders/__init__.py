"""Load any supported StyleGAN checkpoint safely, and save generators as `.safetensors`.

Formats are recognised by content, not by file extension:
- NVIDIA stylegan2-ada-pytorch / stylegan3 pickles and TensorFlow-era StyleGAN2 pickles (restricted
  unpickler, nothing from the file runs);
- rosinality / pSp / e4e `torch.save` checkpoints (`torch.load(weights_only=True)`);
- our `.safetensors` (architecture as JSON in the metadata).
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..config import GeneratorConfig
from ..errors import CheckpointError, UnsafeCheckpointError
from ..files import (check_tensor_sizes, check_torch_file, describe, meta_field, read_safetensors, refused_global,
                     write_safetensors)
from ..log import logger
from ..networks import PRECISIONS, Generator, GeneratorInfo
from .nvidia import generator_from_nvidia, generator_from_tf, select_network
from .rosinality import generator_from_rosinality
from .safe_pickle import PersistentObject, restricted_load
from .state import build_generator_for, load_state_strict

PathLike = Union[str, os.PathLike]

FORMAT_NAME = "stylegan-studio"
FORMAT_VERSION = "1"
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def sniff_format(path: PathLike) -> str:
    """Return 'pickle', 'torch-zip', 'safetensors' or 'unknown' from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5):
        return "pickle"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def load_generator(path: PathLike, device: Optional[Union[str, torch.device]] = None, *,
                   network: str = "G_ema", precision: str = "auto") -> Generator:
    """Load a generator from any supported checkpoint.

    Args:
        path: checkpoint file (.pkl, .pt, .pth, .safetensors; recognised by content).
        device: where to put the generator (None = CPU).
        network: for NVIDIA pickles, 'G_ema' (the averaged generator everyone samples from) or 'G'.
        precision: 'auto' (blocks trained in fp16 run in fp16 on CUDA, as trained) or 'float32'
            (everything in fp32); `G.precision` can be changed later.

    Returns:
        `Generator` in eval mode with gradients disabled; `G.info` says where it came from.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, truncated, corrupt, discriminator-only or not a StyleGAN generator.
        UnsafeCheckpointError: the file tries to run code or import something a checkpoint never needs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    path = Path(path)
    what = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {what}")
    kind = sniff_format(path)
    try:
        if kind == "safetensors":
            G = _load_safetensors(path)
        elif kind == "pickle":
            G = _load_pickle(path, network)
        elif kind == "torch-zip":
            G = _load_torch_zip(path)
        else:
            raise CheckpointError(
                f"{what}: not a StyleGAN checkpoint (unrecognised content, {path.stat().st_size} bytes); expected an "
                f"NVIDIA .pkl, a rosinality .pt or a StyleGAN Studio .safetensors file")
    except CheckpointError as e:  # UnsafeCheckpointError included: every message names the file
        if what in str(e):
            raise
        raise type(e)(f"{what}: {e}") from e
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, ZeroDivisionError,
            RecursionError) as e:
        # A converter met a value of a type or size no genuine checkpoint has (a string where NVIDIA stores an
        # int, a 0-d tensor where a matrix belongs): the file is at fault, so say so and name it.
        logger.debug("reading %s failed", what, exc_info=True)
        raise CheckpointError(f"{what}: the file's contents cannot be read as a StyleGAN generator "
                              f"({type(e).__name__}: {str(e)[:300]}); it is damaged, forged or of an unsupported "
                              f"variant; download it again or convert the original") from e
    if not G.info.name or G.info.name == "unnamed":
        G.info.name = path.stem
    G.info.source = G.info.source or what
    G = G.eval().requires_grad_(False)
    G.precision = precision
    return G.to(device) if device is not None else G


def _load_pickle(path: Path, network: str) -> Generator:
    what = str(path)
    try:
        with open(path, "rb") as f:
            data = restricted_load(f)
            if type(data) is int and data == _TORCH_LEGACY_MAGIC:  # a pre-zip torch.save file
                return _load_torch_legacy(path)
        record = select_network(data, network, what)
        if isinstance(record, PersistentObject):
            G = generator_from_nvidia(record, what)
            G.info = GeneratorInfo(source_format="nvidia-pkl")
        else:
            G = generator_from_tf(record, what)
            G.info = GeneratorInfo(source_format="nvidia-tf-pkl")
        return G
    # Corrupt opcodes or lengths surface as any of these (a bad storage record as AssertionError inside
    # torch); all mean "damaged file". The readers raise CheckpointError for everything they check, naming the
    # field; the file name is added here where it is missing.
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError, TypeError, IndexError, KeyError,
            AttributeError, OverflowError, MemoryError, AssertionError) as e:
        if isinstance(e, CheckpointError):  # UnsafeCheckpointError included: name the file if it is not named
            if what in str(e):
                raise
            raise type(e)(f"{what}: {e}") from e
        raise CheckpointError(f"{what}: the file is truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}); download it again") from e
    except RecursionError as e:  # objects nested thousands deep: nothing genuine is
        raise CheckpointError(f"{what}: the pickle nests objects thousands of levels deep; a StyleGAN checkpoint "
                              f"never does, so the file is damaged or crafted") from e
    except RuntimeError as e:  # torch failed on an embedded tensor record
        raise CheckpointError(f"{what}: a tensor in the file is corrupt ({str(e).splitlines()[0][:200]}); "
                              f"download it again") from e


def read_torch_file(path: Path):
    """A `torch.save` checkpoint (rosinality, pSp, e4e) read with `weights_only=True`, allowing only the
    `argparse.Namespace` those files carry besides tensors; CheckpointError / UnsafeCheckpointError naming the
    file otherwise (`core.files.read_state_dict` is the reader for plain state dicts)."""
    import argparse

    what = str(path)
    data_bytes = check_torch_file(path, what="checkpoint")  # declared sizes vs the file, before inflating
    try:
        # rosinality stores its command-line `args` (an argparse.Namespace); allow only that class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = refused_global(e)
        if refused is not None:
            raise UnsafeCheckpointError(f"{what}: refused by the safe loader ({refused}); the file holds Python "
                                        f"objects a weights checkpoint does not need (nothing from it was "
                                        f"executed)") from e
        raise CheckpointError(f"{what}: the file is truncated or corrupt ({str(e).splitlines()[0]}); "
                              f"download it again") from e
    # A damaged zip or record surfaces as any of these inside torch (UnicodeDecodeError is a ValueError).
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, AssertionError,
            OverflowError, MemoryError, struct.error) as e:
        raise CheckpointError(f"{what}: the file is truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); download it again") from e
    except RecursionError as e:
        raise CheckpointError(f"{what}: the file's object tree is nested too deeply to be a checkpoint") from e
    check_tensor_sizes(data, path, data_bytes, what="checkpoint")  # stride-0 / shared views expanded later
    return data


def _load_torch_zip(path: Path) -> Generator:
    G, has_avg = generator_from_rosinality(read_torch_file(path), str(path))
    G.info = GeneratorInfo(source_format="rosinality-pt")
    if not has_avg:
        logger.warning("%s has no latent_avg; estimating w_avg from 10,000 mapped samples", path)
        compute_w_avg(G)
    return G


_load_torch_legacy = _load_torch_zip


def compute_w_avg(G: Generator, num_samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Set `G.mapping.w_avg` to the mean of `num_samples` mapped z (seeded), and return it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        device = G.mapping.w_avg.device
        total = torch.zeros(G.w_dim, dtype=torch.float64)
        done = 0
        while done < num_samples:
            n = min(1000, num_samples - done)
            z = torch.randn([n, G.z_dim], generator=gen).to(device)
            c = None
            if G.c_dim:  # average over uniformly drawn classes
                c = torch.nn.functional.one_hot(torch.randint(G.c_dim, [n], generator=gen), G.c_dim).float().to(device)
            total += G.mapping(z, c)[:, 0].double().sum(0).cpu()
            done += n
        G.mapping.w_avg.copy_((total / num_samples).float())
    return G.mapping.w_avg


def _load_safetensors(path: Path) -> Generator:
    what = str(path)
    tensors, meta = read_safetensors(path, what="StyleGAN checkpoint", hint="download it again")
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(
            f"{what}: a .safetensors file without StyleGAN Studio metadata (format={describe(meta.get('format'))}, expected "
            f"{FORMAT_NAME!r} with a 'config' field); convert the original checkpoint with 'Save StyleGAN as "
            f"safetensors' (or core.convert_checkpoint)")
    hint = "convert the original checkpoint again with 'Save StyleGAN as safetensors' (or core.convert_checkpoint)"
    version = meta.get("format_version", FORMAT_VERSION)  # files from before the field existed are version 1
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{what}: StyleGAN checkpoint metadata field 'format_version' is {describe(version)}; "
                              f"this StyleGAN Studio reads version {FORMAT_VERSION!r}: update the pack, or {hint}")
    config = meta_field(meta, "config", path, "StyleGAN checkpoint", parse=GeneratorConfig.from_json, hint=hint)
    G = build_generator_for(config, tensors, what, optional=())  # names and shapes checked before allocating
    load_state_strict(G, tensors, what, optional=())
    info = meta_field(meta, "info", path, "StyleGAN checkpoint", default={}, hint=hint)
    G.info = _info_from_meta(info, path, hint)
    return G


def _info_from_meta(info: Any, path: Path, hint: str) -> GeneratorInfo:
    """`GeneratorInfo` from the 'info' metadata object; CheckpointError naming the file and the field for a wrong
    JSON type."""
    def refuse(field: str, value: Any, expected: str) -> CheckpointError:
        return CheckpointError(f"{path}: StyleGAN checkpoint metadata field {field} is a {type(value).__name__}, "
                               f"expected {expected}; {hint}")

    if not isinstance(info, dict):
        raise refuse("'info'", info, "a JSON object")
    values = {}
    for key, default in (("name", path.stem), ("source", str(path)), ("source_format", "safetensors"),
                         ("license", "")):
        value = info.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            raise refuse(f"'info.{key}'", value, "a string")
        values[key] = value
    extra = info.get("extra", {})
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise refuse("'info.extra'", extra, "a JSON object")
    # Keys starting with '_' are what the pack computes from the weights (the fingerprint latents and caches are
    # matched by): never taken from a file, which could claim another generator's.
    extra = {k: v for k, v in extra.items() if not str(k).startswith("_")}
    return GeneratorInfo(name=values["name"], source=values["source"],
                         source_format=values["source_format"] or "safetensors", license=values["license"],
                         extra=extra)


def save_generator(G: Generator, path: PathLike) -> Path:
    """Write `G` as `.safetensors` with its architecture and provenance in the metadata.

    The file is written to a temporary name and renamed (`files.write_safetensors`), so an interrupted save never
    leaves a half-written checkpoint behind, and the old file stays as it was.
    """
    state = {k: v.detach().to("cpu", torch.float32) for k, v in G.state_dict().items()}
    info = {"name": G.info.name, "source": G.info.source, "source_format": G.info.source_format,
            "license": G.info.license, "extra": {k: v for k, v in G.info.extra.items() if not k.startswith("_")}}
    return write_safetensors(path, state, format=FORMAT_NAME,
                             metadata={"format_version": FORMAT_VERSION, "config": G.config.to_json(), "info": info})


def convert_checkpoint(src: PathLike, dst: PathLike, *, network: str = "G_ema") -> Path:
    """Load any supported checkpoint and save it as our `.safetensors` (see `load_generator`)."""
    G = load_generator(src, network=network)
    return save_generator(G, dst)


__all__ = ["load_generator", "save_generator", "convert_checkpoint", "compute_w_avg", "sniff_format", "read_torch_file"]
