"""rosinality/stylegan2-pytorch checkpoints (`torch.save` dicts with `g_ema`, `latent_avg`, maybe `args`).

Also accepts the same generator inside pSp / e4e checkpoints (`state_dict` with a `decoder.` prefix).
Names map one-to-one onto NVIDIA's: style.N -> mapping.fc(N-1), conv1/to_rgb1 -> b4, convs.2k / 2k+1 ->
b(8*2^k).conv0 / conv1, to_rgbs.k -> b(8*2^k).torgb, noises.noise_K -> the K-th noise_const.
"""

from __future__ import annotations

import math
import itertools
import re
from typing import Any, Mapping

import torch

from ..config import MAX_RESOLUTION, GeneratorConfig, MappingConfig, StyleGAN2Config
from ..errors import CheckpointError
from ..files import describe
from ..networks import Generator
from .state import build_generator_for, load_state_strict


def extract_rosinality_state(data: Any, what: str) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Return (generator state dict with rosinality names, latent_avg or None) from a loaded checkpoint."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{what}: expected a dict from torch.save, got {type(data).__name__}")
    latent_avg = data.get("latent_avg")
    if "g_ema" in data or "g" in data:
        state = data.get("g_ema") if data.get("g_ema") is not None else data["g"]
    elif isinstance(data.get("state_dict"), Mapping) and any(_is_decoder(k) for k in data["state_dict"]):
        state = {k[len("decoder."):]: v for k, v in data["state_dict"].items() if _is_decoder(k)}
    elif any(isinstance(k, str) and k.startswith("style.") for k in data):
        state = data  # a bare generator state dict
    elif "d" in data or any(isinstance(k, str) and k.startswith("convs.0.") for k in data):
        raise CheckpointError(f"{what}: the file contains only a discriminator, no generator (g_ema)")
    else:
        raise CheckpointError(f"{what}: not a rosinality StyleGAN2 checkpoint (no 'g_ema'; keys: "
                              f"{', '.join(describe(k, 40) for k in list(data)[:8])})")
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{what}: 'g_ema' is not a state dict of tensors")
    if not all(isinstance(k, str) for k in state):
        odd = itertools.islice((k for k in state if not isinstance(k, str)), 4)
        raise CheckpointError(f"{what}: 'g_ema' has names that are not strings ({', '.join(map(describe, odd))})")
    if any("dwt" in k or "iwt" in k for k in state):
        raise CheckpointError(f"{what}: SWAGAN (wavelet) generators are not supported; only StyleGAN2")
    if latent_avg is not None and not torch.is_tensor(latent_avg):
        raise CheckpointError(f"{what}: 'latent_avg' is a {type(latent_avg).__name__}, expected a tensor")
    if latent_avg is not None and latent_avg.ndim == 2:  # pSp / e4e save it repeated once per style layer
        if not torch.equal(latent_avg, latent_avg[:1].expand_as(latent_avg)):
            raise CheckpointError(f"{what}: 'latent_avg' {list(latent_avg.shape)} differs between layers; "
                                  f"expected one average w repeated per layer")
        latent_avg = latent_avg[0]
    return dict(state), latent_avg


