"""The SegFormer face parser (`jonathandinu/face-parsing`: a `transformers` SegformerForSemanticSegmentation,
`config.json` + `model.safetensors`), built from its config with no network access.

`transformers` is an optional dependency (ComfyUI ships it); without it the loader says how to install it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ...errors import CheckpointError, MissingDependencyError
from .schemas import LabelSchema, schema_from_labels

SEGFORMER_REPO = "jonathandinu/face-parsing"
SEGFORMER_FILES = ("config.json", "model.safetensors")
SEGFORMER_KEY_PREFIXES = ("segformer.", "decode_head.")


def _transformers():
    try:
        import transformers  # noqa: F401
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
    except ImportError as e:
        raise MissingDependencyError(
            "the SegFormer face parser needs the `transformers` package (ComfyUI installs it): "
            "`pip install transformers`; or use a BiSeNet parser (79999_iter.pth or seg.pth), which needs nothing "
            f"else ({type(e).__name__}: {e})") from e
    return SegformerConfig, SegformerForSemanticSegmentation


def is_segformer_state(state: dict) -> bool:
    return any(str(k).startswith(SEGFORMER_KEY_PREFIXES) for k in state)


def read_config(path: Union[str, Path]) -> dict:
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable SegFormer config.json ({type(e).__name__}: {e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: a SegFormer config.json holds a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type != "segformer":
        raise CheckpointError(f"{path}: model_type is {model_type!r}, not 'segformer': not a SegFormer face parser "
                              f"config (expected the config.json of {SEGFORMER_REPO})")
    return config


def config_schema(config: dict, path: Path) -> LabelSchema:
    """The label schema of a SegFormer config: its id2label names (checked to be face classes), in index order."""
    id2label = config.get("id2label")
    n = config.get("num_labels", len(id2label) if isinstance(id2label, dict) else None)
    if not isinstance(id2label, dict) or not id2label:
        raise CheckpointError(f"{path}: the config has no id2label table, so its classes are unknown; use the "
                              f"config.json of {SEGFORMER_REPO}")
    try:
        labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
    except KeyError:
        raise CheckpointError(f"{path}: id2label keys must be 0..{len(id2label) - 1}, got "
                              f"{sorted(id2label)[:8]}") from None
    if n is not None and n != len(labels):
        raise CheckpointError(f"{path}: num_labels {n} but id2label has {len(labels)} entries")
    try:
        return schema_from_labels(labels, f"segformer{len(labels)}")
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def build_segformer(config: dict, state: dict, path: Path) -> nn.Module:
    """SegformerForSemanticSegmentation from `config` with `state` loaded (every key and shape checked)."""
    SegformerConfig, SegformerForSemanticSegmentation = _transformers()
    try:
        cfg = SegformerConfig(**{k: v for k, v in config.items() if k not in ("transformers_version",)})
        model = SegformerForSemanticSegmentation(cfg)
    except Exception as e:  # noqa: BLE001 - a config transformers cannot build
        raise CheckpointError(f"{path}: transformers cannot build a SegFormer from this config "
                              f"({type(e).__name__}: {e})") from e
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{path}: the weights do not fit the config: missing {missing[:3]} ({len(missing)} in "
                              f"all), unexpected {unexpected[:3]} ({len(unexpected)} in all); config.json and "
                              f"model.safetensors must come from the same model")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{path}: tensor {k} has shape {list(v.shape)}, the config needs "
                                  f"{list(own[k].shape)}; config.json and model.safetensors must come from the same "
                                  f"model")
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


class SegformerLogits(nn.Module):
    """SegFormer's logits at a quarter of the input size: `[N, 3, H, W]` normalised → `[N, C, H/4, W/4]`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "SegformerLogits":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits
