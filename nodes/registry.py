"""Every node of the pack, declared once: id, display name, and what the web extension needs to know about it.

A node module decorates each node class with `@register_node(...)`; `nodes/__init__` imports every module of this
package, so the registry is complete once the pack is imported. ComfyUI's `NODE_CLASS_MAPPINGS` and
`NODE_DISPLAY_NAME_MAPPINGS`, the list of optimising nodes the web extension asks for (`/stylegan_studio/nodes`),
the example-workflow script and the tests all read it; nothing keeps its own list.

Node ids are released: they never change (saved workflows refer to them). Every display name ends with
PACK_SUFFIX, added here, so the pack's nodes are told apart from core nodes of the same name ("Invert Image") and a
search for "stylegan" finds every one of them; modules declare the plain name.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from ..core.log import logger

PREFIX = "SGS_"
PACK_SUFFIX = " (StyleGAN)"

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class NodeEntry:
    id: str                  # ComfyUI's node type, e.g. "SGS_InvertImage" (prefixed, frozen once released)
    display_name: str        # plain English + PACK_SUFFIX, shown in the node menu and found by the node search
    cls: type                # the node class
    optimises: bool = False  # runs an optimisation loop: live status line (step, losses, ETA) and a Stop button
    frames: bool = False     # outputs a batch of frames worth scrubbing through on the node
    live: bool = False       # its sliders re-render a preview through /stylegan_studio/live_preview (nodes/live_preview)


NODES: dict[str, NodeEntry] = {}


def register_node(node_id: str, display_name: str, *, optimises: bool = False,
                  frames: bool = False, live: bool = False) -> Callable[[T], T]:
    """Class decorator: add the node to the registry under `node_id`, shown as `display_name` + PACK_SUFFIX.

    Keep `display_name` to 28 characters: the frontend's node search finds "stylegan" only within the first 30
    characters of a name (tests/test_registry.py: test_every_node_is_found_by_searching_for_the_pack)."""
    if not node_id.startswith(PREFIX):
        raise ValueError(f"node id {node_id!r} must start with {PREFIX!r}")
    if not display_name.endswith(PACK_SUFFIX):
        display_name += PACK_SUFFIX

    def add(cls: T) -> T:
        old = NODES.get(node_id)
        # The same class imported again (a module reloaded) replaces its entry; two classes on one id is a bug.
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"node id {node_id!r} is registered twice: {old.cls.__qualname__} and {cls.__qualname__}")
        NODES[node_id] = NodeEntry(node_id, display_name, cls, optimises=optimises, frames=frames, live=live)
        function = getattr(cls, "FUNCTION", None)
        if function and not getattr(getattr(cls, function, None), "shows_warnings", False):
            setattr(cls, function, _showing_warnings(getattr(cls, function)))
        return cls

    return add


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"warning: {record.getMessage()}"
        except Exception:  # noqa: BLE001 - a malformed log call must not fail the node
            return
        if line not in self.lines:
            self.lines.append(line)


def _showing_warnings(method: Callable) -> Callable:
    """`method` (a node's FUNCTION), with the warnings the pack logs while it runs added to the node's report text,
    which the web extension shows on the node: a user should not have to read the server console to learn that a
    latent came from another generator or that an edit changed nothing."""

    @functools.wraps(method)
    def run(self, *args: Any, **kwargs: Any):
        collect = _Collect()
        logger.addHandler(collect)
        try:
            result = method(self, *args, **kwargs)
        finally:
            logger.removeHandler(collect)
        if not collect.lines:
            return result
        if isinstance(result, dict):
            ui = dict(result.get("ui") or {})
            ui["text"] = list(ui.get("text") or []) + collect.lines
            return dict(result, ui=ui)
        return {"ui": {"text": collect.lines}, "result": result}

    run.shows_warnings = True
    return run


def node_class_mappings() -> dict[str, type]:
    return {e.id: e.cls for e in NODES.values()}


def display_name_mappings() -> dict[str, str]:
    return {e.id: e.display_name for e in NODES.values()}


def optimising_nodes() -> list[str]:
    return [e.id for e in NODES.values() if e.optimises]


def frame_nodes() -> list[str]:
    return [e.id for e in NODES.values() if e.frames]


def live_nodes() -> list[str]:
    return [e.id for e in NODES.values() if e.live]


def web_info() -> dict:
    """What the web extension reads from `/stylegan_studio/nodes`."""
    return {"prefix": PREFIX, "optimising": optimising_nodes(), "frames": frame_nodes(), "live": live_nodes()}
