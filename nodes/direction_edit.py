"""Direction Edit (one or two latent directions at chosen strengths, on a layer range, optionally InterFaceGAN's
conditional edit) with a live slider preview, and Direction Sweep (one direction over a range of strengths as an
image batch)."""

from __future__ import annotations

import time
from typing import Optional

from ..core import latents as L
from ..core import preview as P
from ..core.directions import (MAX_STRENGTH, STRENGTH_RANGES, Directions, apply_directions, direction_sweep,
                               make_conditional)
from ..core.errors import LatentError
from . import comfy_env, live_preview
from .convert import generator_to_comfy, to_pil
from .registry import register_node
from .types import CATEGORY_ROOT, GENERATOR, LATENT, LATENT_DIRECTIONS

MAX_SWEEP_FRAMES = 256
MAX_INDEX = 1023                # Directions hold at most 1024 rows (core.directions.MAX_DIRECTIONS)
MAX_LAYER = 64                  # w+ layers, more than any supported architecture has
# The inputs whose values the live preview sends (the web extension watches these widgets; `check` reads them).
LIVE_INPUTS = ("index", "strength", "index_2", "strength_2", "layer_start", "layer_end")
USUAL = ", ".join(f"{name} ±{STRENGTH_RANGES[m]:g}" for m, name in (("ganspace", "GANSpace"), ("sefa", "SeFa"),
                                                                   ("interfacegan", "InterFaceGAN")))


def layer_range(G, layer_start: int, layer_end: int) -> Optional[tuple[int, int]]:
    """The node's layer_start/layer_end as apply_directions' `layers`: (0, 0) = the directions' own suggested range
    (every layer when they have none); end 0 = through the last layer."""
    start, end = int(layer_start), int(layer_end)
    if start == 0 and end == 0:
        return None
    end = end or G.num_ws
    if not 0 <= start < end <= G.num_ws:
        raise LatentError(f"layer_start {start} and layer_end {end} must satisfy 0 <= layer_start < layer_end <= "
                          f"{G.num_ws} ({G.info.name} has {G.num_ws} w+ layers; layer_end is exclusive, 0 = through "
                          f"the last layer)")
    return start, end


def parse_indices(text: str, directions: Directions, skip: Optional[int] = None) -> list[int]:
    """'0, 2, smile' -> rows of `directions` (indices or names); empty = every row (except `skip`)."""
    parts = [p.strip() for p in str(text or "").split(",") if p.strip()]
    if not parts:
        return [i for i in range(directions.count) if i != skip]
    return [directions.index_of(int(p) if p.isdigit() else p) for p in parts]


def edit_latent(G, latent: L.Latent, directions: Directions, index: int, strength: float, *, layer_start: int = 0,
                layer_end: int = 0, directions_2: Optional[Directions] = None, index_2: int = 0,
                strength_2: float = 0.0, protected: Optional[Directions] = None,
                protected_indices: str = "") -> tuple[L.Latent, str]:
    """The edited latent and a one-line description: what Direction Edit and its live preview both compute."""
    primary, row = directions, directions.index_of(int(index))
    what = f"{directions.names[row]} {float(strength):+g}"
    if protected is not None:
        rows = parse_indices(protected_indices, protected, skip=row if protected is directions else None)
        if not rows:
            raise LatentError("protected has no direction other than the edited one; connect the attributes to "
                              "keep fixed (e.g. InterFaceGAN's age boundary while editing smile)")
        primary = make_conditional(directions, row, [(protected, j) for j in rows])
        what += f" (conditional: {', '.join(protected.names[j] for j in rows)} kept fixed)"
        row = 0
    edits = [(primary, row, float(strength))]
    if float(strength_2) != 0.0:
        second = directions if directions_2 is None else directions_2
        row_2 = second.index_of(int(index_2))
        edits.append((second, row_2, float(strength_2)))
        what += f", {second.names[row_2]} {float(strength_2):+g}"
    layers = layer_range(G, layer_start, layer_end)
    if layers is not None:
        what += f" on layers {layers[0]}..{layers[1] - 1}"
    return apply_directions(G, latent, edits, layers=layers), what


def _strength_input(default: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.05,
                      "display": "slider", "tooltip": tooltip})


