"""Identity loss with ArcFace IR-SE50 (TreB1eN's InsightFace_Pytorch weights, as pSp, e4e and StyleCLIP use them).

The network is our own module whose state-dict names are those of the published `model_ir_se50.pth`, so that
file loads as it is (read with `torch.load(weights_only=True)` or safetensors, every key and shape checked).

Identity loss (StyleCLIP, Patashnik et al. 2021, eq. 2; pSp's L_ID, Richardson et al. 2021):
    L_ID(x, x_ref) = mean_n (1 − ⟨R(x_n), R(x_ref_n)⟩),
R = the L2-normalised 512-d ArcFace embedding of the face crop. The crop is the references' exactly: images in
[−1, 1] brought to 256×256 by adaptive average pooling (StyleCLIP's `pool`, pSp's `face_pool`; a 4×4 box
average for 1024 px), rows 35:223 and columns 32:220 (188×188 px, the face of an FFHQ-aligned image), adaptive
average pooling to 112×112, then the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..files import (MissingWeights, find_weights, load_state_strict, missing_weights_error, read_state_dict,
                     weight_names)
from ..log import warn_once
from ..models.encoders.irse import input_layer, ir_se_body, randomize_
from ..optimize import autograd_ready, has_inference_tensors

PathLike = Union[str, Path]

ARCFACE_FILE = "model_ir_se50.pth"
# The "IR-SE50 Model" link of the pSp README's pretrained-models table; StyleCLIP's README links the same file.
ARCFACE_URL = "https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view?usp=sharing"

FACE_RESOLUTION = 256        # the image size the crop below is defined at
FACE_CROP = (35, 223, 32, 220)  # rows top:bottom, columns left:right of the 256 px image (references' numbers)
ARCFACE_RESOLUTION = 112     # the network's input size
EMBEDDING_DIM = 512

class ArcFaceIRSE50(nn.Module):
    """ArcFace IR-SE50 backbone: 112×112 face crops `[N, 3, 112, 112]` in [−1, 1] → L2-normalised embeddings
    `[N, 512]`. Always frozen and in eval mode (BatchNorm uses its running statistics, dropout is off)."""

    def __init__(self):
        super().__init__()
        self.input_layer = input_layer(3)
        # Defined before `body` so that the state dict lists keys in the reference file's order.
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Identity(),  # the reference's Dropout(0.6): parameter-free and off at eval
            nn.Flatten(1),
            nn.Linear(512 * 7 * 7, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM))
        self.body = ir_se_body()  # the backbone shared with the pSp / e4e / ReStyle encoders
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "ArcFaceIRSE50":
        # Training mode would make BatchNorm use batch statistics and change every embedding.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, ARCFACE_RESOLUTION, ARCFACE_RESOLUTION):
            raise ValueError(f"ArcFace IR-SE50 takes face crops [N, 3, 112, 112], got {list(x.shape)}; "
                             f"use crop_face() or arcface_features() for whole aligned face images")
        h = self.output_layer(self.body(self.input_layer(x)))  # [N, 512]
        # No epsilon, as in the reference: a zero embedding would be a broken network.
        return h / h.norm(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# Preprocessing and the loss


def crop_face(x: torch.Tensor) -> torch.Tensor:
    """The references' ArcFace input: `[N, 3, H, W]` aligned face images in [−1, 1] → `[N, 3, 112, 112]`.

    Images not 256×256 are first adaptive-average-pooled to 256×256 (StyleCLIP's `pool`, pSp's `face_pool`;
    exact box averaging for 512 and 1024 px, a crude upsampling below 256 px). Then rows 35:223 and columns
    32:220 (the face of an FFHQ-aligned image) are pooled the same way to 112×112. Differentiable.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"the identity loss needs RGB images [N, 3, H, W] in [-1, 1], got shape {list(x.shape)}")
    if tuple(x.shape[2:]) != (FACE_RESOLUTION, FACE_RESOLUTION):
        x = F.adaptive_avg_pool2d(x, FACE_RESOLUTION)
    top, bottom, left, right = FACE_CROP
    return F.adaptive_avg_pool2d(x[:, :, top:bottom, left:right], ARCFACE_RESOLUTION)


def arcface_features(arcface: ArcFaceIRSE50, x: torch.Tensor) -> torch.Tensor:
    """R(x): L2-normalised identity embeddings `[N, 512]` (float32, or the network's dtype) of aligned face
    images `[N, 3, H, W]` in [−1, 1] (any dtype; cast to the network's). Differentiable with respect to `x`."""
    p = next(arcface.parameters())
    if x.device != p.device:
        raise ValueError(f"images are on {x.device} but the ArcFace network is on {p.device}; move the network "
                         f"with .to({str(x.device)!r})")
    if torch.is_grad_enabled() and x.requires_grad and has_inference_tensors(arcface):
        warn_once("arcface-inference-copy",
                  "the ArcFace network was made under torch.inference_mode(); copying it on every call so that "
                  "autograd can use it. Wrap it once with IDLoss(arcface) instead.")
        arcface = autograd_ready(arcface)
    return arcface(crop_face(x.to(p.dtype)))  # pool in the network's precision, not e.g. float16


