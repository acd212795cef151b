"""Perceptual losses: LPIPS (VGG16 / AlexNet, the `lpips` package's v0.1 numbers) and VGG16 feature maps.

Our own modules (no torchvision needed) with torchvision's parameter names, so its weight files load as they
are. Weights come from the user's model folders, torch hub's cache, or a download when online; every file is
read with `torch.load(weights_only=True)` or safetensors, and every key and shape is checked.

LPIPS (Zhang et al. 2018, eq. 1): d(x, y) = Σ_l mean_hw ‖w_l ⊙ (ŷ_l^x − ŷ_l^y)‖², ŷ = channel-unit-normalised
backbone features after the input scaling layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, MissingWeightsError  # noqa: F401  (MissingWeightsError: re-exported)
from ..files import MissingWeights, find_or_download, find_weights, missing_weights_error, read_state_dict, weight_names

PathLike = Union[str, Path]

# Backbone files as torchvision names and publishes them.
BACKBONE_FILES = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}
# LPIPS v0.1 linear layers, as the `lpips` package bundles them (lpips/weights/v0.1/<net>.pth).
LIN_FILES = {
    "vgg": ("lpips_vgg.pth", "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"),
    "alex": ("lpips_alex.pth",
             "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"),
}

# (kind, out_channels) per torchvision `features` index; 'M' = 2x2 max-pool, 'R' = ReLU.
_VGG16 = [("C", 64), "R", ("C", 64), "R", "M", ("C", 128), "R", ("C", 128), "R", "M",
          ("C", 256), "R", ("C", 256), "R", ("C", 256), "R", "M", ("C", 512), "R", ("C", 512), "R", ("C", 512), "R",
          "M", ("C", 512), "R", ("C", 512), "R", ("C", 512), "R", "M"]
_LPIPS_TAPS = {"vgg": [3, 8, 15, 22, 29], "alex": [1, 4, 7, 9, 11]}       # relu1_2..relu5_3 / relu1..relu5
LPIPS_CHANNELS = {"vgg": [64, 128, 256, 512, 512], "alex": [64, 192, 384, 256, 256]}
# Image2StyleGAN's layers (post-ReLU) by torchvision index.
VGG16_LAYERS = {"conv1_1": 1, "conv1_2": 3, "conv2_1": 6, "conv2_2": 8, "conv3_1": 11, "conv3_2": 13, "conv3_3": 15,
                "conv4_1": 18, "conv4_2": 20, "conv4_3": 22, "conv5_1": 25, "conv5_2": 27, "conv5_3": 29}
IMAGE2STYLEGAN_LAYERS = ("conv1_1", "conv1_2", "conv3_2", "conv4_2")


def _vgg16_features(upto: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for spec in _VGG16[:upto + 1]:
        if spec == "R":
            layers.append(nn.ReLU(inplace=False))
        elif spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(nn.Conv2d(c_in, spec[1], 3, padding=1))
            c_in = spec[1]
    return nn.Sequential(*layers)


def _alexnet_features(upto: int) -> nn.Sequential:
    layers = [nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
              nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
              nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
              nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2)]
    return nn.Sequential(*layers[:upto + 1])


def _min_size(features: nn.Sequential) -> int:
    """Smallest image side for which every layer of `features` still has at least one output pixel."""
    for size in range(1, 1024):
        h = size
        for layer in features:
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                k, st, p = (layer.kernel_size, layer.stride, layer.padding)
                k, st, p = (v[0] if isinstance(v, tuple) else v for v in (k, st, p))
                h = (h + 2 * p - k) // st + 1
        if h >= 1:
            return size
    raise AssertionError("no image size fits the backbone")


def _check_images(x: torch.Tensor, min_size: int, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what} needs RGB images [N, 3, H, W] in [-1, 1], got shape {list(x.shape)}")
    if min(x.shape[2], x.shape[3]) < min_size:
        raise ValueError(f"{what} needs images of at least {min_size}x{min_size} px, got "
                         f"{x.shape[3]}x{x.shape[2]}; upsample them first")


def _build_backbone(net: str, upto: int) -> nn.Sequential:
    if net not in BACKBONE_FILES:
        raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
    return _vgg16_features(upto) if net == "vgg" else _alexnet_features(upto)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance `[N]` between images `[N, 3, H, W]` in [-1, 1] (the `lpips` package's
    `LPIPS(net=..., version='0.1')(x, y)` numbers). Frozen; differentiable with respect to the inputs."""

    def __init__(self, net: str = "vgg", *, backbone_state: Optional[dict] = None, lin_state: Optional[dict] = None):
        super().__init__()
        if net not in _LPIPS_TAPS:
            raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
        self.net = net
        self.taps = _LPIPS_TAPS[net]
        self.features = _build_backbone(net, self.taps[-1])
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS[net])
        self.register_buffer("shift", torch.tensor([-.030, -.088, -.188]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([.458, .448, .450]).reshape(1, 3, 1, 1), persistent=False)
        self.min_size = _min_size(self.features)  # 16 px for VGG, 31 px for AlexNet
        if backbone_state is not None:
            load_backbone_state(self.features, backbone_state, f"{net} backbone")
        if lin_state is not None:
            self.load_lin_state(lin_state)
        self.eval().requires_grad_(False)

    def load_lin_state(self, state: dict, what: str = "LPIPS linear layers") -> None:
        """Linear layers from the lpips package's file (`lin{k}.model.1.weight`) or ours (`lins.{k}.weight`)."""
        for k, lin in enumerate(self.lins):
            key = next((n for n in (f"lin{k}.model.1.weight", f"lin{k}.model.weight", f"lins.{k}.weight")
                        if n in state), None)
            if key is None:
                raise CheckpointError(f"{what}: no weight for linear layer {k} (expected 'lin{k}.model.1.weight'); "
                                      f"is this an LPIPS v0.1 {self.net} file?")
            if tuple(state[key].shape) != tuple(lin.weight.shape):
                raise CheckpointError(f"{what}: linear layer {k} has shape {list(state[key].shape)}, expected "
                                      f"{list(lin.weight.shape)} for LPIPS-{self.net}")
            with torch.no_grad():
                lin.weight.copy_(state[key])

    def lpips_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per layer: unit-normalised features scaled by sqrt(w_l) and 1/sqrt(H·W), so that
        Σ_l ‖f_l(x) − f_l(y)‖² (summed over everything but N) is the LPIPS distance (LPIPS's linear weights
        are non-negative). Lets an optimisation compute a fixed target's features once, as NVIDIA's
        projector does."""
        out = []
        for f, lin in zip(self._unit_features(x), self.lins):
            w = lin.weight.reshape(1, -1, 1, 1).clamp_min(0)
            out.append(f * w.sqrt() / (f.shape[2] * f.shape[3]) ** 0.5)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor] = None,
                blocks: Optional[Sequence[int]] = None) -> torch.Tensor:
        """LPIPS `[N]` of `x` and `y`. With `mask` and/or `blocks`, the masked LPIPS of Barbershop's
        `losses/masked_lpips` (see `masked`); without them the plain distance."""
        if mask is not None or blocks is not None:
            return self.masked(x, y, mask, blocks)
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs two image batches of one shape, got {list(x.shape)} and {list(y.shape)}")
        both = self._unit_features(torch.cat([x, y]))
        n = x.shape[0]
        total = 0
        for f, lin in zip(both, self.lins):
            d = (f[:n] - f[n:]).square()
            total = total + lin(d).mean([2, 3])
        return total.reshape(n)

    def masked(self, x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor] = None,
               blocks: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Masked LPIPS `[N]` (Barbershop's `masked_lpips`, which its blending loss uses with VGG blocks 1-3):
        Σ over the chosen `blocks` (1-based tap numbers, e.g. (1, 2, 3); None = all) of the mean of the weighted
        squared unit-feature differences over the pixels inside `mask`.

        mask: `[N or 1, 1, H, W]` (or `[N or 1, H, W]`) at the images' size, values in [0, 1]; each layer's mask
            is the previous layer's resized with 'nearest' (as the reference chains them), and the mean is
            Σ(d·m) / Σm per image. An image whose mask is empty at a layer contributes 0 there (the reference
            divides by zero). None: the whole image (then equal to `forward` restricted to `blocks`).
        Only the backbone up to the last chosen block runs (the reference runs all five). An optimisation against
        fixed targets computes their `unit_features` once and calls `masked_distance` (one backbone pass a step)."""
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs two image batches of one shape, got {list(x.shape)} and {list(y.shape)}")
        upto = self._check_blocks(blocks)[-1]
        both = self.unit_features(torch.cat([x, y]), upto=upto)
        n = x.shape[0]
        return self.masked_distance([f[:n] for f in both], [f[n:] for f in both], mask, blocks,
                                    size=tuple(x.shape[2:]))

    def _check_blocks(self, blocks: Optional[Sequence[int]]) -> list[int]:
        n_taps = len(self.taps)
        chosen = sorted(set(range(1, n_taps + 1) if blocks is None else (int(b) for b in blocks)))
        if not chosen or chosen[0] < 1 or chosen[-1] > n_taps:
            raise ValueError(f"blocks must be tap numbers in 1..{n_taps}, got {blocks!r}")
        return chosen

    def unit_features(self, x: torch.Tensor, upto: Optional[int] = None) -> list[torch.Tensor]:
        """Channel-unit-normalised features of images `[N, 3, H, W]` in [-1, 1] at the first `upto` taps (all when
        None): the inputs of `masked_distance`."""
        return self._unit_features(x, upto=upto)

    def masked_distance(self, fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor],
                        mask: Optional[torch.Tensor] = None, blocks: Optional[Sequence[int]] = None, *,
                        size: Optional[tuple] = None) -> torch.Tensor:
        """`masked` from the `unit_features` of both images. `mask` is at the images' `size` (H, W) (default: the
        first tap's size, which is the image's for VGG)."""
        chosen = self._check_blocks(blocks)
        n = fx[0].shape[0]
        if len(fx) < chosen[-1] or len(fy) < chosen[-1]:
            raise ValueError(f"masked_distance needs the features of taps 1..{chosen[-1]}, got {len(fx)} and {len(fy)}")
        if mask is not None:
            if mask.ndim == 3:
                mask = mask[:, None]
            size = tuple(size) if size is not None else tuple(fx[0].shape[2:])
            if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, n) or tuple(mask.shape[2:]) != size:
                raise ValueError(f"the LPIPS mask must be [{n} or 1, 1, {size[0]}, {size[1]}] (the images' size), "
                                 f"got {list(mask.shape)}")
            mask = mask.to(fx[0]).expand(n, 1, *mask.shape[2:])
        total = fx[0].new_zeros(n)
        m = mask
        for k in range(1, chosen[-1] + 1):
            if m is not None:
                m = F.interpolate(m, size=fx[k - 1].shape[2:], mode="nearest")
            if k not in chosen:
                continue
            d = self.lins[k - 1]((fx[k - 1] - fy[k - 1]).square())     # [N, 1, h, w]
            if m is None:
                total = total + d.mean([1, 2, 3])
            else:
                area = m.sum([1, 2, 3])
                total = total + torch.where(area > 0, (d * m).sum([1, 2, 3]) / area.clamp_min(1e-12),
                                            torch.zeros_like(area))
        return total

    def _unit_features(self, x: torch.Tensor, upto: Optional[int] = None) -> list[torch.Tensor]:
        """Unit-normalised features at the taps (the first `upto` taps only, when given)."""
        _check_images(x, self.min_size, f"LPIPS-{self.net}")
        h = (x - self.shift.to(x)) / self.scale.to(x)
        out = []
        last = self.taps[-1] if upto is None else self.taps[upto - 1]
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:  # the last layer is the last tap
                out.append(h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10))
            if i == last:
                break
        return out


