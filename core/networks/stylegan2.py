"""StyleGAN2 / StyleGAN2-ADA synthesis network (Karras et al. 2020, configs E/F; 'orig', 'skip', 'resnet').

Parameter and buffer names equal those of NVIDIA's `training/networks.py`, so converting a checkpoint
is a checked rename. The up/downsampling filter is configuration, not a stored tensor.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..accel import AccelConfig, accelerated_forward, plain_forward
from ..config import StyleGAN2Config
from ..ops.bias_act import ACTIVATIONS, bias_act, can_modify_inplace
from ..ops.conv2d_resample import conv2d_resample
from ..ops.modulated_conv2d import modulated_conv2d
from ..ops.upfirdn2d import setup_filter, upsample2d
from .layers import FullyConnectedLayer
from .staging import SynthesisState, check_shape, stage_range
from .style_space import StyleLayer, StyleSpaceMixin

NOISE_MODES = ("const", "random", "none")


def activation_memory_format(x: torch.Tensor, channels_last: bool = True) -> torch.memory_format:
    """Channels-last on CPU and CUDA: oneDNN and cuDNN run these convolutions 1.5-3x faster in it
    (`channels_last=False`: the `AccelConfig` switch, NCHW-contiguous)."""
    return torch.contiguous_format if x.device.type == "mps" or not channels_last else torch.channels_last


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling), noise, bias, activation, clamp."""

    is_torgb = False

    def __init__(self,
                 in_channels: int,                  # Input channels.
                 out_channels: int,                 # Output channels.
                 w_dim: int,                        # W dimensionality (input of the affine layer).
                 resolution: int,                   # Output resolution.
                 *,
                 kernel_size: int = 3,              # Convolution kernel size.
                 up: int = 1,                       # Upsampling factor (1 or 2).
                 use_noise: bool = True,            # Per-pixel noise input?
                 activation: str = "lrelu",         # Activation after the bias.
                 resample_filter: tuple = (1, 3, 3, 1),  # 1-D taps of the upsampling filter.
                 conv_clamp: Optional[float] = None,  # Clamp outputs to +-X (before the layer gain).
                 ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.empty([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.empty([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.affine.reset_parameters(generator)
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator))
        if self.use_noise:
            self.noise_const.copy_(torch.randn(self.noise_const.shape, generator=generator))
            self.noise_strength.zero_()
        self.bias.zero_()

    def make_noise(self, x: torch.Tensor, noise_mode: str, noise: Optional[torch.Tensor],
                   generator: Optional[torch.Generator]) -> Optional[torch.Tensor]:
        """Noise map `[N or 1, 1, res, res]` before scaling by `noise_strength`, or None."""
        if not self.use_noise or noise_mode == "none":
            return None
        if noise is not None:
            return noise.reshape(-1, 1, self.resolution, self.resolution)
        if noise_mode == "random":
            return torch.randn([x.shape[0], 1, self.resolution, self.resolution], generator=generator,
                               device=x.device if generator is None else generator.device).to(x.device)
        return self.noise_const.reshape(1, 1, self.resolution, self.resolution)

    def forward(self, x: torch.Tensor, w: Optional[torch.Tensor], *, noise_mode: str = "const",
                noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                gain: float = 1.0, fused_modconv: Optional[bool] = None,
                styles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`x` `[N, in, res/up, res/up]`, `w` `[N, w_dim]` -> `[N, out, res, res]`; `styles` `[N, in]` replaces A(w)."""
        if styles is None:
            styles = self.affine(w)
        act_gain = self.act_gain * gain
        act_clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        bias = (self.bias * act_gain).to(x.dtype)
        y = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             prenormalize="fp16" if x.dtype == torch.float16 else None,
                             out_gain=act_gain, bias=bias, fused=fused_modconv)
        n = self.make_noise(x, noise_mode, noise, generator)
        if n is not None:
            n = n.to(y.dtype) * (self.noise_strength.to(y.dtype) * act_gain)
            y = y.add_(n) if can_modify_inplace(y, n) else y + n
        return bias_act(y, act=self.activation, gain=1.0, clamp=act_clamp, inplace=True)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation, to image channels."""

    is_torgb = True

    def __init__(self,
                 in_channels: int,                  # Input channels.
                 out_channels: int,                 # Image channels.
                 w_dim: int,                        # W dimensionality.
                 *,
                 kernel_size: int = 1,              # Convolution kernel size.
                 conv_clamp: Optional[float] = None,  # Clamp outputs to +-X.
                 ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.empty([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.affine.reset_parameters(generator)
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator))
        self.bias.zero_()

    def forward(self, x: torch.Tensor, w: Optional[torch.Tensor], fused_modconv: Optional[bool] = None,
                styles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`styles` `[N, in]` replaces A(w); the fixed 1/sqrt(fan_in) gain is not part of S, so it is applied here."""
        styles = (self.affine(w) if styles is None else styles) * self.weight_gain
        y = modulated_conv2d(x, self.weight, styles, demodulate=False, bias=self.bias.to(x.dtype),
                             fused=fused_modconv)
        return bias_act(y, clamp=self.conv_clamp, inplace=True)


class Conv2dLayer(nn.Module):
    """Plain equalised convolution with optional upsampling: the resnet skip connection."""

    def __init__(self,
                 in_channels: int,                  # Input channels.
                 out_channels: int,                 # Output channels.
                 kernel_size: int,                  # Kernel size.
                 *,
                 bias: bool = True,                 # Add a bias?
                 activation: str = "linear",        # Activation after the bias.
                 up: int = 1,                       # Upsampling factor.
                 resample_filter: tuple = (1, 3, 3, 1),  # 1-D taps of the upsampling filter.
                 conv_clamp: Optional[float] = None,  # Clamp outputs to +-X.
                 ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.weight = nn.Parameter(torch.empty([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator))
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        y = conv2d_resample(x, w, self.resample_filter, up=self.up, padding=self.padding, flip_weight=(self.up == 1))
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        b = None if self.bias is None else self.bias.to(x.dtype)
        return bias_act(y, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp, inplace=True)


class SynthesisBlock(nn.Module):
    """One resolution: [upsampling conv0], conv1, [ToRGB], with the image skip or resnet skip."""

    def __init__(self,
                 in_channels: int,                  # Input channels, 0 = first block (learned constant).
                 out_channels: int,                 # Output channels.
                 w_dim: int,                        # W dimensionality.
                 resolution: int,                   # Resolution of this block.
                 img_channels: int,                 # Image channels.
                 is_last: bool,                     # Last block (always has ToRGB)?
                 use_fp16: bool,                    # Trained in fp16 (used on devices that support it)?
                 config: StyleGAN2Config,           # Architecture, filter, clamp, noise, activation.
                 ):
        super().__init__()
        self.name = f"b{resolution}"       # In shape errors; also the attribute name in SynthesisNetwork.
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = config.architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(config.resample_filter), persistent=False)
        layer_kwargs = dict(use_noise=config.use_noise, activation=config.activation,
                            resample_filter=config.resample_filter, conv_clamp=config.conv_clamp)
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.empty([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **layer_kwargs)
        self.num_conv += 1
        if is_last or config.architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=config.conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and config.architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=config.resample_filter)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        if self.in_channels == 0:
            self.const.copy_(torch.randn(self.const.shape, generator=generator))
        for module in self.children():
            module.reset_parameters(generator)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: Optional[torch.Tensor], *,
                force_fp32: bool, noise_mode: str, noise: dict[str, torch.Tensor], prefix: str,
                generator: Optional[torch.Generator], fused_modconv: Optional[bool],
                styles: dict[str, torch.Tensor], channels_last: bool = True):
        """One stage of `SynthesisNetwork.run`: `x` `[N, in_channels, res/2, res/2]` (None for the first block),
        `img` the RGB skip `[N, img_channels, res/2, res/2]` float32 or None, `ws` `[N, num_conv + num_torgb,
        w_dim]` (None when `styles` covers this block's layers); returns (features `[N, out, res, res]`, image
        so far or None)."""
        ref = ws if ws is not None else styles[prefix + "conv1"]  # batch size and device
        if x is not None:
            check_shape(x, [ref.shape[0], self.in_channels, self.resolution // 2, self.resolution // 2], self.name, "x")
        if img is not None:
            check_shape(img, [ref.shape[0], self.img_channels, self.resolution // 2, self.resolution // 2],
                        self.name, "img")
        fp16 = self.use_fp16 and not force_fp32 and ref.device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        fmt = activation_memory_format(ref, channels_last)
        w_iter = iter(ws.unbind(dim=1) if ws is not None else [None] * (self.num_conv + self.num_torgb))
        kw = dict(noise_mode=noise_mode, generator=generator, fused_modconv=fused_modconv)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ref.shape[0], 1, 1, 1]).contiguous(memory_format=fmt)
            x = self.conv1(x, next(w_iter), noise=noise.get(prefix + "conv1"), styles=styles.get(prefix + "conv1"),
                           **kw)
        else:
            x = x.to(dtype).contiguous(memory_format=fmt)
            s0, s1 = styles.get(prefix + "conv0"), styles.get(prefix + "conv1")
            if self.architecture == "resnet":
                y = self.skip(x, gain=math.sqrt(0.5))
                x = self.conv0(x, next(w_iter), noise=noise.get(prefix + "conv0"), styles=s0, **kw)
                x = self.conv1(x, next(w_iter), noise=noise.get(prefix + "conv1"), gain=math.sqrt(0.5), styles=s1, **kw)
                x = y.add_(x) if can_modify_inplace(y, x) else y + x
            else:
                x = self.conv0(x, next(w_iter), noise=noise.get(prefix + "conv0"), styles=s0, **kw)
                x = self.conv1(x, next(w_iter), noise=noise.get(prefix + "conv1"), styles=s1, **kw)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv,
                           styles=styles.get(prefix + "torgb")).to(torch.float32)
            img = y if img is None else (img.add_(y) if can_modify_inplace(img, y) else img + y)
        return x, img


class SynthesisNetwork(StyleSpaceMixin, nn.Module):
    """ws `[N, num_ws, w_dim]` -> image `[N, img_channels, R, R]`, roughly in [-1, 1]; `w_to_s` / `from_s` for S."""

    def __init__(self,
                 w_dim: int,                        # W dimensionality.
                 img_resolution: int,               # Output resolution.
                 img_channels: int,                 # Output channels.
                 config: StyleGAN2Config,           # Synthesis architecture.
                 ):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.architecture = config.architecture
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(config.channel_base // res, config.channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (int(math.log2(img_resolution)) + 1 - config.num_fp16_res), 8)
        # Blocks trained in fp16 run in fp16 on CUDA unless this is set (or `force_fp32` is passed).
        self.force_fp32 = False
        self.accel = AccelConfig()         # speed-up switches of `forward` (core.accel.set_accel); default: plain
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   is_last=(res == img_resolution), use_fp16=(res >= fp16_resolution), config=config)
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)
            setattr(self, f"b{res}", block)

    @property
    def noise_layer_names(self) -> list[str]:
        """Names of the layers that take a noise map, e.g. 'b8.conv0' (keys of the `noise` argument)."""
        return [name for name, m in self.named_modules() if isinstance(m, SynthesisLayer) and m.use_noise]

    @property
    def stages(self) -> list[int]:
        """The stages of `run`, in order: the block resolutions [4, 8, ..., img_resolution]."""
        return list(self.block_resolutions)

    def style_layers(self) -> list[StyleLayer]:
        """The S layout in forward order: every conv (b4.conv1, b8.conv0, b8.conv1, ...) and every ToRGB.

        A block's ToRGB reads the w after its convs, which is the next block's first w (NVIDIA's layout).
        """
        layers = []
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            convs = [name for name in ("conv0", "conv1") if hasattr(block, name)]
            for i, name in enumerate(convs):
                layers.append(StyleLayer(f"b{res}.{name}", getattr(block, name), w_idx + i, False, res))
            if hasattr(block, "torgb"):
                layers.append(StyleLayer(f"b{res}.torgb", block.torgb, w_idx + block.num_conv, True, res))
            w_idx += block.num_conv
        return layers

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for res in self.block_resolutions:
            getattr(self, f"b{res}").reset_parameters(generator)

    def run(self, ws: Optional[torch.Tensor], *, styles: Optional[dict[str, torch.Tensor]] = None,
            start: Optional[int] = None, x: Optional[torch.Tensor] = None, img: Optional[torch.Tensor] = None,
            stop: Optional[int] = None, drop_skip: bool = False, noise_mode: str = "const",
            noise: Optional[dict[str, torch.Tensor]] = None, force_fp32: Optional[bool] = None,
            generator: Optional[torch.Generator] = None, fused_modconv: Optional[bool] = None) -> SynthesisState:
        """Run the blocks after `start` up to and including `stop`: the synthesis in stages (`forward` is one run).

        `s = run(ws, stop=32)` returns the 32 px features; `run(ws, start=32, x=s.x, img=s.img).img` is then
        exactly `forward(ws)`. Changing `x` in between edits the image from its 32 px features (Barbershop's
        F space, Zhu et al. 2021, optimises them; see `drop_skip`).

        Args:
            ws: `[N, num_ws, w_dim]`, the whole ws even for a partial run (each block reads its own entries), or
                None when `styles` holds every layer of the blocks that run.
            styles: optional S overrides `{layer name: [N, channels]}` (names from `style_layers()`).
            start: the resolution `x` (and `img`) are at; the run begins with the next block. None: from the
                learned 4 px constant, without `x`/`img`.
            x: features `[N, channels of b{start}, start, start]` (`SynthesisState.x`), any dtype.
            img: 'skip' architecture: the RGB skip at `start` px `[N, img_channels, start, start]`
                (`SynthesisState.img`), needed unless `drop_skip`; None for 'orig'/'resnet'.
            stop: the resolution of the last block to run (None: img_resolution).
            drop_skip: Barbershop's convention for its F space: the RGB skip accumulated up to `start` is dropped
                and the image is the sum of the ToRGB outputs after it (pass `img=None`). No effect on
                'orig'/'resnet', whose only ToRGB is the last block's.
            noise_mode: 'const' (the stored noise maps, deterministic), 'random' (fresh noise, from
                `generator` when given) or 'none'.
            noise: optional per-layer noise maps `{name: [N or 1, 1, r, r]}` overriding `noise_mode`
                for those layers (names from `noise_layer_names`).
            force_fp32: run fp16-trained blocks in fp32 even on CUDA (None = `self.force_fp32`).
            generator: the random source for noise_mode='random'.
            fused_modconv: modulate the weights (True) or the activations (False); None: weights for N = 1
                unless the styles are optimised through fixed weights (see `modulated_conv2d`).

        Returns:
            `SynthesisState(x [N, C, stop, stop], img, stage=stop)`: `img` is the RGB skip at `stop` px for
            'skip' (float32), the image `[N, img_channels, R, R]` float32 after the last block, else None.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        resolutions = self.block_resolutions
        first, last = stage_range(resolutions, start, stop)
        if start is None:
            if x is not None or img is not None or drop_skip:
                raise ValueError("x, img and drop_skip continue a run: pass start=<the resolution x is at> with them")
        else:
            if x is None:
                raise ValueError(f"start={start} needs x, the features at {start} px (SynthesisState.x of a run "
                                 f"with stop={start})")
            if self.architecture == "skip" and (img is None) != drop_skip:
                raise ValueError(f"start={start}: pass img (the RGB skip at {start} px, SynthesisState.img) to "
                                 f"continue the image, or img=None with drop_skip=True to start it from zero")
            if self.architecture != "skip" and img is not None:
                raise ValueError(f"a '{self.architecture}' network has no RGB skip before its last block: "
                                 f"pass img=None")
        ws, styles = self.prepare_inputs(ws, styles, None if (first, last) == (0, len(resolutions) - 1)
                                         else resolutions[first:last + 1])
        force_fp32 = self.force_fp32 if force_fp32 is None else bool(force_fp32)
        noise = noise or {}
        w_idx = 0
        for i in range(last + 1):
            block = getattr(self, f"b{resolutions[i]}")
            if i >= first:
                block_ws = None if ws is None else ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
                x, img = block(x, img, block_ws, force_fp32=force_fp32, noise_mode=noise_mode, noise=noise,
                               prefix=block.name + ".", generator=generator, fused_modconv=fused_modconv,
                               styles=styles, channels_last=self.accel.channels_last)
            w_idx += block.num_conv
        return SynthesisState(x, img, resolutions[last])

    def forward(self, ws: Optional[torch.Tensor], *, noise_mode: str = "const",
                noise: Optional[dict[str, torch.Tensor]] = None, force_fp32: Optional[bool] = None,
                generator: Optional[torch.Generator] = None, fused_modconv: Optional[bool] = None,
                styles: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Render `ws` `[N, num_ws, w_dim]` to `[N, C, R, R]` float32: every block of `run` (see its arguments).

        With `ws=None`, `styles` must name every layer (see `from_s`). Runs under `self.accel` (core/accel.py).
        """
        kwargs = dict(styles=styles, noise_mode=noise_mode, noise=noise, force_fp32=force_fp32,
                      generator=generator, fused_modconv=fused_modconv)
        if self.accel.wraps_forward:
            return accelerated_forward(self, ws, kwargs)
        return plain_forward(self, ws, kwargs)
