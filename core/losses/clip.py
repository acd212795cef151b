"""CLIP losses on embeddings: the global distance to a text (StyleCLIP) and the directional loss (StyleGAN-NADA).

Both take embeddings that are already normalised (as `core.models.clip.ClipModel.encode_image` / `encode_text`
return them), so 1 − dot product is 1 − cosine similarity; they return one value per image (`[N]`), for the
caller to average or weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_global_loss(image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
    """1 − cos(E_I(x), E_T(t)) (StyleCLIP, Patashnik et al. 2021, eq. 1's D_CLIP).

    Args:
        image_embedding: `[N, D]`, unit rows.
        text_embedding: `[1, D]` or `[N, D]`, unit rows.
    Returns:
        `[N]`, in [0, 2].
    """
    return 1 - (image_embedding * text_embedding).sum(-1)


def text_direction(text_embedding: torch.Tensor, neutral_embedding: torch.Tensor) -> torch.Tensor:
    """ΔT = E_T(t) − E_T(t_ref), normalised `[1 or N, D]`: the direction the directional loss aligns with."""
    return F.normalize(text_embedding - neutral_embedding, dim=-1)


def clip_directional_loss(image_embedding: torch.Tensor, reference_embedding: torch.Tensor,
                          direction: torch.Tensor) -> torch.Tensor:
    """1 − cos(E_I(x) − E_I(x_ref), E_T(t) − E_T(t_ref)) (StyleGAN-NADA, Gal et al. 2021, eq. 2).

    Args:
        image_embedding: `[N, D]` unit rows, E_I of the edited images.
        reference_embedding: `[N, D]` (or `[1, D]`) unit rows, E_I of the images before the edit.
        direction: `text_direction(t, t_ref)`, `[1, D]` or `[N, D]`.
    Returns:
        `[N]`, in [0, 2].
    """
    return 1 - (F.normalize(image_embedding - reference_embedding, dim=-1) * direction).sum(-1)


__all__ = ["clip_global_loss", "clip_directional_loss", "text_direction"]
