"""Latent toolkit: arithmetic (add, subtract, scale, mean), batches (select, split, concatenate), per-layer-group
blends and keyframe walks, on `core.latents.Latent` batches of any space and any number of w layers."""

from __future__ import annotations

import math
import numbers
import re
from typing import Optional, Sequence

import torch

from .errors import LatentError
from .latents import (LAYER_GROUP_BOUNDS, STYLE_MIX_PRESETS, Latent, check_compatible, check_latent_count,
                      convert_latent, generator_ref, latent_to_ws, layer_resolutions, slerp)
from .log import logger
from .networks import Generator

LAYER_GROUPS = STYLE_MIX_PRESETS           # coarse / middle / fine, as Style Mix's presets
GROUP_BOUNDS = LAYER_GROUP_BOUNDS          # (lower, upper] px of each group: core.latents.LAYER_GROUP_BOUNDS
BLEND_METHODS = ("lerp", "slerp")
WALK_METHODS = ("auto", "lerp", "slerp")
EASINGS = ("linear", "ease-in-out", "cubic")
SCALE_CENTERS = ("origin", "average")

# Defaults shared by core functions and node schemas.
DEFAULT_BLEND_WEIGHTS = {"coarse": 0.0, "middle": 0.5, "fine": 1.0}
DEFAULT_BLEND_METHOD = "lerp"
DEFAULT_FRAMES_PER_SEGMENT = 24
DEFAULT_EASING = "ease-in-out"
DEFAULT_WALK_METHOD = "auto"
MAX_WEIGHT = 10.0          # blend weights and scale factors: beyond ±10 w leaves anything the network ever saw
MAX_INDEX_TEXT = 10_000    # characters of an index list ('0,2,4-7') read at most

INDEX_SYNTAX = ("write indices like '0,2,4-7' (0 = the first latent, -1 = the last; a range 'a-b' includes both "
                "ends and may go downwards, '3-0' reverses)")


# --- checks shared by the operations ----------------------------------------------------------------

def _parts(latent: Latent) -> list[torch.Tensor]:
    """The tensors an operation acts on alike: the codes, and for fs latents F (and the kept skip)."""
    parts = [latent.tensor]
    if latent.space == "fs":
        parts.append(latent.features)
        if latent.features_img is not None:
            parts.append(latent.features_img)
    return parts


def _rebuild(like: Latent, parts: Sequence[torch.Tensor], c: Optional[torch.Tensor]) -> Latent:
    """A latent in `like`'s space, generator and truncation, from new parts (float32, contiguous)."""
    parts = [p.float().contiguous() for p in parts]
    return Latent(parts[0], like.space, like.generator, None if c is None else c.float().contiguous(),
                  like.truncation_psi, like.truncation_cutoff,
                  features=parts[1] if len(parts) > 1 else None, features_img=parts[2] if len(parts) > 2 else None)


def check_same_kind(latents: Sequence[Latent], what: str) -> None:
    """LatentError unless the latents can be combined element-wise: one space, one generator shape, and for z the
    same truncation and class labels, for fs the same generator and skip convention. Different weights of the same
    shape (a fine-tuned copy) are only logged, as everywhere in the pack."""
    first = latents[0]
    for other in latents[1:]:
        if other.space != first.space:
            raise LatentError(
                f"cannot {what} a {first.space} latent and a {other.space} latent: both must be in one space. Convert "
                f"one first with Convert Latent (z -> w -> w+; any -> s), e.g. make both w+")
        if other.tensor.shape[1:] != first.tensor.shape[1:]:
            raise LatentError(
                f"cannot {what} latents of {first.generator.name} ({first.space} {list(first.tensor.shape[1:])}) "
                f"and {other.generator.name} ({other.space} {list(other.tensor.shape[1:])}): their generators have "
                f"other shapes; make both latents with one generator")
        if first.space == "fs":
            if other.generator.fingerprint != first.generator.fingerprint:
                raise LatentError(f"cannot {what} fs latents of different generators ({first.generator.name} and "
                                  f"{other.generator.name}): F depends on the weights that made it; make both with "
                                  f"one generator")
            if other.fs_skip != first.fs_skip:
                raise LatentError(f"cannot {what} an fs latent that keeps the 32 px skip with one that drops it "
                                  f"(skip '{first.fs_skip}' vs '{other.fs_skip}'); make both with one convention")
            if other.features.shape[1:] != first.features.shape[1:]:
                raise LatentError(f"cannot {what} fs latents whose features differ in shape "
                                  f"({list(first.features.shape[1:])} vs {list(other.features.shape[1:])})")
        if first.space == "z":
            if (other.truncation_psi, other.truncation_cutoff) != (first.truncation_psi, first.truncation_cutoff):
                raise LatentError(
                    f"cannot {what} z latents with different truncation (psi {first.truncation_psi:g} cutoff "
                    f"{first.truncation_cutoff} vs psi {other.truncation_psi:g} cutoff {other.truncation_cutoff}): "
                    f"a z latent is truncated when it is mapped; sample both with the same truncation, or convert "
                    f"both to w first")
            if (first.c is None) != (other.c is None) or (first.c is not None and not _same_rows(first.c, other.c)):
                raise LatentError(f"cannot {what} z latents of different classes: the class labels c differ; sample "
                                  f"both with the same class, or convert both to w first")
        if other.generator.fingerprint != first.generator.fingerprint:
            logger.warning("%s: the latents were made with %s and %s (same shape, other weights); the result "
                           "belongs to %s", what, first.generator.name, other.generator.name, first.generator.name)


