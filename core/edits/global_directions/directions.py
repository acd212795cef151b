"""Global directions: settings, the relevance-matrix record (GlobalDirections), its files and StyleCLIP's fs3."""

from __future__ import annotations

import hashlib
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from ...models.clip import IMAGENET_TEMPLATES
from ...errors import CheckpointError, StyleGANStudioError, UnsafeCheckpointError
from ...files import meta_json, read_safetensors, write_safetensors
from ...latents import generator_ref
from ...log import logger
from ...networks import Generator
from ...networks.style_space import SLayer, s_layout

PathLike = Union[str, Path]
ProgressCallback = Callable[[int, int], None]  # callback(done, total) of the statistics (a count, not an optimiser)

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

    def set_rows(self, rows: slice, relevance: torch.Tensor) -> None:
        """Store measured relevance rows `[len, D]` for channels `rows` and mark them done (while computing; the
        cached edit tables are dropped)."""
        self.relevance[rows] = relevance
        self.done[rows] = True
        self._tables.clear()

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


def layout_pairs(G: Generator) -> tuple:
    return tuple((layer.name, layer.channels) for layer in s_layout(G))


def check_generator(directions: GlobalDirections, G: Generator, *, strict: bool = False,
                    what: str = "these global directions") -> None:
    """Raise DirectionsError when `directions` do not fit `G`'s S layout; when they were measured on a generator
    with other weights, raise (strict) or log (not strict)."""
    _check_generator(directions, G, strict=strict, what=what)


def _check_generator(directions: GlobalDirections, G: Generator, *, strict: bool, what: str) -> None:
    layout = layout_pairs(G)
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
    """Write `directions` to `path` as .safetensors, atomically (`core.files`), so an interrupted write never
    leaves a broken file. Only measured relevance rows are stored."""
    idx = directions.done.nonzero().squeeze(1)
    tensors = {"mean": directions.stats.mean.detach().cpu().float().contiguous(),
               "std": directions.stats.std.detach().cpu().float().contiguous(),
               "rows": idx.cpu().to(torch.int64).contiguous(),
               "relevance": directions.relevance.index_select(0, idx).detach().cpu().float().contiguous()}
    stats = directions.stats
    meta = {"version": FILE_VERSION, "source": directions.source,
            "fingerprint": stats.fingerprint, "generator_name": directions.generator_name,
            "layers": json.dumps([[name, ch] for name, ch in directions.layers]),
            "embed_dim": str(directions.embed_dim), "clip_name": directions.clip_name,
            "clip_source": directions.clip_source, "clip_fingerprint": directions.clip_fingerprint,
            "num_images": str(directions.num_images), "alpha": repr(float(directions.alpha)),
            "seed": str(directions.seed), "resolution": "" if directions.resolution is None else str(directions.resolution),
            "num_samples": str(stats.num_samples), "truncation_psi": repr(float(stats.truncation_psi)),
            "truncation_cutoff": "" if stats.truncation_cutoff is None else str(stats.truncation_cutoff),
            "stats_seed": str(stats.seed)}
    return write_safetensors(path, tensors, format=FILE_FORMAT, metadata=meta)


def load_directions(path: PathLike, G: Optional[Generator] = None, clip=None, *,
                    strict: bool = True) -> GlobalDirections:
    """Read a file written by `save_directions` (complete, or a checkpoint of an unfinished run).

    With `G`, check that it was made for G's S layout and (if `strict`) G's weights (generator fingerprint);
    with `clip`, that it was measured with that CLIP model (its weights' fingerprint; for converted reference
    files, its architecture). Raises FileNotFoundError, CheckpointError (unreadable / not such a file) or
    DirectionsError (made for another generator or CLIP), each saying what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"global directions file {path} does not exist; compute it with compute_relevance "
                                f"(or convert StyleCLIP's fs3.npy with load_reference_fs3 + save_directions)")
    try:
        t, meta = read_safetensors(path, what="global directions file")
    except CheckpointError as e:
        raise CheckpointError(f"cannot read global directions: {e}; delete it and compute them again") from e
    if meta.get("format") != FILE_FORMAT:
        raise CheckpointError(f"{path}: not a global directions file (format {meta.get('format')!r}, expected "
                              f"{FILE_FORMAT!r})")
    try:
        layers = tuple((str(name), int(ch)) for name, ch in meta_json(meta, "layers", path, "global directions"))
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
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged global directions file ({type(e).__name__}: {e}); delete it and "
                              f"compute them again") from e
    if G is not None:
        _check_generator(directions, G, strict=strict, what=f"global directions file {path.name}")
    if clip is not None:
        directions.check_clip(clip)
    return directions


# ------------------------------------------------------------------------------------------------
# StyleCLIP's own files


def reference_layers(G: Generator, max_resolution: Optional[int] = None) -> list[SLayer]:
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
    return [layer.name for layer in reference_layers(G, max_resolution)]


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
    from ...loaders.safe_pickle import restricted_load

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
    layers_all = reference_layers(G)
    counts = {sum(layer.channels for layer in layers_all): layers_all}
    if getattr(G.synthesis, "block_resolutions", None) and G.img_resolution > REFERENCE_MAX_LAYER_RESOLUTION:
        low = reference_layers(G, REFERENCE_MAX_LAYER_RESOLUTION)
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
        from .statistics import compute_s_statistics
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
    return GlobalDirections(stats=stats, relevance=relevance, done=done, layers=layout_pairs(G),
                            generator_name=G.info.name, clip_name=clip_name, clip_source=clip_source,
                            clip_fingerprint="", num_images=DEFAULTS.num_images, alpha=DEFAULTS.alpha,
                            seed=DEFAULTS.seed, resolution=None, source="styleclip-fs3")


# ------------------------------------------------------------------------------------------------
# Rendering with a cached prefix


