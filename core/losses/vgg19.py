"""VGG-19 feature maps for style transfer, from any of the three published weight files, each with its own input
convention:

==============  =========================  ============================================  ==========================
format          file                       input the network expects                     layout
==============  =========================  ============================================  ==========================
'torchvision'   vgg19-dcbb9e9d.pth         RGB in [0, 1], (x − ImageNet mean) / std      `features.{i}` (+ classifier)
'caffe'         vgg19-d01eb7cb.pth         BGR in 0–255 minus [103.939, 116.779,          torchvision's (jcjohnson's
                                           123.68] (Caffe's VGG-19, converted)           conversion; `classifier.1/4`
                                                                                         before neural-style-pt renames
                                                                                         them 0/3)
'adain'         vgg_normalised.pth         RGB in [0, 1]: its first 1×1 conv does the    Sequential `0.weight` [3,3,1,1]
                                           BGR / mean step; reflection padding,          then the convs at 2, 5, 9 ...
                                           ceil-mode pooling (Gatys' normalised VGG)
==============  =========================  ============================================  ==========================

The format is read from the file: the AdaIN layout by its keys; Caffe's by its un-renamed `classifier.1` keys or
its published name (`d01eb7cb` / 'caffe' in the file name: after neural-style-pt's rename its keys and shapes are
torchvision's, so nothing else tells them apart); everything else in the torchvision layout is torchvision's.
`format=` overrides the guess. Files are read with `core.files.read_state_dict` (safetensors or
`torch.load(weights_only=True)` after the zip/tensor checks) and every convolution's key and shape is checked.

Layer names: `conv{b}_{i}` is a convolution's output before its ReLU, `relu{b}_{i}` after it (Caffe's ReLUs work
in place, so the layers Gatys' paper and jcjohnson call conv4_2 are these relu4_2 maps), `pool{b}` the pooled map.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, MissingWeightsError  # noqa: F401  (re-exported)
from ..files import MissingWeights, find_or_download, find_weights, missing_weights_error, read_state_dict, weight_names

PathLike = Union[str, Path]

FORMATS = ("torchvision", "caffe", "adain")
POOLINGS = ("max", "avg")
# The published files, by format: (file name, URL).
VGG19_FILES = {
    "torchvision": ("vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"),
    "caffe": ("vgg19-d01eb7cb.pth", "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth"),
    "adain": ("vgg_normalised.pth",
              "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/vgg_normalised.pth"),
}
# The 16 convolutions: (name, in channels, out channels); a pool follows the last conv of each block.
CONVS = [("conv1_1", 3, 64), ("conv1_2", 64, 64),
         ("conv2_1", 64, 128), ("conv2_2", 128, 128),
         ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
         ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
         ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512)]
CONV_NAMES = [c[0] for c in CONVS]
LAYERS = [n for c in CONV_NAMES for n in (c, c.replace("conv", "relu"))] + [f"pool{b}" for b in range(1, 6)]
# Index of each conv in torchvision's `features` / in AdaIN's Sequential.
TORCHVISION_INDEX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
ADAIN_INDEX = [2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51]
VGG16_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _block_end(name: str) -> bool:
    return name in ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")


def check_layers(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise ValueError(f"unknown VGG-19 layers {unknown}; layers are conv1_1 .. conv5_4 (before the ReLU), "
                         f"relu1_1 .. relu5_4 (after it) and pool1 .. pool5")
    return names


class VGG19(nn.Module):
    """VGG-19's convolutions with the input convention of `format`; `forward(x, layers, pooling)` returns the named
    feature maps of images `[N, 3, H, W]` RGB in [0, 1], running only as far as the deepest layer asked for."""

    def __init__(self, format: str = "torchvision"):
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.format = format
        pad_mode = "reflect" if format == "adain" else "zeros"
        self.convs = nn.ModuleDict({n: nn.Conv2d(i, o, 3, padding=1, padding_mode=pad_mode) for n, i, o in CONVS})
        if format == "adain":
            self.input_conv = nn.Conv2d(3, 3, 1)   # AdaIN's normalised VGG: RGB [0, 1] -> Caffe's BGR, mean removed
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("caffe_mean", torch.tensor(CAFFE_MEAN_BGR).reshape(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] -> what the first convolution expects (see the module docstring)."""
        if self.format == "torchvision":
            return (x - self.mean.to(x)) / self.std.to(x)
        if self.format == "caffe":
            return x.flip(1) * 255 - self.caffe_mean.to(x)
        return self.input_conv(x)

    def forward(self, x: torch.Tensor, layers: Sequence[str], pooling: str = "max") -> dict[str, torch.Tensor]:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        wanted = set(check_layers(layers))
        out: dict[str, torch.Tensor] = {}
        if not wanted:
            return out
        h = self.preprocess(x)
        ceil = self.format == "adain"
        for name in CONV_NAMES:
            h = self.convs[name](h)
            if name in wanted:
                out[name] = h
                if len(out) == len(wanted):   # nothing past the deepest layer asked for
                    break
            relu = name.replace("conv", "relu")
            # in place when the conv's output is not returned (its backward needs its input, not its output)
            h = F.relu(h) if name in wanted else F.relu_(h)
            if relu in wanted:
                out[relu] = h
                if len(out) == len(wanted):
                    break
            if _block_end(name):
                h = (F.max_pool2d(h, 2, 2, ceil_mode=ceil) if pooling == "max"
                     else F.avg_pool2d(h, 2, 2, ceil_mode=ceil))
                pool = f"pool{name[4]}"
                if pool in wanted:
                    out[pool] = h
                    if len(out) == len(wanted):
                        break
        return out


