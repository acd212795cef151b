"""Every file the pack writes and every weight file it reads: atomic tagged safetensors, one safe state-dict reader,
one weight-file finder and one downloader (URLs with a hash check, the Hugging Face Hub), with specific errors."""

from __future__ import annotations

import collections
import io
import itertools
import json
import os
import pickle
import re
import stat
import socket
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .errors import CheckpointError, MissingDependencyError, MissingWeightsError
from .log import logger

PathLike = Union[str, os.PathLike]
TMP_SUFFIX = ".partial"      # a file being written is `<name>.<pid>-<n>.partial`; never offered, removed later
LEGACY_TMP_SUFFIXES = (".partial", ".tmp")  # `<name>.partial` / `<name>.tmp` of versions before this module
STALE_SECONDS = 24 * 3600    # a temporary file this old is a leftover even if its writer's pid was reused
ORPHAN_GRACE_SECONDS = 600   # another file's temporary file of a dead writer is removed once untouched this long

# ------------------------------------------------------------------------------------------------
# Atomic writes

_counter = itertools.count()
# `<pid>[-<n>]` after `<name>.`, optionally followed by the `.<32 hex>.partial` torch.hub's downloader appends to
# the destination we give it (`download_url` writes through `atomic_write`).
_WRITER = re.compile(r"(\d+)(-\d+)?(?:\.partial\.[0-9a-f]{32})?")
# Any file's temporary file in the folder: the `-<n>` counter form only (what `_tmp_name` writes), so a user's
# `notes.2.partial` is never taken for ours.
_ORPHAN = re.compile(r".+\.(\d+)-\d+\.partial(?:\.[0-9a-f]{32}\.partial)?")


def _tmp_name(path: Path) -> Path:
    # The pid says whether the writer still runs; the counter keeps two threads of one process apart.
    return path.with_name(f"{path.name}.{os.getpid()}-{next(_counter)}{TMP_SUFFIX}")


def _writer_pid(leftover: Path, path: Path) -> Optional[int]:
    """The writer's pid of `<name>.<pid>[-<n>].partial` (or torch.hub's `<name>.<pid>-<n>.partial.<hex>.partial`
    inside it); None for another file's (`<name>.bak.<pid>.partial`)."""
    m = _WRITER.fullmatch(leftover.name[len(path.name) + 1:-len(TMP_SUFFIX)])
    return int(m.group(1)) if m else None


def _age(p: Path) -> Optional[float]:
    """Seconds since `p` was last written; None if it is gone (or unreadable)."""
    try:
        return time.time() - p.stat().st_mtime
    except OSError:
        return None


def clean_partials(path: PathLike) -> list[Path]:
    """Remove what interrupted writes left behind in the folder of `path`; returns what was removed.

    - Of `path` itself: `<name>.<pid>[-<n>].partial` (and torch.hub's download temporaries inside them) of writers
      that no longer run, or older than a day (`STALE_SECONDS`: the pid may have been reused), and the legacy
      `<name>.partial` / `<name>.tmp` of versions before this module.
    - Of every other file in the same folder: only our own temporary names (`<file>.<pid>-<n>.partial`, plus
      torch.hub's inside them), when the writer is gone AND the file has not been written for
      `ORPHAN_GRACE_SECONDS` (a writer of another process namespace, e.g. a second container on a shared model
      folder, looks dead here but keeps its file fresh), or when it is a day old. Files of live writers, other
      programs' temporary names and anything in other folders are never touched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    own_prefix = path.name + "."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if not name.endswith(TMP_SUFFIX):
            continue
        leftover = path.parent / name
        if name.startswith(own_prefix):
            pid = _writer_pid(leftover, path)
        else:
            pid = None
        if pid is not None:  # a leftover of this very file: its writer being gone is enough
            age = _age(leftover)
            if age is None or (age < STALE_SECONDS and _pid_alive(pid)):
                continue  # gone already, or a live writer (this process's other threads included) is writing it
        else:
            m = _ORPHAN.fullmatch(name)
            if m is None:
                continue  # not our temporary name (another program's, or a user's file)
            age = _age(leftover)
            if age is None or age < ORPHAN_GRACE_SECONDS or (age < STALE_SECONDS and _pid_alive(int(m.group(1)))):
                continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue  # never follow a link out of the folder to delete its target
        except OSError:
            continue
        if _unlink(leftover):
            removed.append(leftover)
    for suffix in LEGACY_TMP_SUFFIXES:
        legacy = path.with_name(path.name + suffix)
        if legacy.is_file() and not legacy.is_symlink() and _unlink(legacy):
            removed.append(legacy)
    if removed:
        logger.info("removed %d leftover(s) of interrupted writes in %s: %s", len(removed), path.parent,
                    ", ".join(p.name for p in removed))
    return removed


def glob_escape(name: str) -> str:
    """`name` with glob's special characters (`*?[`) matched literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _unlink(p: Path) -> bool:
    try:
        p.unlink()
        return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return True  # not a process id: never treat it as a dead writer
    try:
        import psutil  # ComfyUI depends on it; the only safe test on Windows
        return bool(psutil.pid_exists(pid))
    except ImportError:
        pass
    if os.name == "nt":
        return True  # os.kill(pid, 0) would send CTRL_C_EVENT there: leave the file to the age rule
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # no permission to signal it: it exists; or not a pid at all
        return True
    return True


