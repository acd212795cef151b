"""The Directions record and applying directions to latents: edits, sweeps, InterFaceGAN's conditional edit."""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from ..config import MAX_FEATURES
from ..errors import LatentError
from ..files import describe
from ..latents import (Latent, GeneratorRef, MAX_NUM_WS, check_compatible, check_latent_count, fs_first_w,
                       generator_ref, latent_to_ws)
from ..log import logger
from ..networks import Generator

DIRECTION_SPACES = ("w", "z")
METHODS = ("sefa", "ganspace", "interfacegan", "imported", "conditional")
SEFA_VARIANTS = ("rosinality", "genforce", "torgb")
MAX_DIRECTIONS = 1024             # SeFa gives at most w_dim (512) directions, GANSpace as many; a file holds a few
MAX_DIRECTION_ELEMENTS = 1 << 24  # K x [num_ws x] w_dim values: 1024 per-layer [18, 512] directions are 9.4 M
MAX_NAME_CHARS = 200
MAX_STRENGTH = 1000.0             # SeFa is used at ±5..20, GANSpace at ±1..3 (σ); far beyond, w leaves its range
MAX_INFO_CHARS = 65536            # the `info` dict as JSON (SeFa's eigenvalues: 512 numbers)
# The strengths each method is used at (SeFa's and GANSpace's READMEs, dfl's DEFAULT_STRENGTH_RANGE; InterFaceGAN's
# edit scripts go to ±3 on unit boundaries): a slider's default range, +/- this.
STRENGTH_RANGES = {"sefa": 10.0, "ganspace": 3.0, "interfacegan": 3.0, "imported": 3.0, "conditional": 3.0}
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,%d}" % MAX_NAME_CHARS)


def check_layer_range(layers: Any, num_ws: Optional[int] = None, what: str = "layers") -> Optional[tuple[int, int]]:
    """`layers` as a (start, end) tuple of whole numbers with 0 <= start < end (<= num_ws when given): the w+ layers
    start..end-1 (end exclusive, like a Python slice and `interpolate_latents`' layer_start/layer_end); None stays
    None (every layer). LatentError naming what is wrong otherwise."""
    if layers is None:
        return None
    if not isinstance(layers, (tuple, list)) or len(layers) != 2 or \
            any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in layers):
        raise LatentError(f"{what} must be None (every layer) or (start, end), two whole numbers for the w+ layers "
                          f"start..end-1, got {describe(layers)}")
    start, end = int(layers[0]), int(layers[1])
    top = MAX_NUM_WS if num_ws is None else num_ws
    if not 0 <= start < end <= top:
        raise LatentError(f"{what} ({start}, {end}) must satisfy 0 <= start < end <= {top}"
                          f"{' (the generator' + chr(39) + 's num_ws)' if num_ws is not None else ''}: the w+ "
                          f"layers start..end-1 (end exclusive)")
    return start, end


def _check_info(info: Any) -> None:
    if not isinstance(info, dict):
        raise ValueError(f"info must be a dict of plain values (how the directions were made), got {describe(info)}")
    try:
        text = json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"info must hold JSON values only (numbers, text, lists, dicts; finite): {e}") from e
    if len(text) > MAX_INFO_CHARS:
        raise ValueError(f"info is {len(text):,} characters as JSON, at most {MAX_INFO_CHARS:,}")