def _layer_inputs() -> dict:
    return {
        "layer_start": ("INT", {"default": 0, "min": 0, "max": MAX_LAYER, "tooltip": "First w+ layer the edit "
                        "moves (0 = from the first; coarse layers set pose and shape, fine ones colour)."}),
        "layer_end": ("INT", {"default": 0, "min": 0, "max": MAX_LAYER, "tooltip": "One past the last w+ layer "
                      "moved; 0 = through the last layer. Both 0: the directions' own suggested range (every layer "
                      "when they have none)."}),
    }


def _render(generator, latent: L.Latent):
    progress = comfy_env.Progress(latent.batch_size)
    images = L.synthesize(generator, latent, callback=lambda done, total: progress.update(done))
    out = generator_to_comfy(images, comfy_env.intermediate_device())
    progress.update(latent.batch_size, preview=to_pil(out[-1]))
    return out


@register_node("SGS_DirectionEdit", "Direction Edit", live=True)
class DirectionEdit:
    DESCRIPTION = ("Moves latents along a latent direction (SeFa, GANSpace, InterFaceGAN, or any imported file) at "
                   "a strength, optionally on a range of w+ layers, plus an optional second direction. With "
                   "protected directions it makes InterFaceGAN's conditional edit: the protected attributes are "
                   "projected out of the direction, so they stay fixed. Live preview: after one queued run, dragging "
                   "the strength sliders re-renders a small preview on the node without queueing (the queued run "
                   "renders full size).")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (LATENT, "IMAGE")
    RETURN_NAMES = ("latent", "images")
    OUTPUT_TOOLTIPS = ("The edited latent(s) (w or w+; z with z directions).", "The edited latent(s) rendered "
                       "full size.")
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the latent drives."}),
                "latent": (LATENT, {"tooltip": "The latent(s) to edit (z, w, w+ or fs)."}),
                "directions": (LATENT_DIRECTIONS, {"tooltip": "From Discover SeFa/GANSpace Directions or Load "
                               "Directions."}),
                "index": ("INT", {"default": 0, "min": 0, "max": MAX_INDEX, "tooltip": "Which direction of the "
                          "set (0 = the first: SeFa's and GANSpace's strongest); its name shows on the node after a "
                          "run."}),
                "strength": _strength_input(0.0, "How far to move along the direction; negative goes the other "
                                            f"way. Usual ranges: {USUAL} (GANSpace in σ). The "
                                            "slider spans the method's range after a run; type a value for more."),
            },
            "optional": {
                **_layer_inputs(),
                "directions_2": (LATENT_DIRECTIONS, {"tooltip": "A second direction set (not connected: the first "
                                 "set)."}),
                "index_2": ("INT", {"default": 1, "min": 0, "max": MAX_INDEX, "tooltip": "Which direction of the "
                            "second set."}),
                "strength_2": _strength_input(0.0, "Strength of the second direction (0 = no second edit)."),
                "protected": (LATENT_DIRECTIONS, {"tooltip": "InterFaceGAN's conditional edit: directions (e.g. "
                              "boundaries of age, glasses) projected out of the edited one, so those attributes "
                              "stay fixed."}),
                "protected_indices": ("STRING", {"default": "", "tooltip": "Which protected directions, by index or "
                                      "name ('0, 2' or 'age, glasses'); empty = all of them (except the edited "
                                      "one when the same set is connected)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def edit(self, generator, latent, directions, index, strength, layer_start=0, layer_end=0, directions_2=None,
             index_2=1, strength_2=0.0, protected=None, protected_indices="", unique_id=None):
        t0 = time.perf_counter()
        kwargs = dict(layer_start=int(layer_start), layer_end=int(layer_end), directions_2=directions_2,
                      protected=protected, protected_indices=protected_indices)
        edited, what = edit_latent(generator, latent, directions, int(index), float(strength),
                                   index_2=int(index_2), strength_2=float(strength_2), **kwargs)
        t1 = time.perf_counter()
        images = _render(generator, edited)
        full_ms = (time.perf_counter() - t1) * 1000 / max(edited.batch_size, 1)
        report = f"{what}: {edited.batch_size} latent(s), {time.perf_counter() - t0:.2f} s"

        # Live preview: the first latent and everything but the slider values, kept for the preview route.
        first = P.first_latent(latent)
        second = directions if directions_2 is None else directions_2

        def check(body: dict) -> dict:
            strength_2 = live_preview.finite_number(body, "strength_2", -MAX_STRENGTH, MAX_STRENGTH)
            # index_2 is read only with a second strength, as in the queued run (a set of one direction keeps the
            # widget's default index 1, which it does not have).
            index_2 = live_preview.whole_number(body, "index_2", 0, second.count - 1) if strength_2 else 0
            return {"index": live_preview.whole_number(body, "index", 0, directions.count - 1),
                    "strength": live_preview.finite_number(body, "strength", -MAX_STRENGTH, MAX_STRENGTH),
                    "index_2": index_2, "strength_2": strength_2,
                    "layer_start": live_preview.whole_number(body, "layer_start", 0, generator.num_ws),
                    "layer_end": live_preview.whole_number(body, "layer_end", 0, generator.num_ws)}

        def preview(values: dict) -> L.Latent:
            return edit_latent(generator, first, directions, values["index"], values["strength"],
                               index_2=values["index_2"], strength_2=values["strength_2"],
                               **{**kwargs, "layer_start": values["layer_start"], "layer_end": values["layer_end"]})[0]

        token = live_preview.keep_source(unique_id, generator, preview, check, full_ms=full_ms)
        live = {"token": token or "", "inputs": list(LIVE_INPUTS), "names": list(directions.names),
                "names_2": list(second.names), "range": directions.strength_range, "range_2": second.strength_range,
                "resolution": int(generator.img_resolution), "preview_px": P.PREVIEW_PX}
        return {"ui": {"images": comfy_env.preview_images(images), "text": [report], "sgs_live": [live]},
                "result": (edited, images)}


@register_node("SGS_DirectionSweep", "Direction Sweep", frames=True)
class DirectionSweep:
    DESCRIPTION = ("One latent direction over a range of strengths: frames images per latent, evenly from "
                   "strength_from to strength_to, as one batch (for a video, a contact sheet, or to find the strength "
                   "an edit needs).")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = ("IMAGE", LATENT)
    RETURN_NAMES = ("images", "latent")
    OUTPUT_TOOLTIPS = ("frames images per input latent, latent-major (every frame of the first latent, then the "
                       "second's).", "The swept latents, in the same order.")
    FUNCTION = "sweep"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the latent drives."}),
                "latent": (LATENT, {"tooltip": "The latent(s) to sweep (z, w, w+ or fs)."}),
                "directions": (LATENT_DIRECTIONS, {"tooltip": "From Discover SeFa/GANSpace Directions or Load "
                               "Directions."}),
                "index": ("INT", {"default": 0, "min": 0, "max": MAX_INDEX, "tooltip": "Which direction of the "
                          "set."}),
                "strength_from": ("FLOAT", {"default": 0.0, "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.1,
                                  "tooltip": "First frame's strength. strength_from and strength_to both 0: the "
                                  f"method's usual range ({USUAL})."}),
                "strength_to": ("FLOAT", {"default": 0.0, "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.1,
                                "tooltip": "Last frame's strength."}),
                "frames": ("INT", {"default": 9, "min": 1, "max": MAX_SWEEP_FRAMES, "tooltip": "Frames per latent, "
                           "both ends included."}),
            },
            "optional": _layer_inputs(),
        }

    def sweep(self, generator, latent, directions, index, strength_from, strength_to, frames, layer_start=0,
              layer_end=0):
        t0 = time.perf_counter()
        lo, hi = float(strength_from), float(strength_to)
        if lo == 0.0 and hi == 0.0:
            hi = directions.strength_range
            lo = -hi
        n = int(frames)
        strengths = [lo] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]
        row = directions.index_of(int(index))
        swept = direction_sweep(generator, latent, directions, row, strengths,
                                layers=layer_range(generator, layer_start, layer_end))
        images = _render(generator, swept)
        report = (f"{directions.names[row]}: strength {lo:g} .. {hi:g} in {n} frames x {latent.batch_size} "
                  f"latent(s), {time.perf_counter() - t0:.2f} s")
        return {"ui": {"images": comfy_env.preview_images(images), "text": [report]}, "result": (images, swept)}
