"""Our own StyleGAN2 / StyleGAN3 networks (pure PyTorch, no compiled code)."""

from .generator import PRECISIONS, Generator, GeneratorInfo, build_generator
from .layers import FullyConnectedLayer, MappingNetwork
from .staging import SynthesisState

__all__ = ["PRECISIONS", "Generator", "GeneratorInfo", "build_generator", "FullyConnectedLayer", "MappingNetwork",
           "SynthesisState"]
