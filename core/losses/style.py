"""Gram matrices and the style loss: ONE implementation for every method that matches feature statistics
(Neural Style, Segment Composite's masked style term).

A layer's features F are [N, C, H, W]; per image, F is read as a C × M matrix (M = H·W positions) and its Gram
matrix is G = F Fᵀ (G_ij = Σ_k F_ik F_jk, Gatys et al. 2016 eq. 3). The references differ only in how they
scale G and how they compare two Grams; `normalize` picks one of them:

======================  ==========================  ===================  ==========================================
normalize               Gram                        distance             reference
======================  ==========================  ===================  ==========================================
'gatys'                 F Fᵀ / (2·C·M)              Σ (G − A)²           Gatys et al. 2016 eq. 4: the sum equals
                                                                         E_l = Σ (FFᵀ − A')² / (4 N_l² M_l²) with
                                                                         N_l = C channels, M_l = H·W positions
'tutorial'              F Fᵀ / (a·b·c·d)            mean (G − A)²        PyTorch's neural-style tutorial
                                                    (F.mse_loss)         (`gram_matrix`: input.view(a*b, c*d),
                                                                         G.div(a*b*c*d), with its batch a = 1)
'barbershop'            F Fᵀ / (N·C·H·W)            mean (G − A)²        Barbershop's masked style loss (VGG16
                                                                         relu1_2/2_2/3_3/4_3, batch N = 1)
'hw'                    F Fᵀ / (H·W)                Σ d² / Σ |d|         crowsonkb/style-transfer-pytorch (Gram /
                                                                         (H·W), ScaledMSELoss)
'none'                  F Fᵀ                        Σ (G − A)²           the raw Gram
======================  ==========================  ===================  ==========================================

The tutorial's a·b·c·d and Barbershop's N·C·H·W are the same number (batch × the layer's size); both references
run one image at a time (batch 1), so here every image gets its own Gram divided by C·H·W — the references' numbers
for their batch of one, and a loss per image that does not depend on how many images share a batch.

Masks (Gatys et al. 2017, "Controlling Perceptual Factors", guided Gram matrices): with `mask` (T, [N or 1, 1,
H, W] at the layer's size; `resize_mask` brings a full-size mask there) the Gram is that of F∘T,
G_T = (F∘T)(F∘T)ᵀ. For 'gatys', 'tutorial' and 'hw' the positions count M (H·W) becomes the mask's area Σ T, so a
region's Gram has the scale of a whole image's and a region can be matched to a style region of another size.
'barbershop' keeps its N·C·H·W for the whole map, as its code does (it only multiplies the features by the mask).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("gatys", "tutorial", "barbershop", "hw", "none")
_EPS = 1e-8


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")


def resize_mask(mask: torch.Tensor, size: Sequence[int], mode: str = "area") -> torch.Tensor:
    """A mask `[N, 1, H, W]` (or `[N, H, W]`, `[H, W]`) brought to a feature map's `size` (h, w). 'area' (the
    default, what Neural Style uses): each feature position gets the fraction of its pixels inside the mask, as
    Gatys et al. 2017 downsample their guidance channels to every layer; 'nearest' / 'bilinear' are
    `F.interpolate`'s modes, for a method whose reference resizes its masks that way. Returns `[N, 1, h, w]`."""
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"a mask is [H, W], [N, H, W] or [N, 1, H, W], got shape {list(mask.shape)}")
    h, w = int(size[0]), int(size[1])
    if mode not in ("area", "nearest", "bilinear"):
        raise ValueError(f"mode must be 'area', 'nearest' or 'bilinear', got {mode!r}")
    if tuple(mask.shape[2:]) == (h, w):
        return mask
    if mode == "area":
        return F.adaptive_avg_pool2d(mask, (h, w))
    return F.interpolate(mask, size=(h, w), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))


