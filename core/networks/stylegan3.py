"""StyleGAN3 synthesis network (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"; configs T and R).

Parameter and buffer names equal those of NVIDIA's `training/networks_stylegan3.py`. The FIR filters are
stored buffers (as in NVIDIA's checkpoints), so loading never has to redesign them; `design_lowpass_filter`
is only used when a new network is built.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..accel import AccelConfig, accelerated_forward, plain_forward
from ..config import StyleGAN3Config, stylegan3_geometry
from ..ops.filtered_lrelu import filtered_lrelu
from ..ops.modulated_conv2d import modulated_conv2d
from .layers import FullyConnectedLayer
from .staging import SynthesisState, check_shape, stage_range
from .style_space import StyleLayer, StyleSpaceMixin
from .stylegan2 import NOISE_MODES, activation_memory_format


def _kaiser_beta(numtaps: int, width: float) -> float:
    """Kaiser window beta for a transition band `width` (fraction of Nyquist), as scipy.signal designs it."""
    atten = 2.285 * (numtaps - 1) * np.pi * width + 7.95
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> Optional[torch.Tensor]:
    """Kaiser-windowed low-pass FIR filter (sec. 3.2 and appendix C of the paper).

    Separable: windowed sinc, the same taps as `scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)`.
    Radial: a 2-D jinc windowed by the outer product of the Kaiser window, normalised to unit DC gain.
    Returns float32 `[numtaps]` or `[numtaps, numtaps]`; None for the 1-tap identity.
    """
    assert numtaps >= 1
    if numtaps == 1:
        return None
    nyq = fs / 2
    beta = _kaiser_beta(numtaps, width / nyq)
    window = np.kaiser(numtaps, beta)
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        c = cutoff / nyq
        h = c * np.sinc(c * m) * window
        return torch.as_tensor(h / h.sum(), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = torch.as_tensor(np.hypot(*np.meshgrid(x, x)), dtype=torch.float64)
    f = torch.special.bessel_j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    f = f.numpy() * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


class SynthesisInput(nn.Module):
    """Fourier-feature input: sinusoids of random frequencies, rotated and translated by an affine of w."""

    is_torgb = False

    def __init__(self,
                 w_dim: int,                        # W dimensionality.
                 channels: int,                     # Number of Fourier features.
                 size: int,                         # Output spatial size.
                 sampling_rate: float,              # Output sampling rate.
                 bandwidth: float,                  # Output bandwidth (max frequency).
                 ):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = (int(size), int(size))
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        self.weight = nn.Parameter(torch.empty([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))  # user-set inverse transform of the output image
        self.register_buffer("freqs", torch.empty([channels, 2]))
        self.register_buffer("phases", torch.empty([channels]))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        freqs = torch.randn([self.channels, 2], generator=generator)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)  # uniform in the unit disc
        self.freqs.copy_(freqs * self.bandwidth)
        self.phases.copy_(torch.rand([self.channels], generator=generator) - 0.5)
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator))
        self.affine.reset_parameters(generator)
        self.transform.copy_(torch.eye(3))

    def forward(self, w: Optional[torch.Tensor], styles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`w` `[N, w_dim]` -> `[N, C, H, W]`; `styles` `[N, 4]` replaces A(w) = (r_c, r_s, t_x, t_y)."""
        t = self.affine(w) if styles is None else styles  # (r_c, r_s, t_x, t_y)
        n = t.shape[0]
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=t.device, dtype=t.dtype).unsqueeze(0).repeat([n, 1, 1])
        m_r = eye.clone()  # inverse rotation of the output image
        m_r[:, 0, 0], m_r[:, 0, 1], m_r[:, 1, 0], m_r[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        m_t = eye.clone()  # inverse translation
        m_t[:, 0, 2], m_t[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = m_r @ m_t @ self.transform.unsqueeze(0)

        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        # Fade out frequencies a user transform pushed past the band limit.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        theta = torch.eye(2, 3, device=t.device, dtype=t.dtype)
        theta[0, 0] = 0.5 * self.size[0] / self.sampling_rate
        theta[1, 1] = 0.5 * self.size[1] / self.sampling_rate
        grids = torch.nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, self.size[1], self.size[0]],
                                                align_corners=False)
        x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)  # channels-last memory, NCHW shape

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={list(self.size)}, sampling_rate={self.sampling_rate:g}"


