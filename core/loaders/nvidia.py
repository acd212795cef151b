"""NVIDIA checkpoints: stylegan2-ada-pytorch / stylegan3 pickles and TensorFlow-era StyleGAN2 pickles.

Both arrive as records from `safe_pickle.restricted_load`; nothing from the file runs. The architecture is
read from the constructor arguments and attributes NVIDIA's code recorded, then every tensor is checked
against our own modules.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np
import torch

from ..config import GeneratorConfig, MappingConfig, StyleGAN2Config, StyleGAN3Config
from ..errors import CheckpointError
from ..files import describe
from ..log import logger
from ..networks import Generator
from ..ops.upfirdn2d import setup_filter
from .safe_pickle import PersistentObject, TFNetwork
from .state import build_generator_for, load_state_strict, meta_generator

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
                              f"{describe(list(data), 120)}")
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

# A StyleGAN generator's module tree is 4 levels deep (G.synthesis.b4.conv1.affine); nothing genuine comes near.
MAX_MODULE_DEPTH = 32


def _collect_tensors(obj: PersistentObject, prefix: str, out: dict, records: dict, what: str = "the pickle",
                     depth: int = 0, seen: dict | None = None) -> None:
    """Every parameter and buffer under `obj` by dotted name (into `out`) and every layer record (into
    `records`), refusing a tree deeper than `MAX_MODULE_DEPTH`, cycles and a layer record reached twice
    (a pickle can share one record many times, which would multiply the walk)."""
    seen = {} if seen is None else seen
    name = prefix.rstrip(".") or "the generator"
    if depth > MAX_MODULE_DEPTH:
        raise CheckpointError(f"{what}: sub-module {prefix[:120]}... is nested more than {MAX_MODULE_DEPTH} levels "
                              f"deep; a StyleGAN generator is a few levels deep, so the file is damaged or crafted")
    if id(obj) in seen:
        raise CheckpointError(f"{what}: sub-module {name[:120]} is the same record as {seen[id(obj)][:120]} (a "
                              f"cycle or a shared layer); a StyleGAN generator never repeats a layer, so the file "
                              f"is damaged or crafted")
    seen[id(obj)] = name
    records[prefix.rstrip(".")] = obj
    state = obj.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if value is None or key in skip:
                continue
            if not torch.is_tensor(value):
                raise CheckpointError(f"{what}: {(prefix + key)[:200]} is a {type(value).__name__}, expected a "
                                      f"tensor")
            out[prefix + key] = value.detach()
    for key, child in obj.modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"{what}: sub-module {(prefix + key)[:200]} is a {type(child).__name__}, not a "
                                  f"network layer")
        _collect_tensors(child, f"{prefix}{key}.", out, records, what, depth + 1, seen)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0 else value


# --- Recorded settings, typed --------------------------------------------------------------------------
# NVIDIA's constructor arguments and layer attributes are plain Python values in a genuine file; each one
# is read through these, so a wrong type becomes a CheckpointError naming the file and the field (the
# numbers themselves are bounded by `core.config` when the config is built).

def _bad_setting(what: str, field: str, value: Any, expected: str) -> CheckpointError:
    text = describe(value)
    return CheckpointError(f"{what}: the recorded setting {field} is {text} ({type(value).__name__}), expected "
                           f"{expected}; the file is damaged or was written by an unsupported variant")


def _int_setting(value: Any, field: str, what: str) -> int:
    v = _scalar(value)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if type(v) is not int:  # noqa: E721 - bool is not a count
        raise _bad_setting(what, field, value, "an integer")
    return v


def _float_setting(value: Any, field: str, what: str, *, optional: bool = False) -> float | None:
    v = _scalar(value)
    if v is None and optional:
        return None
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _bad_setting(what, field, value, "a finite number" + (" or None" if optional else ""))
    return float(v)


def _bool_setting(value: Any, field: str, what: str) -> bool:
    v = _scalar(value)
    if type(v) is bool or type(v) is int and v in (0, 1):
        return bool(v)
    raise _bad_setting(what, field, value, "True or False")


def _str_setting(value: Any, field: str, what: str) -> str:
    v = _scalar(value)
    if not isinstance(v, str) or len(v) > 100:
        raise _bad_setting(what, field, value, "a short text")
    return v


def _dict_setting(value: Any, field: str, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _bad_setting(what, field, value, "a dict of settings")
    return dict(value)


_MAX_FILTER_TAPS = 64  # NVIDIA's resample filters have 4 taps


def _filter_setting(value: Any, field: str, what: str) -> tuple[float, ...]:
    """FIR filter taps: a 1-D or 2-D list of finite numbers whose sum is not zero (the filter is divided by
    its sum; an all-zero or zero-sum filter would render NaN)."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple)) for v in value) and value:
        flat = [x for row in value for x in row]
    elif isinstance(value, np.ndarray) and value.ndim <= 2 and value.dtype.kind in "iuf":
        flat = value.ravel().tolist()
    elif isinstance(value, (list, tuple)):
        flat = list(value)
    else:
        raise _bad_setting(what, field, value, "a list of filter taps")
    taps = [_scalar(v) for v in flat]
    if not 0 < len(taps) <= _MAX_FILTER_TAPS or any(type(v) not in (int, float) or not math.isfinite(v)
                                                    for v in taps):
        raise _bad_setting(what, field, value, f"1 to {_MAX_FILTER_TAPS} finite filter taps")
    if sum(taps) == 0:
        raise CheckpointError(f"{what}: the recorded filter {field} {taps} sums to zero; the network would render "
                              f"NaN, so the file is damaged or crafted")
    return tuple(float(v) for v in taps)