def _same_rows(c1: torch.Tensor, c2: torch.Tensor) -> bool:
    """Whether two label tensors hold one and the same label row (each may be one row or a batch)."""
    rows = torch.cat([c1, c2])
    return bool((rows == rows[:1]).all())


def _batch(sizes: Sequence[int], what: str) -> int:
    """The broadcast batch size: all equal, or 1 for those that differ."""
    n = max(sizes)
    if any(s not in (1, n) for s in sizes):
        raise LatentError(f"cannot {what} batches of {' and '.join(map(str, sizes))} latents: the batch sizes must "
                          f"match, or one of them be 1 (it is then used with every latent of the other)")
    return n


def _labels(latent: Latent, n: int) -> Optional[torch.Tensor]:
    c = latent.c
    return None if c is None else c.expand(n, -1) if len(c) == 1 else c


def _check_number(value: float, name: str, limit: float = MAX_WEIGHT) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
            abs(value) > limit:
        raise LatentError(f"{name} must be a number in -{limit:g}..{limit:g}, got {value!r}")
    return float(value)


# --- arithmetic ----------------------------------------------------------------------------------

def add_latents(a: Latent, b: Latent, *, strength: float = 1.0) -> Latent:
    """a + strength * b, element-wise (codes, and for fs latents F and the kept skip as well).

    Args:
        a, b: latents in one space of one generator shape (`check_same_kind`); batch sizes equal or one of them 1.
            Typical use: a latent plus a difference of two others (`subtract_latents`), a direction.
        strength: multiplies b, in ±MAX_WEIGHT.
    Returns: a's space and generator, the larger batch; class labels and truncation from a.
    """
    strength = _check_number(strength, "strength")
    check_same_kind([a, b], "add")
    n = _batch([a.batch_size, b.batch_size], "add")
    parts = [(x.double() + strength * y.double()).expand(n, *x.shape[1:]) for x, y in zip(_parts(a), _parts(b))]
    return _rebuild(a, parts, _labels(a, n))


def subtract_latents(a: Latent, b: Latent) -> Latent:
    """a - b, element-wise (see `add_latents`): the difference is a direction from b to a."""
    return add_latents(a, b, strength=-1.0)


def scale_latent(latent: Latent, factor: float, *, center: str = "origin", G: Optional[Generator] = None) -> Latent:
    """center + factor * (latent - center).

    center: 'origin' (plain multiplication: scales a difference latent, i.e. a direction's strength) or 'average'
        (G's average w, `G.w_avg`: the truncation trick, Karras et al. 2019 eq. 3, applied afterwards; w and w+
        latents only, needs G).
    factor: in ±MAX_WEIGHT.
    """
    factor = _check_number(factor, "factor")
    if center not in SCALE_CENTERS:
        raise LatentError(f"center must be one of {SCALE_CENTERS}, got {center!r}")
    if center == "origin":
        return _rebuild(latent, [p.double() * factor for p in _parts(latent)], latent.c)
    if latent.space not in ("w", "w+"):
        raise LatentError(f"scaling about the average w applies to w and w+ latents (the truncation trick); this is "
                          f"a {latent.space} latent: convert it to w or w+ first, or scale about the origin")
    if G is None:
        raise LatentError("scaling about the average w needs the generator (its w_avg): connect it")
    check_compatible(latent, G)   # the shapes (LatentError saying which); other weights are only logged
    avg = G.w_avg.detach().to("cpu", torch.float64)
    t = latent.tensor.double()
    return _rebuild(latent, [avg + factor * (t - avg)], latent.c)