@dataclass(frozen=True)
class Directions:
    """K latent directions of one generator (or of any generator with the same w_dim, for imported files).

    vectors: float32 `[K, dim]` (one direction per row) or `[K, num_ws, dim]` (per-layer directions, e.g.
        InterFaceGAN's pose boundary `[1, 18, 512]`); dim = w_dim (space 'w') or z_dim (space 'z'). A row is ONE
        UNIT OF STRENGTH: `apply_directions` adds `strength * vectors[k]`. Scaling is folded into the vectors.
    names: K distinct names (1..200 printable characters), e.g. 'sefa_00', 'smile', 'component_03'.
    space: 'w' (added to w / w+ codes) or 'z' (added to z before mapping).
    method: 'sefa' | 'ganspace' | 'interfacegan' | 'imported' | 'conditional'.
    variant: SeFa: 'rosinality' | 'genforce' | 'torgb' (which affines were factorised, see `core.directions.sefa`);
        '' otherwise.
    scales: float32 `[K]`, the factor folded into each row: GANSpace σ_k (the row is σ_k times a unit principal
        component, so strength 1 = one standard deviation of w along it); 1 for SeFa (unit eigenvectors) and for
        imported boundaries (used as stored). `vectors[k] / scales[k]` is the raw/unit direction.
    generator: the generator the directions were computed for (None for imported files that do not say).
    layers: suggested w+ layer range (start, end), end exclusive, or None (every layer); `apply_directions` uses
        it unless told otherwise.
    info: how they were made: {'source': ..., parameters, eigenvalues / variance ratios, file names}; JSON values.
    """

    vectors: torch.Tensor
    names: tuple
    space: str = "w"
    method: str = "imported"
    variant: str = ""
    scales: Optional[torch.Tensor] = None
    generator: Optional[GeneratorRef] = None
    layers: Optional[tuple] = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.vectors
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise ValueError(f"direction vectors must be a floating-point tensor, got {describe(v)}")
        if v.ndim not in (2, 3):
            raise ValueError(f"direction vectors must have shape [K, dim] or [K, num_ws, dim] (per layer), got "
                             f"{list(v.shape)}")
        k, dim = int(v.shape[0]), int(v.shape[-1])
        if not 1 <= k <= MAX_DIRECTIONS:
            raise ValueError(f"a Directions record holds 1..{MAX_DIRECTIONS} directions, got {k}")
        if not 1 <= dim <= MAX_FEATURES or (v.ndim == 3 and not 1 <= v.shape[1] <= MAX_NUM_WS):
            raise ValueError(f"direction vectors of shape {list(v.shape)}: dim must be 1..{MAX_FEATURES} and num_ws "
                             f"1..{MAX_NUM_WS}")
        if v.numel() > MAX_DIRECTION_ELEMENTS:
            raise ValueError(f"direction vectors hold {v.numel():,} values, at most {MAX_DIRECTION_ELEMENTS:,}")
        if not torch.isfinite(v).all():
            raise ValueError("direction vectors contain NaN or infinite values; the file or computation is broken")
        object.__setattr__(self, "vectors", v.detach().to("cpu", torch.float32).contiguous())
        names = self.names
        if isinstance(names, str) or not isinstance(names, (tuple, list)):
            raise ValueError(f"names must be a tuple of {k} strings, got {describe(names)}")
        names = tuple(names)
        if len(names) != k:
            raise ValueError(f"names has {len(names)} entries but there are {k} directions")
        for n in names:
            if not isinstance(n, str) or not _NAME.fullmatch(n):
                raise ValueError(f"direction names are 1..{MAX_NAME_CHARS} printable characters, got {describe(n)}")
        if len(set(names)) != k:
            dup = sorted({n for n in names if names.count(n) > 1})[:5]
            raise ValueError(f"direction names must be distinct, repeated: {dup}")
        object.__setattr__(self, "names", names)
        if self.space not in DIRECTION_SPACES:
            raise ValueError(f"space must be one of {DIRECTION_SPACES}, got {describe(self.space)}")
        if self.space == "z" and v.ndim == 3:
            raise ValueError("per-layer directions [K, num_ws, dim] are w+ directions; space 'z' takes [K, z_dim]")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {describe(self.method)}")
        allowed = SEFA_VARIANTS if self.method == "sefa" else ("",)
        if self.variant not in allowed:
            raise ValueError(f"variant for method {self.method!r} must be one of {allowed}, got "
                             f"{describe(self.variant)}")
        scales = torch.ones(k) if self.scales is None else self.scales
        if not isinstance(scales, torch.Tensor) or scales.shape != (k,) or not scales.is_floating_point():
            raise ValueError(f"scales must be a float tensor [K] = [{k}], got {describe(scales)}")
        if not torch.isfinite(scales).all() or (scales <= 0).any():
            raise ValueError("scales must be finite and positive (the factor folded into each vector)")
        object.__setattr__(self, "scales", scales.detach().to("cpu", torch.float32).contiguous())
        if self.generator is not None:
            if not isinstance(self.generator, GeneratorRef):
                raise ValueError(f"generator must be a GeneratorRef or None, got {describe(self.generator)}")
            need = self.generator.w_dim if self.space == "w" else self.generator.z_dim
            if dim != need:
                raise ValueError(f"{self.space} directions for {self.generator.name} must have dim {need}, got {dim}")
            if v.ndim == 3 and v.shape[1] != self.generator.num_ws:
                raise ValueError(f"per-layer directions for {self.generator.name} must have num_ws "
                                 f"{self.generator.num_ws}, got {v.shape[1]}")
        layers = check_layer_range(self.layers, v.shape[1] if v.ndim == 3 else
                                   (self.generator.num_ws if self.generator else None), "the suggested layers")
        object.__setattr__(self, "layers", layers)
        if layers is not None and self.space == "z":
            raise ValueError("a layer range applies to w+ layers; z directions move z before mapping")
        _check_info(self.info)

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def per_layer(self) -> bool:
        return self.vectors.ndim == 3

    @property
    def strength_range(self) -> float:
        """The strengths this method is used at, ±value (`STRENGTH_RANGES`; a conditional edit: its primary's)."""
        method = self.info.get("primary_method", self.method) if self.method == "conditional" else self.method
        return STRENGTH_RANGES.get(method, STRENGTH_RANGES["imported"])

    def index_of(self, index_or_name: Any) -> int:
        """The row of a direction given by index (0..K-1) or by name; LatentError listing the choices otherwise."""
        if isinstance(index_or_name, str):
            if index_or_name in self.names:
                return self.names.index(index_or_name)
            raise LatentError(f"no direction named {index_or_name!r}; this set has {self.describe_names()}")
        if isinstance(index_or_name, bool) or not isinstance(index_or_name, numbers.Integral) or \
                not 0 <= int(index_or_name) < self.count:
            raise LatentError(f"direction index must be a whole number in 0..{self.count - 1} ({self.count} "
                              f"directions), got {describe(index_or_name)}")
        return int(index_or_name)

    def describe_names(self, limit: int = 8) -> str:
        shown = ", ".join(self.names[:limit])
        return f"{self.count} directions ({shown}{', ...' if self.count > limit else ''})"

    def select(self, indices: Sequence[Any]) -> "Directions":
        """A Directions record of the given rows (indices or names), in that order."""
        rows = [self.index_of(i) for i in indices]
        if not rows:
            raise LatentError("select at least one direction")
        return Directions(self.vectors[rows], tuple(self.names[r] for r in rows), self.space, self.method,
                          self.variant, self.scales[rows], self.generator, self.layers, dict(self.info))

    def describe(self) -> str:
        made = f"{self.method}" + (f" ({self.variant})" if self.variant else "")
        for_g = f" for {self.generator.name}" if self.generator else ""
        shape = "x".join(map(str, self.vectors.shape[1:]))
        return f"{self.count} {self.space} directions [{shape}] by {made}{for_g}"


