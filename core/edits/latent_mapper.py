"""StyleCLIP latent mapper (Patashnik et al. 2021, sec. 5): a small network, trained once per text prompt, that
edits any W+ latent in one forward pass.

Architecture (the reference's `mapper/latent_mappers.py`, `LevelsMapper`): the layers of ws are split into three
groups, coarse = ws[:, 0:4], medium = ws[:, 4:8], fine = ws[:, 8:num_ws]; each group that is switched on has its
own MLP M_g = PixelNorm + 4 equalised fully connected layers (lr multiplier 0.01, leaky ReLU 0.2 with gain √2 after
every layer, the last one included), applied to each w of its group separately. A switched-off group's output is
zero. The edit (the reference's `coach.py` and `inference.py`; the 0.1 lives there, not in the network) is

    w' = w + 0.1 · M(w)                                                                  (RESIDUAL_SCALE = 0.1)

The split is by layer index whatever the generator: at 1024 px (num_ws 18) the groups are 4 / 4 / 10 layers, at
512 px (16) 4 / 4 / 8, at 256 px (14) 4 / 4 / 6, at 64 px (10) 4 / 4 / 2. With num_ws ≤ 8 (32 px and below) the
fine group is empty and no network is built for it; with num_ws ≤ 4 the medium group too. For StyleGAN3 the same
indices are used, although its layers do not correspond to resolutions as StyleGAN2's do.

Training (the reference's `mapper/training/coach.py`, `mapper/options/train_options.py`), per step a batch of 2
latents w from the training set:

    loss = λ_ID · ID(G(w'), G(w)) + λ_CLIP · D_CLIP(G(w'), t) + λ_L2 · MSE(w', w)      (paper eq. 3; 0.1, 1, 0.8)

D_CLIP = 1 − cos(E_I(G(w')), t), MSE the mean over all num_ws × w_dim values, ID = mean(1 − cos) of ArcFace
embeddings (core.losses.arcface). Ranger (RAdam + Lookahead + gradient centralisation) at lr 0.5 for 50k steps.
The reference's default training set is e4e inversions of CelebA-HQ; without them it maps 5000 z with ψ = 0.7,
which is what this module samples when no latents are given (`MapperConfig.num_train_latents`, `truncation_psi`).

Checkpoints and cancelling (`core.optimize.Checkpoint`): with `checkpoint_path`, `train_latent_mapper` writes the
mapper, the optimiser state (RAdam moments and step, Lookahead's slow weights and step), the step and the loss
history every `checkpoint_every` steps and after the last one, as safetensors + JSON metadata, atomically
(`core.files`). A callback that raises (ComfyUI's stop button) makes it write a checkpoint at the step just completed before the
exception propagates, so no completed step is lost. There is no random-generator state to store: the data order
is a pure function of (seed, epoch) and the initial weights of (seed, group), so a resumed run repeats an
uninterrupted one bit for bit. A checkpoint from a different run (other settings, prompt, training latents,
generator or seed) is refused with a message, never silently mixed in; `num_steps` may differ (there is no
learning-rate schedule), so a finished run can be extended.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, LatentError
from ..files import meta_json, read_safetensors, write_safetensors
from ..latents import GeneratorRef, Latent, generator_ref as _generator_ref, latent_to_ws
from ..log import logger
from ..losses.clip import clip_global_loss
from ..networks.layers import FullyConnectedLayer, normalize_2nd_moment
from ..optimize import (Checkpoint, ProgressCallback, StepProgress, finish_requested, autograd_ready, check_finite, descend,
                        loss_values, signature_diff)

PathLike = Union[str, Path]

MAPPER_FORMAT = "stylegan-studio-latent-mapper"
CHECKPOINT_FORMAT = "stylegan-studio-latent-mapper-checkpoint"
FORMAT_VERSION = "1"

RESIDUAL_SCALE = 0.1  # w' = w + 0.1·M(w): the reference's coach.py l. 88 and inference.py run_on_batch
# Layer ranges [start, stop) of the groups; None = up to num_ws (the reference's x[:, :4], x[:, 4:8], x[:, 8:]).
GROUPS: dict[str, tuple[int, Optional[int]]] = {"coarse": (0, 4), "medium": (4, 8), "fine": (8, None)}
PIXEL_NORMS = ("w", "layers")
CLIP_RESAMPLES = ("bicubic", "area", "reference")
OPTIMIZERS = ("ranger", "adam")
NOISE_MODES = ("const", "random", "none")

DEFAULT_CHECKPOINT_EVERY = 500  # steps between checkpoints (the reference: 2000, about 25 min on its GPU)
DEFAULT_PREVIEW_EVERY = 100     # steps between preview images (the reference's image_interval)


@dataclass(frozen=True)
class MapperConfig:
    """Training settings; the defaults are the reference's (mapper/options/train_options.py unless noted)."""

    num_steps: int = 50_000             # --max_steps
    batch_size: int = 2                 # --batch_size
    lr: float = 0.5                     # --learning_rate
    optimizer: str = "ranger"           # --optim_name: 'ranger' (RAdam + Lookahead + GC) or 'adam'
    clip_lambda: float = 1.0            # --clip_lambda
    l2_lambda: float = 0.8              # --latent_l2_lambda (MSE between w' and w)
    id_lambda: float = 0.1              # --id_lambda (0 for generators that do not make faces)
    coarse: bool = True                 # not --no_coarse_mapper: train a mapper for layers 0-3
    medium: bool = True                 # not --no_medium_mapper: layers 4-7
    fine: bool = True                   # not --no_fine_mapper: layers 8+ (the README suggests off for edits that
                                        # should keep the colours, e.g. hairstyles)
    num_layers: int = 4                 # latent_mappers.py Mapper: 4 EqualLinear layers per group
    lr_multiplier: float = 0.01         # their lr_mul
    pixel_norm: str = "w"               # 'w': each w scaled to unit mean square over its w_dim channels (what
                                        # StyleGAN's PixelNorm is for); 'layers': the reference's behaviour (its
                                        # PixelNorm averages over dim 1, the layer axis of [N, L, C] latents)
    num_train_latents: int = 5000       # --train_dataset_size, when no latents are given
    truncation_psi: float = 0.7         # coach.py configure_datasets: truncation=0.7 toward the average w
    noise_mode: str = "const"           # randomize_noise=False in coach.py
    clip_normalize: bool = True         # False feeds CLIP raw [-1, 1] images, as the reference did (its bug)
    clip_resample: str = "bicubic"      # how images reach CLIP's input size: 'bicubic' (CLIP's own, antialiased),
                                        # 'area', or 'reference' (clip_loss.py: ×7 nearest upsample, then an
                                        # average pool of res/32 pixels; computed exactly, without the big tensor)
    betas: tuple[float, float] = (0.95, 0.999)  # ranger.py defaults (Ranger only: 'adam' uses torch's defaults,
    eps: float = 1e-5                   # ranger.py default            as the reference's --optim_name adam does)
    lookahead_k: int = 6                # ranger.py k
    lookahead_alpha: float = 0.5        # ranger.py alpha
    gradient_centralization: bool = True  # ranger.py use_gc=True, gc_conv_only=False: weight gradients (ndim > 1)