def _check_recorded_filter(tensor: torch.Tensor, name: str, what: str) -> None:
    """A filter buffer (StyleGAN3's up/down filters) must be finite with a non-zero sum: it is what the layer
    convolves with, and NVIDIA's filters sum to 1."""
    values = tensor.detach().double()
    if not torch.isfinite(values).all() or values.sum().abs().item() < 1e-6:
        raise CheckpointError(f"{what}: the filter {name} in the file is all zero, sums to zero or is not finite; "
                              f"the network would render black or NaN images, so the file is damaged or crafted")


_SG3_OPTIONAL_FLOATS = {"conv_clamp"}


def _sg3_settings(values: dict, what: str) -> dict:
    """StyleGAN3 constructor arguments typed like `StyleGAN3Config`'s defaults."""
    typed = {}
    for name, value in values.items():
        default = StyleGAN3Config.__dataclass_fields__[name].default
        if name in _SG3_OPTIONAL_FLOATS:
            typed[name] = _float_setting(value, name, what, optional=True)
        elif isinstance(default, bool):
            typed[name] = _bool_setting(value, name, what)
        elif isinstance(default, int):
            typed[name] = _int_setting(value, name, what)
        else:
            typed[name] = _float_setting(value, name, what)
    return typed


def config_from_nvidia(G: PersistentObject, records: dict[str, PersistentObject],
                       tensors: dict[str, torch.Tensor], what: str) -> GeneratorConfig:
    """Architecture from the recorded constructor arguments and layer attributes."""
    kwargs = dict(zip(_GENERATOR_POSITIONAL, G.init_args))
    kwargs.update({k: _scalar(v) for k, v in G.init_kwargs.items()})
    missing = [k for k in _GENERATOR_POSITIONAL if k not in kwargs]
    if missing:
        raise CheckpointError(f"{what}: the generator record lacks constructor arguments {missing}")
    dims = {k: _int_setting(kwargs[k], k, what) for k in _GENERATOR_POSITIONAL}
    mapping_kwargs = _dict_setting(kwargs.get("mapping_kwargs"), "mapping_kwargs", what)
    is_sg3 = "synthesis.input" in records
    mapping_rec = records.get("mapping")
    if mapping_rec is None:
        raise CheckpointError(f"{what}: the generator has no mapping network")
    fc0 = records.get("mapping.fc0")
    num_layers = _int_setting(mapping_rec.state.get("num_layers", mapping_kwargs.get("num_layers", 2 if is_sg3 else 8)),
                              "mapping.num_layers", what)
    beta = mapping_rec.state.get("w_avg_beta", mapping_kwargs.get("w_avg_beta"))
    mapping = MappingConfig(
        num_layers=num_layers,
        embed_features=tensors["mapping.embed.weight"].shape[0] if "mapping.embed.weight" in tensors else None,
        layer_features=tensors["mapping.fc0.weight"].shape[0] if num_layers > 1 and "mapping.fc0.weight" in tensors
        else None,
        activation=_str_setting(fc0.state.get("activation", "lrelu"), "mapping.fc0.activation", what) if fc0
        else "lrelu",
        lr_multiplier=_float_setting(fc0.state.get("bias_gain", 0.01), "mapping.fc0.bias_gain", what) if fc0
        else 0.01,
        w_avg_beta=_float_setting(beta, "mapping.w_avg_beta", what, optional=True),
    )
    if is_sg3:
        syn_kwargs = {k: _scalar(v) for k, v in kwargs.items()
                      if k not in _GENERATOR_POSITIONAL and k != "mapping_kwargs"}
        syn_kwargs.pop("synthesis_kwargs", None)
        known = {f for f in StyleGAN3Config.__dataclass_fields__}
        unknown = sorted(set(syn_kwargs) - known)
        if unknown:
            raise CheckpointError(f"{what}: unsupported StyleGAN3 settings {describe(unknown, 200)}")
        synthesis: Any = StyleGAN3Config(**_sg3_settings(syn_kwargs, what))
    else:
        syn_kwargs = _dict_setting(kwargs.get("synthesis_kwargs"), "synthesis_kwargs", what)
        syn_kwargs.update({k: v for k, v in kwargs.items() if k not in _GENERATOR_POSITIONAL
                           and k not in ("mapping_kwargs", "synthesis_kwargs")})  # stylegan3 repo: flat kwargs
        synthesis = _sg2_config(syn_kwargs, records, dims["img_resolution"], what)
    try:
        return GeneratorConfig(arch="stylegan3" if is_sg3 else "stylegan2", mapping=mapping, synthesis=synthesis,
                               **dims)
    except TypeError as e:
        raise CheckpointError(f"{what}: unsupported generator settings: {str(e)[:200]}") from e