def mean_latent(latent: Latent) -> Latent:
    """The mean of a batch, as a batch of 1 (every part of fs latents averaged).

    z latents: the mean is rescaled to the inputs' mean length, because z is Gaussian and lives near the sphere of
    radius sqrt(z_dim): a plain mean of k latents has length ~sqrt(z_dim / k) and maps to a dull, average image.
    w, w+, s: the plain mean (W is close to linear; the mean is the images' "average"). Class labels are averaged
    too (a conditional mapping embeds them linearly: the mean label is the mean class embedding).
    """
    parts = [p.double().mean(0, keepdim=True) for p in _parts(latent)]
    if latent.space == "z":
        length = latent.tensor.double().norm(dim=1).mean()
        parts[0] = parts[0] * (length / parts[0].norm(dim=1, keepdim=True).clamp_min(1e-12))
    c = None if latent.c is None else latent.c.double().mean(0, keepdim=True)
    return _rebuild(latent, parts, c)


# --- batches -------------------------------------------------------------------------------------

_INDEX_PART = re.compile(r"(-?[0-9]{1,9})(?:\s*-\s*(-?[0-9]{1,9}))?")


def parse_indices(text: str, count: int) -> list[int]:
    """'0,2,4-7' -> [0, 2, 4, 5, 6, 7] for a batch of `count` latents.

    Negative indices count from the end (-1 = the last); a range 'a-b' includes both ends and may go downwards
    ('3-0' -> 3, 2, 1, 0; '-3--1' -> the last three); an index may repeat. The number of indices is checked against
    MAX_LATENTS before any list is made. LatentError naming the part that cannot be read or is out of range.
    """
    text = str(text)
    if len(text) > MAX_INDEX_TEXT:
        raise LatentError(f"the index list is {len(text):,} characters long (at most {MAX_INDEX_TEXT:,}); "
                          f"{INDEX_SYNTAX}")
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _INDEX_PART.fullmatch(part)
        if m is None:
            raise LatentError(f"cannot read index {part[:40]!r}; {INDEX_SYNTAX}")
        ends = [int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))]
        for value in ends:
            if not -count <= value < count:
                raise LatentError(f"index {value} in {part!r} is outside the batch of {count} latent(s) "
                                  f"(0..{count - 1}, or -{count}..-1 from the end); {INDEX_SYNTAX}")
        ranges.append(tuple(v % count for v in ends))
    if not ranges:
        raise LatentError(f"no indices given; {INDEX_SYNTAX}")
    check_latent_count(sum(abs(hi - lo) + 1 for lo, hi in ranges), f"the index list {text[:60]!r}")
    return [i for lo, hi in ranges for i in (range(lo, hi + 1) if hi >= lo else range(lo, hi - 1, -1))]


def _take(latent: Latent, index: torch.Tensor) -> Latent:
    """The latents at `index` (a long tensor), with their labels and fs parts."""
    c = latent.c
    if c is not None and len(c) == latent.batch_size:
        c = c[index]
    return _rebuild(latent, [p[index] for p in _parts(latent)], c)


def select_latents(latent: Latent, indices: str) -> Latent:
    """The latents of a batch chosen by `indices` ('0,2,4-7', negative from the end; see `parse_indices`), in that
    order."""
    return _take(latent, torch.as_tensor(parse_indices(indices, latent.batch_size), dtype=torch.long))


