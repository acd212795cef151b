"""Latents: sampling from seeds, mapping, synthesis, interpolation, style mixing, and latent files."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .config import ARCHS, MAX_C_DIM, MAX_CHANNELS, MAX_FEATURES, MAX_IMG_CHANNELS, MAX_SG3_LAYERS
from .errors import CheckpointError, LatentError, LatentFileError
from .files import describe, meta_field, read_safetensors, write_safetensors
from .log import logger
from .networks import Generator

SPACES = ("z", "w", "w+")                  # spaces latents are sampled in
LATENT_SPACES = SPACES + ("s", "fs")      # plus StyleSpace S, made by S-space edits (see core.networks.style_space),
                                           # and Barbershop's FS space (F features at 32 px + the later w codes)
SEED_MODES = ("nvidia", "torch")
INTERPOLATION_METHODS = ("auto", "lerp", "slerp")
STYLE_MIX_PRESETS = ("coarse", "middle", "fine")
LATENT_FORMAT = "stylegan-studio-latent"

# Defaults shared by core functions and node schemas.
DEFAULT_TRUNCATION_PSI = 1.0
DEFAULT_NOISE_MODE = "const"
DEFAULT_CHUNK_SIZE = 4

# The most latents one request may make or hold: a seed list, a batch, interpolation frames (pairs x frames), a
# latent file. 10,000 w+ latents of a 1024 px model are 0.37 GB, their images far more; a longer video is made in
# parts. Every producer checks its count against this before it allocates anything (`check_latent_count`).
MAX_LATENTS = 10_000
MAX_TRUNCATION_PSI = 10.0                  # the nodes offer -2..2; far beyond, w leaves the range the network saw
MAX_NUM_WS = 2 * MAX_SG3_LAYERS + 2        # w+ layers of the largest architecture config.py accepts, with margin
MAX_S_DIM = MAX_NUM_WS * 2 * MAX_CHANNELS  # S channels: at most two style vectors of MAX_CHANNELS per w layer
MAX_SEED = 2 ** 32 - 1                     # numpy's RandomState (NVIDIA's seed mode) takes seeds 0..2**32 - 1

# FS latents (Barbershop, Zhu et al. 2021): F = the features after the 32 px block, S = the w codes the blocks after
# it read. Two conventions for the RGB skip accumulated up to 32 px ('skip' architecture): 'drop' (Barbershop: the
# image is the sum of the ToRGB outputs after 32 px) and 'keep' (the skip is stored with F: F + S of a W+ latent
# reproduce its image exactly).
FS_RESOLUTION = 32
FS_SKIPS = ("drop", "keep")
DEFAULT_FS_SKIP = "drop"                   # Barbershop's convention (what its FS embedding optimises)
FS_MIN_NUM_WS = 10                         # StyleGAN2 at 64 px, the smallest with a block after the 32 px one


@dataclass(frozen=True)
class GeneratorRef:
    """What a latent remembers about the generator it was made with."""

    name: str
    fingerprint: str                       # Hash of the architecture and a few weights.
    arch: str
    z_dim: int
    w_dim: int
    num_ws: int
    c_dim: int
    s_dim: int = 0                         # S channels (core.networks.style_space); 0 in files written before S latents

    def __post_init__(self) -> None:
        # A reference read from a file is checked field by field: a string w_dim would otherwise surface later as
        # a puzzling shape mismatch ("must have shape [N, '512']").
        for name, longest in (("name", 1000), ("fingerprint", 128), ("arch", 32)):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"generator field {name!r} must be a string, got {describe(getattr(self, name))}")
            if len(getattr(self, name)) > longest:
                raise ValueError(f"generator field {name!r} is {len(getattr(self, name)):,} characters long (at "
                                 f"most {longest})")
        if self.arch not in ARCHS:
            raise ValueError(f"generator field 'arch' must be one of {ARCHS}, got {describe(self.arch)}")
        for name, low, high in (("z_dim", 1, MAX_FEATURES), ("w_dim", 1, MAX_FEATURES), ("num_ws", 1, MAX_NUM_WS),
                                ("c_dim", 0, MAX_C_DIM), ("s_dim", 0, MAX_S_DIM)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"generator field {name!r} must be a whole number in {low}..{high}, got "
                                f"{describe(value)}")
            if not low <= value <= high:
                raise ValueError(f"generator field {name!r} must be a whole number in {low}..{high}, got "
                                 f"{describe(value)}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @staticmethod
    def from_json(text: str) -> "GeneratorRef":
        """The reference `json.dumps(ref.to_dict())` describes. ValueError when the text is not a JSON object or a
        value is out of range, TypeError when a field is missing, unknown or of the wrong type."""
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
        known = {f for f in GeneratorRef.__dataclass_fields__}
        unknown = sorted(map(str, set(fields) - known))
        missing = sorted(known - set(fields) - {"s_dim"})  # s_dim: absent in files written before S latents
        if unknown or missing:
            raise TypeError(f"expected the fields {sorted(known)}; " +
                             "; ".join(f"{label} {names}" for label, names in (("unknown:", unknown),
                                                                               ("missing:", missing)) if names))
        return GeneratorRef(**fields)


@dataclass(frozen=True)
class Latent:
    """A batch of latents in one space, tied to the generator that defines it.

    tensor: z `[N, z_dim]`, w `[N, w_dim]`, w+ `[N, num_ws, w_dim]`, or s `[N, s_dim]` (StyleSpace: every
        layer's style in `core.networks.style_space.flatten_s` order, as `G.synthesis.w_to_s` makes it), float32.
        fs: the whole w+ `[N, num_ws, w_dim]`; the blocks after 32 px read entries `fs_first_w(G)` (7) onwards,
        Barbershop's S codes. The earlier entries are the W+ codes F was made from: they do not change the image
        of the fs latent, and keep fs -> w+ possible (`convert_latent`).
    c: labels `[N, c_dim]` for conditional generators (used when mapping z), else None.
    truncation_psi / truncation_cutoff: applied when a z latent is mapped.
    features: fs only: F `[N, C, 32, 32]` float32, the features after the 32 px block
        (`G.synthesis.run(ws, stop=32).x`; C = the block's channels, 512 for FFHQ models).
    features_img: fs only: the RGB skip at 32 px `[N, img_channels, 32, 32]` float32 (`run(...).img`) for the
        'keep' convention, or None for Barbershop's 'drop' convention (the skip up to 32 px is dropped:
        `run(ws, start=32, x=F, drop_skip=True)`). Always None for 'orig'/'resnet' networks, which have no skip
        before their last block (both conventions render alike there).
    """

    tensor: torch.Tensor
    space: str
    generator: GeneratorRef
    c: Optional[torch.Tensor] = None
    truncation_psi: float = DEFAULT_TRUNCATION_PSI
    truncation_cutoff: Optional[int] = None
    features: Optional[torch.Tensor] = None
    features_img: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.space not in LATENT_SPACES:
            raise LatentError(f"latent space must be one of {LATENT_SPACES}, got {self.space!r}")
        g = self.generator
        if self.space == "s" and g.s_dim <= 0:
            raise LatentError(f"an s latent needs the S channel count of {g.name}; make it with "
                              f"core.latents.styles_to_latent")
        if not isinstance(self.tensor, torch.Tensor) or not self.tensor.is_floating_point():
            kind = self.tensor.dtype if isinstance(self.tensor, torch.Tensor) else type(self.tensor).__name__
            raise LatentError(f"a latent must be a floating-point tensor, got {kind}")
        expected = {"z": [g.z_dim], "w": [g.w_dim], "w+": [g.num_ws, g.w_dim], "s": [g.s_dim],
                    "fs": [g.num_ws, g.w_dim]}[self.space]
        if self.tensor.ndim != len(expected) + 1 or list(self.tensor.shape[1:]) != expected:
            raise LatentError(f"a {self.space} latent for {g.name} must have shape [N, "
                              f"{', '.join(map(str, expected))}], got {list(self.tensor.shape)}")
        if self.tensor.shape[0] == 0:
            raise LatentError("the latent is empty (a batch of 0); sample, load or invert at least one latent")
        if self.tensor.shape[0] > MAX_LATENTS:
            raise LatentError(f"a latent batch holds at most {MAX_LATENTS:,} latents (a cap that keeps one input from "
                              f"filling memory), got {self.tensor.shape[0]:,}; split the work into smaller batches")
        if not torch.isfinite(self.tensor).all():
            raise LatentError("the latent contains NaN or infinite values; re-create it (an optimisation "
                              "that diverged produces these)")
        check_truncation(self.truncation_psi, self.truncation_cutoff, g.num_ws)
        self._check_features()
        if self.c is not None:
            n = self.tensor.shape[0]
            if not isinstance(self.c, torch.Tensor) or not self.c.is_floating_point():
                raise LatentError(f"class labels c must be a floating-point tensor, got "
                                  f"{getattr(self.c, 'dtype', type(self.c).__name__)}")
            if self.c.ndim != 2 or self.c.shape[1] != g.c_dim or self.c.shape[0] not in (1, n):
                raise LatentError(f"class labels c for {g.name} must have shape [{n} or 1, {g.c_dim}], got "
                                  f"{list(self.c.shape)}")
            if not torch.isfinite(self.c).all():
                raise LatentError("the class labels c contain NaN or infinite values; labels are one-hot rows "
                                  "(choose the class again)")

    def _check_features(self) -> None:
        if self.space != "fs":
            if self.features is not None or self.features_img is not None:
                raise LatentError(f"only fs latents carry features (F); this is a {self.space} latent")
            return
        g, n = self.generator, self.tensor.shape[0]
        if g.arch != "stylegan2" or g.num_ws < FS_MIN_NUM_WS:
            raise LatentError(f"an fs latent needs a StyleGAN2 generator of at least 64 px (num_ws >= "
                              f"{FS_MIN_NUM_WS}), but {g.name} is {g.arch} with num_ws {g.num_ws}")
        for name, t, low, high in (("features", self.features, 1, MAX_CHANNELS),
                                   ("features_img", self.features_img, 1, MAX_IMG_CHANNELS)):
            if t is None:
                if name == "features":
                    raise LatentError("an fs latent needs its features F [N, C, 32, 32]; make it with "
                                      "core.latents.fs_from_wplus or core.edits.fs_embedding.embed_fs")
                continue
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise LatentError(f"fs latent {name} must be a floating-point tensor, got {kind}")
            if t.ndim != 4 or t.shape[0] != n or not low <= t.shape[1] <= high or \
                    tuple(t.shape[2:]) != (FS_RESOLUTION, FS_RESOLUTION):
                raise LatentError(f"fs latent {name} must have shape [{n}, C, {FS_RESOLUTION}, {FS_RESOLUTION}] with "
                                  f"C in {low}..{high} (one entry per latent of the batch), got {list(t.shape)}")
            if not torch.isfinite(t).all():
                raise LatentError(f"fs latent {name} contains NaN or infinite values; re-create it (an "
                                  f"optimisation that diverged produces these)")

    @property
    def batch_size(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def fs_skip(self) -> Optional[str]:
        """fs latents: 'keep' when the RGB skip at 32 px is stored (`features_img`), else 'drop'; None otherwise."""
        if self.space != "fs":
            return None
        return "drop" if self.features_img is None else "keep"

    def describe(self) -> str:
        extra = f", skip '{self.fs_skip}'" if self.space == "fs" else ""
        return f"{self.batch_size} x {self.space} latent for {self.generator.name} ({self.generator.arch}{extra})"


def check_latent_count(count: int, what: str, *, split: str = "") -> int:
    """`count` when it is at most MAX_LATENTS; LatentError saying the cap and how to split the work otherwise.

    Called with the count a request *asks for*, before anything is allocated. `what` names the request ("the
    seed list '0-99999'"); `split` says how to split it (a default is given).
    """
    count = int(count)
    if count > MAX_LATENTS:
        split = split or f"make them in parts of at most {MAX_LATENTS:,}"
        raise LatentError(f"{what} asks for {count:,} latents, more than the {MAX_LATENTS:,} one request may make "
                          f"(a cap that keeps one input from filling memory); {split}")
    return count


def check_truncation(truncation_psi: float, truncation_cutoff: Optional[int], num_ws: int) -> None:
    """LatentError unless psi is a number in ±MAX_TRUNCATION_PSI and the cutoff None or a whole number in
    0..num_ws."""
    if isinstance(truncation_psi, bool) or not isinstance(truncation_psi, numbers.Real) or \
            not math.isfinite(truncation_psi) or abs(truncation_psi) > MAX_TRUNCATION_PSI:
        raise LatentError(f"truncation_psi must be a number in -{MAX_TRUNCATION_PSI:g}..{MAX_TRUNCATION_PSI:g} (1 = no "
                          f"truncation, 0 = the average face; beyond ±2 the image only saturates), got "
                          f"{describe(truncation_psi)}")
    if truncation_cutoff is not None and (isinstance(truncation_cutoff, bool) or
                                          not isinstance(truncation_cutoff, numbers.Integral) or
                                          not 0 <= truncation_cutoff <= num_ws):
        raise LatentError(f"truncation_cutoff must be empty (every layer) or a whole number in 0..{num_ws} "
                          f"(the generator's num_ws), got {truncation_cutoff!r}")


def generator_ref(G: Generator) -> GeneratorRef:
    """The identity of `G` that latents carry (computed once and cached on `G.info`)."""
    from .networks.style_space import s_channel_count

    fp = G.info.extra.get("_fingerprint")
    if fp is None:
        h = hashlib.sha256(G.config.to_json().encode())
        for name, t in G.state_dict().items():
            if name.endswith(("w_avg", "const", "fc0.weight", "input.weight")):
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        fp = h.hexdigest()[:16]
        G.info.extra["_fingerprint"] = fp
    return GeneratorRef(name=G.info.name, fingerprint=fp, arch=G.arch, z_dim=G.z_dim, w_dim=G.w_dim,
                        num_ws=G.num_ws, c_dim=G.c_dim, s_dim=s_channel_count(G))


_weights_digests: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # generator -> weights_digest


def weights_digest(G: Generator) -> str:
    """SHA-256 (hex) of G's architecture and of every tensor of its state dict, as float32: equal only for the same
    weights. `generator_ref`'s fingerprint hashes a few tensors only, so a delta or weight shift that changes other
    layers keeps it (latents move between the two freely); this tells such a copy from its base. Computed once per
    generator object (the pack never modifies a generator in place: edits make copies)."""
    digest = _weights_digests.get(G)
    if digest is None:
        h = hashlib.sha256(G.config.to_json().encode())
        with torch.no_grad():
            for name, t in sorted(G.state_dict().items()):
                h.update(name.encode())
                h.update(str(tuple(t.shape)).encode())
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        digest = _weights_digests[G] = h.hexdigest()
    return digest


def check_compatible(latent: Latent, G: Generator) -> None:
    """Raise LatentError if `latent` cannot drive `G`; log when it comes from a different but compatible model."""
    ref, g = latent.generator, generator_ref(G)
    if latent.space == "fs":
        check_fs_generator(G)
    if latent.space == "fs":
        kept = latent.features_img is not None
        f_ch, img_ch = fs_channels(G)
        needed = ("num_ws x w_dim x F channels" + (" x image channels" if kept else ""),
                  (ref.num_ws, ref.w_dim, int(latent.features.shape[1])) +
                  ((int(latent.features_img.shape[1]),) if kept else ()),
                  (g.num_ws, g.w_dim, f_ch) + ((img_ch,) if kept else ()))
    else:
        needed = {"z": ("z_dim", ref.z_dim, g.z_dim), "w": ("w_dim", ref.w_dim, g.w_dim),
                  "w+": ("num_ws x w_dim", (ref.num_ws, ref.w_dim), (g.num_ws, g.w_dim)),
                  "s": ("S channels", ref.s_dim, g.s_dim)}[latent.space]
    if needed[1] != needed[2]:
        raise LatentError(
            f"this {latent.space} latent was made for {ref.name} ({needed[0]} {needed[1]}), but {g.name} needs "
            f"{needed[0]} {needed[2]}; sample or invert a latent with {g.name}, or load {ref.name}")
    if latent.space == "z" and ref.c_dim != g.c_dim:
        raise LatentError(f"this z latent was made for {ref.name} with {ref.c_dim} labels, but {g.name} has {g.c_dim}")
    if latent.truncation_cutoff is not None and latent.truncation_cutoff > g.num_ws:  # the file's own num_ws said yes
        raise LatentError(f"this latent truncates its first {latent.truncation_cutoff} layers, but {g.name} has "
                          f"{g.num_ws}; save the latent again with a cutoff in 0..{g.num_ws}")
    if ref.fingerprint != g.fingerprint:
        logger.warning("this latent was made with %s; %s has the same shape but other weights, so it gives another "
                       "image (use the generator the latent was made with, or ignore this for a deliberate transfer)",
                       ref.name, g.name)


# --- FS latents (Barbershop) ----------------------------------------------------------------------

def check_fs_generator(G: Generator) -> None:
    """LatentError unless `G` has the 32 px block FS latents start from and blocks after it (StyleGAN2 >= 64 px)."""
    if G.arch != "stylegan2":
        raise LatentError(f"{G.info.name} is {G.arch}: FS latents (Barbershop's F/S space) need the features after "
                          f"a 32 px block, which only StyleGAN2 has (StyleGAN3's layers are not organised in "
                          f"resolution blocks); use a StyleGAN2 generator of at least 64 px, or a w+ latent")
    if FS_RESOLUTION not in G.synthesis.stages or G.img_resolution <= FS_RESOLUTION:
        raise LatentError(f"{G.info.name} renders at {G.img_resolution} px: FS latents replace the output of the "
                          f"{FS_RESOLUTION} px block and need blocks after it; use a StyleGAN2 generator of at least "
                          f"{2 * FS_RESOLUTION} px, or a w+ latent")


def fs_first_w(G: Generator) -> int:
    """Index of the first w the blocks after 32 px read (7 for every StyleGAN2: S = ws[:, 7:], 11 codes at
    1024 px as in Barbershop, num_ws - 7 in general). The 32 px block's ToRGB reads this w too; with the 'keep'
    convention its output is stored in `features_img` and no longer depends on it."""
    check_fs_generator(G)
    w_idx = 0
    for res in G.synthesis.block_resolutions:
        if res > FS_RESOLUTION:
            return w_idx
        w_idx += getattr(G.synthesis, f"b{res}").num_conv
    raise AssertionError("check_fs_generator admitted a generator without a block after 32 px")


def fs_channels(G: Generator) -> tuple[int, int]:
    """(channels of F, image channels) of `G`'s fs latents."""
    check_fs_generator(G)
    return int(getattr(G.synthesis, f"b{FS_RESOLUTION}").conv1.out_channels), int(G.synthesis.img_channels)


def fs_from_wplus(G: Generator, latent: Latent, skip: str = DEFAULT_FS_SKIP) -> Latent:
    """The fs latent of a z, w or w+ latent (on CPU): F = `G.synthesis.run(ws, stop=32).x` with the stored noise
    maps (noise_mode 'const'), the codes = its whole w+.

    skip: 'keep' stores the RGB skip at 32 px (`features_img`): rendering the fs latent gives exactly the W+ image.
        'drop' (Barbershop) drops it: the image is the sum of the ToRGB outputs after 32 px, which differs from the
        W+ image by the upsampled skip (a blurry low-frequency image) on 'skip' networks; Barbershop's FS embedding
        (`core.edits.fs_embedding.embed_fs`) then optimises F and S to fit the target without it.
    """
    if skip not in FS_SKIPS:
        raise LatentError(f"skip must be one of {FS_SKIPS} ('drop': Barbershop's convention; 'keep': the W+ image "
                          f"exactly), got {skip!r}")
    if latent.space == "fs":
        raise LatentError("this latent is already an fs latent; convert it to w+ first to make a new F from its codes")
    check_fs_generator(G)
    ws = latent_to_ws(G, latent)
    features, images = [], []
    with torch.no_grad():
        for start in range(0, len(ws), DEFAULT_CHUNK_SIZE):
            state = G.synthesis.run(ws[start:start + DEFAULT_CHUNK_SIZE], stop=FS_RESOLUTION, noise_mode="const",
                                    force_fp32=True)
            features.append(state.x.to("cpu", torch.float32).contiguous())
            if state.img is not None:
                images.append(state.img.to("cpu", torch.float32).contiguous())
    img = torch.cat(images) if skip == "keep" and images else None
    return Latent(ws.detach().to("cpu", torch.float32).contiguous(), "fs", generator_ref(G), latent.c,
                  features=torch.cat(features), features_img=img)


def synthesize_fs(G: Generator, ws: torch.Tensor, features: torch.Tensor, features_img: Optional[torch.Tensor] = None,
                  **kwargs) -> torch.Tensor:
    """Render F `[N, C, 32, 32]` (+ the 'keep' skip `[N, img_channels, 32, 32]` or None for 'drop') with the codes
    ws `[N, num_ws, w_dim]` (only entries `fs_first_w(G)` onwards are read) to `[N, img_channels, R, R]` float32.
    Differentiable in F and ws (the FS embedding uses it); `kwargs` go to `G.synthesis.run` (noise_mode, noise,
    generator, force_fp32)."""
    drop = features_img is None
    return G.synthesis.run(ws, start=FS_RESOLUTION, x=features, img=None if drop else features_img,
                           drop_skip=drop and G.synthesis.architecture == "skip", **kwargs).img


def seeds_to_z(seeds: Sequence[int], z_dim: int, *, seed_mode: str = "nvidia") -> torch.Tensor:
    """z `[len(seeds), z_dim]` float32 from integer seeds (1..MAX_LATENTS of them, each 0..MAX_SEED).

    seed_mode 'nvidia' reproduces NVIDIA's gen_images.py / generate.py exactly
    (`np.random.RandomState(seed).randn(1, z_dim)`); 'torch' uses `torch.Generator().manual_seed(seed)`.
    """
    if seed_mode not in SEED_MODES:
        raise ValueError(f"seed_mode must be one of {SEED_MODES}, got {seed_mode!r}")
    if not len(seeds):
        raise LatentError("no seeds given: at least one seed is needed")
    check_latent_count(len(seeds), f"a list of {len(seeds):,} seeds")  # before the list is copied
    seeds = list(seeds)
    for seed in seeds:
        if not 0 <= int(seed) <= MAX_SEED:
            raise LatentError(f"seed {int(seed)} is outside 0..{MAX_SEED} (2**32 - 1), the seeds NVIDIA's seed "
                              f"mode (numpy RandomState) accepts; choose a seed in that range")
    rows = []
    for seed in map(int, seeds):
        if seed_mode == "nvidia":
            rows.append(torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float())
        else:
            rows.append(torch.randn([1, z_dim], generator=torch.Generator().manual_seed(seed)))
    return torch.cat(rows)


def batch_seeds(seed: int, batch_size: int) -> list[int]:
    """[seed, seed + 1, ..., seed + batch_size - 1], with the count and the last seed checked before the list is
    made (LatentError saying which input to change)."""
    seed, batch_size = int(seed), int(batch_size)
    if batch_size < 1:
        raise LatentError(f"batch_size must be at least 1, got {batch_size}")
    check_latent_count(batch_size, f"batch_size {batch_size:,}", split=f"use a batch_size of at most "
                                                                     f"{MAX_LATENTS:,} and several runs")
    if not 0 <= seed <= MAX_SEED:
        raise LatentError(f"seed {seed} is outside 0..{MAX_SEED} (2**32 - 1), the seeds NVIDIA's seed mode (numpy "
                          f"RandomState) accepts; choose a seed in that range")
    if seed + batch_size - 1 > MAX_SEED:
        raise LatentError(f"seed {seed} with batch_size {batch_size} runs past the largest seed {MAX_SEED} "
                          f"(2**32 - 1); choose a seed of at most {MAX_SEED - batch_size + 1}")
    return list(range(seed, seed + batch_size))


SEED_SYNTAX = "write seeds like '1,2,5-8' (whole numbers 0..4294967295; a range 'low-high' includes both ends)"
_SEED_PART = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?")  # ASCII digits only: int() would read '²' or '٣'


def _seed_value(digits: str, part: str) -> int:
    # Length first: int() of thousands of digits is slow (and refused by Python >= 3.11 past 4300 digits).
    if len(digits.lstrip("0")) > len(str(MAX_SEED)) or int(digits) > MAX_SEED:
        raise LatentError(f"seed {digits if len(digits) <= 20 else digits[:20] + '...'} in {part[:40]!r} is larger "
                          f"than {MAX_SEED} (2**32 - 1), the largest seed NVIDIA's seed mode (numpy RandomState) "
                          f"accepts; {SEED_SYNTAX}")
    return int(digits)


def parse_seeds(text: str) -> list[int]:
    """Parse '1,2,5-8' into [1, 2, 5, 6, 7, 8].

    Seeds are whole numbers 0..MAX_SEED; ranges go upwards and include both ends. The whole list may ask for at
    most MAX_LATENTS seeds: the count is checked before any list is built. LatentError (a ValueError) names the
    part that cannot be read.
    """
    ranges: list[tuple[int, int]] = []  # every part is read and checked before any seed list is made
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        m = _SEED_PART.fullmatch(part)
        if m is None:
            if re.fullmatch(r"-\s*[0-9]+(\s*-\s*-?\s*[0-9]+)?", part):
                raise LatentError(f"seed {part!r} is negative; {SEED_SYNTAX}")
            raise LatentError(f"cannot read seed {part[:40]!r}; {SEED_SYNTAX}")
        lo = _seed_value(m.group(1), part)
        hi = lo if m.group(2) is None else _seed_value(m.group(2), part)
        if hi < lo:
            raise LatentError(f"seed range {part!r} goes downwards; write it low-high: '{hi}-{lo}'")
        ranges.append((lo, hi))
    text = str(text)
    check_latent_count(sum(hi - lo + 1 for lo, hi in ranges), f"the seed list {text[:60]!r}" +
                       ("..." if len(text) > 60 else ""),
                       split=f"split it into several lists of at most {MAX_LATENTS:,} seeds (e.g. "
                             f"'0-{MAX_LATENTS - 1}', then '{MAX_LATENTS}-{2 * MAX_LATENTS - 1}') and run them "
                             f"one after another")
    if not ranges:
        raise LatentError(f"no seeds given; {SEED_SYNTAX}")
    return [seed for lo, hi in ranges for seed in range(lo, hi + 1)]


def class_labels(G: Generator, class_idx: Optional[int], n: int) -> Optional[torch.Tensor]:
    """One-hot labels `[n, c_dim]` for conditional generators, None for unconditional ones."""
    if G.c_dim == 0:
        return None
    if class_idx is None or not 0 <= int(class_idx) < G.c_dim:
        raise LatentError(f"{G.info.name} is conditional with {G.c_dim} classes: choose a class index "
                          f"0..{G.c_dim - 1} (got {class_idx})")
    c = torch.zeros([n, G.c_dim])
    c[:, int(class_idx)] = 1
    return c


def sample_latents(G: Generator, seeds: Sequence[int], *, space: str = "w",
                   truncation_psi: float = DEFAULT_TRUNCATION_PSI, truncation_cutoff: Optional[int] = None,
                   seed_mode: str = "nvidia", class_idx: Optional[int] = None) -> Latent:
    """Latents for `seeds` in `space` ('z', 'w' or 'w+'); truncation psi/cutoff as in NVIDIA's mapping.

    A 'w' request with a truncation cutoff returns w+ (layers then differ). For 'z' the truncation is
    stored and applied whenever the latent is mapped.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}; for S, convert a w latent with "
                         f"convert_latent(G, latent, 's')")
    # Checked before the seeds are turned into z, so a bad value costs nothing and never renders NaN images.
    check_truncation(truncation_psi, truncation_cutoff, G.num_ws)
    z = seeds_to_z(seeds, G.z_dim, seed_mode=seed_mode)
    c = class_labels(G, class_idx, len(z))
    ref = generator_ref(G)
    if space == "z":
        return Latent(z, "z", ref, c, float(truncation_psi), truncation_cutoff)
    device = G.w_avg.device
    with torch.no_grad():
        ws = G.mapping(z.to(device), None if c is None else c.to(device), truncation_psi=truncation_psi,
                       truncation_cutoff=truncation_cutoff).cpu()
    if space == "w" and (truncation_cutoff is None or truncation_psi == 1 or truncation_cutoff >= G.num_ws):
        return Latent(ws[:, 0].contiguous(), "w", ref, c)
    return Latent(ws, "w+", ref, c)


def latent_to_ws(G: Generator, latent: Latent) -> torch.Tensor:
    """ws `[N, num_ws, w_dim]` on G's device for a z, w or w+ latent (maps z, broadcasts w).

    An s latent has no W+ equivalent (S-space edits move each layer's style off the affine image of W): it raises
    LatentError; render it with `synthesize`, or edit it further with S-space tools.
    """
    check_compatible(latent, G)
    if latent.space == "s":
        raise LatentError("this is an S (StyleSpace) latent, made by an S-space edit; it has no w/w+ form. Render it "
                          "with Synthesize, or give this node the w/w+ latent from before the edit")
    if latent.space == "fs":
        raise LatentError("this is an fs latent (Barbershop's F features + S codes); its image needs F, which this "
                          "operation cannot use. Render it with Synthesize, or convert it to w+ first "
                          "(core.latents.convert_latent; the image then loses what F adds)")
    device = G.w_avg.device
    t = latent.tensor.to(device=device, dtype=torch.float32)
    if latent.space == "z":
        c = None if latent.c is None else latent.c.to(device)
        if G.c_dim and c is None:
            raise LatentError(f"{G.info.name} is conditional: this z latent carries no class labels")
        with torch.no_grad():
            return G.mapping(t, c, truncation_psi=latent.truncation_psi, truncation_cutoff=latent.truncation_cutoff)
    if latent.space == "w":
        return t.unsqueeze(1).repeat([1, G.num_ws, 1])
    return t


def latent_to_styles(G: Generator, latent: Latent) -> dict[str, torch.Tensor]:
    """S `{layer name: [N, channels]}` float32 on G's device (`G.synthesis.w_to_s` order) for any latent."""
    check_compatible(latent, G)
    if latent.space == "s":
        from .networks.style_space import unflatten_s

        return unflatten_s(G, latent.tensor.to(device=G.w_avg.device, dtype=torch.float32))
    with torch.no_grad():
        return G.synthesis.w_to_s(latent_to_ws(G, latent))


def styles_to_latent(G: Generator, styles: Union[dict, torch.Tensor], c: Optional[torch.Tensor] = None) -> Latent:
    """An s latent (on CPU) from S of `G`: a complete `w_to_s` dict or its flat `[N, s_dim]` form."""
    from .networks.style_space import flatten_s, s_layout

    if isinstance(styles, dict):
        G.synthesis.check_styles(styles, complete=True)
        flat = flatten_s({layer.name: styles[layer.name].to("cpu") for layer in s_layout(G)})
    else:
        flat = styles
    return Latent(flat.detach().to("cpu", torch.float32).contiguous(), "s", generator_ref(G), c)


def convert_latent(G: Generator, latent: Latent, space: str) -> Latent:
    """Express `latent` in `space` ('w', 'w+', 's' or 'fs'; z cannot be recovered from w, nor w from s).

    To 'fs': `fs_from_wplus` with the default skip convention ('drop'). From 'fs': its w+ codes (F is dropped, so
    the image is that of the W+ codes, not the fs latent's)."""
    if space == latent.space:
        return latent
    if space == "fs":
        return fs_from_wplus(G, latent)
    if latent.space == "fs":
        check_compatible(latent, G)
        latent = Latent(latent.tensor, "w+", latent.generator, latent.c)
    if space == "s":
        return styles_to_latent(G, {k: v.cpu() for k, v in latent_to_styles(G, latent).items()}, latent.c)
    if space == "z":
        raise LatentError("a w or w+ latent cannot be turned back into z (the mapping is not invertible); "
                          "interpolate in W instead")
    ws = latent_to_ws(G, latent).cpu()
    if space == "w":
        if not torch.allclose(ws, ws[:, :1].expand_as(ws)):
            raise LatentError("this w+ latent has different codes per layer; it cannot be reduced to one w")
        return Latent(ws[:, 0].contiguous(), "w", generator_ref(G), latent.c)
    return Latent(ws, "w+", generator_ref(G), latent.c)


def synthesize(G: Generator, latent: Latent, *, noise_mode: str = DEFAULT_NOISE_MODE,
               chunk_size: int = DEFAULT_CHUNK_SIZE, noise_seed: Optional[int] = None, force_fp32: Optional[bool] = None,
               callback: Optional[Callable[[int, int], None]] = None,
               on_chunk: Optional[Callable[[torch.Tensor], None]] = None) -> torch.Tensor:
    """Render `latent` to images `[N, C, R, R]` float32 in about [-1, 1], on CPU.

    s latents render through `G.synthesis.from_s`, fs latents from their F (`synthesize_fs`).
    Works in chunks of `chunk_size` latents to bound memory; `callback(done, total)` after each chunk
    (it may raise to cancel), after `on_chunk(images)` with the chunk's images (e.g. for a live preview). `noise_seed` makes noise_mode 'random' reproducible. `force_fp32` None
    follows `G.precision`.
    """
    if latent.space in ("s", "fs"):
        check_compatible(latent, G)
        ws = latent.tensor.to(device=G.w_avg.device, dtype=torch.float32)  # flat S / fs codes, split per chunk below
    else:
        ws = latent_to_ws(G, latent)
    chunk_size = max(1, int(chunk_size))
    gen = None
    if noise_mode == "random" and noise_seed is not None:
        gen = torch.Generator(device=ws.device).manual_seed(int(noise_seed))
    out = []
    with torch.no_grad():
        for start in range(0, len(ws), chunk_size):
            chunk = ws[start:start + chunk_size]
            kwargs = dict(noise_mode=noise_mode, generator=gen, force_fp32=force_fp32)
            if latent.space == "s":
                from .networks.style_space import unflatten_s

                out.append(G.synthesis.from_s(unflatten_s(G, chunk), **kwargs).cpu())
            elif latent.space == "fs":
                part = slice(start, start + chunk_size)
                img = None if latent.features_img is None else latent.features_img[part].to(ws.device)
                out.append(synthesize_fs(G, chunk, latent.features[part].to(ws.device), img, **kwargs).cpu())
            else:
                out.append(G.synthesis(chunk, **kwargs).cpu())
            if on_chunk is not None:  # e.g. a live preview of a long batch
                on_chunk(out[-1])
            if callback is not None:
                callback(min(start + chunk_size, len(ws)), len(ws))
    return torch.cat(out)


# --- Interpolation --------------------------------------------------------------------------------

def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation along the last axis; falls back to lerp where a and b (nearly) coincide.

    Unlike NVIDIA's slerp it keeps the vectors' lengths (no normalisation), so slerp(a, b, 0) == a.
    `t` broadcasts against the leading axes.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()
    an = a64 / a64.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bn = b64 / b64.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    safe = so > eps
    so_safe = torch.where(safe, so, torch.ones_like(so))
    s = torch.where(safe, torch.sin((1 - t64) * omega) / so_safe, 1 - t64)
    e = torch.where(safe, torch.sin(t64 * omega) / so_safe, t64)
    return (s * a64 + e * b64).to(a.dtype)


def interpolation_times(num_frames: int, pairs: int = 1) -> torch.Tensor:
    """t_i = i / (num_frames - 1): both endpoints included.

    `pairs` x `num_frames` latents will be made from these times: more than MAX_LATENTS is refused here, before
    anything is computed.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, numbers.Integral):
        raise ValueError(f"num_frames must be a whole number, got {num_frames!r}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 (both endpoints), got {num_frames}")
    check_latent_count(int(pairs) * int(num_frames), f"{pairs} pair(s) x {num_frames} frames",
                       split=f"use fewer frames or fewer pairs per run (at most {MAX_LATENTS:,} frames in all), "
                             f"and join the parts in the video node")
    return torch.arange(num_frames, dtype=torch.float64) / (num_frames - 1)


def interpolate_latents(a: Latent, b: Latent, num_frames: int, *, method: str = "auto",
                        layer_start: int = 0, layer_end: Optional[int] = None,
                        G: Optional[Generator] = None) -> Latent:
    """Frames from `a` to `b` (both included) as one batch, pair by pair: `[B * num_frames, ...]`.

    Args:
        a, b: latents of the same generator; batch sizes equal, or one of them 1 (broadcast).
        method: 'lerp', 'slerp', or 'auto' (slerp in Z, lerp in W/W+ as recommended for StyleGAN).
        layer_start, layer_end: interpolate only w+ layers [start, end) and keep `a`'s other layers
            (the result is w+); the default covers every layer.
        G: the generator, needed only when `a` and `b` are in different spaces or layers are limited
            for z/w latents (they are first expressed in W+).
    """
    if method not in INTERPOLATION_METHODS:
        raise ValueError(f"method must be one of {INTERPOLATION_METHODS}, got {method!r}")
    interpolation_times(num_frames, max(a.batch_size, b.batch_size))  # checks the count before any work
    if "fs" in (a.space, b.space):
        return _interpolate_fs(a, b, num_frames, method, layer_start, layer_end)
    if a.generator.fingerprint != b.generator.fingerprint:
        if (a.generator.w_dim, a.generator.num_ws) != (b.generator.w_dim, b.generator.num_ws):
            raise LatentError(f"cannot interpolate between latents of {a.generator.name} and {b.generator.name}: "
                              f"their shapes differ")
    num_ws = a.generator.num_ws
    layer_end = num_ws if layer_end is None else int(layer_end)
    partial = (layer_start, layer_end) != (0, num_ws)
    if not 0 <= layer_start < layer_end <= num_ws:
        raise LatentError(f"layer range [{layer_start}, {layer_end}) must be a non-empty range within 0..{num_ws} "
                          f"({a.generator.name} has {num_ws} w+ layers): choose layer_start < layer_end <= {num_ws}, "
                          f"or leave layer_end at 0 for all layers")
    if partial and "s" in (a.space, b.space):
        raise LatentError("layer ranges apply to w+ layers; an S (StyleSpace) latent has no w+ layers: interpolate "
                          "all layers, or interpolate the w+ latents from before the S edit")
    if a.space != b.space or (partial and a.space != "w+"):
        if G is None:
            raise LatentError(f"interpolating a {a.space} latent with a {b.space} latent"
                              f"{' over selected layers' if partial else ''} needs the generator: connect it")
        target = ("s" if "s" in (a.space, b.space) else
                  "w+" if partial or "w+" in (a.space, b.space) or "z" in (a.space, b.space) else "w")
        a, b = convert_latent(G, a, target), convert_latent(G, b, target)
    ta, tb = a.tensor, b.tensor
    if len(ta) != len(tb):
        if 1 not in (len(ta), len(tb)):
            raise LatentError(f"batch sizes {len(ta)} and {len(tb)} do not match (one may be 1)")
        n = max(len(ta), len(tb))
        ta, tb = ta.expand(n, *ta.shape[1:]), tb.expand(n, *tb.shape[1:])
    if method == "auto":
        method = "slerp" if a.space == "z" else "lerp"
    t = interpolation_times(num_frames, len(ta)).reshape(1, num_frames, *([1] * (ta.ndim - 1)))
    A, B = ta.unsqueeze(1).double(), tb.unsqueeze(1).double()
    frames = slerp(A, B, t) if method == "slerp" else A + (B - A) * t
    frames[:, 0], frames[:, -1] = A[:, 0], B[:, 0]  # exact endpoints
    if partial:
        keep = A.expand_as(frames).clone()
        keep[:, :, layer_start:layer_end] = frames[:, :, layer_start:layer_end]
        frames = keep
    frames = frames.reshape(-1, *ta.shape[1:]).float()
    c = None if a.c is None else a.c.repeat_interleave(num_frames, 0) if len(a.c) == len(ta) else \
        a.c.expand(len(ta), -1).repeat_interleave(num_frames, 0)
    return Latent(frames, a.space, a.generator, c, a.truncation_psi, a.truncation_cutoff)


def _lerp_frames(ta: torch.Tensor, tb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`[B, ...]` x 2 -> `[B * frames, ...]`: a + (b - a) t in float64, endpoints exact."""
    A, B = ta.unsqueeze(1).double(), tb.unsqueeze(1).double()
    frames = A + (B - A) * t.reshape(1, -1, *([1] * (ta.ndim - 1)))
    frames[:, 0], frames[:, -1] = A[:, 0], B[:, 0]
    return frames.reshape(-1, *ta.shape[1:]).to(ta.dtype)


def _interpolate_fs(a: Latent, b: Latent, num_frames: int, method: str, layer_start: int,
                    layer_end: Optional[int]) -> Latent:
    """fs frames: the codes, F and the kept skip each interpolated linearly (F is a feature map: no slerp)."""
    if a.space != b.space:
        raise LatentError(f"cannot interpolate a {a.space} latent with a {b.space} latent: make both fs latents "
                          f"(core.latents.fs_from_wplus), or convert the fs latent to w+")
    if a.generator.fingerprint != b.generator.fingerprint or a.generator.num_ws != b.generator.num_ws:
        raise LatentError(f"cannot interpolate fs latents of different generators ({a.generator.name} and "
                          f"{b.generator.name}): F depends on the weights that made it; make both with one generator")
    if a.fs_skip != b.fs_skip:
        raise LatentError(f"cannot interpolate an fs latent that keeps the 32 px skip with one that drops it (skip "
                          f"'{a.fs_skip}' vs '{b.fs_skip}'); make both with the same skip convention")
    if a.features.shape[1] != b.features.shape[1]:
        raise LatentError(f"the fs latents' features have {a.features.shape[1]} and {b.features.shape[1]} channels")
    if method == "slerp":
        raise LatentError("fs latents interpolate linearly (F is a feature map, not a direction): choose lerp or auto")
    if (layer_start, layer_end) not in ((0, None), (0, a.generator.num_ws)):
        raise LatentError("layer ranges apply to w+ latents; an fs latent interpolates F and its codes together: "
                          "leave layer_start 0 and layer_end 0")
    parts = [(a.tensor, b.tensor), (a.features, b.features)]
    if a.features_img is not None:
        parts.append((a.features_img, b.features_img))
    n = max(a.batch_size, b.batch_size)
    if a.batch_size != b.batch_size and 1 not in (a.batch_size, b.batch_size):
        raise LatentError(f"batch sizes {a.batch_size} and {b.batch_size} do not match (one may be 1)")
    t = interpolation_times(num_frames, n)
    out = [_lerp_frames(x.expand(n, *x.shape[1:]), y.expand(n, *y.shape[1:]), t) for x, y in parts]
    c = None if a.c is None else a.c.expand(n, -1).repeat_interleave(num_frames, 0)
    return Latent(out[0], "fs", a.generator, c, features=out[1], features_img=out[2] if len(out) > 2 else None)


# --- Style mixing ---------------------------------------------------------------------------------

def layer_resolutions(G: Generator) -> list[float]:
    """The image scale (in pixels) each w+ layer controls, used to group layers into coarse/middle/fine."""
    if G.arch == "stylegan2":  # index i drives resolution 2**(i//2 + 2), the StyleGAN convention
        return [2.0 ** (i // 2 + 2) for i in range(G.num_ws)]
    syn = G.synthesis  # StyleGAN3: twice each layer's cutoff frequency
    cutoffs = [syn.input.bandwidth] + [getattr(syn, n).in_cutoff for n in syn.layer_names]
    return [2 * c for c in cutoffs]


# Layer groups by the resolution a layer controls (`layer_resolutions`): coarse <= 8 px (pose, face shape), middle
# 16-32 px (features, hair style), fine >= 64 px (colours, micro-structure): the StyleGAN paper's split (Karras et al.
# 2019, sec. 3.1). Style Mix's presets and the latent toolkit's blends use it.
LAYER_GROUP_BOUNDS = {"coarse": (0.0, 8.0), "middle": (8.0, 32.0), "fine": (32.0, math.inf)}


def style_mix_layers(G: Generator, preset: str) -> list[int]:
    """Layer indices of a preset: 'coarse' (<= 8 px: pose, face shape), 'middle' (16-32 px: features,
    hair style), 'fine' (>= 64 px: colours, micro-structure)."""
    if preset not in STYLE_MIX_PRESETS:
        raise ValueError(f"preset must be one of {STYLE_MIX_PRESETS}, got {preset!r}")
    res = layer_resolutions(G)
    lo, hi = LAYER_GROUP_BOUNDS[preset]
    layers = [i for i, r in enumerate(res) if lo < r <= hi]
    if not layers:
        raise LatentError(f"{G.info.name} ({G.img_resolution} px) has no {preset} layers; use explicit layers")
    return layers


def parse_layers(text: str, num_ws: int) -> list[int]:
    """Parse '0-3, 8, 10-17' (inclusive ranges) into sorted layer indices below `num_ws`."""
    layers: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"cannot read layers {part!r}; write layers like '0-3, 8'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi >= num_ws:
            raise ValueError(f"layer range {part!r} must go upwards and stay below num_ws = {num_ws}")
        layers.update(range(lo, hi + 1))
    if not layers:
        raise ValueError(f"no layers given; write layers like '0-3, 8' (0..{num_ws - 1})")
    return sorted(layers)


def mix_styles(G: Generator, base: Latent, style: Latent, layers: Sequence[int]) -> Latent:
    """w+ that takes `layers` from `style` and every other layer from `base` (StyleGAN, sec. 3.1).

    Batch sizes must match or one must be 1; the result has the larger batch.
    """
    wa, wb = latent_to_ws(G, base).cpu(), latent_to_ws(G, style).cpu()
    if len(wa) != len(wb):
        if 1 not in (len(wa), len(wb)):
            raise LatentError(f"batch sizes {len(wa)} and {len(wb)} do not match (one may be 1)")
        n = max(len(wa), len(wb))
        wa, wb = wa.expand(n, -1, -1), wb.expand(n, -1, -1)
    out = wa.clone()
    idx = torch.as_tensor(list(layers), dtype=torch.long)
    if len(idx) and (idx.min() < 0 or idx.max() >= G.num_ws):
        raise LatentError(f"layers must lie in 0..{G.num_ws - 1}, got {list(layers)}")
    out[:, idx] = wb[:, idx]
    c = base.c if base.c is None or len(base.c) == len(out) else base.c.expand(len(out), -1)
    return Latent(out, "w+", generator_ref(G), c)


# --- Latent files ---------------------------------------------------------------------------------

LATENT_HINT = "save latents with 'Save Latent'"


def save_latent(latent: Latent, path: Union[str, os.PathLike]) -> Path:
    """Write `latent` as `.safetensors` (atomically) with its space and generator identity in the metadata."""
    tensors, meta = latent_to_tensors(latent)
    return write_safetensors(path, tensors, format=LATENT_FORMAT, metadata=meta)


def latent_to_tensors(latent: Latent) -> tuple[dict, dict]:
    """(tensors, metadata) of a latent file (`save_latent`; `latent_from_tensors` reads them back), without the
    format tag."""
    tensors = {"latent": latent.tensor.float()}
    if latent.c is not None:
        tensors["c"] = latent.c.float()
    meta = {"space": latent.space, "generator": latent.generator.to_dict(),
            "truncation_psi": repr(float(latent.truncation_psi)),
            "truncation_cutoff": "" if latent.truncation_cutoff is None else str(int(latent.truncation_cutoff))}
    if latent.space == "fs":  # F (and the kept skip) as tensors, the convention in the metadata
        tensors["features"] = latent.features.float()
        if latent.features_img is not None:
            tensors["features_img"] = latent.features_img.float()
        meta["fs_skip"] = latent.fs_skip
    return tensors, meta


def _parse_space(text: str) -> str:
    if text not in LATENT_SPACES:
        raise ValueError(f"expected one of {LATENT_SPACES}, got {text[:40]!r}")
    return text


def _parse_psi(text: str) -> float:
    psi = float(text)
    if not math.isfinite(psi) or abs(psi) > MAX_TRUNCATION_PSI:
        raise ValueError(f"expected a number in -{MAX_TRUNCATION_PSI:g}..{MAX_TRUNCATION_PSI:g} (1 = no truncation), "
                         f"got {text[:40]!r}")
    return psi


def _cutoff_parser(num_ws: int) -> Callable[[str], Optional[int]]:
    def parse(text: str) -> Optional[int]:
        if not text:
            return None
        if not re.fullmatch(r"[0-9]{1,6}", text.strip()) or not 0 <= int(text) <= num_ws:
            raise ValueError(f"expected empty (every layer) or a whole number in 0..{num_ws} (the generator's "
                             f"num_ws), got {text[:40]!r}")
        return int(text)
    return parse


def _parse_fs_skip(text: str) -> str:
    if text not in FS_SKIPS:
        raise ValueError(f"expected one of {FS_SKIPS}, got {text[:40]!r}")
    return text


FS_TENSORS = ("features", "features_img")


def _file_tensor(path: Path, tensors: dict, name: str) -> Optional[torch.Tensor]:
    t = tensors.get(name)
    if t is not None and not t.is_floating_point():
        raise LatentFileError(f"{path}: latent file tensor {name!r} has dtype {t.dtype}; latent files hold "
                              f"floating-point tensors (float32); {LATENT_HINT}")
    return t


def load_latent(path: Union[str, os.PathLike]) -> Latent:
    """Read a latent written by `save_latent`.

    Every field is checked before the latent is returned: the metadata (space, generator identity, truncation
    psi and cutoff), the tensors' dtypes, shapes (against the declared generator), batch (1..MAX_LATENTS) and
    values (finite latents and class labels). Sizes declared in the file's header are checked against the file
    by the safetensors reader before anything is read.

    Raises:
        FileNotFoundError: no such file.
        LatentFileError (a LatentError and a CheckpointError): naming the file, the field or tensor, what it holds
            and what was expected: unreadable, not a latent file, a tensor or a metadata field missing or invalid,
            an invalid latent (wrong shape for its space, empty, too large a batch, NaN).
    """
    path = Path(path)
    try:
        tensors, meta = read_safetensors(path, what="latent", format=LATENT_FORMAT, hint=LATENT_HINT)
    except CheckpointError as e:  # the file helpers' errors already name the file
        raise LatentFileError(str(e)) from e
    return latent_from_tensors(tensors, meta, path)


def latent_from_tensors(tensors: dict, meta: dict, path: Union[str, os.PathLike]) -> Latent:
    """The latent that `save_latent`'s tensors and metadata describe, every field checked as `load_latent` says;
    `path` names where they came from in the messages (a file, or an image holding them)."""
    try:
        if "latent" not in tensors:
            raise LatentFileError(f"{path}: not a StyleGAN Studio latent (no 'latent' tensor; found "
                                  f"{sorted(tensors)[:10]}); {LATENT_HINT}")
        ref = meta_field(meta, "generator", path, "latent", parse=GeneratorRef.from_json, hint=LATENT_HINT)
        space = meta_field(meta, "space", path, "latent", parse=_parse_space, hint=LATENT_HINT)
        psi = meta_field(meta, "truncation_psi", path, "latent", parse=_parse_psi, default=1.0, hint=LATENT_HINT)
        cutoff = meta_field(meta, "truncation_cutoff", path, "latent", parse=_cutoff_parser(ref.num_ws),
                            default=None, hint=LATENT_HINT)
        skip = None
        if space == "fs":
            skip = meta_field(meta, "fs_skip", path, "latent", parse=_parse_fs_skip, hint=LATENT_HINT)
    except LatentFileError:
        raise
    except CheckpointError as e:  # the file helpers' errors already name the file and the field
        raise LatentFileError(str(e)) from e
    _check_fs_tensors(path, tensors, space, skip)
    latent, c = _file_tensor(path, tensors, "latent"), _file_tensor(path, tensors, "c")
    features, features_img = (_file_tensor(path, tensors, name) for name in FS_TENSORS)
    try:
        return Latent(latent.float(), space, ref, None if c is None else c.float(), psi, cutoff,
                      features=None if features is None else features.float().contiguous(),
                      features_img=None if features_img is None else features_img.float().contiguous())
    except LatentError as e:
        raise LatentFileError(f"{path}: the latent file holds an invalid latent: {e}. The file is damaged or was "
                              f"not written by StyleGAN Studio; {LATENT_HINT}") from e


def _check_fs_tensors(path: Path, tensors: dict, space: str, skip: Optional[str]) -> None:
    """The F tensors a latent file must (fs) or must not (other spaces) hold, consistent with its 'fs_skip'."""
    present = [name for name in FS_TENSORS if name in tensors]
    if space != "fs":
        if present:
            raise LatentFileError(f"{path}: a {space} latent file holds fs tensors {present}; only fs latent files "
                                  f"carry features. The file is damaged or was not written by StyleGAN Studio; "
                                  f"{LATENT_HINT}")
        return
    if "features" not in tensors:
        raise LatentFileError(f"{path}: an fs latent file without its 'features' tensor (F [N, C, 32, 32]); "
                              f"{LATENT_HINT}")
    if ("features_img" in tensors) != (skip == "keep"):
        has = "holds" if "features_img" in tensors else "lacks"
        raise LatentFileError(f"{path}: fs_skip is {skip!r} but the file {has} the 'features_img' tensor (the 32 px "
                              f"skip 'keep' stores and 'drop' does not); {LATENT_HINT}")


def mapped_w_covariance(G: Generator, num_samples: int, *, seed: int = 0, chunk: int = 8192,
                        class_idx: Optional[int] = None,
                        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                        callback: Optional[Callable[[int, int], None]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `[w_dim]` and covariance `[w_dim, w_dim]` (float64, unbiased) of transform(w), w = mapping(z) for
    `num_samples` z ~ N(0, I) drawn with `torch.Generator().manual_seed(seed)` (no truncation), streamed `chunk` at
    a time so memory does not grow with num_samples. The sums run around the first chunk's mean, which keeps them
    exact in float64. A conditional generator gets class `class_idx`, or a random class per sample (None).
    `callback(done, total)` after each chunk (may raise to cancel). Used by the II2S prior (transform LeakyReLU(5))
    and GANSpace (w itself)."""
    rng = torch.Generator().manual_seed(int(seed))
    device = G.w_avg.device
    total = torch.zeros(G.w_dim, dtype=torch.float64)
    outer = torch.zeros(G.w_dim, G.w_dim, dtype=torch.float64)
    shift = None
    done = 0
    with torch.no_grad():
        while done < num_samples:
            n = min(chunk, num_samples - done)
            z = torch.randn([n, G.z_dim], generator=rng)
            c = None
            if G.c_dim:
                idx = torch.full([n], int(class_idx)) if class_idx is not None else \
                    torch.randint(G.c_dim, [n], generator=rng)
                c = torch.nn.functional.one_hot(idx, G.c_dim).float().to(device)
            w = G.mapping(z.to(device), c)[:, 0]
            v = (w if transform is None else transform(w)).to("cpu", torch.float64)
            if shift is None:
                shift = v.mean(0)
            v = v - shift
            total += v.sum(0)
            outer += v.t() @ v
            done += n
            if callback is not None:
                callback(done, num_samples)
    mean = total / num_samples
    cov = (outer - num_samples * torch.outer(mean, mean)) / max(1, num_samples - 1)
    return mean + shift, cov


__all__ = [
    "Latent", "GeneratorRef", "generator_ref", "check_compatible", "seeds_to_z", "parse_seeds", "sample_latents",
    "latent_to_ws", "latent_to_styles", "styles_to_latent", "convert_latent", "synthesize", "slerp", "interpolate_latents", "interpolation_times",
    "style_mix_layers", "parse_layers", "mix_styles", "save_latent", "load_latent", "layer_resolutions",
    "LatentFileError", "check_latent_count", "batch_seeds", "check_truncation", "MAX_LATENTS", "MAX_SEED",
    "FS_RESOLUTION", "FS_SKIPS", "DEFAULT_FS_SKIP", "check_fs_generator", "fs_first_w", "fs_channels", "fs_from_wplus",
    "synthesize_fs", "mapped_w_covariance",
]
