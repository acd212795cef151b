"""StyleGAN Studio core: pure-PyTorch StyleGAN2/3 networks, safe checkpoint loading and latent tools.

Importable on its own (`import core` with the repository root on `sys.path`); never imports ComfyUI.
"""

from .align import AlignTransform, align_face, face_keypoints, unalign_face
from .align import align_mask, blend_mask, photo_coverage, unalign_face_and_blend, unalign_mask
from .config import GeneratorConfig, MappingConfig, StyleGAN2Config, StyleGAN3Config
from .errors import (AlignmentError, CheckpointError, LatentError, LatentFileError, MissingDependencyError, MissingWeightsError, StyleGANStudioError,
                     UnsafeCheckpointError)
from .latents import (GeneratorRef, Latent, check_compatible, convert_latent, generator_ref, interpolate_latents,
                      latent_to_styles, latent_to_ws, load_latent, MAX_LATENTS, mix_styles, parse_layers, parse_seeds, sample_latents, save_latent,
                      seeds_to_z, slerp, style_mix_layers, styles_to_latent, synthesize)
from .latents import fs_from_wplus
from .latent_ops import (add_latents, blend_latents, concat_latents, keyframe_walk, layer_groups, mean_latent,
                         scale_latent, select_latents, split_latent, subtract_latents)
from .png_latent import load_png_latent, save_png_with_latent
from .loaders import compute_w_avg, convert_checkpoint, load_generator, save_generator
from .networks import PRECISIONS, Generator, GeneratorInfo, build_generator
from .edits.segment_composite import CompositeConfig, CompositeResult, EmbeddingCache, segment_composite
from .directions import (Directions, apply_directions, conditional_direction, direction_sweep, ganspace,
                         load_direction_file, load_directions, save_directions, sefa)
from .edits.weight_shift import WeightShift, apply_weight_shifts, load_weight_shift, save_weight_shift, train_weight_shift
from .accel import AccelConfig, set_accel

__version__ = "0.1.0"

__all__ = [
    "AlignTransform", "AlignmentError", "align_face", "face_keypoints", "unalign_face",
    "align_mask", "blend_mask", "photo_coverage", "unalign_face_and_blend", "unalign_mask",
    "GeneratorConfig", "MappingConfig", "StyleGAN2Config", "StyleGAN3Config", "CheckpointError", "LatentError", "LatentFileError",
    "MissingDependencyError", "MissingWeightsError", "StyleGANStudioError", "UnsafeCheckpointError", "GeneratorRef", "Latent",
    "check_compatible", "convert_latent", "generator_ref", "interpolate_latents", "latent_to_styles", "latent_to_ws", "load_latent", "MAX_LATENTS",
    "mix_styles", "parse_layers", "parse_seeds", "sample_latents", "save_latent", "seeds_to_z", "slerp",
    "style_mix_layers", "styles_to_latent", "synthesize", "compute_w_avg", "convert_checkpoint", "load_generator", "save_generator",
    "PRECISIONS", "Generator", "GeneratorInfo", "build_generator",
    "WeightShift", "apply_weight_shifts", "load_weight_shift", "save_weight_shift", "train_weight_shift",
    "fs_from_wplus",
    "add_latents", "blend_latents", "concat_latents", "keyframe_walk", "layer_groups", "mean_latent", "scale_latent",
    "select_latents", "split_latent", "subtract_latents", "load_png_latent", "save_png_with_latent",
    "segment_composite", "CompositeResult", "CompositeConfig", "EmbeddingCache",
    "Directions", "apply_directions", "conditional_direction", "direction_sweep", "ganspace", "load_direction_file",
    "load_directions", "save_directions", "sefa",
    "AccelConfig", "set_accel",
]