# --- Applying ------------------------------------------------------------------------------------

def check_directions_fit(G: Generator, d: Directions) -> None:
    """LatentError unless `d` can move latents of `G` (dim = w_dim or z_dim, per-layer num_ws = num_ws); a warning
    when they were computed for another generator of the same shape."""
    g = generator_ref(G)
    need = g.w_dim if d.space == "w" else g.z_dim
    if d.dim != need:
        made = f" (made for {d.generator.name})" if d.generator else ""
        raise LatentError(f"these {d.space} directions{made} have {d.dim} values, but {g.name} has "
                          f"{'w_dim' if d.space == 'w' else 'z_dim'} {need}; use directions computed for {g.name} "
                          f"(discover them with Discover SeFa/GANSpace Directions)")
    if d.per_layer and d.vectors.shape[1] != g.num_ws:
        raise LatentError(f"these per-layer directions have {d.vectors.shape[1]} w+ layers, but {g.name} has "
                          f"num_ws {g.num_ws} (a {d.vectors.shape[1]}-layer file is for another resolution)")
    if d.layers is not None and d.layers[1] > g.num_ws:
        raise LatentError(f"these directions suggest w+ layers {d.layers[0]}..{d.layers[1] - 1}, but {g.name} has "
                          f"num_ws {g.num_ws}; pass a layer range that fits")
    if d.generator is not None and d.generator.fingerprint != g.fingerprint:
        logger.warning("these directions were computed for %s; %s has the same shape but other weights, so they may "
                       "mean something else there", d.generator.name, g.name)


