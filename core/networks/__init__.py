"""Our own StyleGAN2 / StyleGAN3 networks (pure PyTorch, no compiled code)."""

from .generator import Generator, GeneratorInfo, build_generator
from .layers import FullyConnectedLayer, MappingNetwork

__all__ = ["Generator", "GeneratorInfo", "build_generator", "FullyConnectedLayer", "MappingNetwork"]
