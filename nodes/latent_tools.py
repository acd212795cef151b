"""Nodes of the latent toolkit: arithmetic, batches, per-layer-group blends, keyframe walks, space conversion, and
images that carry their latents (Save / Load Image with Latent)."""

from __future__ import annotations

import json

import numpy as np
import torch

from ..core import latent_ops as O
from ..core import latents as L
from ..core import png_latent as P
from . import comfy_env
from .registry import register_node
from .types import CATEGORY_ROOT, GENERATOR, LATENT

CATEGORY = f"{CATEGORY_ROOT}/latent/tools"
_WEIGHT = {"min": -O.MAX_WEIGHT, "max": O.MAX_WEIGHT, "step": 0.05}


def _report(text: str, *results):
    return {"ui": {"text": [text]}, "result": results}


@register_node("SGS_AddLatents", "Add Latents")
class AddLatents:
    DESCRIPTION = ("a + strength x b, latent by latent (a batch of 1 is used with every latent of the other). Both in "
                   "one space of one generator: convert first (Convert Latent) if they are not. With a difference "
                   "from Subtract Latents as b, this moves a along that direction.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("a + strength x b, in a's space.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "a": (LATENT, {"tooltip": "The latents to add to."}),
            "b": (LATENT, {"tooltip": "The latents (or difference) added; same space as a."}),
            "strength": ("FLOAT", {"default": 1.0, **_WEIGHT, "tooltip": "Multiplies b (negative subtracts)."}),
        }}

    def add(self, a, b, strength):
        return (O.add_latents(a, b, strength=strength),)


@register_node("SGS_SubtractLatents", "Subtract Latents")
class SubtractLatents:
    DESCRIPTION = ("a - b, latent by latent: the difference is a direction from b to a (add it to other latents with "
                   "Add Latents). Both in one space of one generator.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("a - b, in a's space.",)
    FUNCTION = "subtract"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": (LATENT, {"tooltip": "The latents to subtract from."}),
                             "b": (LATENT, {"tooltip": "The latents subtracted; same space as a."})}}

    def subtract(self, a, b):
        return (O.subtract_latents(a, b),)


@register_node("SGS_ScaleLatent", "Scale Latent")
class ScaleLatent:
    DESCRIPTION = ("center + factor x (latent - center). 'origin' multiplies the latent (a difference's strength); "
                   "'average' scales w / w+ latents about the generator's average w: the truncation trick, applied "
                   "after the fact (factor 0.7 = psi 0.7).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The scaled latents.",)
    FUNCTION = "scale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": (LATENT, {"tooltip": "The latents to scale."}),
            "factor": ("FLOAT", {"default": 1.0, **_WEIGHT, "tooltip": "1 keeps the latent; 0 gives the center."}),
            "center": (list(O.SCALE_CENTERS), {"default": "origin", "tooltip": "origin: multiply; average: about "
                       "the generator's average w (w / w+ latents; connect the generator)."}),
        }, "optional": {"generator": (GENERATOR, {"tooltip": "Needed for center 'average' (its w_avg)."})}}

    def scale(self, latent, factor, center, generator=None):
        return (O.scale_latent(latent, factor, center=center, G=generator),)


@register_node("SGS_MeanLatent", "Mean Latent")
class MeanLatent:
    DESCRIPTION = ("The mean of a batch of latents, as one latent. z latents keep their typical length (a plain mean "
                   "of z falls toward the origin and maps to a dull image).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("One latent: the batch's mean.",)
    FUNCTION = "mean"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": (LATENT, {"tooltip": "The batch to average (join batches with Concatenate "
                                                            "Latents first)."})}}

    def mean(self, latent):
        return (O.mean_latent(latent),)


@register_node("SGS_SelectLatents", "Select Latents")
class SelectLatents:
    DESCRIPTION = ("Picks latents from a batch by index: '0,2,4-7'; -1 is the last, '-3--1' the last three, '3-0' "
                   "reverses; an index may repeat.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The chosen latents, in the order given.",)
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": (LATENT, {"tooltip": "The batch to pick from."}),
                             "indices": ("STRING", {"default": "0", "tooltip": O.INDEX_SYNTAX})}}

    def select(self, latent, indices):
        return (O.select_latents(latent, indices),)


@register_node("SGS_SplitLatents", "Split Latents")
class SplitLatents:
    DESCRIPTION = "Splits a batch in two at an index: the latents before it, and the rest."
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT, LATENT)
    RETURN_NAMES = ("first", "rest")
    OUTPUT_TOOLTIPS = ("Latents 0 .. at-1.", "Latents at .. the last.")
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": (LATENT, {"tooltip": "The batch to split (at least 2 latents)."}),
                             "at": ("INT", {"default": 1, "min": -L.MAX_LATENTS, "max": L.MAX_LATENTS,
                                            "tooltip": "How many latents go to 'first'; negative counts from the "
                                                       "end (-1: all but the last)."})}}

    def split(self, latent, at):
        return O.split_latent(latent, at)


