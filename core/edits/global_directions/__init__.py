"""StyleCLIP global directions (Patashnik et al. 2021, sec. 6): text-driven edits in StyleSpace S from a
precomputed channel-relevance matrix.

Three steps, each a function here:

1. `compute_s_statistics`: mean μ_c and standard deviation σ_c of every S channel over mapped samples.
2. `compute_relevance`: for each channel c, over a set of images, set s_c = μ_c ± α·σ_c, CLIP-encode both
   renders and average the normalised difference of their embeddings: the relevance Δi_c (the reference's
   `fs3`, one unit row per channel). Slow (hours on a GPU for a 1024 px generator), so it is resumable from
   a checkpoint file and caches the part of each render that a channel cannot change.
3. `direction_from_text` + `global_direction_edit`: Δt from two prompts, r = relevance·Δt, channels with
   |r| < β dropped, Δs = r / max|r| · σ, s' = s + α·Δs (eq. 6 of the paper). Milliseconds.

Reference: github.com/orpatashnik/StyleCLIP, `global_directions/` (TensorFlow: GetCode.py, SingleChannel.py,
MapTS.py, manipulate.py) and `global_torch/` (PyTorch port: manipulate.py, StyleCLIP.py, SingleChannel.py).
File/line references below are to that repository, in `global_directions/` unless they say `global_torch/`.
What we do differently, and why, is said where we do it.
"""

from .directions import (DEFAULTS, EDIT_ALPHA_RANGE, EDIT_BETA_RANGE, FILE_FORMAT, FILE_VERSION, REFERENCE_CLIP_ARCH,
                         REFERENCE_CLIP_TAG, REFERENCE_MAX_LAYER_RESOLUTION, STYLECLIP_TEMPLATES, DirectionsError,
                         GlobalDirections, GlobalDirectionsDefaults, SStatistics, check_clip_arch, check_generator,
                         clip_fingerprint, load_directions, load_reference_fs3, read_reference_s_mean_std,
                         reference_layer_names, save_directions)
from .edit import direction_from_text, global_direction_edit
from .relevance import compute_relevance
from .statistics import compute_s_statistics

__all__ = [
    "GlobalDirectionsDefaults", "DEFAULTS", "EDIT_ALPHA_RANGE", "EDIT_BETA_RANGE", "STYLECLIP_TEMPLATES",
    "REFERENCE_MAX_LAYER_RESOLUTION", "DirectionsError", "SStatistics", "GlobalDirections", "compute_s_statistics",
    "compute_relevance", "save_directions", "load_directions", "load_reference_fs3", "read_reference_s_mean_std",
    "direction_from_text", "global_direction_edit", "clip_fingerprint", "reference_layer_names", "check_clip_arch",
    "check_generator", "FILE_FORMAT", "FILE_VERSION", "REFERENCE_CLIP_ARCH", "REFERENCE_CLIP_TAG",
]

