"""Every file the pack writes, and the readback of its own files: atomic writes, tagged metadata, specific errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from .errors import CheckpointError

PathLike = Union[str, os.PathLike]
TMP_SUFFIX = ".partial"      # a file being written is `<name>.<pid>.partial`; never offered, removed on the next write


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")


def clean_partials(path: Path) -> None:
    """Remove what interrupted writes of `path` left behind (`<name>.<pid>.partial` of dead writers)."""
    for leftover in path.parent.glob(f"{path.name}.*{TMP_SUFFIX}"):
        pid = leftover.name[len(path.name) + 1:-len(TMP_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue  # another live process is writing it right now
        try:
            leftover.unlink()
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to write a temporary file next to `path`, then rename it to `path`: a reader never sees a
    half-written file under the real name, and an interrupted write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_partials(path)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _meta_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def write_safetensors(path: PathLike, tensors: Mapping[str, torch.Tensor], *, format: str,
                      metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write `tensors` (moved to CPU, made contiguous) to `path` atomically, with `metadata["format"] = format`.

    Metadata values that are not strings are stored as JSON (read them back with `meta_json`)."""
    from safetensors.torch import save_file

    meta = {"format": format}
    meta.update({str(k): _meta_value(v) for k, v in (metadata or {}).items()})
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def read_safetensors(path: PathLike, *, what: str, format: Union[str, Sequence[str], None] = None,
                     hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: (tensors on CPU, metadata).

    Raises FileNotFoundError naming `what` and the path, and CheckpointError when the file is unreadable or, with
    `format`, tagged otherwise; `hint` says how to get a right file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}" + (f"; {hint}" if hint else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any failure to read means a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable safetensors {what} ({type(e).__name__}: {e})"
                              + (f"; {hint}" if hint else "")) from e
    if format is not None:
        allowed = (format,) if isinstance(format, str) else tuple(format)
        if meta.get("format") not in allowed:
            raise CheckpointError(f"{path}: not a StyleGAN Studio {what} (format {meta.get('format')!r}, expected "
                                  f"{allowed[0]!r})" + (f"; {hint}" if hint else ""))
    return tensors, meta


def meta_json(meta: Mapping[str, str], key: str, path: PathLike, what: str, default: Any = ...) -> Any:
    """The JSON value of metadata field `key`; CheckpointError naming the file and the field if it is missing
    (and no `default` is given) or malformed."""
    if key not in meta:
        if default is not ...:
            return default
        raise CheckpointError(f"{path}: {what} metadata has no {key!r} field; the file is damaged or was not written "
                              f"by StyleGAN Studio")
    try:
        return json.loads(meta[key])
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: {what} metadata field {key!r} is not valid JSON ({e})") from e


__all__ = ["atomic_write", "clean_partials", "meta_json", "read_safetensors", "write_safetensors", "TMP_SUFFIX"]