@register_node("SGS_ConcatLatents", "Concatenate Latents")
class ConcatLatents:
    DESCRIPTION = "Joins latents of one space and generator into one batch, in input order (e.g. keyframes)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("latent_1, then latent_2, ... as one batch.",)
    FUNCTION = "concatenate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent_1": (LATENT, {"tooltip": "The first latents."}),
                             "latent_2": (LATENT, {"tooltip": "Latents after them."})},
                "optional": {"latent_3": (LATENT, {"tooltip": "More latents (optional)."}),
                             "latent_4": (LATENT, {"tooltip": "More latents (optional)."})}}

    def concatenate(self, latent_1, latent_2, latent_3=None, latent_4=None):
        return (O.concat_latents([latent_1, latent_2, latent_3, latent_4]),)


def _layers(indices: list[int]) -> str:
    if not indices:
        return "none"
    return f"{indices[0]}-{indices[-1]}" if indices == list(range(indices[0], indices[-1] + 1)) else \
        ",".join(map(str, indices))


@register_node("SGS_BlendLatents", "Blend Latents (layer groups)")
class BlendLatents:
    DESCRIPTION = ("Blends two latents layer by layer: each w layer moves from a (0) toward b (1) by its group's "
                   "weight. Groups follow the image scale each layer controls, for any generator: coarse (<= 8 px: "
                   "pose, shape), middle (16-32 px: features), fine (>= 64 px: colours, texture). custom sets "
                   "single layers.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("A w+ latent.",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        w = O.DEFAULT_BLEND_WEIGHTS
        return {"required": {
            "generator": (GENERATOR, {"tooltip": "The generator of both latents (its layers define the groups)."}),
            "a": (LATENT, {"tooltip": "Weight 0: this latent (z, w or w+)."}),
            "b": (LATENT, {"tooltip": "Weight 1: this latent (z, w or w+)."}),
            "coarse": ("FLOAT", {"default": w["coarse"], **_WEIGHT, "tooltip": "Weight of b on the coarse layers "
                                 "(<= 8 px: pose, face shape)."}),
            "middle": ("FLOAT", {"default": w["middle"], **_WEIGHT, "tooltip": "Weight of b on the middle layers "
                                 "(16-32 px: features, hair style)."}),
            "fine": ("FLOAT", {"default": w["fine"], **_WEIGHT, "tooltip": "Weight of b on the fine layers "
                               "(>= 64 px: colours, micro-structure)."}),
            "method": (list(O.BLEND_METHODS), {"default": O.DEFAULT_BLEND_METHOD, "tooltip": "lerp: straight "
                       "line; slerp: along the sphere, per layer (keeps the vectors' lengths)."}),
        }, "optional": {"custom": ("STRING", {"default": "", "tooltip": "Overrides: '0-3:1, 8:0.25' sets those "
                                              "layers, or a full list of one weight per w layer; empty = the group "
                                              "weights."})}}

    def blend(self, generator, a, b, coarse, middle, fine, method, custom=""):
        out = O.blend_latents(generator, a, b, coarse=coarse, middle=middle, fine=fine, method=method, custom=custom)
        groups = O.layer_groups(generator)
        weights = O.layer_weights(generator, coarse=coarse, middle=middle, fine=fine, custom=custom)
        text = (f"{method} of {generator.num_ws} w layers: coarse {_layers(groups['coarse'])}, middle "
                f"{_layers(groups['middle'])}, fine {_layers(groups['fine'])}; weights "
                f"{', '.join(f'{x:g}' for x in weights)}")
        return _report(text, out)


@register_node("SGS_KeyframeWalk", "Keyframe Walk")
class KeyframeWalk:
    DESCRIPTION = ("A walk through a batch of latents (keyframes) for a video: frames_per_segment frames from each "
                   "keyframe to the next, looping back to the first (a seamless loop), with easing. Feed it to "
                   "Synthesize, then a video or animated-image node.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The frames as one batch of latents.",)
    FUNCTION = "walk"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "keyframes": (LATENT, {"tooltip": "At least 2 latents, in walk order (Sample Latent with a seed_list, "
                                              "or Concatenate Latents)."}),
            "frames_per_segment": ("INT", {"default": O.DEFAULT_FRAMES_PER_SEGMENT, "min": 1, "max": L.MAX_LATENTS,
                                           "tooltip": "Frames from one keyframe to the next (at most "
                                                      f"{L.MAX_LATENTS:,} frames in all)."}),
            "loop": ("BOOLEAN", {"default": True, "tooltip": "Return from the last keyframe to the first (the first "
                                                             "is not repeated, so the video loops smoothly)."}),
            "easing": (list(O.EASINGS), {"default": O.DEFAULT_EASING, "tooltip": "linear: constant speed; "
                       "ease-in-out: slows near each keyframe; cubic: a longer pause at each keyframe."}),
            "method": (list(O.WALK_METHODS), {"default": O.DEFAULT_WALK_METHOD, "tooltip": "auto: slerp for z, "
                       "lerp otherwise."}),
        }}

    def walk(self, keyframes, frames_per_segment, loop, easing, method):
        out = O.keyframe_walk(keyframes, frames_per_segment, loop=loop, easing=easing, method=method)
        return _report(f"{out.batch_size} frames through {keyframes.batch_size} keyframes ({frames_per_segment} per "
                       f"segment, {'looping' if loop else 'ending at the last'}, {easing}, {method})", out)


