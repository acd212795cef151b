"""Nodes for latents: sample, synthesize, interpolate, style-mix, save and load."""

from __future__ import annotations

from ..core import latents as L
from . import comfy_env
from .convert import generator_to_comfy, to_pil
from .registry import register_node
from .types import CATEGORY_ROOT, GENERATOR, LATENT

_STYLE_MIX_CHOICES = ["coarse", "middle", "fine", "coarse+middle", "middle+fine", "custom"]


@register_node("SGS_SampleLatent", "Sample Latent")
class SampleLatent:
    DESCRIPTION = ("Turns seeds into latents (z, w or w+) with the truncation trick. In 'nvidia' seed mode seed N "
                   "gives the same z and w as NVIDIA's gen_images.py / generate.py, so the same image (to within one "
                   "8-bit level).")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("A batch of latents, one per seed.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator whose latent space to sample."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1,
                                 "tooltip": "First seed; the batch uses seed, seed+1, ..."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip": "Number of latents."}),
                "space": (list(L.SPACES), {"default": "w", "tooltip": "z: the input noise (interpolate with "
                          "slerp); w: the mapped latent; w+: one w per layer (needed for per-layer edits)."}),
                "truncation_psi": ("FLOAT", {"default": L.DEFAULT_TRUNCATION_PSI, "min": -2.0, "max": 2.0,
                                             "step": 0.05, "tooltip": "Truncation: 1 = none, lower = closer to "
                                             "the average image (more typical, less varied)."}),
                "truncation_cutoff": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Truncate only the "
                                              "first N layers; 0 = all layers."}),
                "seed_mode": (list(L.SEED_MODES), {"default": "nvidia", "tooltip": "nvidia: numpy "
                              "RandomState(seed), matching NVIDIA's scripts; torch: torch.Generator(seed)."}),
            },
            "optional": {
                "seed_list": ("STRING", {"default": "", "tooltip": "Explicit seeds like '1,2,5-8'; overrides seed "
                              f"and batch_size when not empty (at most {L.MAX_LATENTS:,} seeds)."}),
                "class_idx": ("INT", {"default": 0, "min": 0, "max": 100000,
                                      "tooltip": "Class for conditional models; ignored by unconditional ones."}),
            },
        }

    def sample(self, generator, seed, batch_size, space, truncation_psi, truncation_cutoff, seed_mode,
               seed_list="", class_idx=0):
        seeds = L.parse_seeds(seed_list) if seed_list.strip() else L.batch_seeds(seed, batch_size)
        latent = L.sample_latents(generator, seeds, space=space, truncation_psi=truncation_psi,
                                  truncation_cutoff=truncation_cutoff or None, seed_mode=seed_mode,
                                  class_idx=class_idx if generator.c_dim else None)
        return (latent,)


@register_node("SGS_Synthesize", "Synthesize Image", frames=True)
class Synthesize:
    DESCRIPTION = "Renders latents to images with the generator (in chunks, with progress and cancel)."
    CATEGORY = f"{CATEGORY_ROOT}/image"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("One image per latent, as a batch.",)
    FUNCTION = "synthesize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator to render with."}),
                "latent": (LATENT, {"tooltip": "Latents made for this generator (or one of the same shape)."}),
                "noise_mode": (["const", "random", "none"], {"default": L.DEFAULT_NOISE_MODE, "tooltip":
                               "StyleGAN2 per-pixel noise: const (stored maps, reproducible), random, or none."}),
            },
            "optional": {
                "noise_seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1,
                                       "tooltip": "Seed of the noise when noise_mode is random."}),
                "chunk_size": ("INT", {"default": L.DEFAULT_CHUNK_SIZE, "min": 1, "max": 64,
                                       "tooltip": "Images rendered at once; lower it if memory runs out."}),
            },
        }

    def synthesize(self, generator, latent, noise_mode, noise_seed=0, chunk_size=L.DEFAULT_CHUNK_SIZE):
        progress = comfy_env.Progress(latent.batch_size)
        newest = []  # the last image of the newest chunk: the node shows frames as they come during long batches

        def keep(chunk):
            newest[:] = [chunk[-1:]]

        def step(done, total):
            progress.update(done, preview=to_pil(generator_to_comfy(newest[0])[0]) if newest else None)

        images = L.synthesize(generator, latent, noise_mode=noise_mode, chunk_size=chunk_size, noise_seed=noise_seed,
                              callback=step, on_chunk=keep)
        out = generator_to_comfy(images, comfy_env.intermediate_device())
        progress.update(latent.batch_size, preview=to_pil(out[-1]))
        # Small previews of every frame on the node (the frame scrubber of the web extension walks them).
        return {"ui": {"images": comfy_env.preview_images(out)}, "result": (out,)}


