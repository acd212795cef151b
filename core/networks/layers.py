"""Layers shared by StyleGAN2 and StyleGAN3: equalised fully connected layer and the mapping network."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..config import MappingConfig
from ..errors import LatentError
from ..ops.bias_act import bias_act


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` to unit mean square along `dim` (the pixel norm applied to z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate: weights are scaled by lr_multiplier/sqrt(fan_in) at run time."""

    def __init__(self,
                 in_features: int,                  # Input width.
                 out_features: int,                 # Output width.
                 *,
                 bias: bool = True,                 # Add a bias before the activation?
                 activation: str = "linear",        # 'linear', 'relu' or 'lrelu'.
                 lr_multiplier: float = 1.0,        # Learning-rate multiplier (mapping layers use 0.01).
                 weight_init: float = 1.0,          # Std of the initial weights (in units after gain).
                 bias_init: float | list[float] = 0.0,  # Initial bias value(s) (in units after gain).
                 ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight_init = weight_init
        self.bias_init = bias_init
        self.weight = nn.Parameter(torch.empty([out_features, in_features]))
        self.bias = nn.Parameter(torch.empty([out_features])) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator) * (self.weight_init / self.lr_multiplier))
        if self.bias is not None:
            init = torch.as_tensor(self.bias_init, dtype=torch.float32).broadcast_to(self.bias.shape)
            self.bias.copy_(init / self.lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in] -> [N, out]
        w = self.weight.to(x.dtype)
        # The gain scales the input rather than the weight: scaling the [out, in] weight allocates a weight-sized
        # temporary per call, which for a few rows (affines, single samples) costs more than the matmul on CPU.
        x = x * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation, inplace=True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class MappingNetwork(nn.Module):
    """z (+ label c) -> w, broadcast to `num_ws` layers, with the truncation trick (StyleGAN, sec. 2)."""

    def __init__(self,
                 z_dim: int,                        # Input latent (Z) dimensionality, 0 = no latent.
                 c_dim: int,                        # Label dimensionality, 0 = unconditional.
                 w_dim: int,                        # Intermediate latent (W) dimensionality.
                 num_ws: int,                       # Number of per-layer copies of w to output.
                 config: MappingConfig,             # Depth, widths, activation, learning-rate multiplier.
                 ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = config.num_layers
        embed_features = 0 if c_dim == 0 else (config.embed_features or w_dim)
        layer_features = config.layer_features or w_dim
        features = [z_dim + embed_features] + [layer_features] * (config.num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(config.num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation=config.activation,
                                                          lr_multiplier=config.lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def embed_inputs(self, z: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        """Normalise z and the embedded label and concatenate them: `[N, z_dim + embed]`."""
        parts = []
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise LatentError(f"z must have shape [N, {self.z_dim}], got {None if z is None else list(z.shape)}")
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise LatentError(
                    f"this generator is conditional: it needs a label c of shape [N, {self.c_dim}] "
                    f"(one-hot class), got {None if c is None else list(c.shape)}")
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None) -> torch.Tensor:
        """Map `z` `[N, z_dim]` (and `c` `[N, c_dim]`) to `ws` `[N, num_ws, w_dim]`.

        Truncation: ws[:, :cutoff] = w_avg + psi * (ws[:, :cutoff] - w_avg); cutoff None = all layers.
        """
        x = self.embed_inputs(z, c)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            truncated = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for module in self.children():
            module.reset_parameters(generator)
        self.w_avg.zero_()

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"
