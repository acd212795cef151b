"""Latent directions: discover (SeFa, GANSpace), import (InterFaceGAN, rosinality factor.pt, GANSpace .npz, dfl
component files), apply (edits, sweeps, InterFaceGAN's conditional edit), save/load.

The API (issue 20):

- `Directions` (frozen): `vectors` float32 [K, dim] or per-layer [K, num_ws, dim]; `names` K distinct strings;
  `space` 'w' | 'z'; `method` 'sefa' | 'ganspace' | 'interfacegan' | 'imported' | 'conditional'; `variant` (SeFa:
  'rosinality' | 'genforce' | 'torgb', else ''); `scales` float32 [K]; `generator` Optional[GeneratorRef];
  `layers` Optional[(start, end)] suggested w+ range, END EXCLUSIVE; `info` dict (JSON values: how they were made).
  SCALING IS FOLDED INTO THE VECTORS: a row is one unit of strength (GANSpace: σ_k u_k, so strength 1 = 1σ; SeFa:
  unit eigenvectors; imported boundaries as stored). `scales[k]` records the factor folded in (σ_k; 1 otherwise).
  Helpers: `.count`, `.dim`, `.per_layer`, `.strength_range` (±10 SeFa, ±3 GANSpace/InterFaceGAN: a slider's
  range), `.index_of(index or name)`, `.select([...])`, `.describe()`.
- `apply_directions(G, latent, [(directions, index or name, strength), ...], *, layers=None) -> Latent`:
  w + Σ strength·vector in float64, added once. w stays w unless a layer range (other than all) or per-layer
  vectors make it w+; z latents with w directions are mapped first (with their truncation); z directions move z
  (need a z latent); fs latents move only the codes read after F (entries >= fs_first_w); s latents are refused.
  `layers=None` uses each record's own suggested `layers`.
- `direction_sweep(G, latent, directions, index, strengths, *, layers=None) -> Latent`: len(latent) x
  len(strengths) latents, latent-major, capped by MAX_LATENTS.
- `conditional_direction(primary, protected) -> Tensor` (InterFaceGAN's conditional edit; Gram–Schmidt for
  several; keeps the primary's norm) and `make_conditional(directions, index, [(d, j), ...]) -> Directions`.
- `check_directions_fit(G, d)`: LatentError when dims/num_ws do not match G (apply does it too).
- Discovery: `sefa(G, *, variant, layers, num)`, `ganspace(G, *, num_samples, num_components, seed, layers,
  class_idx, callback)`.
- Files: `save_directions(d, path)` / `load_directions(path)` (our tagged safetensors), `load_direction_file(path,
  *, space=None)` for every supported format, `detect_direction_format(path)`.
"""

from .base import (DIRECTION_SPACES, MAX_DIRECTIONS, MAX_STRENGTH, METHODS, SEFA_VARIANTS, STRENGTH_RANGES,
                   Directions, apply_directions, check_directions_fit, check_layer_range, conditional_direction,
                   direction_sweep, make_conditional)
from .discover import (DEFAULT_GANSPACE_COMPONENTS, DEFAULT_GANSPACE_SAMPLES, DEFAULT_GANSPACE_SEED,
                       DEFAULT_SEFA_NUM, DEFAULT_SEFA_VARIANT, MAX_GANSPACE_SAMPLES, ganspace, sefa, sefa_layers)
from .files import (DIRECTION_SUFFIXES, DIRECTIONS_FORMAT, FORMATS, detect_direction_format, import_dfl,
                    import_ganspace, import_torch_directions, load_direction_file, load_directions, save_directions)

__all__ = ["Directions", "DIRECTION_SPACES", "METHODS", "STRENGTH_RANGES", "SEFA_VARIANTS", "MAX_DIRECTIONS",
           "MAX_STRENGTH",
           "apply_directions", "direction_sweep", "conditional_direction", "make_conditional",
           "check_directions_fit", "check_layer_range",
           "sefa", "sefa_layers", "ganspace", "DEFAULT_SEFA_VARIANT", "DEFAULT_SEFA_NUM", "DEFAULT_GANSPACE_SAMPLES",
           "DEFAULT_GANSPACE_COMPONENTS", "DEFAULT_GANSPACE_SEED", "MAX_GANSPACE_SAMPLES",
           "DIRECTIONS_FORMAT", "DIRECTION_SUFFIXES", "FORMATS", "save_directions", "load_directions",
           "load_direction_file", "detect_direction_format", "import_ganspace", "import_torch_directions",
           "import_dfl"]
