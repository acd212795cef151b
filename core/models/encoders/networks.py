"""pSp's GradualStyleEncoder, e4e's Encoder4Editing and ReStyle's encoders as one module on the IR-SE backbone.

Richardson et al. 2021 (pSp, "Encoding in Style"), Tov et al. 2021 (e4e, "Designing an Encoder for StyleGAN Image
Manipulation"), Alaluf et al. 2021 (ReStyle). State-dict names are the references' (`input_layer`, `body`, `styles.i.
convs.j`, `styles.i.linear`, `latlayer1/2`), so the `encoder.*` tensors of their checkpoints load unchanged.

Four layouts, picked by `EncoderConfig.arch` and `.progressive`:
- 'fpn', not progressive: pSp's GradualStyleEncoder: style i reads the 16×16 map (i < 3), the FPN 32×32 map
  (i < 7) or the FPN 64×64 map (at 256 px input), each through its own map2style block.
- 'fpn', progressive: e4e's Encoder4Editing: w0 = style 0, repeated; style i ≥ 1 adds a delta to layer i.
- 'backbone', not progressive / progressive: ReStyle's BackboneEncoder / ProgressiveBackboneEncoder: every
  style reads the final 16×16 map (ReStyle's simpler encoders); the progressive one adds deltas to w0 as e4e.
ReStyle's encoders take 6 channels: the image and the current reconstruction (`input_channels=6`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .irse import IR_SE50_STAGES, STEM_CHANNELS, SqueezeExcite, input_layer, ir_se_body, randomize_, stage_ends

ARCHS = ("fpn", "backbone")
COARSE_STYLES = 3          # pSp/e4e: styles 0..2 read the coarsest map
MIDDLE_STYLES = 7          # styles 3..6 the middle FPN map, the rest the finest
# map2style "spatial" sizes: log2(spatial) stride-2 convolutions bring a map of that size to 1×1 (at 256 px input).
COARSE_SPATIAL, MIDDLE_SPATIAL, FINE_SPATIAL = 16, 32, 64


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of one encoder (read from a checkpoint's `opts` and tensor shapes)."""

    arch: str = "fpn"                       # 'fpn' (pSp, e4e) or 'backbone' (ReStyle's simpler encoders)
    progressive: bool = False               # e4e's w0 + per-layer deltas (else one code per layer)
    num_ws: int = 18                        # style layers of the paired generator: 2·log2(resolution) − 2
    input_channels: int = 3                 # 3, or 6 for ReStyle (image + current reconstruction)
    stages: tuple[tuple[int, int], ...] = IR_SE50_STAGES  # (channels, units) per backbone stage
    stem_channels: int = STEM_CHANNELS
    se_reduction: int = 16

    @property
    def w_dim(self) -> int:
        """The code width: the last stage's channels (512 for IR-SE50, the w of every public StyleGAN2)."""
        return self.stages[-1][0]

    def check(self) -> "EncoderConfig":
        if self.arch not in ARCHS:
            raise ValueError(f"encoder arch must be one of {ARCHS}, got {self.arch!r}")
        if self.num_ws < 1 or self.input_channels not in (3, 6) or len(self.stages) != 4:
            raise ValueError(f"unsupported encoder: {self.num_ws} style layers, {self.input_channels} input channels, "
                             f"{len(self.stages)} backbone stages (expected >= 1, 3 or 6, 4)")
        return self


class EqualLinear(nn.Module):
    """rosinality's EqualLinear (lr_mul 1, no activation): x · (W / √in)ᵀ + b."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # b + scale·(x Wᵀ) in one call: the scaled weight is not copied on every call.
        return torch.addmm(self.bias, x, self.weight.t(), alpha=self.scale)


class GradualStyleBlock(nn.Module):
    """map2style: log2(spatial) × (3×3 stride-2 conv → LeakyReLU 0.01), then EqualLinear: `[N, C, s, s]` → `[N, C]`."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[2:] != (1, 1):
            raise ValueError(f"the encoder's feature map is {x.shape[3]}x{x.shape[2]} after map2style, not 1x1: the "
                             f"input image has the wrong size (encoders take 256x256, see encode_image)")
        return self.linear(x.flatten(1))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The FPN merge: x bilinearly resized to y's size (align_corners=True, as the references) plus y."""
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