DEFAULTS = MapperConfig()


# ------------------------------------------------------------------------------------------------
# The network


def group_layers(num_ws: int) -> dict[str, range]:
    """The ws layers of each group for a generator with `num_ws` layers (empty ranges included)."""
    return {name: range(min(lo, num_ws), num_ws if hi is None else min(hi, num_ws))
            for name, (lo, hi) in GROUPS.items()}


def _derived_seed(seed: int, *tags) -> int:
    """A 63-bit seed for one use of `seed` (initial weights of a group, the order of an epoch, ...)."""
    digest = hashlib.sha256("/".join(map(str, (int(seed),) + tags)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


class _GroupMLP(nn.Module):
    """`num_layers` equalised fully connected layers with leaky ReLU (the reference's Mapper minus its PixelNorm,
    which `LatentMapper` applies). rosinality's EqualLinear(lr_mul, 'fused_lrelu') and NVIDIA's
    FullyConnectedLayer('lrelu', lr_multiplier) are the same function: lrelu(x·(W·lr_mul/√C)ᵀ + b·lr_mul, 0.2)·√2,
    with W initialised N(0, 1/lr_mul²) and b = 0."""

    def __init__(self, w_dim: int, *, num_layers: int, lr_multiplier: float):
        super().__init__()
        self.num_layers = num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(w_dim, w_dim, activation="lrelu",
                                                          lr_multiplier=lr_multiplier))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for idx in range(self.num_layers):
            getattr(self, f"fc{idx}").reset_parameters(generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C] -> [N, C]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


@dataclass
class MapperInfo:
    """What a mapper was trained for; filled by `train_latent_mapper`, `save_mapper` and `load_mapper`."""

    text: str = ""
    generator: Optional[GeneratorRef] = None
    config: Optional[MapperConfig] = None


class LatentMapper(nn.Module):
    """M(ws): per-group MLPs over the layers of W+ latents (the reference's LevelsMapper).

    `forward(ws [N, num_ws, w_dim]) -> delta [N, num_ws, w_dim]` (zero for groups without a network);
    `apply(ws, strength)` = ws + strength · 0.1 · delta. State-dict names: `coarse.fc0.weight`, ... .
    """

    def __init__(self,
                 w_dim: int,                        # Width of w (512 for FFHQ models).
                 num_ws: int,                       # Layers of ws (18 at 1024 px, 16 at 512, 14 at 256).
                 *,
                 coarse: bool = True,               # Build a network for layers 0-3?
                 medium: bool = True,               # For layers 4-7?
                 fine: bool = True,                 # For layers 8..num_ws-1 (skipped when there are none)?
                 num_layers: int = DEFAULTS.num_layers,        # Fully connected layers per group.
                 lr_multiplier: float = DEFAULTS.lr_multiplier,  # Equalised-learning-rate multiplier.
                 pixel_norm: str = DEFAULTS.pixel_norm,      # 'w' or 'layers' (see MapperConfig).
                 seed: int = 0,                     # Initial weights (each group from its own derived seed).
                 ):
        super().__init__()
        if w_dim < 1 or num_ws < 1 or num_layers < 1 or lr_multiplier <= 0:
            raise ValueError(f"LatentMapper needs w_dim, num_ws and num_layers >= 1 and lr_multiplier > 0, got "
                             f"{w_dim}, {num_ws}, {num_layers}, {lr_multiplier}")
        if pixel_norm not in PIXEL_NORMS:
            raise ValueError(f"pixel_norm must be one of {PIXEL_NORMS}, got {pixel_norm!r}")
        self.w_dim, self.num_ws = int(w_dim), int(num_ws)
        self.num_layers, self.lr_multiplier, self.pixel_norm = int(num_layers), float(lr_multiplier), pixel_norm
        self.ranges = group_layers(self.num_ws)
        wanted = {"coarse": coarse, "medium": medium, "fine": fine}
        self.groups: tuple[str, ...] = tuple(g for g in GROUPS if wanted[g] and len(self.ranges[g]) > 0)
        skipped = [g for g in GROUPS if wanted[g] and len(self.ranges[g]) == 0]
        if skipped:
            logger.info("latent mapper: %s has no layers with num_ws %d; no network built for it",
                        " and ".join(skipped), self.num_ws)
        if not self.groups:
            raise ValueError(f"the latent mapper has nothing to train: groups requested {[g for g in GROUPS if wanted[g]]}"
                             f", layers {({g: list(r) for g, r in self.ranges.items()})} for num_ws {self.num_ws}; "
                             f"switch on a group that has layers (coarse: 0-3, medium: 4-7, fine: 8+)")
        for g in self.groups:
            setattr(self, g, _GroupMLP(self.w_dim, num_layers=self.num_layers, lr_multiplier=self.lr_multiplier))
        self.reset_parameters(seed)
        self.info = MapperInfo()

    def reset_parameters(self, seed: int) -> None:
        """Reference initialisation (weights N(0, 1/lr_mul²), biases 0), group g drawn from seed (seed, g)."""
        for g in self.groups:
            getattr(self, g).reset_parameters(torch.Generator().manual_seed(_derived_seed(seed, "init", g)))

    def architecture(self) -> dict:
        """The constructor arguments that shape the tensors and the function (stored with saved mappers)."""
        return dict(w_dim=self.w_dim, num_ws=self.num_ws, groups=list(self.groups), num_layers=self.num_layers,
                    lr_multiplier=self.lr_multiplier, pixel_norm=self.pixel_norm)

    def check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise LatentError(f"this latent mapper edits w+ latents of shape [N, {self.num_ws}, {self.w_dim}], got "
                              f"{list(ws.shape)}; use it with the generator it was trained for")

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """delta `[N, num_ws, w_dim]` for ws `[N, num_ws, w_dim]` (ws's dtype; zero for groups without a net)."""
        self.check_ws(ws)
        parts = []
        for g, layers in self.ranges.items():
            x = ws[:, layers.start:layers.stop]  # [N, L, C]
            if g not in self.groups:
                parts.append(torch.zeros_like(x))
                continue
            # PixelNorm: per w over its channels, or (reference) per channel over the group's layers.
            x = normalize_2nd_moment(x, dim=2 if self.pixel_norm == "w" else 1)
            n, length, c = x.shape
            parts.append(getattr(self, g)(x.reshape(n * length, c)).reshape(n, length, c))
        return torch.cat(parts, dim=1)

    def apply(self, ws: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """w' = w + strength · 0.1 · M(w) for ws `[N, num_ws, w_dim]` (strength 1 is the trained edit)."""
        return ws + (float(strength) * RESIDUAL_SCALE) * self(ws)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, groups={self.groups}, num_layers={self.num_layers}, "
                f"lr_multiplier={self.lr_multiplier}, pixel_norm={self.pixel_norm!r}")


def apply_latent_mapper(mapper: LatentMapper, ws: torch.Tensor, *, strength: float = 1.0) -> torch.Tensor:
    """Edit ws `[N, num_ws, w_dim]` (float, any batch) with a trained mapper: ws + strength · 0.1 · M(ws).

    `strength` scales the trained step (1 = as trained, 0 = unchanged, negative = the opposite direction, which
    the mapper was not trained for). Runs without autograd where the mapper's weights are and returns float32 on
    ws's device; `ws` is not modified. Raises LatentError when ws does not fit the mapper.
    """
    mapper.check_ws(ws)
    device = next(mapper.parameters()).device
    with torch.no_grad():  # an edit, not a training step: the same numbers whether or not the weights need grad
        x = ws.detach().to(device=device, dtype=torch.float32)
        return mapper.apply(x, strength).to(ws.device)


# ------------------------------------------------------------------------------------------------
# Ranger: RAdam + Lookahead + gradient centralisation


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any torch optimiser: after every k inner steps the slow weights move
    alpha of the way to the fast ones and the fast weights restart from there. The slow weights start at the
    parameters' values when the wrapper is made (Ranger copies them at its first step: the same values)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, k: int = DEFAULTS.lookahead_k,
                 alpha: float = DEFAULTS.lookahead_alpha):
        if int(k) < 1 or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and alpha in [0, 1], got k={k}, alpha={alpha}")
        self.optimizer, self.k, self.alpha = optimizer, int(k), float(alpha)
        self.num_steps = 0
        with torch.no_grad():
            self.slow = [p.detach().clone() for p in self.params()]

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.optimizer.step()
        self.num_steps += 1
        if self.num_steps % self.k == 0:
            for p, slow in zip(self.params(), self.slow):
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "slow": [s.clone() for s in self.slow],
                "num_steps": self.num_steps}

    def load_state_dict(self, state: dict) -> None:
        params = self.params()
        if len(state["slow"]) != len(params) or any(s.shape != p.shape for s, p in zip(state["slow"], params)):
            raise ValueError("Lookahead state does not match the parameters")
        self.optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            self.slow = [s.detach().to(p.device, p.dtype).clone() for s, p in zip(state["slow"], params)]
        self.num_steps = int(state["num_steps"])


