"""Frozen architecture descriptions of StyleGAN2 / StyleGAN3 generators, read from checkpoint metadata."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from .errors import CheckpointError

ARCHS = ("stylegan2", "stylegan3")
SYNTHESIS_ARCHITECTURES = ("orig", "skip", "resnet")
ACTIVATIONS = ("linear", "relu", "lrelu")


@dataclass(frozen=True)
class MappingConfig:
    """Mapping network z (+c) -> w. Field names follow NVIDIA's `MappingNetwork` keyword arguments."""

    num_layers: int = 8                 # Number of fully connected layers (ADA 'auto' and StyleGAN3 use 2).
    embed_features: Optional[int] = None  # Label embedding width; None = w_dim.
    layer_features: Optional[int] = None  # Hidden width; None = w_dim.
    activation: str = "lrelu"           # Activation of every layer.
    lr_multiplier: float = 0.01         # Equalised learning-rate multiplier (scales weights at run time).
    w_avg_beta: Optional[float] = 0.995  # Training-time decay of the tracked w average (kept for round trips).


@dataclass(frozen=True)
class StyleGAN2Config:
    """Synthesis network of StyleGAN2 / StyleGAN2-ADA (configs E and F and the ADA variants)."""

    channel_base: int = 32768           # Channels at resolution r are min(channel_base // r, channel_max).
    channel_max: int = 512              # Upper bound on the channel count of any block.
    num_fp16_res: int = 0               # The N highest resolutions run in fp16 where the device supports it.
    conv_clamp: Optional[float] = None  # Clamp conv outputs to +-X; None = no clamping.
    architecture: str = "skip"          # 'orig', 'skip' or 'resnet'.
    resample_filter: tuple[float, ...] = (1, 3, 3, 1)  # 1-D taps of the separable up/downsampling filter.
    use_noise: bool = True              # Per-pixel noise inputs.
    activation: str = "lrelu"           # Activation of the convolution layers.


@dataclass(frozen=True)
class StyleGAN3Config:
    """Synthesis network of StyleGAN3 (config T, and config R with conv_kernel=1 and radial filters)."""

    channel_base: int = 32768           # Overall multiplier for the channel counts.
    channel_max: int = 512              # Upper bound on the channel count of any layer.
    num_layers: int = 14                # Layers excluding the Fourier input and ToRGB.
    num_critical: int = 2               # Critically sampled layers at the end.
    first_cutoff: float = 2.0           # Cutoff frequency of the first layer (f_c,0).
    first_stopband: float = 2 ** 2.1    # Minimum stopband of the first layer (f_t,0).
    last_stopband_rel: float = 2 ** 0.3  # Minimum stopband of the last layer, relative to its cutoff.
    margin_size: int = 10               # Extra pixels computed outside the image.
    output_scale: float = 0.25          # Scale of the output image.
    num_fp16_res: int = 4               # Layers whose sampling rate exceeds img_resolution / 2**N run in fp16 on GPU.
    conv_kernel: int = 3                # Convolution kernel (1 for config R).
    filter_size: int = 6                # Low-pass filter taps relative to the lower resolution.
    lrelu_upsampling: int = 2           # Relative sampling rate of the leaky ReLU.
    use_radial_filters: bool = False    # Radially symmetric downsampling filters (config R).
    conv_clamp: Optional[float] = 256   # Clamp conv outputs to +-X; None = no clamping.
    magnitude_ema_beta: float = 0.999   # Training-time decay of the input magnitude EMA (kept for round trips).


