"""Live slider previews: a node keeps what its last queued run received (generator, latent, directions) under a
random token, and the web extension asks `POST /stylegan_studio/live_preview` for a small render with new slider
values while the user drags, without queueing a prompt.

The route answers {"ok": true, "image": "data:image/jpeg;base64,...", "px", "ms", "resolution"}; a request
overtaken by a newer one for the same token while it waited answers {"ok": true, "superseded": true} without
rendering (the browser sends the newest values only). Safety: the token must be one a run of this server handed out
(unknown or evicted: 400 "run the node once"), every value is checked by the node's own `check` (finite numbers in
the node's ranges, indices that exist); nothing else from the request is used. Memory: at most
`MAX_SOURCES` runs are kept (least recently used go first), in a `ModelCache` that ComfyUI's "free memory" empties;
a node that runs again replaces its entry.

Resolution: the preview aims at the asked `px` (256 by default); when a render takes longer than `BUDGET_MS`, the
next preview of that source renders at half the resolution (down to `MIN_ADAPTIVE_PX`), and goes back up when a
render takes less than a third of the budget. The queued run always renders full size.
"""

from __future__ import annotations

import base64
import io
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..core import preview as P
from ..core.latents import Latent
from . import comfy_env
from .caches import ModelCache
from .convert import generator_to_comfy, to_pil

ROUTE = "/stylegan_studio/live_preview"
MAX_SOURCES = 4            # runs kept for previews (each holds a generator reference and one latent)
BUDGET_MS = 300.0          # a preview should take at most this long; slower renders halve the next one's size
MIN_ADAPTIVE_PX = 32       # the adaptive size never goes below this (FFHQ-size networks on 2 CPU cores need it)
MAX_PX = 1024              # largest preview a request may ask for
JPEG_QUALITY = 85
_TOKEN = re.compile(r"^[0-9a-f]{16,64}$")

_sources = ModelCache("live_preview", max_items=MAX_SOURCES)   # token -> LiveSource
_by_node: dict[str, str] = {}        # node id -> its newest token (an older run's token is dropped)
_render_lock = threading.Lock()      # one preview render at a time (a second would only slow both)
_state_lock = threading.Lock()


@dataclass
class LiveSource:
    """What one queued run of a node left for previews.

    `edit(values)` -> the edited Latent for the checked slider values (its first latent is rendered); `check(body)`
    -> those values from a request body, raising ValueError for anything missing, non-finite or out of range.
    """

    node_id: str
    generator: Any
    edit: Callable[[dict], Latent]
    check: Callable[[dict], dict]
    px: int = 0                      # the adaptive preview size (0: not rendered yet)
    seq: int = 0                     # newest request number, for latest-wins
    lock: threading.Lock = field(default_factory=threading.Lock)


def keep_source(node_id, generator, edit: Callable[[dict], Latent], check: Callable[[dict], dict],
                full_ms: Optional[float] = None) -> Optional[str]:
    """Keep a run's inputs for live previews; returns the token the web extension sends back (None without a node
    id, e.g. a node called outside ComfyUI). `full_ms`: what one full-size render took in the run; over the budget,
    the first preview renders at `MIN_ADAPTIVE_PX` (and grows while previews are fast) instead of taking seconds."""
    if node_id is None or str(node_id) == "":
        return None
    node_id = str(node_id)
    token = secrets.token_hex(16)
    with _state_lock:
        old = _by_node.pop(node_id, None)
        if old is not None:
            _sources.pop(old)
        px = MIN_ADAPTIVE_PX if full_ms is not None and full_ms > BUDGET_MS and P.stops_early(generator) else 0
        _sources.put(token, LiveSource(node_id, generator, edit, check, px=px))
        _by_node[node_id] = token
        # Entries the cache evicted (or memory release dropped) leave stale node -> token links: forget them.
        for nid, tok in list(_by_node.items()):
            if tok not in _sources:
                del _by_node[nid]
    return token


def finite_number(body: dict, name: str, low: float, high: float) -> float:
    """`body[name]` as a float in [low, high]; ValueError naming the value otherwise (bools and strings refused)."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in {low:g}..{high:g}, got {value!r}")
    return value


def whole_number(body: dict, name: str, low: int, high: int) -> int:
    """`body[name]` as an int in [low, high] (a float with no fraction is accepted: JSON from a JS slider)."""
    value = finite_number(body, name, low, high)
    if value != int(value):
        raise ValueError(f"{name} must be a whole number in {low}..{high}, got {value!r}")
    return int(value)


def encode_jpeg(image: torch.Tensor) -> str:
    """One generator image `[1, C, H, W]` in [-1, 1] -> a JPEG data URL."""
    pil = to_pil(generator_to_comfy(image)[0])
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _source(body: dict) -> tuple[str, LiveSource]:
    token = body.get("token")
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise ValueError("token must be the hex string a run of the node sent to the browser; run the node once "
                         "to enable live preview")
    source = _sources.get(token)
    if source is None:
        raise ValueError("this preview's run is no longer kept on the server (it ran again, memory was freed, or "
                         f"more than {MAX_SOURCES} nodes ran since); run the node once to enable live preview")
    node_id = body.get("node_id")
    # Inside a subgraph the server's id is the path ("12:5") and the browser's node id its last part.
    if node_id is not None and str(node_id) not in (source.node_id, source.node_id.rsplit(":", 1)[-1]):
        raise ValueError(f"token belongs to node {source.node_id}, not {node_id!r}")
    return token, source


def preview_route(body: dict) -> dict:
    """`POST /stylegan_studio/live_preview` {"token", "node_id", "px"?, <the node's slider values>} -> {"ok",
    "image" (JPEG data URL), "px" (rendered size), "ms" (render + encode time), "resolution" (full size)}, or
    {"ok": true, "superseded": true} when a newer request for the same token arrived meanwhile."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object body")
    _, source = _source(body)
    want = whole_number(body, "px", P.MIN_PREVIEW_PX, MAX_PX) if "px" in body else P.PREVIEW_PX
    values = source.check(body)
    with source.lock:
        source.seq += 1
        mine = source.seq
    with _render_lock:
        if mine != source.seq:
            return {"ok": True, "superseded": True}
        px = min(want, source.px) if source.px else want
        t0 = time.perf_counter()
        with torch.inference_mode():
            latent = source.edit(values)
            image = P.render_preview(source.generator, latent, max_px=px)
        data = encode_jpeg(image)
        ms = (time.perf_counter() - t0) * 1000
        rendered = int(image.shape[-1])
        # Adapt the next preview's size to the budget (see the module docstring).
        if not P.stops_early(source.generator):
            source.px = want  # a smaller render would cost the same here
        elif ms > BUDGET_MS and rendered > MIN_ADAPTIVE_PX:
            source.px = max(MIN_ADAPTIVE_PX, rendered // 2)
        elif ms < BUDGET_MS / 3 and rendered < want:
            source.px = min(want, max(rendered, P.MIN_PREVIEW_PX) * 2)
        else:
            source.px = px
    return {"ok": True, "image": data, "px": rendered, "ms": round(ms, 1),
            "resolution": int(source.generator.img_resolution)}


comfy_env.add_routes(post={ROUTE: preview_route}, threaded=True)
