"""Neural Style (Gatys, Ecker & Bethge, CVPR 2016): optimise an image's pixels so its VGG-19 features match a
content image at one layer and the Gram matrices of style image(s) at several layers.

loss = content_weight · Σ_l L_content(F_l, P_l) + style_weight · Σ_regions w_r Σ_l w_l D(G_l, A_l) + tv_weight · TV

One table (`METHODS`) holds each recipe with its layers, Gram normalisation (core.losses.style), loss weights,
pooling, optimiser and schedule, so results do not silently change with the backbone or the method:

- 'gatys2016', the paper: content relu4_2 (the paper's conv4_2: Caffe's ReLUs are in place) as ½Σ(F − P)²; style
  relu1_1 … relu5_1 with w_l = 1/5 and E_l = Σ(G − A)²/(4N²M²); α/β = 1e-3; average pooling; L-BFGS from white
  noise. Best with Gatys' own normalised VGG (AdaIN's vgg_normalised.pth) or Caffe's weights.
- 'tutorial', PyTorch's neural-style tutorial exactly (advanced_source/neural_style_tutorial.py): its layer names
  count convolutions, so content "conv_4" is conv2_2 and style "conv_1…conv_5" are conv1_1, conv1_2, conv2_1,
  conv2_2, conv3_1, all before the ReLU; F.mse_loss of features, Grams / (a·b·c·d) compared by MSE; style_weight
  1e6, content_weight 1; max pooling; torch.optim.LBFGS defaults (lr 1, 20 evaluations per .step), the image
  clamped to [0, 1] at the start of every evaluation, init = the content image, 300 evaluations. (The tutorial
  checks its count between .step calls, so it runs up to 320 evaluations; here a run stops at exactly `steps`.)
- 'multiscale', crowsonkb/style-transfer-pytorch's schedule for large images: content relu4_2, style relu1_1 …
  relu5_1 weighted 256, 64, 16, 4, 1 (normalised), Gram / (H·W) compared by Σd²/Σ|d|, content_weight 0.015, TV 2;
  Adam lr 0.02 warm-started across scales 128 px → `size` by factors √2, twice the steps at the first scale, the
  image clamped after each step and the result an EMA of the iterates (decay 0.99); max pooling.

Spatial control (Gatys et al. 2017): `masks` pairs a content region with a style region, one pair per style image;
each region's Gram is that of the masked features, the masks downsampled to every layer (`resize_mask`). Colour
control (Gatys et al. 2017 §5): 'luminance' transfers on luminance only (the style's luminance matched to the
content's mean and deviation) and keeps the content's YIQ chroma; 'histogram' first matches the style images'
colour mean and covariance to the content's. Coarse-to-fine `scales`: each scale starts from the previous one's
result, upsampled. A batch of content images is stylised one frame after another, each frame from the previous
frame's result when `init_from_previous` (video frames).

Speed: on a CPU in float32 with channels-last (the default), whichever VGG-19 weights, every evaluation
runs the network through `core.losses.vgg19_buffered` (forward and backward written out into buffers kept for the
whole run, the loss gradients added in place by the Gram / content-MSE backwards), without allocating ~1 GB of
fresh maps per 512 px evaluation; on AVX2 CPUs its layers with many channels on maps of 32×32 and more (conv2_1 and
deeper) run as Winograd F(4×4, 3×3) convolutions (`core.ops.winograd`, 1.3–2.5× faster per layer). The numbers are
autograd's to float rounding, or to ~1e-5 of each map's magnitude on the Winograd layers (an L-BFGS run follows the
same path: tests/test_winograd.py). Elsewhere (CUDA, MPS, float64, `channels_last=False`, which is also the exact
path) autograd runs `VGG19.forward`.

Images are RGB `[N, 3, H, W]` in [0, 1] (ComfyUI's range). Every step's `StepProgress` (phase 'style', image in
[-1, 1]) goes to `callback`; raising in it cancels (nothing is returned), `FINISH` ends the run with the current
image (see `style_transfer`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..losses.style import gram_distance, gram_matrix, resize_mask, usable_sink
from ..losses.vgg19 import VGG19, check_layers
from ..losses.vgg19_buffered import BufferedVGG, VGGObjective
from ..log import warn_once
from ..optimize import (ProgressCallback, StepProgress, autograd_ready, check_finite, finish_requested, loss_values,
                        trainable)

INITS = ("content", "noise", "style")
OPTIMIZERS = ("lbfgs", "adam")
COLORS = ("keep", "luminance", "histogram")
CONTENT_LOSSES = ("half_sum", "mse", "scaled_mse")
POOLINGS = ("max", "avg")


@dataclass(frozen=True)
class Recipe:
    """One method's settings (a row of `METHODS`); every `style_transfer` keyword left None takes its value here."""

    name: str
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    style_layer_weights: tuple[float, ...]
    gram: str                 # core.losses.style normalisation: 'gatys' | 'tutorial' | 'hw' ...
    content_loss: str         # 'half_sum' ½Σd² | 'mse' mean d² | 'scaled_mse' Σd²/Σ|d|
    content_weight: float
    style_weight: float
    tv_weight: float
    pooling: str
    optimizer: str
    lr: float
    init: str
    size: int                 # long side of the result (px)
    steps: int                # optimiser steps (L-BFGS: loss evaluations) per scale, the 'reference' preset
    multiscale: bool = False  # scales min_scale -> size by factors sqrt(2) unless `scales` is given
    min_scale: int = 128
    first_scale_factor: int = 1   # the first scale runs this many times `steps`
    ema_decay: float = 0.0        # result = EMA of the iterates (0: the last iterate)
    lbfgs_max_iter: int = 20      # torch.optim.LBFGS's evaluations per .step
    lbfgs_history: int = 100
    description: str = ""