class _Gram(torch.autograd.Function):
    """The raw Gram matrices `[N, C, C]` of features `[N, C, H, W]`, read in the features' own memory layout (no
    copy): a contiguous map is N matrices F (C × H·W) and G = F Fᵀ; a channels-last one is N matrices Fᵀ
    (H·W × C) and G = (Fᵀ)ᵀ Fᵀ. One image: torch.mm, as the references compute it (for a contiguous map the
    forward is their call, bit for bit).

    The backward uses G's symmetry: dL/dF = (Ḡ + Ḡᵀ) F, ONE matrix product of the forward's size, where autograd's
    mm backward makes two (Ḡ F and (Fᵀ Ḡ)ᵀ, then adds them, the second in the transposed layout); the gradient comes
    back in the features' layout. Equal to autograd's up to float rounding (the same sum, in another order).

    `grad_into` (see `gram_matrix`): the backward adds the gradient into that buffer and returns none."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, grad_into: Optional[torch.Tensor] = None) -> torch.Tensor:
        flat, rows = _gram_view(features)
        ctx.save_for_backward(features)
        ctx.grad_into = grad_into
        if flat.shape[0] == 1:
            f = flat[0]
            return (torch.mm(f, f.t()) if rows else torch.mm(f.t(), f))[None]
        return torch.bmm(flat, flat.transpose(1, 2)) if rows else torch.bmm(flat.transpose(1, 2), flat)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (features,) = ctx.saved_tensors
        flat, rows = _gram_view(features)
        sym = grad + grad.transpose(1, 2)
        sink = ctx.grad_into
        if sink is not None and not torch.is_grad_enabled():   # added into the caller's buffer, no new tensor
            sink_flat, _ = _gram_view(sink)
            if flat.shape[0] == 1:
                sink_flat[0].addmm_(sym[0], flat[0]) if rows else sink_flat[0].addmm_(flat[0], sym[0])
            else:
                sink_flat.baddbmm_(sym, flat) if rows else sink_flat.baddbmm_(flat, sym)
            return None, None
        if torch.is_grad_enabled():   # create_graph: differentiable products (out= is not)
            out = torch.bmm(sym, flat) if rows else torch.bmm(flat, sym)
            n, c, h, w = features.shape
            return (out.view(n, c, h, w) if rows else out.view(n, h, w, c).permute(0, 3, 1, 2)), None
        # written into a tensor of the features' layout (not returned as a view of the product: autograd then
        # adds the other branches' gradients into it in place)
        out = torch.empty_like(features, memory_format=torch.contiguous_format if rows else torch.channels_last)
        out_flat, _ = _gram_view(out)
        if flat.shape[0] == 1:
            torch.mm(sym[0], flat[0], out=out_flat[0]) if rows else torch.mm(flat[0], sym[0], out=out_flat[0])
        else:
            torch.bmm(sym, flat, out=out_flat) if rows else torch.bmm(flat, sym, out=out_flat)
        return out, None


def _gram_view(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """`features` `[N, C, H, W]` as matrices without a copy: ([N, C, H·W], True) when contiguous, ([N, H·W, C],
    False) when channels-last (any other layout is made contiguous first)."""
    n, c, h, w = features.shape
    if not features.is_contiguous() and features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).reshape(n, h * w, c), False
    return features.contiguous().view(n, c, h * w), True


def usable_sink(grad_into: Optional[torch.Tensor], features: torch.Tensor) -> Optional[torch.Tensor]:
    """`grad_into` if a backward can add the features' gradient into it as it is (the same shape, dtype and strides),
    else None (the gradient then flows through autograd)."""
    if grad_into is None or (grad_into.shape, grad_into.dtype, grad_into.stride()) != \
            (features.shape, features.dtype, features.stride()):
        return None
    return grad_into


def gram_matrix(features: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                normalize: str = "gatys", grad_into: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image Gram matrices `[N, C, C]` of `features` `[N, C, H, W]`, scaled as `normalize` says (see the
    module docstring), of the masked features F∘T when `mask` (`[N or 1, 1, H, W]` at the features' size, values
    in [0, 1]) is given.

    `grad_into`: a buffer of the features' shape, dtype and memory layout that a first-order backward ADDS the
    features' gradient into instead of returning it (no new feature-sized tensor; `core.losses.vgg19_buffered`
    keeps such buffers across iterations). Used only without a mask and when the layouts match; otherwise the
    gradient flows through autograd as usual, so a caller must take both."""
    _check_normalize(normalize)
    if features.ndim != 4:
        raise ValueError(f"features must be [N, C, H, W], got shape {list(features.shape)}")
    n, c, h, w = features.shape
    if mask is not None:
        if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (h, w) or mask.shape[0] not in (1, n):
            raise ValueError(f"mask of shape {list(mask.shape)} does not fit features {list(features.shape)}: "
                             f"expected [{n} or 1, 1, {h}, {w}] (resize_mask brings a mask to a layer's size)")
        mask = mask.to(features)
        features = features * mask
        grad_into = None
    gram = _Gram.apply(features, usable_sink(grad_into, features))
    if normalize == "none":
        return gram
    if normalize == "barbershop":
        return gram / (c * h * w)
    if mask is None:
        positions = torch.full((n, 1, 1), float(h * w), dtype=gram.dtype, device=gram.device)
    else:
        positions = mask.sum((1, 2, 3)).clamp_min(_EPS).reshape(-1, 1, 1).to(gram.dtype).expand(n, 1, 1)
    if normalize == "gatys":
        return gram / (2 * c * positions)
    if normalize == "tutorial":
        return gram / (c * positions)
    return gram / positions  # 'hw'