def _is_decoder(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("decoder.")


def config_from_rosinality(state: Mapping[str, torch.Tensor], what: str) -> GeneratorConfig:
    """The architecture implied by the tensor names and shapes (rosinality files store no settings)."""
    try:
        w_dim = _dim(state, "style.1.weight", 1, what)
        n_mlp = max(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        num_convs = max(int(m.group(1)) for k in state if (m := re.fullmatch(r"convs\.(\d+)\.conv\.weight", k))) + 1
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{what}: the generator state lacks the mapping or synthesis layers ({e})") from e
    max_convs = 2 * (int(math.log2(MAX_RESOLUTION)) - 2)
    if num_convs > max_convs:  # checked before 2 ** (...) is computed from a name in the file
        raise CheckpointError(f"{what}: the generator state has {num_convs} synthesis convolutions (convs.*); at most "
                              f"{max_convs} ({MAX_RESOLUTION} px) are supported")
    resolution = 2 ** (2 + num_convs // 2)
    # Output channels per resolution; NVIDIA's rule is min(channel_base // res, channel_max).
    chans = {4: _dim(state, "conv1.conv.weight", 1, what)}
    chans.update({2 ** (3 + i // 2): _dim(state, f"convs.{i}.conv.weight", 1, what) for i in range(1, num_convs, 2)})
    channel_max = max(chans.values())
    below = sorted((res, c) for res, c in chans.items() if c < channel_max)
    channel_base = below[0][0] * below[0][1] if below else channel_max * resolution
    try:
        return GeneratorConfig(
            arch="stylegan2", z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=resolution,
            img_channels=_dim(state, "to_rgb1.conv.weight", 1, what),
            mapping=MappingConfig(num_layers=n_mlp, lr_multiplier=0.01),
            synthesis=StyleGAN2Config(channel_base=channel_base, channel_max=channel_max, conv_clamp=None,
                                      architecture="skip"))
    except CheckpointError as e:
        raise CheckpointError(f"{what}: the tensor names and shapes describe an unsupported generator ({e})") from e


def _dim(state: Mapping[str, torch.Tensor], key: str, axis: int, what: str) -> int:
    """`state[key].shape[axis]`; CheckpointError naming the file and the tensor if it is absent or has too few
    dimensions."""
    if key not in state:
        raise CheckpointError(f"{what}: the generator state has no tensor {key!r}; not a complete rosinality "
                              f"StyleGAN2 generator")
    shape = state[key].shape
    if len(shape) <= axis:
        raise CheckpointError(f"{what}: tensor {key!r} has shape {list(shape)}, expected at least {axis + 1} "
                              f"dimensions")
    return int(shape[axis])


def convert_rosinality_state(state: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Rename (and reshape) rosinality tensors to our names. Names this does not know, or whose layer index is out
    of range, are kept as they are for the strict check to report; a tensor whose shape cannot be converted
    raises CheckpointError naming the file and the tensor."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        try:
            _convert_one(k, v, out)
        except (IndexError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{what}: tensor {k!r} {list(v.shape)} does not have the shape of a rosinality "
                                  f"StyleGAN2 generator tensor ({e})") from e
    return out


_MAX_INDEX = 64  # layer indices in names; larger ones cannot be real (and 2 ** index must stay cheap)


def _index(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 3 and int(text) <= _MAX_INDEX else None


def _convert_one(k: str, v: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    parts = k.split(".")
    if k.startswith("style.") and len(parts) == 3 and _index(parts[1]) not in (None, 0):
        out[f"mapping.fc{_index(parts[1]) - 1}.{parts[2]}"] = v
    elif k == "input.input":
        out["synthesis.b4.const"] = v[0]
    elif k.startswith("noises.noise_") and _index(k[len("noises.noise_"):]) is not None:
        i = _index(k[len("noises.noise_"):])
        name = "b4.conv1" if i == 0 else f"b{2 ** (2 + (i + 1) // 2)}.conv{(i + 1) % 2}"
        out[f"synthesis.{name}.noise_const"] = v[0, 0]
    elif k.startswith("conv1."):
        out.update(_modconv("synthesis.b4.conv1", k[len("conv1."):], v))
    elif k.startswith("convs.") and len(parts) > 2 and _index(parts[1]) is not None:
        i = _index(parts[1])
        out.update(_modconv(f"synthesis.b{2 ** (3 + i // 2)}.conv{i % 2}", ".".join(parts[2:]), v))
    elif k.startswith("to_rgb1.") or (k.startswith("to_rgbs.") and len(parts) > 2 and _index(parts[1]) is not None):
        if k.startswith("to_rgb1."):
            layer, rest = "b4.torgb", k[len("to_rgb1."):]
        else:
            layer, rest = f"b{2 ** (3 + _index(parts[1]))}.torgb", ".".join(parts[2:])
        if rest == "bias":
            out[f"synthesis.{layer}.bias"] = v.reshape(-1)
        elif not rest.startswith("upsample."):  # the fixed blur kernel is configuration in ours
            out.update(_modconv(f"synthesis.{layer}", rest, v))
    elif not k.endswith((".kernel", "blur.kernel")):
        out[k] = v  # left for the strict check to report


def _modconv(prefix: str, rest: str, v: torch.Tensor) -> dict[str, torch.Tensor]:
    if rest == "conv.weight":
        return {f"{prefix}.weight": v[0]}
    if rest == "conv.modulation.weight":
        return {f"{prefix}.affine.weight": v}
    if rest == "conv.modulation.bias":
        return {f"{prefix}.affine.bias": v}
    if rest == "noise.weight":
        return {f"{prefix}.noise_strength": v.reshape([])}
    if rest == "activate.bias":
        return {f"{prefix}.bias": v}
    if rest.endswith("kernel"):
        return {}
    return {f"{prefix}.{rest}": v}


def generator_from_rosinality(data: Any, what: str) -> tuple[Generator, bool]:
    """Build our generator from a loaded rosinality checkpoint; returns (G, has_latent_avg)."""
    state, latent_avg = extract_rosinality_state(data, what)
    config = config_from_rosinality(state, what)
    converted = convert_rosinality_state(state, what)
    if latent_avg is not None:
        converted["mapping.w_avg"] = latent_avg.reshape(-1)
    G = build_generator_for(config, converted, what)  # names and shapes checked before anything is allocated
    load_state_strict(G, converted, what)
    return G, latent_avg is not None