def _check_strength(strength: Any) -> float:
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not math.isfinite(strength) or \
            abs(strength) > MAX_STRENGTH:
        raise LatentError(f"a direction strength must be a finite number in ±{MAX_STRENGTH:g} (GANSpace: ±1..3 σ, "
                          f"SeFa: ±5..20), got {describe(strength)}")
    return float(strength)


def _rows(latent: Latent, repeat: int) -> Latent:
    """Each latent of the batch repeated `repeat` times in a row (latent-major)."""
    if repeat == 1:
        return latent
    rep = lambda t: None if t is None else t.repeat_interleave(repeat, 0)  # noqa: E731
    c = latent.c if latent.c is None or len(latent.c) == 1 else rep(latent.c)
    return Latent(rep(latent.tensor), latent.space, latent.generator, c, latent.truncation_psi,
                  latent.truncation_cutoff, rep(latent.features), rep(latent.features_img))


def _apply(G: Generator, latent: Latent, edits: Sequence[tuple[Directions, int, torch.Tensor]],
           layers: Optional[tuple[int, int]]) -> Latent:
    """edits: (directions, row, strengths float64 [N] or [1]). The sum is formed in float64 and added once."""
    g = generator_ref(G)
    check_compatible(latent, G)
    if latent.space == "s":
        raise LatentError("this is an S (StyleSpace) latent; latent directions move w or z. Apply them to the w/w+ "
                          "latent from before the S edit")
    z_edits = [e for e in edits if e[0].space == "z"]
    w_edits = [e for e in edits if e[0].space == "w"]
    if z_edits:
        if latent.space != "z":
            raise LatentError(f"z directions move z before the mapping, but this is a {latent.space} latent (z cannot "
                              f"be recovered from w); apply them to a z latent, or use w directions")
        if layers is not None:
            raise LatentError("a layer range applies to w+ layers; z directions move z before mapping: leave the "
                              "layer range empty")
        delta = sum(s.unsqueeze(1) * d.vectors[i].double().unsqueeze(0) for d, i, s in z_edits)
        latent = Latent((latent.tensor.double() + delta).float(), "z", latent.generator, latent.c,
                        latent.truncation_psi, latent.truncation_cutoff)
        if not w_edits:
            return latent
    n = latent.batch_size
    # Per-edit layer mask [num_ws] (None: every layer) and whether the result must be w+.
    masks, wplus = [], latent.space in ("w+", "fs")
    for d, i, s in w_edits:
        rng = layers if layers is not None else d.layers
        if rng is not None and rng[1] > g.num_ws:
            raise LatentError(f"layer range {rng[0]}..{rng[1] - 1} lies beyond {g.name}'s {g.num_ws} w+ layers")
        masks.append(rng)
        wplus = wplus or d.per_layer or (rng is not None and rng != (0, g.num_ws))
    if latent.space == "fs":
        first = fs_first_w(G)
        for rng in masks:
            if rng is not None and rng[1] <= first:
                raise LatentError(f"layer range {rng[0]}..{rng[1] - 1} lies inside the fs latent's F (its first "
                                  f"{first} w+ layers are baked into the features); choose layers {first} or later")
    else:
        first = 0
    if latent.space == "w" and not wplus:
        base = latent.tensor.to("cpu").double()
    else:
        base = (latent_to_ws(G, latent) if latent.space in ("z", "w") else latent.tensor).to("cpu").double()
        if latent.space == "z" and not wplus and (base == base[:, :1]).all():
            base = base[:, 0]          # an untruncated (or uniformly truncated) z maps to one w per latent
        else:
            wplus = True
    out = base.clone()
    for (d, i, s), rng in zip(w_edits, masks):
        v = d.vectors[i].double()                                        # [dim] or [num_ws, dim]
        if not wplus:
            out += s.unsqueeze(1) * v.unsqueeze(0)
            continue
        lo, hi = rng if rng is not None else (0, g.num_ws)
        lo = max(lo, first)
        step = v[lo:hi] if d.per_layer else v.unsqueeze(0).expand(hi - lo, -1)
        out[:, lo:hi] += s.reshape(-1, 1, 1) * step.unsqueeze(0)
    out = out.float()
    if latent.space == "fs":
        return Latent(out, "fs", latent.generator, latent.c, features=latent.features,
                      features_img=latent.features_img)
    space = "w+" if wplus else "w"
    ref = latent.generator if latent.space != "z" else g
    if n != len(out):
        raise AssertionError("batch changed while applying directions")
    return Latent(out.contiguous(), space, ref, latent.c)


