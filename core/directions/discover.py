"""Unsupervised direction discovery: SeFa (closed-form factorisation of the style affines, Shen & Zhou 2021) in the
three variants in circulation, and GANSpace (PCA of mapped w, Härkönen et al. 2020)."""

from __future__ import annotations

import numbers
from typing import Callable, Optional

import torch

from ..errors import LatentError
from ..files import describe
from ..latents import generator_ref, mapped_w_covariance
from ..networks import Generator
from .base import MAX_DIRECTIONS, SEFA_VARIANTS, Directions, check_layer_range

# Defaults shared by the core functions and the node schemas.
DEFAULT_SEFA_VARIANT = "rosinality"
DEFAULT_SEFA_NUM = 16
DEFAULT_GANSPACE_SAMPLES = 10_000          # GANSpace's paper uses 10^6 with incremental PCA; 10^4 settles the first
                                           # components of a 512-d w (the covariance has 131 k entries)
DEFAULT_GANSPACE_COMPONENTS = 16
DEFAULT_GANSPACE_SEED = 0
MAX_GANSPACE_SAMPLES = 1_000_000
GANSPACE_CHUNK = 2000


def _check_count(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        raise LatentError(f"{name} must be a whole number in {low}..{high}, got {describe(value)}")
    return int(value)


def sefa_layers(G: Generator, variant: str, layers: Optional[tuple[int, int]] = None) -> list[str]:
    """Names of the style layers (`G.synthesis.style_layers()`) whose affines a SeFa variant factorises, in forward
    order, restricted to those reading w+ layers start..end-1 when `layers` is given.

    - 'rosinality' (`closed_form_factorization.py`): every modulated conv; its filter `'to_rgbs' not in key` also
      keeps `to_rgb1`, the 4 px ToRGB (b4.torgb here), and drops the other ToRGBs. StyleGAN3: every layer but ToRGB.
    - 'genforce' (`utils.factorize_weight`, layer 'all'): one affine per w+ index: the conv reading it, and for the
      last index the final ToRGB. StyleGAN3: every layer (its ToRGB reads the last index).
    - 'torgb' (dfl/ComfyUI-StyleGan `sefa.py`): every SynthesisLayer and every ToRGB.
    StyleGAN3's input affine (rotation/translation of the Fourier features, not a style) is never used."""
    if variant not in SEFA_VARIANTS:
        raise LatentError(f"SeFa variant must be one of {SEFA_VARIANTS}, got {describe(variant)}")
    layers = check_layer_range(layers, G.num_ws)
    style = [s for s in G.synthesis.style_layers() if s.name != "input"]
    if variant == "rosinality":
        first_torgb = next((s.name for s in style if s.is_torgb), None) if G.arch == "stylegan2" else None
        chosen = [s for s in style if not s.is_torgb or s.name == first_torgb]
    elif variant == "genforce":
        last = max(s.w_index for s in style)
        chosen = [s for s in style if not s.is_torgb or s.w_index == last]
    else:
        chosen = style
    if layers is not None:
        chosen = [s for s in chosen if layers[0] <= s.w_index < layers[1]]
    if not chosen:
        raise LatentError(f"no {variant} SeFa affine reads w+ layers {layers[0]}..{layers[1] - 1} of "
                          f"{G.info.name}; choose a wider layer range")
    return [s.name for s in chosen]


@torch.no_grad()
def sefa(G: Generator, *, variant: str = DEFAULT_SEFA_VARIANT, layers: Optional[tuple[int, int]] = None,
         num: int = DEFAULT_SEFA_NUM) -> Directions:
    """SeFa directions of `G` (Shen & Zhou, CVPR 2021, eq. 5: the directions n maximising ||A n|| are the top
    eigenvectors of AᵀA, A = the style affines' weights [channels, w_dim] stacked).

    variant: which affines and how (`sefa_layers` lists them):
        'rosinality': A = the affine weights concatenated along channels, directions = the right singular vectors
            (`torch.svd(A).V` columns; computed as the eigenvectors of AᵀA), by singular value;
        'genforce': the weights transposed [w_dim, channels] and concatenated, each channel's column L2-normalised,
            eigendecomposition of A Aᵀ, by eigenvalue;
        'torgb': every synthesis and ToRGB affine, eigh(AᵀA) without normalisation, by |eigenvalue|.
        (These are the same computation up to which rows enter A and the column normalisation.)
    layers: (start, end): only affines reading w+ layers start..end-1 (genforce's layer subset); also stored as the
        suggested range the directions are applied to. None: every layer.
    num: how many directions (1..w_dim), in order of decreasing singular value/eigenvalue.

    Returns unit vectors [num, w_dim] (scales 1), computed in float64, each signed so its largest-magnitude entry is
    positive (SVD/eigh signs are arbitrary); `info` holds the layer names and the eigenvalues (squared singular
    values for 'rosinality', so the three variants compare).
    """
    names = sefa_layers(G, variant, layers)
    num = _check_count(num, "num", 1, min(G.w_dim, MAX_DIRECTIONS))
    modules = dict(G.synthesis.named_modules())
    weights = [modules[n].affine.weight.detach().to("cpu", torch.float64) for n in names]  # [channels, w_dim] each
    A = torch.cat(weights, 0)
    if variant == "rosinality":
        # V of svd(A) = the eigenvectors of AᵀA, σ² its eigenvalues: one [w_dim, w_dim] eigh in float64 (exact
        # enough: AᵀA squares A's condition number, float64 keeps 1e-16 of it) instead of an SVD of [channels, w_dim]
        ev, ec = torch.linalg.eigh(A.t() @ A)
        order = torch.argsort(ev, descending=True)
        values, vecs = ev[order], ec[:, order].t()
    elif variant == "genforce":
        At = A.t()                                                  # [w_dim, channels]
        At = At / At.norm(dim=0, keepdim=True).clamp_min(1e-30)
        ev, ec = torch.linalg.eigh(At @ At.t())
        order = torch.argsort(ev, descending=True)
        values, vecs = ev[order], ec[:, order].t()
    else:
        ev, ec = torch.linalg.eigh(A.t() @ A)
        order = torch.argsort(ev.abs(), descending=True)
        values, vecs = ev[order], ec[:, order].t()
    vecs = vecs[:num]
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    flip = torch.sign(vecs.gather(1, vecs.abs().argmax(dim=1, keepdim=True)))
    vecs = vecs * flip
    info = {"source": "sefa", "variant": variant, "affines": names, "num": num,
            "eigenvalues": [float(v) for v in values[:num]],
            "layers": None if layers is None else list(layers)}
    return Directions(vecs.float(), tuple(f"sefa_{i:02d}" for i in range(num)), "w", "sefa", variant, None,
                      generator_ref(G), check_layer_range(layers, G.num_ws), info)


@torch.no_grad()
def ganspace(G: Generator, *, num_samples: int = DEFAULT_GANSPACE_SAMPLES,
             num_components: int = DEFAULT_GANSPACE_COMPONENTS, seed: int = DEFAULT_GANSPACE_SEED,
             layers: Optional[tuple[int, int]] = None, class_idx: Optional[int] = None,
             callback: Optional[Callable[[int, int], None]] = None) -> Directions:
    """GANSpace directions of `G` (Härkönen et al., NeurIPS 2020, sec. 3.1): PCA of w = mapping(z) for
    `num_samples` z ~ N(0, I) drawn with `torch.Generator().manual_seed(seed)` (no truncation).

    The covariance is accumulated in float64 chunk by chunk (memory does not grow with num_samples) and
    eigendecomposed; components are orthonormal, ordered by decreasing variance, each signed so its largest entry
    is positive, and scaled to one standard deviation: vectors[k] = σ_k u_k, scales[k] = σ_k (strength 1 = 1σ, the
    unit of GANSpace's sliders and dfl's files).

    layers: (start, end) suggested w+ layers the directions are applied to (GANSpace's E(u_i, start-end) edits);
        PCA itself is of w, the same for every layer.
    class_idx: the class of a conditional generator (None = each sample a random class).
    callback(done, total): after each chunk (may raise to cancel).
    `info` holds num_samples, seed, the variance ratio of each component and the total variance.
    """
    num_samples = _check_count(num_samples, "num_samples", 2, MAX_GANSPACE_SAMPLES)
    num_components = _check_count(num_components, "num_components", 1, min(G.w_dim, MAX_DIRECTIONS))
    seed = _check_count(seed, "seed", 0, 2 ** 63 - 1)
    layers = check_layer_range(layers, G.num_ws)
    if G.c_dim and class_idx is not None and not 0 <= int(class_idx) < G.c_dim:
        raise LatentError(f"class_idx must be in 0..{G.c_dim - 1} for {G.info.name}, got {class_idx}")
    _, cov = mapped_w_covariance(G, num_samples, seed=seed, chunk=GANSPACE_CHUNK, class_idx=class_idx,
                                 callback=callback)
    ev, ec = torch.linalg.eigh(cov)
    order = torch.argsort(ev, descending=True)[:num_components]
    var, comps = ev[order].clamp_min(0), ec[:, order].t()
    comps = comps / comps.norm(dim=1, keepdim=True)
    flip = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * flip
    sigma = var.sqrt()
    if (sigma <= 0).any() or not torch.isfinite(sigma).all():
        raise LatentError(f"w of {G.info.name} has no variance along {int((sigma <= 0).sum())} of the "
                          f"{num_components} requested components; ask for fewer components or more samples")
    total_var = float(ev.clamp_min(0).sum())
    info = {"source": "ganspace", "num_samples": num_samples, "seed": seed, "num_components": num_components,
            "class_idx": class_idx, "var_ratio": [float(v) / total_var for v in var], "total_variance": total_var,
            "layers": None if layers is None else list(layers)}
    return Directions((comps * sigma[:, None]).float(), tuple(f"ganspace_{i:02d}" for i in range(num_components)),
                      "w", "ganspace", "", sigma.float(), generator_ref(G), layers, info)


__all__ = ["sefa", "sefa_layers", "ganspace", "DEFAULT_SEFA_VARIANT", "DEFAULT_SEFA_NUM", "DEFAULT_GANSPACE_SAMPLES",
           "DEFAULT_GANSPACE_COMPONENTS", "DEFAULT_GANSPACE_SEED", "MAX_GANSPACE_SAMPLES"]
