"""NVIDIA checkpoints: stylegan2-ada-pytorch / stylegan3 pickles and TensorFlow-era StyleGAN2 pickles.

Both arrive as records from `safe_pickle.restricted_load`; nothing from the file runs. The architecture is
read from the constructor arguments and attributes NVIDIA's code recorded, then every tensor is checked
against our own modules.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

from ..config import GeneratorConfig, MappingConfig, StyleGAN2Config, StyleGAN3Config
from ..errors import CheckpointError
from ..log import logger
from ..networks import Generator
from ..ops.upfirdn2d import setup_filter
from .safe_pickle import PersistentObject, TFNetwork
from .state import load_state_strict

_GENERATOR_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def select_network(data: Any, network: str, what: str) -> PersistentObject | TFNetwork:
    """Pick the generator record out of an NVIDIA pickle's top-level object."""
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data):
        data = {"G": data[0], "D": data[1], "G_ema": data[2]}  # TF pickles are (G, D, Gs)
    if isinstance(data, (PersistentObject, TFNetwork)):
        data = {"G_ema": data} if _is_generator(data) else {"D": data}
    if not isinstance(data, dict):
        raise CheckpointError(f"{what}: not a StyleGAN network pickle (top-level object is a "
                              f"{type(data).__name__}, expected a dict with 'G_ema')")
    generators = [k for k in ("G_ema", "G") if _is_generator(data.get(k))]
    if not generators:
        if data.get("D") is not None:
            raise CheckpointError(f"{what}: the file contains only a discriminator (D), no generator; "
                                  f"use the snapshot pickle that also holds G_ema")
        raise CheckpointError(f"{what}: no generator found; expected 'G_ema' or 'G' in a dict with keys "
                              f"{sorted(map(str, data))}")
    if network not in ("G_ema", "G"):
        raise ValueError(f"network must be 'G_ema' or 'G', got {network!r}")
    if network not in generators:
        logger.warning("%s has no %s; using %s instead", what, network, generators[0])
        network = generators[0]
    return data[network]


def _is_generator(obj: Any) -> bool:
    if isinstance(obj, PersistentObject):
        return obj.class_name == "Generator"
    if isinstance(obj, TFNetwork):
        return "mapping" in obj.components and "synthesis" in obj.components
    return False


# --- PyTorch pickles (stylegan2-ada-pytorch, stylegan3) ---------------------------------------------

def _collect_tensors(obj: PersistentObject, prefix: str, out: dict, records: dict) -> None:
    records[prefix.rstrip(".")] = obj
    state = obj.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or name in skip:
                continue
            if not torch.is_tensor(value):
                raise CheckpointError(f"{prefix}{name} is a {type(value).__name__}, expected a tensor")
            out[prefix + name] = value.detach()
    for name, child in obj.modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"sub-module {prefix}{name} is a {type(child).__name__}, not a network layer")
        _collect_tensors(child, f"{prefix}{name}.", out, records)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0 else value


