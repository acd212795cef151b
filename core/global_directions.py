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

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .clip import IMAGENET_TEMPLATES
from .errors import CheckpointError, StyleGANStudioError, UnsafeCheckpointError
from .latents import generator_ref
from .log import logger
from .networks import Generator
from .networks.stylegan2 import activation_memory_format
from .sspace import SLayer, flatten_s, s_layout

PathLike = Union[str, Path]
ProgressCallback = Callable[[int, int], None]

FILE_FORMAT = "stylegan-studio-global-directions"
FILE_VERSION = "1"

# The reference's 79 templates: CLIP's 80 ImageNet templates with 'a photo of many {}.' commented out
# (global_directions/MapTS.py l.94-175, global_torch/StyleCLIP.py l.54-135).
STYLECLIP_TEMPLATES = tuple(t for t in IMAGENET_TEMPLATES if t != "a photo of many {}.")
# SingleChannel.py l.71 measures only the conv layers "below or equal to 128 resolution"; a relevance
# matrix made that way has fewer rows than the conv channel count (5376 instead of 6048 at 1024 px).
REFERENCE_MAX_LAYER_RESOLUTION = 128
# The reference's CLIP: OpenAI's ViT-B/32 (open_clip names).
REFERENCE_CLIP_ARCH = "ViT-B-32"
REFERENCE_CLIP_TAG = "openai"


@dataclass(frozen=True)
class GlobalDirectionsDefaults:
    """Hyperparameter defaults, the reference's values; node schemas read them from `DEFAULTS`."""

    num_samples: int = 100_000             # Mapped samples for μ, σ (GetCode.py l.195; global_torch manipulate.py l.353).
    truncation_psi: float = 0.7            # GetCode.py l.79, global_torch manipulate.py l.114.
    truncation_cutoff: Optional[int] = None  # All layers: GetCode.py truncates w[:, :8] but keeps only w[:, 0] and
                                           # tiles it (l.95, l.141-142), so every layer sees the truncated w.
    seed: int = 5                          # np.random.RandomState(5) for z (GetCode.py l.77/194).
    num_images: int = 100                  # Images per channel for the relevance (SingleChannel.py l.59).
    alpha: float = 5.0                     # s_c = μ_c ± 5 σ_c (SingleChannel.py l.68).
    edit_alpha: float = 4.1                # Edit strength α (the reference notebook's slider default; range −10..10).
    edit_beta: float = 0.15                # Disentanglement threshold β (notebook default; range 0.08..0.3).
    stats_batch_size: int = 1024           # Samples mapped per pass for the statistics.
    batch_size: int = 32                   # Renders (and CLIP encodes) per pass for the relevance.
    checkpoint_interval: float = 60.0      # Seconds between relevance checkpoint writes.


DEFAULTS = GlobalDirectionsDefaults()
EDIT_ALPHA_RANGE = (-10.0, 10.0)           # The reference notebook's slider range for α.
EDIT_BETA_RANGE = (0.08, 0.3)              # ... and for β.


class DirectionsError(StyleGANStudioError, ValueError):
    """Global-direction data that does not fit the generator, the CLIP model or the settings it is used with."""


# ------------------------------------------------------------------------------------------------
# S statistics


@dataclass(frozen=True)
class SStatistics:
    """Per-channel statistics of S over mapped samples: `mean`, `std` `[C]` float32 (CPU), all S channels in
    `flatten_s` order (ToRGB and StyleGAN3's 'input' included). `std` is the population standard deviation
    (numpy's default, as GetCode.py l.176 / global_torch manipulate.py l.335)."""

    mean: torch.Tensor
    std: torch.Tensor
    num_samples: int
    truncation_psi: float
    truncation_cutoff: Optional[int]
    seed: int
    fingerprint: str                       # core.latents.generator_ref(G).fingerprint ('' if unknown).

    @property
    def num_channels(self) -> int:
        return int(self.mean.shape[0])


def _check_truncation(G: Generator, truncation_psi: float, truncation_cutoff: Optional[int]) -> None:
    if not math.isfinite(float(truncation_psi)):
        raise ValueError(f"truncation_psi must be a finite number, got {truncation_psi}")
    if truncation_cutoff is not None and not 0 <= int(truncation_cutoff) <= G.num_ws:
        raise ValueError(f"truncation_cutoff must be None or in 0..{G.num_ws} for {G.info.name}, got {truncation_cutoff}")


class _Sampler:
    """The reference's z stream: `np.random.RandomState(seed).randn(n, z_dim)`, drawn in batches (the legacy
    generator's batches concatenate to the one-call stream, so any batch size gives the same z). Conditional
    generators get uniform one-hot classes from `RandomState(seed + 1)` (as `core.invert.w_stats`)."""

    def __init__(self, G: Generator, seed: int, truncation_psi: float, truncation_cutoff: Optional[int]):
        self.G = G
        self.rs_z = np.random.RandomState(int(seed))
        self.rs_c = np.random.RandomState(int(seed) + 1) if G.c_dim else None
        self.psi = float(truncation_psi)
        self.cutoff = truncation_cutoff

    def ws(self, n: int) -> torch.Tensor:
        """The next `n` samples' ws `[n, num_ws, w_dim]` on G's device."""
        G = self.G
        device = G.w_avg.device
        z = torch.from_numpy(self.rs_z.randn(n, G.z_dim)).float().to(device)
        c = None
        if self.rs_c is not None:
            c = F.one_hot(torch.from_numpy(self.rs_c.randint(0, G.c_dim, n)), G.c_dim).float().to(device)
        return G.mapping(z, c, truncation_psi=self.psi, truncation_cutoff=self.cutoff)