_PAPER_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
METHODS: dict[str, Recipe] = {
    "gatys2016": Recipe(
        "gatys2016", ("relu4_2",), _PAPER_STYLE, (0.2,) * 5, "gatys", "half_sum", content_weight=1.0,
        style_weight=1e3, tv_weight=0.0, pooling="avg", optimizer="lbfgs", lr=1.0, init="noise", size=512,
        steps=1000, description="Gatys et al. 2016: conv4_2 / conv1_1..conv5_1, 1/5 each, alpha/beta 1e-3, "
                                "average pooling, L-BFGS from noise"),
    "tutorial": Recipe(
        "tutorial", ("conv2_2",), ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"), (1.0,) * 5, "tutorial",
        "mse", content_weight=1.0, style_weight=1e6, tv_weight=0.0, pooling="max", optimizer="lbfgs", lr=1.0,
        init="content", size=512, steps=300, description="PyTorch's neural-style tutorial exactly (its conv_4 / "
                                                         "conv_1..conv_5 = conv2_2 / conv1_1..conv3_1, max pooling)"),
    "multiscale": Recipe(
        "multiscale", ("relu4_2",), _PAPER_STYLE, tuple(w / 341 for w in (256, 64, 16, 4, 1)), "hw", "scaled_mse",
        content_weight=0.015, style_weight=1.0, tv_weight=2.0, pooling="max", optimizer="adam", lr=0.02,
        init="content", size=512, steps=500, multiscale=True, min_scale=128, first_scale_factor=2, ema_decay=0.99,
        description="crowsonkb's multi-scale Adam + EMA (128 px -> size by sqrt 2), for large images"),
}
DEFAULT_METHOD = "gatys2016"
MIN_SIZE = 16


@dataclass
class StyleTransferResult:
    image: torch.Tensor                      # [N, 3, H, W] in [0, 1]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    method: str = ""
    sizes: list[tuple[int, int]] = field(default_factory=list)   # (H, W) of every scale
    steps_done: int = 0
    total: int = 0
    finished_early: bool = False

    def report(self) -> str:
        last = self.history[-1] if self.history else {}
        terms = ", ".join(f"{k} {v:.4g}" for k, v in last.items())
        scales = " -> ".join(f"{w}x{h}" for h, w in self.sizes)
        return (f"Neural Style ({self.method}): {self.image.shape[0]} image(s), {self.steps_done} of {self.total} "
                f"steps in {self.seconds:.1f} s at {scales}" + (f"; last loss: {terms}" if terms else ""))


# ------------------------------------------------------------------------------------------------
# Inputs


