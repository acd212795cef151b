"""BiSeNet with a ResNet18 context path: the face parser of zllrunning/face-parsing.PyTorch (`79999_iter.pth`, 19
classes) and of Barbershop (`seg.pth`, 16 classes).

Our own module whose state-dict names and shapes are the reference's (`cp.resnet.*`, `cp.arm16|arm32.*`,
`cp.conv_head16|32.*`, `cp.conv_avg.*`, `ffm.*`, `conv_out.*`, `conv_out16.*`, `conv_out32.*`), so the published
files load as they are. Nothing is downloaded at construction (the reference's ResNet18 fetches torchvision's
ImageNet weights there). The forward is the reference's; by default only the main head is computed (the auxiliary
heads conv_out16/conv_out32 only served training, and every user of these files reads output 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BISENET_CLASSES = (16, 19)


class ConvBNReLU(nn.Module):
    def __init__(self, in_chan: int, out_chan: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chan, out_chan, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chan)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BiSeNetOutput(nn.Module):
    def __init__(self, in_chan: int, mid_chan: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_chan, mid_chan, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid_chan, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class AttentionRefinementModule(nn.Module):
    def __init__(self, in_chan: int, out_chan: int):
        super().__init__()
        self.conv = ConvBNReLU(in_chan, out_chan, 3, 1, 1)
        self.conv_atten = nn.Conv2d(out_chan, out_chan, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_chan)

    def forward(self, x):
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))
        return feat * atten


class BasicBlock(nn.Module):
    def __init__(self, in_chan: int, out_chan: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chan, out_chan, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chan)
        self.conv2 = nn.Conv2d(out_chan, out_chan, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chan)
        self.downsample = None
        if in_chan != out_chan or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_chan, out_chan, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_chan))

    def forward(self, x):
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _layer(in_chan: int, out_chan: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_chan, out_chan, stride), BasicBlock(out_chan, out_chan, 1))


class Resnet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, 512, 2)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(feat32.mean((2, 3), keepdim=True))  # broadcast = the reference's nearest upsampling
        feat32_sum = self.arm32(feat32) + avg
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    def __init__(self, in_chan: int, out_chan: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_chan, out_chan, 1, 1, 0)
        self.conv1 = nn.Conv2d(out_chan, out_chan // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_chan // 4, out_chan, 1, bias=False)

    def forward(self, fsp, fcp):
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * atten + feat


class BiSeNet(nn.Module):
    """BiSeNet face parser: `[N, 3, H, W]` ImageNet-normalised RGB → logits `[N, n_classes, H, W]` (H, W multiples
    of 32; the published weights expect 512×512). Frozen and in eval mode."""

    def __init__(self, n_classes: int = 19):
        super().__init__()
        self.n_classes = int(n_classes)
        self.fused = False  # see fuse_bisenet
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "BiSeNet":
        return super().train(False)  # batch statistics would change every label map

    def forward(self, x: torch.Tensor, aux: bool = False):
        """Main logits upsampled to the input size (bilinear, align_corners=True, as the reference); with `aux`,
        the reference's triple (main, conv_out16's, conv_out32's)."""
        size = x.shape[2:]
        feat_res8, feat_cp8, feat_cp16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(feat_res8, feat_cp8)), size, mode="bilinear", align_corners=True)
        if not aux:
            return out
        out16 = F.interpolate(self.conv_out16(feat_cp8), size, mode="bilinear", align_corners=True)
        out32 = F.interpolate(self.conv_out32(feat_cp16), size, mode="bilinear", align_corners=True)
        return out, out16, out32


def fuse_bisenet(model: BiSeNet) -> BiSeNet:
    """Fold every BatchNorm into the convolution before it and switch to channels-last memory, in place (an
    inference-only form: the same logits to float rounding, about a quarter faster on a CPU). The state dict then
    lacks the BatchNorm entries; keep an unfused BiSeNet to save or compare weights."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"))
    with torch.no_grad():
        for mod in list(model.modules()):
            for conv_name, bn_name in pairs:
                conv, bn = getattr(mod, conv_name, None), getattr(mod, bn_name, None)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(mod, conv_name, fuse_conv_bn_eval(conv, bn))
                    setattr(mod, bn_name, nn.Identity())
            ds = getattr(mod, "downsample", None)
            if isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[1], nn.BatchNorm2d):
                mod.downsample = nn.Sequential(fuse_conv_bn_eval(ds[0], ds[1]))
    model.fused = True
    return model.to(memory_format=torch.channels_last).eval().requires_grad_(False)


def random_bisenet(n_classes: int = 19, seed: int = 0) -> BiSeNet:
    """BiSeNet with seeded random weights and BatchNorm statistics (none trivial), for tests. The values depend
    only on the seed and the parameter order of the state dict (the reference's), so a reference module filled
    by `fill_random_state` from the same seed holds the same numbers."""
    model = empty_bisenet(n_classes)
    with torch.no_grad():
        state = random_state(model.state_dict(), seed)
        for k, t in model.state_dict().items():
            t.copy_(state[k])
    return model


def empty_bisenet(n_classes: int = 19) -> BiSeNet:
    """A BiSeNet with uninitialised memory (no random initialisation: fast), for weights copied in next."""
    with torch.device("meta"):
        model = BiSeNet(n_classes)
    return model.to_empty(device="cpu")


def random_state(template: dict, seed: int = 0) -> dict:
    """Seeded random values for a BiSeNet state dict's keys (in its order): convolutions with variance 1/fan_in,
    BatchNorm weights in [0.5, 1.5], biases and running means N(0, 0.1²), running variances in [0.5, 1.5]."""
    gen = torch.Generator().manual_seed(int(seed))
    out = {}
    for k, t in template.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.zeros_like(t)
        elif k.endswith(("running_var",)) or (k.endswith(".weight") and t.ndim == 1):
            out[k] = torch.rand(t.shape, generator=gen) + 0.5
        elif t.ndim == 1:  # bias, running_mean
            out[k] = torch.randn(t.shape, generator=gen) * 0.1
        else:
            out[k] = torch.randn(t.shape, generator=gen) * t[0].numel() ** -0.5
    return out