SynthesisConfig = Union[StyleGAN2Config, StyleGAN3Config]


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to build a generator; stored as JSON in our `.safetensors` metadata."""

    arch: Literal["stylegan2", "stylegan3"]
    z_dim: int = 512                    # Input latent (Z) dimensionality.
    c_dim: int = 0                      # Conditioning label dimensionality, 0 = unconditional.
    w_dim: int = 512                    # Intermediate latent (W) dimensionality.
    img_resolution: int = 1024          # Output resolution (a power of two).
    img_channels: int = 3               # Output colour channels.
    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=StyleGAN2Config)

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(data: Any) -> "GeneratorConfig":
        """Build a config from `to_dict()` output.

        Raises:
            CheckpointError: naming the field: a missing, unknown or mistyped key, or a value out of bounds
                (see `_validate`).
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"generator config is {_json_type(data)}, expected a JSON object")
        data = dict(data)
        if "arch" not in data:
            raise CheckpointError("generator config is missing the key 'arch'; the metadata is incomplete")
        arch = data.pop("arch")
        if arch not in ARCHS:
            raise CheckpointError(f"invalid generator config: arch is {arch!r}, expected one of {ARCHS}")
        mapping = _build(MappingConfig, data.pop("mapping", {}), "mapping")
        syn_cls = StyleGAN2Config if arch == "stylegan2" else StyleGAN3Config
        syn_values = data.pop("synthesis", {})
        if isinstance(syn_values, dict) and "resample_filter" in syn_values:  # JSON turns the tuple into a list
            taps = syn_values["resample_filter"]
            if not isinstance(taps, (list, tuple)):
                raise CheckpointError(f"invalid generator config: synthesis.resample_filter is {_json_type(taps)}, "
                                      f"expected a list of numbers")
            syn_values = dict(syn_values, resample_filter=tuple(taps))
        synthesis = _build(syn_cls, syn_values, "synthesis")
        return _build(GeneratorConfig, dict(data, arch=arch, mapping=mapping, synthesis=synthesis), "generator")

    @staticmethod
    def from_json(text: str) -> "GeneratorConfig":
        """`from_dict(json.loads(text))`; CheckpointError for text that is not JSON (or nested absurdly deep)."""
        if not isinstance(text, str):
            raise CheckpointError(f"generator config is a {type(text).__name__}, expected JSON text")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"generator config metadata is not valid JSON: {e}") from e
        except RecursionError as e:
            raise CheckpointError("generator config metadata is nested too deeply to be a config") from e
        return GeneratorConfig.from_dict(data)


# ------------------------------------------------------------------------------------------------
# Bounds. Generous for every published model (FFHQ/AFHQ/MetFaces SG2, SG2-ADA and SG3 T/R at up to 1024 px,
# StyleGAN-XL up to 1024 px with 1000 classes, rosinality 256-1024 and the pSp / e4e decoders), and far below
# what would make a tiny file allocate gigabytes before its weights are compared with its claims.

MAX_FEATURES = 8192           # z_dim, w_dim, mapping widths (published models: 64-1024).
MAX_C_DIM = 65536             # class labels (ImageNet: 1000).
MAX_IMG_CHANNELS = 16         # RGB = 3; grey = 1; RGBA = 4.
MAX_MAPPING_LAYERS = 64       # published: 2 (SG3, ADA auto), 4 (XL), 8 (SG2).
MAX_RESOLUTION = 4096         # published: up to 1024 (SG2/SG3/XL), some fine-tunes 2048.
MAX_CHANNELS = 8192           # channel_max (published: 512, 1024 for SG3-R).
MAX_CHANNEL_BASE = 2 ** 22    # channel_base (published: 16384-65536).
MAX_SG3_LAYERS = 64           # published: 14 (T, R), XL 12-24.
MAX_FILTER_TAPS = 32          # StyleGAN2 resample_filter (published: 4).
MAX_SG3_TAPS = 256            # taps of any StyleGAN3 up/down filter (published: <= 24).
MAX_FP16_RES = 64
MAX_MARGIN = 256              # published: 10.
MAX_FILTER_SIZE = 64          # published: 6.
MAX_LRELU_UPSAMPLING = 8      # published: 2.


@dataclass(frozen=True)
class StyleGAN3Geometry:
    """Per-layer sampling of a StyleGAN3 synthesis network (sec. 3.2 and appendix F of the paper): index 0 is
    the Fourier input, index `num_layers` the ToRGB."""

    cutoffs: Any          # f_c per layer [num_layers + 1] (numpy float64)
    stopbands: Any        # f_t per layer
    sampling_rates: Any   # s per layer (powers of two)
    half_widths: Any      # f_h per layer
    sizes: Any            # spatial size including margins
    channels: Any         # output channels per layer (the last is img_channels)


def stylegan3_geometry(config: StyleGAN3Config, img_resolution: int, img_channels: int) -> StyleGAN3Geometry:
    """The layer geometry NVIDIA's `SynthesisNetwork` derives from its settings (one place for the network and
    for the bounds check)."""
    import numpy as np

    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * config.last_stopband_rel
    exponents = np.minimum(np.arange(config.num_layers + 1) / (config.num_layers - config.num_critical), 1)
    cutoffs = config.first_cutoff * (last_cutoff / config.first_cutoff) ** exponents
    stopbands = config.first_stopband * (last_stopband / config.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + config.margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((config.channel_base / 2) / cutoffs, config.channel_max))
    channels[-1] = img_channels
    return StyleGAN3Geometry(cutoffs, stopbands, sampling_rates, half_widths, sizes, channels)