def compute_s_statistics(G: Generator, *, num_samples: int = DEFAULTS.num_samples,
                         truncation_psi: float = DEFAULTS.truncation_psi,
                         truncation_cutoff: Optional[int] = DEFAULTS.truncation_cutoff,
                         seed: int = DEFAULTS.seed, batch_size: int = DEFAULTS.stats_batch_size,
                         callback: Optional[ProgressCallback] = None) -> SStatistics:
    """Mean and standard deviation of every S channel over `num_samples` mapped samples.

    Matches GetCode.py (`GetCode` + `GetS` + `GetCodeMS`, l.76-96, 129-150, 170-179) and global_torch
    manipulate.py l.157-165, 329-340: z from `np.random.RandomState(seed)` (the reference: seed 5, 100,000
    samples), w with truncation ψ 0.7 on every layer, s = A(w) of every layer, population std. Streamed in
    float64 (shifted by the first batch's mean), so memory stays at one batch.

    Args:
        G: the generator (any device); not modified.
        num_samples: samples (≥ 2).
        truncation_psi / truncation_cutoff: truncation of the mapped w (cutoff None = every layer; the
            PyTorch port global_torch/manipulate.py l.115 uses cutoff 8, which leaves w[:, 8:] untruncated).
        seed: seed of the z stream; the relevance images are its first samples.
        batch_size: samples per mapping pass.
        callback: `callback(done, total)` after each batch; may raise to cancel.

    Returns:
        SStatistics with `mean`, `std` `[C]` float32 on CPU (C = s_channel_count(G), e.g. 9088 for config-f 1024).
    """
    if int(num_samples) < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    _check_truncation(G, truncation_psi, truncation_cutoff)
    num_samples, batch_size = int(num_samples), int(batch_size)
    sampler = _Sampler(G, seed, truncation_psi, truncation_cutoff)
    shift = s1 = s2 = None
    done = 0
    with torch.no_grad():
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            s = flatten_s(G.synthesis.w_to_s(sampler.ws(n))).to("cpu", torch.float64)  # [n, C]
            if shift is None:
                # Sums of (s − shift) keep E[x²] − E[x]² well conditioned for channels with a large mean.
                shift = s.mean(0)
                s1 = torch.zeros_like(shift)
                s2 = torch.zeros_like(shift)
            d = s - shift
            s1 += d.sum(0)
            s2 += d.square().sum(0)
            done += n
            if callback is not None:
                callback(done, num_samples)
    m1 = s1 / num_samples
    var = (s2 / num_samples - m1.square()).clamp_min(0)
    return SStatistics(mean=(shift + m1).float(), std=var.sqrt().float(), num_samples=num_samples,
                       truncation_psi=float(truncation_psi),
                       truncation_cutoff=None if truncation_cutoff is None else int(truncation_cutoff),
                       seed=int(seed), fingerprint=generator_ref(G).fingerprint)


# ------------------------------------------------------------------------------------------------
# The directions object


_CLIP_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def clip_fingerprint(clip) -> str:
    """A short hash of a CLIP model's weights (names, shapes and the first 4096 values of each tensor, rounded
    to float16 so an fp16 copy of a model matches its fp32 original). Cached per model."""
    fp = _CLIP_FINGERPRINTS.get(clip)
    if fp is None:
        h = hashlib.sha256()
        with torch.no_grad():
            for name, t in clip.model.state_dict().items():
                h.update(f"{name}{list(t.shape)}".encode())
                if t.is_floating_point():
                    h.update(t.detach().reshape(-1)[:4096].to("cpu", torch.float16).numpy().tobytes())
        fp = h.hexdigest()[:16]
        _CLIP_FINGERPRINTS[clip] = fp
    return fp


def _clip_arch(name: str) -> str:
    return name.replace("/", "-")


def check_clip_arch(clip, clip_name: str, clip_source: str = "") -> None:
    """Raise DirectionsError unless `clip` has the architecture `clip_name` (e.g. ViT-B-32 for StyleCLIP's fs3)."""
    if _clip_arch(clip_name) not in _clip_arch(clip.name) and not (
            _clip_arch(clip_name) == REFERENCE_CLIP_ARCH and "vit_base_patch32_clip" in clip.name):
        raise DirectionsError(f"these global directions were measured with CLIP {clip_name} "
                              f"({clip_source}), but the CLIP given is {clip.name}; load {clip_name}")