def centralize_gradients_(params: Iterable[torch.Tensor]) -> None:
    """Gradient centralisation (Yong et al. 2020) in place: every gradient with more than one dimension (weights,
    not biases) loses its mean over all dimensions but the first (per output unit), as Ranger does."""
    for p in params:
        g = p.grad
        if g is not None and g.ndim > 1:
            g.sub_(g.mean(dim=tuple(range(1, g.ndim)), keepdim=True))


class Ranger(Lookahead):
    """Ranger 20.4.11 (the reference's mapper/training/ranger.py) from torch's RAdam: RAdam (its rectification
    threshold of 5 and eps added to the uncorrected √v are torch's too), Lookahead, and gradient centralisation of
    the weight gradients before each RAdam step. Weight decay, if any, is decoupled as in Ranger."""

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, betas: tuple[float, float] = DEFAULTS.betas,
                 eps: float = DEFAULTS.eps, weight_decay: float = 0.0, k: int = DEFAULTS.lookahead_k,
                 alpha: float = DEFAULTS.lookahead_alpha,
                 gradient_centralization: bool = DEFAULTS.gradient_centralization):
        radam = torch.optim.RAdam(list(params), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                  decoupled_weight_decay=True)
        super().__init__(radam, k=k, alpha=alpha)
        self.gradient_centralization = bool(gradient_centralization)

    @torch.no_grad()
    def step(self) -> None:
        if self.gradient_centralization:
            centralize_gradients_(self.params())
        super().step()


