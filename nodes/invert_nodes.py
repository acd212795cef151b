"""Nodes for inversion (real images into latents) and the weight deltas that PTI produces."""

from __future__ import annotations

import threading
from pathlib import Path

from ..core import deltas as D
from ..core.edits import inversion as I
from ..core.log import logger
from . import comfy_env
from .convert import comfy_to_generator, generator_to_comfy, to_pil
from .types import CATEGORY_ROOT, GENERATOR, LATENT, WEIGHT_DELTA

_MASK_MODES = ["fit inside mask", "ignore inside mask"]
_DELTA_SUFFIX = ".safetensors"
_PRIOR_SUFFIX = ".ii2s-prior"              # next to the checkpoint; not a checkpoint extension, so not listed
_priors: dict[str, I.WPrior] = {}          # by generator fingerprint (also saves re-reading the cache file)
_nets: dict = {}                           # perceptual networks by (name, folders)
_lock = threading.Lock()


def _steps_tooltip() -> str:
    d = I.METHOD_DEFAULTS
    return ("Optimisation steps; 0 = the method's reference value (" +
            ", ".join(f"{m} {d[m].num_steps}" for m in I.METHODS) + "; for pti this is the pivot).")


def prior_for(G, callback=None) -> I.WPrior:
    """The II2S prior of G: from the cache file next to its checkpoint, from memory, or computed and cached."""
    from ..core.latents import generator_ref

    fp = generator_ref(G).fingerprint
    with _lock:
        if fp in _priors:
            return _priors[fp]
    source = Path(G.info.source) if G.info.source else None
    cache = source.with_name(source.name + _PRIOR_SUFFIX) if source is not None and source.is_file() else None
    prior = I.load_w_prior(cache, G) if cache is not None else None
    if prior is None:
        prior = I.compute_w_prior(G, callback=callback)
        if cache is not None:
            try:
                I.save_w_prior(prior, cache)
            except OSError as e:  # read-only model folder: keep it in memory only
                logger.warning("could not cache the II2S prior next to %s (%s)", source, e)
    with _lock:
        _priors[fp] = prior
    return prior


