"""Nodes for text-driven editing with CLIP (StyleCLIP): load CLIP and ArcFace, optimise a latent toward a text."""

from __future__ import annotations

import dataclasses
import threading

import torch

from ..core.models import clip as C
from ..core.edits import clip_optimize as SC
from . import comfy_env
from .convert import generator_to_comfy, to_pil
from .types import ARCFACE, CATEGORY_ROOT, CLIP, GENERATOR, LATENT

_AUTO_WEIGHTS = "auto (by tag: models folder, else download)"
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_arcface: dict = {}                        # by (folders, device)
_lock = threading.Lock()


def clip_weight_files() -> list[str]:
    return comfy_env.list_files(comfy_env.clip_dirs(), C.WEIGHT_SUFFIXES)


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
        else:
            pretrained = weights
        clip = C.load_clip(name, model_dirs=comfy_env.clip_dirs(), pretrained=pretrained,
                           device=comfy_env.torch_device(device), dtype=_PRECISIONS[precision])
        return (clip,)


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
        with _lock:
            net = _arcface.get(key)
        if net is None:
            with torch.inference_mode(False):  # usable in optimisations later
                net = A.load_arcface(dirs, device=dev).eval().requires_grad_(False)
            with _lock:
                _arcface[key] = net
        return (net,)


def check_arcface_device(arcface, generator) -> None:
    """The identity loss runs ArcFace on the generator's images: both must sit on one device."""
    a, g = next(arcface.parameters()).device, generator.w_avg.device
    if a != g:
        raise ValueError(f"ArcFace is on {a} but the generator on {g}: set Load ArcFace's device to match Load "
                         f"StyleGAN's")


class CLIPLatentOptimize:
    DESCRIPTION = ("StyleCLIP latent optimisation: edits a latent so its image matches a text (e.g. 'a smiling face'),"
                   " while an L2 term (and optionally ArcFace identity) keeps it close to the start. Optimises in W+ "
                   "or StyleSpace S with Adam under the reference schedule (300 steps). Shows the image while it "
                   "runs; cancel stops it.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (LATENT, "IMAGE", "STRING")
    RETURN_NAMES = ("latent", "image", "report")
    OUTPUT_TOOLTIPS = ("The edited latent: w+ (space w+) or s (space s; render it with Synthesize).",
                       "The edited image(s).", "Steps, time and the CLIP distance to the text before and after.")
    FUNCTION = "optimize"

    @classmethod
    def INPUT_TYPES(cls):
        d = SC.DEFAULTS
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the latent belongs to (never modified)."}),
                "latent": (LATENT, {"tooltip": "The latent(s) to edit (z, w, w+, or s from an earlier S-space "
                                    "edit); a batch is edited together."}),
                "clip": (CLIP, {"tooltip": "CLIP from Load CLIP."}),
                "text": ("STRING", {"default": "a face with a big smile", "multiline": True,
                                    "tooltip": "What the image should show."}),
                "space": (list(SC.SPACES), {"default": d.space, "tooltip": "w+: one w per layer (the reference). "
                          "s: StyleSpace, every layer's style channels (more local edits); outputs an s latent."}),
                "num_steps": ("INT", {"default": d.num_steps, "min": 1, "max": 100000,
                                      "tooltip": "Optimisation steps (reference 300)."}),
                "l2_lambda": ("FLOAT", {"default": d.l2_lambda, "min": 0.0, "max": 10.0, "step": 0.001,
                                        "tooltip": "Weight of ||w - w_start||^2: higher stays closer to the start "
                                        "(reference 0.008)."}),
            },
            "optional": {
                "neutral_text": ("STRING", {"default": "", "multiline": False, "tooltip": "Optional: what the image "
                                 "shows now (e.g. 'a face'). Then only the difference between the texts is applied "
                                 "(directional CLIP loss), which changes less of everything else."}),
                "arcface": (ARCFACE, {"tooltip": "Optional: ArcFace from Load ArcFace, for the identity loss."}),
                "id_lambda": ("FLOAT", {"default": d.id_lambda, "min": 0.0, "max": 10.0, "step": 0.01,
                                        "tooltip": "Weight of the ArcFace identity loss (needs arcface). The "
                                        "reference's default is 0; raise it if an edited face stops looking like "
                                        "the person."}),
                "learning_rate": ("FLOAT", {"default": d.lr, "min": 0.0001, "max": 10.0, "step": 0.001,
                                            "tooltip": "Adam's peak learning rate (reference 0.1)."}),
                "clip_normalize": ("BOOLEAN", {"default": d.clip_normalize, "tooltip": "Feed CLIP properly "
                                   "normalised images. Off reproduces the reference's bug (raw [-1, 1] images), "
                                   "for comparisons only."}),
                "preview_every": ("INT", {"default": 10, "min": 1, "max": 1000,
                                          "tooltip": "Show the current image every this many steps."}),
            },
        }

    def optimize(self, generator, latent, clip, text, space, num_steps, l2_lambda, neutral_text="", arcface=None,
                 id_lambda=SC.DEFAULTS.id_lambda, learning_rate=SC.DEFAULTS.lr,
                 clip_normalize=SC.DEFAULTS.clip_normalize, preview_every=10):
        if not text.strip():
            raise ValueError("the text is empty: describe the edit, e.g. 'a face with a big smile'")
        if id_lambda > 0 and arcface is None:
            raise ValueError(f"id_lambda is {id_lambda:g} but no ArcFace is connected: connect Load ArcFace, or set "
                             f"id_lambda to 0")
        config = dataclasses.replace(SC.DEFAULTS, num_steps=int(num_steps), lr=float(learning_rate),
                                     l2_lambda=float(l2_lambda), id_lambda=float(id_lambda), space=space,
                                     clip_normalize=bool(clip_normalize))
        text_emb = clip.encode_text(text.strip())
        neutral = clip.encode_text(neutral_text.strip()) if neutral_text.strip() else None
        id_loss = None
        if arcface is not None and id_lambda > 0:
            from ..core.losses.arcface import IDLoss

            check_arcface_device(arcface, generator)
            id_loss = IDLoss(arcface)
        progress = comfy_env.Progress(config.num_steps)
        every = max(1, int(preview_every))

        def callback(p: SC.CLIPOptimizeProgress) -> None:
            preview = None
            if p.step % every == 0 or p.step == p.total:
                preview = to_pil(generator_to_comfy(p.image[:1])[0])
            progress.update(p.step, preview, losses=p.losses)

        try:
            result = SC.clip_optimize(generator, latent, text_emb, clip, config=config, neutral_embedding=neutral,
                                      id_loss=id_loss, callback=callback)
            progress.finish()
        finally:
            comfy_env.free_memory()
        report = result.report()
        images = generator_to_comfy(result.image, comfy_env.intermediate_device())
        return {"ui": {"text": [report]}, "result": (result.latent, images, report)}


NODE_CLASS_MAPPINGS = {
    "SGS_LoadCLIP": LoadCLIP,
    "SGS_LoadArcFace": LoadArcFace,
    "SGS_CLIPLatentOptimize": CLIPLatentOptimize,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SGS_LoadCLIP": "Load CLIP",
    "SGS_LoadArcFace": "Load ArcFace (identity)",
    "SGS_CLIPLatentOptimize": "CLIP Latent Optimize",
}