class VGG16Features(nn.Module):
    """Post-ReLU VGG16 feature maps (Image2StyleGAN's conv1_1, conv1_2, conv3_2, conv4_2 by default) of images
    `[N, 3, H, W]` in [-1, 1], with ImageNet normalisation inside."""

    def __init__(self, layers: Sequence[str] = IMAGE2STYLEGAN_LAYERS, *, backbone_state: Optional[dict] = None):
        super().__init__()
        unknown = [n for n in layers if n not in VGG16_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG16 layers {unknown}; choose from {list(VGG16_LAYERS)}")
        self.layer_names = tuple(layers)
        self.taps = sorted(VGG16_LAYERS[n] for n in layers)
        self.features = _vgg16_features(self.taps[-1])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1), persistent=False)
        self.min_size = _min_size(self.features)
        if backbone_state is not None:
            load_backbone_state(self.features, backbone_state, "VGG16 backbone")
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_images(x, self.min_size, "VGG16Features")
        h = ((x + 1) / 2 - self.mean.to(x)) / self.std.to(x)
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
                if len(out) == len(self.taps):
                    break
        return out


def perceptual_mse(features_x: Sequence[torch.Tensor], features_y: Sequence[torch.Tensor]) -> torch.Tensor:
    """Image2StyleGAN's perceptual loss `[N]`: Σ over layers of the mean squared feature difference
    (Abdal et al. 2019, eq. 2, with the per-layer mean as its 1/N_l normalisation)."""
    if len(features_x) != len(features_y):
        raise ValueError(f"feature lists differ in length: {len(features_x)} and {len(features_y)}")
    return sum((a - b).square().flatten(1).mean(1) for a, b in zip(features_x, features_y))