class SynthesisLayer(nn.Module):
    """Modulated convolution followed by the filtered leaky ReLU (or the final ToRGB)."""

    def __init__(self,
                 w_dim: int,                        # W dimensionality.
                 is_torgb: bool,                    # Final ToRGB layer?
                 is_critically_sampled: bool,       # Critically sampled (last layers)?
                 use_fp16: bool,                    # Trained in fp16 (used on CUDA)?
                 in_channels: int, out_channels: int,  # Channel counts.
                 in_size: int, out_size: int,       # Spatial sizes including margins.
                 in_sampling_rate: int, out_sampling_rate: int,  # Sampling rates s.
                 in_cutoff: float, out_cutoff: float,  # Cutoff frequencies f_c.
                 in_half_width: float, out_half_width: float,  # Transition band half-widths f_h.
                 config: StyleGAN3Config,           # Kernel, filter size, lrelu upsampling, radial, clamp.
                 ):
        super().__init__()
        self.name = "layer"                # Set by SynthesisNetwork to its attribute name, e.g. 'L3_52_512'.
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.array([in_size, in_size])
        self.in_hw = (int(in_size), int(in_size))  # Python ints, for the shape check in forward
        self.out_size = np.array([out_size, out_size])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else config.lrelu_upsampling)
        self.in_cutoff, self.out_cutoff = in_cutoff, out_cutoff
        self.in_half_width, self.out_half_width = in_half_width, out_half_width
        self.conv_kernel = 1 if is_torgb else config.conv_kernel
        self.conv_clamp = config.conv_clamp

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.empty([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(round(self.tmp_sampling_rate / in_sampling_rate))
        assert in_sampling_rate * self.up_factor == self.tmp_sampling_rate
        self.up_taps = config.filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(
            self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate))
        self.down_factor = int(round(self.tmp_sampling_rate / out_sampling_rate))
        assert out_sampling_rate * self.down_factor == self.tmp_sampling_rate
        self.down_taps = config.filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = config.use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(
            self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial))

        # Padding so that output samples sit where the symmetric interpretation puts them (appendix C.3).
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.affine.reset_parameters(generator)
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator))
        self.bias.zero_()
        self.magnitude_ema.fill_(1)

    def forward(self, x: torch.Tensor, w: Optional[torch.Tensor], *, force_fp32: bool = False,
                fused_modconv: Optional[bool] = None, styles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`styles` `[N, in]` replaces A(w); ToRGB's fixed 1/sqrt(fan_in) gain is not part of S, so it is
        applied here (NVIDIA multiplies it into the affine output). `x` `[N, in_channels, in_size, in_size]`."""
        check_shape(x, [(w if styles is None else styles).shape[0], self.in_channels, *self.in_hw], self.name, "x")
        if styles is None:
            styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel ** 2))
        fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        x = x.to(torch.float16 if fp16 else torch.float32)
        # The bias is added before upsampling, so the convolution can add it.
        x = modulated_conv2d(x, self.weight, styles, padding=self.conv_kernel - 1, demodulate=not self.is_torgb,
                             input_gain=self.magnitude_ema.rsqrt(), prenormalize="stylegan3",
                             bias=self.bias.to(x.dtype), fused=fused_modconv)
        return filtered_lrelu(x, self.up_filter, self.down_filter, up=self.up_factor, down=self.down_factor,
                              padding=self.padding, gain=1 if self.is_torgb else math.sqrt(2),
                              slope=1 if self.is_torgb else 0.2, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, size={int(self.out_size[0])}, "
                f"up={self.up_factor}, down={self.down_factor}, torgb={self.is_torgb}")


class SynthesisNetwork(StyleSpaceMixin, nn.Module):
    """ws `[N, num_layers + 2, w_dim]` -> image `[N, img_channels, R, R]`; `w_to_s` / `from_s` for S."""

    def __init__(self,
                 w_dim: int,                        # W dimensionality.
                 img_resolution: int,               # Output resolution.
                 img_channels: int,                 # Output channels.
                 config: StyleGAN3Config,           # Synthesis architecture.
                 ):
        super().__init__()
        self.w_dim = w_dim
        # Layers trained in fp16 run in fp16 on CUDA unless this is set (or `force_fp32` is passed).
        self.force_fp32 = False
        self.accel = AccelConfig()         # speed-up switches of `forward` (core.accel.set_accel); default: plain
        self.num_ws = config.num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = config.num_layers
        self.output_scale = config.output_scale

        # Geometric progression of cutoffs and minimum stopbands (sec. 3.2, appendix F); the config's bounds
        # check derives the same geometry.
        g = stylegan3_geometry(config, img_resolution, img_channels)
        cutoffs, sampling_rates, half_widths = g.cutoffs, g.sampling_rates, g.half_widths
        sizes, channels = g.sizes, g.channels

        self.input = SynthesisInput(w_dim, int(channels[0]), int(sizes[0]), sampling_rates[0], cutoffs[0])
        self.layer_names = []
        for idx in range(config.num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim, is_torgb=(idx == config.num_layers),
                is_critically_sampled=(idx >= config.num_layers - config.num_critical),
                use_fp16=bool(sampling_rates[idx] * (2 ** config.num_fp16_res) > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
                config=config)
            name = f"L{idx}_{int(layer.out_size[0])}_{layer.out_channels}"
            layer.name = name
            setattr(self, name, layer)
            self.layer_names.append(name)

    @property
    def noise_layer_names(self) -> list[str]:
        return []  # StyleGAN3 has no noise inputs

    @property
    def stages(self) -> list[str]:
        """The stages of `run`, in order: 'input' (the Fourier features), then every layer 'L0_...' to the ToRGB."""
        return ["input"] + list(self.layer_names)

    def style_layers(self) -> list[StyleLayer]:
        """The S layout in forward order: 'input' (4 values), then every layer 'L0_...' to the ToRGB.

        The input's style is its raw affine output (r_c, r_s, t_x, t_y): the rotation and translation of
        the Fourier features, normalised by |(r_c, r_s)| inside the layer. It is in S because `from_s` then
        needs no w at all and reproduces `forward(ws)` exactly; it is geometry rather than appearance, so
        StyleCLIP-style channel statistics may want to skip it (stylegan3-editing's W2S keeps it as 'input' too).
        """
        layers = [StyleLayer("input", self.input, 0, False, "input")]
        for idx, name in enumerate(self.layer_names):
            layer = getattr(self, name)
            layers.append(StyleLayer(name, layer, idx + 1, layer.is_torgb, name))
        return layers

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.input.reset_parameters(generator)
        for name in self.layer_names:
            getattr(self, name).reset_parameters(generator)

    def run(self, ws: Optional[torch.Tensor], *, styles: Optional[dict[str, torch.Tensor]] = None,
            start: Optional[str] = None, x: Optional[torch.Tensor] = None, img: Optional[torch.Tensor] = None,
            stop: Optional[str] = None, drop_skip: bool = False, noise_mode: str = "const",
            noise: Optional[dict] = None, force_fp32: Optional[bool] = None,
            generator: Optional[torch.Generator] = None, fused_modconv: Optional[bool] = None) -> SynthesisState:
        """Run the layers after `start` up to and including `stop`: the synthesis in stages (`forward` is one run).

        `s = run(ws, stop="L6_84_512")` returns that layer's output; `run(ws, start=s.stage, x=s.x).img` is then
        exactly `forward(ws)`. Stages are named as in `stages`: 'input' (the Fourier features), 'L0_...', ...

        Args:
            ws: `[N, num_ws, w_dim]`, the whole ws even for a partial run, or None when `styles` holds every
                layer of the stages that run.
            styles: optional S overrides `{layer name: [N, channels]}` (names from `style_layers()`).
            start: the stage `x` is the output of; the run begins with the next layer. None: from the input.
            x: features `[N, C, size, size]` of stage `start` (`SynthesisState.x`), any dtype.
            img, drop_skip: StyleGAN2's RGB skip, which StyleGAN3 does not have: img must be None (drop_skip
                is accepted and has no effect, so one call serves both networks).
            stop: the last stage to run (None: the ToRGB layer).
            noise_mode, noise, generator: accepted for symmetry with StyleGAN2; no effect (StyleGAN3 is noise-free).
            force_fp32: run fp16-trained layers in fp32 even on CUDA (None = `self.force_fp32`).
            fused_modconv: modulate the weights (True) or the activations (False); None: weights for N = 1
                unless the styles are optimised through fixed weights (see `modulated_conv2d`).

        Returns:
            `SynthesisState(x, img, stage=stop)`: `img` is the image `[N, img_channels, R, R]` float32
            (scaled by `output_scale`) when the ToRGB layer ran, else None.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        stages = self.stages
        first, last = stage_range(stages, start, stop)
        if img is not None:
            raise ValueError("StyleGAN3 has no RGB skip: pass img=None")
        if (start is None) != (x is None):
            raise ValueError(f"start and x go together: x is the output of stage start (SynthesisState.x and "
                             f".stage), got start={start!r} and x={'None' if x is None else list(x.shape)}")
        ws, styles = self.prepare_inputs(ws, styles, None if (first, last) == (0, len(stages) - 1)
                                         else stages[first:last + 1])
        force_fp32 = self.force_fp32 if force_fp32 is None else bool(force_fp32)
        ws = ws.unbind(dim=1) if ws is not None else [None] * self.num_ws
        if first == 0:
            x = self.input(ws[0], styles=styles.get("input"))
            x = x.contiguous(memory_format=activation_memory_format(x, self.accel.channels_last))
        for idx in range(max(first, 1), last + 1):
            name = stages[idx]
            x = getattr(self, name)(x, ws[idx], force_fp32=force_fp32, fused_modconv=fused_modconv,
                                    styles=styles.get(name))
        img = None
        if last == len(stages) - 1:
            img = x * self.output_scale if self.output_scale != 1 else x
            img = img.to(torch.float32)
        return SynthesisState(x, img, stages[last])

    def forward(self, ws: Optional[torch.Tensor], *, noise_mode: str = "const", noise: Optional[dict] = None,
                force_fp32: Optional[bool] = None, generator: Optional[torch.Generator] = None,
                fused_modconv: Optional[bool] = None, styles: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Render `ws` `[N, num_ws, w_dim]`; `noise_mode`/`noise`/`generator` are accepted for API symmetry
        with StyleGAN2 and have no effect (StyleGAN3 is noise-free). `styles`: optional S overrides
        `{layer name: [N, channels]}` (names from `style_layers()`); with `ws=None` it must name every layer.
        Runs under `self.accel` (core/accel.py)."""
        kwargs = dict(styles=styles, noise_mode=noise_mode, noise=noise, force_fp32=force_fp32,
                      generator=generator, fused_modconv=fused_modconv)
        if self.accel.wraps_forward:
            return accelerated_forward(self, ws, kwargs)
        return plain_forward(self, ws, kwargs)