class StyleEncoder(nn.Module):
    """Image `[N, input_channels, 256, 256]` in [−1, 1] → codes `[N, num_ws, w_dim]` (before latent_avg is
    added). Always in eval mode (BatchNorm uses running statistics)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = cfg = config.check()
        self.input_layer = input_layer(cfg.input_channels, cfg.stem_channels)
        self.body = ir_se_body(cfg.stages, cfg.stem_channels, cfg.se_reduction)
        w = cfg.w_dim
        self.styles = nn.ModuleList()
        for i in range(cfg.num_ws):
            if cfg.arch == "backbone" or i < COARSE_STYLES:
                spatial = COARSE_SPATIAL
            else:
                spatial = MIDDLE_SPATIAL if i < MIDDLE_STYLES else FINE_SPATIAL
            self.styles.append(GradualStyleBlock(w, w, spatial))
        if cfg.arch == "fpn":
            self.latlayer1 = nn.Conv2d(cfg.stages[2][0], w, 1)
            self.latlayer2 = nn.Conv2d(cfg.stages[1][0], w, 1)
        self._taps = stage_ends(cfg.stages)[1:]  # ends of stages 2, 3, 4: the 64, 32 and 16 px maps at 256 px
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "StyleEncoder":
        return super().train(False)  # BatchNorm with batch statistics would change every code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.input_channels:
            raise ValueError(f"the encoder takes [N, {cfg.input_channels}, H, W] images, got {list(x.shape)}")
        if getattr(self, "channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.input_layer(x)
        if cfg.arch == "backbone":
            feats = self.body(x)
            return self._combine([feats] * cfg.num_ws)
        maps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._taps:
                maps.append(x)
        c1, c2, c3 = maps  # 64, 32, 16 px at 256 px input
        per_style: list[torch.Tensor] = []
        p2 = p1 = None
        for i in range(cfg.num_ws):
            if i < COARSE_STYLES:
                per_style.append(c3)
                continue
            if p2 is None:
                p2 = _upsample_add(c3, self.latlayer1(c2))
            if i < MIDDLE_STYLES:
                per_style.append(p2)
                continue
            if p1 is None:
                p1 = _upsample_add(p2, self.latlayer2(c1))
            per_style.append(p1)
        return self._combine(per_style)

    def _combine(self, per_style: list[torch.Tensor]) -> torch.Tensor:
        codes = [style(f) for style, f in zip(self.styles, per_style)]  # num_ws × [N, w_dim]
        if not self.config.progressive:
            return torch.stack(codes, dim=1)
        # e4e: one w0 for every layer plus a delta per layer (all deltas at inference, the references' last stage).
        w0 = codes[0][:, None]
        deltas = torch.stack([torch.zeros_like(codes[0])] + codes[1:], dim=1)
        return w0 + deltas


def random_encoder(config: EncoderConfig, seed: int = 0) -> StyleEncoder:
    """A `StyleEncoder` with seeded random weights (tests, benchmarks): the backbone as ArcFace's random weights,
    map2style convolutions and EqualLinear weights with variance giving codes of order 1."""
    enc = StyleEncoder(config)
    gen = torch.Generator().manual_seed(int(seed))
    randomize_(enc, gen)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, EqualLinear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return enc


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode BatchNorm as one conv with a bias: W' = W·γ/σ, b' = (b − μ)·γ/σ + β (exact up to
    rounding: BN after a conv is a per-output-channel affine map)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused.to(conv.weight.device, conv.weight.dtype).requires_grad_(False)


def fuse_for_inference(encoder: StyleEncoder) -> StyleEncoder:
    """Fold every BatchNorm that follows a convolution into it (the stem, each unit's second conv and conv
    shortcuts), in place; the BatchNorms before a padded conv stay (folding them would change the borders).
    The state dict then no longer has the references' names: load weights first (`load_encoder` does this)."""
    from .irse import IRSEUnit

    enc = encoder
    if getattr(enc, "fused", False):
        return enc
    enc.input_layer[0] = _fold_bn(enc.input_layer[0], enc.input_layer[1])
    enc.input_layer[1] = nn.Identity()
    for unit in enc.body:
        assert isinstance(unit, IRSEUnit)
        unit.res_layer[3] = _fold_bn(unit.res_layer[3], unit.res_layer[4])
        unit.res_layer[4] = nn.Identity()
        if isinstance(unit.shortcut_layer, nn.Sequential):
            unit.shortcut_layer = _fold_bn(unit.shortcut_layer[0], unit.shortcut_layer[1])
    enc.fused = True
    return enc