class InvertImage:
    DESCRIPTION = ("Finds the latent that makes the generator reproduce an image (GAN inversion): Image2StyleGAN, "
                   "NVIDIA's projector, II2S or PTI (which also tunes a copy of the generator). Align faces first "
                   "(Align Face) for face models. Shows the reconstruction while it runs; cancel stops it.")
    CATEGORY = f"{CATEGORY_ROOT}/invert"
    RETURN_TYPES = (LATENT, GENERATOR, "IMAGE", "STRING", WEIGHT_DELTA)
    RETURN_NAMES = ("latent", "generator", "reconstruction", "report", "delta")
    OUTPUT_TOOLTIPS = ("The inverted latent (w for projector/PTI, w+ otherwise), one per image.",
                       "The generator to render the latent with: the input one, or for PTI its tuned copy.",
                       "The final reconstruction of each image.",
                       "Steps, time, PSNR and LPIPS per image, and any notes (resizing, ...).",
                       "PTI's weight change (tuned − original) for Save Weight Delta; empty for other methods.")
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator to invert into (it is never modified)."}),
                "image": ("IMAGE", {"tooltip": "Image(s) to invert; a batch is inverted together. Other sizes are "
                                    "resized to the generator's resolution (with a note)."}),
                "method": (list(I.METHODS), {"default": I.DEFAULT_METHOD, "tooltip":
                           "image2stylegan: W+, VGG16 + MSE. projector: NVIDIA's projector.py (one w + noise). "
                           "ii2s: W+ with a learned prior (keeps the latent editable). pti: projector pivot, then "
                           "tunes the generator to the image (best fidelity; outputs a tuned generator)."}),
                "num_steps": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": _steps_tooltip()}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1,
                                 "tooltip": "Seeds the random noise some methods use."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional mask selecting the pixels to fit (see mask_mode); e.g. ignore "
                                  "the background."}),
                "mask_mode": (_MASK_MODES, {"default": _MASK_MODES[0], "tooltip": "fit inside mask: only masked "
                              "pixels count. ignore inside mask: masked pixels are ignored (LoadImage's MASK marks "
                              "transparent pixels, so use this one with it)."}),
                "learning_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.001,
                                            "tooltip": "0 = the method's reference learning rate."}),
                "tune_steps": ("INT", {"default": I.METHOD_DEFAULTS["pti"].tune_steps, "min": 0, "max": 100000,
                                       "tooltip": "PTI only: generator tuning steps after the pivot (stops early "
                                       "once LPIPS-AlexNet reaches 0.06)."}),
                "preview_every": ("INT", {"default": 10, "min": 1, "max": 1000,
                                          "tooltip": "Show the current reconstruction every this many steps."}),
            },
        }

    def invert(self, generator, image, method, num_steps, seed, mask=None, mask_mode=_MASK_MODES[0],
               learning_rate=0.0, tune_steps=I.METHOD_DEFAULTS["pti"].tune_steps, preview_every=10):
        cfg = I.METHOD_DEFAULTS[method]
        steps = int(num_steps) or cfg.num_steps
        total = steps + (int(tune_steps) if cfg.tune_steps else 0)
        progress = comfy_env.Progress(total)
        notes = []
        if image.ndim == 4 and image.shape[-1] == 4:
            notes.append("alpha channel ignored (connect the MASK from Load Image and choose 'ignore inside mask')")
        target = comfy_to_generator(image)
        if mask is not None and mask_mode == _MASK_MODES[1]:
            mask = 1 - mask
        every = max(1, int(preview_every))

        def callback(p: I.InversionProgress) -> None:
            preview = None
            if p.step % every == 0 or p.step == p.total:
                preview = to_pil(generator_to_comfy(p.image[:1])[0])
            progress.update(p.step, preview, losses=p.losses)

        try:
            prior = prior_for(generator) if cfg.prior_weight else None
            result = I.invert_image(generator, target, method=method, num_steps=steps,
                                    lr=float(learning_rate) or None, mask=mask, prior=prior,
                                    tune_steps=int(tune_steps), seed=int(seed), callback=callback,
                                    perceptual=perceptual_nets(method))
            progress.finish()  # PTI may stop early: end the node's live status line anyway
        finally:
            comfy_env.free_memory()
        result.notes[:0] = notes
        report = result.report()
        images = generator_to_comfy(result.image, comfy_env.intermediate_device())
        return {"ui": {"text": [report]},
                "result": (result.latent, result.generator, images, report, result.delta)}


def perceptual_nets(method: str) -> dict:
    """The perceptual networks `method` needs, from the pack's perceptual model folders (cached)."""
    from ..core.losses import perceptual as P

    nets = {}
    dirs = comfy_env.perceptual_dirs()
    for name in I.PERCEPTUAL_NEEDS[method]:
        key = (name, tuple(map(str, dirs)))
        with _lock:
            net = _nets.get(key)
        if net is None:
            if name == "vgg16_features":
                net = P.load_vgg16_features(model_dirs=dirs)
            else:
                net = P.load_lpips("vgg" if name == "lpips_vgg" else "alex", model_dirs=dirs)
            with _lock:
                _nets[key] = net
        nets[name] = net
    return nets


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
                "delta_file": (comfy_env.list_latent_files(), {"tooltip": "A delta file from Save Weight Delta, in the "
                               "input or output folder."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -3.0, "max": 3.0, "step": 0.05,
                                       "tooltip": "Multiplier of the delta; 1 = as tuned."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, delta_file):
        if delta_file not in comfy_env.list_latent_files():
            return f"weight delta {delta_file!r} not found in the input or output folder"
        return True

    def apply(self, generator, delta_file, strength):
        delta = D.load_weight_delta(comfy_env.latent_file_path(delta_file, "weight delta"))
        G = D.apply_weight_delta(generator, delta, scale=float(strength))
        info = f"{delta.describe()} applied with strength {float(strength):g}"
        return {"ui": {"text": [info]}, "result": (G, info)}


NODE_CLASS_MAPPINGS = {
    "SGS_InvertImage": InvertImage,
    "SGS_SaveWeightDelta": SaveWeightDelta,
    "SGS_ApplyWeightDelta": ApplyWeightDelta,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SGS_InvertImage": "Invert Image",
    "SGS_SaveWeightDelta": "Save Weight Delta",
    "SGS_ApplyWeightDelta": "Apply Weight Delta",
}