def split_latent(latent: Latent, at: int) -> tuple[Latent, Latent]:
    """(latents [0, at), latents [at, N)); a negative `at` counts from the end (-1: all but the last, and the
    last). Both parts must hold at least one latent."""
    n = latent.batch_size
    if isinstance(at, bool) or not isinstance(at, numbers.Integral):
        raise LatentError(f"the split index must be a whole number, got {at!r}")
    k = int(at) + n if at < 0 else int(at)
    if not 0 < k < n:
        raise LatentError(f"cannot split a batch of {n} latent(s) at {at}: both parts need a latent; choose 1..{n - 1} "
                          f"(or -{n - 1}..-1 from the end)" if n > 1 else
                          "cannot split a batch of 1 latent: there is nothing to split")
    index = torch.arange(n)
    return _take(latent, index[:k]), _take(latent, index[k:])


def concat_latents(latents: Sequence[Latent]) -> Latent:
    """One batch of the latents in order (one space, one generator shape: `check_same_kind`). Class labels are
    kept per latent (all latents carry them, or none); the total is checked against MAX_LATENTS."""
    latents = [x for x in latents if x is not None]
    if not latents:
        raise LatentError("nothing to concatenate: connect at least one latent")
    if latents[0].space == "z":
        _check_z_concat(latents)
    else:
        check_same_kind(latents, "concatenate")
    check_latent_count(sum(x.batch_size for x in latents), f"concatenating {len(latents)} batches")
    parts = [torch.cat(group) for group in zip(*(_parts(x) for x in latents))]
    labelled = [x.c is not None for x in latents]
    if any(labelled) and not all(labelled):
        raise LatentError("cannot concatenate latents with class labels and latents without them; they come from a "
                          "conditional and an unconditional generator")
    c = torch.cat([_labels(x, x.batch_size) for x in latents]) if all(labelled) else None
    return _rebuild(latents[0], parts, c)


def _check_z_concat(latents: Sequence[Latent]) -> None:
    """z latents of different classes may share a batch (each keeps its labels); truncation must agree."""
    unlabelled = [Latent(x.tensor, "z", x.generator, None, x.truncation_psi, x.truncation_cutoff) for x in latents]
    check_same_kind(unlabelled, "concatenate")


# --- per-layer-group blend -----------------------------------------------------------------------

def layer_groups(G: Generator) -> dict[str, list[int]]:
    """The w layers of each group ('coarse', 'middle', 'fine'), from the image scale each layer controls
    (`layer_resolutions`): correct for any num_ws (a 32 px model has no fine layers, StyleGAN3's layers follow their
    cutoff frequencies). Every layer is in exactly one group."""
    res = layer_resolutions(G)
    return {g: [i for i, r in enumerate(res) if lo < r <= hi] for g, (lo, hi) in GROUP_BOUNDS.items()}


_WEIGHT_PART = re.compile(r"([0-9]{1,4})(?:\s*-\s*([0-9]{1,4}))?\s*:\s*([-+0-9.eE]{1,32})")