# ------------------------------------------------------------------------------------------------
# Files


def _conv_keys(format: str) -> dict[str, tuple[str, str]]:
    """Our conv name -> the file's (weight key, bias key) for a layout."""
    if format == "adain":
        return {n: (f"{i}.weight", f"{i}.bias") for n, i in zip(CONV_NAMES, ADAIN_INDEX)}
    return {n: (f"features.{i}.weight", f"features.{i}.bias") for n, i in zip(CONV_NAMES, TORCHVISION_INDEX)}


def detect_format(state: dict, name: str = "", what: str = "VGG-19 weights") -> str:
    """The format of a VGG-19 state dict (see the module docstring); CheckpointError naming what the file holds
    instead when it is no VGG-19 this module reads."""
    keys = set(state)
    w0 = state.get("0.weight")
    if isinstance(w0, torch.Tensor) and tuple(w0.shape) == (3, 3, 1, 1):
        return "adain"
    if any(k.endswith("running_mean") for k in keys):
        raise CheckpointError(f"{what}: a batch-normalised VGG (vgg19_bn); style transfer needs the plain VGG-19: "
                              f"{', '.join(f for f, _ in VGG19_FILES.values())}")
    conv_idx = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"features\.(\d+)\.weight", k))
                      and isinstance(state[k], torch.Tensor) and state[k].ndim == 4)
    if conv_idx == VGG16_INDEX:
        raise CheckpointError(f"{what}: a VGG-16 (13 convolutions), not VGG-19 (16); save "
                              f"{VGG19_FILES['torchvision'][0]} from {VGG19_FILES['torchvision'][1]} instead")
    if not conv_idx:
        sample = ", ".join(sorted(keys)[:4])
        raise CheckpointError(f"{what}: no VGG-19 convolutions found (keys {sample} ...); expected torchvision's "
                              f"`features.<i>.weight` or AdaIN's `0.weight` layout — one of "
                              f"{', '.join(f for f, _ in VGG19_FILES.values())}")
    stem = Path(name).name.lower()
    if "classifier.1.weight" in keys or "d01eb7cb" in stem or "caffe" in stem:
        return "caffe"
    return "torchvision"


