"""Global directions: batched renders of channel perturbations, with the part a channel cannot change cached."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from ...log import logger
from ...networks.stylegan2 import activation_memory_format

class Renderer:
    """Runs a synthesis network stage by stage (StyleGAN2: one block per stage; StyleGAN3: the input, then one
    layer per stage) exactly as its `forward` does, so a render can start from a cached state.

    A channel of a layer can only change the stages from its own onward; everything before is the same for
    every perturbation of the same image and is computed once per image. `stop` stages are run at most: for
    StyleGAN2 'skip' generators a lower `resolution` ends at that block and returns its skip image.
    """

    def __init__(self, synthesis, resolution: int):
        self.synthesis = synthesis
        self.sg2 = hasattr(synthesis, "block_resolutions")
        if self.sg2:
            self.stages = [f"b{res}" for res in synthesis.block_resolutions if res <= resolution]
            self.complete = len(self.stages) == len(synthesis.block_resolutions)
        else:
            self.stages = ["input"] + list(synthesis.layer_names)
            self.complete = True
        index = {name: i for i, name in enumerate(self.stages)}
        self.stage_of: dict[str, int] = {}
        for layer in synthesis.style_layers():
            key = layer.name.split(".")[0] if self.sg2 else layer.name
            if key in index:
                self.stage_of[layer.name] = index[key]

    def layers_from(self, stage: int) -> list[str]:
        """Names of the S layers that stages `stage`, `stage + 1`, ... read."""
        return [name for name, s in self.stage_of.items() if s >= stage]

    def run(self, styles: dict[str, torch.Tensor], state: Optional[tuple], start: int,
            stop: Optional[int] = None) -> Optional[tuple]:
        """Advance `state` (None before the first stage) through stages `start..stop-1` with `styles`."""
        synth = self.synthesis
        for i in range(start, len(self.stages) if stop is None else stop):
            name = self.stages[i]
            if self.sg2:
                x, img = state if state is not None else (None, None)
                state = getattr(synth, name)(x, img, None, force_fp32=synth.force_fp32, noise_mode="const", noise={},
                                             prefix=name + ".", generator=None, fused_modconv=None, styles=styles)
            elif name == "input":
                x = synth.input(None, styles=styles["input"])
                state = (x.contiguous(memory_format=activation_memory_format(x)),)
            else:
                state = (getattr(synth, name)(state[0], None, force_fp32=synth.force_fp32, fused_modconv=None,
                                              styles=styles[name]),)
        return state

    def image(self, state: tuple) -> torch.Tensor:
        """The image `[N, C, R, R]` float32 of a state after the last stage."""
        if self.sg2:
            return state[1].contiguous()
        x = state[0]
        if self.synthesis.output_scale != 1:
            x = x * self.synthesis.output_scale
        return x.to(torch.float32).contiguous()


def _select(state: Optional[tuple], idx: torch.Tensor) -> Optional[tuple]:
    """Rows `idx` of every tensor of a render state (fresh tensors: blocks may add into them in place), in the
    same memory format (convolutions pick their algorithm, and so their rounding, by it)."""
    if state is None:
        return None
    out = []
    for t in state:
        if t is not None:
            fmt = torch.channels_last if t.ndim == 4 and not t.is_contiguous() and \
                t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            t = t.index_select(0, idx.to(t.device)).contiguous(memory_format=fmt)
        out.append(t)
    return tuple(out)


def _quantize(img: torch.Tensor) -> torch.Tensor:
    """The 8-bit image the reference hands to CLIP (NVIDIA's `x·127.5 + 128`, clamped, truncated), in [-1, 1]."""
    return (img * 127.5 + 128).clamp(0, 255).floor() / 127.5 - 1


def perturbed_renders(renderer: Renderer, base: dict[str, torch.Tensor], prefix: Optional[tuple], stage: int,
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


def relevance_rows(renderer: Renderer, clip, base: dict[str, torch.Tensor], prefix: Optional[tuple], stage: int,
                    layer: str, channels: range, mean: torch.Tensor, std: torch.Tensor, *, alpha: float,
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