def _fsync(path: Path) -> None:
    """Flush `path` to disk before it is renamed over the old file, so a power cut leaves one or the other."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported on this filesystem: the rename is still atomic
    finally:
        os.close(fd)


_new_file_mode: Optional[int] = None


def _set_mode(tmp: Path, path: Path) -> None:
    """Give the written file the permissions a plain `open(path, 'w')` would: the old file's when it replaces one,
    else 0o666 minus the umask. Some writers (safetensors' `save_file`) create 0o600 files, which other users and
    services sharing ComfyUI's output folder then cannot read."""
    global _new_file_mode
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        if _new_file_mode is None:  # the umask, read without changing it (os.umask would, for every thread)
            probe = _tmp_name(tmp)
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            os.close(fd)
            try:
                _new_file_mode = stat.S_IMODE(os.stat(probe).st_mode)
            finally:
                _unlink(probe)
        mode = _new_file_mode
    try:
        os.chmod(tmp, mode)
    except OSError:  # a filesystem without permissions (FAT, some network shares)
        pass


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to write a temporary file next to `path`, then rename it to `path`: a reader never sees a
    half-written file under the real name, and a write that fails (an exception, a cancel, a full disk) leaves
    the old file as it was and no temporary file. Leftovers of killed writers in that folder are removed first
    (`clean_partials`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_partials(path)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        _fsync(tmp)
        _set_mode(tmp, path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            _unlink(tmp)
    return path


# ------------------------------------------------------------------------------------------------
# Tagged safetensors (the pack's own files)


def _meta_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def write_safetensors(path: PathLike, tensors: Mapping[str, torch.Tensor], *, format: str,
                      metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write `tensors` (detached, moved to CPU, made contiguous) to `path` atomically, with
    `metadata["format"] = format`.

    Metadata values that are not strings are stored as JSON (read them back with `meta_json`)."""
    from safetensors.torch import save_file

    meta = {"format": format}
    meta.update({str(k): _meta_value(v) for k, v in (metadata or {}).items()})
    if meta["format"] != format:
        raise ValueError(f"metadata must not override the format tag {format!r}")
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


_FORMAT_CACHE: "collections.OrderedDict[tuple, Optional[str]]" = collections.OrderedDict()
_FORMAT_CACHE_SIZE = 4096
MAX_LISTED_HEADER = 1 << 20  # the pack's own files have headers of a few KB


def safetensors_format(path: PathLike) -> Optional[str]:
    """The `format` tag in a .safetensors file's metadata, read from its header only (cached by path, size and
    modification time), so file pickers can list each kind of the pack's files apart; '' for a safetensors file
    without a tag, None when the file cannot be read as safetensors (its loader then says why)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _FORMAT_CACHE:
        _FORMAT_CACHE.move_to_end(key)
        return _FORMAT_CACHE[key]
    found: Optional[str] = None
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if 0 < n <= min(MAX_LISTED_HEADER, st.st_size - 8):
                header = json.loads(f.read(n))
                meta = header.get("__metadata__") if isinstance(header, dict) else None
                tag = meta.get("format", "") if isinstance(meta, dict) else ""
                found = tag if isinstance(tag, str) else ""
    except (OSError, ValueError, RecursionError):
        found = None
    _FORMAT_CACHE[key] = found
    while len(_FORMAT_CACHE) > _FORMAT_CACHE_SIZE:
        _FORMAT_CACHE.popitem(last=False)
    return found


def _with_hint(text: str, hint: str) -> str:
    return text + (f"; {hint}" if hint else "")


def read_safetensors(path: PathLike, *, what: str, format: Union[str, Sequence[str], None] = None,
                     hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: (tensors on CPU, metadata).

    Args:
        what: what the file should be ("latent", "weight delta"), for the messages.
        format: the format tag(s) accepted; None accepts any file.
        hint: how to get a right file (appended to every message).

    Raises:
        FileNotFoundError: naming `what` and the path.
        CheckpointError: the file is unreadable (truncated, not safetensors), or tagged with another format (the
            message names the file, the tag found and the tag expected).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_with_hint(f"{what} not found: {path}", hint))
    try:
        with safe_open(str(path), framework="pt") as f:  # one open: metadata and tensors of the same file version
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any failure to read means a damaged or foreign file
        raise CheckpointError(_with_hint(f"{path}: not a readable safetensors {what}, the file is truncated or "
                                         f"corrupt ({type(e).__name__}: {e})", hint)) from e
    if format is not None:
        allowed = (format,) if isinstance(format, str) else tuple(format)
        found = meta.get("format")
        if found not in allowed:
            expected = " or ".join(repr(a) for a in allowed)
            raise CheckpointError(_with_hint(f"{path}: not a StyleGAN Studio {what} (format {found!r}, expected "
                                             f"{expected})", hint))
    return tensors, meta


def meta_field(meta: Mapping[str, str], key: str, path: PathLike, what: str, *,
               parse: Callable[[str], Any] = json.loads, default: Any = ..., hint: str = "") -> Any:
    """`parse(meta[key])`; CheckpointError naming the file and the field if it is missing (and no `default` is
    given) or `parse` refuses it (ValueError, TypeError, KeyError). `hint` says how to get a right file."""
    hint = hint or "write it again, or use a file StyleGAN Studio wrote"
    if key not in meta:
        if default is not ...:
            return default
        raise CheckpointError(f"{path}: {what} metadata has no {key!r} field; the file is damaged or was not written "
                              f"by StyleGAN Studio; {hint}")
    try:
        return parse(meta[key])
    except (TypeError, ValueError, KeyError, RecursionError) as e:
        if isinstance(e, CheckpointError) and str(path) in str(e):
            raise
        why = str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"
        if isinstance(e, RecursionError):
            why = "nested too deeply"
        raise CheckpointError(f"{path}: {what} metadata field {key!r} is invalid ({why}); the file is damaged or "
                              f"was not written by StyleGAN Studio; {hint}") from e


def meta_json(meta: Mapping[str, str], key: str, path: PathLike, what: str, default: Any = ..., *,
              hint: str = "") -> Any:
    """The JSON value of metadata field `key`; CheckpointError naming the file and the field if it is missing
    (and no `default` is given) or malformed."""
    return meta_field(meta, key, path, what, default=default, hint=hint)


# ------------------------------------------------------------------------------------------------
# Weight files of other projects: find, read, download

def weight_names(file_name: str) -> list[str]:
    """The published file name, then the same name as `.safetensors` (both are accepted everywhere)."""
    return [file_name, Path(file_name).with_suffix(".safetensors").name]


def find_weights(names: Iterable[str], dirs: Sequence[PathLike]) -> Optional[Path]:
    """The first existing file `dir / name`: folders in order (the first folder that has one of `names` wins),
    then names in order within a folder. None when no folder has any."""
    names = list(names)
    for d in dirs:
        for name in names:
            p = Path(d) / name
            if p.is_file():
                return p
    return None


def is_torchscript_archive(path: PathLike) -> bool:
    """Whether `path` is a TorchScript archive (a zip with a `<name>/code/` folder): loading one runs its code."""
    path = Path(path)
    if path.suffix == ".safetensors" or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/", 2)[1:2] == ["code"] for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def refused_global(error: BaseException) -> Optional[str]:
    """The line of a `torch.load(weights_only=True)` error that names a refused global, if there is one."""
    lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
    return lines[0] if lines else None


def _load_error(e: BaseException) -> str:
    """One line for why torch.load / safetensors refused a file (torch's own text suggests weights_only=False,
    which would run the file's code: never repeat that)."""
    refused = refused_global(e)
    if refused is not None:
        return (f"it holds Python objects, not only tensors ({refused.split('. ')[0]}); nothing from the file was "
                f"executed")
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"


# Bounds on what a torch.save file may make the reader allocate before its contents are checked.
MAX_INFLATE_RATIO = 16          # a zip entry's inflated bytes beyond its stored bytes, relative to the file size
MAX_INFLATE_BYTES = 1 << 30     # and never more than 1 GiB beyond the file size (torch.save never compresses)
MAX_ZIP_ENTRIES = 65536         # a checkpoint with its optimiser state has a few thousand
MAX_EXPANDED_NUMEL = 65536      # a tensor may show more elements than its storage (a stride-0 view) up to this
_DEFLATE_MAX_RATIO = 1032       # deflate cannot expand more than this: a larger claim is a lie
_ZIP_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # signature ... name length, extra length (30 bytes)
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch.save file
_STORAGE_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                  "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                  "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1}


def check_torch_file(path: PathLike, *, what: str = "weights", hint: str = "download it again") -> int:
    """Check a `torch.save` file's declared sizes against its real size before torch reads it, and return how
    many bytes of data it may inflate to (for `check_tensor_sizes`).

    A zip archive (torch >= 1.6): the central directory is read (nothing is inflated): at most MAX_ZIP_ENTRIES
    entries, no duplicate names, stored or deflated only, every local header agreeing with the central
    directory and inside the file, and all entries together inflating to at most the file size plus
    min(MAX_INFLATE_RATIO x the file size, MAX_INFLATE_BYTES). torch's reader (miniz) allocates each record at
    the size the central directory declares and checks each record against the size the pickle declares, so
    both are bounded by this. A legacy (pre-zip) file: its pickle is walked with stubs (nothing is imported or
    called) to sum the storage sizes it declares, which torch would allocate before reading: they must fit in
    the file.

    Raises:
        CheckpointError: naming the file and what it declares versus what it holds.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return _check_torch_zip(path, size, what, hint)
    _check_torch_legacy(path, size, what, hint)
    return size


def _check_torch_zip(path: Path, size: int, what: str, hint: str) -> int:
    def refuse(why: str) -> CheckpointError:
        return CheckpointError(_with_hint(f"{path}: not a readable {what} file: {why}", hint))

    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise refuse(f"the file is truncated or corrupt (its zip directory is damaged: {type(e).__name__}: {e})") from e
    if len(infos) > MAX_ZIP_ENTRIES:
        raise refuse(f"{len(infos)} zip entries, at most {MAX_ZIP_ENTRIES} expected")
    names: set[str] = set()
    total = 0
    with open(path, "rb") as f:
        for info in infos:
            if info.filename in names:
                raise refuse(f"the zip entry {info.filename!r} appears twice")
            names.add(info.filename)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise refuse(f"zip entry {info.filename!r} uses compression method {info.compress_type}; torch "
                             f"files are stored or deflated")
            stored, inflated = info.compress_size, info.file_size
            if info.compress_type == zipfile.ZIP_STORED and stored != inflated:
                raise refuse(f"zip entry {info.filename!r} is stored uncompressed but declares {stored:,} stored "
                             f"and {inflated:,} inflated bytes")
            if inflated > _DEFLATE_MAX_RATIO * stored + 1024:
                raise refuse(f"zip entry {info.filename!r} declares {inflated:,} bytes from {stored:,} compressed "
                             f"bytes, more than deflate can produce")
            f.seek(info.header_offset)
            local = f.read(_ZIP_LOCAL_HEADER.size)
            if len(local) < _ZIP_LOCAL_HEADER.size:
                raise refuse(f"zip entry {info.filename!r} starts beyond the end of the file; the file is truncated or corrupt")
            (sig, _, flags, method, _, _, _, l_stored, l_inflated, name_len, extra_len) = _ZIP_LOCAL_HEADER.unpack(local)
            if sig != b"PK\x03\x04" or method != info.compress_type:
                raise refuse(f"the local header of zip entry {info.filename!r} disagrees with the zip directory; the file "
                             f"is truncated or corrupt")
            if (l_stored, l_inflated) == (0xFFFFFFFF, 0xFFFFFFFF):  # ZIP64: the sizes are in an extra field
                f.seek(name_len, 1)
                l_inflated, l_stored = _zip64_sizes(f.read(extra_len), l_inflated, l_stored)
            # Sizes in the local header are 0 with a data descriptor (flag bit 3): the directory's then count.
            if not flags & 0x08 and (l_stored, l_inflated) != (stored, inflated):
                raise refuse(f"zip entry {info.filename!r} declares {l_inflated:,} bytes in its local header but "
                             f"{inflated:,} in the zip directory")
            end = info.header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len + stored
            if end > size:
                raise refuse(f"zip entry {info.filename!r} ends at byte {end:,}, beyond the end of the file "
                             f"({size:,} bytes); the file is truncated or corrupt")
            total += inflated
    allowed = size + min(MAX_INFLATE_RATIO * size + (1 << 20), MAX_INFLATE_BYTES)
    if total > allowed:
        raise refuse(f"its zip entries inflate to {total:,} bytes from a {size:,}-byte file (at most {allowed:,} "
                     f"accepted); torch.save never compresses, so this is a zip bomb or a damaged file")
    return total


def _zip64_sizes(extra: bytes, inflated: int, stored: int) -> tuple[int, int]:
    """(inflated, stored) from the ZIP64 extra field (id 1) of a local header; the given values if there is none."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, pos)
        if tag == 1 and n >= 16:
            return struct.unpack_from("<QQ", extra, pos + 4)
        pos += 4 + n
    return inflated, stored


class _BoundedReader(io.RawIOBase):
    """A read-only view of an open file that never returns (or makes the unpickler allocate for) more than the
    bytes left in it, whatever length an opcode declares."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self.size - self.f.tell()
        data = self.f.read(max(0, min(len(b), left)))
        b[:len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.size - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        return self.f.readline(1 << 16 if limit is None or limit < 0 else min(limit, 1 << 16))


class _Stub:
    """Stands for any object of a legacy torch pickle while its storage sizes are summed: accepts anything."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _StorageScan(pickle.Unpickler):
    """Unpickler that resolves every global to a `_Stub` subclass (nothing is imported or called) and records the
    storages a legacy torch pickle declares: {key: bytes}."""

    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, int] = {}

    def find_class(self, module, name):
        return type(str(name)[:64], (_Stub,), {"global_name": f"{module}.{name}"})

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind = getattr(pid[1], "global_name", "").rsplit(".", 1)[-1]
            numel = pid[4]
            if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
                raise pickle.UnpicklingError(f"storage {pid[2]!r} declares {numel!r} elements")
            self.storages[str(pid[2])] = numel * _STORAGE_BYTES.get(kind, 8)
        return _Stub()


def _check_torch_legacy(path: Path, size: int, what: str, hint: str) -> None:
    """Sum the storages a legacy torch.save file declares (it is: magic, protocol, sys_info, the object, the
    storage keys, then the raw storages) and refuse more than the file holds. Files that are not legacy torch
    files are left to torch.load, which refuses them."""
    with open(path, "rb") as f:
        if f.read(1) != b"\x80":
            return  # not a pickle: torch.load refuses it
    try:
        with open(path, "rb") as f:
            scan = _StorageScan(_BoundedReader(f, size))
            if scan.load() != _TORCH_LEGACY_MAGIC:
                return  # not a legacy torch file (torch.save writes this number first): torch.load refuses it
            scan.load()  # protocol version
            scan.load()  # sys_info
            scan.load()  # the object, with the persistent storage records
    except RecursionError as e:
        raise CheckpointError(_with_hint(f"{path}: not a readable {what} file: its pickle is nested too deeply",
                                         hint)) from e
    except Exception as e:  # noqa: BLE001 - a damaged pickle; torch.load reports it in its own words
        logger.debug("legacy torch scan of %s stopped: %s", path, e)
        return
    declared = sum(scan.storages.values())
    if declared > size:
        raise CheckpointError(_with_hint(f"{path}: not a readable {what} file: it declares {len(scan.storages)} "
                                         f"storage(s) of {declared:,} bytes in all but has {size:,} bytes; the file "
                                         f"is truncated or corrupt (or forged)", hint))


def describe(value: Any, limit: int = 80) -> str:
    """A short text for an untrusted value in an error message: a bounded repr that writes at most about
    `limit` characters and visits at most about `limit` elements, whatever the value holds.

    Why: `repr()` of a pickled value can be exponential. A pickle shares one list through memo references
    (`dag = [dag] * 10`, seven levels in under 500 bytes), and its repr would be gigabytes; truncating
    afterwards is too late. Containers are walked element by element until the budget is spent; text and
    bytes are cut before they are repr'd; huge ints, tensors, arrays and other objects are named by type and
    size only.
    """
    out: list[str] = []
    budget = [limit]
    _describe_into(value, out, budget)
    text = "".join(out)
    return text if budget[0] >= 0 else text[:limit] + "..."


def describe_error(e: BaseException, limit: int = 100) -> str:
    """`Type: message` of an exception raised while reading untrusted data, bounded like `describe` (a
    KeyError's or a TypeError's text can be the repr of a value from the file)."""
    if all(type(a) in (str, float) or type(a) is int and a.bit_length() < 256 for a in e.args):  # noqa: E721
        text = str(e)
        text = text if len(text) <= limit else text[:limit] + "..."
    else:
        text = describe(e.args[0] if len(e.args) == 1 else e.args, limit)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _describe_into(value: Any, out: list[str], budget: list[int]) -> None:
    def emit(text: str) -> None:
        out.append(text[:max(budget[0], 0)])
        budget[0] -= len(text)

    if budget[0] <= 0:
        return
    if value is None or isinstance(value, (bool, float, complex)):
        emit(repr(value))
    elif isinstance(value, int):
        emit(repr(int(value)) if abs(value).bit_length() <= 256 else f"<int of {value.bit_length()} bits>")
    elif isinstance(value, (str, bytes, bytearray)):
        emit(repr(value[:budget[0]]) + ("..." if len(value) > budget[0] else ""))
    elif isinstance(value, torch.Tensor):
        emit(f"<tensor {list(value.shape)} {str(value.dtype).replace('torch.', '')}>")
    elif isinstance(value, np.ndarray):
        emit(f"<array {list(value.shape)} {value.dtype}>")
    elif isinstance(value, (list, tuple, set, frozenset, dict)):
        kind = type(value)
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")") if isinstance(value, tuple) \
            else ("{", "}")
        if kind not in (list, tuple, set, dict):
            opening = f"{kind.__name__}({opening}"
            closing = f"{closing})"
        emit(opening)
        items = value.items() if isinstance(value, dict) else value
        for i, item in enumerate(items):
            if budget[0] <= 0:
                break
            if i:
                emit(", ")
            if isinstance(value, dict):
                _describe_into(item[0], out, budget)
                emit(": ")
                _describe_into(item[1], out, budget)
            else:
                _describe_into(item, out, budget)
        emit(closing)
    elif isinstance(getattr(value, "class_name", None), str):  # a record of a pickled object (safe_pickle)
        emit(f"{type(value).__name__}({describe(value.class_name, 40)})")
    else:
        emit(f"<{describe(type(value).__name__, 40)} object>")


