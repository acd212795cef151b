"""The pack's model caches: small, bounded, and all in one registry that ComfyUI's memory management can empty.

Loaders keep what they load (generators, perceptual networks, ArcFace, latent mappers, II2S priors, global
directions) in a `ModelCache` so the next run reuses it. Every cache has a size limit (least recently used entries
go first) and registers itself in `CACHES`; `release_models()` empties them all, or only the entries on one device.
`comfy_env.install_memory_hooks` calls it when ComfyUI frees memory (see there for why and how). Caches that live
in `core` (CLIP's) join through `add_release_hook`.

Nothing here imports ComfyUI; entries are shared, never modified, and simply dropped: whoever still holds one (a
node output ComfyUI caches) keeps it alive until it lets go too.
"""

from __future__ import annotations

import collections
import gc
import threading
import weakref
from typing import Callable, Hashable, Iterable, Optional, TypeVar

import torch

from ..core.log import logger

V = TypeVar("V")

CACHES: dict[str, "ModelCache"] = {}
_RELEASE_HOOKS: dict[str, Callable[[Optional[torch.device]], None]] = {}


def _tensors(value) -> Iterable[torch.Tensor]:
    """The tensors an entry holds: a module's parameters and buffers, else tensor attributes (one level deep)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, torch.nn.Module):
        yield from value.parameters()
        yield from value.buffers()
    else:
        for attr in getattr(value, "__dict__", {}).values():
            if isinstance(attr, torch.Tensor):
                yield attr
            elif isinstance(attr, torch.nn.Module):
                yield from _tensors(attr)


def entry_devices(value) -> set[torch.device]:
    """Devices whose memory an entry uses (empty when it holds no tensors we can see)."""
    return {t.device for t in _tensors(value)}


def entry_bytes(value) -> int:
    """Bytes of tensor storage an entry holds (shared storages counted once)."""
    seen, total = set(), 0
    for t in _tensors(value):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' are the same device when either index is left out."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class ModelCache:
    """A thread-safe least-recently-used cache of loaded models, registered in `CACHES` under `name`.

    `get_or_load(key, load)` returns the cached value or calls `load()` (outside the lock: loading can take
    seconds) and keeps the result, dropping the oldest entries beyond `max_items`. `loads` counts the calls to
    `load`, so tests and the `/stylegan_studio/memory` route can tell a reload from a cache hit; weak references to
    what was loaded tell whether a dropped model is really gone or still held elsewhere (`stats()["alive"]`).
    """

    def __init__(self, name: str, max_items: int):
        if max_items < 1:
            raise ValueError(f"cache {name!r}: max_items must be at least 1, got {max_items}")
        self.name = name
        self.max_items = max_items
        self.loads = 0
        self._items: "collections.OrderedDict[Hashable, object]" = collections.OrderedDict()
        self._loaded: list[weakref.ref] = []   # everything `load` returned that can be weakly referenced
        self._lock = threading.Lock()
        CACHES[name] = self  # a re-imported module replaces its old cache instead of adding a second one

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value: V) -> V:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return value

    def get_or_load(self, key, load: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = load()
            with self._lock:
                self.loads += 1
                self._loaded = [r for r in self._loaded if r() is not None]
                try:
                    self._loaded.append(weakref.ref(value))
                except TypeError:  # a type without weak references: not tracked
                    pass
            self.put(key, value)
        return value

    def pop(self, key, default=None):
        """Remove and return the entry under `key` (`default` when there is none)."""
        with self._lock:
            return self._items.pop(key, default)

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        return self.release(None)

    def release(self, device: Optional[torch.device] = None) -> int:
        """Drop the entries that use `device` (every entry when None); returns how many were dropped."""
        with self._lock:
            if device is None:
                drop = list(self._items)
            else:
                drop = [k for k, v in self._items.items() if any(same_device(d, device) for d in entry_devices(v))]
            for key in drop:
                del self._items[key]
        return len(drop)

    def stats(self) -> dict:
        """entries, max_items, loads, bytes (held by the entries), alive (loaded values still in memory, cached
        or not) and alive_bytes."""
        with self._lock:
            values = list(self._items.values())
            alive = [v for v in (r() for r in self._loaded) if v is not None]
        return {"entries": len(values), "max_items": self.max_items, "loads": self.loads,
                "bytes": sum(entry_bytes(v) for v in values), "alive": len(alive),
                "alive_bytes": sum(entry_bytes(v) for v in alive)}


def add_release_hook(name: str, hook: Callable[[Optional[torch.device]], None]) -> None:
    """Also call `hook(device)` on every release (for caches kept elsewhere, e.g. CLIP's in core); a second hook
    with the same name replaces the first."""
    _RELEASE_HOOKS[name] = hook


def release_models(device: Optional[torch.device] = None) -> int:
    """Empty every cache (`device` None) or drop the entries on `device`; returns how many entries went.

    Runs the release hooks too, then collects garbage so the memory is really returned (to the OS, or to
    PyTorch's CUDA cache that the caller empties). Never raises: a failing hook is logged and skipped, so ComfyUI's
    own memory management always carries on.
    """
    dropped = sum(cache.release(device) for cache in list(CACHES.values()))
    for name, hook in list(_RELEASE_HOOKS.items()):
        try:
            hook(device)
        except Exception:  # noqa: BLE001 - a hook must never break ComfyUI's unloading
            logger.exception("releasing cached models: the %s hook failed", name)
    gc.collect()
    if dropped:
        logger.info("released %d cached model%s%s", dropped, "s" if dropped != 1 else "",
                    "" if device is None else f" on {device}")
    return dropped


def memory_stats() -> dict:
    """{cache name: `ModelCache.stats()`} for every registered cache."""
    return {name: cache.stats() for name, cache in sorted(CACHES.items())}