def layer_weights(G: Generator, *, coarse: float = DEFAULT_BLEND_WEIGHTS["coarse"],
                  middle: float = DEFAULT_BLEND_WEIGHTS["middle"], fine: float = DEFAULT_BLEND_WEIGHTS["fine"],
                  custom: str = "") -> list[float]:
    """One weight per w layer (`G.num_ws` of them): each group's weight (`layer_groups`), then `custom`.

    custom: '' (the group weights), a full list of num_ws numbers ('0,0,0.5,...'), or overrides of chosen layers
        ('0-3:1, 8:0.25', ranges inclusive). Weights lie in ±MAX_WEIGHT (outside 0..1 extrapolates).
    """
    by_group = {"coarse": _check_number(coarse, "coarse"), "middle": _check_number(middle, "middle"),
                "fine": _check_number(fine, "fine")}
    weights = [0.0] * G.num_ws
    for group, layers in layer_groups(G).items():
        for i in layers:
            weights[i] = by_group[group]
    text = str(custom).strip()
    if not text:
        return weights
    if len(text) > MAX_INDEX_TEXT:
        raise LatentError(f"the custom layer weights are {len(text):,} characters long (at most {MAX_INDEX_TEXT:,})")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    syntax = (f"write {G.num_ws} weights, one per w layer ('0,0,0.5,...'), or overrides like '0-3:1, 8:0.25' "
              f"(layers 0..{G.num_ws - 1})")
    if all(":" not in p for p in parts):
        if len(parts) != G.num_ws:
            raise LatentError(f"the custom layer weights list {len(parts)} number(s), but {G.info.name} has "
                              f"{G.num_ws} w layers; {syntax}")
        return [_check_number(_read_float(p, syntax), f"the weight of layer {i}") for i, p in enumerate(parts)]
    for part in parts:
        m = _WEIGHT_PART.fullmatch(part)
        if m is None:
            raise LatentError(f"cannot read layer weight {part[:40]!r}; {syntax}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not lo <= hi < G.num_ws:
            raise LatentError(f"layer range {part!r} must go upwards and stay below num_ws = {G.num_ws}; {syntax}")
        value = _check_number(_read_float(m.group(3), syntax), f"the weight in {part!r}")
        for i in range(lo, hi + 1):
            weights[i] = value
    return weights


def _read_float(text: str, syntax: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LatentError(f"cannot read weight {text[:40]!r}; {syntax}") from None


def blend_latents(G: Generator, a: Latent, b: Latent, *, coarse: float = DEFAULT_BLEND_WEIGHTS["coarse"],
                  middle: float = DEFAULT_BLEND_WEIGHTS["middle"], fine: float = DEFAULT_BLEND_WEIGHTS["fine"],
                  method: str = DEFAULT_BLEND_METHOD, custom: str = "") -> Latent:
    """w+ latent whose layer l is interp(a_l, b_l, t_l): t_l = the weight of l's group (`layer_weights`), 0 = a,
    1 = b. A weighted generalisation of style mixing (StyleGAN sec. 3.1), per layer, for any num_ws.

    Args:
        a, b: z, w or w+ latents of G (mapped / broadcast to w+); batch sizes equal or one of them 1.
        method: 'lerp' or 'slerp' (per layer, along w; keeps the lengths).
    """
    if method not in BLEND_METHODS:
        raise LatentError(f"method must be one of {BLEND_METHODS}, got {method!r}")
    for x in (a, b):
        if x.space in ("s", "fs"):
            raise LatentError(f"a per-layer blend mixes w+ layers; this is an {x.space} latent, which has "
                              f"{'no w layers' if x.space == 's' else 'features F besides its w codes'}. Blend the w "
                              f"or w+ latents it was made from, or convert it to w+ with Convert Latent")
    weights = layer_weights(G, coarse=coarse, middle=middle, fine=fine, custom=custom)
    wa, wb = latent_to_ws(G, a).to("cpu", torch.float64), latent_to_ws(G, b).to("cpu", torch.float64)
    n = _batch([len(wa), len(wb)], "blend")
    wa, wb = wa.expand(n, -1, -1), wb.expand(n, -1, -1)
    t = torch.tensor(weights, dtype=torch.float64).reshape(1, -1, 1)
    out = slerp(wa, wb, t) if method == "slerp" else wa + (wb - wa) * t
    return Latent(out.float().contiguous(), "w+", generator_ref(G), _labels(a, n) if a.c is not None else None)


# --- keyframe walks ------------------------------------------------------------------------------

def ease(t: torch.Tensor, easing: str) -> torch.Tensor:
    """Easing of times t in [0, 1] (0 -> 0, 1 -> 1): 'linear'; 'ease-in-out' (sine: (1 - cos(pi t)) / 2, slows
    into and out of each keyframe); 'cubic' (cubic ease-in-out: 4t^3, then 1 - (2 - 2t)^3 / 2, a longer pause at
    each keyframe)."""
    if easing == "linear":
        return t
    if easing == "ease-in-out":
        return (1 - torch.cos(math.pi * t)) / 2
    if easing == "cubic":
        return torch.where(t < 0.5, 4 * t ** 3, 1 - (2 - 2 * t) ** 3 / 2)
    raise LatentError(f"easing must be one of {EASINGS}, got {easing!r}")


def walk_frame_count(keyframes: int, frames_per_segment: int, loop: bool) -> int:
    """Frames of a walk: loop: keyframes x frames_per_segment (the last segment returns to the first keyframe,
    which is not repeated, so the video loops seamlessly); else (keyframes - 1) x frames_per_segment + 1."""
    return keyframes * frames_per_segment if loop else (keyframes - 1) * frames_per_segment + 1


def keyframe_walk(keyframes: Latent, frames_per_segment: int = DEFAULT_FRAMES_PER_SEGMENT, *, loop: bool = True,
                  easing: str = DEFAULT_EASING, method: str = DEFAULT_WALK_METHOD) -> Latent:
    """A walk through the latents of a batch, in order, as one batch of frames for a video.

    Args:
        keyframes: at least 2 latents of any space (e.g. Sample Latent with a seed list, or Concatenate Latents).
        frames_per_segment: frames from one keyframe to the next (the next keyframe starts the next segment).
        loop: go back from the last keyframe to the first (see `walk_frame_count`).
        easing: 'linear', 'ease-in-out' or 'cubic' (`ease`), applied within each segment.
        method: 'lerp', 'slerp' (along the last axis: per w layer for w+, per vector for z), or 'auto' (slerp for
            z, lerp otherwise). fs latents interpolate linearly (F is a feature map, not a direction).
    Returns: `walk_frame_count` latents (checked against MAX_LATENTS before anything is computed); frame k x
        frames_per_segment is keyframe k exactly. Class labels are interpolated with the frames.
    """
    if isinstance(frames_per_segment, bool) or not isinstance(frames_per_segment, numbers.Integral) or \
            frames_per_segment < 1:
        raise LatentError(f"frames_per_segment must be a whole number of at least 1, got {frames_per_segment!r}")
    if method not in WALK_METHODS:
        raise LatentError(f"method must be one of {WALK_METHODS}, got {method!r}")
    if easing not in EASINGS:
        raise LatentError(f"easing must be one of {EASINGS}, got {easing!r}")
    k = keyframes.batch_size
    if k < 2:
        raise LatentError(f"a keyframe walk needs at least 2 keyframes, got a batch of {k}: sample several seeds "
                          f"(Sample Latent's seed_list, e.g. '1,5,9'), or join latents with Concatenate Latents")
    frames_per_segment = int(frames_per_segment)
    total = check_latent_count(walk_frame_count(k, frames_per_segment, loop),
                               f"a walk through {k} keyframes x {frames_per_segment} frames per segment",
                               split="use fewer frames per segment or fewer keyframes per run (at most "
                                     "10,000 frames in all), and join the parts in the video node")
    if method == "auto":
        method = "slerp" if keyframes.space == "z" else "lerp"
    if method == "slerp" and keyframes.space == "fs":
        raise LatentError("fs latents interpolate linearly (F is a feature map, not a direction): choose lerp or auto")
    segments = k if loop else k - 1
    start = torch.arange(segments)
    end = (start + 1) % k
    t = ease(torch.arange(frames_per_segment, dtype=torch.float64) / frames_per_segment, easing)

    def frames(x: torch.Tensor, spherical: bool) -> torch.Tensor:
        shape = (1, frames_per_segment) + (1,) * (x.ndim - 1)
        A, B, tt = x[start].double().unsqueeze(1), x[end].double().unsqueeze(1), t.reshape(shape)
        out = slerp(A, B, tt) if spherical else A + (B - A) * tt
        out[:, 0] = A[:, 0]   # each keyframe exactly
        out = out.reshape(-1, *x.shape[1:])
        return out if loop else torch.cat([out, x[-1:].double()])

    parts = [frames(p, method == "slerp" and i == 0) for i, p in enumerate(_parts(keyframes))]
    c = None if keyframes.c is None else frames(_labels(keyframes, k), False)
    assert len(parts[0]) == total
    return _rebuild(keyframes, parts, c)


def convert_space(G: Generator, latent: Latent, space: str, *, fs_skip: Optional[str] = None) -> Latent:
    """`convert_latent` (z -> w -> w+ -> fs, any -> s, fs -> w+), with the fs skip convention chosen when making fs
    latents (None: the default, 'drop')."""
    from .latents import fs_from_wplus

    if space == "fs" and latent.space != "fs" and fs_skip is not None:
        return fs_from_wplus(G, latent, fs_skip)
    return convert_latent(G, latent, space)


__all__ = [
    "LAYER_GROUPS", "BLEND_METHODS", "WALK_METHODS", "EASINGS", "SCALE_CENTERS", "add_latents", "subtract_latents",
    "scale_latent", "mean_latent", "parse_indices", "select_latents", "split_latent", "concat_latents",
    "layer_groups", "layer_weights", "blend_latents", "ease", "walk_frame_count", "keyframe_walk", "convert_space",
    "check_same_kind",
]
