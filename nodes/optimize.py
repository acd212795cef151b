"""Run an optimising core call as a node: progress bar, live preview, status line, cancel, "Finish now", the
partial result of a Stop, the measured cost of a step, and memory cleanup.

Routes (registered at import, in ComfyUI only; the handlers are plain functions the tests call):
- `POST /stylegan_studio/finish` {"node_id"} -> {"ok": true}: the optimisation running in that node ends after its
  current step and returns its current result, so the graph completes (`finish_route`).
- `GET /stylegan_studio/estimate?node=&preset=&method=&resolution=` -> {"steps", "seconds", "text"}: what a preset
  costs on this device, from the measured seconds per step of earlier runs (`estimate_route`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import torch

from ..core.edits import presets as PR
from ..core.log import logger
from ..core.optimize import FINISH
from . import comfy_env
from .convert import generator_to_comfy, to_pil

T = TypeVar("T")

PRESET_INPUT = "preset"


def preset_input(kind: str) -> tuple:
    """The `preset` combo of an optimising node (an optional input, last: see `resolve_preset`)."""
    return (list(PR.PRESETS), {"default": PR.DEFAULT_PRESET, "tooltip": (
        "How long to optimise (0 in a step input below = the preset's count). quick: the fewest steps for a "
        "recognisable result; balanced: a good result; reference: the method's published settings (hours to days on "
        "a CPU). The node shows the estimated time on this machine before you queue.\n"
        + PR.tooltip(kind))})


def resolve_preset(kind: str, method: str, preset: Optional[str], **overrides: int) -> dict[str, int]:
    """The preset's values with the node's non-zero overrides. A graph saved before presets has no `preset`
    value: it gets the reference values, what its 0 meant then."""
    return PR.resolve(kind, method, preset or PR.LEGACY_PRESET, **overrides)


# ------------------------------------------------------------------------------------------------
# "Finish now"

_finish_lock = threading.Lock()
_finish_requests: set[str] = set()   # node ids asked to finish
_running: set[str] = set()           # node ids running an optimisation now


def _node_key(node_id) -> str:
    return "" if node_id is None else str(node_id)


def request_finish(node_id) -> bool:
    """Ask the optimisation running in node `node_id` to finish after its current step; True when it is running
    (a request for a node that is not running is forgotten when its next run starts)."""
    key = _node_key(node_id)
    with _finish_lock:
        _finish_requests.add(key)
        return key in _running


def finish_route(body: dict) -> dict:
    """`POST /stylegan_studio/finish` {"node_id": "<id>"} -> {"ok": true, "running": bool}."""
    node_id = body.get("node_id") if isinstance(body, dict) else None
    if node_id is None or str(node_id).strip() == "":
        raise ValueError('expected {"node_id": "<id of the running node>"}')
    return {"ok": True, "running": request_finish(str(node_id).strip())}


@dataclass
class RunState:
    """What a node tells `run_optimisation` about its run, and what it learns back.

    In: `kind`/`method`/`device`/`resolution` key the measured seconds per step (kind '' records nothing);
    `units_per_step` the work of one step relative to the kind's unit (global directions: images per channel);
    `save_partial(state)` writes what a stopped run has (called on Stop, before the interrupt propagates; `last`
    and `last_params` hold the run's newest record and parameters) and returns where, e.g. "the latent so far
    is saved as output/inversions/x.safetensors — load it with Load Latent" (or None when nothing was saved).
    Out: `step` and `total` of the last progress record, `finished_early` ("Finish now" was pressed), `last` (the
    last record), `last_params` (the newest non-empty `params`), `stop_message` (what a Stop saved)."""

    kind: str = ""
    method: str = ""
    device: str = ""
    resolution: int = 0
    units_per_step: float = 1.0
    total_units: Optional[int] = None
    save_partial: Optional[Callable[["RunState"], Optional[str]]] = None
    step: int = 0
    total: int = 0
    finished_early: bool = False
    last: Any = None
    last_params: Optional[dict] = None
    stop_message: str = ""

    def note(self) -> str:
        """'finished early at step k of n' after "Finish now", else ''."""
        return f"finished early at step {self.step} of {self.total}" if self.finished_early else ""


# ------------------------------------------------------------------------------------------------
# Measured seconds per step and the estimate

_costs: dict[str, PR.StepCosts] = {}
_clock = time.monotonic   # the step timer (tests replace it)


def step_costs() -> PR.StepCosts:
    """The step-cost table of this ComfyUI (its user folder; outside ComfyUI $STYLEGAN_STUDIO_HOME/user)."""
    path = comfy_env.step_costs_path()
    costs = _costs.get(str(path))
    if costs is None:
        costs = _costs[str(path)] = PR.StepCosts(path)
    return costs


def _node_kind(node: str) -> tuple[str, str]:
    """(preset kind, default method) of a node type; ValueError for a node without presets."""
    from .registry import NODES

    entry = NODES.get(node)
    kind = getattr(getattr(entry, "cls", None), "PRESET_KIND", None)
    if kind is None:
        optimising = sorted(k for k, e in NODES.items() if getattr(e.cls, "PRESET_KIND", None))
        raise ValueError(f"{node!r} has no presets; nodes with presets: {', '.join(optimising)}")
    return kind, getattr(entry.cls, "PRESET_DEFAULT_METHOD", "")


def estimate(node: str, preset: str = PR.DEFAULT_PRESET, method: str = "", resolution: Optional[int] = None,
             device: Optional[str] = None) -> dict:
    """{"steps": int, "seconds": float or None, "text": str} for running `node` with `preset` (see the module
    docstring). `resolution` None: the resolution of the newest measured run."""
    kind, default_method = _node_kind(node)
    p = PR.get_preset(kind, method or default_method, preset or PR.DEFAULT_PRESET)
    device = device or comfy_env.torch_device("auto").type
    units = p.units_per_step   # global directions: images per channel; the layer scan: steps per layer
    e = step_costs().estimate(kind, p.method, device, resolution, p.steps, units_per_step=units)
    steps = int(e["steps"] or 0)
    what = p.describe() + (f", {steps:,} channels" if kind == "global_directions" and steps else
                           f", {steps:,} layers" if kind == "weight_shift_scan" and steps else "")
    where = f"on {device}" + (f" at {e['resolution']} px" if e["resolution"] else "")
    if e["seconds"] is None:
        text = f"{what}; the time is shown after a first run {where}"
        seconds = None
    else:
        seconds = round(float(e["seconds"]), 1)
        scaled = (f"; scaled from a run at {e['measured_at']} px" if e["measured_at"] != e["resolution"] else "")
        text = f"≈ {PR.format_seconds(seconds)} {where} ({what}{scaled})"
    return {"steps": steps, "seconds": seconds, "text": text}


def estimate_route(query: dict) -> dict:
    """`GET /stylegan_studio/estimate?node=&preset=&method=&resolution=` (strings, as a URL gives them)."""
    node = str(query.get("node") or "")
    if not node:
        raise ValueError("missing ?node=<node type>, e.g. SGS_InvertImage")
    text = str(query.get("resolution") or "").strip()
    try:
        resolution = int(text) if text else None
    except ValueError:
        raise ValueError(f"resolution must be a whole number of pixels or empty, got {text!r}") from None
    if resolution is not None and resolution <= 0:
        resolution = None
    return estimate(node, str(query.get("preset") or PR.DEFAULT_PRESET), str(query.get("method") or ""),
                    resolution)


def preview_of(image: torch.Tensor, reference: Optional[torch.Tensor] = None):
    """PIL preview of the first image of a batch `[N, 3, R, R]` in [-1, 1]; with `reference` (e.g. the unedited
    image) the two side by side, reference on the left."""
    shown = image[:1] if reference is None else torch.cat([reference[:1].to(image), image[:1]], dim=3)
    return to_pil(generator_to_comfy(shown)[0])


def run_optimisation(total: int, run: Callable[[Callable], T], *, preview_every: int = 1,
                     state: Optional[RunState] = None) -> T:
    """Call `run(callback)` (which calls one core optimiser with `callback`) under the node's live progress.

    The callback accepts core's progress record (`core.optimize.StepProgress`, and the older per-method records):
    `step` (1-based) of `total`, `losses` {name: float}, `image` `[N, 3, R, R]` in [-1, 1] or None when not
    rendered this step, and optionally `reference` (or `original`) shown on the left of a side-by-side preview. It
    also accepts the plain `callback(done, total)` of loops without losses. Each call moves ComfyUI's progress bar,
    shows a preview every `preview_every` steps (and on the last), sends the status line (step, loss terms, ETA)
    and raises ComfyUI's interrupt exception when the user cancelled, which stops the core loop. When "Finish
    now" was asked for this node (`request_finish`), it returns `core.optimize.FINISH`: the method ends after that
    step with its current result. However the run ends, the status line is closed (an early stop ends before
    `total`) and PyTorch's cached memory returned.

    With `state` (see `RunState`): the seconds per step are recorded for the estimate, a Stop calls
    `state.save_partial` with the last record before the interrupt propagates (and says where in the log and
    the status line), and `state` tells the node whether and where the run finished early.
    """
    progress = comfy_env.Progress(total)
    every = max(1, int(preview_every))
    state = state if state is not None else RunState()
    state.total = progress.total
    key = _node_key(progress.node_id)
    with _finish_lock:
        _finish_requests.discard(key)   # a request made before this run started is not for it
        _running.add(key)
    timing: list[tuple[int, float]] = []   # (step, time) of the first and the latest step

    def finish_asked(step: int) -> Any:
        now = _clock()
        if len(timing) < 2:
            timing.append((step, now))
        else:
            timing[1] = (step, now)
        with _finish_lock:
            asked = key in _finish_requests
        if asked and step < progress.total:
            state.finished_early = True
            return FINISH
        return None

    def callback(record, record_total=None):
        if record_total is not None:  # callback(done, total)
            progress.total = max(1, int(record_total))
            progress.update(int(record), losses={})
            state.step, state.total, state.last = int(record), progress.total, None
            return finish_asked(int(record))
        step = int(record.step)
        if getattr(record, "total", None):
            progress.total = max(1, int(record.total))
        image = getattr(record, "image", None)
        preview = None
        if image is not None and (step % every == 0 or step >= progress.total):
            reference = getattr(record, "reference", None)
            if reference is None:
                reference = getattr(record, "original", None)
            preview = preview_of(image, reference)
        progress.update(step, preview, losses=dict(getattr(record, "losses", None) or {}))
        state.step, state.total, state.last = step, progress.total, record
        if getattr(record, "params", None):
            state.last_params = record.params
        return finish_asked(step)

    try:
        result = run(callback)
        progress.finish()
    except comfy_env.interrupt_types():
        _save_stopped(state, progress)
        raise
    finally:
        with _finish_lock:
            _finish_requests.discard(key)
            _running.discard(key)
        _record_cost(state, timing)
        comfy_env.free_memory()
    return result


def output_name(path) -> str:
    """`path` as the user finds it: 'output/<relative path>' inside the output folder, else the full path."""
    from pathlib import Path

    try:
        return "output/" + Path(path).relative_to(comfy_env.output_dir()).as_posix()
    except ValueError:
        return str(path)


def save_stopped_latent(latent, prefix: str) -> str:
    """Write a stopped run's latent to output/<prefix>_00001_.safetensors; the sentence saying where and how to
    use it."""
    from ..core.latents import save_latent

    path = comfy_env.next_output_path(prefix, comfy_env.LATENT_EXTENSION)
    save_latent(latent, path)
    return f"the latent so far is saved as {output_name(path)} — load it with Load Latent"


def _save_stopped(state: RunState, progress) -> None:
    """Stop: let the node write what the run has so far, and say where (log, status line)."""
    if state.save_partial is None or state.step < 1:
        return
    try:
        where = state.save_partial(state)
    except Exception as e:  # noqa: BLE001 - never hide the Stop behind a failed save
        logger.warning("stopped at step %d of %d; the result so far could not be saved (%s: %s)", state.step,
                       state.total, type(e).__name__, e)
        return
    if not where:
        return
    state.stop_message = f"stopped at step {state.step} of {state.total}; {where}"
    logger.warning("%s", state.stop_message)
    try:
        progress.note(state.stop_message)
    except Exception:  # noqa: BLE001 - the status line is a courtesy
        logger.debug("could not send the stop note", exc_info=True)


def _record_cost(state: RunState, timing: list[tuple[int, float]]) -> None:
    if not state.kind or len(timing) < 2 or not state.device or not state.resolution:
        return
    (s0, t0), (s1, t1) = timing
    if s1 > s0:
        step_costs().record(state.kind, state.method, state.device, state.resolution, t1 - t0, s1 - s0,
                            units_per_step=state.units_per_step,
                            total=state.total if state.total_units is None else state.total_units)


comfy_env.add_routes(get={"/stylegan_studio/estimate": estimate_route},
                     post={"/stylegan_studio/finish": finish_route})