@register_node("SGS_ConvertLatent", "Convert Latent")
class ConvertLatent:
    DESCRIPTION = ("Expresses latents in another space: z -> w (mapped), w -> w+, w+ -> w (when all layers agree), "
                   "any -> s (StyleSpace), z/w/w+ -> fs (F features at 32 px), fs -> w+ (drops F).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latents in the chosen space.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GENERATOR, {"tooltip": "The generator of the latents."}),
            "latent": (LATENT, {"tooltip": "The latents to convert."}),
            "space": (["w", "w+", "s", "fs"], {"default": "w+", "tooltip": "The space to express them in."}),
            "fs_skip": (list(L.FS_SKIPS), {"default": L.DEFAULT_FS_SKIP, "tooltip": "fs only: 'drop' (Barbershop) "
                        "or 'keep' (the 32 px RGB skip is stored: the image stays exactly the same)."}),
        }}

    def convert(self, generator, latent, space, fs_skip=L.DEFAULT_FS_SKIP):
        return (O.convert_space(generator, latent, space, fs_skip=fs_skip),)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """An IMAGE item `[H, W, C]` in [0, 1] as ComfyUI's Save Image writes it (clip, then truncate)."""
    return np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)


@register_node("SGS_SaveImageWithLatent", "Save Image with Latent")
class SaveImageWithLatent:
    DESCRIPTION = ("Saves images as PNG in the output folder, each with its latent (any space, fs features included) "
                   "and its generator's identity inside the file, plus the workflow as ComfyUI's Save Image writes "
                   "it. Load Image with Latent reads both back; the latent comes back bit for bit.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to save."}),
            "latent": (LATENT, {"tooltip": "Their latents: one per image, or one for all."}),
            "filename_prefix": ("STRING", {"default": "stylegan/latent_image", "tooltip": "Path prefix in the "
                                "output folder; a counter is appended."}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, images, latent, filename_prefix, prompt=None, extra_pnginfo=None):
        per_image = P.latents_for_images(latent, images.shape[0])   # checked before anything is written
        text = {}
        if not comfy_env.metadata_disabled():
            if prompt is not None:
                text["prompt"] = json.dumps(prompt)
            for key, value in (extra_pnginfo or {}).items():
                text[key] = json.dumps(value)
        saved = []
        for image, item in zip(images, per_image):
            path = comfy_env.next_output_path(filename_prefix, comfy_env.IMAGE_LATENT_EXTENSION)
            P.save_png_with_latent(path, _to_uint8(image), item, text)
            saved.append(comfy_env.output_entry(path))
        return {"ui": {"images": saved, "text": [f"saved {len(saved)} image(s) with their {latent.space} latents for "
                                                 f"{latent.generator.name}"]}}


@register_node("SGS_LoadImageWithLatent", "Load Image with Latent")
class LoadImageWithLatent:
    DESCRIPTION = ("Loads a PNG saved by Save Image with Latent: the image and its latent. Lists the PNGs of the "
                   "input folder (upload one here) and those of the output folder that carry a latent.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", LATENT)
    RETURN_NAMES = ("image", "latent")
    OUTPUT_TOOLTIPS = ("The image.", "Its latent, as saved (bit for bit).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (comfy_env.list_latent_images(), {
                    "image_upload": True, "tooltip": "A PNG with a latent; ' [output]' marks files in the output "
                                                     "folder."})},
                "optional": {"generator": (GENERATOR, {
                    "tooltip": "When connected, the latent is checked against this generator right away."})}}

    @classmethod
    def IS_CHANGED(cls, image, generator=None):
        path = comfy_env.latent_file_path(image, "image")
        return f"{path.stat().st_mtime_ns}-{path.stat().st_size}"

    def load(self, image, generator=None):
        from PIL import Image, ImageOps

        path = comfy_env.latent_file_path(image, "image")
        latent = P.load_png_latent(path)   # first: a PNG without a latent is explained before pixels are decoded
        if generator is not None:
            L.check_compatible(latent, generator)
        with Image.open(path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]
        ref = latent.generator
        return _report(f"{latent.describe()} (fingerprint {ref.fingerprint}); image {rgb.width}x{rgb.height}",
                       pixels.to(comfy_env.intermediate_device()), latent)
