"""Nodes that load, build and save generators."""

from __future__ import annotations

from pathlib import Path

from ..core import (PRECISIONS, GeneratorConfig, MappingConfig, StyleGAN2Config, StyleGAN3Config, build_generator,
                    compute_w_avg)
from ..core.hub import download_checkpoint, known_license
from ..core.loaders import load_generator, save_generator
from . import comfy_env
from .caches import ModelCache
from .registry import register_node
from .types import CATEGORY_ROOT, GENERATOR

_cache = ModelCache("generators", max_items=2)   # by (file version, device, network, precision)


def describe_generator(G) -> str:
    lines = [f"{G.info.name}: {G.arch}, {G.img_resolution} px, z_dim {G.z_dim}, w_dim {G.w_dim}, "
             f"num_ws {G.num_ws}" + (f", {G.c_dim} classes" if G.c_dim else ""),
             f"format: {G.info.source_format}, device: {G.w_avg.device}, dtype: {G.precision}"]
    if G.info.license:
        lines.append(f"licence: {G.info.license}")
    return "\n".join(lines)


def _load_cached(path: Path, device, network: str, license_text: str, precision: str = "auto"):
    """Load once per (file version, device, network, precision); cached generators are shared and never
    modified."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device), network, precision)

    def load():
        G = load_generator(path, device=device, network=network, precision=precision)
        G.info.license = G.info.license or license_text or known_license(path.name)
        return G

    return _cache.get_or_load(key, load)


@register_node("SGS_LoadStyleGAN", "Load StyleGAN")
class LoadStyleGAN:
    DESCRIPTION = ("Loads a StyleGAN2, StyleGAN2-ADA or StyleGAN3 generator from models/stylegan (NVIDIA .pkl, "
                   "rosinality .pt or StyleGAN Studio .safetensors), or from the Hugging Face Hub. Files are read "
                   "with a restricted loader that never runs code from the file. Kept in memory between runs.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (GENERATOR, "STRING")
    RETURN_NAMES = ("generator", "info")
    OUTPUT_TOOLTIPS = ("The generator, for sampling, synthesis and editing nodes.",
                       "Architecture, resolution, source and licence of the loaded model.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (comfy_env.list_models(), {
                    "tooltip": "Checkpoint in models/stylegan. Ignored when a Hugging Face repo is given."}),
                "device": (comfy_env.DEVICE_CHOICES, {
                    "default": "auto", "tooltip": "Where the generator runs; 'auto' follows ComfyUI (respects --cpu)."}),
                "network": (["G_ema", "G"], {
                    "default": "G_ema",
                    "tooltip": "For NVIDIA training snapshots: G_ema (the averaged generator everyone uses) or G."}),
                "dtype": (list(PRECISIONS), {
                    "default": "auto",
                    "tooltip": "auto: the layers a model was trained in fp16 run in fp16 on CUDA, as NVIDIA samples "
                               "them (fp32 on CPU and MPS). float32: everything in fp32 (slower on CUDA, matches "
                               "CPU output more closely)."}),
            },
            "optional": {
                "hf_repo": ("STRING", {"default": "", "tooltip": "Optional Hugging Face repo 'owner/name' to download "
                                       "from (saved into models/stylegan). Leave empty to use ckpt_name."}),
                "hf_filename": ("STRING", {"default": "", "tooltip": "File inside the Hugging Face repo, e.g. "
                                           "'stylegan2-ffhq-1024x1024.pkl'."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, ckpt_name, hf_repo="", hf_filename=""):
        # ckpt_name is checked here rather than by ComfyUI so that a Hub download works with an empty folder.
        if hf_repo:
            return True if hf_filename else "hf_filename is required when hf_repo is set"
        if ckpt_name not in comfy_env.list_models():
            return (f"checkpoint {ckpt_name!r} is not in models/{comfy_env.MODEL_FOLDER}; put a StyleGAN .pkl, .pt "
                    f"or .safetensors there, or set hf_repo and hf_filename")
        return True

    @classmethod
    def IS_CHANGED(cls, ckpt_name, hf_repo="", hf_filename="", **_):
        """The checkpoint file's version (modification time and size): a file replaced under the same name is
        loaded again. Without this ComfyUI reuses the node's cached output, and `_load_cached`'s own key by file
        version is never reached."""
        if hf_repo:
            return f"hub:{hf_repo}/{hf_filename}"
        try:
            stat = comfy_env.model_path(ckpt_name).stat()
        except (OSError, ValueError):
            return ""  # VALIDATE_INPUTS reports the missing file
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def load(self, ckpt_name, device="auto", network="G_ema", dtype="auto", hf_repo="", hf_filename=""):
        license_text = ""
        if hf_repo:
            path, license_text = download_checkpoint(hf_repo, hf_filename, comfy_env.model_dirs()[0])
        else:
            path = comfy_env.model_path(ckpt_name)
        G = _load_cached(path, comfy_env.torch_device(device), network, license_text, dtype)
        info = describe_generator(G)
        return {"ui": {"text": [info]}, "result": (G, info)}


@register_node("SGS_DemoGenerator", "Demo Generator (random)")
class DemoGenerator:
    DESCRIPTION = ("Builds a small StyleGAN with random (seeded) weights, so graphs can be tried without "
                   "downloading a model. Its images are abstract textures, not faces.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (GENERATOR, "STRING")
    RETURN_NAMES = ("generator", "info")
    OUTPUT_TOOLTIPS = ("A randomly initialised generator.", "Its architecture.")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "arch": (["stylegan2", "stylegan3"], {"default": "stylegan2", "tooltip": "Architecture to build."}),
            "resolution": ([32, 64, 128, 256], {"default": 64, "tooltip": "Output resolution in pixels."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1,
                             "tooltip": "Seed of the random weights; the same seed builds the same generator."}),
            "device": (comfy_env.DEVICE_CHOICES, {"default": "auto", "tooltip": "Where the generator runs."}),
        }}

    def build(self, arch, resolution, seed, device="auto"):
        G = build_demo_generator(arch, int(resolution), int(seed)).to(comfy_env.torch_device(device))
        info = describe_generator(G)
        return {"ui": {"text": [info]}, "result": (G, info)}


def build_demo_generator(arch: str, resolution: int, seed: int):
    """A small random generator with NVIDIA's initialisation and a measured w_avg."""
    if arch == "stylegan2":
        synthesis = StyleGAN2Config(channel_base=4096, channel_max=128, conv_clamp=256)
    else:
        synthesis = StyleGAN3Config(channel_base=4096, channel_max=128)
    config = GeneratorConfig(arch=arch, z_dim=128, w_dim=128, img_resolution=resolution,
                             mapping=MappingConfig(num_layers=2), synthesis=synthesis)
    G = build_generator(config, seed=seed)
    compute_w_avg(G, num_samples=2000, seed=seed)
    G.info.name = f"demo-{arch}-{resolution}px-seed{seed}"
    G.info.source_format = "random"
    return G


@register_node("SGS_SaveStyleGAN", "Save StyleGAN as safetensors")
class SaveStyleGAN:
    DESCRIPTION = ("Saves the generator as a StyleGAN Studio .safetensors file in models/stylegan: safe to share "
                   "and fast to load, with the architecture and licence stored in the file.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GENERATOR, {"tooltip": "The generator to save."}),
            "filename": ("STRING", {"default": "stylegan", "tooltip": "File name in models/stylegan; "
                                    "'.safetensors' is added. An existing file is not overwritten."}),
        }}

    def save(self, generator, filename):
        name = Path(filename.strip() or "stylegan").name
        if not name.endswith(".safetensors"):
            name += ".safetensors"
        folder = comfy_env.model_dirs()[0]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if path.exists():
            raise FileExistsError(f"{path} already exists; choose another file name")
        save_generator(generator, path)
        return {"ui": {"text": [f"saved {path}"]}}

