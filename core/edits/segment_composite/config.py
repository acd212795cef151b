"""Settings of Segment Composite: the reference's defaults (ZPdesu/Barbershop `main.py`) and the presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional

MODES = ("realistic", "fidelity")
# Steps the presets set (the names are CompositeConfig's fields and the node's inputs).
STEP_FIELDS = ("w_steps", "fs_steps", "align_steps1", "align_steps2", "blend_steps", "target_fill_steps")
PRESET_ALIASES = {"fast": "quick"}   # the name for the quick preset


@dataclass(frozen=True)
class CompositeConfig:
    """Every number of a Segment Composite run. The defaults (`DEFAULTS`) are Barbershop's (`main.py` argparse and
    the constants in its code); methods-edits.md B.1 lists where each comes from."""

    w_steps: int = 1100            # II2S W+ embedding steps per image (W_steps)
    fs_steps: int = 250            # FS embedding steps per image (FS_steps)
    align_steps1: int = 140        # alignment of the base to the target segmentation (CE)
    align_steps2: int = 100        # alignment of the reference (CE + masked style)
    blend_steps: int = 400         # S blending weights
    target_fill_steps: int = 80    # each of the two CE passes that fill disoccluded target pixels (hard-coded 80)
    lr: float = 0.01               # Adam, every stage (learning_rate)
    ce_lambda: float = 1.0         # cross-entropy weight
    style_lambda: float = 4e4      # masked Gram style loss weight (second alignment)
    l2_lambda: float = 1.0         # pixel MSE weight in the embeddings
    percept_lambda: float = 1.0    # LPIPS-VGG weight in the embeddings
    p_norm_lambda: float = 1e-3    # II2S PCA prior weight in the embeddings
    apply_lF: bool = False         # the reference documents l_F but never applies it (its bug): off = its behaviour
    l_F_lambda: float = 0.1        # weight of ‖F − F_init‖² (mean) in the FS embedding when apply_lF
    smooth: int = 5                # dilation / erosion iterations at 256 px (scaled for smaller generators)
    lpips_size: int = 256          # blending LPIPS / style / mask size (the reference's 256; the embeddings: 256)
    seg_size: int = 512            # the parser's input, label maps and CE at min(seg_size, resolution): the
                                   # reference's 512 at 1024 px; a smaller generator parses at its own size
    align_layers: int = 6          # ws[:align_layers] optimised in alignment and in the target fill
    prior_samples: int = 1_000_000  # mapped samples of the II2S PCA prior (the reference's 10⁶)

    def __post_init__(self):
        for name in STEP_FIELDS + ("smooth", "align_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
        for name in ("lr", "ce_lambda", "style_lambda", "l2_lambda", "percept_lambda", "p_norm_lambda",
                     "l_F_lambda"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 16 <= self.lpips_size <= 1024 or not 16 <= self.seg_size <= 2048:
            raise ValueError(f"lpips_size must be in 16..1024 and seg_size in 16..2048, got {self.lpips_size} and "
                             f"{self.seg_size}")
        if self.align_layers < 1:
            raise ValueError(f"align_layers must be >= 1, got {self.align_layers}")
        if self.prior_samples < 2:
            raise ValueError(f"prior_samples must be >= 2, got {self.prior_samples}")

    def steps(self) -> dict:
        return {k: getattr(self, k) for k in STEP_FIELDS}


DEFAULTS = CompositeConfig()


def preset_name(preset: str) -> str:
    """The preset's name in `core.edits.presets` ('fast' is 'quick')."""
    from ..presets import PRESETS

    name = PRESET_ALIASES.get(preset, preset)
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)} (or 'fast' = 'quick'), got {preset!r}")
    return name


def composite_config(preset: str = "reference", base: Optional[CompositeConfig] = None, **overrides) -> CompositeConfig:
    """`base` (DEFAULTS) with the preset's step counts, then `overrides` (any field; a step count of 0 or None
    keeps the preset's, as every optimising node's `*_steps` widgets do — other fields take the value given,
    None keeps)."""
    from ..presets import resolve

    values = resolve("segment_composite", "", preset_name(preset))
    known = {f.name for f in fields(CompositeConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown Segment Composite settings {unknown}; valid: {sorted(known)}")
    for k, v in overrides.items():
        if v is None or (k in STEP_FIELDS and not v):
            continue
        values[k] = v
    return replace(base or DEFAULTS, **values)


__all__ = ["MODES", "STEP_FIELDS", "CompositeConfig", "DEFAULTS", "preset_name", "composite_config"]