def config_from_nvidia(G: PersistentObject, records: dict[str, PersistentObject],
                       tensors: dict[str, torch.Tensor], what: str) -> GeneratorConfig:
    """Architecture from the recorded constructor arguments and layer attributes."""
    kwargs = dict(zip(_GENERATOR_POSITIONAL, G.init_args))
    kwargs.update({k: _scalar(v) for k, v in G.init_kwargs.items()})
    missing = [k for k in _GENERATOR_POSITIONAL if k not in kwargs]
    if missing:
        raise CheckpointError(f"{what}: the generator record lacks constructor arguments {missing}")
    mapping_kwargs = dict(kwargs.get("mapping_kwargs") or {})
    is_sg3 = "synthesis.input" in records
    mapping_rec = records.get("mapping")
    if mapping_rec is None:
        raise CheckpointError(f"{what}: the generator has no mapping network")
    fc0 = records.get("mapping.fc0")
    num_layers = int(mapping_rec.state.get("num_layers", mapping_kwargs.get("num_layers", 2 if is_sg3 else 8)))
    mapping = MappingConfig(
        num_layers=num_layers,
        embed_features=tensors["mapping.embed.weight"].shape[0] if "mapping.embed.weight" in tensors else None,
        layer_features=tensors["mapping.fc0.weight"].shape[0] if num_layers > 1 else None,
        activation=str(fc0.state.get("activation", "lrelu")) if fc0 else "lrelu",
        lr_multiplier=float(_scalar(fc0.state.get("bias_gain", 0.01))) if fc0 else 0.01,
        w_avg_beta=_scalar(mapping_rec.state.get("w_avg_beta", mapping_kwargs.get("w_avg_beta"))),
    )
    if is_sg3:
        syn_kwargs = {k: _scalar(v) for k, v in kwargs.items()
                      if k not in _GENERATOR_POSITIONAL and k != "mapping_kwargs"}
        syn_kwargs.pop("synthesis_kwargs", None)
        known = {f for f in StyleGAN3Config.__dataclass_fields__}
        unknown = sorted(set(syn_kwargs) - known)
        if unknown:
            raise CheckpointError(f"{what}: unsupported StyleGAN3 settings {unknown}")
        synthesis: Any = StyleGAN3Config(**syn_kwargs)
    else:
        syn_kwargs = dict(kwargs.get("synthesis_kwargs") or {})
        syn_kwargs.update({k: v for k, v in kwargs.items() if k not in _GENERATOR_POSITIONAL
                           and k not in ("mapping_kwargs", "synthesis_kwargs")})  # stylegan3 repo: flat kwargs
        synthesis = _sg2_config(syn_kwargs, records, kwargs["img_resolution"], what)
    try:
        return GeneratorConfig(arch="stylegan3" if is_sg3 else "stylegan2",
                               z_dim=int(kwargs["z_dim"]), c_dim=int(kwargs["c_dim"]), w_dim=int(kwargs["w_dim"]),
                               img_resolution=int(kwargs["img_resolution"]),
                               img_channels=int(kwargs["img_channels"]), mapping=mapping, synthesis=synthesis)
    except TypeError as e:
        raise CheckpointError(f"{what}: unsupported generator settings: {e}") from e


def _sg2_config(syn_kwargs: dict, records: dict, img_resolution: int, what: str) -> StyleGAN2Config:
    # Values whose defaults differ between NVIDIA's two repositories are read from the recorded layers.
    first = records.get("synthesis.b4.conv1")
    if first is None:
        raise CheckpointError(f"{what}: no 4x4 synthesis block; not a StyleGAN2 generator")
    if int(_scalar(syn_kwargs.get("kernel_size", 3))) != 3:
        raise CheckpointError(f"{what}: synthesis kernel_size {syn_kwargs['kernel_size']} is not supported (3 only)")
    fp16_blocks = sum(bool(_scalar(rec.state.get("use_fp16", False)))
                      for name, rec in records.items() if re.fullmatch(r"synthesis\.b\d+", name))
    clamp = _scalar(first.state.get("conv_clamp"))
    block4 = records["synthesis.b4"]
    return StyleGAN2Config(
        channel_base=int(_scalar(syn_kwargs.get("channel_base", 32768))),
        channel_max=int(_scalar(syn_kwargs.get("channel_max", 512))),
        num_fp16_res=fp16_blocks,
        conv_clamp=None if clamp is None else float(clamp),
        architecture=str(block4.state.get("architecture", syn_kwargs.get("architecture", "skip"))),
        resample_filter=tuple(float(v) for v in np.asarray(syn_kwargs.get("resample_filter", [1, 3, 3, 1])).ravel()),
        use_noise=bool(first.state.get("use_noise", syn_kwargs.get("use_noise", True))),
        activation=str(first.state.get("activation", syn_kwargs.get("activation", "lrelu"))),
    )


def generator_from_nvidia(record: PersistentObject, what: str) -> Generator:
    """Rebuild a stylegan2-ada-pytorch / stylegan3 `Generator` record as our `Generator`."""
    tensors: dict[str, torch.Tensor] = {}
    records: dict[str, PersistentObject] = {}
    _collect_tensors(record, "", tensors, records)
    config = config_from_nvidia(record, records, tensors, what)
    G = Generator(config)
    filters = {k: v for k, v in tensors.items() if k.endswith("resample_filter")}
    if filters:
        expected = setup_filter(config.synthesis.resample_filter)
        for k, v in filters.items():
            if v.shape != expected.shape or not torch.allclose(v.float(), expected, atol=1e-6):
                raise CheckpointError(f"{what}: {k} differs from the filter {config.synthesis.resample_filter}")
            del tensors[k]
    load_state_strict(G, tensors, what)
    _check_recorded_attributes(G, records, what)
    return G


