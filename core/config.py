"""Frozen architecture descriptions of StyleGAN2 / StyleGAN3 generators, read from checkpoint metadata."""

from __future__ import annotations

import dataclasses
import json
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
    def from_dict(data: dict[str, Any]) -> "GeneratorConfig":
        """Build a config from `to_dict()` output; unknown or missing keys raise CheckpointError."""
        try:
            data = dict(data)
            arch = data.pop("arch")
            mapping = _build(MappingConfig, data.pop("mapping", {}), "mapping")
            syn_cls = StyleGAN2Config if arch == "stylegan2" else StyleGAN3Config
            syn_values = dict(data.pop("synthesis", {}))
            if "resample_filter" in syn_values:  # JSON turns the tuple into a list
                syn_values["resample_filter"] = tuple(syn_values["resample_filter"])
            synthesis = _build(syn_cls, syn_values, "synthesis")
            return _build(GeneratorConfig, dict(data, arch=arch, mapping=mapping, synthesis=synthesis), "generator")
        except KeyError as e:
            raise CheckpointError(f"generator config is missing the key {e}; the metadata is incomplete") from e

    @staticmethod
    def from_json(text: str) -> "GeneratorConfig":
        try:
            return GeneratorConfig.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"generator config metadata is not valid JSON: {e}") from e


def _build(cls, values: dict[str, Any], what: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CheckpointError(f"unknown {what} setting(s) {unknown}; known settings are {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as e:
        raise CheckpointError(f"invalid {what} settings {values}: {e}") from e


def _validate(cfg: GeneratorConfig) -> None:
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"invalid generator config: {msg}")

    if cfg.arch not in ARCHS:
        raise bad(f"arch is {cfg.arch!r}, expected one of {ARCHS}")
    for name in ("z_dim", "w_dim", "img_channels"):
        if int(getattr(cfg, name)) < 1:
            raise bad(f"{name} is {getattr(cfg, name)}, expected a positive integer")
    if cfg.c_dim < 0:
        raise bad(f"c_dim is {cfg.c_dim}, expected >= 0")
    r = cfg.img_resolution
    if r < 4 or r & (r - 1):
        raise bad(f"img_resolution is {r}, expected a power of two >= 4")
    if cfg.mapping.num_layers < 1:
        raise bad(f"mapping.num_layers is {cfg.mapping.num_layers}, expected >= 1")
    if cfg.mapping.activation not in ACTIVATIONS:
        raise bad(f"mapping.activation is {cfg.mapping.activation!r}, expected one of {ACTIVATIONS}")
    syn = cfg.synthesis
    expected = StyleGAN2Config if cfg.arch == "stylegan2" else StyleGAN3Config
    if not isinstance(syn, expected):
        raise bad(f"arch {cfg.arch!r} needs a {expected.__name__}, got {type(syn).__name__}")
    if isinstance(syn, StyleGAN2Config):
        if syn.architecture not in SYNTHESIS_ARCHITECTURES:
            raise bad(f"synthesis.architecture is {syn.architecture!r}, expected one of {SYNTHESIS_ARCHITECTURES}")
        if syn.activation not in ACTIVATIONS:
            raise bad(f"synthesis.activation is {syn.activation!r}, expected one of {ACTIVATIONS}")
        if len(syn.resample_filter) < 1:
            raise bad("synthesis.resample_filter is empty")
    else:
        if syn.num_layers <= syn.num_critical:
            raise bad(f"synthesis.num_layers ({syn.num_layers}) must exceed num_critical ({syn.num_critical})")
        if syn.conv_kernel not in (1, 3):
            raise bad(f"synthesis.conv_kernel is {syn.conv_kernel}, expected 1 or 3")
