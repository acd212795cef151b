"""Latent direction nodes: Discover SeFa Directions, Discover GANSpace Directions (both save to
models/stylegan_directions), Load Directions (ours, InterFaceGAN .npy/.pt, rosinality factor.pt, GANSpace .npz, dfl
component files). Applying, sweeping and the conditional edit are in nodes/direction_edit.py."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..core import directions as DR
from ..core.latents import generator_ref
from . import comfy_env
from .registry import register_node
from .types import CATEGORY_ROOT, GENERATOR, LATENT_DIRECTIONS

DIRECTIONS_FOLDER = comfy_env.DIRECTIONS_FOLDER
SPACE_CHOICES = ["auto", "w", "z"]
_WORDS = re.compile(r"[^A-Za-z0-9_.-]+")

LAYER_START_TOOLTIP = ("First w+ layer (0 = the 4 px layers: pose, face shape). With layer_end, the layers the "
                       "directions are computed from (SeFa) and suggested for applying them (both methods).")
LAYER_END_TOOLTIP = ("One past the last w+ layer (0 = every layer). E.g. 0..4 coarse (pose), 4..8 middle, 8.. fine "
                     "(colour) for a 1024 px StyleGAN2.")
FILENAME_TOOLTIP = (f"File name in models/{DIRECTIONS_FOLDER} (without .safetensors; empty: <generator>_<method>). "
                    f"An existing file is never overwritten: a number is appended. Load Directions lists it.")


def directions_dirs() -> list[Path]:
    return comfy_env.folder_dirs(DIRECTIONS_FOLDER)


def direction_files() -> list[str]:
    return comfy_env.list_files(directions_dirs(), DR.DIRECTION_SUFFIXES)


def direction_path(name: str) -> Path:
    comfy_env.check_name(name, "direction file", f"models/{DIRECTIONS_FOLDER}")
    found = comfy_env.find_in_folders(directions_dirs(), name)
    if found is None:
        raise FileNotFoundError(f"direction file {name!r} not found in "
                                f"{', '.join(map(str, directions_dirs()))}; put InterFaceGAN/GANSpace/SeFa/dfl files "
                                f"in models/{DIRECTIONS_FOLDER}, or make some with Discover SeFa/GANSpace Directions")
    return found


def layer_range(layer_start: int, layer_end: int, num_ws: int):
    """The node inputs as core's `layers`: None for 0..0 (every layer), else (start, end or num_ws)."""
    start, end = int(layer_start), int(layer_end)
    if start == 0 and end in (0, num_ws):
        return None
    return DR.check_layer_range((start, end or num_ws), num_ws, "layer_start .. layer_end")


def save_discovered(d: DR.Directions, filename: str, default: str) -> Path:
    """Write `d` to models/stylegan_directions/<filename>.safetensors (a number appended when the name is taken)."""
    name = _WORDS.sub("_", (filename or default).strip()).strip("_.")[:120] or default
    comfy_env.check_name(name, "filename", f"models/{DIRECTIONS_FOLDER}")
    folder = directions_dirs()[0]
    path, n = folder / f"{name}.safetensors", 1
    while path.exists() or path.is_symlink():
        n += 1
        path = folder / f"{name}_{n}.safetensors"
    return DR.save_directions(d, path)


def _summary(d: DR.Directions, path: Path | None = None) -> str:
    text = d.describe() + (f"; layers {d.layers[0]}..{d.layers[1] - 1}" if d.layers else "")
    if "eigenvalues" in d.info:
        text += "; eigenvalues " + ", ".join(f"{v:.3g}" for v in d.info["eigenvalues"][:6])
    if "var_ratio" in d.info:
        text += "; variance ratio " + ", ".join(f"{v:.3f}" for v in d.info["var_ratio"][:6])
    if path is not None:
        text += f"\nsaved to models/{DIRECTIONS_FOLDER}/{path.name}"
    return text


