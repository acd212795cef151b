"""Embeddings of Segment Composite's photos (II2S W+, then Barbershop's FS) and the cache that keeps them.

Barbershop's maintainer advises running its embeddings once and reusing them (ZPdesu/Barbershop #9); here that is
automatic: `EmbeddingCache` keys every W+ and FS embedding by the image (SHA-256 of its pixels at the generator's
resolution), the generator (`core.latents.weights_digest`: every weight) and the settings that made it (step
counts, learning rate, loss weights, seed), in memory (least recently used first out) and optionally in a folder of
`.safetensors` files (written atomically with `core.files`; a damaged or foreign file is ignored with a warning and
recomputed). Only completed embeddings are stored: a run cancelled or finished early in an embedding stores nothing
for it, and keeps every embedding completed before.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from ...files import read_safetensors, write_safetensors
from ...latents import weights_digest
from ...log import logger
from ..inversion import METHOD_DEFAULTS, WPrior, compute_w_prior, invert_image
from .config import CompositeConfig
from .progress import Stages

FORMAT = "sgs_composite_embedding"
PRIOR_FORMAT = "sgs_composite_prior"
_KEY = re.compile(r"^[0-9a-f]{64}$")


def image_digest(image: torch.Tensor) -> str:
    """SHA-256 of an image `[1, 3, R, R]` (float32 pixels and shape)."""
    x = image.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def wplus_settings(cfg: CompositeConfig, seed: int) -> dict:
    return {"w_steps": cfg.w_steps, "lr": cfg.lr, "l2": cfg.l2_lambda, "percept": cfg.percept_lambda,
            "p_norm": cfg.p_norm_lambda, "prior_samples": cfg.prior_samples, "lpips_size": cfg.lpips_size,
            "seed": int(seed)}


def fs_settings(cfg: CompositeConfig, seed: int) -> dict:
    return {**wplus_settings(cfg, seed), "fs_steps": cfg.fs_steps, "apply_lF": cfg.apply_lF,
            "l_F": cfg.l_F_lambda if cfg.apply_lF else 0.0}


def cache_key(kind: str, image: str, generator: str, settings: Mapping) -> str:
    """The key of one embedding: SHA-256 of (kind, image digest, generator digest, settings)."""
    text = json.dumps({"kind": kind, "image": image, "generator": generator, "settings": dict(settings)},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache:
    """W+ and FS embeddings by key (`cache_key`), in memory (at most `max_items`, least recently used dropped
    first) and, with `directory`, on disk as `<key>.safetensors` (read back in later sessions).

    `hits` / `misses` count lookups (tests and the node's status line read them)."""

    def __init__(self, directory: Optional[Union[str, Path]] = None, max_items: int = 8):
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
            raise ValueError(f"max_items must be a whole number >= 0, got {max_items!r}")
        self.directory = None if directory is None else Path(directory)
        self.max_items = max_items
        self._items: "collections.OrderedDict[str, dict[str, torch.Tensor]]" = collections.OrderedDict()
        self._priors: dict[tuple, WPrior] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._items.clear()
        self._priors.clear()

    def _path(self, key: str) -> Optional[Path]:
        return None if self.directory is None else self.directory / f"{key}.safetensors"

    def contains(self, key: str) -> bool:
        """Whether `key` is in memory or has a file (not read; `get` may still find it damaged)."""
        path = self._path(key)
        return key in self._items or (path is not None and path.is_file())

    def get(self, key: str, shapes: Mapping[str, tuple]) -> Optional[dict[str, torch.Tensor]]:
        """The tensors stored under `key` (copies, CPU) when present with exactly the names and `shapes` given,
        else None. A file that is damaged, of another kind or another key, or with wrong shapes or non-finite values
        is ignored with a warning (the caller recomputes and `put` replaces it)."""
        entry = self._items.get(key)
        if entry is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return {k: v.clone() for k, v in entry.items()}
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                tensors, meta = read_safetensors(path, what="Segment Composite embedding", format=FORMAT)
                if meta.get("key") != key:
                    raise ValueError(f"it holds the embedding {meta.get('key')!r}, not {key!r}")
                if set(tensors) != set(shapes):
                    raise ValueError(f"it holds {sorted(tensors)}, expected {sorted(shapes)}")
                for name, shape in shapes.items():
                    t = tensors[name]
                    if tuple(t.shape) != tuple(shape) or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                        raise ValueError(f"{name} is {t.dtype} {list(t.shape)}, expected finite float {list(shape)}")
            except Exception as e:  # noqa: BLE001 - any unreadable file is recomputed, never trusted
                logger.warning("Segment Composite: ignoring the cached embedding %s (%s); computing it again", path, e)
            else:
                tensors = {k: v.float().contiguous() for k, v in tensors.items()}
                self._remember(key, tensors)
                self.hits += 1
                return {k: v.clone() for k, v in tensors.items()}
        self.misses += 1
        return None

    def put(self, key: str, tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping] = None) -> None:
        """Store a completed embedding (in memory, and as a file when the cache has a directory; a file that cannot
        be written is logged and the run goes on)."""
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in tensors.items()}
        self._remember(key, tensors)
        path = self._path(key)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_safetensors(path, tensors, format=FORMAT, metadata={"key": key, **dict(metadata or {})})
            except OSError as e:
                logger.warning("Segment Composite: could not write the embedding cache file %s: %s", path, e)

    def _remember(self, key: str, tensors: dict) -> None:
        if self.max_items == 0:
            return
        self._items[key] = tensors
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def prior(self, G, num_samples: int) -> WPrior:
        """II2S's PCA prior of `G` (computed once per generator and sample count; kept on disk too)."""
        digest = weights_digest(G)
        k = (digest, int(num_samples))
        if k in self._priors:
            return self._priors[k]
        key = cache_key("prior", "", digest, {"samples": int(num_samples)})
        path = self._path(key)
        prior = None
        if path is not None and path.is_file():
            try:
                t, meta = read_safetensors(path, what="II2S prior", format=PRIOR_FORMAT)
                if meta.get("key") != key or tuple(t["mean"].shape) != (G.w_dim,) or \
                        tuple(t["components"].shape) != (G.w_dim, G.w_dim) or tuple(t["stdev"].shape) != (G.w_dim,):
                    raise ValueError("another generator's or a damaged prior")
                prior = WPrior(t["mean"].float(), t["components"].float(), t["stdev"].float(), int(num_samples))
            except Exception as e:  # noqa: BLE001
                logger.warning("Segment Composite: ignoring the cached prior %s (%s); computing it again", path, e)
                prior = None
        if prior is None:
            prior = compute_w_prior(G, int(num_samples))
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_safetensors(path, {"mean": prior.mean, "components": prior.components,
                                             "stdev": prior.stdev}, format=PRIOR_FORMAT, metadata={"key": key})
                except OSError as e:
                    logger.warning("Segment Composite: could not write %s: %s", path, e)
        self._priors[k] = prior
        return prior