def _sg2_config(syn_kwargs: dict, records: dict, img_resolution: int, what: str) -> StyleGAN2Config:
    # Values whose defaults differ between NVIDIA's two repositories are read from the recorded layers.
    first = records.get("synthesis.b4.conv1")
    block4 = records.get("synthesis.b4")
    if first is None or block4 is None:
        raise CheckpointError(f"{what}: no 4x4 synthesis block; not a StyleGAN2 generator")
    if _int_setting(syn_kwargs.get("kernel_size", 3), "kernel_size", what) != 3:
        raise CheckpointError(f"{what}: synthesis kernel_size {syn_kwargs['kernel_size']} is not supported (3 only)")
    fp16_blocks = sum(_bool_setting(rec.state.get("use_fp16", False), f"{name}.use_fp16", what)
                      for name, rec in records.items() if re.fullmatch(r"synthesis\.b\d+", name))
    return StyleGAN2Config(
        channel_base=_int_setting(syn_kwargs.get("channel_base", 32768), "channel_base", what),
        channel_max=_int_setting(syn_kwargs.get("channel_max", 512), "channel_max", what),
        num_fp16_res=fp16_blocks,
        conv_clamp=_float_setting(first.state.get("conv_clamp"), "synthesis.b4.conv1.conv_clamp", what,
                                  optional=True),
        architecture=_str_setting(block4.state.get("architecture", syn_kwargs.get("architecture", "skip")),
                                  "synthesis.b4.architecture", what),
        resample_filter=_filter_setting(syn_kwargs.get("resample_filter", [1, 3, 3, 1]), "resample_filter", what),
        use_noise=_bool_setting(first.state.get("use_noise", syn_kwargs.get("use_noise", True)),
                                "synthesis.b4.conv1.use_noise", what),
        activation=_str_setting(first.state.get("activation", syn_kwargs.get("activation", "lrelu")),
                                "synthesis.b4.conv1.activation", what),
    )


def build_generator(config: GeneratorConfig, weights: Mapping[str, torch.Tensor], what: str) -> Generator:
    """`Generator(config)` once `state.build_generator_for` has checked that the file's `weights` (its tensors
    under our names) can fill it; a failure to build it (an
    inconsistent combination the config checks let through) is reported as a CheckpointError naming the file."""
    try:
        return build_generator_for(config, weights, what)
    except (RuntimeError, MemoryError, ValueError, OverflowError, ZeroDivisionError, AssertionError) as e:
        if isinstance(e, CheckpointError):
            raise
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CheckpointError(f"{what}: the architecture the file records cannot be built ({type(e).__name__}: "
                              f"{why}); the file is damaged or uses an unsupported variant") from e