def _mkldnn_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and ops is not None
                    and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_reorder_convolution_weight"))
    except (AttributeError, RuntimeError):
        return False


_MKLDNN = _mkldnn_available()


class PackedConv2d(nn.Conv2d):
    """A Conv2d (same parameters and state-dict names) whose CPU float32 inference runs oneDNN with its weight
    reordered once into oneDNN's blocked layout (PyTorch's eager convolution reorders the weight on every call,
    which for the encoders' 512×512 3×3 map2style weights costs as much as a small convolution), with an optional
    LeakyReLU fused into the same call. The packed copy is remade when the input shape, the weight tensor or its
    version changes (an in-place edit of a weight made outside inference mode). Elsewhere (CUDA, other dtypes,
    autograd through the input or the weight) it is a plain Conv2d followed by the LeakyReLU. Costs one more copy of
    the weights in memory on CPU."""

    def __init__(self, conv: nn.Conv2d, leaky_slope: Optional[float] = None):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        self.weight = conv.weight
        self.bias = conv.bias
        self.leaky_slope = leaky_slope
        self._packed: Optional[tuple[tuple, torch.Tensor]] = None

    def _fast(self, x: torch.Tensor) -> bool:
        w = self.weight
        return (_MKLDNN and x.device.type == "cpu" and w.device.type == "cpu" and x.dtype == torch.float32
                and w.dtype == torch.float32 and x.ndim == 4 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str)
                and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)))

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        version = -1 if w.is_inference() else w._version  # inference tensors cannot be edited outside that mode
        key = (tuple(x.shape), w.data_ptr(), version)
        if self._packed is None or self._packed[0] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                w.detach(), list(self.padding), list(self.stride), list(self.dilation), self.groups, list(x.shape))
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            slope = self.leaky_slope
            bias = None if self.bias is None else self.bias.detach()
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed_weight(x), bias, list(self.padding), list(self.stride), list(self.dilation),
                self.groups, "none" if slope is None else "leaky_relu", [] if slope is None else [slope], "")
        y = super().forward(x)
        return y if self.leaky_slope is None else F.leaky_relu(y, self.leaky_slope)

    def __getstate__(self):  # copies and pickles leave the packed weight behind (remade at the next call)
        state = super().__getstate__().copy()
        state["_packed"] = None
        return state

    def _apply(self, fn, recurse=True):  # device, dtype or memory-format moves: repack at the next call
        self._packed = None
        return super()._apply(fn, recurse)


def pack_convolutions(encoder: StyleEncoder) -> StyleEncoder:
    """Every Conv2d of `encoder` as a `PackedConv2d` sharing its parameters, in place, with each map2style
    LeakyReLU fused into the convolution before it (its slot becomes an Identity: the state-dict names stay)."""
    if not _MKLDNN:
        return encoder
    for module in list(encoder.modules()):
        if isinstance(module, SqueezeExcite):
            continue  # its 1×1 convolutions on a 1×1 map run as matrix products (SqueezeExcite.gate)
        for name, child in list(module.named_children()):
            if type(child) is nn.Conv2d:
                setattr(module, name, PackedConv2d(child))
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, act = module[i], module[i + 1]
                if isinstance(conv, PackedConv2d) and conv.leaky_slope is None and isinstance(act, nn.LeakyReLU):
                    conv.leaky_slope = float(act.negative_slope)
                    module[i + 1] = nn.Identity()
    return encoder


def prepare_for_inference(encoder: StyleEncoder) -> StyleEncoder:
    """`fuse_for_inference`, then weights and activations in channels-last order (oneDNN's fast convolutions on
    CPU) and the convolutions' CPU weights packed once (`pack_convolutions`); in place. What `load_encoder`
    returns."""
    fuse_for_inference(encoder)
    encoder.to(memory_format=torch.channels_last)
    encoder.channels_last = True
    return pack_convolutions(encoder)