DEFAULT_CACHE = EmbeddingCache()   # what `segment_composite(cache=None)` uses: embeddings reused within a session


# ------------------------------------------------------------------------------------------------
# The two embeddings


def embed_wplus(G, image: torch.Tensor, cfg: CompositeConfig, lpips, prior: Optional[WPrior], seed: int,
                stages: Stages, stage: str) -> tuple[torch.Tensor, bool]:
    """II2S W+ embedding (`core.edits.inversion.invert_image`, method 'ii2s', Barbershop's step count and loss
    weights). Returns (ws `[1, num_ws, w_dim]`, completed: False when the callback finished the stage early)."""
    if cfg.w_steps == 0:   # no W+ steps: the mean w (invert_image would still render and measure it)
        return G.w_avg.detach().float().reshape(1, 1, -1).repeat(1, G.num_ws, 1).to(image.device), True
    icfg = replace(METHOD_DEFAULTS["ii2s"], num_steps=cfg.w_steps, lr=cfg.lr, mse_weight=cfg.l2_lambda,
                   lpips_weight=cfg.percept_lambda, prior_weight=cfg.p_norm_lambda)
    res = invert_image(G, image, method="ii2s", config=icfg, perceptual={"lpips_vgg": lpips}, prior=prior,
                       seed=seed, callback=stages.forward(stage))
    return res.latent.tensor.to(image.device), res.steps >= cfg.w_steps


def embed_fs(G, image: torch.Tensor, wplus: torch.Tensor, cfg: CompositeConfig, lpips, prior: Optional[WPrior],
             seed: int, stages: Stages, stage: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Barbershop's FS embedding from the W+ codes (`core.edits.fs_embedding.embed_fs`: F after the 32 px block and
    the codes from `fs_first_w(G)` on, Adam, MSE + LPIPS-VGG + the II2S prior, fresh random noise each step, the
    32 px skip dropped; the l_F regulariser only with `apply_lF`, as the reference's code never applies it).

    Returns (ws `[1, num_ws, w_dim]`, F `[1, C, 32, 32]`, completed: False when the callback finished it early)."""
    from ...latents import Latent, generator_ref
    from .. import fs_embedding as FSE

    fcfg = replace(FSE.DEFAULTS, num_steps=cfg.fs_steps, lr=cfg.lr, mse_weight=cfg.l2_lambda,
                   lpips_weight=cfg.percept_lambda, prior_weight=cfg.p_norm_lambda, apply_l_F=cfg.apply_lF,
                   l_F_lambda=cfg.l_F_lambda, noise_mode="random", skip="drop")
    forward = stages.forward(stage)
    callback = None if forward is None else (lambda p: forward(replace(p, step=p.step - stages.done)))
    res = FSE.embed_fs(G, image, Latent(wplus.detach().to("cpu", torch.float32), "w+", generator_ref(G)),
                       config=fcfg, perceptual={"lpips_vgg": lpips}, prior=prior, seed=int(seed) + 1,
                       callback=callback, step_offset=stages.done, total_steps=stages.total)
    device = image.device
    return res.latent.tensor.to(device), res.latent.features.to(device), res.steps >= cfg.fs_steps


__all__ = ["FORMAT", "EmbeddingCache", "DEFAULT_CACHE", "image_digest", "cache_key", "wplus_settings",
           "fs_settings", "embed_wplus", "embed_fs"]
