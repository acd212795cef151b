"""Presets of the optimising methods (quick / balanced / reference) and the measured cost of a step.

Every optimising node offers the same three presets; what each one sets is written here, once, per method:

- reference: the method's reference values (`METHOD_DEFAULTS`, `clip_optimize.DEFAULTS`, `latent_mapper.DEFAULTS`,
  `global_directions.DEFAULTS`), what `num_steps = 0` meant before presets.
- quick: the fewest steps that still give a recognisable result (not the reference's fidelity); balanced: in
  between (roughly a third of the reference's steps).

Measured cost (bench/bench_presets.py: each method's own core function with the preset's values, random weights,
a step's seconds (lower quartile of 10 timed steps at 128 px, 5 at 256 px) x the preset's steps + set-up; this
project's 2-core CPU, shared with other work, torch 2.14, fp32). Demo Generator at 128 px (the examples') /
full-size StyleGAN2 config-f at 256 px:

    method                          quick                 balanced
    Invert Image image2stylegan     24 s / 17 min         2 min / 1.4 h
    Invert Image projector          24 s / 19 min         1 min / 57 min
    Invert Image ii2s (+ prior)     35 s / 28 min         2 min / 1.7 h
    Invert Image pti                2 min / 21 min        3 min / 44 min
    CLIP Latent Optimize            1 min / 9 min         3 min / 20 min
    Train Latent Mapper             9 min / 43 min        1.5 h / 7.2 h
    Compute Global Directions       30 min / 17.2 h       2.5 h / 4 days

Whole quick runs on the demo: II2S 1 min, CLIP Latent Optimize 30 s. So on two CPU cores "quick" is minutes for
the inversions and CLIP Latent Optimize on small generators (CLIP also at 256 px), 20-30 min for an inversion at
256 px, and much longer for Train Latent Mapper and Compute Global Directions. Elsewhere, run the benchmark there;
the node's own estimate (below) learns the machine's cost from its runs.

Weight shifts ('weight_shift': Train Weight Shift, 30 / 100 / 200 steps; 'weight_shift_scan': the Layer Scan, 5 /
10 / 20 steps per layer). Measured on this 2-core CPU under load (a random 256-px StyleGAN2 with FFHQ's channel
widths and a random ViT-B-32, one image): a Train Weight Shift step costs ~10 s (one latent; b16.conv1 10.3 s,
b4.conv1 9.8 s) against ~11 s for a CLIP Latent Optimize step in the same run, and ~18 s in batch mode with the
directional loss (the unshifted reference render of each fresh batch). Quick's 30 steps are therefore ~5 min at
256 px, and enough for a visible edit at the default lr 2e-3: Adam moves each weight by up to ~lr per step, so
after 30 steps ‖x‖ is ~1.5-3 % of the layer's ‖W‖ (raw weights are ~N(0, 1); measured on the tests' 32-px
generator: 1.3-1.7 % with the directional loss, 3 % with the global one), the scale of NaviGAN's shifts (60 on a
layer of norm ~1536, ~4 %). The scan multiplies its steps by the number of conv layers (13 at 256 px: quick's 5
steps ≈ 11 min), so its `Preset.steps` is 0 like global directions' and `units_per_step` is the steps per layer.

`StepCosts` keeps the measured seconds per step of every run (per kind, method, device type and resolution) and
estimates a run before it starts: from a run at the same resolution, else scaled by the pixel count from the
nearest measured resolution (a synthesis step costs about in proportion to its pixels), else unknown. It reads and
writes a small JSON file (atomically) whose place the caller chooses; nothing here imports ComfyUI.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

from ..files import atomic_write
from ..log import logger
from . import clip_optimize as _clip
from . import fs_embedding as _fs
from . import inversion as _inversion
from . import latent_mapper as _mapper
from . import neural_style as _style
from .segment_composite import config as _sc
from .global_directions import DEFAULTS as _GD
from .weight_shift import DEFAULTS as _WS

PRESETS = ("quick", "balanced", "reference")
DEFAULT_PRESET = "balanced"     # what a new node shows
LEGACY_PRESET = "reference"     # what a graph saved before presets gets: its num_steps 0 meant the reference count

KINDS = ("inversion", "clip_optimize", "latent_mapper", "global_directions", "weight_shift", "weight_shift_scan",
         "neural_style", "fs", "segment_composite")


@dataclass(frozen=True)
class Preset:
    """The settings one preset gives one method. `values` are the node's inputs it fills ('num_steps',
    'tune_steps', 'num_images', 'num_samples'); `steps` the work the run reports progress in (for the estimate)."""

    kind: str
    method: str
    name: str
    values: Mapping[str, int] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Steps the progress bar counts: inversion num_steps + tune_steps (PTI), num_steps elsewhere ('steps'
        for weight shifts, whose core keyword it is); for global directions the channels and for the layer scan
        the layers (unknown before the generator is known), so 0 here."""
        if self.kind in ("global_directions", "weight_shift_scan", "segment_composite"):
            return 0   # segment_composite: depends on how many embeddings are cached (the run reports its total)
        if self.kind in ("weight_shift", "neural_style"):
            return int(self.values.get("steps", 0))
        return int(self.values.get("num_steps", 0)) + int(self.values.get("tune_steps", 0))

    @property
    def units_per_step(self) -> float:
        """Work of one counted step in optimisation steps: global directions' images per channel, the layer
        scan's steps per layer; 1 elsewhere (what `StepCosts.record` / `estimate` take as `units_per_step`)."""
        if self.kind == "global_directions":
            return float(self.values.get("num_images", 1))
        if self.kind == "weight_shift_scan":
            return float(self.values.get("steps", 1))
        return 1.0

    def describe(self) -> str:
        v = self.values
        if self.kind == "inversion" and v.get("tune_steps"):
            second = "FS" if self.method == _fs.INVERSION_METHOD else "tuning"
            return f"{v['num_steps']} + {v['tune_steps']} {second} steps"
        if self.kind == "global_directions":
            return f"{v['num_images']} images per channel, {v['num_samples']:,} samples"
        if self.kind == "weight_shift_scan":
            return f"{v['steps']:,} steps per layer"
        if self.kind == "weight_shift":
            return f"{v['steps']:,} steps"
        if self.kind == "neural_style":
            return f"{v['steps']:,} steps per scale"
        if self.kind == "segment_composite":
            return (f"W+ {v['w_steps']:,} + FS {v['fs_steps']:,} per image, target fill 2 x {v['target_fill_steps']}, "
                    f"align {v['align_steps1']} + {v['align_steps2']}, blend {v['blend_steps']}")
        return f"{v['num_steps']:,} steps"


