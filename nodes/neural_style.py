"""Neural Style: Gatys et al.'s optimisation-based style transfer on any IMAGE (photos, diffusion or StyleGAN
outputs), with mask pairs, colour control and coarse-to-fine scales."""

from __future__ import annotations

import torch

from ..core.edits import neural_style as NS
from ..core.edits import presets as PR
from ..core.losses import vgg19 as V
from . import comfy_env
from .caches import ModelCache
from .optimize import RunState, preset_input, resolve_preset, run_optimisation
from .registry import register_node
from .types import CATEGORY_ROOT

_vggs = ModelCache("vgg19", max_items=2)    # VGG-19 by (file, folders, device)
_METHOD = "method's"                         # a combo choice: the method's own value (METHODS table)


def backbone_names() -> list[str]:
    """The three published VGG-19 files first (the missing-file error says where to get them), then any other
    VGG-19-like file in models/perceptual."""
    known = V.known_file_names()
    others = [n for n in comfy_env.list_files(comfy_env.perceptual_dirs(), (".pth", ".safetensors"))
              if ("vgg19" in n.lower() or "vgg_normalised" in n.lower()) and n not in known]
    return known + others


def load_backbone(name: str, device) -> V.VGG19:
    dirs = comfy_env.perceptual_dirs()
    return _vggs.get_or_load((name, tuple(map(str, dirs)), str(device)),
                             lambda: V.load_vgg19(name, model_dirs=dirs, device=device))


def parse_numbers(text: str, what: str, cast=float) -> list:
    """'1, 0.5' -> [1.0, 0.5]; '' -> []."""
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()]
    try:
        return [cast(p.strip()) for p in parts]
    except ValueError:
        raise ValueError(f"{what}: expected numbers separated by commas (e.g. '1, 0.5'), got {text!r}") from None


def _mask_pairs(content_mask, style_mask, n_styles: int):
    """The core's (content mask, style mask) pairs from the node's MASK inputs: one content mask per style (a
    batch), or one mask and two styles (the first inside, the second outside); style masks likewise per style."""
    if content_mask is None and style_mask is None:
        return None
    cms = [None] * n_styles
    if content_mask is not None:
        cm = content_mask if content_mask.ndim == 3 else content_mask[None]
        if cm.shape[0] == 1 and n_styles == 2:
            cms = [cm[0], 1 - cm[0]]
        elif cm.shape[0] == n_styles:
            cms = list(cm)
        elif cm.shape[0] == 1:
            cms = [cm[0]] * n_styles
        else:
            raise ValueError(f"content_mask has {cm.shape[0]} masks for {n_styles} style images: give one mask per "
                             f"style image (a batch), or one mask (one style: where it goes; two styles: the first "
                             f"inside, the second outside)")
    sms = [None] * n_styles
    if style_mask is not None:
        sm = style_mask if style_mask.ndim == 3 else style_mask[None]
        if sm.shape[0] != n_styles:
            raise ValueError(f"style_mask has {sm.shape[0]} masks for {n_styles} style images: give one per style")
        sms = list(sm)
    return list(zip(cms, sms))