def _generator_slug(generator) -> str:
    return _WORDS.sub("_", Path(generator.info.name).stem)[:60] or "generator"


@register_node("SGS_DiscoverSeFaDirections", "Discover SeFa Directions")
class DiscoverSeFaDirections:
    DESCRIPTION = ("Finds latent directions in closed form from the generator's style weights (SeFa, Shen & Zhou "
                   "2021): the top eigenvectors of the stacked affine weights, in a second on CPU. Three variants "
                   "as in circulation: rosinality (closed_form_factorization.py), genforce (columns normalised, a "
                   "layer subset) and torgb (dfl/ComfyUI-StyleGan: with every ToRGB affine). Saved to "
                   f"models/{DIRECTIONS_FOLDER} with how they were made. Useful strengths: ±5..20.")
    CATEGORY = f"{CATEGORY_ROOT}/directions"
    RETURN_TYPES = (LATENT_DIRECTIONS, "STRING")
    RETURN_NAMES = ("directions", "info")
    OUTPUT_TOOLTIPS = ("Unit directions in W, strongest first, for Direction Edit / Direction Sweep.",
                       "What was computed, the eigenvalues and the file written.")
    FUNCTION = "discover"
    OUTPUT_NODE = True   # it writes a file: it runs even when nothing is connected to its outputs

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GENERATOR, {"tooltip": "The generator whose style affines are factorised."}),
            "variant": (list(DR.SEFA_VARIANTS), {"default": DR.DEFAULT_SEFA_VARIANT, "tooltip": "rosinality: every "
                        "conv affine (+ the 4 px ToRGB, as its script does), SVD. genforce: one affine per w+ layer, "
                        "each channel normalised. torgb: every conv and ToRGB affine (dfl's ComfyUI-StyleGan)."}),
            "num": ("INT", {"default": DR.DEFAULT_SEFA_NUM, "min": 1, "max": DR.MAX_DIRECTIONS, "tooltip":
                    "How many directions (at most w_dim), strongest first."}),
            "layer_start": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": LAYER_START_TOOLTIP}),
            "layer_end": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": LAYER_END_TOOLTIP}),
            "filename": ("STRING", {"default": "", "tooltip": FILENAME_TOOLTIP}),
        }}

    def discover(self, generator, variant, num, layer_start, layer_end, filename):
        layers = layer_range(layer_start, layer_end, generator.num_ws)
        with torch.inference_mode(False):
            d = DR.sefa(generator, variant=variant, layers=layers, num=min(int(num), generator.w_dim))
            path = save_discovered(d, filename, f"{_generator_slug(generator)}_sefa_{variant}")
        text = _summary(d, path)
        return {"ui": {"text": [text]}, "result": (d, text)}


