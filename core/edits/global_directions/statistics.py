"""Global directions, step 1: mean and standard deviation of every StyleSpace channel over mapped samples."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...latents import generator_ref
from ...networks import Generator
from ...networks.style_space import flatten_s
from .directions import DEFAULTS, ProgressCallback, SStatistics


def _check_truncation(G: Generator, truncation_psi: float, truncation_cutoff: Optional[int]) -> None:
    if not math.isfinite(float(truncation_psi)):
        raise ValueError(f"truncation_psi must be a finite number, got {truncation_psi}")
    if truncation_cutoff is not None and not 0 <= int(truncation_cutoff) <= G.num_ws:
        raise ValueError(f"truncation_cutoff must be None or in 0..{G.num_ws} for {G.info.name}, got {truncation_cutoff}")


class LatentSampler:
    """The reference's z stream: `np.random.RandomState(seed).randn(n, z_dim)`, drawn in batches (the legacy
    generator's batches concatenate to the one-call stream, so any batch size gives the same z). Conditional
    generators get uniform one-hot classes from `RandomState(seed + 1)` (as `core.edits.inversion.w_stats`)."""

    def __init__(self, G: Generator, seed: int, truncation_psi: float, truncation_cutoff: Optional[int]):
        self.G = G
        self.rs_z = np.random.RandomState(int(seed))
        self.rs_c = np.random.RandomState(int(seed) + 1) if G.c_dim else None
        self.psi = float(truncation_psi)
        self.cutoff = truncation_cutoff

    def ws(self, n: int) -> torch.Tensor:
        """The next `n` samples' ws `[n, num_ws, w_dim]` on G's device."""
        G = self.G
        device = G.w_avg.device
        z = torch.from_numpy(self.rs_z.randn(n, G.z_dim)).float().to(device)
        c = None
        if self.rs_c is not None:
            c = F.one_hot(torch.from_numpy(self.rs_c.randint(0, G.c_dim, n)), G.c_dim).float().to(device)
        return G.mapping(z, c, truncation_psi=self.psi, truncation_cutoff=self.cutoff)


def compute_s_statistics(G: Generator, *, num_samples: int = DEFAULTS.num_samples,
                         truncation_psi: float = DEFAULTS.truncation_psi,
                         truncation_cutoff: Optional[int] = DEFAULTS.truncation_cutoff,
                         seed: int = DEFAULTS.seed, batch_size: int = DEFAULTS.stats_batch_size,
                         callback: Optional[ProgressCallback] = None) -> SStatistics:
    """Mean and standard deviation of every S channel over `num_samples` mapped samples.

    Matches GetCode.py (`GetCode` + `GetS` + `GetCodeMS`, l.76-96, 129-150, 170-179) and global_torch
    manipulate.py l.157-165, 329-340: z from `np.random.RandomState(seed)` (the reference: seed 5, 100,000
    samples), w with truncation ψ 0.7 on every layer, s = A(w) of every layer, population std. Streamed in
    float64 (shifted by the first batch's mean), so memory stays at one batch.

    Args:
        G: the generator (any device); not modified.
        num_samples: samples (≥ 2).
        truncation_psi / truncation_cutoff: truncation of the mapped w (cutoff None = every layer; the
            PyTorch port global_torch/manipulate.py l.115 uses cutoff 8, which leaves w[:, 8:] untruncated).
        seed: seed of the z stream; the relevance images are its first samples.
        batch_size: samples per mapping pass.
        callback: `callback(done, total)` after each batch; may raise to cancel.

    Returns:
        SStatistics with `mean`, `std` `[C]` float32 on CPU (C = s_channel_count(G), e.g. 9088 for config-f 1024).
    """
    if int(num_samples) < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    _check_truncation(G, truncation_psi, truncation_cutoff)
    num_samples, batch_size = int(num_samples), int(batch_size)
    sampler = LatentSampler(G, seed, truncation_psi, truncation_cutoff)
    shift = s1 = s2 = None
    done = 0
    with torch.no_grad():
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            s = flatten_s(G.synthesis.w_to_s(sampler.ws(n))).to("cpu", torch.float64)  # [n, C]
            if shift is None:
                # Sums of (s − shift) keep E[x²] − E[x]² well conditioned for channels with a large mean.
                shift = s.mean(0)
                s1 = torch.zeros_like(shift)
                s2 = torch.zeros_like(shift)
            d = s - shift
            s1 += d.sum(0)
            s2 += d.square().sum(0)
            done += n
            if callback is not None:
                callback(done, num_samples)
    m1 = s1 / num_samples
    var = (s2 / num_samples - m1.square()).clamp_min(0)
    return SStatistics(mean=(shift + m1).float(), std=var.sqrt().float(), num_samples=num_samples,
                       truncation_psi=float(truncation_psi),
                       truncation_cutoff=None if truncation_cutoff is None else int(truncation_cutoff),
                       seed=int(seed), fingerprint=generator_ref(G).fingerprint)


# ------------------------------------------------------------------------------------------------
# The directions object


