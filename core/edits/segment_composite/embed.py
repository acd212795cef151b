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
from ...latents import fs_first_w, synthesize_fs, weights_digest
from ...log import logger
from ...optimize import check_finite, descend, loss_values, trainable
from ..inversion import METHOD_DEFAULTS, WPrior, compute_w_prior, downsample_to, invert_image
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
    """Barbershop's FS embedding (`invert_images_in_FS`): F starts as the 32 px block's output of the W+ codes and is
    optimised with the codes from `fs_first_w(G)` on (S); the codes before stay. Loss = l2·MSE + percept·LPIPS-VGG
    at `lpips_size` + p_norm·PCA prior on the codes (+ l_F·mean((F − F_init)²) when `apply_lF`: the reference
    documents that term but never passes its inputs, so it is off by default). Fresh random noise each step (from
    `seed`), as the reference's generator. Images render with the 32 px skip dropped (Barbershop's convention).

    Returns (ws `[1, num_ws, w_dim]`, F `[1, C, 32, 32]`, completed)."""
    device = image.device
    first = fs_first_w(G)
    with torch.no_grad():
        F0 = G.synthesis.run(wplus, stop=32, noise_mode="const", force_fp32=True).x.float()
    feats, codes = trainable(F0), trainable(wplus[:, first:])
    head = wplus[:, :first].detach()
    opt = torch.optim.Adam([codes, feats], lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(int(seed) + 1)
    target_small = downsample_to(image, cfg.lpips_size)
    completed = True
    for step in range(cfg.fs_steps):
        ws = torch.cat([head, codes], 1)
        img = synthesize_fs(G, ws, feats, None, noise_mode="random", generator=gen)
        terms = {"mse": cfg.l2_lambda * (img - image).square().mean(),
                 "lpips": cfg.percept_lambda * lpips(downsample_to(img, cfg.lpips_size), target_small).sum()}
        if prior is not None and cfg.p_norm_lambda:
            terms["p_norm"] = cfg.p_norm_lambda * prior.loss(ws)
        if cfg.apply_lF and cfg.l_F_lambda:
            terms["l_F"] = cfg.l_F_lambda * (feats - F0).square().mean()
        total = sum(terms.values())
        check_finite(total, terms, step=stages.done + step + 1, what="the FS embedding",
                     hint=f"lower the learning rate (was {cfg.lr})")
        descend(opt, total, [codes, feats])
        if stages.report(stage, step + 1, loss_values(terms, total), img):
            completed = step + 1 >= cfg.fs_steps
            break
    ws = torch.cat([head, codes.detach()], 1)
    return ws.detach().clone(), feats.detach().clone(), completed


__all__ = ["FORMAT", "EmbeddingCache", "DEFAULT_CACHE", "image_digest", "cache_key", "wplus_settings",
           "fs_settings", "embed_wplus", "embed_fs"]
