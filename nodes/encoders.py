"""Load Encoder and Encode Image: pSp / e4e / ReStyle encoders, an image into W+ in about a second."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.edits import encoder_inversion as EI
from ..core.hub import download_checkpoint
from ..core.models import encoders as ENC
from . import comfy_env
from .caches import ModelCache
from .convert import comfy_to_generator, generator_to_comfy
from .registry import register_node
from .types import CATEGORY_ROOT, ENCODER, GENERATOR, LATENT

_cache = ModelCache("encoders", max_items=2)   # by (file version, device): a face encoder is ~1 GB


def encoder_files() -> list[str]:
    return comfy_env.list_files(comfy_env.encoder_dirs(), ENC.ENCODER_EXTENSIONS)


def _encoder_path(name: str) -> Path:
    comfy_env.check_name(name, "encoder file", f"models/{comfy_env.ENCODER_FOLDER}")
    path = comfy_env.find_in_folders(comfy_env.encoder_dirs(), name)
    if path is None:
        raise FileNotFoundError(f"encoder file {name!r} not found in {', '.join(map(str, comfy_env.encoder_dirs()))}; "
                                f"put e4e_ffhq_encode.pt, psp_ffhq_encode.pt or a ReStyle checkpoint there")
    return path


def load_encoder_cached(path: Path, device) -> ENC.Encoder:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(device))

    def read():
        with torch.inference_mode(False):
            return ENC.load_encoder(path, device=device)

    return _cache.get_or_load(key, read)


@register_node("SGS_LoadEncoder", "Load Encoder")
class LoadEncoder:
    DESCRIPTION = ("Loads a pSp, e4e or ReStyle encoder (.pt from models/encoders, or from the Hugging Face Hub), "
                   "for Encode Image and Invert Image's e4e / restyle methods and encoder start. Read safely "
                   "(weights_only: nothing in the file is executed). The same file carries the generator it was "
                   "trained with: Load StyleGAN reads it too.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (ENCODER, "STRING")
    RETURN_NAMES = ("encoder", "info")
    OUTPUT_TOOLTIPS = ("The encoder.", "Its kind, style layers and the generator size it was trained with.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder_name": (encoder_files(), {"tooltip": "A pSp / e4e / ReStyle checkpoint in models/encoders. "
                                 "Ignored when a Hugging Face repo is given."}),
                "device": (comfy_env.DEVICE_CHOICES, {"default": "auto", "tooltip": "Where the encoder runs; put it "
                           "where the generator is."}),
            },
            "optional": {
                "hf_repo": ("STRING", {"default": "", "tooltip": "Optional Hugging Face repo 'owner/name' to download "
                            "the encoder from (saved into models/encoders)."}),
                "hf_filename": ("STRING", {"default": "", "tooltip": "File in the repo, e.g. 'e4e_ffhq_encode.pt'."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, encoder_name, hf_repo="", hf_filename=""):
        if hf_repo:
            return True if hf_filename else "hf_filename is required when hf_repo is set"
        if encoder_name not in encoder_files():
            return (f"encoder {encoder_name!r} is not in models/{comfy_env.ENCODER_FOLDER}; put e4e_ffhq_encode.pt "
                    f"(or a pSp / ReStyle .pt) there, or set hf_repo and hf_filename")
        return True

    def load(self, encoder_name, device="auto", hf_repo="", hf_filename=""):
        if hf_repo:
            path, _ = download_checkpoint(hf_repo, hf_filename, comfy_env.encoder_dirs()[0])
        else:
            path = _encoder_path(encoder_name)
        enc = load_encoder_cached(path, comfy_env.torch_device(device))
        info = enc.describe()
        return {"ui": {"text": [info]}, "result": (enc, info)}


@register_node("SGS_EncodeImage", "Encode Image")
class EncodeImage:
    DESCRIPTION = ("Inverts aligned face photos with an encoder: one pass (pSp, e4e) or a few (ReStyle), about a "
                   "second each instead of minutes of optimisation. Align faces first (Align Face). The latent edits "
                   "well (e4e's purpose); for more fidelity start Invert Image (ii2s / pti) from the encoder.")
    CATEGORY = f"{CATEGORY_ROOT}/invert"
    RETURN_TYPES = (LATENT, "IMAGE", "STRING")
    RETURN_NAMES = ("latent", "reconstruction", "report")
    OUTPUT_TOOLTIPS = ("The w+ latent of each image.", "The generator's rendering of it.",
                       "Passes, time and notes (pairing with the generator, resizing).")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GENERATOR, {"tooltip": "The generator the encoder was trained with (checked)."}),
            "encoder": (ENCODER, {"tooltip": "From Load Encoder."}),
            "image": ("IMAGE", {"tooltip": "Aligned face image(s); resized to 256 px for the encoder."}),
            "num_iterations": ("INT", {"default": 0, "min": 0, "max": EI.MAX_ITERATIONS, "tooltip": "ReStyle's "
                               f"refinement passes; 0 = {ENC.DEFAULT_RESTYLE_ITERATIONS}. pSp and e4e take one."}),
        }}

    def encode(self, generator, encoder, image, num_iterations=0):
        res = EI.encode_image(encoder, generator, comfy_to_generator(image),
                              num_iterations=int(num_iterations) or None)
        report = res.report()
        images = generator_to_comfy(res.image, comfy_env.intermediate_device())
        return {"ui": {"text": [report]}, "result": (res.latent, images, report)}