def load_backbone_state(features: nn.Sequential, state: dict, what: str) -> None:
    """Copy torchvision-named weights (`features.{i}.weight`, or lpips' `net.slice{k}.{i}.weight`) into
    `features`, checking every key and shape."""
    flat = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "features" and len(parts) == 3:
            flat[f"{parts[1]}.{parts[2]}"] = v
        elif parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):
            flat[f"{parts[2]}.{parts[3]}"] = v
    own = features.state_dict()
    missing = [k for k in own if k not in flat]
    if missing:
        raise CheckpointError(f"{what}: missing {missing[:4]}{' ...' if len(missing) > 4 else ''}; expected "
                              f"torchvision's weights ({', '.join(f for f, _ in BACKBONE_FILES.values())})")
    for k, v in own.items():
        if tuple(flat[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{what}: tensor features.{k} has shape {list(flat[k].shape)}, expected "
                                  f"{list(v.shape)}; is this the right network's file?")
    features.load_state_dict({k: flat[k] for k in own})


# ------------------------------------------------------------------------------------------------
# Random networks for tests


def _seeded_(module: nn.Module, seed: int, positive_lins: bool = False) -> nn.Module:
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 4:  # He initialisation keeps activations in range through the stack
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=gen) * (2 / fan_in) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
        if positive_lins:
            for lin in module.lins:
                lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) * 0.1)
    return module.eval().requires_grad_(False)