def _inversion_presets() -> dict[str, dict[str, dict[str, int]]]:
    quick = {"image2stylegan": 100, "projector": 100, "ii2s": 100, "pti": 100}
    balanced = {"image2stylegan": 500, "projector": 300, "ii2s": 400, "pti": 200}
    table = {}
    for m, cfg in _inversion.METHOD_DEFAULTS.items():
        ref = {"num_steps": cfg.num_steps}
        q, b = {"num_steps": quick[m]}, {"num_steps": balanced[m]}
        if cfg.tune_steps:  # PTI: the generator tuning too
            ref["tune_steps"] = cfg.tune_steps
            q["tune_steps"], b["tune_steps"] = 50, 150
        table[m] = {"quick": q, "balanced": b, "reference": ref}
    # II2S, then the FS embedding (Invert Image's 'ii2s+fs'): tune_steps counts the FS steps (the 'fs' kind's), and
    # the reference is Barbershop's (W_steps 1100, FS_steps 250).
    fs = _TABLE_FS[""]
    table[_fs.INVERSION_METHOD] = {
        p: {"num_steps": _fs.W_STEPS if p == "reference" else table["ii2s"][p]["num_steps"],
            "tune_steps": fs[p]["num_steps"]} for p in PRESETS}
    return table


# FS embedding (core.edits.fs_embedding.embed_fs); reference = Barbershop's FS_steps.
_TABLE_FS: dict[str, dict[str, dict[str, int]]] = {
    "": {"quick": {"num_steps": 50}, "balanced": {"num_steps": 100}, "reference": {"num_steps": _fs.DEFAULTS.num_steps}}}