def gram_distance(gram: torch.Tensor, target: torch.Tensor, *, normalize: str = "gatys") -> torch.Tensor:
    """Distance `[N]` between Grams `[N, C, C]` and a target (`[N or 1, C, C]`) of the same `normalize`: Σ d² for
    'gatys' and 'none', the mean of d² for 'tutorial' and 'barbershop' (F.mse_loss), Σ d² / Σ |d| for 'hw'."""
    _check_normalize(normalize)
    target = target.to(gram)
    if normalize in ("tutorial", "barbershop"):
        if gram.shape[0] == 1 and target.shape[0] == 1:
            return F.mse_loss(gram, target).reshape(1)   # F.mse_loss, as the references (the same rounding)
        return F.mse_loss(gram, target.expand_as(gram), reduction="none").flatten(1).mean(1)
    d = (gram - target).flatten(1)
    if normalize in ("gatys", "none"):
        return d.square().sum(1)
    return d.square().sum(1) / (d.abs().sum(1) + _EPS)


def style_loss(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], *, normalize: str = "gatys",
               weights: Optional[Sequence[float]] = None,
               masks: Optional[Sequence[Optional[torch.Tensor]]] = None) -> torch.Tensor:
    """Σ_l w_l · gram_distance(gram(F_l ∘ T_l), A_l) `[N]`: the style loss over layers, with targets A_l the
    (weighted, masked) Grams of the style image(s) made with the same `normalize`. `weights` default to 1 per layer
    (Gatys' paper uses 1/5 each over five layers; the tutorial 1 each; Barbershop the mean: 1/4 each); `masks` are
    the per-layer masks already at each layer's size (`resize_mask`)."""
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature maps but {len(targets)} target Grams")
    weights = [1.0] * len(features) if weights is None else list(weights)
    masks = [None] * len(features) if masks is None else list(masks)
    if len(weights) != len(features) or len(masks) != len(features):
        raise ValueError(f"one weight and one mask per layer: {len(features)} layers, {len(weights)} weights, "
                         f"{len(masks)} masks")
    total = 0
    for f, a, w, m in zip(features, targets, weights, masks):
        total = total + w * gram_distance(gram_matrix(f, m, normalize=normalize), a, normalize=normalize)
    return total


__all__ = ["NORMALIZATIONS", "resize_mask", "usable_sink", "gram_matrix", "gram_distance", "style_loss"]