def generator_from_nvidia(record: PersistentObject, what: str) -> Generator:
    """Rebuild a stylegan2-ada-pytorch / stylegan3 `Generator` record as our `Generator`."""
    tensors: dict[str, torch.Tensor] = {}
    records: dict[str, PersistentObject] = {}
    _collect_tensors(record, "", tensors, records, what)
    config = config_from_nvidia(record, records, tensors, what)
    filters = {k: v for k, v in tensors.items() if k.endswith("resample_filter")}
    if filters:
        expected = setup_filter(config.synthesis.resample_filter)
        for k, v in filters.items():
            if v.shape != expected.shape or not torch.allclose(v.float(), expected, atol=1e-6):
                raise CheckpointError(f"{what}: {k} differs from the filter {config.synthesis.resample_filter}")
            del tensors[k]
    for k, v in tensors.items():
        if k.endswith(("up_filter", "down_filter")):
            _check_recorded_filter(v, k, what)
    G = build_generator(config, tensors, what)
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
                if isinstance(theirs, np.ndarray) and theirs.size <= 16:
                    theirs = theirs.tolist()
                if not isinstance(theirs, (int, float, str, list, tuple, type(None))):
                    raise _bad_setting(what, f"{name}.{attr}", theirs, f"a value like {describe(ours)}")
                if theirs != ours and not (isinstance(theirs, float) and math.isclose(theirs, ours)):
                    raise CheckpointError(f"{what}: layer {name} has {attr}={describe(theirs)} in the file but the "
                                          f"rebuilt network has {describe(ours)}; this variant is not supported")


# --- TensorFlow-era pickles (NVlabs/stylegan2, stylegan2-ada TF) ------------------------------------

_TF_IGNORED_KWARGS = {"truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
                      "style_mixing_prob", "structure", "randomize_noise", "is_template_graph", "dtype",
                      "fused_modconv", "dlatent_avg_beta", "mapping_func", "synthesis_func", "is_training",
                      "is_validation", "return_dlatents", "num_fp16_res", "conv_clamp", "force_clean_graph"}


def _tf_params(net: TFNetwork, what: str, prefix: str = "", depth: int = 0, seen: set | None = None
               ) -> dict[str, np.ndarray]:
    """Every variable of `net` and its components by TF path, refusing malformed variable lists, trees deeper
    than `MAX_MODULE_DEPTH` and a network reached twice (cycles)."""
    seen = set() if seen is None else seen
    if depth > MAX_MODULE_DEPTH or id(net) in seen:
        raise CheckpointError(f"{what}: the TensorFlow network {prefix[:120] or describe(net.name)} is nested more "
                              f"than {MAX_MODULE_DEPTH} levels deep or contains itself; the file is damaged or crafted")
    seen.add(id(net))
    params = {}
    variables = net.state.get("variables") or []
    if not isinstance(variables, (list, tuple)):
        raise _bad_setting(what, f"{prefix}variables", variables, "a list of (name, array) pairs")
    for item in variables:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (np.ndarray, np.generic, int, float))):
            raise _bad_setting(what, f"{prefix}variables", item, "(name, array) pairs")
        name, value = item
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            raise _bad_setting(what, f"{prefix}{name}", value, "an array of numbers")
        params[prefix + name] = value
    components = net.state.get("components") or {}
    if not isinstance(components, dict) or not all(isinstance(k, str) for k in components):
        raise _bad_setting(what, f"{prefix}components", components, "a dict of networks by name")
    for name, comp in components.items():
        if isinstance(comp, TFNetwork):
            params.update(_tf_params(comp, what, f"{prefix}{name}/", depth + 1, seen))
    return params


