"""Global directions: batched renders of channel perturbations, with the part a channel cannot change cached."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from ...log import logger
from ...networks.staging import SynthesisState


class Renderer:
    """The stages of a synthesis network up to a render resolution (`synthesis.stages`: StyleGAN2 blocks,
    StyleGAN3 the input then its layers) and the stage that reads each S layer, so a render can continue
    (`synthesis.run`) from a cached `SynthesisState`.

    A channel of a layer can only change the stages from its own onward; everything before is the same for
    every perturbation of the same image and is computed once per image. For a StyleGAN2 'skip' generator a
    `resolution` below its own ends at that block, and the render is its RGB skip (the image at that size).
    """

    def __init__(self, synthesis, resolution: int):
        self.synthesis = synthesis
        self.complete = int(resolution) == synthesis.img_resolution
        stages = list(synthesis.stages)
        self.stages = stages if self.complete else stages[:stages.index(int(resolution)) + 1]
        index = {stage: i for i, stage in enumerate(self.stages)}
        self.stage_of: dict[str, int] = {layer.name: index[layer.stage] for layer in synthesis.style_layers()
                                         if layer.stage in index}

    def layers_from(self, stage: int) -> list[str]:
        """Names of the S layers that stages `stage`, `stage + 1`, ... read."""
        return [name for name, s in self.stage_of.items() if s >= stage]

    def run(self, styles: dict[str, torch.Tensor], state: Optional[SynthesisState], start: int,
            stop: Optional[int] = None) -> Optional[SynthesisState]:
        """Advance `state` (None before the first stage) through stages `start..stop-1` with `styles` (an S
        dict holding at least the layers those stages read), as `synthesis.forward` runs them ('const' noise)."""
        stop = len(self.stages) if stop is None else stop
        if stop <= start:
            return state
        assert (state is None) == (start == 0) and (state is None or state.stage == self.stages[start - 1])
        return self.synthesis.run(None, styles=styles, start=None if state is None else state.stage,
                                  x=None if state is None else state.x, img=None if state is None else state.img,
                                  stop=self.stages[stop - 1], noise_mode="const")

    def image(self, state: SynthesisState) -> torch.Tensor:
        """The image `[N, C, R, R]` float32 of a state after the last stage."""
        return state.img.contiguous()


def _select(state: Optional[SynthesisState], idx: torch.Tensor) -> Optional[SynthesisState]:
    """Rows `idx` of the tensors of a render state (fresh tensors), in the same memory format (convolutions
    pick their algorithm, and so their rounding, by it)."""
    if state is None:
        return None

    def rows(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if t is None:
            return None
        fmt = torch.channels_last if t.ndim == 4 and not t.is_contiguous() and \
            t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return t.index_select(0, idx.to(t.device)).contiguous(memory_format=fmt)

    return state._replace(x=rows(state.x), img=rows(state.img))


def _quantize(img: torch.Tensor) -> torch.Tensor:
    """The 8-bit image the reference hands to CLIP (NVIDIA's `x·127.5 + 128`, clamped, truncated), in [-1, 1]."""
    return (img * 127.5 + 128).clamp(0, 255).floor() / 127.5 - 1


def perturbed_renders(renderer: Renderer, base: dict[str, torch.Tensor], prefix: Optional[SynthesisState], stage: int,
                       layer: str, channels: torch.Tensor, values: torch.Tensor, image_idx: torch.Tensor, *,
                       use_prefix: bool = True) -> torch.Tensor:
    """Render images `image_idx` `[B]` of `base` (S dict, `[N, ch]` each) with channel `channels[b]` of `layer`
    set to `values[b]`. `prefix`: the render state of all N base images before `stage` (the stage of `layer`).
    `use_prefix=False` renders everything from the styles instead (the plain path, for tests and benchmarks).
    Returns `[B, C, R, R]` float32."""
    first = stage if use_prefix else 0
    device = next(iter(base.values())).device
    idx = image_idx.to(device)
    styles = {name: base[name].index_select(0, idx) for name in renderer.layers_from(first)}
    s = styles[layer]
    s[torch.arange(len(idx), device=device), channels.to(device)] = values.to(device, s.dtype)
    if not use_prefix and renderer.complete:
        return renderer.synthesis.from_s(styles, noise_mode="const")  # the plain render: the public path
    state = renderer.run(styles, _select(prefix, image_idx) if use_prefix else None, first)
    return renderer.image(state)


# ------------------------------------------------------------------------------------------------
# Relevance



class PassSize:
    """Renders per pass; halved (for the rest of the run) when a pass runs out of memory."""

    def __init__(self, size: int):
        self.size = int(size)

    def shrink(self, error: BaseException) -> None:
        if self.size == 1:
            raise error
        self.size = max(1, self.size // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.warning("global directions: out of memory; rendering %d images per pass from now on (results can "
                       "differ from a run with the original batch_size at float rounding)", self.size)


OOM_ERRORS = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5 has only the CUDA one


def relevance_rows(renderer: Renderer, clip, base: dict[str, torch.Tensor], prefix: Optional[SynthesisState],
                    stage: int, layer: str, channels: range, mean: torch.Tensor, std: torch.Tensor, *, alpha: float,
                    num_images: int, batch_size: Union[int, PassSize], use_prefix: bool) -> torch.Tensor:
    """Relevance rows `[K, D]` float32 (CPU) of `channels` (K of them) of `layer`; `mean`/`std` `[channels]`
    of that layer. Items are ordered (channel, sign −/+, image) and rendered `batch_size` at a time."""
    passes = batch_size if isinstance(batch_size, PassSize) else PassSize(batch_size)
    k, n = len(channels), num_images
    items = k * 2 * n
    j = torch.arange(items)
    chan = torch.as_tensor(list(channels), dtype=torch.long)[j // (2 * n)]          # [items]
    sign = ((j // n) % 2).float() * 2 - 1                                             # −1 then +1
    values = mean[chan] + sign * alpha * std[chan]                                   # μ ± α σ
    image_idx = j % n
    embs = []
    a = 0
    while a < items:
        sl = slice(a, min(a + passes.size, items))
        try:
            img = perturbed_renders(renderer, base, prefix, stage, layer, chan[sl], values[sl], image_idx[sl],
                                     use_prefix=use_prefix)
            embs.append(clip.encode_image(_quantize(img)).float().cpu())             # [b, D], unit rows
        except OOM_ERRORS as e:
            img = None
            passes.shrink(e)
            continue
        a = sl.stop
    e = F.normalize(torch.cat(embs), dim=-1).reshape(k, 2, n, -1)
    diff = F.normalize(e[:, 1] - e[:, 0], dim=-1)                                     # [K, N, D]; 0 if unchanged
    return F.normalize(diff.mean(1), dim=-1)                                          # [K, D]


# ------------------------------------------------------------------------------------------------
# Editing