def _cosine_loss(feats: torch.Tensor, ref_feats: torch.Tensor, reduction: str) -> torch.Tensor:
    if ref_feats.shape[0] not in (1, feats.shape[0]):
        raise ValueError(f"the reference batch must have 1 image or as many as the images ({feats.shape[0]}), "
                         f"got {ref_feats.shape[0]}")
    # Both are unit vectors, so the dot product is the cosine (the references' `y_hat_feats[i].dot(y_feats[i])`).
    loss = 1 - (feats * ref_feats).sum(1)  # [N]
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def id_loss(arcface: ArcFaceIRSE50, x: torch.Tensor, x_ref: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Identity loss mean_n(1 − cos(R(x_n), R(x_ref_n))) (StyleCLIP eq. 2, pSp's L_ID).

    Args:
        arcface: the network (`load_arcface`, or `random_arcface` in tests), on the images' device.
        x: `[N, 3, H, W]` aligned face images in [−1, 1], any size (see `crop_face`); gradients flow to it.
        x_ref: `[N or 1, 3, H', W']` reference images in [−1, 1]; one image is compared with every x. Its
            embedding is detached, as in the references.
        reduction: 'mean' → a scalar (the references' batch mean); 'none' → `[N]`.
    Returns:
        float32 loss in [0, 2]; 0 for the same identity embedding.
    """
    with torch.no_grad():
        ref_feats = arcface_features(arcface, x_ref)
    return _cosine_loss(arcface_features(arcface, x), ref_feats, reduction)


class IDLoss(nn.Module):
    """`id_loss` as a module for optimisation loops: copies a network made under `torch.inference_mode()` once
    (as ComfyUI's loaders make them) and can keep a fixed reference's embedding.

    `IDLoss(arcface, x_ref)(x)` equals `id_loss(arcface, x, x_ref)`; `IDLoss(arcface)(x, x_ref)` too.
    """

    def __init__(self, arcface: ArcFaceIRSE50, x_ref: Optional[torch.Tensor] = None):
        super().__init__()
        self.arcface = autograd_ready(arcface)
        self.ref_feats: Optional[torch.Tensor] = None
        if x_ref is not None:
            self.set_reference(x_ref)

    def set_reference(self, x_ref: torch.Tensor) -> None:
        """Embed `x_ref` `[M, 3, H, W]` once; later calls without a reference compare with it."""
        with torch.inference_mode(False), torch.no_grad():
            self.ref_feats = arcface_features(self.arcface, x_ref)

    def forward(self, x: torch.Tensor, x_ref: Optional[torch.Tensor] = None, *,
                reduction: str = "mean") -> torch.Tensor:
        if x_ref is None:
            if self.ref_feats is None:
                raise ValueError("IDLoss needs a reference: pass x_ref, or give it to IDLoss(...) or "
                                 "set_reference() first")
            ref_feats = self.ref_feats
        else:
            with torch.no_grad():
                ref_feats = arcface_features(self.arcface, x_ref)
        return _cosine_loss(arcface_features(self.arcface, x), ref_feats.to(x.device), reduction)


# ------------------------------------------------------------------------------------------------
# Loading


def load_arcface_state(model: ArcFaceIRSE50, state: dict, what: str = "ArcFace IR-SE50") -> ArcFaceIRSE50:
    """Copy a `model_ir_se50.pth` state dict into `model`, checking every key and shape (float32)."""
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return load_state_strict(model, state, what, mismatch="not an ArcFace IR-SE50 state dict",
                             hint=f". Expected {ARCFACE_FILE} from {ARCFACE_URL}",
                             shape_note=f" (IR-SE50 for 112 px crops); is this {ARCFACE_FILE}?")


def load_arcface(model_dirs: Sequence[PathLike] = (), device=None) -> ArcFaceIRSE50:
    """ArcFace IR-SE50 with TreB1eN's weights: `model_ir_se50.pth` (or `model_ir_se50.safetensors`) from the
    first of `model_dirs` that has it. It cannot be downloaded automatically (it is on Google Drive).

    Raises:
        MissingWeightsError: the file is in none of `model_dirs`; the message names it, its URL and the folders.
        CheckpointError: the file is unreadable or holds another network.
    """
    names = weight_names(ARCFACE_FILE)
    path = find_weights(names, model_dirs)
    if path is None:
        raise missing_weights_error([MissingWeights(
            "ArcFace IR-SE50 weights for the identity loss", ARCFACE_FILE, ARCFACE_URL,
            "it is on Google Drive, which cannot be downloaded automatically",
            also=f"or {names[1]}; the IR-SE50 model linked in the pSp and StyleCLIP READMEs, from TreB1eN's "
                 f"InsightFace_Pytorch")], model_dirs)
    model = load_arcface_state(ArcFaceIRSE50(), read_state_dict(path), str(path))
    return model.to(device) if device is not None else model


# ------------------------------------------------------------------------------------------------
# Random networks for tests


def random_arcface(seed: int = 0) -> ArcFaceIRSE50:
    """IR-SE50 with seeded random weights and BatchNorm statistics (none of them trivial), for tests."""
    return randomize_(ArcFaceIRSE50(), torch.Generator().manual_seed(int(seed)))