def _check_rgb(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be RGB images [N, 3, H, W] in [0, 1], got {shape}")
    c = x.shape[1]
    if c == 1:
        raise ValueError(f"{what} is grayscale (1 channel); style transfer needs RGB: repeat the channel three "
                         f"times (ComfyUI: convert the image to RGB) first")
    if c == 4:
        raise ValueError(f"{what} has 4 channels (RGBA); style transfer needs RGB: drop the alpha channel first "
                         f"(use it as a mask instead if it marks a region)")
    if c != 3:
        raise ValueError(f"{what} must have 3 (RGB) channels, got {c} (shape {list(x.shape)})")
    if min(x.shape[2], x.shape[3]) < 1:
        raise ValueError(f"{what} is empty ({list(x.shape)})")
    return x


def _as_styles(styles: Union[torch.Tensor, Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    if isinstance(styles, torch.Tensor):
        styles = [styles] if styles.ndim == 3 else list(styles.unbind(0))
    out = []
    for i, s in enumerate(styles):
        s = s[None] if s.ndim == 3 else s
        _check_rgb(s, f"style image {i + 1}")
        if s.shape[0] != 1:
            out += [t[None] for t in s.unbind(0)]
        else:
            out.append(s)
    if not out:
        raise ValueError("no style image given")
    return out


def _mask_2d(m: torch.Tensor, what: str) -> torch.Tensor:
    """A mask as [K, 1, H, W] (K = 1 or a frame count)."""
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"{what} must be [H, W], [N, H, W] or [N, 1, H, W], got shape {list(m.shape)}")
    return m.float().clamp(0, 1)


def _check_masks(masks, content: torch.Tensor, styles: list[torch.Tensor]):
    if masks is None:
        return None
    masks = list(masks)
    if len(masks) != len(styles):
        raise ValueError(f"{len(masks)} mask pairs for {len(styles)} style images: give one (content mask, style "
                         f"mask) pair per style image (None for a whole image)")
    out = []
    for i, pair in enumerate(masks):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"mask pair {i + 1} must be (content mask, style mask), got {type(pair).__name__}")
        cm, sm = pair
        if cm is not None:
            cm = _mask_2d(cm, f"content mask {i + 1}")
            if tuple(cm.shape[2:]) != tuple(content.shape[2:]):
                raise ValueError(f"content mask {i + 1} is {cm.shape[3]}x{cm.shape[2]} px but the content image is "
                                 f"{content.shape[3]}x{content.shape[2]}: make the mask from the content image "
                                 f"(or resize it to the image's size)")
            if cm.shape[0] not in (1, content.shape[0]):
                raise ValueError(f"content mask {i + 1} has {cm.shape[0]} frames for {content.shape[0]} content "
                                 f"images: give one mask, or one per image")
        if sm is not None:
            sm = _mask_2d(sm, f"style mask {i + 1}")
            if tuple(sm.shape[2:]) != tuple(styles[i].shape[2:]) or sm.shape[0] != 1:
                raise ValueError(f"style mask {i + 1} is {sm.shape[3]}x{sm.shape[2]} px ({sm.shape[0]} masks) but "
                                 f"style image {i + 1} is {styles[i].shape[3]}x{styles[i].shape[2]}: give one mask "
                                 f"of the style image's size")
        out.append((cm, sm))
    return out


# ------------------------------------------------------------------------------------------------
# Colour


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _YIQ.to(x), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_YIQ.double()).to(x), x)


def match_color(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`source` `[1, 3, h, w]` with its colours' mean and covariance made those of `target` (Gatys et al. 2017 §5's
    colour histogram matching, the linear transform A = Σ_t^½ Σ_s^-½)."""
    def stats(x):
        flat = x.reshape(3, -1).double()
        mu = flat.mean(1, keepdim=True)
        d = flat - mu
        return mu, d @ d.T / d.shape[1] + eps * torch.eye(3, dtype=torch.float64, device=x.device)

    def sqrtm(c, inverse=False):
        e, v = torch.linalg.eigh(c)
        e = e.clamp_min(eps)
        return v @ torch.diag(e.rsqrt() if inverse else e.sqrt()) @ v.T

    mu_s, cov_s = stats(source)
    mu_t, cov_t = stats(target)
    a = sqrtm(cov_t) @ sqrtm(cov_s, inverse=True)
    out = a @ (source.reshape(3, -1).double() - mu_s) + mu_t
    return out.reshape(source.shape).to(source.dtype).clamp(0, 1)


def _luminance3(x: torch.Tensor, like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The luminance of `x` as a gray RGB image; with `like`, its mean and deviation matched to `like`'s."""
    y = rgb_to_yiq(x)[:, :1]
    if like is not None:
        ly = rgb_to_yiq(like)[:, :1]
        y = (y - y.mean()) / (y.std() + 1e-6) * ly.std() + ly.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