_TABLE: dict[str, dict[str, dict[str, dict[str, int]]]] = {
    "inversion": _inversion_presets(),
    "clip_optimize": {"": {"quick": {"num_steps": 50}, "balanced": {"num_steps": 120},
                           "reference": {"num_steps": _clip.DEFAULTS.num_steps}}},
    "latent_mapper": {"": {"quick": {"num_steps": 100}, "balanced": {"num_steps": 1000},
                           "reference": {"num_steps": _mapper.DEFAULTS.num_steps}}},
    "global_directions": {"": {"quick": {"num_images": 2, "num_samples": 1000},
                               "balanced": {"num_images": 10, "num_samples": 10_000},
                               "reference": {"num_images": _GD.num_images, "num_samples": _GD.num_samples}}},
    # Weight shifts (see the module docstring for the per-step costs behind 'quick').
    "weight_shift": {"": {"quick": {"steps": 30}, "balanced": {"steps": 100},
                          "reference": {"steps": _WS.steps}}},
    "weight_shift_scan": {"": {"quick": {"steps": 5}, "balanced": {"steps": _WS.scan_steps},
                               "reference": {"steps": 20}}},
    # Neural Style, per method: reference = the method's own count (gatys2016: jcjohnson's 1000 L-BFGS
    # iterations; tutorial: its 300 evaluations; multiscale: crowsonkb's 500 per scale).
    "neural_style": {m: {"quick": {"steps": q}, "balanced": {"steps": b},
                         "reference": {"steps": _style.METHODS[m].steps}}
                     for m, q, b in (("gatys2016", 100, 300), ("tutorial", 50, 150), ("multiscale", 50, 200))},
    "fs": _TABLE_FS,
    # Segment Composite (Barbershop): reference = its main.py defaults; quick is the 'fast' preset, its
    # measured quality loss is in core/edits/segment_composite/pipeline.py's docstring.
    "segment_composite": {"": {
        "quick": {"w_steps": 250, "fs_steps": 60, "align_steps1": 40, "align_steps2": 30, "blend_steps": 100,
                  "target_fill_steps": 20},
        "balanced": {"w_steps": 550, "fs_steps": 125, "align_steps1": 70, "align_steps2": 50, "blend_steps": 200,
                     "target_fill_steps": 40},
        "reference": {"w_steps": _sc.DEFAULTS.w_steps, "fs_steps": _sc.DEFAULTS.fs_steps,
                      "align_steps1": _sc.DEFAULTS.align_steps1, "align_steps2": _sc.DEFAULTS.align_steps2,
                      "blend_steps": _sc.DEFAULTS.blend_steps, "target_fill_steps": _sc.DEFAULTS.target_fill_steps}}},
}


def methods(kind: str) -> list[str]:
    """The methods of `kind` with presets ('' for a kind without methods)."""
    if kind not in _TABLE:
        raise ValueError(f"no presets for {kind!r}; kinds: {', '.join(KINDS)}")
    return list(_TABLE[kind])


def get_preset(kind: str, method: str, name: str) -> Preset:
    """The preset `name` of `kind` / `method` (method '' or None for kinds without methods)."""
    table = _TABLE.get(kind)
    if table is None:
        raise ValueError(f"no presets for {kind!r}; kinds: {', '.join(KINDS)}")
    method = method or ""
    if method not in table:
        if "" in table:
            method = ""
        else:
            raise ValueError(f"{kind} has no method {method!r}; methods: {', '.join(table)}")
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return Preset(kind, method, name, dict(table[method][name]))


def resolve(kind: str, method: str, name: str, **overrides: int) -> dict[str, int]:
    """The preset's values with the node's overrides applied: an override of 0 (or None) means the preset's."""
    values = dict(get_preset(kind, method, name).values)
    for key, value in overrides.items():
        if value:
            values[key] = int(value)
    return values


def tooltip(kind: str) -> str:
    """One line per method naming what each preset sets (for the node's `preset` tooltip)."""
    lines = []
    for m in methods(kind):
        parts = "; ".join(f"{p} {get_preset(kind, m, p).describe()}" for p in PRESETS)
        lines.append(f"{m}: {parts}" if m else parts)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Measured cost of a step