def check_tensor_sizes(obj: Any, path: PathLike, data_bytes: int, *, what: str = "weights") -> None:
    """Refuse tensors (anywhere in `obj`: dicts, lists, tuples, objects' attributes) that show more data than a
    file with `data_bytes` bytes of data holds: a view whose elements exceed its storage (stride 0, overlapping
    strides) beyond MAX_EXPANDED_NUMEL elements, or all tensors together more than twice the data (views
    sharing storages). Either would be expanded into real memory by the first copy.

    The walk visits every object once and keeps, per object, only its parent and its key: a tensor's name is
    spelled out only for the message (names built while walking cost depth x key length per object, which a
    file nesting long keys thousands deep turns into gigabytes)."""
    total = 0
    seen: set[int] = set()
    parents: list[tuple[int, Any]] = [(-1, None)]  # (index of the parent entry, key); entry 0 is the top level
    stack: list[tuple[int, Any]] = [(0, obj)]

    def name_of(index: int) -> str:
        parts: list[str] = []
        while index > 0 and len(parts) < 12:
            index, key = parents[index]
            parts.append(key if isinstance(key, str) and len(key) <= 60 else describe(key))
        if not parts:
            return "(top level)"
        return ("..." if index > 0 else "") + ".".join(reversed(parts))

    while stack:
        index, item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if torch.is_tensor(item):
            nbytes = item.numel() * item.element_size()
            total += nbytes
            held = item.untyped_storage().nbytes()
            if item.numel() > MAX_EXPANDED_NUMEL and nbytes > held:
                raise CheckpointError(f"{path}: tensor {name_of(index)!r} {list(item.shape)} (strides "
                                      f"{list(item.stride())}) shows {nbytes:,} bytes but its storage holds "
                                      f"{held:,}; a {what} file never stores such views; the file is forged or "
                                      f"damaged")
            continue
        if isinstance(item, Mapping):
            children = item.items()
        elif isinstance(item, (list, tuple)):
            children = enumerate(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            children = vars(item).items()
        else:
            continue
        for key, child in children:
            if id(child) in seen:
                continue
            parents.append((index, key))
            stack.append((len(parents) - 1, child))
    if total > 2 * data_bytes + (1 << 20):
        raise CheckpointError(f"{path}: its tensors show {total:,} bytes but the file holds {data_bytes:,} bytes of "
                              f"data; they are expanded views or share storage, which a {what} file never needs; "
                              f"the file is forged or damaged")


def read_state_dict(path: PathLike, *, what: str = "weights", hint: str = "download it again") -> dict:
    """A state dict from a `.safetensors` file or a `torch.save` file read with `weights_only=True`: nothing in
    the file is executed, TorchScript archives are refused.

    Values are whatever the file holds (tensors in any genuine file); callers check names and shapes.

    Raises:
        CheckpointError: naming the file: unreadable, unsafe ("cannot read {what}"), or not a dict.
    """
    path = Path(path)
    if is_torchscript_archive(path):
        raise CheckpointError(_with_hint(f"{path}: a TorchScript archive, not a state dict of {what}; reading it "
                                         f"would run code stored in the file", hint))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            data_bytes = check_torch_file(path, what=what, hint=hint)
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            check_tensor_sizes(state, path, data_bytes, what=what)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read means a damaged, foreign or unsafe file
        raise CheckpointError(_with_hint(f"{path}: cannot read {what} ({_load_error(e)})", hint)) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def _key_list(keys: Sequence[str], n: int = 4) -> str:
    """At most `n` keys, shown bounded (unexpected keys come from the file), and the count."""
    return f"{describe(list(keys[:n]), 60 * n)}{' ...' if len(keys) > n else ''} ({len(keys)} in all)"


def load_state_strict(module: torch.nn.Module, state: Mapping[str, Any], what: str, *, mismatch: str,
                      hint: str = "", noun: str = "tensor", shape_note: str = "") -> torch.nn.Module:
    """Copy `state` into `module` after checking it holds exactly the module's tensors: every key present (BatchNorm's
    `num_batches_tracked` counters may be absent: old PyTorch did not save them, and eval does not read them), no
    unexpected key, every value a finite tensor of the module's shape, floating point where the module's is. Nothing is
    copied unless everything passes. Returns `module`.

    The messages start with `what` (the file or the network being read):
      keys differ:    "{what}: {mismatch}: missing [...] (n in all); unexpected [...] (m in all){hint}"
      a wrong value:  "{what}: {noun} {key} has shape [...], expected [...]{shape_note}" (or its type / dtype)
    Untrusted key names are shown bounded (`describe`).
    """
    own = module.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = ([f"missing {_key_list(missing)}"] if missing else []) + (
            [f"unexpected {_key_list(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{what}: {mismatch}: {'; '.join(parts)}{hint}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{what}: entry {describe(k, 60)} is a {type(v).__name__}, expected a tensor")
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{what}: {noun} {k} has shape {list(v.shape)}, expected "
                                  f"{list(own[k].shape)}{shape_note}")
        if k not in optional and own[k].is_floating_point() and not v.is_floating_point():
            raise CheckpointError(f"{what}: {noun} {k} is {v.dtype}, expected floating point")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{what}: {noun} {k} holds NaN or infinite values: the file is damaged (or saved "
                                  f"from a diverged training run); download it again")
    with torch.no_grad():
        for k, t in own.items():
            if k in state:
                t.copy_(state[k])
    return module


@dataclass(frozen=True)
class MissingWeights:
    """A weight file that is in no folder and could not be downloaded (see `missing_weights_error`)."""

    what: str                  # "LPIPS-vgg backbone (torchvision ImageNet weights)"
    file_name: str             # the name to save it under
    url: Optional[str]         # where to get it; None when there is no single URL
    error: str                 # why it could not be downloaded
    also: str = ""             # e.g. "a .safetensors state dict under the same name also works"


def missing_weights_error(missing: Sequence[MissingWeights], places: Sequence[PathLike]) -> MissingWeightsError:
    """One error for every missing file: what it is, its URL, the name to save it as, the folders searched and
    why it was not downloaded."""
    where = ", ".join(str(Path(p)) for p in places) or "(no model folders were given)"
    files = "; ".join(f"{m.what}: " + (f"download {m.url} and save it as {m.file_name}" if m.url else
                                       f"save it as {m.file_name}") + (f" ({m.also})" if m.also else "")
                      for m in missing)
    return MissingWeightsError(f"{len(missing)} weight file(s) not found and not downloadable ({missing[0].error}). "
                               f"{files}. Put the file(s) in one of: {where}")


def _hash_prefix(file_name: str) -> Optional[str]:
    # torchvision's (and torch hub's) convention: `<name>-<first hex digits of the SHA-256>.<ext>`.
    m = re.search(r"-([a-f0-9]{6,})\.", file_name)
    return m.group(1) if m else None


def download_url(url: str, folder: PathLike, file_name: str, *, check_hash: bool = True) -> Path:
    """Download `url` to `folder / file_name` (written under a temporary name, then renamed) and return it.

    With `check_hash`, a file name carrying the first hex digits of its SHA-256 (`vgg16-397923af.pth`) is
    checked against the download. Raises whatever the download raises (offline, HTTP error, hash mismatch)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file_name
    prefix = _hash_prefix(file_name) if check_hash else None
    atomic_write(target, lambda tmp: torch.hub.download_url_to_file(url, str(tmp), hash_prefix=prefix,
                                                                    progress=False))
    logger.info("downloaded %s to %s", url, target)
    return target


def find_or_download(what: str, names: Sequence[str], url: str, dirs: Sequence[PathLike], *,
                     download_dir: PathLike, check_hash: bool = True) -> Union[Path, MissingWeights]:
    """The first of `names` in `dirs`, then in `download_dir`; else `url` downloaded into `download_dir` as
    `names[0]`. A `MissingWeights` (for `missing_weights_error`) when none of that works."""
    path = find_weights(names, [*dirs, download_dir])
    if path is not None:
        return path
    try:
        return download_url(url, download_dir, names[0], check_hash=check_hash)
    except Exception as e:  # noqa: BLE001 - offline, blocked, a failed download or a wrong hash
        logger.info("downloading %s from %s failed: %s", what, url, e)
        return MissingWeights(what, names[0], url, f"{type(e).__name__}: {e}")


HUB_UNREACHABLE = "the Hugging Face Hub is not reachable (offline or HF_HUB_OFFLINE is set)"
_hub_probe: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all (remembered for a minute): offline, its client retries for
    minutes before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    name, _, port = host.partition(":")
    seen = _hub_probe.get(host)
    if seen is not None and time.monotonic() - seen[0] < 60:
        return seen[1]
    try:
        socket.create_connection((name, int(port or 443)), timeout=timeout).close()
        ok = True
    except (OSError, ValueError):
        ok = False
    _hub_probe[host] = (time.monotonic(), ok)
    return ok


def check_hub_file(repo_id: str, filename: str) -> None:
    """ValueError unless `repo_id` is `owner/name` and `filename` a path inside the repo (no `..`, not absolute)."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or "") or ".." in repo_id.split("/"):
        raise ValueError(f"Hugging Face repo must look like 'owner/name', got {repo_id!r}")
    if not filename or filename.startswith(("/", "\\", "..")) or ".." in Path(filename).parts:
        raise ValueError(f"Hugging Face file name must be a path inside the repo, got {filename!r}")


def download_from_hub(repo_id: str, filename: str, local_dir: PathLike, *, revision: Optional[str] = None) -> Path:
    """`filename` of Hugging Face repo `repo_id`, downloaded into `local_dir` (kept under its path in the repo)
    through `huggingface_hub`. Raises MissingDependencyError without that package, ValueError for a name that
    is not `owner/name` or a path leaving the repo, and whatever the hub raises (offline, not found, auth)."""
    try:
        import huggingface_hub
    except ImportError as e:
        raise MissingDependencyError("downloading from the Hugging Face Hub needs `pip install huggingface_hub`") from e
    check_hub_file(repo_id, filename)
    return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, local_dir=str(local_dir)))


def try_download(what: str, fetch: Callable[[], PathLike]) -> tuple[Optional[Path], str]:
    """(path, "") from `fetch()` (a download), or (None, why) when it fails; for `MissingWeights.error`."""
    try:
        return Path(fetch()), ""
    except Exception as e:  # noqa: BLE001 - offline, blocked, a missing package, or a failed download
        logger.info("downloading %s failed: %s", what, e)
        return None, f"{type(e).__name__}: {e}"


__all__ = ["atomic_write", "clean_partials", "meta_field", "meta_json", "read_safetensors", "write_safetensors",
           "TMP_SUFFIX", "weight_names", "refused_global", "find_weights", "read_state_dict", "is_torchscript_archive",
           "MissingWeights", "missing_weights_error", "check_torch_file", "check_tensor_sizes", "download_url", "find_or_download", "hub_reachable",
           "HUB_UNREACHABLE", "check_hub_file", "download_from_hub", "try_download"]