def config_from_tf(net: TFNetwork, params: dict[str, np.ndarray], what: str) -> GeneratorConfig:
    kw = _dict_setting(net.state.get("static_kwargs"), "static_kwargs", what)
    if _int_setting(net.state.get("version", 0), "version", what) < 4:
        raise CheckpointError(f"{what}: TensorFlow pickle version {net.state.get('version')} is too old "
                              f"(StyleGAN1 / early StyleGAN2 are not supported)")
    if "mapping/LabelConcat/weight" in params:
        raise CheckpointError(f"{what}: conditional original-StyleGAN2 models (LabelConcat) are not supported")
    if _float_setting(kw.get("fmap_decay", 1.0), "fmap_decay", what) != 1.0 or \
            _int_setting(kw.get("fmap_min", 1), "fmap_min", what) != 1:
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
    resolution = _int_setting(kw.get("resolution", 1024), "resolution", what)
    architecture = _str_setting(kw.get("architecture", "skip"), "architecture", what)
    if any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", k) for k in params):
        architecture = "orig"
    clamp = kw.get("conv_clamp")
    def optional_int(name: str) -> int | None:
        return None if kw.get(name) is None else _int_setting(kw[name], name, what)

    mapping = MappingConfig(num_layers=_int_setting(kw.get("mapping_layers", 8), "mapping_layers", what),
                            embed_features=optional_int("label_fmaps"), layer_features=optional_int("mapping_fmaps"),
                            activation=_str_setting(kw.get("mapping_nonlinearity", "lrelu"), "mapping_nonlinearity",
                                                    what),
                            lr_multiplier=_float_setting(kw.get("mapping_lrmul", 0.01), "mapping_lrmul", what),
                            w_avg_beta=_float_setting(kw.get("w_avg_beta", 0.995), "w_avg_beta", what, optional=True))
    synthesis = StyleGAN2Config(channel_base=_int_setting(kw.get("fmap_base", 16384), "fmap_base", what) * 2,
                                channel_max=_int_setting(kw.get("fmap_max", 512), "fmap_max", what),
                                num_fp16_res=_int_setting(kw.get("num_fp16_res", 0) or 0, "num_fp16_res", what),
                                conv_clamp=_float_setting(clamp, "conv_clamp", what, optional=True),
                                architecture=architecture,
                                resample_filter=_filter_setting(kw.get("resample_kernel", [1, 3, 3, 1]),
                                                                "resample_kernel", what),
                                use_noise=_bool_setting(kw.get("use_noise", True), "use_noise", what),
                                activation=_str_setting(kw.get("nonlinearity", "lrelu"), "nonlinearity", what))
    return GeneratorConfig(arch="stylegan2", z_dim=_int_setting(kw.get("latent_size", 512), "latent_size", what),
                           c_dim=_int_setting(kw.get("label_size", 0), "label_size", what),
                           w_dim=_int_setting(kw.get("dlatent_size", 512), "dlatent_size", what),
                           img_resolution=resolution,
                           img_channels=_int_setting(kw.get("num_channels", 3), "num_channels", what),
                           mapping=mapping, synthesis=synthesis)


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
    params = _tf_params(net, what)
    for name, value in list(params.items()):  # 'orig' keeps ToRGB per level of detail
        match = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if match:
            lod = int(match.group(1)) if len(match.group(1)) <= 2 else 99
            if lod > 16:
                raise CheckpointError(f"{what}: TensorFlow variable {name[:80]} names level of detail {lod} "
                                      f"(at most 16); the file is damaged or crafted")
            kw = _dict_setting(net.state.get("static_kwargs"), "static_kwargs", what)
            res = _int_setting(kw.get("resolution", 1024), "resolution", what) // 2 ** lod
            params[f"synthesis/{res}x{res}/ToRGB/{match.group(2)}"] = value
    config = config_from_tf(net, params, what)
    layout = meta_generator(config)  # our names and roles, before anything of the network's size is allocated
    state = {}
    missing = []
    for ours, (theirs, kind) in _tf_to_torch_name_map(layout).items():
        if theirs not in params:
            missing.append(theirs)
            continue
        # np.array, not np.ascontiguousarray: the latter turns 0-d variables (noise_strength) into shape [1].
        try:
            converted = _convert_tf_value(params[theirs], kind)
        except (ValueError, IndexError) as e:  # a variable of the wrong rank for its role
            raise CheckpointError(f"{what}: TensorFlow variable {theirs} has shape {list(params[theirs].shape)}, "
                                  f"which does not fit its role in the network ({e}); the file is damaged") from e
        state[ours] = torch.from_numpy(np.array(converted, order="C")).float()
    if missing:
        raise CheckpointError(f"{what}: TensorFlow variables missing for this architecture: "
                              f"{missing[:4]}{' ...' if len(missing) > 4 else ''}")
    G = build_generator(config, state, what)
    load_state_strict(G, state, what)
    return G