@register_node("SGS_NeuralStyle", "Neural Style", optimises=True)
class NeuralStyle:
    DESCRIPTION = ("Gatys et al.'s neural style transfer: optimises the picture so its VGG-19 features keep the "
                   "content image and its Gram matrices match the style image(s). Methods: gatys2016 (the paper's "
                   "layers, average pooling, L-BFGS), tutorial (PyTorch's tutorial exactly), multiscale (Adam, "
                   "coarse to fine, for large images). Optional masks put each style in its own region; color keeps "
                   "the content's colours. Any IMAGE works (photos, diffusion, StyleGAN); a batch is a sequence of "
                   "frames. Needs a VGG-19 file in models/perceptual. Shows the picture while it runs; Finish now "
                   "ends early with it.")
    CATEGORY = f"{CATEGORY_ROOT}/style"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    OUTPUT_TOOLTIPS = ("The stylised image(s), `size` px on the long side.", "Method, steps, time, last losses.")
    FUNCTION = "stylize"
    PRESET_KIND = "neural_style"
    PRESET_DEFAULT_METHOD = NS.DEFAULT_METHOD

    @classmethod
    def INPUT_TYPES(cls):
        d = NS.METHODS[NS.DEFAULT_METHOD]
        table = "\n".join(f"{m}: {r.description}" for m, r in NS.METHODS.items())
        return {
            "required": {
                "content": ("IMAGE", {"tooltip": "The picture(s) to restyle; a batch is stylised frame by frame."}),
                "style": ("IMAGE", {"tooltip": "The style image(s): a batch holds several styles (mixed by "
                                    "style_weights, or placed by the masks)."}),
                "method": (list(NS.METHODS), {"default": NS.DEFAULT_METHOD, "tooltip": table}),
                "backbone": (backbone_names(), {"default": V.VGG19_FILES["torchvision"][0], "tooltip": (
                    "VGG-19 weights in models/perceptual; the format is read from the file and its preprocessing "
                    "applied: torchvision vgg19-dcbb9e9d.pth (RGB, ImageNet mean/std), Caffe vgg19-d01eb7cb.pth "
                    "(BGR 0-255, more vivid results), AdaIN vgg_normalised.pth (Gatys' normalised VGG).")}),
                "size": ("INT", {"default": d.size, "min": NS.MIN_SIZE, "max": 4096, "step": 8,
                                 "tooltip": "Long side of the result in pixels (the tutorial: 512 on a GPU, 128 on "
                                            "a CPU)."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Steps per scale (L-BFGS: loss "
                                  "evaluations); 0 = the preset's count:\n" + PR.tooltip("neural_style")}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip": "Seed of the noise start."}),
            },
            "optional": {
                "content_mask": ("MASK", {"tooltip": "Where the style goes, at the content's size. One mask with two "
                                 "styles: the first style inside, the second outside; or one mask per style."}),
                "style_mask": ("MASK", {"tooltip": "Which part of each style image to use (one per style, at its "
                               "size)."}),
                "style_weights": ("STRING", {"default": "", "tooltip": "One weight per style image, e.g. '1, 0.5' "
                                  "(empty: equal)."}),
                "content_weight": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1e9, "step": 0.001,
                                             "tooltip": "-1 = the method's (" + ", ".join(
                                                 f"{m} {r.content_weight:g}" for m, r in NS.METHODS.items()) + ")."}),
                "style_weight": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1e12, "step": 1.0,
                                           "tooltip": "-1 = the method's (" + ", ".join(
                                               f"{m} {r.style_weight:g}" for m, r in NS.METHODS.items()) + "). "
                                           "Higher: more style, less content."}),
                "tv_weight": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1e6, "step": 0.01,
                                        "tooltip": "Smoothness; -1 = the method's (" + ", ".join(
                                            f"{m} {r.tv_weight:g}" for m, r in NS.METHODS.items()) + ")."}),
                "init": ([_METHOD, *NS.INITS], {"default": _METHOD, "tooltip": "Start from the content, noise or "
                         "the first style image (method's: gatys2016 noise, the others content)."}),
                "optimizer": ([_METHOD, *NS.OPTIMIZERS], {"default": _METHOD, "tooltip": "L-BFGS (the paper's, "
                              "more memory) or Adam (less memory, large images)."}),
                "pooling": ([_METHOD, *NS.POOLINGS], {"default": _METHOD, "tooltip": "method's: gatys2016 avg (the "
                            "paper), tutorial and multiscale max."}),
                "color": (list(NS.COLORS), {"default": "keep", "tooltip": "keep: the style's colours; luminance: "
                          "transfer on luminance only and keep the content's colours; histogram: give the style "
                          "the content's colours first."}),
                "scales": ("STRING", {"default": "", "tooltip": "Coarse-to-fine long sides to run before `size`, "
                           "e.g. '256, 384' (empty: none; multiscale: 128 px up by sqrt 2)."}),
                "style_scale": ("FLOAT", {"default": 1.0, "min": 0.05, "max": 8.0, "step": 0.05,
                                          "tooltip": "Style images are scaled to size x this (bigger: larger "
                                                     "brush strokes)."}),
                "init_from_previous": ("BOOLEAN", {"default": False, "tooltip": "Frames: start each frame from the "
                                       "previous frame's result (steadier video)."}),
                "preview_every": ("INT", {"default": 5, "min": 1, "max": 1000,
                                          "tooltip": "Show the current picture every this many steps."}),
                "preset": preset_input("neural_style"),
            },
        }

    def stylize(self, content, style, method, backbone, size, steps, seed, content_mask=None, style_mask=None,
                style_weights="", content_weight=-1.0, style_weight=-1.0, tv_weight=-1.0, init=_METHOD,
                optimizer=_METHOD, pooling=_METHOD, color="keep", scales="", style_scale=1.0,
                init_from_previous=False, preview_every=5, preset=None):
        n_steps = resolve_preset("neural_style", method, preset, steps=int(steps))["steps"]
        notes = []
        if content_mask is not None and content_mask.numel() and not bool((content_mask != 0).any()):
            notes.append("the content mask is all zero, which is what Load Image gives for a photo without "
                         "transparency: styled the whole image")
            content_mask = None
        device = comfy_env.torch_device("auto")
        content_t = content.permute(0, 3, 1, 2) if content.ndim == 4 else content
        style_t = style.permute(0, 3, 1, 2) if style.ndim == 4 else style
        weights = parse_numbers(style_weights, "style_weights") or None
        scale_list = parse_numbers(scales, "scales", int) or None
        masks = _mask_pairs(content_mask, style_mask, style_t.shape[0] if style_t.ndim == 4 else 1)
        vgg = load_backbone(backbone, device)

        def opt(v):
            return None if v == _METHOD else v

        def run(callback):
            return NS.style_transfer(content_t, style_t, vgg=vgg, method=method, style_weights=weights,
                                     size=int(size), steps=n_steps,
                                     content_weight=None if content_weight < 0 else content_weight,
                                     style_weight=None if style_weight < 0 else style_weight,
                                     tv_weight=None if tv_weight < 0 else tv_weight, init=opt(init),
                                     optimizer=opt(optimizer), pooling=opt(pooling), masks=masks, color=color,
                                     scales=scale_list, style_scale=float(style_scale), seed=int(seed),
                                     init_from_previous=bool(init_from_previous), callback=callback)

        n_frames = content_t.shape[0] if content_t.ndim == 4 else 1
        sizes = NS.scale_sizes(int(size), scale_list, NS.METHODS[method])
        first = NS.METHODS[method].first_scale_factor
        total = n_frames * n_steps * (len(sizes) - 1 + first)
        state = RunState("neural_style", method, device.type, int(size))
        result = run_optimisation(total, run, preview_every=preview_every, state=state)
        report = "\n".join([result.report(), *notes])
        if state.finished_early:
            report += f"\n{state.note()} (Finish now)"
        image = result.image.permute(0, 2, 3, 1).to(comfy_env.intermediate_device(), torch.float32).contiguous()
        return {"ui": {"text": [report]}, "result": (image, report)}