def _check_recorded_attributes(G: Generator, records: dict[str, PersistentObject], what: str) -> None:
    """Cross-check attributes NVIDIA recorded against the modules we built from the config."""
    for name, module in G.named_modules():
        rec = records.get(name)
        if rec is None:
            continue
        for attr in ("up", "conv_clamp", "use_noise", "activation", "architecture", "up_factor", "down_factor",
                     "padding", "is_torgb", "conv_kernel", "down_radial", "num_ws", "use_fp16"):
            if attr in rec.state and hasattr(module, attr):
                theirs, ours = _scalar(rec.state[attr]), getattr(module, attr)
                if isinstance(theirs, np.ndarray):
                    theirs = theirs.tolist()
                if theirs != ours and not (isinstance(theirs, float) and math.isclose(theirs, ours)):
                    raise CheckpointError(f"{what}: layer {name} has {attr}={theirs!r} in the file but the "
                                          f"rebuilt network has {ours!r}; this variant is not supported")


# --- TensorFlow-era pickles (NVlabs/stylegan2, stylegan2-ada TF) ------------------------------------

_TF_IGNORED_KWARGS = {"truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
                      "style_mixing_prob", "structure", "randomize_noise", "is_template_graph", "dtype",
                      "fused_modconv", "dlatent_avg_beta", "mapping_func", "synthesis_func", "is_training",
                      "is_validation", "return_dlatents", "num_fp16_res", "conv_clamp", "force_clean_graph"}


def _tf_params(net: TFNetwork, prefix: str = "") -> dict[str, np.ndarray]:
    params = {}
    for name, value in net.variables:
        params[prefix + str(name)] = np.asarray(value)
    for name, comp in net.components.items():
        if isinstance(comp, TFNetwork):
            params.update(_tf_params(comp, f"{prefix}{name}/"))
    return params


def config_from_tf(net: TFNetwork, params: dict[str, np.ndarray], what: str) -> GeneratorConfig:
    kw = net.static_kwargs
    if int(net.state.get("version", 0)) < 4:
        raise CheckpointError(f"{what}: TensorFlow pickle version {net.state.get('version')} is too old "
                              f"(StyleGAN1 / early StyleGAN2 are not supported)")
    if "mapping/LabelConcat/weight" in params:
        raise CheckpointError(f"{what}: conditional original-StyleGAN2 models (LabelConcat) are not supported")
    if float(kw.get("fmap_decay", 1.0)) != 1.0 or int(kw.get("fmap_min", 1)) != 1:
        raise CheckpointError(f"{what}: fmap_decay/fmap_min other than 1 are not supported")
    if not kw.get("normalize_latents", True):
        raise CheckpointError(f"{what}: generators without z normalisation are not supported")
    known = {"latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
             "label_fmaps", "mapping_fmaps", "mapping_nonlinearity", "mapping_lrmul", "w_avg_beta", "fmap_base",
             "fmap_max", "fmap_decay", "fmap_min", "architecture", "resample_kernel", "use_noise", "nonlinearity",
             "normalize_latents", "dlatent_broadcast"} | _TF_IGNORED_KWARGS
    unknown = sorted(set(kw) - known)
    if unknown:
        logger.warning("%s: ignoring unknown TensorFlow settings %s", what, unknown)
    resolution = int(kw.get("resolution", 1024))
    architecture = str(kw.get("architecture", "skip"))
    if any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", k) for k in params):
        architecture = "orig"
    clamp = kw.get("conv_clamp")
    mapping = MappingConfig(num_layers=int(kw.get("mapping_layers", 8)),
                            embed_features=kw.get("label_fmaps"), layer_features=kw.get("mapping_fmaps"),
                            activation=str(kw.get("mapping_nonlinearity", "lrelu")),
                            lr_multiplier=float(kw.get("mapping_lrmul", 0.01)),
                            w_avg_beta=kw.get("w_avg_beta", 0.995))
    synthesis = StyleGAN2Config(channel_base=int(kw.get("fmap_base", 16384)) * 2, channel_max=int(kw.get("fmap_max", 512)),
                                num_fp16_res=int(kw.get("num_fp16_res", 0) or 0),
                                conv_clamp=None if clamp is None else float(clamp), architecture=architecture,
                                resample_filter=tuple(float(v) for v in kw.get("resample_kernel", [1, 3, 3, 1])),
                                use_noise=bool(kw.get("use_noise", True)),
                                activation=str(kw.get("nonlinearity", "lrelu")))
    return GeneratorConfig(arch="stylegan2", z_dim=int(kw.get("latent_size", 512)), c_dim=int(kw.get("label_size", 0)),
                           w_dim=int(kw.get("dlatent_size", 512)), img_resolution=resolution,
                           img_channels=int(kw.get("num_channels", 3)), mapping=mapping, synthesis=synthesis)