@register_node("SGS_DiscoverGANSpaceDirections", "Discover GANSpace Directions")
class DiscoverGANSpaceDirections:
    DESCRIPTION = ("Finds latent directions by PCA of w for random seeds (GANSpace, Härkönen et al. 2020): the "
                   "principal components, strongest first, each scaled to one standard deviation (strength 1 = 1σ; "
                   "useful strengths ±1..3). A layer range is stored as where to apply them (GANSpace edits a "
                   f"range of layers). Saved to models/{DIRECTIONS_FOLDER} with how they were made.")
    CATEGORY = f"{CATEGORY_ROOT}/directions"
    RETURN_TYPES = (LATENT_DIRECTIONS, "STRING")
    RETURN_NAMES = ("directions", "info")
    OUTPUT_TOOLTIPS = ("Directions in W scaled to 1σ, for Direction Edit / Direction Sweep.",
                       "What was computed, the variance ratios and the file written.")
    FUNCTION = "discover"
    OUTPUT_NODE = True   # it writes a file: it runs even when nothing is connected to its outputs

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GENERATOR, {"tooltip": "The generator whose mapping network is sampled."}),
            "num_samples": ("INT", {"default": DR.DEFAULT_GANSPACE_SAMPLES, "min": 100,
                            "max": DR.MAX_GANSPACE_SAMPLES, "step": 100, "tooltip": "Random z mapped to w for the "
                            "PCA; more samples settle more components (memory does not grow)."}),
            "num_components": ("INT", {"default": DR.DEFAULT_GANSPACE_COMPONENTS, "min": 1,
                               "max": DR.MAX_DIRECTIONS, "tooltip": "How many components (at most w_dim)."}),
            "seed": ("INT", {"default": DR.DEFAULT_GANSPACE_SEED, "min": 0, "max": 2 ** 32 - 1,
                     "tooltip": "Seed of the random z (the same seed gives the same directions)."}),
            "layer_start": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": LAYER_START_TOOLTIP}),
            "layer_end": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": LAYER_END_TOOLTIP}),
            "filename": ("STRING", {"default": "", "tooltip": FILENAME_TOOLTIP}),
        }}

    def discover(self, generator, num_samples, num_components, seed, layer_start, layer_end, filename):
        layers = layer_range(layer_start, layer_end, generator.num_ws)
        progress = comfy_env.Progress(int(num_samples))
        with torch.inference_mode(False):
            d = DR.ganspace(generator, num_samples=int(num_samples),
                            num_components=min(int(num_components), generator.w_dim), seed=int(seed), layers=layers,
                            callback=lambda done, total: progress.update(done))
            path = save_discovered(d, filename, f"{_generator_slug(generator)}_ganspace")
        text = _summary(d, path)
        return {"ui": {"text": [text]}, "result": (d, text)}


@register_node("SGS_LoadDirections", "Load Directions")
class LoadDirections:
    DESCRIPTION = (f"Loads latent directions from models/{DIRECTIONS_FOLDER}: ours (Discover SeFa/GANSpace "
                   "Directions), InterFaceGAN boundaries (.npy [1, 512]; the .pt files of e4e / StyleGAN-NADA / "
                   "HyperStyle, [1, 512] or the pose [1, 18, 512]), rosinality's SeFa factor.pt, GANSpace .npz and "
                   "dfl/ComfyUI-StyleGan component files. Read safely: nothing in a file is executed.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (LATENT_DIRECTIONS, "STRING")
    RETURN_NAMES = ("directions", "info")
    OUTPUT_TOOLTIPS = ("The directions, for Direction Edit / Direction Sweep.",
                       "Format, method, how many, their names and the generator they were made for.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "direction_file": (direction_files(), {"tooltip": f"A file in models/{DIRECTIONS_FOLDER}."}),
                "space": (SPACE_CHOICES, {"default": "auto", "tooltip": "Where the directions move latents, for "
                          "files that do not say: auto = W for InterFaceGAN and SeFa files, and for GANSpace files "
                          "named '..._w.npz' (GANSpace's Z files have no '_w'). Ours and dfl's files keep theirs."}),
            },
            "optional": {
                "generator": (GENERATOR, {"tooltip": "When connected, the directions are checked against it now "
                              "(w_dim, layers) instead of when they are applied."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, direction_file):
        if direction_file not in direction_files():
            return (f"direction file {direction_file!r} not found in models/{DIRECTIONS_FOLDER}; refresh the node "
                    f"list (R) or choose another file")
        return True

    @classmethod
    def IS_CHANGED(cls, direction_file, space="auto", generator=None):
        stat = direction_path(direction_file).stat()
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def load(self, direction_file, space="auto", generator=None):
        path = direction_path(direction_file)
        with torch.inference_mode(False):
            d = DR.load_direction_file(path, space=None if space == "auto" else space)
        if generator is not None:
            DR.check_directions_fit(generator, d)
        text = f"{DR.detect_direction_format(path)} file: {_summary(d)}; names: {d.describe_names()}"
        if generator is not None and d.generator is not None and d.generator != generator_ref(generator):
            text += f"\nmade for {d.generator.name}, applied to {generator.info.name}"
        return {"ui": {"text": [text]}, "result": (d, text)}