# ------------------------------------------------------------------------------------------------
# Losses


class _MSE(torch.autograd.Function):
    """F.mse_loss(f, p) with a backward that keeps f's memory layout. ATen's mse_loss_backward allocates its
    result contiguous (a zero-filled copy) whatever the input's layout; on channels-last features that is a slow
    strided pass, and the gradient then meets the network's channels-last ones in a mixed-layout add. The value
    is F.mse_loss's; the gradient is its formula 2/numel · (f − p) · grad in the same float operations (the
    scalar rounded to f's dtype, as ATen's kernel does), so it is equal bit for bit."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, p: torch.Tensor, grad_into: Optional[torch.Tensor] = None) -> torch.Tensor:
        ctx.save_for_backward(f, p)
        ctx.grad_into = grad_into
        return F.mse_loss(f, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f, p = ctx.saved_tensors
        sink = ctx.grad_into
        if sink is not None and not ctx.needs_input_grad[1] and not torch.is_grad_enabled():
            scale = float(2.0 / f.numel() * grad)   # added into the caller's buffer: no new tensor
            sink.add_(f, alpha=scale).sub_(p, alpha=scale)
            return None, None, None
        g = (f - p).mul_(2.0 / f.numel()).mul_(grad)
        return (g if ctx.needs_input_grad[0] else None), (-g if ctx.needs_input_grad[1] else None), None


def content_loss(f: torch.Tensor, p: torch.Tensor, kind: str,
                 grad_into: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`[N]`: ½Σ(F − P)² (Gatys eq. 1), the mean of (F − P)² (tutorial: F.mse_loss), or Σd²/Σ|d| (crowsonkb).
    `grad_into`: as `core.losses.style.gram_matrix`'s (used by 'mse' when the layouts match)."""
    if kind == "mse" and f.shape[0] == 1:
        if p.shape == f.shape and p.dtype == f.dtype:
            # the tutorial's F.mse_loss (the same rounding), layout kept
            return _MSE.apply(f, p, usable_sink(grad_into, f)).reshape(1)
        return F.mse_loss(f, p).reshape(1)
    d = (f - p).flatten(1)
    if kind == "half_sum":
        return 0.5 * d.square().sum(1)
    if kind == "mse":
        return d.square().mean(1)
    return d.square().sum(1) / (d.abs().sum(1) + 1e-8)


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """`[N]`: mean over pixels of the squared horizontal plus vertical differences (replicate-padded edges;
    crowsonkb's TVLoss)."""
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx.square() + dy.square()).flatten(1).mean(1)


# ------------------------------------------------------------------------------------------------
# Sizes


def _fit(h: int, w: int, long_side: int) -> tuple[int, int]:
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def scale_sizes(size: int, scales: Optional[Sequence[int]], recipe: Recipe) -> list[int]:
    """Long sides of the scales, coarse to fine: `scales` as given (ending at `size` if it does not), the
    recipe's √2 ladder (multiscale), or just `size`."""
    if scales:
        out = sorted({int(s) for s in scales if 0 < int(s) < size}) + [size]
    elif recipe.multiscale:
        out, s = [], recipe.min_scale
        while s < size:
            out.append(int(round(s)))
            s *= math.sqrt(2)
        out.append(size)
    else:
        out = [size]
    return out


# ------------------------------------------------------------------------------------------------
# The method


class _Stop(Exception):
    """Ends an L-BFGS run between two evaluations (step count reached, or FINISH)."""