def _tf_to_torch_name_map(G: Generator) -> dict[str, tuple[str, Any]]:
    """Our tensor name -> (TF variable name, conversion). Conversions: 'T' transpose a dense weight,
    'conv' HWIO -> OIHW, 'conv_flip' the same for TF's flipped upsampling kernels, 'plus1' modulation bias,
    'const' drop the batch axis, 'noise' [1, 1, r, r] -> [r, r], None = as is."""
    names: dict[str, tuple[str, Any]] = {"mapping.w_avg": ("dlatent_avg", None)}
    if G.c_dim > 0:
        names["mapping.embed.weight"] = ("mapping/LabelEmbed/weight", "T")
        names["mapping.embed.bias"] = ("mapping/LabelEmbed/bias", None)
    for i in range(G.mapping.num_layers):
        names[f"mapping.fc{i}.weight"] = (f"mapping/Dense{i}/weight", "T")
        names[f"mapping.fc{i}.bias"] = (f"mapping/Dense{i}/bias", None)
    syn = G.synthesis

    def modconv(ours: str, theirs: str, kind: str) -> None:
        names[f"{ours}.weight"] = (f"{theirs}/weight", kind)
        names[f"{ours}.bias"] = (f"{theirs}/bias", None)
        names[f"{ours}.affine.weight"] = (f"{theirs}/mod_weight", "T")
        names[f"{ours}.affine.bias"] = (f"{theirs}/mod_bias", "plus1")

    for res in syn.block_resolutions:
        block, tf = getattr(syn, f"b{res}"), f"synthesis/{res}x{res}"
        lg = int(math.log2(res))
        if res == 4:
            names["synthesis.b4.const"] = (f"{tf}/Const/const", "const")
            layers = [("conv1", "Conv", "conv", 0)]
        else:
            layers = [("conv0", "Conv0_up", "conv_flip", 2 * lg - 5), ("conv1", "Conv1", "conv", 2 * lg - 4)]
        for ours, theirs, kind, noise_idx in layers:
            modconv(f"synthesis.b{res}.{ours}", f"{tf}/{theirs}", kind)
            if getattr(block, ours).use_noise:
                names[f"synthesis.b{res}.{ours}.noise_const"] = (f"synthesis/noise{noise_idx}", "noise")
                names[f"synthesis.b{res}.{ours}.noise_strength"] = (f"{tf}/{theirs}/noise_strength", None)
        if hasattr(block, "torgb"):
            modconv(f"synthesis.b{res}.torgb", f"{tf}/ToRGB", "conv")
        if hasattr(block, "skip"):
            names[f"synthesis.b{res}.skip.weight"] = (f"{tf}/Skip/weight", "conv_flip")
    return names


def _convert_tf_value(value: np.ndarray, kind: Any) -> np.ndarray:
    if kind == "T":
        return value.transpose()
    if kind == "conv":
        return value.transpose(3, 2, 0, 1)
    if kind == "conv_flip":
        return value[::-1, ::-1].transpose(3, 2, 0, 1)
    if kind == "plus1":
        return value + 1  # TF stores the modulation bias minus its init value of 1
    if kind in ("const", "noise"):
        return value[0] if kind == "const" else value[0, 0]
    return value


def generator_from_tf(net: TFNetwork, what: str) -> Generator:
    """Rebuild a TensorFlow-era StyleGAN2 `Gs`/`G` record (numpy variables) as our `Generator`."""
    params = _tf_params(net)
    for name, value in list(params.items()):  # 'orig' keeps ToRGB per level of detail
        match = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if match:
            res = int(net.static_kwargs.get("resolution", 1024)) // 2 ** int(match.group(1))
            params[f"synthesis/{res}x{res}/ToRGB/{match.group(2)}"] = value
    G = Generator(config_from_tf(net, params, what))
    state = {}
    missing = []
    for ours, (theirs, kind) in _tf_to_torch_name_map(G).items():
        if theirs not in params:
            missing.append(theirs)
            continue
        # np.array, not np.ascontiguousarray: the latter turns 0-d variables (noise_strength) into shape [1].
        state[ours] = torch.from_numpy(np.array(_convert_tf_value(params[theirs], kind), order="C")).float()
    if missing:
        raise CheckpointError(f"{what}: TensorFlow variables missing for this architecture: "
                              f"{missing[:4]}{' ...' if len(missing) > 4 else ''}")
    load_state_strict(G, state, what)
    return G
