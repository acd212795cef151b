"""Save Weight Delta and Apply Weight Delta: PTI's tuned weights minus the original, as a small file."""

from __future__ import annotations

from ..core import deltas as D
from . import comfy_env
from .registry import register_node
from .types import CATEGORY_ROOT, GENERATOR, WEIGHT_DELTA

_DELTA_SUFFIX = ".safetensors"


@register_node("SGS_SaveWeightDelta", "Save Weight Delta")
class SaveWeightDelta:
    DESCRIPTION = ("Saves a weight delta (PTI's tuned weights minus the original) as a small safetensors file "
                   "in the output folder, tied to the generator it was made for.")
    CATEGORY = f"{CATEGORY_ROOT}/invert"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Where the file was written.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "delta": (WEIGHT_DELTA, {"tooltip": "The delta output of Invert Image (method pti)."}),
            "filename_prefix": ("STRING", {"default": "stylegan/pti_delta",
                                           "tooltip": "File name prefix inside the output folder."}),
        }}

    def save(self, delta, filename_prefix):
        if delta is None:
            raise ValueError("there is no weight delta to save: only Invert Image with method 'pti' makes one")
        path = D.save_weight_delta(delta, comfy_env.next_output_path(filename_prefix, _DELTA_SUFFIX))
        return {"ui": {"text": [f"{delta.describe()}\nsaved to {path}"]}, "result": (str(path),)}


@register_node("SGS_ApplyWeightDelta", "Apply Weight Delta")
class ApplyWeightDelta:
    DESCRIPTION = ("Applies a saved weight delta (e.g. PTI tuning) to a generator, giving a tuned copy; the loaded "
                   "generator itself is unchanged. The delta must have been made for this generator.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (GENERATOR, "STRING")
    RETURN_NAMES = ("generator", "info")
    OUTPUT_TOOLTIPS = ("The generator with the delta applied.", "What was applied.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the delta was made for."}),
                "delta_file": (comfy_env.list_latent_files(D.DELTA_FORMAT), {"tooltip": "A delta file from Save Weight Delta, in the "
                               "input or output folder."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -3.0, "max": 3.0, "step": 0.05,
                                       "tooltip": "Multiplier of the delta; 1 = as tuned."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, delta_file):
        if delta_file not in comfy_env.list_latent_files(D.DELTA_FORMAT):
            return f"weight delta {delta_file!r} not found in the input or output folder"
        return True

    def apply(self, generator, delta_file, strength):
        delta = D.load_weight_delta(comfy_env.latent_file_path(delta_file, "weight delta"))
        G = D.apply_weight_delta(generator, delta, scale=float(strength))
        info = f"{delta.describe()} applied with strength {float(strength):g}"
        return {"ui": {"text": [info]}, "result": (G, info)}