def _make_optimizer(params: list[torch.Tensor], config: MapperConfig):
    if config.optimizer == "ranger":
        return Ranger(params, lr=config.lr, betas=config.betas, eps=config.eps, k=config.lookahead_k,
                      alpha=config.lookahead_alpha, gradient_centralization=config.gradient_centralization)
    # The reference's --optim_name adam: torch's Adam at --learning_rate, its other arguments default.
    return torch.optim.Adam(params, lr=config.lr)


# ------------------------------------------------------------------------------------------------
# CLIP loss


def _reference_pool_matrix(resolution: int, device, dtype) -> torch.Tensor:
    """A `[S, resolution]` with A·x = avg_pool1d(repeat_interleave(x, 7), k) for k = resolution // 32."""
    k = resolution // 32
    if k < 1:
        raise ValueError(f"the reference's CLIP pooling needs images of at least 32 px, got {resolution}")
    size = resolution * 7 // k  # avg_pool2d's output size (floor), 224 for powers of two
    j = torch.arange(size * k)  # positions in the ×7 upsampled row that the pooling windows cover
    a = torch.zeros(size, resolution, dtype=torch.float64)
    a.index_put_((j // k, j // 7), torch.full((len(j),), 1.0 / k, dtype=torch.float64), accumulate=True)
    return a.to(device=device, dtype=dtype)


def reference_clip_pool(images: torch.Tensor) -> torch.Tensor:
    """The StyleCLIP reference's resize for CLIP (criteria/clip_loss.py: `AvgPool2d(res // 32)(Upsample(
    scale_factor=7)(images))`, nearest upsampling), computed as two small matrix products instead of through the
    49× larger upsampled image. `[N, C, R, R]` -> `[N, C, S, S]` (S = 224 for R = 32·2^k); differentiable."""
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"reference_clip_pool needs square images [N, C, R, R], got {list(images.shape)}")
    a = _reference_pool_matrix(images.shape[-1], images.device, images.dtype)
    return a @ images @ a.t()


# ------------------------------------------------------------------------------------------------
# Training


class MapperProgress(StepProgress):
    """The shared `StepProgress` (phase 'train'; `losses`: 'id', 'clip', 'l2' (those in use) and 'loss'). Every
    `preview_every` steps `image` is the first training latent edited by the current mapper `[1, 3, R, R]` in
    [-1, 1] and `reference` that latent unedited; else both are None. `params` is empty (the mapper's weights are
    in the checkpoint)."""

    @property
    def original(self) -> Optional[torch.Tensor]:
        """`reference`, under the name it had before the shared record."""
        return self.reference


@dataclass
class MapperTrainResult:
    mapper: LatentMapper                     # on the generator's device, eval mode, no grad
    history: list[dict] = field(default_factory=list)  # per step from step 1, resumed steps included
    seconds: float = 0.0                     # this call only
    start_step: int = 0                      # > 0 when resumed from a checkpoint
    config: MapperConfig = DEFAULTS

    def report(self) -> str:
        n = len(self.history)
        ran = n - self.start_step
        lines = [f"Latent mapper ({', '.join(self.mapper.groups)}): {n} steps"
                 + (f", resumed at step {self.start_step}" if self.start_step else "")
                 + f"; {ran} steps in {self.seconds:.1f} s" + (f" ({self.seconds / ran:.3f} s/step)" if ran else "")]
        if n:
            w = max(1, min(100, n // 2))
            for key in self.history[0]:
                a = sum(h[key] for h in self.history[:w]) / w
                b = sum(h[key] for h in self.history[-w:]) / w
                lines.append(f"{key}: {a:.4f} -> {b:.4f} (mean of the first / last {w} steps)")
        return "\n".join(lines)


class _BatchOrder:
    """The reference's DataLoader(shuffle=True, drop_last=True) made reproducible: epoch e visits the latents in
    the order of a permutation drawn from (seed, e), in batches of B, dropping the last incomplete one."""

    def __init__(self, num: int, batch_size: int, seed: int):
        self.num, self.batch_size, self.seed = num, batch_size, seed
        self.per_epoch = num // batch_size
        self.epoch, self.perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, b = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            gen = torch.Generator().manual_seed(_derived_seed(self.seed, "order", epoch))
            self.epoch, self.perm = epoch, torch.randperm(self.num, generator=gen)
        return self.perm[b * self.batch_size:(b + 1) * self.batch_size]


def _check_config(config: MapperConfig) -> None:
    if config.num_steps < 1 or config.batch_size < 1 or config.num_train_latents < 1:
        raise ValueError(f"num_steps, batch_size and num_train_latents must be >= 1, got {config.num_steps}, "
                         f"{config.batch_size}, {config.num_train_latents}")
    if not config.lr > 0 or min(config.clip_lambda, config.l2_lambda, config.id_lambda) < 0:
        raise ValueError(f"lr must be > 0 and the loss weights >= 0, got lr {config.lr}, clip_lambda "
                         f"{config.clip_lambda}, l2_lambda {config.l2_lambda}, id_lambda {config.id_lambda}")
    for name, value, allowed in (("optimizer", config.optimizer, OPTIMIZERS),
                                 ("pixel_norm", config.pixel_norm, PIXEL_NORMS),
                                 ("clip_resample", config.clip_resample, CLIP_RESAMPLES),
                                 ("noise_mode", config.noise_mode, NOISE_MODES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if not (config.coarse or config.medium or config.fine):
        raise ValueError("switch on at least one of coarse, medium and fine: the mapper would have nothing to train")


def _training_ws(G, latents, config: MapperConfig, seed: int, device) -> torch.Tensor:
    """The training set on `device`: `[M, w_dim]` (one w for every layer) or `[M, num_ws, w_dim]`, float32."""
    if latents is None:
        if G.c_dim:
            raise LatentError(f"{G.info.name} is conditional: pass the training latents (e.g. sample_latents with a "
                              f"class index) instead of letting the mapper sample them")
        gen = torch.Generator().manual_seed(_derived_seed(seed, "latents"))
        z = torch.randn([config.num_train_latents, G.z_dim], generator=gen)
        with torch.no_grad():  # the reference: mapped z, truncated toward the average w (all layers)
            return G.mapping(z.to(device), None, truncation_psi=config.truncation_psi)[:, 0].contiguous()
    if isinstance(latents, Latent):
        with torch.no_grad():
            t = autograd_ready(latent_to_ws(G, latents).detach())
    elif isinstance(latents, torch.Tensor):
        t = autograd_ready(latents.detach())
        if t.ndim == 2 and t.shape[1] == G.w_dim or t.ndim == 3 and tuple(t.shape[1:]) == (G.num_ws, G.w_dim):
            pass
        else:
            raise LatentError(f"training latents for {G.info.name} must be w+ [M, {G.num_ws}, {G.w_dim}] or w "
                              f"[M, {G.w_dim}], got {list(t.shape)}")
    else:
        raise TypeError(f"latents must be a tensor, a core.Latent or None, got {type(latents).__name__}")
    t = t.to(device=device, dtype=torch.float32)
    if len(t) == 0 or not torch.isfinite(t).all():
        raise LatentError("the training latents are empty or contain NaN/inf values")
    return t.contiguous()


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def _run_signature(G, clip, text: torch.Tensor, train: torch.Tensor, config: MapperConfig, seed: int,
                   sampled: bool) -> dict:
    """Everything a checkpoint must share with the run that resumes it (num_steps may differ; settings that do not
    act on this run, such as Ranger's with Adam or the sampling ones with given latents, are left out)."""
    cfg = dataclasses.asdict(config)
    unused = ["num_steps"] + ([] if sampled else ["num_train_latents", "truncation_psi"])
    if config.optimizer != "ranger":
        unused += ["betas", "eps", "lookahead_k", "lookahead_alpha", "gradient_centralization"]
    for key in unused:
        cfg.pop(key)
    return _jsonable({"config": cfg, "generator": _generator_ref(G).fingerprint, "shape": [G.num_ws, G.w_dim],
                      "text": _digest(text), "latents": _digest(train), "seed": int(seed),
                      "clip": str(getattr(clip, "name", type(clip).__name__))})


def _history_keys(config: MapperConfig) -> list[str]:
    return (["id"] if config.id_lambda > 0 else []) + (["clip"] if config.clip_lambda > 0 else []) + ["l2", "loss"]


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimiser's state into safetensors-ready tensors plus JSON-able values."""
    inner = optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer
    tensors, extra = {}, {}
    for idx, state in inner.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                extra[f"{idx}.{key}"] = value
    meta = {"extra": extra}
    if isinstance(optimizer, Lookahead):
        for idx, slow in enumerate(optimizer.slow):
            tensors[f"lookahead.{idx}"] = slow.detach().cpu().contiguous()
        meta["lookahead_steps"] = optimizer.num_steps
    return tensors, meta


def _load_optimizer(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    inner = optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["extra"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    sd = inner.state_dict()  # this run's param_groups: the hyperparameters are in the signature, already checked
    sd["state"] = state
    if isinstance(optimizer, Lookahead):
        slow = [tensors[f"lookahead.{i}"] for i in range(len(optimizer.slow))]
        optimizer.load_state_dict({"optimizer": sd, "slow": slow, "num_steps": meta["lookahead_steps"]})
    else:
        inner.load_state_dict(sd)


def _save_checkpoint(path: Path, mapper: LatentMapper, optimizer, step: int, history: list[dict],
                     keys: list[str], signature: dict) -> None:
    tensors = {f"mapper.{k}": v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["history"] = torch.tensor([[h[k] for k in keys] for h in history], dtype=torch.float64).reshape(-1, len(keys))
    write_safetensors(path, tensors, format=CHECKPOINT_FORMAT,
                      metadata={"version": FORMAT_VERSION, "step": str(step), "signature": signature,
                                "optimizer": opt_meta, "history_keys": keys, "architecture": mapper.architecture()})


def _load_checkpoint(path: Path, mapper: LatentMapper, optimizer, signature: dict) -> tuple[int, list[dict]]:
    what, hint = "latent-mapper training checkpoint", "delete it, or start over (resume=False)"
    tensors, meta = read_safetensors(path, what=what, format=CHECKPOINT_FORMAT, hint=hint)
    saved = meta_json(meta, "signature", path, what)
    step = meta_json(meta, "step", path, what)
    keys = meta_json(meta, "history_keys", path, what)
    opt_meta = meta_json(meta, "optimizer", path, what)
    if not (isinstance(saved, dict) and isinstance(step, int) and isinstance(keys, list) and isinstance(opt_meta, dict)):
        raise CheckpointError(f"{path}: damaged checkpoint metadata (signature, step, history_keys or optimizer "
                              f"of the wrong type); {hint}")
    if saved != signature:
        diff = signature_diff(saved, signature)
        hint = (" (sampled latents and text embeddings also differ slightly when the generator or CLIP moved to "
                "another device)" if {"latents", "text"} & set(diff) else "")
        raise ValueError(f"{path} is the checkpoint of a different training run (differs in: {', '.join(diff)})"
                         f"{hint}; delete it, choose another checkpoint path, or start over (resume=False)")
    try:
        mapper.load_state_dict({k[len("mapper."):]: v for k, v in tensors.items() if k.startswith("mapper.")})
        _load_optimizer(optimizer, tensors, opt_meta)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: the checkpoint's tensors do not fit this run ({e}); delete it or pass "
                              f"resume=False") from e
    hist = tensors.get("history")
    if hist is None or hist.ndim != 2 or hist.shape[0] != step or hist.shape[1] != len(keys):
        raise CheckpointError(f"{path}: the loss history does not match step {step}; the checkpoint is damaged: "
                              f"delete it or start over (resume=False)")
    return step, [dict(zip(keys, row)) for row in hist.tolist()]


def train_latent_mapper(G, clip, text_embedding: torch.Tensor, *, config: MapperConfig = DEFAULTS,
                        latents: Optional[Union[torch.Tensor, Latent]] = None, id_loss=None,
                        checkpoint_path: Optional[PathLike] = None, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                        resume: bool = True, callback: Optional[ProgressCallback] = None,
                        preview_every: int = DEFAULT_PREVIEW_EVERY, seed: int = 0) -> MapperTrainResult:
    """Train a latent mapper for one text (StyleCLIP sec. 5; loss eq. 3, see the module docstring).

    Args:
        G: the generator (any num_ws; never modified, used under `torch.inference_mode()` too).
        clip: has `encode_image(images [-1, 1], normalize=..., resample=...) -> normalised [N, D]`
            (differentiable), e.g. `core.models.clip.ClipModel`; it may sit on another device than G.
        text_embedding: `[D]` or `[1, D]` (normalised here). The reference encodes the bare prompt,
            `clip.encode_text(prompt)`, without templates.
        config: hyperparameters (`MapperConfig`; the reference's by default).
        latents: the training set: w+ `[M, num_ws, w_dim]`, w `[M, w_dim]` or a `core.Latent` (e.g. inversions
            of real photos, as the reference recommends); None samples `config.num_train_latents` w from G's
            mapping with `config.truncation_psi` and `seed`.
        id_loss: `id_loss(images, reference_images) -> scalar` (e.g. `core.losses.arcface.IDLoss(arcface)`);
            needed when `config.id_lambda > 0`.
        checkpoint_path: where to keep the training state (safetensors). None: no checkpoints.
        checkpoint_every: steps between checkpoints (one is also written after the last step, and when the
            callback raises).
        resume: continue from the checkpoint at `checkpoint_path` if there is one (the result equals an
            uninterrupted run); False starts over and overwrites it.
        callback: called after every step with a `MapperProgress`; it may raise to cancel (the exception
            propagates after the checkpoint is written), or return `core.optimize.FINISH` to end after this step
            (the checkpoint is written and the mapper trained so far is returned).
        preview_every: steps between preview images in the progress (also at the first and last step).
        seed: initial weights, sampled latents and data order.
    Returns:
        MapperTrainResult with the mapper (on G's device) and the per-step loss history.
    """
    _check_config(config)
    if config.id_lambda > 0 and id_loss is None:
        raise ValueError(f"id_lambda is {config.id_lambda:g} but no identity loss was given: pass id_loss (load "
                         f"ArcFace) or set id_lambda to 0 (for generators that do not make faces)")
    if int(checkpoint_every) < 1 or int(preview_every) < 1:
        raise ValueError(f"checkpoint_every and preview_every must be >= 1, got {checkpoint_every}, {preview_every}")
    path = None if checkpoint_path is None else Path(checkpoint_path)
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        work = autograd_ready(G)  # a copy only when G holds inference-mode tensors
        device = work.w_avg.device
        train = _training_ws(work, latents, config, seed, device)
        if text_embedding.ndim not in (1, 2) or (text_embedding.ndim == 2 and text_embedding.shape[0] != 1):
            raise ValueError(f"text_embedding must be one embedding [D] or [1, D], got {list(text_embedding.shape)}: "
                             f"a mapper learns one text")
        text = F.normalize(autograd_ready(text_embedding.detach()).to(device).float().reshape(1, -1), dim=-1)
        batch_size = min(config.batch_size, len(train))
        if batch_size < config.batch_size:
            logger.info("latent mapper: %d training latents, batches of %d instead of %d", len(train), batch_size,
                        config.batch_size)
        mapper = LatentMapper(work.w_dim, work.num_ws, coarse=config.coarse, medium=config.medium, fine=config.fine,
                              num_layers=config.num_layers, lr_multiplier=config.lr_multiplier,
                              pixel_norm=config.pixel_norm, seed=seed).to(device).train()
        params = list(mapper.parameters())
        optimizer = _make_optimizer(params, config)
        keys = _history_keys(config)
        signature = _run_signature(work, clip, text, train, config, seed, sampled=latents is None)
        start, history = 0, []
        if path is not None and resume and path.exists():
            start, history = _load_checkpoint(path, mapper, optimizer, signature)
            if start > config.num_steps:
                raise ValueError(f"{path} has already trained {start} steps, more than num_steps {config.num_steps}; "
                                 f"raise num_steps, or start over (resume=False)")
            logger.info("latent mapper: resuming %s at step %d of %d", path, start, config.num_steps)

        def embed(images: torch.Tensor) -> torch.Tensor:  # CLIP may sit on another device than the generator
            if config.clip_resample == "reference":
                return clip.encode_image(reference_clip_pool(images), normalize=config.clip_normalize).to(device)
            return clip.encode_image(images, normalize=config.clip_normalize,
                                     resample=config.clip_resample).to(device)

        def render(ws: torch.Tensor, step: int) -> torch.Tensor:
            gen = None
            if config.noise_mode == "random":  # per-step noise from (seed, step): reproducible when resumed
                gen = torch.Generator(device=device).manual_seed(_derived_seed(seed, "noise", step))
            return work.synthesis(ws, noise_mode=config.noise_mode, generator=gen)

        def as_ws(w: torch.Tensor) -> torch.Tensor:  # [B, C] -> [B, num_ws, C]
            return w.unsqueeze(1).repeat(1, work.num_ws, 1) if w.ndim == 2 else w

        order = _BatchOrder(len(train), batch_size, seed)
        preview_ws, preview_original = as_ws(train[:1]), None
        ckpt = Checkpoint(path, lambda p: _save_checkpoint(p, mapper, optimizer, ckpt.step, history, keys, signature),
                          start=start, every_steps=checkpoint_every, what="latent mapper")
        for step in range(start, config.num_steps):
            with ckpt.on_interrupt():  # a step that fails (out of memory, divergence) keeps every completed one
                w = as_ws(train[order.indices(step).to(device)])
                w_hat = w + RESIDUAL_SCALE * mapper(w)
                x_hat = render(w_hat, step)
                terms: dict[str, torch.Tensor] = {}
                loss = torch.zeros((), device=device)
                # The reference's order of terms (coach.py calc_loss): ID, CLIP, latent L2.
                if config.id_lambda > 0:
                    with torch.no_grad():  # the unedited images: only the identity term needs them
                        x = render(w, step)
                    terms["id"] = id_loss(x_hat, x)
                    loss = loss + config.id_lambda * terms["id"]
                if config.clip_lambda > 0:
                    terms["clip"] = clip_global_loss(embed(x_hat), text).mean()
                    loss = loss + config.clip_lambda * terms["clip"]
                terms["l2"] = F.mse_loss(w_hat, w)
                loss = loss + config.l2_lambda * terms["l2"]
                check_finite(loss, terms, step=step + 1, what="latent mapper training")
                descend(optimizer, loss, inputs=params)  # gradients for the mapper only: nothing accumulates on G
            record = loss_values(terms, loss)
            history.append(record)
            done = step + 1
            ckpt.completed(done, final=done == config.num_steps)
            if callback is None:
                continue
            with ckpt.on_interrupt():  # cancelled (or the preview failed): keep every completed step
                image = original = None
                if done % preview_every == 0 or done == start + 1 or done == config.num_steps:
                    with torch.no_grad():
                        if preview_original is None:
                            preview_original = render(preview_ws, -1).detach()
                        image = render(mapper.apply(preview_ws), -1).detach()
                        original = preview_original
                answer = callback(MapperProgress(done, config.num_steps, "train", record, image, reference=original))
            if finish_requested(answer):  # "Finish now": keep what is trained, on disk too
                ckpt.finish()
                break
    mapper.eval().requires_grad_(False)
    mapper.info = MapperInfo(generator=_generator_ref(G), config=config)
    return MapperTrainResult(mapper, history, time.perf_counter() - t0, start, config)


# ------------------------------------------------------------------------------------------------
# Mapper files


def _config_from_json(data: Optional[dict]) -> Optional[MapperConfig]:
    if not isinstance(data, dict):
        return None
    known = {f.name for f in dataclasses.fields(MapperConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
    try:
        return MapperConfig(**values)
    except TypeError:
        return None


def save_mapper(mapper: LatentMapper, path: PathLike, *, generator_ref: Union[GeneratorRef, "torch.nn.Module"],
                text: str = "", config: Optional[MapperConfig] = None) -> Path:
    """Write `mapper` as safetensors (weights as float32) with metadata: format tag, architecture, the generator
    it was trained for (`GeneratorRef`, or the generator itself), the prompt and the training config. Atomic."""
    ref = generator_ref if isinstance(generator_ref, GeneratorRef) else _generator_ref(generator_ref)
    if (ref.num_ws, ref.w_dim) != (mapper.num_ws, mapper.w_dim):
        raise ValueError(f"the mapper edits {mapper.num_ws} x {mapper.w_dim} latents but {ref.name} has "
                         f"{ref.num_ws} x {ref.w_dim}: pass the generator it was trained with")
    config = config if config is not None else mapper.info.config
    meta = {"version": FORMAT_VERSION, "architecture": mapper.architecture(), "generator": ref.to_dict(),
            "text": str(text or mapper.info.text), "config": None if config is None else dataclasses.asdict(config)}
    tensors = {k: v.detach().to("cpu", torch.float32) for k, v in mapper.state_dict().items()}
    return write_safetensors(path, tensors, format=MAPPER_FORMAT, metadata=meta)


REFERENCE_GROUP_NAMES = {"coarse": "course_mapping", "medium": "medium_mapping", "fine": "fine_mapping"}  # sic


def load_reference_mapper(path: PathLike) -> LatentMapper:
    """Read a mapper trained by the StyleCLIP reference (`mapper/scripts/train.py`; its published mappers such as
    `afro.pt`, `mohawk.pt`): a `torch.save` dict with `state_dict` (`mapper.course_mapping.mapping.1.weight`, ...,
    plus the `decoder.` generator it was trained with) and `opts` (the training options, `description` = prompt).

    Read with the safe loader (tensors and plain data only, nothing executed). Only LevelsMapper in W+ is
    supported (the reference's default and every published mapper). The result uses the reference's PixelNorm
    (over the layer axis, pixel_norm='layers'), so it edits exactly as the reference's `inference.py` does. The
    file's generator can be loaded on its own with Load StyleGAN (the same file).
    """
    from ..loaders import read_torch_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent mapper not found: {path}")
    data = read_torch_file(path)
    try:
        return _reference_mapper_from(data, path)
    except CheckpointError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError) as e:  # safe to load, but not what coach.py writes
        raise CheckpointError(f"{path}: not a valid StyleCLIP mapper checkpoint ({type(e).__name__}: {e})") from e


def _reference_mapper_from(data, path: Path) -> LatentMapper:
    state = data.get("state_dict") if isinstance(data, dict) else None
    opts = data.get("opts") if isinstance(data, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith("mapper.") for k in state):
        raise CheckpointError(f"{path}: not a StyleCLIP mapper checkpoint (expected a dict with a 'state_dict' holding "
                              f"'mapper.*' tensors, as mapper/training/coach.py saves); for mappers trained here, "
                              f"use the .safetensors file")
    opts = vars(opts) if hasattr(opts, "__dict__") and not isinstance(opts, dict) else (opts or {})
    if opts.get("work_in_stylespace") or opts.get("mapper_type", "LevelsMapper") != "LevelsMapper":
        raise CheckpointError(f"{path}: a StyleCLIP {'StyleSpace' if opts.get('work_in_stylespace') else ''} "
                              f"{opts.get('mapper_type', '')} mapper; only LevelsMapper in W+ (the reference's "
                              f"default, and every published mapper) is supported")
    size = int(opts.get("stylegan_size", 1024))
    if size < 4 or size & (size - 1):
        raise CheckpointError(f"{path}: stylegan_size {size} in its options is not a power of two")
    num_ws = 2 * size.bit_length() - 4  # 2·log2(size) - 2: 18 at 1024 px
    present = {g for g, ref in REFERENCE_GROUP_NAMES.items() if f"mapper.{ref}.mapping.1.weight" in state}
    first = state[f"mapper.{REFERENCE_GROUP_NAMES[min(present, key=list(GROUPS).index)]}.mapping.1.weight"] \
        if present else None
    if first is None or first.ndim != 2:
        raise CheckpointError(f"{path}: the mapper has no coarse, medium or fine network")
    w_dim = int(first.shape[1])
    try:
        mapper = LatentMapper(w_dim, num_ws, coarse="coarse" in present, medium="medium" in present,
                              fine="fine" in present, pixel_norm="layers")
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    renamed = {}
    for g in mapper.groups:
        for idx in range(mapper.num_layers):  # mapping.0 is the PixelNorm; its EqualLinears are mapping.1-4
            for kind in ("weight", "bias"):
                key = f"mapper.{REFERENCE_GROUP_NAMES[g]}.mapping.{idx + 1}.{kind}"
                if key not in state:
                    raise CheckpointError(f"{path}: {key} is missing; the file is not a complete StyleCLIP mapper")
                renamed[f"{g}.fc{idx}.{kind}"] = state[key].float()
    extra = sorted(k for k in state if k.startswith("mapper.") and not any(
        k.startswith(f"mapper.{REFERENCE_GROUP_NAMES[g]}.mapping.") for g in mapper.groups))
    if extra:
        raise CheckpointError(f"{path}: unexpected mapper tensors {extra[:4]}: not a LevelsMapper")
    expected = mapper.state_dict()
    wrong = sorted(k for k, v in expected.items() if tuple(renamed[k].shape) != tuple(v.shape))
    if wrong:
        raise CheckpointError(f"{path}: tensors of the wrong shape for a {w_dim}-wide mapper: {wrong[:4]}")
    mapper.load_state_dict(renamed)
    # The generator it was trained with (the file's decoder, rosinality's FFHQ config-f for the published ones):
    # described, not fingerprinted (that would mean building it); any generator of this shape is accepted.
    ref = GeneratorRef(name=f"the StyleCLIP generator of {path.name} ({size} px)", fingerprint="", arch="stylegan2",
                       z_dim=w_dim, w_dim=w_dim, num_ws=num_ws, c_dim=0)
    mapper.info = MapperInfo(text=str(opts.get("description", "")), generator=ref)
    return mapper.eval().requires_grad_(False)


def load_mapper(path: PathLike, G=None) -> LatentMapper:
    """Read a mapper written by `save_mapper` (safetensors), or a StyleCLIP reference mapper `.pt`
    (`load_reference_mapper`); on CPU, or on G's device when G is given; eval mode, no grad.

    With G, checks that it has the num_ws × w_dim the mapper was trained for (CheckpointError otherwise) and logs
    when its weights differ from those of the training generator. Every tensor's name and shape is checked.
    """
    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth"):
        return _fit_to_generator(load_reference_mapper(path), path, G)
    tensors, meta = read_safetensors(path, what="latent mapper", format=MAPPER_FORMAT,
                                     hint="use a file written by save_mapper / Save Latent Mapper")
    try:
        arch = json.loads(meta["architecture"])
        ref_data = json.loads(meta.get("generator", "null"))
        ref = None if ref_data is None else GeneratorRef(**ref_data)
        config = _config_from_json(json.loads(meta.get("config", "null")))
        groups = set(arch["groups"])
        mapper = LatentMapper(int(arch["w_dim"]), int(arch["num_ws"]), coarse="coarse" in groups,
                              medium="medium" in groups, fine="fine" in groups, num_layers=int(arch["num_layers"]),
                              lr_multiplier=float(arch["lr_multiplier"]), pixel_norm=arch["pixel_norm"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged latent-mapper metadata ({e})") from e
    expected = mapper.state_dict()
    if set(tensors) != set(expected) or any(tuple(tensors[k].shape) != tuple(v.shape) for k, v in expected.items()):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k].shape))
        raise CheckpointError(f"{path}: tensors do not match the stored architecture (missing {missing}, unexpected "
                              f"{unexpected}, wrong shape {wrong})")
    mapper.load_state_dict(tensors)
    mapper.info = MapperInfo(text=meta.get("text", ""), generator=ref, config=config)
    return _fit_to_generator(mapper, path, G)


def _fit_to_generator(mapper: LatentMapper, path: Path, G) -> LatentMapper:
    ref = mapper.info.generator
    name = ref.name if ref is not None else "an unknown generator"
    if G is not None:
        g = _generator_ref(G)
        if (g.num_ws, g.w_dim) != (mapper.num_ws, mapper.w_dim):
            raise CheckpointError(f"{path}: this latent mapper was trained for {name} (num_ws {mapper.num_ws} x "
                                  f"w_dim {mapper.w_dim}), but {g.name} has num_ws {g.num_ws} x w_dim {g.w_dim}; "
                                  f"load {name}, or train a mapper for {g.name}")
        if ref is not None and ref.fingerprint and ref.fingerprint != g.fingerprint:
            logger.info("using a latent mapper trained for %s with %s (same shape, different weights)", name, g.name)
        mapper = mapper.to(G.w_avg.device)
    return mapper.eval().requires_grad_(False)