def style_transfer(content: torch.Tensor, styles: Union[torch.Tensor, Sequence[torch.Tensor]], *, vgg: VGG19,
                   method: str = DEFAULT_METHOD, style_weights: Optional[Sequence[float]] = None,
                   size: Optional[int] = None, steps: Optional[int] = None, content_weight: Optional[float] = None,
                   style_weight: Optional[float] = None, tv_weight: Optional[float] = None,
                   init: Optional[str] = None, optimizer: Optional[str] = None, pooling: Optional[str] = None,
                   lr: Optional[float] = None, masks=None, color: str = "keep",
                   scales: Optional[Sequence[int]] = None, style_scale: float = 1.0, seed: int = 0,
                   init_from_previous: bool = False, channels_last: bool = True,
                   callback: Optional[ProgressCallback] = None) -> StyleTransferResult:
    """Stylise `content` (RGB `[N, 3, H, W]` in [0, 1]; a batch is a sequence of frames) with `styles` (a list of
    `[1, 3, h, w]`, or one tensor `[S, 3, h, w]`, in [0, 1]).

    Every keyword left None takes `METHODS[method]`'s value. `size`: the long side of the result (0 or None: the
    method's; the style images are scaled to `size · style_scale`). `steps`: per scale (L-BFGS: loss
    evaluations). `style_weights`: one per style image (normalised to sum 1; default equal). `masks`: one
    (content mask, style mask) pair per style image (`[H, W]` / `[K, H, W]` at the content's / that style's size,
    None = the whole image): that style is matched inside its content region only. `color`: 'keep' | 'luminance'
    | 'histogram'. `scales`: long sides to run first, coarse to fine. `init`: 'content' | 'noise' (seeded
    uniform) | 'style' (the first style image). `init_from_previous`: frame k starts from frame k−1's result.

    Returns the stylised images at the final scale's size. Raising in `callback` cancels; returning `FINISH`
    ends the run after that step: the frames done so far, the current one as it is, and the frames not reached
    yet returned as their (resized) content images.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    r = METHODS[method]
    r = replace(r, content_weight=r.content_weight if content_weight is None else float(content_weight),
                style_weight=r.style_weight if style_weight is None else float(style_weight),
                tv_weight=r.tv_weight if tv_weight is None else float(tv_weight),
                init=init or r.init, optimizer=optimizer or r.optimizer, pooling=pooling or r.pooling,
                lr=r.lr if lr is None else float(lr), size=int(size or r.size), steps=int(steps or r.steps))
    for value, options, what in ((r.init, INITS, "init"), (r.optimizer, OPTIMIZERS, "optimizer"),
                                 (r.pooling, POOLINGS, "pooling"), (color, COLORS, "color")):
        if value not in options:
            raise ValueError(f"{what} must be one of {', '.join(options)}, got {value!r}")
    if r.steps < 1 or r.lr <= 0 or min(r.content_weight, r.style_weight, r.tv_weight) < 0 or style_scale <= 0:
        raise ValueError(f"steps must be >= 1, lr and style_scale > 0 and the loss weights >= 0; got steps "
                         f"{r.steps}, lr {r.lr}, style_scale {style_scale}, weights {r.content_weight}, "
                         f"{r.style_weight}, {r.tv_weight}")
    content = _check_rgb(content, "the content image")
    styles = _as_styles(styles)
    masks = _check_masks(masks, content, styles)
    weights = [1.0] * len(styles) if style_weights is None else [float(w) for w in style_weights]
    if len(weights) != len(styles) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"style_weights: one non-negative weight per style image ({len(styles)}), not all 0; "
                         f"got {weights}")
    weights = [w / sum(weights) for w in weights]
    check_layers(r.content_layers + r.style_layers)
    pools = max(int(n[4]) if n.startswith(("conv", "relu")) else int(n[4]) + 1
                for n in r.content_layers + r.style_layers) - 1
    min_side = max(MIN_SIZE, 2 ** pools)
    sizes = scale_sizes(r.size, scales, r)
    h0, w0 = content.shape[2:]
    if min(_fit(h0, w0, sizes[0])) < min_side:
        raise ValueError(f"the smallest scale ({sizes[0]} px on the long side of a {w0}x{h0} image) is below the "
                         f"{min_side} px the layers of {method!r} need; use a larger size or fewer scales")

    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        net = autograd_ready(vgg)
        device, dtype = next(net.parameters()).device, next(net.parameters()).dtype   # float64 for exact checks
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net = net.to(memory_format=fmt)
        content = autograd_ready(content.detach()).to(device, dtype).clamp(0, 1)
        styles = [autograd_ready(s.detach()).to(device, dtype).clamp(0, 1) for s in styles]
        if masks is not None:
            masks = [tuple(None if m is None else autograd_ready(m).to(device, dtype) for m in pair) for pair in masks]
        layers = list(dict.fromkeys(r.content_layers + r.style_layers))
        n_frames = content.shape[0]
        total = n_frames * sum(r.steps * (r.first_scale_factor if i == 0 else 1) for i in range(len(sizes)))
        state: dict[str, Any] = {"step": 0, "finished": False}
        history: list[dict] = []
        results = []
        prev = None
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        out_hw = _fit(h0, w0, sizes[-1])
        for k in range(n_frames):
            frame = content[k:k + 1]
            if state["finished"]:
                results.append(_resize(frame, out_hw))
                continue
            frame_styles = styles
            if color == "histogram":
                frame_styles = [match_color(s, frame) for s in styles]
            work_frame = frame
            if color == "luminance":
                work_frame = _luminance3(frame)
                frame_styles = [_luminance3(s, like=frame) for s in frame_styles]
            frame_masks = None
            if masks is not None:
                frame_masks = [(None if cm is None else cm[k:k + 1] if cm.shape[0] > 1 else cm, sm)
                               for cm, sm in masks]
            image = prev if (init_from_previous and prev is not None) else None
            for i, long_side in enumerate(sizes):
                hw = _fit(h0, w0, long_side)
                image = _run_scale(net, r, _resize(work_frame, hw), frame_styles, weights, frame_masks,
                                   long_side * style_scale, layers, image, fmt, gen,
                                   r.steps * (r.first_scale_factor if i == 0 else 1), total, state, history,
                                   callback, (k, i))
                if state["finished"]:
                    image = _resize(image, out_hw)
                    break
            out = image.detach()
            if color == "luminance":
                iq = rgb_to_yiq(_resize(frame, out_hw))[:, 1:]
                out = yiq_to_rgb(torch.cat([rgb_to_yiq(out)[:, :1], iq], 1)).clamp(0, 1)
            results.append(out)
            prev = out if color != "luminance" else image.detach()
        image = torch.cat(results).contiguous()
    return StyleTransferResult(image, history, time.perf_counter() - t0, method,
                               [_fit(h0, w0, s) for s in sizes], state["step"], total, state["finished"])


def _targets(net, r: Recipe, content, styles, weights, masks, style_long: float, layers, fmt):
    """Content features and, per region, (weight, style Grams, content masks) per layer (computed once)."""
    with torch.no_grad():
        cf = net(content.contiguous(memory_format=fmt), layers, r.pooling)
        content_targets = {l: cf[l].detach() for l in r.content_layers}
        regions = []
        for s, w, pair in zip(styles, weights, masks or [(None, None)] * len(styles)):
            s = _resize(s, _fit(s.shape[2], s.shape[3], max(1, round(style_long))))
            sf = net(s.contiguous(memory_format=fmt), r.style_layers, r.pooling)
            cm, sm = pair
            grams = {l: gram_matrix(sf[l], None if sm is None else resize_mask(sm, sf[l].shape[2:]),
                                    normalize=r.gram) for l in r.style_layers}
            cmasks = {l: None if cm is None else resize_mask(cm, cf[l].shape[2:]) for l in r.style_layers}
            regions.append((w, grams, cmasks))
        if masks is None:   # several styles without masks: one target, the weighted blend of their Grams
            regions = [(1.0, {l: sum(w * g[l] for w, g, _ in regions) for l in r.style_layers},
                        {l: None for l in r.style_layers})]
    return content_targets, regions


def _run_scale(net, r: Recipe, content, styles, weights, masks, style_long, layers, init, fmt, gen, steps: int,
               total: int, state: dict, history: list, callback, where) -> torch.Tensor:
    content_targets, regions = _targets(net, r, content, styles, weights, masks, style_long, layers, fmt)
    hw = tuple(content.shape[2:])
    if init is not None:
        start = _resize(init.to(content), hw)
    elif r.init == "content":
        start = content
    elif r.init == "style":
        start = _resize(styles[0], hw)
    else:
        start = torch.rand(content.shape, generator=gen).to(content)
    img = trainable(start.contiguous())   # L-BFGS flattens its parameter: the network gets a channels-last copy
    lw = dict(zip(r.style_layers, r.style_layer_weights))

    # CPU float32: the network's forward and backward in buffers kept across evaluations (no page faults for
    # ~1 GB of new feature maps per evaluation at 512 px); otherwise autograd through VGG19.forward
    fast = {"runner": BufferedVGG(net, layers, r.pooling)
            if fmt == torch.channels_last and BufferedVGG.supported(net, content, r.pooling) else None,
            "proven": False}

    def feature_loss(feats, sinks=None):
        sinks = sinks or {}
        c = sum(content_loss(feats[l], content_targets[l], r.content_loss, sinks.get(l))
                for l in r.content_layers).sum()
        s = 0
        for w_r, grams, cmasks in regions:
            for l in r.style_layers:
                g = gram_matrix(feats[l], cmasks[l], normalize=r.gram, grad_into=sinks.get(l))
                s = s + w_r * lw[l] * gram_distance(g, grams[l], normalize=r.gram).sum()
        return r.content_weight * c + r.style_weight * s, {"content": c, "style": s}

    def buffered(x):
        box = {}

        def features_loss(feats, sinks):
            loss, box["terms"] = feature_loss(feats, sinks)
            return loss

        loss = VGGObjective.apply(net.preprocess(x), fast["runner"], features_loss)
        return loss, {k: v.detach() for k, v in box["terms"].items()}

    def objective(x):
        loss = None
        if fast["runner"] is not None:
            try:
                loss, terms = buffered(x)
                fast["proven"] = True
            except RuntimeError as e:   # the buffered path failing on the first evaluation (a oneDNN build): autograd
                if fast["proven"] or "out of memory" in str(e).lower():
                    raise
                warn_once("neural_style:buffered", f"Neural Style: the buffered CPU path failed ({e}); using "
                                                   f"autograd (slower)")
                fast["runner"] = None
        if loss is None:
            loss, terms = feature_loss(net(x.contiguous(memory_format=fmt), layers, r.pooling))
        if r.tv_weight:
            terms["tv"] = tv_loss(x).sum()
            loss = loss + r.tv_weight * terms["tv"]
        return loss, terms

    def report(loss, terms, shown) -> bool:
        state["step"] += 1
        check_finite(loss, terms, step=state["step"], what="Neural Style", hint="lower the style weight or lr")
        record = loss_values(terms, loss)
        history.append(record)
        if callback is None:
            return False
        answer = callback(StepProgress(state["step"], total, "style", record, shown.detach() * 2 - 1))
        if finish_requested(answer):
            state["finished"] = True
            return True
        return False

    if r.optimizer == "lbfgs":
        opt = torch.optim.LBFGS([img], lr=r.lr, max_iter=r.lbfgs_max_iter, history_size=r.lbfgs_history)
        done = [0]

        def closure():
            if done[0] >= steps or state["finished"]:
                raise _Stop
            with torch.no_grad():
                img.clamp_(0, 1)
            opt.zero_grad()
            loss, terms = objective(img)
            loss.backward(inputs=[img])
            done[0] += 1
            if report(loss, terms, img):
                raise _Stop
            return loss

        try:
            while done[0] < steps:
                opt.step(closure)
        except _Stop:
            pass
        with torch.no_grad():
            img.clamp_(0, 1)
        return img.detach()

    opt = torch.optim.Adam([img], lr=r.lr)
    ema = None
    for _ in range(steps):
        loss, terms = objective(img)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[img])
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
            if r.ema_decay > 0:
                ema = img.detach().clone() if ema is None else ema.mul_(r.ema_decay).add_(img.detach(),
                                                                                           alpha=1 - r.ema_decay)
        if report(loss, terms, ema if ema is not None else img):
            break
    return (ema if ema is not None else img).detach()


__all__ = ["METHODS", "DEFAULT_METHOD", "Recipe", "INITS", "OPTIMIZERS", "COLORS", "POOLINGS", "StyleTransferResult",
           "style_transfer", "content_loss", "tv_loss", "match_color", "rgb_to_yiq", "yiq_to_rgb", "scale_sizes"]