def apply_directions(G: Generator, latent: Latent, edits: Sequence[tuple[Directions, Any, float]], *,
                     layers: Optional[tuple[int, int]] = None) -> Latent:
    """`latent` moved along directions: w' = w + Σ strength_j · vectors[index_j] (SeFa, eq. 6 of Shen & Zhou 2021;
    GANSpace, sec. 3 of Härkönen et al. 2020; InterFaceGAN, eq. 5 of Shen et al. 2020).

    Args:
        G: the generator the latent drives (maps z latents, checks shapes, locates fs layers).
        latent: z, w, w+ or fs (an s latent is refused: directions move w or z).
        edits: (directions, index or name, strength) triples; strengths finite, |strength| <= MAX_STRENGTH. Edits
            add up linearly.
        layers: (start, end), the w+ layers start..end-1 every w edit moves; None: each Directions' own suggested
            `layers` (every layer where it has none).

    Returns a new latent (inputs are never modified), on CPU, float32:
        - z directions move a z latent in z (before mapping; the latent keeps its truncation). They need a z latent.
        - w directions on a w latent without a layer range stay w; with a range other than every layer, or
          per-layer vectors, the result is w+. A z latent is mapped first (with its truncation psi/cutoff): w when
          every layer maps alike, else w+. A w+ latent stays w+.
        - fs latents: only the codes the blocks after 32 px read (entries >= `fs_first_w(G)`) move; F and the
          earlier codes (baked into F) are kept. A range inside F is refused.
        The sum is formed in float64 and added once, so applying then applying the negated strengths returns the
        start latent up to float32 rounding (|error| <= 1 ulp of the larger value).
    """
    if isinstance(edits, tuple) and len(edits) == 3 and isinstance(edits[0], Directions):
        edits = [edits]
    if not edits:
        return latent
    layers = check_layer_range(layers, G.num_ws)
    checked = []
    for e in edits:
        if not isinstance(e, (tuple, list)) or len(e) != 3 or not isinstance(e[0], Directions):
            raise LatentError(f"each edit is (Directions, index or name, strength), got {describe(e)}")
        d, idx, strength = e
        check_directions_fit(G, d)
        checked.append((d, d.index_of(idx), torch.tensor([_check_strength(strength)], dtype=torch.float64)))
    return _apply(G, latent, checked, layers)


def direction_sweep(G: Generator, latent: Latent, directions: Directions, index: Any, strengths: Sequence[float], *,
                    layers: Optional[tuple[int, int]] = None) -> Latent:
    """A batch of latents: for each input latent (in order), one latent per strength, `apply_directions` of the
    single direction `index` (a row or a name) at that strength. len(latent) x len(strengths) latents, latent-major
    (latent 0 at every strength, then latent 1 ...), checked against `MAX_LATENTS` before anything is allocated."""
    strengths = list(strengths)
    if not strengths:
        raise LatentError("a sweep needs at least one strength")
    check_latent_count(latent.batch_size * len(strengths), f"a sweep of {latent.batch_size} latents x "
                       f"{len(strengths)} strengths", split="sweep fewer latents or fewer strengths at a time")
    values = torch.tensor([_check_strength(s) for s in strengths], dtype=torch.float64)
    layers = check_layer_range(layers, G.num_ws)
    check_directions_fit(G, directions)
    row = directions.index_of(index)
    rows = _rows(latent, len(values))
    return _apply(G, rows, [(directions, row, values.repeat(latent.batch_size))], layers)