@dataclass(eq=False)
class GlobalDirections:
    """S statistics plus the channel-relevance matrix of one generator and one CLIP model.

    relevance: `[C, D]` float32, one row per S channel in `flatten_s` order (C incl. ToRGB); a measured row is
        the reference's `fs3` row (unit length), rows not measured (ToRGB, skipped layers, unfinished work)
        are zero.
    done: `[C]` bool, which rows are measured. Only those channels are ever edited.
    layers: the S layout it was made for, `[(name, channels)]` in forward order.
    The remaining fields record how it was made (`source` is 'computed' or 'styleclip-fs3'); `resolution` is
    the render size that CLIP saw (None: unknown), `clip_fingerprint` '' when unknown (reference files).
    Treat the tensors as read-only: edits cache tables derived from them (`edit_tables`, `channel_scores`).
    """

    stats: SStatistics
    relevance: torch.Tensor
    done: torch.Tensor
    layers: tuple
    generator_name: str = ""
    clip_name: str = ""
    clip_source: str = ""
    clip_fingerprint: str = ""
    num_images: int = DEFAULTS.num_images
    alpha: float = DEFAULTS.alpha
    seed: int = DEFAULTS.seed
    resolution: Optional[int] = None
    source: str = "computed"
    _tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = sum(ch for _, ch in self.layers)
        if self.relevance.ndim != 2 or self.relevance.shape[0] != c or self.done.shape != (c,) \
                or self.stats.num_channels != c:
            raise DirectionsError(f"inconsistent global directions: layout has {c} channels, relevance "
                                  f"{list(self.relevance.shape)}, done {list(self.done.shape)}, statistics "
                                  f"{self.stats.num_channels}")

    @property
    def fingerprint(self) -> str:
        return self.stats.fingerprint

    @property
    def num_channels(self) -> int:
        return int(self.relevance.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.relevance.shape[1])

    @property
    def num_done(self) -> int:
        return int(self.done.sum())

    def layer_slices(self) -> dict[str, slice]:
        """`{layer name: slice of its channels in the flat S}`."""
        out, start = {}, 0
        for name, ch in self.layers:
            out[name] = slice(start, start + ch)
            start += ch
        return out

    def describe(self) -> str:
        measured = [name for name, sl in self.layer_slices().items() if bool(self.done[sl].any())]
        return (f"global directions for {self.generator_name or 'a generator'} ({self.fingerprint}): "
                f"{self.num_done} of {self.num_channels} S channels measured in {len(measured)} layers, "
                f"CLIP {self.clip_name or '?'} ({self.embed_dim}-d), {self.num_images} images, ±{self.alpha:g}σ, "
                f"statistics of {self.stats.num_samples} samples (ψ {self.stats.truncation_psi:g}); {self.source}")

    def check_clip(self, clip) -> None:
        """Raise DirectionsError unless `clip` is the CLIP model these directions were measured with."""
        dim = int(clip.encode_text("a").shape[-1])
        if dim != self.embed_dim:
            raise DirectionsError(f"these global directions were measured with CLIP {self.clip_name} "
                                  f"({self.embed_dim}-d embeddings), but {clip.name} gives {dim}-d embeddings; "
                                  f"load {self.clip_name}")
        if self.clip_fingerprint:
            if clip_fingerprint(clip) != self.clip_fingerprint:
                raise DirectionsError(
                    f"these global directions were measured with CLIP {self.clip_name} (weights "
                    f"{self.clip_fingerprint}, from {self.clip_source}), but the CLIP given is {clip.name} with other "
                    f"weights ({clip_fingerprint(clip)}, from {clip.source}); text directions only make sense in "
                    f"the embedding space the relevance was measured in: load that CLIP, or recompute")
        elif self.clip_name:
            check_clip_arch(clip, self.clip_name, self.clip_source)
            note = self.clip_weights_note(clip)
            if note:
                logger.warning("%s", note)

    def clip_weights_note(self, clip) -> Optional[str]:
        """For files without a CLIP fingerprint (StyleCLIP's fs3): a warning when `clip` is not recognisably the
        weights they were measured with (its source does not name them), else None."""
        if self.clip_fingerprint or not self.clip_source or self.clip_source.lower() in str(clip.source).lower():
            return None
        return (f"note: these directions were measured with {self.clip_name} '{self.clip_source}' weights, and this "
                f"CLIP comes from {clip.source}; with other weights (LAION, DataComp, ...) the edits are meaningless")

    def edit_tables(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(index `[K]` int64 of the measured channels, their relevance rows `[K, D]`, their σ `[K]`) on
        `device`, cached: the edit then costs one `[K, D]` matrix-vector product."""
        key = (str(torch.device(device) if device is not None else torch.device("cpu")), dtype)
        tables = self._tables.get(key)
        if tables is None:
            idx = self.done.nonzero().squeeze(1)
            tables = (idx.to(device), self.relevance.index_select(0, idx).to(device, dtype).contiguous(),
                      self.stats.std.index_select(0, idx).to(device, dtype).contiguous())
            self._tables[key] = tables
        return tables


    def channel_scores(self, delta_t: torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(r `[K]` = relevance·Δt/|Δt| of the measured channels, |r| `[K]`, max |r|) on `device`. The last Δt's
        scores are kept (keyed by its values), so changing only α or β skips the `[K, D]` product, which is
        nearly all of an edit's cost."""
        _, rel, _ = self.edit_tables(device)
        d = delta_t.detach().to(rel.device, rel.dtype).reshape(-1)
        key = (str(rel.device), d.cpu().numpy().tobytes())
        cached = self._tables.get("scores")
        if cached is None or cached[0] != key:
            r = rel @ d                                                                  # [K]
            r /= d.norm().clamp_min(1e-12)
            mag = r.abs()
            cached = (key, (r, mag, float(mag.max()) if len(mag) else 0.0))
            self._tables["scores"] = cached
        return cached[1]


def _layout_pairs(G: Generator) -> tuple:
    return tuple((layer.name, layer.channels) for layer in s_layout(G))


def check_generator(directions: GlobalDirections, G: Generator, *, strict: bool = False,
                    what: str = "these global directions") -> None:
    """Raise DirectionsError when `directions` do not fit `G`'s S layout; when they were measured on a generator
    with other weights, raise (strict) or log (not strict)."""
    _check_generator(directions, G, strict=strict, what=what)


def _check_generator(directions: GlobalDirections, G: Generator, *, strict: bool, what: str) -> None:
    layout = _layout_pairs(G)
    if tuple(directions.layers) != layout:
        raise DirectionsError(
            f"{what} was made for a generator with {directions.num_channels} S channels in {len(directions.layers)} "
            f"layers ({directions.generator_name or 'unknown'}), but {G.info.name} has "
            f"{sum(ch for _, ch in layout)} in {len(layout)} layers; use the file made for this generator")
    fp = generator_ref(G).fingerprint
    if directions.fingerprint and directions.fingerprint != fp:
        message = (f"{what} was made for generator {directions.generator_name or '?'} (fingerprint "
                   f"{directions.fingerprint}), not for {G.info.name} (fingerprint {fp}): same architecture, "
                   f"different weights")
        if strict:
            raise DirectionsError(message + "; recompute them for this generator, or pass strict=False to use them "
                                            "anyway (e.g. with a PTI-tuned copy of the original generator)")
        logger.info("%s; using them anyway (strict=False)", message)


# ------------------------------------------------------------------------------------------------
# Saving and loading


def save_directions(directions: GlobalDirections, path: PathLike) -> Path:
    """Write `directions` to `path` as .safetensors, atomically (a temporary file, then `os.replace`), so an
    interrupted write never leaves a broken file. Only measured relevance rows are stored."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    idx = directions.done.nonzero().squeeze(1)
    tensors = {"mean": directions.stats.mean.detach().cpu().float().contiguous(),
               "std": directions.stats.std.detach().cpu().float().contiguous(),
               "rows": idx.cpu().to(torch.int64).contiguous(),
               "relevance": directions.relevance.index_select(0, idx).detach().cpu().float().contiguous()}
    stats = directions.stats
    meta = {"format": FILE_FORMAT, "version": FILE_VERSION, "source": directions.source,
            "fingerprint": stats.fingerprint, "generator_name": directions.generator_name,
            "layers": json.dumps([[name, ch] for name, ch in directions.layers]),
            "embed_dim": str(directions.embed_dim), "clip_name": directions.clip_name,
            "clip_source": directions.clip_source, "clip_fingerprint": directions.clip_fingerprint,
            "num_images": str(directions.num_images), "alpha": repr(float(directions.alpha)),
            "seed": str(directions.seed), "resolution": "" if directions.resolution is None else str(directions.resolution),
            "num_samples": str(stats.num_samples), "truncation_psi": repr(float(stats.truncation_psi)),
            "truncation_cutoff": "" if stats.truncation_cutoff is None else str(stats.truncation_cutoff),
            "stats_seed": str(stats.seed)}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_directions(path: PathLike, G: Optional[Generator] = None, clip=None, *,
                    strict: bool = True) -> GlobalDirections:
    """Read a file written by `save_directions` (complete, or a checkpoint of an unfinished run).

    With `G`, check that it was made for G's S layout and (if `strict`) G's weights (generator fingerprint);
    with `clip`, that it was measured with that CLIP model (its weights' fingerprint; for converted reference
    files, its architecture). Raises FileNotFoundError, CheckpointError (unreadable / not such a file) or
    DirectionsError (made for another generator or CLIP), each saying what to do.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"global directions file {path} does not exist; compute it with compute_relevance "
                                f"(or convert StyleCLIP's fs3.npy with load_reference_fs3 + save_directions)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        t = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any failure to read means a damaged or foreign file
        raise CheckpointError(f"{path}: cannot read global directions ({type(e).__name__}: {e}); delete it and "
                              f"compute them again") from e
    if meta.get("format") != FILE_FORMAT:
        raise CheckpointError(f"{path}: not a global directions file (format {meta.get('format')!r}, expected "
                              f"{FILE_FORMAT!r})")
    try:
        layers = tuple((str(name), int(ch)) for name, ch in json.loads(meta["layers"]))
        c, dim = sum(ch for _, ch in layers), int(meta["embed_dim"])
        rows = t["rows"].long()
        relevance = torch.zeros([c, dim])
        relevance[rows] = t["relevance"].float()
        done = torch.zeros([c], dtype=torch.bool)
        done[rows] = True
        cutoff = meta.get("truncation_cutoff", "")
        stats = SStatistics(mean=t["mean"].float(), std=t["std"].float(), num_samples=int(meta["num_samples"]),
                            truncation_psi=float(meta["truncation_psi"]),
                            truncation_cutoff=int(cutoff) if cutoff else None, seed=int(meta["stats_seed"]),
                            fingerprint=meta.get("fingerprint", ""))
        res = meta.get("resolution", "")
        directions = GlobalDirections(
            stats=stats, relevance=relevance, done=done, layers=layers, generator_name=meta.get("generator_name", ""),
            clip_name=meta.get("clip_name", ""), clip_source=meta.get("clip_source", ""),
            clip_fingerprint=meta.get("clip_fingerprint", ""), num_images=int(meta["num_images"]),
            alpha=float(meta["alpha"]), seed=int(meta["seed"]), resolution=int(res) if res else None,
            source=meta.get("source", "computed"))
        if tuple(stats.mean.shape) != (c,) or tuple(stats.std.shape) != (c,):
            raise ValueError(f"statistics of shape {list(stats.mean.shape)} / {list(stats.std.shape)} for {c} channels")
    except (KeyError, ValueError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged global directions file ({type(e).__name__}: {e}); delete it and "
                              f"compute them again") from e
    if G is not None:
        _check_generator(directions, G, strict=strict, what=f"global directions file {path.name}")
    if clip is not None:
        directions.check_clip(clip)
    return directions


# ------------------------------------------------------------------------------------------------
# StyleCLIP's own files


def _reference_layers(G: Generator, max_resolution: Optional[int] = None) -> list[SLayer]:
    """The layers StyleCLIP measures: every non-ToRGB layer (StyleGAN3: also not 'input'), optionally only those
    whose StyleGAN2 block resolution is at most `max_resolution`."""
    layers = [layer for layer in s_layout(G) if not layer.is_torgb and layer.name != "input"]
    if max_resolution is not None:
        layers = [layer for layer in layers if _block_resolution(layer.name) is not None
                  and _block_resolution(layer.name) <= max_resolution]
    return layers


def reference_layer_names(G: Generator, max_resolution: Optional[int] = None) -> list[str]:
    """Names of the S layers StyleCLIP measures, in forward order: every non-ToRGB layer (StyleGAN3: also not
    'input'); with `max_resolution` (StyleGAN2), only blocks up to it, e.g. `REFERENCE_MAX_LAYER_RESOLUTION` for
    what SingleChannel.py l.71 measures. Pass them as `compute_relevance(..., layers=...)`."""
    return [layer.name for layer in _reference_layers(G, max_resolution)]


def _block_resolution(name: str) -> Optional[int]:
    """128 for 'b128.conv0' (StyleGAN2 layers), None for StyleGAN3 layers."""
    head = name.split(".")[0]
    return int(head[1:]) if head.startswith("b") and head[1:].isdigit() else None


def read_reference_s_mean_std(path: PathLike, G: Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) `[C]` float32 in `flatten_s` order from StyleCLIP's `S_mean_std` (a pickle of
    `[list of per-layer mean arrays, list of per-layer std arrays]`, ToRGB layers included, written by
    GetCode.py l.219-227).

    The pickle is read with our restricted unpickler (core.loaders.safe_pickle): only numpy arrays are
    rebuilt and anything else (code, arbitrary classes) is refused with UnsafeCheckpointError before it runs.
    """
    from .loaders.safe_pickle import restricted_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StyleCLIP statistics file {path} does not exist (GetCode.py --code_type "
                                f"s_mean_std writes it as npy/<dataset>/S_mean_std)")
    try:
        with open(path, "rb") as f:
            obj = restricted_load(f)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from e
    except Exception as e:  # noqa: BLE001 - truncated or not a pickle
        raise CheckpointError(f"{path}: cannot read StyleCLIP's S_mean_std ({type(e).__name__}: {e})") from e
    layout = s_layout(G)
    expected = [layer.channels for layer in layout]
    ok = isinstance(obj, (list, tuple)) and len(obj) == 2 and all(
        isinstance(part, (list, tuple)) and len(part) == len(layout) and all(
            isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.shape == (ch,) for a, ch in zip(part, expected))
        for part in obj)
    if not ok:
        raise DirectionsError(f"{path}: expected StyleCLIP's S_mean_std for {G.info.name}: [means, stds], each a list "
                              f"of {len(layout)} float arrays with {expected} values (every S layer, ToRGB "
                              f"included, in forward order); got something else — is it for another generator?")
    mean, std = (torch.from_numpy(np.concatenate([np.asarray(a, np.float32) for a in part])) for part in obj)
    return mean, std


def load_reference_fs3(path: PathLike, G: Generator, *, s_mean_std: Optional[PathLike] = None,
                       stats: Optional[SStatistics] = None, clip_name: str = REFERENCE_CLIP_ARCH,
                       clip_source: str = REFERENCE_CLIP_TAG,
                       callback: Optional[ProgressCallback] = None) -> GlobalDirections:
    """StyleCLIP's precomputed relevance `fs3.npy` as GlobalDirections for `G`.

    fs3 has one row per conv channel (no ToRGB), in forward order (4x4 conv, 8x8 conv0, conv1, ...: the
    reference's `s_names` without the ToRGB entries, MapTS.py `SplitS` l.60-91), which is our `s_layout`
    order: 6048 rows for config-f 1024 (`[6048, 512]` for ViT-B/32). A file made by SingleChannel.py as
    published, which measures only layers up to 128 px (l.71), has fewer rows (5376 at 1024 px); those are
    accepted too and the other channels stay unedited, as `SplitS` zero-fills them. Rows are used as stored
    (the reference normalised them when it made the file, SingleChannel.py `GetFs` l.32-39).

    The statistics (σ scales each edit) come from `s_mean_std` (StyleCLIP's `S_mean_std` pickle, read safely:
    see `read_reference_s_mean_std`) or `stats` (give at most one); with neither they are computed from `G` with
    the reference's settings (`compute_s_statistics`, 100,000 samples; `callback` reports its progress).

    `fs3.npy` is read with `allow_pickle=False`. Raises DirectionsError naming the expected row counts when
    the file does not fit `G`.
    """
    if stats is not None and s_mean_std is not None:
        raise ValueError("give either s_mean_std (StyleCLIP's file) or stats (compute_s_statistics), not both")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (StyleCLIP ships it as global_directions/npy/ffhq/fs3.npy)")
    try:
        fs3 = np.load(str(path), allow_pickle=False)
    except ValueError as e:  # numpy refuses to unpickle with allow_pickle=False
        raise UnsafeCheckpointError(f"{path}: not a plain numeric .npy array (it holds pickled Python objects, or is "
                                    f"not an .npy file); refusing to unpickle it") from e
    except Exception as e:  # noqa: BLE001 - truncated or not an .npy file
        raise CheckpointError(f"{path}: cannot read fs3 ({type(e).__name__}: {e}); expected a numpy .npy array "
                              f"[channels, 512]") from e
    if fs3.ndim != 2 or fs3.dtype.kind != "f":
        raise DirectionsError(f"{path}: fs3 must be a 2-D float array [channels, CLIP dim], got {fs3.dtype} "
                              f"{list(fs3.shape)}")
    if not np.isfinite(fs3).all():
        raise DirectionsError(f"{path}: fs3 contains NaN or infinite values ({int((~np.isfinite(fs3)).sum())} of "
                              f"{fs3.size}); the file is damaged: download StyleCLIP's fs3.npy again")
    layers_all = _reference_layers(G)
    counts = {sum(layer.channels for layer in layers_all): layers_all}
    if getattr(G.synthesis, "block_resolutions", None) and G.img_resolution > REFERENCE_MAX_LAYER_RESOLUTION:
        low = _reference_layers(G, REFERENCE_MAX_LAYER_RESOLUTION)
        counts.setdefault(sum(layer.channels for layer in low), low)
    rows = fs3.shape[0]
    if rows not in counts:
        expected = " or ".join(f"{n}" for n in counts)
        raise DirectionsError(
            f"{path}: fs3 has {rows} rows, but {G.info.name} ({G.img_resolution} px) needs {expected}: one per conv "
            f"channel in forward order, ToRGB excluded (config-f 1024: 6048, or 5376 for layers up to 128 px); "
            f"this fs3 belongs to another generator")
    if s_mean_std is not None:
        mean, std = read_reference_s_mean_std(s_mean_std, G)
        stats = SStatistics(mean=mean, std=std, num_samples=DEFAULTS.num_samples,
                            truncation_psi=DEFAULTS.truncation_psi, truncation_cutoff=DEFAULTS.truncation_cutoff,
                            seed=DEFAULTS.seed, fingerprint=generator_ref(G).fingerprint)
    elif stats is None:
        logger.info("fs3: computing S statistics of %s (%d samples; pass s_mean_std= or stats= to skip this)",
                    G.info.name, DEFAULTS.num_samples)
        stats = compute_s_statistics(G, callback=callback)
    layout = s_layout(G)
    c = sum(layer.channels for layer in layout)
    if stats.num_channels != c:
        raise DirectionsError(f"statistics have {stats.num_channels} channels, {G.info.name} has {c}; compute them "
                              f"with compute_s_statistics(G)")
    starts, start = {}, 0
    for layer in layout:
        starts[layer.name] = start
        start += layer.channels
    idx = torch.cat([torch.arange(starts[layer.name], starts[layer.name] + layer.channels) for layer in counts[rows]])
    relevance = torch.zeros([c, fs3.shape[1]])
    relevance[idx] = torch.from_numpy(np.asarray(fs3, dtype=np.float32))
    done = torch.zeros([c], dtype=torch.bool)
    done[idx] = True
    return GlobalDirections(stats=stats, relevance=relevance, done=done, layers=_layout_pairs(G),
                            generator_name=G.info.name, clip_name=clip_name, clip_source=clip_source,
                            clip_fingerprint="", num_images=DEFAULTS.num_images, alpha=DEFAULTS.alpha,
                            seed=DEFAULTS.seed, resolution=None, source="styleclip-fs3")


# ------------------------------------------------------------------------------------------------
# Rendering with a cached prefix


class _Renderer:
    """Runs a synthesis network stage by stage (StyleGAN2: one block per stage; StyleGAN3: the input, then one
    layer per stage) exactly as its `forward` does, so a render can start from a cached state.

    A channel of a layer can only change the stages from its own onward; everything before is the same for
    every perturbation of the same image and is computed once per image. `stop` stages are run at most: for
    StyleGAN2 'skip' generators a lower `resolution` ends at that block and returns its skip image.
    """

    def __init__(self, synthesis, resolution: int):
        self.synthesis = synthesis
        self.sg2 = hasattr(synthesis, "block_resolutions")
        if self.sg2:
            self.stages = [f"b{res}" for res in synthesis.block_resolutions if res <= resolution]
            self.complete = len(self.stages) == len(synthesis.block_resolutions)
        else:
            self.stages = ["input"] + list(synthesis.layer_names)
            self.complete = True
        index = {name: i for i, name in enumerate(self.stages)}
        self.stage_of: dict[str, int] = {}
        for layer in synthesis.style_layers():
            key = layer.name.split(".")[0] if self.sg2 else layer.name
            if key in index:
                self.stage_of[layer.name] = index[key]

    def layers_from(self, stage: int) -> list[str]:
        """Names of the S layers that stages `stage`, `stage + 1`, ... read."""
        return [name for name, s in self.stage_of.items() if s >= stage]

    def run(self, styles: dict[str, torch.Tensor], state: Optional[tuple], start: int,
            stop: Optional[int] = None) -> Optional[tuple]:
        """Advance `state` (None before the first stage) through stages `start..stop-1` with `styles`."""
        synth = self.synthesis
        for i in range(start, len(self.stages) if stop is None else stop):
            name = self.stages[i]
            if self.sg2:
                x, img = state if state is not None else (None, None)
                state = getattr(synth, name)(x, img, None, force_fp32=synth.force_fp32, noise_mode="const", noise={},
                                             prefix=name + ".", generator=None, fused_modconv=None, styles=styles)
            elif name == "input":
                x = synth.input(None, styles=styles["input"])
                state = (x.contiguous(memory_format=activation_memory_format(x)),)
            else:
                state = (getattr(synth, name)(state[0], None, force_fp32=synth.force_fp32, fused_modconv=None,
                                              styles=styles[name]),)
        return state

    def image(self, state: tuple) -> torch.Tensor:
        """The image `[N, C, R, R]` float32 of a state after the last stage."""
        if self.sg2:
            return state[1].contiguous()
        x = state[0]
        if self.synthesis.output_scale != 1:
            x = x * self.synthesis.output_scale
        return x.to(torch.float32).contiguous()


def _select(state: Optional[tuple], idx: torch.Tensor) -> Optional[tuple]:
    """Rows `idx` of every tensor of a render state (fresh tensors: blocks may add into them in place), in the
    same memory format (convolutions pick their algorithm, and so their rounding, by it)."""
    if state is None:
        return None
    out = []
    for t in state:
        if t is not None:
            fmt = torch.channels_last if t.ndim == 4 and not t.is_contiguous() and \
                t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            t = t.index_select(0, idx.to(t.device)).contiguous(memory_format=fmt)
        out.append(t)
    return tuple(out)


def _quantize(img: torch.Tensor) -> torch.Tensor:
    """The 8-bit image the reference hands to CLIP (NVIDIA's `x·127.5 + 128`, clamped, truncated), in [-1, 1]."""
    return (img * 127.5 + 128).clamp(0, 255).floor() / 127.5 - 1


def _perturbed_renders(renderer: _Renderer, base: dict[str, torch.Tensor], prefix: Optional[tuple], stage: int,
                       layer: str, channels: torch.Tensor, values: torch.Tensor, image_idx: torch.Tensor, *,
                       use_prefix: bool = True) -> torch.Tensor:
    """Render images `image_idx` `[B]` of `base` (S dict, `[N, ch]` each) with channel `channels[b]` of `layer`
    set to `values[b]`. `prefix`: the render state of all N base images before `stage` (the stage of `layer`).
    `use_prefix=False` renders everything from the styles instead (the plain path, for tests and benchmarks).
    Returns `[B, C, R, R]` float32."""
    first = stage if use_prefix else 0
    device = next(iter(base.values())).device
    idx = image_idx.to(device)
    styles = {name: base[name].index_select(0, idx) for name in renderer.layers_from(first)}
    s = styles[layer]
    s[torch.arange(len(idx), device=device), channels.to(device)] = values.to(device, s.dtype)
    if not use_prefix and renderer.complete:
        return renderer.synthesis.from_s(styles, noise_mode="const")  # the plain render: the public path
    state = renderer.run(styles, _select(prefix, image_idx) if use_prefix else None, first)
    return renderer.image(state)


# ------------------------------------------------------------------------------------------------
# Relevance


def _default_resolution(G: Generator, resolution: Optional[int]) -> int:
    if resolution is None or int(resolution) == G.img_resolution:
        return G.img_resolution
    resolution = int(resolution)
    synth = G.synthesis
    if not hasattr(synth, "block_resolutions"):
        raise ValueError(f"resolution={resolution}: StyleGAN3 has no intermediate images; use None "
                         f"({G.img_resolution}, the full render, as the reference)")
    if resolution not in synth.block_resolutions:
        raise ValueError(f"resolution must be None or one of {synth.block_resolutions} for {G.info.name}, "
                         f"got {resolution}")
    if G.config.synthesis.architecture != "skip":
        raise ValueError(f"resolution={resolution} needs a 'skip' generator (its image at {resolution} px is the "
                         f"sum of the ToRGB outputs so far); {G.info.name} is "
                         f"'{G.config.synthesis.architecture}': use None (the full render)")
    return resolution


def _chunks(n_channels: int, per_chunk: int) -> list[range]:
    return [range(a, min(a + per_chunk, n_channels)) for a in range(0, n_channels, per_chunk)]


def _settings_mismatch(state: GlobalDirections, other: GlobalDirections) -> list[str]:
    diffs = []
    for name in ("layers", "fingerprint", "embed_dim", "clip_fingerprint", "num_images", "alpha", "seed", "resolution"):
        a, b = getattr(state, name), getattr(other, name)
        if a != b:
            diffs.append(f"{name} {a!r} vs {b!r}")
    if not (torch.equal(state.stats.mean, other.stats.mean) and torch.equal(state.stats.std, other.stats.std)):
        diffs.append("S statistics differ")
    return diffs


def compute_relevance(G: Generator, clip, stats: Optional[SStatistics], *, num_images: int = DEFAULTS.num_images,
                      alpha: float = DEFAULTS.alpha, layers: Optional[Sequence[str]] = None,
                      seed: Optional[int] = None, batch_size: int = DEFAULTS.batch_size,
                      resolution: Optional[int] = None, callback: Optional[ProgressCallback] = None,
                      state: Optional[GlobalDirections] = None, checkpoint: Optional[PathLike] = None,
                      checkpoint_interval: float = DEFAULTS.checkpoint_interval,
                      prefix_cache: bool = True) -> GlobalDirections:
    """The channel-relevance matrix Δi_c (StyleCLIP's `fs3`): resumable, deterministic for a seed.

    For each channel c of `layers`, over `num_images` images: s_c = μ_c − α σ_c and μ_c + α σ_c (all other
    channels as sampled), both rendered ('const' noise), quantised to 8 bits and CLIP-encoded (with CLIP's own
    resize and normalisation); each embedding normalised, the difference (+ minus −) normalised, averaged over
    the images and normalised again. That is SingleChannel.py l.58-88 + `GetFs` l.32-39 (the images are the
    first `num_images` samples of the statistics' z stream, l.60-64). Differences from the reference, on
    purpose: the reference writes μ_c into its image array in place and never restores it (l.78-79 write
    through views of `dlatents_o`; global_torch/SingleChannel.py l.95-96 likewise), so each channel is measured with all previously measured channels stuck at their means;
    here every channel is measured on the unmodified samples (the paper's definition, and order-independent).
    A channel whose renders do not change gives a zero row (the reference's 0/0 gives NaN).

    Args:
        G: the generator; not modified. Its device is used for rendering.
        clip: a `core.clip.ClipModel` (the reference: OpenAI ViT-B/32); its device encodes.
        stats: `compute_s_statistics(G)`; may be None when resuming (taken from `state` / `checkpoint`).
        num_images: images per channel (reference 100).
        alpha: perturbation in standard deviations (reference 5).
        layers: S layer names to measure; None = every non-ToRGB layer (StyleGAN3: also not 'input'), as the
            reference's published fs3 (its SingleChannel.py measures only layers ≤ 128 px: pass those names,
            or `resolution=128`, for that).
        seed: z stream of the images; None = the statistics' seed (the reference's images are the first
            samples of its statistics).
        batch_size: renders per forward pass (memory: a 1024 px render needs ~150 MB of activations).
        resolution: render size fed to CLIP. None = the generator's own (the reference renders full size and
            lets CLIP's preprocessing resize to 224). A smaller block resolution (StyleGAN2 'skip' only) stops
            the synthesis there and encodes that block's skip image: an approximation, much faster on CPU, that
            can only measure layers up to that resolution (the default `layers` then are those).
        callback: `callback(done, total)` (channels) at the start and after each chunk; raise to cancel.
        state: an unfinished result to continue (its settings must match); not modified.
        checkpoint: file to save progress to (every `checkpoint_interval` seconds, at the end, and when
            interrupted, including by `callback` raising); when it exists and `state` is None, the run resumes
            from it. Without it, an interrupted run's progress is lost.
        prefix_cache: reuse the render of the stages before each layer (bit-identical to the plain render for
            the same batch, equal up to float rounding otherwise, see the tests); False renders every image from
            scratch with `from_s`, as the reference does.

    Returns:
        GlobalDirections with `relevance` `[C, D]` and `done` set for the measured channels (plus any the
        resumed state had).

    Chunks of channels start at fixed offsets in each layer, so a resumed run computes exactly what an
    uninterrupted one does (bit-identical on the same machine and settings).
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if not (math.isfinite(float(alpha)) and float(alpha) > 0):
        raise ValueError(f"alpha must be a positive number of standard deviations, got {alpha}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    num_images, alpha, batch_size = int(num_images), float(alpha), int(batch_size)
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if state is None and checkpoint is not None and checkpoint.is_file():
        state = load_directions(checkpoint, G)
        logger.info("global directions: resuming from %s (%d channels done)", checkpoint, state.num_done)
    if stats is None:
        if state is None:
            raise ValueError("stats is None and there is nothing to resume from; pass compute_s_statistics(G)")
        stats = state.stats
    layout = s_layout(G)
    c = sum(layer.channels for layer in layout)
    if stats.num_channels != c:
        raise DirectionsError(f"the statistics have {stats.num_channels} S channels but {G.info.name} has {c}; "
                              f"compute them with compute_s_statistics(G)")
    if stats.fingerprint and stats.fingerprint != generator_ref(G).fingerprint:
        raise DirectionsError(f"the statistics were computed for another generator (fingerprint {stats.fingerprint}, "
                              f"{G.info.name} is {generator_ref(G).fingerprint}); compute them with this one")
    resolution = _default_resolution(G, resolution)
    renderer = _Renderer(G.synthesis, resolution)
    by_name = {layer.name: layer for layer in layout}
    if isinstance(layers, str):
        layers = [layers]
    if layers is None:
        chosen = [layer for layer in _reference_layers(G) if layer.name in renderer.stage_of]
    else:
        unknown = [name for name in layers if name not in by_name]
        if unknown:
            raise ValueError(f"unknown S layer(s) {unknown}; {G.info.name}'s layers are {list(by_name)}")
        late = [name for name in layers if name not in renderer.stage_of]
        if late:
            raise ValueError(f"layer(s) {late} come after the {resolution} px render: they cannot change it; "
                             f"drop them or use a larger resolution")
        wanted = set(layers)
        chosen = [layer for layer in layout if layer.name in wanted]  # forward order, so prefixes only advance
    if not chosen:
        raise ValueError("no layers to measure")
    seed = stats.seed if seed is None else int(seed)

    try:
        dim = int(clip.encode_text("a").shape[-1])
    except Exception as e:  # noqa: BLE001 - anything that is not a ClipModel
        raise TypeError(f"clip must be a core.clip.ClipModel (load_clip / random_clip), got {type(clip).__name__}") from e
    fresh = GlobalDirections(stats=stats, relevance=torch.zeros([c, dim]), done=torch.zeros([c], dtype=torch.bool),
                             layers=_layout_pairs(G), generator_name=G.info.name, clip_name=clip.name,
                             clip_source=clip.source, clip_fingerprint=clip_fingerprint(clip), num_images=num_images,
                             alpha=alpha, seed=seed, resolution=resolution, source="computed")
    if state is not None:
        diffs = _settings_mismatch(state, fresh)
        if diffs:
            where = f"checkpoint {checkpoint}" if checkpoint is not None else "state"
            raise DirectionsError(f"cannot resume from {where}: it was made with other settings ({'; '.join(diffs)}); "
                                  f"use the same settings, or start over (delete the checkpoint / pass state=None)")
        # Copies: the caller's object is never changed, and tensors made under inference mode become normal.
        fresh = replace(fresh, relevance=state.relevance.clone(), done=state.done.clone())
    result = fresh

    starts, start = {}, 0
    for layer in layout:
        starts[layer.name] = start
        start += layer.channels
    wanted_idx = torch.cat([torch.arange(starts[layer.name], starts[layer.name] + layer.channels) for layer in chosen])
    total = int(wanted_idx.numel())
    per_chunk = max(1, batch_size // (2 * num_images))
    mean, std = stats.mean, stats.std
    logger.info("global directions: %d channels in %d layers of %s, %d images each, %d renders per pass",
                total, len(chosen), G.info.name, num_images, batch_size)

    last_save = time.monotonic()
    unsaved = False
    passes = _PassSize(batch_size)

    def save() -> None:
        nonlocal last_save, unsaved
        save_directions(result, checkpoint)
        last_save, unsaved = time.monotonic(), False

    try:
        if callback is not None:
            callback(int(result.done[wanted_idx].sum()), total)
        with torch.no_grad():
            base = dict(G.synthesis.w_to_s(_Sampler(G, seed, stats.truncation_psi, stats.truncation_cutoff)
                                           .ws(num_images)))
            prefix, prefix_stage = None, 0
            for layer in chosen:
                offset = starts[layer.name]
                todo = [ch for ch in _chunks(layer.channels, per_chunk)
                        if not bool(result.done[offset + ch.start:offset + ch.stop].all())]
                if not todo:
                    continue
                stage = renderer.stage_of[layer.name]
                if prefix_cache and stage > prefix_stage:
                    # Layers come in forward order, so the cached prefix only ever advances.
                    try:
                        prefix = renderer.run(base, prefix, prefix_stage, stage)
                        prefix_stage = stage
                    except _OOM:
                        # The prefix holds every image's activations before this layer: at high resolution that
                        # can exceed the device. Full renders give the same numbers, only slower.
                        prefix, prefix_stage, prefix_cache = None, 0, False
                        if G.w_avg.device.type == "cuda":
                            torch.cuda.empty_cache()
                        logger.warning("global directions: not enough memory to cache the renders before %s for "
                                       "%d images; rendering every image in full from here on (the same "
                                       "numbers up to float rounding, slower)", layer.name, num_images)
                for ch in todo:
                    rows = _relevance_rows(renderer, clip, base, prefix, stage, layer.name, ch,
                                           mean[offset:offset + layer.channels], std[offset:offset + layer.channels],
                                           alpha=alpha, num_images=num_images, batch_size=passes,
                                           use_prefix=prefix_cache)
                    sl = slice(offset + ch.start, offset + ch.stop)
                    result.relevance[sl] = rows
                    result.done[sl] = True
                    result._tables.clear()
                    unsaved = True
                    if checkpoint is not None and time.monotonic() - last_save >= checkpoint_interval:
                        save()
                    if callback is not None:
                        callback(int(result.done[wanted_idx].sum()), total)
    except BaseException:
        if checkpoint is not None and unsaved:
            try:
                save()  # keep what was measured, so the next call resumes from here
                logger.info("global directions: interrupted; progress saved to %s (%d of %d channels)", checkpoint,
                            int(result.done[wanted_idx].sum()), total)
            except Exception as e:  # noqa: BLE001 - never hide why the run stopped behind a failed save
                logger.warning("global directions: could not save progress to %s: %s", checkpoint, e)
        raise
    if checkpoint is not None and (unsaved or not checkpoint.is_file()):
        save()
    return result


class _PassSize:
    """Renders per pass; halved (for the rest of the run) when a pass runs out of memory."""

    def __init__(self, size: int):
        self.size = int(size)

    def shrink(self, error: BaseException) -> None:
        if self.size == 1:
            raise error
        self.size = max(1, self.size // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.warning("global directions: out of memory; rendering %d images per pass from now on (results can "
                       "differ from a run with the original batch_size at float rounding)", self.size)


_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5 has only the CUDA one


def _relevance_rows(renderer: _Renderer, clip, base: dict[str, torch.Tensor], prefix: Optional[tuple], stage: int,
                    layer: str, channels: range, mean: torch.Tensor, std: torch.Tensor, *, alpha: float,
                    num_images: int, batch_size: Union[int, _PassSize], use_prefix: bool) -> torch.Tensor:
    """Relevance rows `[K, D]` float32 (CPU) of `channels` (K of them) of `layer`; `mean`/`std` `[channels]`
    of that layer. Items are ordered (channel, sign −/+, image) and rendered `batch_size` at a time."""
    passes = batch_size if isinstance(batch_size, _PassSize) else _PassSize(batch_size)
    k, n = len(channels), num_images
    items = k * 2 * n
    j = torch.arange(items)
    chan = torch.as_tensor(list(channels), dtype=torch.long)[j // (2 * n)]          # [items]
    sign = ((j // n) % 2).float() * 2 - 1                                             # −1 then +1
    values = mean[chan] + sign * alpha * std[chan]                                   # μ ± α σ
    image_idx = j % n
    embs = []
    a = 0
    while a < items:
        sl = slice(a, min(a + passes.size, items))
        try:
            img = _perturbed_renders(renderer, base, prefix, stage, layer, chan[sl], values[sl], image_idx[sl],
                                     use_prefix=use_prefix)
            embs.append(clip.encode_image(_quantize(img)).float().cpu())             # [b, D], unit rows
        except _OOM as e:
            img = None
            passes.shrink(e)
            continue
        a = sl.stop
    e = F.normalize(torch.cat(embs), dim=-1).reshape(k, 2, n, -1)
    diff = F.normalize(e[:, 1] - e[:, 0], dim=-1)                                     # [K, N, D]; 0 if unchanged
    return F.normalize(diff.mean(1), dim=-1)                                          # [K, D]


# ------------------------------------------------------------------------------------------------
# Editing


def direction_from_text(clip, target: str, neutral: str, *,
                        templates: Sequence[str] = STYLECLIP_TEMPLATES) -> torch.Tensor:
    """Δt `[D]` float32 (on CLIP's device): the normalised difference of the template-averaged text embeddings
    of `target` and `neutral` (MapTS.py `zeroshot_classifier` + `GetDt` l.178-203 with classnames
    [target, neutral]: each template embedding normalised, averaged, normalised; Δt = (t − n)/|t − n|).
    The default templates are the reference's 79 (CLIP's 80 without 'a photo of many {}.'); embeddings are
    cached by the CLIP model, so a repeated prompt costs nothing."""
    if not isinstance(target, str) or not isinstance(neutral, str):
        raise TypeError(f"target and neutral must be strings, got {type(target).__name__} and {type(neutral).__name__}")
    t, n = clip.encode_text([target, neutral], templates=tuple(templates))
    d = (t - n).float()
    norm = float(d.norm())
    if norm < 1e-6:
        raise ValueError(f"target {target!r} and neutral {neutral!r} give the same text embedding, so there is no "
                         f"direction; describe the change in the target (e.g. neutral 'a face', target 'a smiling face')")
    return d / norm


def global_direction_edit(styles_flat: torch.Tensor, directions: GlobalDirections, delta_t: torch.Tensor, *,
                          alpha: float = DEFAULTS.edit_alpha,
                          beta: float = DEFAULTS.edit_beta) -> tuple[torch.Tensor, int]:
    """s' = s + α·Δs with Δs from the text direction (eq. 6 of the paper; MapTS.py `GetBoundary` l.206-220,
    `SplitS` l.60-91, manipulate.py `MSCode` l.162-189).

    r = relevance·Δt over the measured channels; channels with |r| < β get 0; Δs = r / max|r| · σ (per-channel
    standard deviation); unmeasured channels (ToRGB, ...) are never changed. β above every |r| changes nothing
    and reports 0 channels (the reference would divide 0 by 0); β = 0 changes every measured channel.

    Args:
        styles_flat: S `[N, C]` (`flatten_s(G.synthesis.w_to_s(ws))`), any float dtype/device; not modified.
        directions: GlobalDirections of the same generator (C channels).
        delta_t: Δt `[D]` or `[1, D]` from `direction_from_text` (normalised here, which leaves its output as is).
        alpha: strength (reference range −10..10; the sign reverses the edit).
        beta: disentanglement threshold on |r| (reference range 0.08..0.3).

    Returns:
        (edited S `[N, C]` in `styles_flat`'s dtype and device, number of channels changed).
    """
    if styles_flat.ndim != 2 or styles_flat.shape[1] != directions.num_channels:
        raise ValueError(f"styles_flat must be [N, {directions.num_channels}] (flatten_s of w_to_s for "
                         f"{directions.generator_name or 'the generator of these directions'}), got "
                         f"{list(styles_flat.shape)}")
    d = delta_t.reshape(-1) if delta_t.ndim == 2 and delta_t.shape[0] == 1 else delta_t
    if d.ndim != 1 or d.shape[0] != directions.embed_dim:
        raise ValueError(f"delta_t must be [{directions.embed_dim}] (direction_from_text with the CLIP model of these "
                         f"directions, {directions.clip_name}), got {list(delta_t.shape)}")
    if not (math.isfinite(float(alpha)) and math.isfinite(float(beta)) and float(beta) >= 0):
        raise ValueError(f"alpha must be finite and beta finite and ≥ 0, got alpha={alpha}, beta={beta}")
    idx, _, std = directions.edit_tables(styles_flat.device)
    r, mag, mag_max = directions.channel_scores(d, styles_flat.device)
    keep = mag >= beta                                                               # the reference zeroes |r| < β
    count = int(keep.sum())
    out = styles_flat.clone()
    if count == 0 or alpha == 0 or float(mag_max) == 0:  # nothing relevant (e.g. all-zero rows)
        return out, 0 if float(mag_max) == 0 else count
    # The largest |r| is always kept (it is ≥ β whenever anything is), so it is the reference's max over the kept.
    ds = torch.where(keep, r, 0).mul_(std).mul_(float(alpha) / mag_max)              # α · r / max|r| · σ, [K]
    out.index_add_(1, idx, ds.to(out.dtype).unsqueeze(0).expand(out.shape[0], -1))
    return out, count


__all__ = [
    "GlobalDirectionsDefaults", "DEFAULTS", "EDIT_ALPHA_RANGE", "EDIT_BETA_RANGE", "STYLECLIP_TEMPLATES",
    "REFERENCE_MAX_LAYER_RESOLUTION", "DirectionsError", "SStatistics", "GlobalDirections", "compute_s_statistics",
    "compute_relevance", "save_directions", "load_directions", "load_reference_fs3", "read_reference_s_mean_std",
    "direction_from_text", "global_direction_edit", "clip_fingerprint", "reference_layer_names", "check_clip_arch",
    "check_generator",
]