def format_seconds(seconds: float) -> str:
    """'40 s', '3 min', '2.5 h' (rounded for people)."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{round(hours / 24)} days"


class StepCosts:
    """Measured seconds per step, keyed by (kind, method, device type, resolution); persisted as JSON at `path`
    (None: memory only). A new measurement is averaged with the old one (half each), so the estimate follows the
    machine's present load without jumping on one odd run. Thread-safe (the server's route reads while a node
    records)."""

    VERSION = 1

    def __init__(self, path: Optional[Union[str, os.PathLike]] = None):
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self._loaded = False

    @staticmethod
    def key(kind: str, method: str, device: str, resolution: int) -> str:
        return f"{kind}|{method or ''}|{device}|{int(resolution)}"

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None or not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = data.get("records", {}) if isinstance(data, dict) else {}
            for k, r in records.items():
                if isinstance(r, dict) and isinstance(r.get("seconds_per_unit"), (int, float)) \
                        and math.isfinite(r["seconds_per_unit"]) and r["seconds_per_unit"] > 0 and k.count("|") == 3:
                    self._records[k] = r
        except (OSError, ValueError) as e:
            logger.warning("step costs in %s unreadable (%s); estimates start over", self.path, e)

    def _save(self) -> None:
        if self.path is None:
            return
        text = json.dumps({"version": self.VERSION, "records": self._records}, indent=1, sort_keys=True)
        try:
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        except OSError as e:
            logger.warning("could not save step costs to %s (%s); kept in memory", self.path, e)

    def record(self, kind: str, method: str, device: str, resolution: int, seconds: float, steps: int, *,
               units_per_step: float = 1.0, total: Optional[int] = None) -> Optional[float]:
        """Record a run: `steps` steps took `seconds` (set-up excluded). `units_per_step` scales the work of one
        step (global directions: images per channel); `total` is the run's planned step count (kept for kinds
        whose step count depends on the generator). Returns the stored seconds per unit, or None when the
        measurement is unusable."""
        if steps < 1 or not math.isfinite(seconds) or seconds <= 0 or units_per_step <= 0:
            return None
        per_unit = seconds / (steps * units_per_step)
        with self._lock:
            self._load()
            k = self.key(kind, method, device, resolution)
            old = self._records.get(k)
            value = per_unit if old is None else 0.5 * (old["seconds_per_unit"] + per_unit)
            self._records[k] = {"seconds_per_unit": value, "runs": (old or {}).get("runs", 0) + 1,
                                "total": int(total if total is not None else (old or {}).get("total", 0) or 0),
                                "time": time.time()}
            self._save()
        return value

    def lookup(self, kind: str, method: str, device: str, resolution: Optional[int]) -> Optional[tuple[dict, int, int]]:
        """(record, its resolution, the resolution asked for) of the nearest measured resolution of (kind, method,
        device) — the same one when measured; with no resolution given, the newest record. None if nothing."""
        with self._lock:
            self._load()
            prefix = f"{kind}|{method or ''}|{device}|"
            found = [(int(k[len(prefix):]), r) for k, r in self._records.items() if k.startswith(prefix)]
        if not found:
            return None
        if not resolution:
            res, rec = max(found, key=lambda x: x[1].get("time", 0))
            return rec, res, res
        res, rec = min(found, key=lambda x: (abs(math.log2(x[0] / resolution)), -x[1].get("time", 0)))
        return rec, res, int(resolution)

    def estimate(self, kind: str, method: str, device: str, resolution: Optional[int], steps: int, *,
                 units_per_step: float = 1.0) -> dict:
        """{'seconds': float or None, 'resolution': int or None, 'measured_at': int or None, 'steps': int}: the
        time of `steps` steps, scaled by pixels from the nearest measured resolution. For global directions pass
        steps 0: the channel count of the last run at that resolution is used when known."""
        found = self.lookup(kind, method, device, resolution)
        if found is None:
            return {"seconds": None, "resolution": resolution or None, "measured_at": None, "steps": steps}
        rec, measured_at, res = found
        if not steps:
            steps = int(rec.get("total", 0) or 0)
        if not steps:
            return {"seconds": None, "resolution": res, "measured_at": measured_at, "steps": 0}
        seconds = rec["seconds_per_unit"] * steps * units_per_step * (res / measured_at) ** 2
        return {"seconds": seconds, "resolution": res, "measured_at": measured_at, "steps": steps}


__all__ = ["PRESETS", "DEFAULT_PRESET", "LEGACY_PRESET", "KINDS", "Preset", "methods", "get_preset", "resolve",
           "tooltip", "format_seconds", "StepCosts"]