def random_lpips(net: str = "vgg", seed: int = 0) -> LPIPS:
    """LPIPS with seeded random backbone and (non-negative) linear weights, for tests and benchmarks."""
    return _seeded_(LPIPS(net), seed, positive_lins=True)


def random_vgg16_features(seed: int = 0, layers: Sequence[str] = IMAGE2STYLEGAN_LAYERS) -> VGG16Features:
    return _seeded_(VGG16Features(layers), seed)


# ------------------------------------------------------------------------------------------------
# Finding weights


def _hub_dir() -> Path:
    """torch hub's checkpoint cache: torchvision's files are found and downloaded there."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _fetch(what: str, file_name: str, url: str, dirs: Sequence[PathLike]) -> Union[tuple[dict, str], MissingWeights]:
    """(state dict, where it came from) for `file_name` (or its .safetensors twin) from `dirs`, torch hub's cache
    or a download into that cache; what is missing when none of that works."""
    found = find_or_download(what, weight_names(file_name), url, dirs, download_dir=_hub_dir())
    if isinstance(found, MissingWeights):
        return found
    return read_state_dict(found), str(found)


def _lpips_package_dir() -> list[Path]:
    """Where an installed `lpips` package keeps its v0.1 linear layers (read as data; it is not imported)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) / "weights" / "v0.1" for p in spec.submodule_search_locations]


def load_lpips(net: str = "vgg", *, model_dirs: Sequence[PathLike] = (), device=None) -> LPIPS:
    """LPIPS-`net` with real weights.

    Backbone: torchvision's file (`vgg16-397923af.pth` / `alexnet-owt-7be5be79.pth`, or the same name with
    .safetensors) from `model_dirs`, then torch hub's checkpoint cache, then downloaded into that cache when
    online. Linear layers: `lpips_vgg.pth` / `lpips_alex.pth` (or .safetensors) from `model_dirs`, then the
    installed `lpips` package's bundled `weights/v0.1/<net>.pth`, then torch hub's cache, then downloaded.

    Raises:
        MissingWeightsError: offline and files are missing; the message names every missing file, its URL
            and the folders searched.
        CheckpointError: a file is unreadable or holds the wrong network.
    """
    if net not in BACKBONE_FILES:
        raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
    bname, burl = BACKBONE_FILES[net]
    lname, lurl = LIN_FILES[net]
    backbone = _fetch(f"LPIPS-{net} backbone (torchvision ImageNet weights)", bname, burl, model_dirs)
    # The package's file is called `<net>.pth`: look for it under that name there only.
    package = next((d / f"{net}.pth" for d in _lpips_package_dir() if (d / f"{net}.pth").is_file()), None)
    lin_path = find_weights(weight_names(lname), model_dirs) or package
    lin = ((read_state_dict(lin_path), str(lin_path)) if lin_path is not None
           else _fetch(f"LPIPS-{net} linear layers (v0.1)", lname, lurl, model_dirs))
    missing = [m for m in (backbone, lin) if isinstance(m, MissingWeights)]
    if missing:
        raise missing_weights_error(missing, [*model_dirs, _hub_dir()])
    model = LPIPS(net)
    load_backbone_state(model.features, backbone[0], f"{backbone[1]} (LPIPS-{net} backbone)")
    model.load_lin_state(lin[0], f"{lin[1]} (LPIPS-{net} linear layers)")
    return model.to(device) if device is not None else model


def load_vgg16_features(layers: Sequence[str] = IMAGE2STYLEGAN_LAYERS, *, model_dirs: Sequence[PathLike] = (),
                        device=None) -> VGG16Features:
    """VGG16 feature extractor with torchvision's ImageNet weights (found as in `load_lpips`)."""
    bname, burl = BACKBONE_FILES["vgg"]
    state = _fetch("VGG16 (torchvision ImageNet weights)", bname, burl, model_dirs)
    if isinstance(state, MissingWeights):
        raise missing_weights_error([state], [*model_dirs, _hub_dir()])
    model = VGG16Features(layers)
    load_backbone_state(model.features, state[0], f"{state[1]} (VGG16)")
    return model.to(device) if device is not None else model