def _json_type(value: Any) -> str:
    """'a string', 'an integer', 'a JSON object', ... for messages about a value of the wrong type."""
    names = {dict: "a JSON object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
             type(None): "null", int: "an integer", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def _build(cls, values: Any, what: str):
    if not isinstance(values, dict):
        raise CheckpointError(f"invalid generator config: {what} is {_json_type(values)}, expected a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(values) - names))
    if unknown:
        raise CheckpointError(f"unknown {what} setting(s) {unknown}; known settings are {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as e:  # a required field missing
        raise CheckpointError(f"invalid {what} settings: {e}") from e


def _validate(cfg: GeneratorConfig) -> None:
    """Types and bounds of every field, checked before anything is built from the config (every format's
    config is constructed, so passes here). Raises CheckpointError naming the field, the value and the bound."""

    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"invalid generator config: {msg}")

    def integer(name: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad(f"{name} is {value!r} ({_json_type(value)}), expected an integer in [{lo}, {hi}]")
        if not lo <= value <= hi:
            raise bad(f"{name} is {value}, expected an integer in [{lo}, {hi}]")
        return int(value)

    def real(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad(f"{name} is {value!r} ({_json_type(value)}), expected a number")
        value = float(value)
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise bad(f"{name} is {value!r}, expected a finite number in {interval}")
        return value

    def choice(name: str, value: Any, options: tuple) -> None:
        if not isinstance(value, str) or value not in options:
            raise bad(f"{name} is {value!r}, expected one of {options}")

    def flag(name: str, value: Any) -> None:
        if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
            raise bad(f"{name} is {value!r}, expected true or false")

    choice("arch", cfg.arch, ARCHS)
    integer("z_dim", cfg.z_dim, 1, MAX_FEATURES)
    integer("w_dim", cfg.w_dim, 1, MAX_FEATURES)
    integer("c_dim", cfg.c_dim, 0, MAX_C_DIM)
    integer("img_channels", cfg.img_channels, 1, MAX_IMG_CHANNELS)
    r = integer("img_resolution", cfg.img_resolution, 4, MAX_RESOLUTION)
    if r & (r - 1):
        raise bad(f"img_resolution is {r}, expected a power of two in [4, {MAX_RESOLUTION}]")

    m = cfg.mapping
    if not isinstance(m, MappingConfig):
        raise bad(f"mapping is a {type(m).__name__}, expected a MappingConfig")
    integer("mapping.num_layers", m.num_layers, 1, MAX_MAPPING_LAYERS)
    for name in ("embed_features", "layer_features"):
        if getattr(m, name) is not None:
            integer(f"mapping.{name}", getattr(m, name), 1, MAX_FEATURES)
    choice("mapping.activation", m.activation, ACTIVATIONS)
    real("mapping.lr_multiplier", m.lr_multiplier, 0.0, 1000.0, lo_open=True)
    if m.w_avg_beta is not None:
        real("mapping.w_avg_beta", m.w_avg_beta, 0.0, 1.0)

    syn = cfg.synthesis
    expected = StyleGAN2Config if cfg.arch == "stylegan2" else StyleGAN3Config
    if not isinstance(syn, expected):
        raise bad(f"arch {cfg.arch!r} needs a {expected.__name__}, got {type(syn).__name__}")
    base = integer("synthesis.channel_base", syn.channel_base, 1, MAX_CHANNEL_BASE)
    integer("synthesis.channel_max", syn.channel_max, 1, MAX_CHANNELS)
    integer("synthesis.num_fp16_res", syn.num_fp16_res, 0, MAX_FP16_RES)
    if syn.conv_clamp is not None:
        real("synthesis.conv_clamp", syn.conv_clamp, 0.0, 1e9, lo_open=True)
    if isinstance(syn, StyleGAN2Config):
        choice("synthesis.architecture", syn.architecture, SYNTHESIS_ARCHITECTURES)
        choice("synthesis.activation", syn.activation, ACTIVATIONS)
        flag("synthesis.use_noise", syn.use_noise)
        if base < r:  # channels at resolution r are channel_base // r
            raise bad(f"synthesis.channel_base is {base}, expected at least img_resolution ({r}): the "
                      f"{r}x{r} block would have {base // r} channels")
        _check_filter(syn.resample_filter, bad)
    else:
        n = integer("synthesis.num_layers", syn.num_layers, 1, MAX_SG3_LAYERS)
        integer("synthesis.num_critical", syn.num_critical, 0, n - 1)
        real("synthesis.first_cutoff", syn.first_cutoff, 0.5, r / 2)
        real("synthesis.first_stopband", syn.first_stopband, syn.first_cutoff, 4.0 * r, lo_open=True)
        real("synthesis.last_stopband_rel", syn.last_stopband_rel, 1.0, 16.0)
        integer("synthesis.margin_size", syn.margin_size, 0, MAX_MARGIN)
        real("synthesis.output_scale", syn.output_scale, 0.0, 1e3, lo_open=True)
        if syn.conv_kernel not in (1, 3) or isinstance(syn.conv_kernel, bool):
            raise bad(f"synthesis.conv_kernel is {syn.conv_kernel!r}, expected 1 or 3")
        integer("synthesis.filter_size", syn.filter_size, 1, MAX_FILTER_SIZE)
        integer("synthesis.lrelu_upsampling", syn.lrelu_upsampling, 1, MAX_LRELU_UPSAMPLING)
        flag("synthesis.use_radial_filters", syn.use_radial_filters)
        real("synthesis.magnitude_ema_beta", syn.magnitude_ema_beta, 0.0, 1.0)
        _check_stylegan3_geometry(syn, r, cfg.img_channels, bad)


def _check_filter(taps: Any, bad) -> None:
    """StyleGAN2's up/downsampling filter: 1..MAX_FILTER_TAPS finite numbers whose sum is clearly non-zero
    (it is normalised by its sum: a zero sum would render NaN)."""
    if not isinstance(taps, (tuple, list)) or not 1 <= len(taps) <= MAX_FILTER_TAPS:
        raise bad(f"synthesis.resample_filter is {taps!r}, expected 1 to {MAX_FILTER_TAPS} numbers, e.g. [1, 3, 3, 1]")
    if any(isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) for t in taps):
        raise bad(f"synthesis.resample_filter is {list(taps)!r}, expected finite numbers, e.g. [1, 3, 3, 1]")
    total, size = math.fsum(taps), math.fsum(abs(t) for t in taps)
    if size == 0 or abs(total) < 1e-6 * size:
        raise bad(f"synthesis.resample_filter {list(taps)!r} sums to {total:g}; a low-pass filter's taps must have "
                  f"a non-zero sum, e.g. [1, 3, 3, 1]")


def _check_stylegan3_geometry(syn: StyleGAN3Config, r: int, img_channels: int, bad) -> None:
    """Every layer the settings imply must have channels, a sampling rate of at least 1 and filters of at most
    MAX_SG3_TAPS taps (the network designs them when it is built)."""
    g = stylegan3_geometry(syn, r, img_channels)
    if not (g.channels[:-1] >= 1).all():
        raise bad(f"synthesis.channel_base {syn.channel_base} gives layers without channels at {r} px; "
                  f"expected at least {r}")
    if not (g.sampling_rates >= 1).all() or not (g.half_widths > 0).all():
        raise bad(f"synthesis cutoffs/stopbands (first_cutoff {syn.first_cutoff}, first_stopband "
                  f"{syn.first_stopband}, last_stopband_rel {syn.last_stopband_rel}) give a layer without a "
                  f"transition band")
    for idx in range(syn.num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == syn.num_layers
        tmp = max(g.sampling_rates[prev], g.sampling_rates[idx]) * (1 if is_torgb else syn.lrelu_upsampling)
        up = round(tmp / g.sampling_rates[prev])
        down = round(tmp / g.sampling_rates[idx])
        taps = max(syn.filter_size * up if up > 1 else 1, syn.filter_size * down if down > 1 else 1)
        if not is_torgb and taps > MAX_SG3_TAPS:
            raise bad(f"synthesis layer {idx} would need a {taps}-tap filter (sampling rate "
                      f"{g.sampling_rates[prev]:g} -> {g.sampling_rates[idx]:g}, filter_size {syn.filter_size}, "
                      f"lrelu_upsampling {syn.lrelu_upsampling}); at most {MAX_SG3_TAPS} are supported")
