"""The IR-SE backbone (improved-residual units with squeeze-excitation; Deng et al. 2019, Hu et al. 2018) shared
by ArcFace (core.losses.arcface) and the pSp / e4e / ReStyle encoders.

State-dict names are those of TreB1eN's InsightFace_Pytorch `model_ir_se50.pth`, which pSp, e4e and ReStyle kept:
`input_layer.{0,1,2}`, `body.<unit>.shortcut_layer.{0,1}`, `body.<unit>.res_layer.{0..5}`, so their files load as
they are.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# IR-SE50: (output channels, units) per stage; the first unit of every stage has stride 2.
IR_SE50_STAGES: tuple[tuple[int, int], ...] = ((64, 3), (128, 4), (256, 14), (512, 3))
SE_REDUCTION = 16
STEM_CHANNELS = 64


class SqueezeExcite(nn.Module):
    """Channel gate: x · sigmoid(fc2(relu(fc1(mean_hw x)))) (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(fc2(relu(fc1(mean_hw x)))) as `[N, C, 1, 1]`. The 1×1 convolutions on a 1×1 map are run as
        matrix products (PyTorch sends 1×1 maps to its slow convolution kernel)."""
        s = F.relu(F.linear(x.mean((2, 3)), self.fc1.weight.flatten(1)))
        return torch.sigmoid(F.linear(s, self.fc2.weight.flatten(1)))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class IRSEUnit(nn.Module):
    """Improved-residual unit with SE: res_layer(x) + shortcut_layer(x), BN → 3×3 conv → PReLU → 3×3 conv
    (carrying the stride) → BN → SE on the residual branch."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.stride = stride
        if in_channels == out_channels:
            # The reference's MaxPool2d(1, stride): a parameter-free subsampling.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # res_layer(x) + shortcut_layer(x), with the SE gate's product and the sum in one pass (addcmul) and the
        # reference's MaxPool2d(1, stride) as the strided view it is (no copy).
        sc = self.shortcut_layer
        if isinstance(sc, nn.MaxPool2d):
            s = self.stride
            shortcut = x if s == 1 else x[:, :, ::s, ::s]
        else:
            shortcut = sc(x)
        *layers, se = self.res_layer
        r = x
        for layer in layers:
            r = layer(r)
        return torch.addcmul(shortcut, r, se.gate(r))


def input_layer(in_channels: int = 3, channels: int = STEM_CHANNELS) -> nn.Sequential:
    """The stem: 3×3 conv (no bias) → BN → PReLU, full resolution."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                         nn.PReLU(channels))


def ir_se_body(stages: Sequence[tuple[int, int]] = IR_SE50_STAGES, in_channels: int = STEM_CHANNELS,
               reduction: int = SE_REDUCTION) -> nn.Sequential:
    """The units of every stage in one Sequential (`body.0` … `body.23` for IR-SE50); each stage halves the size."""
    units: list[nn.Module] = []
    c_in = in_channels
    for c_out, num_units in stages:
        for i in range(num_units):
            units.append(IRSEUnit(c_in, c_out, 2 if i == 0 else 1, reduction))
            c_in = c_out
    return nn.Sequential(*units)


def stage_ends(stages: Sequence[tuple[int, int]] = IR_SE50_STAGES) -> list[int]:
    """Index in `body` of the last unit of every stage (IR-SE50: 2, 6, 20, 23; pSp taps 6, 20 and 23)."""
    ends, total = [], 0
    for _, num_units in stages:
        total += num_units
        ends.append(total - 1)
    return ends


def randomize_(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Seeded random weights and BatchNorm statistics (none of them trivial) for tests, in module order."""

    def rand(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen) * (high - low) + low)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # Variance 1/fan_in: He's 2/fan_in makes 24 random residual units chaotic, unlike a trained network.
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * m.weight[0].numel() ** -0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                rand(m.weight, 0.5, 1.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                rand(m.running_var, 0.5, 1.5)
            elif isinstance(m, nn.PReLU):
                rand(m.weight, 0.0, 0.5)
    return model
