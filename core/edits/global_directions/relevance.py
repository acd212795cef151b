"""Global directions, step 2: per-channel CLIP relevance (resumable, the slow part)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from ...latents import generator_ref
from ...log import logger
from ...networks import Generator
from ...networks.style_space import s_layout
from ...optimize import Checkpoint, ProgressCallback, StepProgress, finish_requested
from .directions import (DEFAULTS, DirectionsError, GlobalDirections, PathLike, SStatistics,
                         clip_fingerprint, layout_pairs, load_directions, reference_layers, save_directions)
from .render import OOM_ERRORS, PassSize, Renderer, relevance_rows
from .statistics import LatentSampler

def _default_resolution(G: Generator, resolution: Optional[int]) -> int:
    if resolution is None or int(resolution) == G.img_resolution:
        return G.img_resolution
    resolution = int(resolution)
    synth = G.synthesis
    if G.arch != "stylegan2":
        raise ValueError(f"resolution={resolution}: StyleGAN3 has no intermediate images; use None "
                         f"({G.img_resolution}, the full render, as the reference)")
    if resolution not in synth.block_resolutions:
        raise ValueError(f"resolution must be None or one of {synth.block_resolutions} for {G.info.name}, "
                         f"got {resolution}")
    if G.config.synthesis.architecture != "skip":
        raise ValueError(f"resolution={resolution} needs a 'skip' generator (its image at {resolution} px is the "
                         f"sum of the ToRGB outputs so far); {G.info.name} is "
                         f"'{G.config.synthesis.architecture}': use None (the full render)")
    return resolution


def _chunks(n_channels: int, per_chunk: int) -> list[range]:
    return [range(a, min(a + per_chunk, n_channels)) for a in range(0, n_channels, per_chunk)]


def _settings_mismatch(state: GlobalDirections, other: GlobalDirections) -> list[str]:
    diffs = []
    for name in ("layers", "fingerprint", "embed_dim", "clip_fingerprint", "num_images", "alpha", "seed", "resolution"):
        a, b = getattr(state, name), getattr(other, name)
        if a != b:
            diffs.append(f"{name} {a!r} vs {b!r}")
    if not (torch.equal(state.stats.mean, other.stats.mean) and torch.equal(state.stats.std, other.stats.std)):
        diffs.append("S statistics differ")
    return diffs


def compute_relevance(G: Generator, clip, stats: Optional[SStatistics], *, num_images: int = DEFAULTS.num_images,
                      alpha: float = DEFAULTS.alpha, layers: Optional[Sequence[str]] = None,
                      seed: Optional[int] = None, batch_size: int = DEFAULTS.batch_size,
                      resolution: Optional[int] = None, callback: Optional[ProgressCallback] = None,
                      state: Optional[GlobalDirections] = None, checkpoint: Optional[PathLike] = None,
                      checkpoint_interval: float = DEFAULTS.checkpoint_interval,
                      prefix_cache: bool = True) -> GlobalDirections:
    """The channel-relevance matrix Δi_c (StyleCLIP's `fs3`): resumable, deterministic for a seed.

    For each channel c of `layers`, over `num_images` images: s_c = μ_c − α σ_c and μ_c + α σ_c (all other
    channels as sampled), both rendered ('const' noise), quantised to 8 bits and CLIP-encoded (with CLIP's own
    resize and normalisation); each embedding normalised, the difference (+ minus −) normalised, averaged over
    the images and normalised again. That is SingleChannel.py l.58-88 + `GetFs` l.32-39 (the images are the
    first `num_images` samples of the statistics' z stream, l.60-64). Differences from the reference, on
    purpose: the reference writes μ_c into its image array in place and never restores it (l.78-79 write
    through views of `dlatents_o`; global_torch/SingleChannel.py l.95-96 likewise), so each channel is measured with all previously measured channels stuck at their means;
    here every channel is measured on the unmodified samples (the paper's definition, and order-independent).
    A channel whose renders do not change gives a zero row (the reference's 0/0 gives NaN).

    Args:
        G: the generator; not modified. Its device is used for rendering.
        clip: a `core.models.clip.ClipModel` (the reference: OpenAI ViT-B/32); its device encodes.
        stats: `compute_s_statistics(G)`; may be None when resuming (taken from `state` / `checkpoint`).
        num_images: images per channel (reference 100).
        alpha: perturbation in standard deviations (reference 5).
        layers: S layer names to measure; None = every non-ToRGB layer (StyleGAN3: also not 'input'), as the
            reference's published fs3 (its SingleChannel.py measures only layers ≤ 128 px: pass those names,
            or `resolution=128`, for that).
        seed: z stream of the images; None = the statistics' seed (the reference's images are the first
            samples of its statistics).
        batch_size: renders per forward pass (memory: a 1024 px render needs ~150 MB of activations).
        resolution: render size fed to CLIP. None = the generator's own (the reference renders full size and
            lets CLIP's preprocessing resize to 224). A smaller block resolution (StyleGAN2 'skip' only) stops
            the synthesis there and encodes that block's skip image: an approximation, much faster on CPU, that
            can only measure layers up to that resolution (the default `layers` then are those).
        callback: called with a `StepProgress` (phase 'relevance'; `step` / `total` count channels, no losses or
            image) at the start (`step` = channels already done, 0 on a fresh run) and after each chunk; raise in
            it to cancel (what was measured is saved to `checkpoint` first); return `core.optimize.FINISH` to end
            after this chunk: the result holds the channels measured so far (`done`; edits use only those) and is
            saved to `checkpoint`, so a later call continues it.
        state: an unfinished result to continue (its settings must match); not modified.
        checkpoint: file to save progress to (`core.optimize.Checkpoint`: every `checkpoint_interval` seconds, at
            the end, and when interrupted, including by `callback` raising); when it exists and `state` is None,
            the run resumes from it. Without it, an interrupted run's progress is lost.
        prefix_cache: reuse the render of the stages before each layer (bit-identical to the plain render for
            the same batch, equal up to float rounding otherwise, see the tests); False renders every image from
            scratch with `from_s`, as the reference does.

    Returns:
        GlobalDirections with `relevance` `[C, D]` and `done` set for the measured channels (plus any the
        resumed state had).

    Chunks of channels start at fixed offsets in each layer, so a resumed run computes exactly what an
    uninterrupted one does (bit-identical on the same machine and settings; after an out-of-memory fallback to
    smaller passes or full renders, which a resumed run does not remember, equal up to float rounding).
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if not (math.isfinite(float(alpha)) and float(alpha) > 0):
        raise ValueError(f"alpha must be a positive number of standard deviations, got {alpha}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    num_images, alpha, batch_size = int(num_images), float(alpha), int(batch_size)
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if checkpoint is not None and checkpoint.is_file():
        saved = load_directions(checkpoint, G)
        if state is None or saved.num_done > state.num_done:  # never overwrite more progress with less
            state = saved
            logger.info("global directions: resuming from %s (%d channels done)", checkpoint, state.num_done)
    if stats is None:
        if state is None:
            raise ValueError("stats is None and there is nothing to resume from; pass compute_s_statistics(G)")
        stats = state.stats
    layout = s_layout(G)
    c = sum(layer.channels for layer in layout)
    if stats.num_channels != c:
        raise DirectionsError(f"the statistics have {stats.num_channels} S channels but {G.info.name} has {c}; "
                              f"compute them with compute_s_statistics(G)")
    if stats.fingerprint and stats.fingerprint != generator_ref(G).fingerprint:
        raise DirectionsError(f"the statistics were computed for another generator (fingerprint {stats.fingerprint}, "
                              f"{G.info.name} is {generator_ref(G).fingerprint}); compute them with this one")
    resolution = _default_resolution(G, resolution)
    renderer = Renderer(G.synthesis, resolution)
    by_name = {layer.name: layer for layer in layout}
    if isinstance(layers, str):
        layers = [layers]
    if layers is None:
        chosen = [layer for layer in reference_layers(G) if layer.name in renderer.stage_of]
    else:
        unknown = [name for name in layers if name not in by_name]
        if unknown:
            raise ValueError(f"unknown S layer(s) {unknown}; {G.info.name}'s layers are {list(by_name)}")
        late = [name for name in layers if name not in renderer.stage_of]
        if late:
            raise ValueError(f"layer(s) {late} come after the {resolution} px render: they cannot change it; "
                             f"drop them or use a larger resolution")
        wanted = set(layers)
        chosen = [layer for layer in layout if layer.name in wanted]  # forward order, so prefixes only advance
    if not chosen:
        raise ValueError("no layers to measure")
    seed = stats.seed if seed is None else int(seed)

    try:
        dim = int(clip.encode_text("a").shape[-1])
    except Exception as e:  # noqa: BLE001 - anything that is not a ClipModel
        raise TypeError(f"clip must be a core.models.clip.ClipModel (load_clip / random_clip), got {type(clip).__name__}") from e
    fresh = GlobalDirections(stats=stats, relevance=torch.zeros([c, dim]), done=torch.zeros([c], dtype=torch.bool),
                             layers=layout_pairs(G), generator_name=G.info.name, clip_name=clip.name,
                             clip_source=clip.source, clip_fingerprint=clip_fingerprint(clip), num_images=num_images,
                             alpha=alpha, seed=seed, resolution=resolution, source="computed")
    if state is not None:
        diffs = _settings_mismatch(state, fresh)
        if diffs:
            where = f"checkpoint {checkpoint}" if checkpoint is not None else "state"
            raise DirectionsError(f"cannot resume from {where}: it was made with other settings ({'; '.join(diffs)}); "
                                  f"use the same settings, or start over (delete the checkpoint / pass state=None)")
        # Copies: the caller's object is never changed, and tensors made under inference mode become normal.
        fresh = replace(fresh, relevance=state.relevance.clone(), done=state.done.clone())
    result = fresh

    starts, start = {}, 0
    for layer in layout:
        starts[layer.name] = start
        start += layer.channels
    wanted_idx = torch.cat([torch.arange(starts[layer.name], starts[layer.name] + layer.channels) for layer in chosen])
    total = int(wanted_idx.numel())
    per_chunk = max(1, batch_size // (2 * num_images))
    mean, std = stats.mean, stats.std
    logger.info("global directions: %d channels in %d layers of %s, %d images each, %d renders per pass",
                total, len(chosen), G.info.name, num_images, batch_size)

    passes = PassSize(batch_size)

    def report() -> bool:
        """Send the progress; True when the callback asked to finish now."""
        if callback is None:
            return False
        return finish_requested(callback(StepProgress(int(result.done[wanted_idx].sum()), total, "relevance", {})))

    # The checkpoint counts channels done: it is written every `checkpoint_interval` seconds and when interrupted.
    ckpt = Checkpoint(checkpoint, lambda path: save_directions(result, path), start=int(result.done[wanted_idx].sum()),
                      every_seconds=checkpoint_interval, what="global directions")
    finished = False  # "Finish now": the measured channels are kept (edits use only those)
    with ckpt.on_interrupt():
        finished = report()
        with torch.no_grad():
            base = dict(G.synthesis.w_to_s(LatentSampler(G, seed, stats.truncation_psi, stats.truncation_cutoff)
                                           .ws(num_images)))
            prefix, prefix_stage = None, 0
            for layer in chosen:
                if finished:
                    break
                offset = starts[layer.name]
                todo = [ch for ch in _chunks(layer.channels, per_chunk)
                        if not bool(result.done[offset + ch.start:offset + ch.stop].all())]
                if not todo:
                    continue
                stage = renderer.stage_of[layer.name]
                if prefix_cache and stage > prefix_stage:
                    # Layers come in forward order, so the cached prefix only ever advances.
                    try:
                        prefix = renderer.run(base, prefix, prefix_stage, stage)
                        prefix_stage = stage
                    except OOM_ERRORS:
                        # The prefix holds every image's activations before this layer: at high resolution that
                        # can exceed the device. Full renders give the same numbers, only slower.
                        prefix, prefix_stage, prefix_cache = None, 0, False
                        if G.w_avg.device.type == "cuda":
                            torch.cuda.empty_cache()
                        logger.warning("global directions: not enough memory to cache the renders before %s for "
                                       "%d images; rendering every image in full from here on (the same "
                                       "numbers up to float rounding, slower)", layer.name, num_images)
                for ch in todo:
                    rows = relevance_rows(renderer, clip, base, prefix, stage, layer.name, ch,
                                           mean[offset:offset + layer.channels], std[offset:offset + layer.channels],
                                           alpha=alpha, num_images=num_images, batch_size=passes,
                                           use_prefix=prefix_cache)
                    result.set_rows(slice(offset + ch.start, offset + ch.stop), rows)
                    ckpt.completed(int(result.done[wanted_idx].sum()))
                    if report():
                        finished = True
                        break
    ckpt.finish()
    return result


