"""Training a weight shift (PRMU 2022, seed 003): optimise x added to one convolution's weights so the image
matches a text, and the layer scan that picks the layer with evidence.

L(x) = λ_clip · D_CLIP(G_{θ+kx}(w), T) + λ_l2 · ‖x‖₂
       [+ λ_id · (1 − cos(ArcFace(G_{θ+kx}(w)), ArcFace(G_θ(w)))) + λ_lpips · LPIPS(G_θ(w), G_{θ+kx}(w))]

with ‖x‖₂ the L2 NORM (not squared), as the paper writes it. D_CLIP is either

- 'global' (the seed paper, StyleCLIP's D_CLIP): 1 − cos(E_I(G_{θ+kx}(w)), E_T(T)), or
- 'directional' (StyleGAN-NADA, Gal et al. 2021, eq. 2): 1 − cos(E_I(G_{θ+kx}(w)) − E_I(G_θ(w)),
  E_T(T) − E_T(T_neutral)), which edits only what differs between the two texts.

Only x is optimised (Adam, zeros init, float32, the layer's raw stored-weight shape); the generator is frozen and
never modified (the run works on a copy that shares its tensors, `share_generator`, with W + k·x in place of W).
Because only x requires grad, autograd stores nothing before the shifted layer, and those stages run once per
batch without autograd (staged synthesis: `synthesis.run(stop=<stage before>)`, then the rest from there); with
one fixed latent that prefix, and the unshifted reference image, are computed once for the whole run. Measured at
256 px on 2 loaded CPU cores (one latent): 10.3 s per step on b16.conv1 against 11.1 s for a CLIP Latent Optimize
step, peak memory +435 MiB against +534 MiB. Batch mode with the directional loss (or identity/LPIPS) also renders
each fresh batch unshifted, without autograd, for the reference: ~1.3-1.6x a one-latent step (18 s there).

Directional loss at x = 0: E_I(G_{θ+0·x}) − E_I(G_θ) is zero (or float noise: the images are bit-identical, but
CLIP's no-grad path rounds differently, ~1e-7), so the cosine is 0/0: its gradient through the normalisation
points in an arbitrary direction with a size of 1/‖noise‖ (up to 1e12), which Adam's second moment would then
remember for thousands of steps. The first step therefore descends the linearised loss
1 − ⟨E_I(G_{θ+kx}(w)) − E_I(G_θ(w)), ΔT⟩ (same value, 1, at x = 0; gradient −Jᵀ·ΔT, the direction that moves
the image embedding along the text direction), and Adam's moments start afresh at step 2.

Text prompts are encoded with `clip.encode_text`; `templates` (e.g. `core.models.clip.IMAGENET_TEMPLATES`, CLIP's
80 ImageNet templates) averages each prompt over templates as NADA does with its 79 (NADA averages the
template-wise differences; we difference the template-averaged embeddings: close, not identical). Off by default:
the plain prompt, as the seed paper uses it.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from ...latents import Latent, latent_to_ws
from ...losses.clip import clip_directional_loss, clip_global_loss, text_direction
from ...networks.staging import SynthesisState
from ...optimize import (ProgressCallback, StepProgress, autograd_ready, check_finite, descend, finish_requested,
                         loss_values, trainable)
from .shift import (MAX_K, ShiftLayer, WeightShift, applied_shifts, conv_layers, find_layer, make_shift, set_tensor,
                    share_generator)

LOSSES = ("directional", "global")
MAX_BATCH = 64          # images per step in batch mode (the paper uses one; NADA 2)
MAX_POOL = 4096         # latents in batch mode's pool


@dataclass(frozen=True)
class WeightShiftConfig:
    """The defaults of `train_weight_shift` and `scan_layers` (methods-edits A.5: the seed leaves them open)."""

    steps: int = 200                 # Adam steps (the spec's reference; the seed reports ~90 s per edit)
    lr: float = 2e-3                 # same order as NADA's 1.6e-3 on raw weights (ours are ~N(0, 1))
    lambda_clip: float = 10.0        # λ1 of the seed paper
    lambda_l2: float = 0.05          # λ2: the seed uses 0.01–0.1 per edit
    k_train: float = 1.0             # the strength the shift is trained at
    batch: int = 2                   # fresh z per step in batch mode (NADA's batch)
    truncation_psi: float = 0.7      # for those z
    pool: int = 16                   # batch mode draws its latents from this many (0: fresh z every step, as NADA)
    recommended_k: tuple = (-3.0, 3.0)   # the seed renders k in −3..3
    scan_steps: int = 10             # steps per candidate layer in `scan_layers`


DEFAULTS = WeightShiftConfig()


@dataclass
class WeightShiftResult:
    """What `train_weight_shift` returns. `image_before` / `image_after` `[N, 3, R, R]` in [-1, 1] are the
    evaluation latents (the given latent; in batch mode the first step's batch) at k = 0 and k = k_train;
    `clip_before` / `clip_after` `[N]` the run's CLIP term on them (for 'directional' the term at k = 0 is 1 by
    definition: no change has no direction)."""

    shift: WeightShift
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    image_before: Optional[torch.Tensor] = None
    image_after: Optional[torch.Tensor] = None
    clip_before: Optional[torch.Tensor] = None
    clip_after: Optional[torch.Tensor] = None

    def report(self) -> str:
        m = self.shift.metadata
        total = m.get("steps_planned", m.get("steps"))
        lines = [f"weight shift '{m.get('prompt')}' on {m.get('layer')} ({m.get('loss')} CLIP loss, "
                 f"{m.get('mode')} mode{', two-sided' if m.get('two_sided') else ''}): {m.get('steps')} of "
                 f"{total} steps in {self.seconds:.1f} s, ‖x‖ = {self.shift.norm():.4g}"]
        if self.clip_before is not None and self.clip_after is not None:
            for i, (a, b) in enumerate(zip(self.clip_before.tolist(), self.clip_after.tolist())):
                lines.append(f"image {i}: CLIP term {a:.4f} -> {b:.4f} at k = {m.get('k_train'):g}")
        return "\n".join(lines)


class LayerScanRow(NamedTuple):
    layer: str                   # 'b16.conv1'
    gain: float                  # CLIP term at k = 0 minus after the short run, at k = k_train (mean over images)
    loss_before: float           # the CLIP term at k = 0 (mean)
    loss_after: float            # the CLIP term with the short run's x at k = k_train (mean)
    image: torch.Tensor          # [N, 3, R, R] in [-1, 1]: the evaluation latents at k = k_train


@dataclass
class LayerScanResult:
    """`rows` in the generator's layer order, `ranking` the layer names by gain (best first), `sheet` the contact
    sheet `[1, 3, H, W]` in [-1, 1] (per evaluation image one row: the image before, then each layer's after
    image, labelled with its name and gain)."""

    rows: list[LayerScanRow]
    ranking: list[str]
    sheet: torch.Tensor
    image_before: Optional[torch.Tensor] = None
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def report(self) -> str:
        s = self.settings
        lines = [f"layer scan for '{s.get('prompt')}' ({s.get('loss')} CLIP loss, {s.get('steps')} steps per "
                 f"layer, {len(self.rows)} layers) in {self.seconds:.1f} s; CLIP gain = CLIP term drop at "
                 f"k = {s.get('k_train', 1.0):g}, best first:"]
        by_name = {r.layer: r for r in self.rows}
        for rank, name in enumerate(self.ranking, 1):
            r = by_name[name]
            lines.append(f"{rank:2d}. {name}: gain {r.gain:+.4f} ({r.loss_before:.4f} -> {r.loss_after:.4f})")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Checks


def _finite(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value:g}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value:g}")
    return value


def _text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty text prompt, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------
# The objective


class _Batch(NamedTuple):
    ws: torch.Tensor                       # [N, num_ws, w_dim]
    seed: int                              # noise seed of this batch (noise_mode 'random')
    index: Optional[tuple] = None          # which latents of the pool (batch mode with a pool)


class _Objective:
    """One run's fixed parts: the frozen generator (`work`), its sharing copy (`view`), CLIP and the texts, the
    latent source, the loss settings. `loss(x, k, ...)` is one step's loss; `prepare(layer)` caches per layer."""

    def __init__(self, G, clip, text: str, *, neutral_text: Optional[str], latents: Optional[Latent], loss: str,
                 lambda_clip: float, lambda_l2: float, k_train: float, batch: int, truncation_psi: float, seed: int,
                 two_sided: bool, identity, lambda_id: float, lpips, lambda_lpips: float, clip_normalize: bool,
                 noise_mode: str, templates: Optional[Sequence[str]], pool: int = 0):
        self.clip, self.loss_kind = clip, loss
        self.lambda_clip, self.lambda_l2, self.k_train = lambda_clip, lambda_l2, k_train
        self.two_sided, self.noise_mode, self.clip_normalize = two_sided, noise_mode, clip_normalize
        self.identity = identity if lambda_id > 0 else None
        self.lpips = lpips if lambda_lpips > 0 else None
        self.lambda_id, self.lambda_lpips = lambda_id, lambda_lpips
        self.work = autograd_ready(G)
        self.view = share_generator(self.work)
        self.device = self.work.w_avg.device
        self.seed, self.batch_size, self.psi = int(seed), int(batch), float(truncation_psi)
        enc = (lambda t: clip.encode_text([t], templates=templates)) if templates is not None else \
            (lambda t: clip.encode_text([t]))
        self.t_text = F.normalize(enc(text).detach().to(self.device).float().reshape(1, -1), dim=-1)
        self.t_neutral = None if neutral_text is None else \
            F.normalize(enc(neutral_text).detach().to(self.device).float().reshape(1, -1), dim=-1)
        if self.t_neutral is not None:
            self.direction = {+1: text_direction(self.t_text, self.t_neutral),
                              -1: text_direction(self.t_neutral, self.t_text)}
        self.target = {+1: self.t_text, -1: self.t_neutral}
        self.fixed_ws = None if latents is None else latent_to_ws(self.work, latents).detach().to(self.device).float()
        self.pool_ws = None if latents is not None or not pool else self._sample(self.seed * 1_000_003 - 1, int(pool))
        self._order: list[int] = []
        self.layer: Optional[ShiftLayer] = None
        self._cache: dict = {}

    @property
    def mode(self) -> str:
        return "batch" if self.fixed_ws is None else "latent"

    @property
    def needs_base(self) -> bool:
        """Whether each step needs the unshifted render (the directional reference, identity, LPIPS)."""
        return self.loss_kind == "directional" or self.identity is not None or self.lpips is not None

    def embed(self, images: torch.Tensor) -> torch.Tensor:  # CLIP may sit on another device than the generator
        return self.clip.encode_image(images, normalize=self.clip_normalize).to(self.device).float()

    # -- latents ------------------------------------------------------------------------------------

    def _sample(self, stream: int, n: int) -> torch.Tensor:
        """`n` w+ `[n, num_ws, w_dim]` from z of random stream `stream`, mapped at ψ (a random class per image for a
        conditional generator, from the same stream)."""
        g = torch.Generator().manual_seed(stream)
        z = torch.randn([n, self.work.z_dim], generator=g)
        c = None
        if self.work.c_dim:
            c = F.one_hot(torch.randint(self.work.c_dim, [n], generator=g), self.work.c_dim).float().to(self.device)
        with torch.no_grad():
            return self.work.mapping(z.to(self.device), c, truncation_psi=self.psi).detach()

    def batch(self, step: int) -> _Batch:
        """The latents of step `step` (0-based): the fixed latent; in batch mode the next `batch` latents of the
        pool (each pass over the pool in a new random order, from `seed`), or without a pool fresh z from
        (seed, step)."""
        stream = self.seed * 1_000_003 + step
        if self.fixed_ws is not None:
            return _Batch(self.fixed_ws, self.seed)
        if self.pool_ws is None:
            return _Batch(self._sample(stream, self.batch_size), stream)
        need = (step + 1) * self.batch_size
        while len(self._order) < need:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 - 2 - len(self._order))
            self._order += torch.randperm(self.pool_ws.shape[0], generator=g).tolist()
        index = tuple(self._order[need - self.batch_size:need])
        return _Batch(self.pool_ws[list(index)], stream, index)

    # -- rendering ----------------------------------------------------------------------------------

    def use_layer(self, layer: ShiftLayer) -> None:
        """Train on `layer` from now on (the cached prefix and reference belong to the previous one)."""
        self.layer = layer
        self._cache = {}
        stages = list(self.work.synthesis.stages)
        i = stages.index(layer.stage)
        self.prefix_stop = stages[i - 1] if i > 0 else None
        self.weight = dict(self.work.named_parameters())[layer.param].detach()

    def _noise_generator(self, b: _Batch) -> Optional[torch.Generator]:
        if self.noise_mode != "random":
            return None
        return torch.Generator(device=self.device).manual_seed(b.seed)

    def prefix(self, b: _Batch) -> Optional[SynthesisState]:
        """The render state before the layer's stage (no autograd; cached for a fixed latent)."""
        if self.prefix_stop is None:
            return None
        if self.fixed_ws is not None and "prefix" in self._cache:
            return self._cache["prefix"]
        with torch.no_grad():
            state = self.work.synthesis.run(b.ws, stop=self.prefix_stop, noise_mode=self.noise_mode,
                                            generator=self._noise_generator(b))
        state = state._replace(x=state.x.detach(), img=None if state.img is None else state.img.detach())
        if self.fixed_ws is not None:
            self._cache["prefix"] = state
        return state

    def render(self, synthesis, b: _Batch, prefix: Optional[SynthesisState], *, staged: bool = True) -> torch.Tensor:
        """The image of batch `b` from `prefix` (or, `staged=False`, a plain full forward), `[N, 3, R, R]`."""
        gen = self._noise_generator(b)
        if not staged or prefix is None:
            if gen is not None and prefix is None and self.prefix_stop is not None:
                # The same noise as the staged path draws: the prefix first, then the rest.
                state = synthesis.run(b.ws, stop=self.prefix_stop, noise_mode=self.noise_mode, generator=gen)
                return synthesis.run(b.ws, start=state.stage, x=state.x, img=state.img, noise_mode=self.noise_mode,
                                     generator=gen).img.contiguous()
            return synthesis(b.ws, noise_mode=self.noise_mode, generator=gen)
        if gen is not None:   # skip the prefix's draws so both paths see the same noise
            with torch.no_grad():
                synthesis.run(b.ws, stop=self.prefix_stop, noise_mode=self.noise_mode, generator=gen)
        return synthesis.run(b.ws, start=prefix.stage, x=prefix.x, img=prefix.img, noise_mode=self.noise_mode,
                             generator=gen).img.contiguous()

    def base(self, b: _Batch, prefix: Optional[SynthesisState]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, CLIP embedding) of the unshifted generator (no autograd; cached for a fixed latent, and per pool
        latent in batch mode: a pool latent's reference is rendered once, not at every step it is drawn; with
        random noise the reference depends on the step's noise, so it is rendered each time)."""
        if self.fixed_ws is not None and "base" in self._cache:
            return self._cache["base"]
        pooled = b.index is not None and self.noise_mode != "random"
        if pooled:
            cached = self._cache.setdefault("pool", {})
            if all(i in cached for i in b.index):
                imgs, embs = zip(*(cached[i] for i in b.index))
                return torch.stack(imgs), torch.stack(embs)
        with torch.no_grad():
            img = self.render(self.work.synthesis, b, prefix).detach()
            out = (img, self.embed(img).detach())
        if self.fixed_ws is not None:
            self._cache["base"] = out
        elif pooled:
            for j, i in enumerate(b.index):
                cached[i] = (out[0][j], out[1][j])
        return out

    def shifted(self, x: torch.Tensor, k: float) -> None:
        """Put W + k·x in the view (differentiable in x)."""
        set_tensor(self.view, self.layer.param, self.weight + (k * x).to(self.weight.dtype))

    # -- the loss -----------------------------------------------------------------------------------

    def clip_term(self, emb: torch.Tensor, base_emb: Optional[torch.Tensor], sign: int, *,
                  linear: bool = False) -> torch.Tensor:
        """The CLIP term per image `[N]` (`sign` −1: the two-sided run's opposite side, texts swapped)."""
        if self.loss_kind == "global":
            return clip_global_loss(emb, self.target[sign])
        if linear:   # x = 0: the cosine is 0/0; its linearisation (see the module docstring)
            return 1 - ((emb - base_emb) * self.direction[sign]).sum(-1)
        return clip_directional_loss(emb, base_emb, self.direction[sign])

    def loss(self, x: torch.Tensor, k: float, b: _Batch, *, staged: bool = True, linear: bool = False):
        """(total, {term: value}, image) of one step at strength k on batch `b`."""
        sign = 1 if k > 0 else -1
        prefix = self.prefix(b)
        base_img = base_emb = None
        if self.needs_base:
            base_img, base_emb = self.base(b, prefix)
        self.shifted(x, k)
        images = self.render(self.view.synthesis, b, prefix if staged else None, staged=staged)
        clip_term = self.clip_term(self.embed(images), base_emb, sign, linear=linear).mean()
        l2 = x.norm()   # ‖x‖₂, the paper's norm (its gradient at x = 0 is 0 in PyTorch)
        terms = {"clip": clip_term, "l2": l2}
        loss = self.lambda_clip * clip_term + self.lambda_l2 * l2
        if self.identity is not None:
            terms["id"] = self.identity(images, base_img)
            loss = loss + self.lambda_id * terms["id"]
        if self.lpips is not None:
            from ..inversion import downsample_to
            terms["lpips"] = self.lpips(downsample_to(images), downsample_to(base_img)).mean()
            loss = loss + self.lambda_lpips * terms["lpips"]
        return loss, terms, images

    @torch.no_grad()
    def evaluate(self, x: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image before, image after, CLIP term before, after) `[N, ...]` on the evaluation latents (step 0's),
        after at k = +k_train."""
        b = self.batch(0)
        prefix = self.prefix(b)
        before = self.render(self.work.synthesis, b, prefix).detach()
        e0 = self.embed(before)
        if self.loss_kind == "global":
            c0 = clip_global_loss(e0, self.t_text)
        else:
            c0 = torch.ones(before.shape[0], device=self.device)
        if x is None:
            return before, before, c0, c0
        self.shifted(x.detach(), self.k_train)
        after = self.render(self.view.synthesis, b, prefix).detach()
        c1 = self.clip_term(self.embed(after), e0, +1)
        return before, after, c0, c1


# ------------------------------------------------------------------------------------------------
# The loop


def _optimise(obj: _Objective, lr: float, steps: int, *, callback: Optional[ProgressCallback], phase: str,
              step_offset: int = 0, total: Optional[int] = None) -> tuple[torch.Tensor, list[dict]]:
    """Adam on x for `steps` steps on `obj.layer`; returns (x, history). Ends early on FINISH."""
    layer = obj.layer
    x = trainable(torch.zeros(layer.shape, device=obj.device, dtype=torch.float32))
    optimizer = torch.optim.Adam([x], lr=lr)
    history: list[dict] = []
    total = steps if total is None else total
    for step in range(steps):
        k = obj.k_train if not (obj.two_sided and step % 2 == 1) else -obj.k_train
        first = step == 0 and obj.loss_kind == "directional"
        loss, terms, images = obj.loss(x, k, obj.batch(step), linear=first)
        check_finite(loss, terms, step=step + 1, what="weight shift training",
                     hint="lower the learning rate or lambda_clip")
        descend(optimizer, loss, inputs=[x])
        if first:   # the linearised first step's gradient scale must not stay in Adam's moments
            optimizer = torch.optim.Adam([x], lr=lr)
        record = loss_values(terms, loss)
        history.append(dict(record, k=k))
        if callback is not None:
            answer = callback(StepProgress(step_offset + step + 1, total, phase, record, images.detach(),
                                           {f"shift/{layer.param}": x.detach().clone()}))
            if finish_requested(answer):
                break
    return x.detach(), history


def _setup(G, clip, text, *, neutral_text, latents, loss, steps, lr, lambda_clip, lambda_l2, k_train, batch,
           truncation_psi, seed, two_sided, identity, lambda_id, lpips, lambda_lpips, clip_normalize, noise_mode,
           templates, pool=0) -> tuple[_Objective, str]:
    text = _text("text", text)
    if neutral_text is not None:
        neutral_text = _text("neutral_text", neutral_text)
    if loss is None:
        loss = "directional" if neutral_text is not None else "global"
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "directional" and neutral_text is None:
        raise ValueError("the directional CLIP loss needs neutral_text (what the image is before the edit, e.g. "
                         "'a face' for 'a face with a big nose'); give one, or choose loss='global'")
    if two_sided and neutral_text is None:
        raise ValueError("a two-sided run trains k = −k_train toward neutral_text: give neutral_text, or turn "
                         "two_sided off")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    _finite("lr", lr, positive=True)
    for name, v in (("lambda_clip", lambda_clip), ("lambda_l2", lambda_l2), ("lambda_id", lambda_id),
                    ("lambda_lpips", lambda_lpips)):
        _finite(name, v, nonnegative=True)
    k_train = _finite("k_train", k_train, positive=True)
    if k_train > MAX_K:
        raise ValueError(f"k_train must be within (0, {MAX_K:g}], got {k_train:g}")
    _finite("truncation_psi", truncation_psi)
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be an integer 1..{MAX_BATCH}, got {batch!r}")
    if lambda_id > 0 and identity is None:
        raise ValueError(f"lambda_id is {lambda_id:g} but no identity loss was given: pass identity "
                         f"(core.losses.arcface.IDLoss(arcface)), or set lambda_id to 0")
    if lambda_lpips > 0 and lpips is None:
        raise ValueError(f"lambda_lpips is {lambda_lpips:g} but no LPIPS network was given: pass lpips "
                         f"(core.losses.perceptual.load_lpips('vgg')), or set lambda_lpips to 0")
    if noise_mode not in ("const", "random", "none"):
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
    if isinstance(pool, bool) or not isinstance(pool, numbers.Integral) or not (pool == 0 or batch <= pool <= MAX_POOL):
        raise ValueError(f"pool must be 0 (fresh latents every step) or a whole number of latents from batch "
                         f"({batch}) to {MAX_POOL}, got {pool!r}")
    if applied_shifts(G):
        raise ValueError("train the shift on the unshifted generator: this one already has weight shifts applied "
                         "(connect the loaded generator, not the output of Apply Weight Shifts)")
    obj = _Objective(G, clip, text, neutral_text=neutral_text, latents=latents, loss=loss, lambda_clip=lambda_clip,
                     lambda_l2=lambda_l2, k_train=k_train, batch=batch, truncation_psi=truncation_psi, seed=seed,
                     two_sided=bool(two_sided), identity=identity, lambda_id=lambda_id, lpips=lpips,
                     lambda_lpips=lambda_lpips, clip_normalize=clip_normalize, noise_mode=noise_mode,
                     templates=templates, pool=pool)
    return obj, loss


def train_weight_shift(G, clip, text: str, *, layer: str, neutral_text: Optional[str] = None,
                       latents: Optional[Latent] = None, steps: int = DEFAULTS.steps, lr: float = DEFAULTS.lr,
                       lambda_clip: float = DEFAULTS.lambda_clip, lambda_l2: float = DEFAULTS.lambda_l2,
                       k_train: float = DEFAULTS.k_train, loss: Optional[str] = None, batch: int = DEFAULTS.batch,
                       truncation_psi: float = DEFAULTS.truncation_psi, seed: int = 0, two_sided: bool = False,
                       identity: Optional[Callable] = None, lambda_id: float = 0.0, lpips: Optional[Callable] = None,
                       lambda_lpips: float = 0.0, clip_normalize: bool = True, noise_mode: str = "const",
                       templates: Optional[Sequence[str]] = None, pool: int = DEFAULTS.pool,
                       callback: Optional[ProgressCallback] = None) -> WeightShiftResult:
    """Optimise a shift x of `layer`'s weights so that G_{θ+k·x} matches `text` (seed 003; loss in the module
    docstring). `G` is never modified; works under ComfyUI's inference mode.

    Args:
        G: the (unshifted) generator.
        clip: a `core.models.clip.ClipModel` (`encode_image` differentiable, `encode_text`).
        text: the target prompt; `neutral_text` the prompt for the image before the edit ('a face').
        layer: a conv layer of `G` ('b16.conv1' or its parameter name; `conv_layers(G)` lists them).
        latents: one image's z / w / w+ `Latent` (any batch: the paper's single-image mode), or None: each step
            `batch` latents at `truncation_psi` (a shift that generalises): drawn from a pool of `pool` latents
            sampled once from `seed` (each pass in a new order), whose unshifted references are rendered once;
            `pool` 0 samples fresh z every step, as StyleGAN-NADA does, at the cost of one more render per step.
        steps, lr: Adam steps and learning rate on x (raw weight units; the weights are ~N(0, 1)).
        lambda_clip, lambda_l2: λ1 (the seed's 10) and λ2 (0.01–0.1) of the loss; the L2 term is ‖x‖₂.
        k_train: the strength the shift is trained at (> 0).
        loss: 'directional' (needs `neutral_text`) or 'global'; None: 'directional' when a neutral text is
            given, else 'global'.
        two_sided: alternate steps at k = +k_train (text vs neutral) and k = −k_train (texts swapped), so a
            negative k renders the opposite edit. Needs `neutral_text`.
        identity, lambda_id: `identity(images, reference_images) -> scalar` (`core.losses.arcface.IDLoss`),
            weighted by λ_id against the unshifted render (faces).
        lpips, lambda_lpips: `lpips(x, y) -> [N]` (`core.losses.perceptual.LPIPS`), weighted by λ_lpips, between
            the unshifted and the shifted render (at most 256 px, area-downsampled).
        clip_normalize: CLIP's own input normalisation (False reproduces StyleCLIP's un-normalised inputs).
        noise_mode: 'const' (default), 'random' (the same noise for the shifted and unshifted render of a step)
            or 'none'.
        templates: optional prompt templates ("{}" for the prompt) each text is averaged over; None: the prompt.
        callback: receives `StepProgress(step, steps, 'shift', losses, image, {'shift/<param>': x})` after every
            step (`image` the step's render, detached); return `core.optimize.FINISH` to end with the shift so
            far, raise to cancel (nothing is returned; G is unchanged).

    Returns:
        WeightShiftResult: the shift (x keyed by the parameter name, float32 CPU; metadata: how it was made),
        the per-step history ({'clip', 'l2', ['id', 'lpips'], 'loss', 'k'}), seconds, the evaluation images
        and CLIP terms before/after.

    Raises:
        ValueError: an unknown layer, a directional or two-sided run without neutral_text, steps < 1, a
            non-finite or non-positive lr, negative λ, a missing identity/LPIPS network for λ > 0, a generator
            that already has shifts applied.
        LatentError: `latents` made for another generator, or an S latent.
        FloatingPointError: the loss became NaN/inf (lower lr).
    """
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        obj, loss = _setup(G, clip, text, neutral_text=neutral_text, latents=latents, loss=loss, steps=steps, lr=lr,
                           lambda_clip=lambda_clip, lambda_l2=lambda_l2, k_train=k_train, batch=batch,
                           truncation_psi=truncation_psi, seed=seed, two_sided=two_sided, identity=identity,
                           lambda_id=lambda_id, lpips=lpips, lambda_lpips=lambda_lpips, clip_normalize=clip_normalize,
                           noise_mode=noise_mode, templates=templates, pool=pool)
        target = find_layer(obj.work, layer)
        obj.use_layer(target)
        x, history = _optimise(obj, float(lr), int(steps), callback=callback, phase="shift")
        before, after, c0, c1 = obj.evaluate(x)
        n = obj.fixed_ws.shape[0] if obj.fixed_ws is not None else int(batch)
        shift = make_shift(G, {target.param: x}, prompt=text, neutral_prompt=neutral_text or "",
                           clip_model=getattr(clip, "name", type(clip).__name__), loss=loss,
                           lambda_clip=float(lambda_clip), lambda_l2=float(lambda_l2), lr=float(lr), steps=len(history),
                           steps_planned=int(steps), batch=n, k_train=float(k_train),
                           recommended_k=tuple(DEFAULTS.recommended_k), norm="raw", source="sgs", layer=target.name,
                           two_sided=bool(two_sided), mode=obj.mode,
                           pool=int(pool) if obj.mode == "batch" else 0, lambda_id=float(lambda_id) if identity else 0.0,
                           lambda_lpips=float(lambda_lpips) if lpips else 0.0, truncation_psi=float(truncation_psi),
                           seed=int(seed))
    return WeightShiftResult(shift, history, time.perf_counter() - t0, before.cpu(), after.cpu(), c0.cpu(), c1.cpu())


# ------------------------------------------------------------------------------------------------
# Layer scan


def _tile(img: torch.Tensor, size: int) -> torch.Tensor:
    """`[3, R, R]` -> `[3, size, size]` (area down, nearest up), float32 CPU."""
    img = img.detach().float().cpu().unsqueeze(0)
    if img.shape[-1] > size:
        img = F.interpolate(img, size=(size, size), mode="area")
    elif img.shape[-1] < size:
        img = F.interpolate(img, size=(size, size), mode="nearest")
    return img[0]


def _label(tile: torch.Tensor, lines: Sequence[str]) -> torch.Tensor:
    """Draw `lines` in white on a dark strip at the top of `tile` `[3, S, S]` in [-1, 1] (PIL's default font)."""
    import numpy as np
    from PIL import Image, ImageDraw

    arr = ((tile.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    im = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    draw = ImageDraw.Draw(im)
    height = 12 * len(lines) + 4
    draw.rectangle([0, 0, im.width, height], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((3, 2 + 12 * i), line, fill=(255, 255, 255))
    out = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()
    return out / 127.5 - 1


def contact_sheet(before: torch.Tensor, rows: Sequence[LayerScanRow], *, tile: Optional[int] = None) -> torch.Tensor:
    """`[1, 3, N·S, (1 + L)·S]` in [-1, 1]: per image a row of the image before and each layer's after image,
    labelled ('before'; layer name and gain). Tiles are S = the resolution clamped to 128..256 px."""
    size = tile or min(256, max(128, int(before.shape[-1])))
    grid = []
    for i in range(before.shape[0]):
        cells = [_label(_tile(before[i], size), ["before"])]
        for r in rows:
            cells.append(_label(_tile(r.image[i], size), [r.layer, f"gain {r.gain:+.3f}"]))
        grid.append(torch.cat(cells, dim=2))
    return torch.cat(grid, dim=1).unsqueeze(0)


def scan_layers(G, clip, text: str, *, layers: Optional[Sequence[str]] = None, steps: int = DEFAULTS.scan_steps,
                neutral_text: Optional[str] = None, latents: Optional[Latent] = None, lr: float = DEFAULTS.lr,
                lambda_clip: float = DEFAULTS.lambda_clip, lambda_l2: float = DEFAULTS.lambda_l2,
                k_train: float = DEFAULTS.k_train, loss: Optional[str] = None, batch: int = DEFAULTS.batch,
                truncation_psi: float = DEFAULTS.truncation_psi, seed: int = 0, two_sided: bool = False,
                identity: Optional[Callable] = None, lambda_id: float = 0.0, lpips: Optional[Callable] = None,
                lambda_lpips: float = 0.0, clip_normalize: bool = True, noise_mode: str = "const",
                templates: Optional[Sequence[str]] = None, pool: int = DEFAULTS.pool,
                callback: Optional[ProgressCallback] = None) -> LayerScanResult:
    """Weight Shift Layer Scan: the seed paper picks the layer by eye; this runs a short `train_weight_shift`
    (`steps` steps, the same latents and seed for every layer) on each candidate layer and ranks the layers by
    CLIP gain, the drop of the CLIP term from k = 0 to the short run's x at k = k_train on the evaluation latents
    (for 'directional' the term at k = 0 is 1, so the gain is the directional cosine reached).

    Args:
        layers: layer names to try (None: every conv layer, `conv_layers(G)`, in forward order); the other
            arguments as `train_weight_shift`.
        callback: `StepProgress(step, steps·len(layers), 'scan', losses, image, {'shift/<param>': x})` over all
            layers; FINISH ends the scan after the current layer's short run (the layers done are ranked);
            raising cancels.

    Returns:
        LayerScanResult(rows [(layer, gain, loss_before, loss_after, image)], ranking, sheet, report()).
    """
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        obj, loss = _setup(G, clip, text, neutral_text=neutral_text, latents=latents, loss=loss, steps=steps, lr=lr,
                           lambda_clip=lambda_clip, lambda_l2=lambda_l2, k_train=k_train, batch=batch,
                           truncation_psi=truncation_psi, seed=seed, two_sided=two_sided, identity=identity,
                           lambda_id=lambda_id, lpips=lpips, lambda_lpips=lambda_lpips, clip_normalize=clip_normalize,
                           noise_mode=noise_mode, templates=templates, pool=pool)
        if layers is None:
            targets = conv_layers(obj.work)
        else:
            if isinstance(layers, str):
                layers = [s.strip() for s in layers.split(",") if s.strip()]
            targets = list({t.name: t for t in (find_layer(obj.work, name) for name in layers)}.values())
            if not targets:
                raise ValueError("layers is empty: name at least one conv layer, or pass None for all")
        total = int(steps) * len(targets)
        finished = False

        def relay(p: StepProgress):
            nonlocal finished
            answer = callback(p) if callback is not None else None
            finished = finished or finish_requested(answer)
            return None   # a layer's short run always completes; FINISH ends the scan after it

        rows: list[LayerScanRow] = []
        before = None
        for i, target in enumerate(targets):
            obj.use_layer(target)
            x, _ = _optimise(obj, float(lr), int(steps), callback=relay, phase="scan", step_offset=i * int(steps),
                             total=total)
            before, after, c0, c1 = obj.evaluate(x)
            b, a = float(c0.mean()), float(c1.mean())
            rows.append(LayerScanRow(target.name, b - a, b, a, after.cpu()))
            if finished:
                break
    ranking = [r.layer for r in sorted(rows, key=lambda r: -r.gain)]
    before = before.cpu()
    settings = {"prompt": text, "neutral_prompt": neutral_text or "", "loss": loss, "steps": int(steps),
                "k_train": float(k_train), "lr": float(lr), "mode": obj.mode, "layers": [t.name for t in targets]}
    return LayerScanResult(rows, ranking, contact_sheet(before, rows), before, time.perf_counter() - t0, settings)


__all__ = ["DEFAULTS", "LOSSES", "LayerScanResult", "LayerScanRow", "WeightShiftConfig", "WeightShiftResult",
           "contact_sheet", "scan_layers", "train_weight_shift"]