def vgg19_from_state(state: dict, *, format: str = "auto", name: str = "", what: str = "VGG-19 weights") -> VGG19:
    """A VGG19 with the weights of `state` (any of the three layouts), every conv's key and shape checked."""
    fmt = detect_format(state, name, what) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {', '.join(FORMATS)}, got {format!r}")
    model = VGG19(fmt)
    keys = _conv_keys(fmt)
    missing = [k for pair in keys.values() for k in pair if k not in state]
    if missing:
        raise CheckpointError(f"{what}: missing {missing[:4]}{' ...' if len(missing) > 4 else ''} for a VGG-19 in "
                              f"the {fmt} layout; expected {VGG19_FILES[fmt][0]} ({VGG19_FILES[fmt][1]})")
    new = {}
    for name_, (wk, bk) in keys.items():
        conv = model.convs[name_]
        for key, ref in ((wk, conv.weight), (bk, conv.bias)):
            t = state[key]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(ref.shape):
                shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise CheckpointError(f"{what}: tensor {key} ({name_}) has shape {shape}, expected "
                                      f"{list(ref.shape)}; is this the right network's file?")
            if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{what}: tensor {key} ({name_}) is not finite floating-point data; "
                                      f"the file is damaged — download it again")
            new[f"convs.{name_}.{key.rsplit('.', 1)[1]}"] = t.float()
    if fmt == "adain":
        for suffix, shape in (("weight", (3, 3, 1, 1)), ("bias", (3,))):
            t = state.get(f"0.{suffix}")
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                raise CheckpointError(f"{what}: AdaIN's input layer 0.{suffix} missing or not of shape {list(shape)}")
            new[f"input_conv.{suffix}"] = t.float()
    model.load_state_dict(new)
    return model


def vgg19_state(model: VGG19, format: Optional[str] = None) -> dict[str, torch.Tensor]:
    """`model`'s weights in the file layout of `format` (its own by default): what the published file holds
    (torchvision's and Caffe's with a stand-in classifier entry, ignored when read)."""
    fmt = format or model.format
    state = {}
    for name, (wk, bk) in _conv_keys(fmt).items():
        state[wk] = model.convs[name].weight.detach().clone()
        state[bk] = model.convs[name].bias.detach().clone()
    if fmt == "adain":
        state["0.weight"] = model.input_conv.weight.detach().clone()
        state["0.bias"] = model.input_conv.bias.detach().clone()
    else:
        state["classifier.0.bias"] = torch.zeros(4)
    return state


def random_vgg19(seed: int = 0, format: str = "torchvision") -> VGG19:
    """A VGG19 with seeded random (He-initialised) weights, for tests and benchmarks."""
    model = VGG19(format)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=gen) * (2 / fan_in) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
        if format == "adain":   # near the identity, so the network sees the image
            model.input_conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
    return model.eval().requires_grad_(False)


def _hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def known_file_names() -> list[str]:
    """The three published file names (what a node lists first)."""
    return [f for f, _ in VGG19_FILES.values()]


def load_vgg19(file_name: str = VGG19_FILES["torchvision"][0], *, model_dirs: Sequence[PathLike] = (),
               format: str = "auto", device=None) -> VGG19:
    """VGG-19 from `file_name` (one of `VGG19_FILES`' names, any VGG-19 file in the same layouts, or a path):
    from `model_dirs` (the pack's models/perceptual), then torch hub's checkpoint cache, then — for the published
    names — downloaded into that cache when online.

    Raises:
        MissingWeightsError: the file is nowhere and cannot be downloaded; names the file, its URL and the folders.
        CheckpointError: the file is unreadable, unsafe, or holds another network (VGG-16, batch-norm VGG, ...).
    """
    path = Path(file_name)
    if path.is_absolute() or path.parent != Path("."):
        if not path.is_file():
            raise MissingWeightsError(f"VGG-19 weights {path} not found")
        found: Union[Path, MissingWeights] = path
    else:
        url = next((u for f, u in VGG19_FILES.values() if f == file_name), None)
        fmt_name = next((k for k, (f, _) in VGG19_FILES.items() if f == file_name), "")
        if url is not None:
            found = find_or_download(f"VGG-19 ({fmt_name} weights)", weight_names(file_name), url, model_dirs,
                                     download_dir=_hub_dir(), check_hash=fmt_name == "torchvision")
        else:
            found = find_weights([file_name], [*model_dirs, _hub_dir()]) or MissingWeights(
                f"VGG-19 weights {file_name!r}", file_name, None, "not a published file name")
    if isinstance(found, MissingWeights):
        raise missing_weights_error([found], [*model_dirs, _hub_dir()])
    state = read_state_dict(found, what="VGG-19 weights")
    model = vgg19_from_state(state, format=format, name=found.name, what=f"{found} (VGG-19)")
    return model.to(device) if device is not None else model


__all__ = ["FORMATS", "POOLINGS", "VGG19_FILES", "LAYERS", "VGG19", "detect_format", "vgg19_from_state",
           "vgg19_state", "random_vgg19", "load_vgg19", "known_file_names", "check_layers"]
