"""Loaders of the networks edits use besides the generator: CLIP (text and image encoders) and ArcFace (identity)."""

from __future__ import annotations

import torch

from ..core.models import clip as C
from . import comfy_env
from .caches import ModelCache, add_release_hook
from .registry import register_node
from .types import ARCFACE, CATEGORY_ROOT, CLIP

_AUTO_WEIGHTS = "auto (by tag: models folder, else download)"
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_arcface = ModelCache("arcface", max_items=2)   # by (folders, device)
# CLIP models are cached by core.models.clip.load_clip itself; it is emptied whenever the pack's caches are.
add_release_hook("clip", lambda device: C.clear_clip_cache())


def clip_weight_files() -> list[str]:
    return comfy_env.list_files(comfy_env.clip_dirs(), C.WEIGHT_SUFFIXES)


@register_node("SGS_LoadCLIP", "Load CLIP")
class LoadCLIP:
    DESCRIPTION = ("Loads an open_clip model for text-driven edits: a file from models/text_encoders or models/clip "
                   "(open_clip state dicts, e.g. ViT-B-32 open_clip_model.safetensors), or by tag from the Hugging "
                   "Face Hub when online (ViT-B-32 'openai' is what StyleCLIP used). Loaded once and cached.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (CLIP,)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The CLIP model (image and text encoders) for the CLIP edit nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": ("STRING", {"default": "ViT-B-32", "tooltip": "open_clip architecture (ViT-B-32, "
                               "ViT-L-14, ...) or a Hub repository 'hf-hub:<org>/<repo>'."}),
                "weights": ([_AUTO_WEIGHTS] + clip_weight_files(), {"default": _AUTO_WEIGHTS, "tooltip":
                            "A weight file from models/text_encoders or models/clip, or 'auto': look for "
                            "'<model>-<tag>.safetensors' (e.g. ViT-B-32-openai.safetensors) there, else download "
                            "the tag's weights from the Hugging Face Hub."}),
                "pretrained_tag": ("STRING", {"default": C.DEFAULT_TAG, "tooltip": "open_clip's weight tag with "
                                   "'auto' weights (openai, laion2b_s34b_b79k, ...); ignored otherwise."}),
                "device": (comfy_env.DEVICE_CHOICES, {"default": "auto", "tooltip": "Where CLIP runs; 'auto' "
                           "follows ComfyUI."}),
                "precision": (list(_PRECISIONS), {"default": "fp32", "tooltip": "fp16/bf16 halve memory on a GPU; "
                              "on CPU keep fp32."}),
            },
        }

    def load(self, model_name, weights, pretrained_tag, device, precision):
        name = model_name.strip()
        if weights == _AUTO_WEIGHTS:
            pretrained = None if name.startswith(C.HF_HUB_PREFIX) else (pretrained_tag.strip() or None)
        else:  # a file from the list: found in the CLIP folders by comfy_env's rule, never relative to the cwd
            comfy_env.check_name(weights, "CLIP weight file", "models/text_encoders or models/clip")
            path = comfy_env.find_in_folders(comfy_env.clip_dirs(), weights)
            if path is None:
                raise FileNotFoundError(f"CLIP weight file {weights!r} not found in "
                                        f"{', '.join(map(str, comfy_env.clip_dirs()))}; put open_clip weights "
                                        f"(.safetensors, .bin, .pt, .pth) in models/text_encoders")
            pretrained = str(path)
        clip = C.load_clip(name, model_dirs=comfy_env.clip_dirs(), pretrained=pretrained,
                           device=comfy_env.torch_device(device), dtype=_PRECISIONS[precision])
        return (clip,)


@register_node("SGS_LoadArcFace", "Load ArcFace (identity)")
class LoadArcFace:
    DESCRIPTION = ("Loads ArcFace IR-SE50 (model_ir_se50.pth, the identity network of pSp and StyleCLIP) from "
                   "models/arcface, for the optional identity loss that keeps an edited face recognisable.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (ARCFACE,)
    RETURN_NAMES = ("arcface",)
    OUTPUT_TOOLTIPS = ("The identity network for the id_lambda inputs of CLIP edit nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "device": (comfy_env.DEVICE_CHOICES, {"default": "auto", "tooltip": "Where ArcFace runs; 'auto' follows "
                       "ComfyUI."}),
        }}

    def load(self, device):
        from ..core.losses import arcface as A

        dirs = comfy_env.arcface_dirs()
        dev = comfy_env.torch_device(device)
        key = (tuple(map(str, dirs)), str(dev))

        def read():
            with torch.inference_mode(False):  # usable in optimisations later
                return A.load_arcface(dirs, device=dev).eval().requires_grad_(False)

        net = _arcface.get_or_load(key, read)
        return (net,)


def check_arcface_device(arcface, generator) -> None:
    """The identity loss runs ArcFace on the generator's images: both must sit on one device."""
    a, g = next(arcface.parameters()).device, generator.w_avg.device
    if a != g:
        raise ValueError(f"ArcFace is on {a} but the generator on {g}: set Load ArcFace's device to match Load "
                         f"StyleGAN's")