@register_node("SGS_InterpolateLatents", "Interpolate Latents")
class InterpolateLatents:
    DESCRIPTION = ("Frames between two latents, both endpoints included, as one batch (feed it to Synthesize and a "
                   "video node). slerp in Z, lerp in W/W+; optionally only a range of layers.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("num_frames latents per pair, from a to b, pair after pair.",)
    FUNCTION = "interpolate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent_a": (LATENT, {"tooltip": "Start latent(s)."}),
                "latent_b": (LATENT, {"tooltip": "End latent(s); same batch size as latent_a, or 1."}),
                "num_frames": ("INT", {"default": 16, "min": 2, "max": L.MAX_LATENTS, "tooltip": "Frames per "
                               f"pair, including both endpoints (at most {L.MAX_LATENTS:,} frames in all)."}),
                "method": (list(L.INTERPOLATION_METHODS), {"default": "auto", "tooltip": "auto: slerp for z, "
                           "lerp for w/w+."}),
            },
            "optional": {
                "generator": (GENERATOR, {"tooltip": "Needed only to mix spaces (z with w) or to limit layers "
                              "of z/w latents."}),
                "layer_start": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "First w+ layer to "
                                "interpolate; other layers stay as in latent_a."}),
                "layer_end": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "One past the last layer to "
                              "interpolate; 0 = through the last layer."}),
            },
        }

    def interpolate(self, latent_a, latent_b, num_frames, method, generator=None, layer_start=0, layer_end=0):
        return (L.interpolate_latents(latent_a, latent_b, num_frames, method=method, layer_start=layer_start,
                                      layer_end=layer_end or None, G=generator),)


@register_node("SGS_StyleMix", "Style Mix")
class StyleMix:
    DESCRIPTION = ("Style mixing: takes chosen layers from the style latent and the rest from the base latent. "
                   "coarse (<= 8 px): pose and face shape; middle (16-32 px): features; fine (>= 64 px): colours.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("A w+ latent with the mixed layers.",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator both latents belong to."}),
                "base": (LATENT, {"tooltip": "Latent that keeps every layer not taken from style."}),
                "style": (LATENT, {"tooltip": "Latent whose layers replace the chosen ones."}),
                "layers": (_STYLE_MIX_CHOICES, {"default": "fine", "tooltip": "Which layers come from style; "
                           "'custom' uses custom_layers."}),
            },
            "optional": {
                "custom_layers": ("STRING", {"default": "0-3", "tooltip": "Layer indices like '0-3, 8' (w+ "
                                  "layers, 0 = coarsest)."}),
            },
        }

    def mix(self, generator, base, style, layers, custom_layers="0-3"):
        if layers == "custom":
            indices = L.parse_layers(custom_layers, generator.num_ws)
        else:
            indices = sorted({i for preset in layers.split("+") for i in L.style_mix_layers(generator, preset)})
        return (L.mix_styles(generator, base, style, indices),)


@register_node("SGS_SaveLatent", "Save Latent")
class SaveLatent:
    DESCRIPTION = ("Saves latents as .safetensors in the output folder, with their space and the identity of "
                   "their generator (an incompatible model refuses them later).")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": (LATENT, {"tooltip": "The latents to save."}),
            "filename_prefix": ("STRING", {"default": "latents/stylegan", "tooltip": "Path prefix in the output "
                                "folder; a counter is appended."}),
        }}

    def save(self, latent, filename_prefix):
        path = comfy_env.next_output_path(filename_prefix, comfy_env.LATENT_EXTENSION)
        L.save_latent(latent, path)
        return {"ui": {"text": [f"saved {latent.describe()} to {path.name}"]}}


@register_node("SGS_LoadLatent", "Load Latent")
class LoadLatent:
    DESCRIPTION = "Loads latents saved by Save Latent (from the input folder, or the output folder)."
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The saved latents.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"latent_file": (comfy_env.list_latent_files(L.LATENT_FORMAT), {
                "tooltip": "A .safetensors latent file; ' [output]' marks files in the output folder."})},
            "optional": {"generator": (GENERATOR, {
                "tooltip": "When connected, the latent is checked against this generator right away."})},
        }

    @classmethod
    def IS_CHANGED(cls, latent_file, generator=None):
        path = comfy_env.latent_file_path(latent_file)
        return f"{path.stat().st_mtime_ns}-{path.stat().st_size}"

    def load(self, latent_file, generator=None):
        latent = L.load_latent(comfy_env.latent_file_path(latent_file))
        if generator is not None:
            L.check_compatible(latent, generator)
        return (latent,)