# --- InterFaceGAN's conditional edit ---------------------------------------------------------------

def conditional_direction(primary: torch.Tensor, protected: Sequence[torch.Tensor]) -> torch.Tensor:
    """`primary` with the protected directions projected out (InterFaceGAN, Shen et al. 2020, sec. 2.2 and eq. 6:
    n1 - (n1ᵀn2) n2 for one; for several, the protected set is orthonormalised by Gram–Schmidt first, so the result
    is orthogonal to each protected direction and to their span).

    Tensors of one shape ([dim], [1, dim] or per-layer [num_ws, dim]; all the same) are treated as flat vectors. The
    result has the
    primary's shape and norm (InterFaceGAN's unit boundaries stay unit; scaled directions keep their strength
    scale), float32. Computed in float64.

    Raises LatentError when shapes differ, a protected direction is zero, or the primary lies (numerically) in the
    protected span, leaving nothing to edit.
    """
    if not isinstance(primary, torch.Tensor) or not primary.is_floating_point():
        raise LatentError(f"the primary direction must be a float tensor, got {describe(primary)}")
    p = primary.detach().to("cpu", torch.float64).reshape(-1)
    norm = p.norm()
    if not torch.isfinite(p).all() or norm == 0:
        raise LatentError("the primary direction is zero or not finite")
    basis: list[torch.Tensor] = []
    for j, q in enumerate(protected):
        if not isinstance(q, torch.Tensor) or q.numel() != p.numel() or tuple(q.shape) != tuple(primary.shape):
            raise LatentError(f"protected direction {j} has shape {list(getattr(q, 'shape', []))}, but the primary "
                              f"has {list(primary.shape)}; conditional edits need directions of one shape")
        q = q.detach().to("cpu", torch.float64).reshape(-1)
        if not torch.isfinite(q).all() or q.norm() == 0:
            raise LatentError(f"protected direction {j} is zero or not finite")
        size = q.norm()
        for b in basis:                      # modified Gram–Schmidt: subtract each earlier basis vector in turn
            q = q - (q @ b) * b
        if q.norm() > 1e-6 * size:           # one in the span of earlier ones (to float32 rounding) adds nothing
            basis.append(q / q.norm())
    out = p.clone()
    for b in basis:
        out = out - (out @ b) * b
    if out.norm() <= 1e-6 * norm:
        raise LatentError("the primary direction lies in the span of the protected ones: projecting them out "
                          "leaves nothing to edit; protect fewer attributes")
    out = out * (norm / out.norm())
    return out.reshape(primary.shape).float()


def make_conditional(directions: Directions, index: Any, protected: Sequence[tuple[Directions, Any]]) -> Directions:
    """A one-direction record: row `index` of `directions` with the protected directions' rows projected out
    (`conditional_direction`); method 'conditional', named 'primary | protected, ...', same space/generator."""
    row = directions.index_of(index)
    vecs, names = [], []
    for d, j in protected:
        if d.space != directions.space:
            raise LatentError(f"a protected direction is in {d.space} but the primary in {directions.space}")
        k = d.index_of(j)
        vecs.append(d.vectors[k])
        names.append(d.names[k])
    v = conditional_direction(directions.vectors[row], vecs)
    name = (directions.names[row] + " | " + ", ".join(names))[:MAX_NAME_CHARS]
    info = {"source": "conditional", "primary": directions.names[row], "protected": names,
            "primary_method": directions.method}
    return Directions(v.unsqueeze(0), (name,), directions.space, "conditional", "", directions.scales[row:row + 1],
                      directions.generator, directions.layers, info)


__all__ = ["Directions", "DIRECTION_SPACES", "METHODS", "STRENGTH_RANGES", "SEFA_VARIANTS", "MAX_DIRECTIONS",
           "MAX_STRENGTH",
           "apply_directions", "direction_sweep", "conditional_direction", "make_conditional",
           "check_directions_fit", "check_layer_range"]
