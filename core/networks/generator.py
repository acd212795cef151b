"""The generator: mapping + StyleGAN2 or StyleGAN3 synthesis, with NVIDIA's public API shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..config import GeneratorConfig, StyleGAN2Config
from . import stylegan2, stylegan3
from .layers import MappingNetwork


@dataclass
class GeneratorInfo:
    """Where a generator came from; shown to users and stored with latents made by it."""

    name: str = "unnamed"                  # Display name, usually the file name.
    source: str = ""                       # Path or hub address it was loaded from.
    source_format: str = ""                # 'nvidia-pkl', 'nvidia-tf-pkl', 'rosinality-pt', 'safetensors', 'random'.
    license: str = ""                      # Licence text or identifier where known.
    extra: dict = field(default_factory=dict)  # Free-form metadata kept on conversion.


PRECISIONS = ("auto", "float32")
"""'auto': blocks trained in fp16 run in fp16 on CUDA, as NVIDIA trained and samples them (fp32 elsewhere);
'float32': everything in fp32 (slower on CUDA, bit-for-bit closer to a CPU run)."""


class Generator(nn.Module):
    """z (+c) -> image. `G.mapping(z, c, truncation_psi, truncation_cutoff) -> ws [N, num_ws, w_dim]`,
    `G.synthesis(ws, noise_mode=...) -> [N, img_channels, R, R]` in about [-1, 1], `G(z, c, ...)`.

    `G.synthesis.run(ws, start=..., x=..., stop=...)` runs the synthesis in stages (`G.synthesis.stages`: block
    resolutions for StyleGAN2, layer names for StyleGAN3) and returns a `SynthesisState` (features, RGB skip).
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        synthesis_cls = stylegan2.SynthesisNetwork if isinstance(config.synthesis, StyleGAN2Config) \
            else stylegan3.SynthesisNetwork
        self.synthesis = synthesis_cls(config.w_dim, config.img_resolution, config.img_channels, config.synthesis)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, self.num_ws, config.mapping)
        self.info = GeneratorInfo()

    @property
    def arch(self) -> str:
        return self.config.arch

    @property
    def precision(self) -> str:
        """'auto' or 'float32' (see `PRECISIONS`); a `force_fp32` argument to synthesis overrides it."""
        return "float32" if self.synthesis.force_fp32 else "auto"

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
        self.synthesis.force_fp32 = value == "float32"

    @property
    def w_avg(self) -> torch.Tensor:
        """Average w `[w_dim]` (the truncation centre)."""
        return self.mapping.w_avg

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Fill every parameter and buffer with NVIDIA's initialisation, drawn from `generator`."""
        self.synthesis.reset_parameters(generator)
        self.mapping.reset_parameters(generator)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    def extra_repr(self) -> str:
        return (f"arch={self.arch}, z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, "
                f"num_ws={self.num_ws}, img_resolution={self.img_resolution}")


def build_generator(config: GeneratorConfig, *, seed: Optional[int] = None) -> Generator:
    """Build a generator on CPU; with `seed`, fill it with NVIDIA's random initialisation (seeded)."""
    G = Generator(config)
    if seed is not None:
        G.reset_parameters(torch.Generator().manual_seed(int(seed)))
    return G.eval().requires_grad_(False)
