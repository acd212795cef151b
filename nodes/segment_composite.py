"""Segment Composite: Barbershop's region transfer between aligned faces (hair shape from one photo, its colour
from another), in FS space, driven by any MASK or by class names with a face parser."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..core.edits import segment_composite as SC
from ..core.edits.segment_composite.config import STEP_FIELDS
from ..core.edits.segment_composite.pipeline import STYLE_LAYERS
from ..core.latents import generator_ref, weights_digest
from . import comfy_env
from .caches import ModelCache
from .convert import comfy_to_generator, generator_to_comfy
from .inversion import perceptual_net
from .optimize import RunState, preset_input, run_optimisation
from .registry import register_node
from .types import CATEGORY_ROOT, FACE_PARSER, GENERATOR, LATENT

PRESET_KIND = "segment_composite"
EMBEDDINGS_FOLDER = "composite_embeddings"   # output/<this>/<generator>/: the embeddings cache_embeddings writes
# One EmbeddingCache per disk folder (None: memory only), kept across runs: a cancelled or re-queued composite
# reuses the W+/FS embeddings of its photos. Emptied with the pack's other caches when ComfyUI frees memory.
_embeddings = ModelCache("composite_embeddings", max_items=4)

_STEP_TOOLTIPS = {
    "w_steps": "II2S W+ embedding steps per photo (Barbershop's W_steps)",
    "fs_steps": "FS embedding steps per photo (Barbershop's FS_steps)",
    "align_steps1": "alignment steps, stage 1 (cross-entropy to the target segmentation; parser mode only)",
    "align_steps2": "alignment steps, stage 2 (cross-entropy + masked Gram style loss; parser mode only)",
    "blend_steps": "S-code blending steps (masked LPIPS)",
    "target_fill_steps": "steps of each of the two passes that fill the target segmentation where the region "
                         "uncovers the base (parser mode only)",
}


def embedding_cache(G, on_disk: bool) -> "SC.EmbeddingCache":
    """The process-wide embedding cache: memory only, or also on disk in output/composite_embeddings/<generator>/.

    On disk the folder is per set of weights (`<fingerprint>-<weights digest>`, as `comfy_env.cache_file` names its
    output-folder caches), always in the output folder: these are embeddings of the user's photos, never written
    next to a checkpoint in a model folder (where Load StyleGAN would list the .safetensors files)."""
    folder: Optional[Path] = None
    if on_disk:
        folder = comfy_env.output_dir() / EMBEDDINGS_FOLDER / f"{generator_ref(G).fingerprint}-{weights_digest(G)[:12]}"
    return _embeddings.get_or_load(str(folder), lambda: SC.EmbeddingCache(folder))


def _source(image, latent, name: str, required: bool = True):
    """One photo for core: the IMAGE `name` ([1, 3, H, W] in [-1, 1]) or the fs latent `<name>_latent`; exactly one
    of the two must be connected (only one when `required` is False)."""
    latent_name = f"{name}_latent"
    if image is not None and latent is not None:
        raise ValueError(f"both {name} (IMAGE) and {latent_name} are connected: connect one of them (an aligned "
                         f"face IMAGE, or its fs latent from Invert Image with method ii2s+fs)")
    if image is None and latent is None:
        if not required:
            return None
        raise ValueError(f"connect {name} (an aligned face IMAGE, e.g. from Align Face) or {latent_name} (an fs "
                         f"latent from Invert Image with method ii2s+fs or Load Latent)")
    if latent is not None:
        if getattr(latent, "space", None) != "fs":
            raise ValueError(f"{latent_name} is a {getattr(latent, 'space', type(latent).__name__)} latent; Segment "
                             f"Composite takes fs latents (Invert Image with method ii2s+fs), or connect the "
                             f"aligned photo to {name} instead")
        if latent.batch_size != 1:
            raise ValueError(f"{latent_name} holds {latent.batch_size} latents; Segment Composite composites one "
                             f"face: pick one (e.g. save and load the one you want)")
        return latent
    x = comfy_to_generator(image)
    if x.shape[0] != 1:
        raise ValueError(f"{name} holds {x.shape[0]} images; Segment Composite composites one face: pick one with "
                         f"ImageFromBatch (batch_index, length 1)")
    return x


def _mask(mask, name: str) -> Optional[torch.Tensor]:
    """A MASK input as core takes it: [1, H, W] float (any size: core resizes it); one mask, not a batch."""
    if mask is None:
        return None
    m = mask if mask.ndim == 3 else mask.reshape(1, *mask.shape[-2:])
    if m.shape[0] != 1:
        raise ValueError(f"{name} holds {m.shape[0]} masks; Segment Composite composites one face: give one mask "
                         f"(e.g. SplitImageWithAlpha / a mask node with batch 1)")
    return m.to(torch.float32)


def debug_image(result) -> torch.Tensor:
    """The intermediates (aligned reference, appearance, label maps, ...) side by side, then the composite: one
    IMAGE [1, R, k*R, 3]."""
    parts = [t[:1].to(result.image) for t in result.intermediates.values() if t is not None] + [result.image[:1]]
    size = result.image.shape[-2:]
    parts = [p if p.shape[-2:] == size else torch.nn.functional.interpolate(p, size=size, mode="area") for p in parts]
    parts = [p.repeat(1, 3, 1, 1) if p.shape[1] == 1 else p[:, :3] for p in parts]
    return generator_to_comfy(torch.cat(parts, dim=3), comfy_env.intermediate_device())


@register_node("SGS_SegmentComposite", "Segment Composite", optimises=True)
class SegmentComposite:
    DESCRIPTION = ("Barbershop's composite of aligned faces: takes a region (e.g. hair) from a reference photo and "
                   "puts it on the base photo, optionally with the colour/texture of an appearance photo, in the "
                   "generator's FS space (W+ and FS embeddings of each photo, alignment of the region to the base, "
                   "F mixing at 32 px and S-code blending). The region is any MASK (from any segmenter, in the "
                   "aligned crop), or class names with a face parser (Load Face Parser), which also enables the "
                   "alignment of the region's shape; without a parser it runs mask-only (F mixing + blending). "
                   "StyleGAN2 generators of at least 64 px. Embeddings are cached (a Stop or a re-queue keeps them; "
                   "cache_embeddings also writes them to output/composite_embeddings). Paste the result back into "
                   "the photo with Unalign Face. Shows the composite while it runs; Finish now completes quickly "
                   "(the running stage and each later one end after their current step).")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = ("IMAGE", LATENT, "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "latent", "mask", "debug", "report")
    OUTPUT_TOOLTIPS = ("The composite at the generator's resolution (aligned; paste it back with Unalign Face).",
                       "Its fs latent (Synthesize renders it; Save Latent keeps it).",
                       "The region mask actually used, at the generator's resolution.",
                       "The intermediates side by side (aligned reference, target segmentation, ...), then the "
                       "composite.",
                       "Stages, steps, time, cache hits and notes.")
    FUNCTION = "composite"
    PRESET_KIND = PRESET_KIND

    @classmethod
    def INPUT_TYPES(cls):
        d = SC.DEFAULTS
        steps = {name: ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": f"{tip}; 0 = the preset's "
                                "count."}) for name, tip in _STEP_TOOLTIPS.items()}
        assert set(steps) == set(STEP_FIELDS), "a step count of core's presets has no node input"
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "A StyleGAN2 generator of at least 64 px (never modified)."}),
                "mode": (list(SC.MODES), {"default": SC.MODES[0], "tooltip": "realistic: the reference's blend "
                         "(seamless, may drift from the photos). fidelity: keeps more of the photos' detail."}),
                "region_classes": ("STRING", {"default": "hair", "tooltip": "The region to take from the "
                                   "reference, by class name (e.g. 'hair', 'hair, hat'), with a face parser connected. "
                                   "Ignored when region_mask is connected."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "tooltip": "Seeds the embeddings' "
                                 "noise: the same inputs and seed give the same composite."}),
            },
            "optional": {
                "base": ("IMAGE", {"tooltip": "The face to keep (identity, background), aligned (Align Face). Or "
                                   "connect base_latent."}),
                "base_latent": (LATENT, {"tooltip": "The base as an fs latent (Invert Image, method ii2s+fs), "
                                         "instead of base."}),
                "reference": ("IMAGE", {"tooltip": "The face to take the region from (e.g. the hairstyle), aligned. "
                                        "Or connect reference_latent."}),
                "reference_latent": (LATENT, {"tooltip": "The reference as an fs latent, instead of reference."}),
                "region_mask": ("MASK", {"tooltip": "The region to take from the reference, in the aligned crop "
                                         "(any segmenter; any size, resized; values in [0, 1]). Overrides "
                                         "region_classes."}),
                "appearance": ("IMAGE", {"tooltip": "Optional: a third face whose region gives the colour and "
                                         "texture (Barbershop's appearance reference), aligned."}),
                "appearance_latent": (LATENT, {"tooltip": "The appearance face as an fs latent, instead of "
                                               "appearance."}),
                "appearance_region": ("MASK", {"tooltip": "The region in the appearance face (default: its "
                                               "region_classes with a parser, else region_mask)."}),
                "parser": (FACE_PARSER, {"tooltip": "From Load Face Parser: class names, the target segmentation "
                                         "and the alignment of the region's shape. Without it: mask-only mode."}),
                "target_region": ("MASK", {"tooltip": "Where the region must end up in the result (default: where "
                                           "it is in the reference)."}),
                "keep_region": ("MASK", {"tooltip": "Part of the base that must not change (default: everything "
                                         "outside the regions)."}),
                "smooth": ("INT", {"default": d.smooth, "min": 0, "max": 64, "tooltip": "Dilation/erosion of the "
                                   "masks in pixels at 256 px (Barbershop's smooth, 5): softer seams when larger."}),
                **steps,
                "cache_embeddings": ("BOOLEAN", {"default": False, "tooltip": "Also keep the photos' embeddings on "
                                     "disk (output/composite_embeddings), so they survive a restart. They are always "
                                     "kept in memory until ComfyUI frees its models."}),
                "preview_every": ("INT", {"default": 10, "min": 1, "max": 1000,
                                          "tooltip": "Show the current result every this many steps."}),
                "preset": preset_input(PRESET_KIND),
            },
        }

    def composite(self, generator, mode, region_classes, seed, base=None, base_latent=None, reference=None,
                  reference_latent=None, region_mask=None, appearance=None, appearance_latent=None,
                  appearance_region=None, parser=None, target_region=None, keep_region=None,
                  smooth=SC.DEFAULTS.smooth, w_steps=0, fs_steps=0, align_steps1=0, align_steps2=0, blend_steps=0,
                  target_fill_steps=0, cache_embeddings=False, preview_every=10, preset=None):
        base_in = _source(base, base_latent, "base")
        reference_in = _source(reference, reference_latent, "reference")
        appearance_in = _source(appearance, appearance_latent, "appearance", required=False)
        notes = []
        region = _mask(region_mask, "region_mask")
        if region is None:
            classes = str(region_classes or "").strip()
            if not classes:
                raise ValueError("no region: connect a MASK to region_mask, or type class names in region_classes "
                                 "(e.g. 'hair') and connect a face parser")
            if parser is None:
                raise ValueError(f"region_classes {classes!r} needs a face parser: connect Load Face Parser to "
                                 f"parser, or connect a MASK of the region to region_mask")
            region = classes   # core checks the names against the parser's schema before any step
        elif str(region_classes or "").strip():
            notes.append("region: the region_mask input (region_classes ignored)")
        if appearance_in is None and appearance_region is not None:
            raise ValueError("appearance_region is connected but no appearance face: connect appearance (or "
                             "appearance_latent), or disconnect appearance_region")
        steps = dict(w_steps=w_steps, fs_steps=fs_steps, align_steps1=align_steps1, align_steps2=align_steps2,
                     blend_steps=blend_steps, target_fill_steps=target_fill_steps)
        config = SC.composite_config(preset or "reference", smooth=int(smooth),
                                     **{k: int(v) for k, v in steps.items()})   # 0 = the preset's count
        cache = embedding_cache(generator, bool(cache_embeddings))
        lpips = perceptual_net("lpips_vgg")
        # VGG16 only for the style loss of the alignment (parser mode); mask-only never loads it.
        vgg = perceptual_net("vgg16_features", STYLE_LAYERS) if parser is not None and config.style_lambda else None
        photos = sum(isinstance(x, torch.Tensor) for x in (base_in, reference_in, appearance_in))
        total = photos * (config.w_steps + config.fs_steps) + config.blend_steps   # the run reports the exact total
        if parser is not None:
            total += (2 if appearance_in is not None else 1) * (
                2 * config.target_fill_steps + config.align_steps1 + config.align_steps2)

        def run(callback):
            return SC.segment_composite(
                generator, base_in, reference_in, region, appearance=appearance_in,
                appearance_region=_mask(appearance_region, "appearance_region"),
                target_region=_mask(target_region, "target_region"), keep_region=_mask(keep_region, "keep_region"),
                parser=parser, mode=mode, config=config, lpips=lpips, vgg=vgg,
                cache=cache, seed=int(seed), callback=callback)

        state = RunState(PRESET_KIND, "", generator.w_avg.device.type, int(generator.img_resolution))
        result = run_optimisation(total, run, preview_every=preview_every, state=state)
        report = result.report()
        if state.finished_early:
            notes.append(f"{state.note()} (Finish now: the running stage and each later one ended after one step)")
        if notes:
            report += "\n" + "\n".join(notes)
        device = comfy_env.intermediate_device()
        image = generator_to_comfy(result.image, device)
        mask = result.mask.detach().to(device, torch.float32).reshape(1, *result.mask.shape[-2:]).clamp(0, 1)
        return {"ui": {"text": [report]},
                "result": (image, result.latent, mask, debug_image(result), report)}
