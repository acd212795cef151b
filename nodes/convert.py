"""The one place where ComfyUI IMAGE tensors and generator images are converted into each other."""

from __future__ import annotations

import torch

# A ComfyUI IMAGE is in [0, 1]; bicubic resizing overshoots a little at sharp edges, so values this far outside are
# accepted (and fitted as they are). Farther out means another convention (0..255) and is refused.
IMAGE_RANGE_TOLERANCE = 0.125


def generator_to_comfy(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Generator output `[N, C, H, W]` in about [-1, 1] -> ComfyUI IMAGE `[N, H, W, 3]` float in [0, 1].

    Uses NVIDIA's quantisation (`clamp(x * 127.5 + 128, 0, 255)` truncated): saved as 8-bit, the IMAGE matches what
    NVIDIA's scripts write to within one level per value (fp32 rounding can fall on a level boundary). Grayscale outputs are repeated to RGB, extra channels dropped.
    """
    x = images.detach().to(torch.float32)
    if x.ndim != 4:
        raise ValueError(f"expected generator images [N, C, H, W], got {list(x.shape)}")
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = ((x[:, :3] * 127.5 + 128) / 255).clamp(0, 1)
    return x.permute(0, 2, 3, 1).contiguous().to(device)


def comfy_to_generator(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE `[B, H, W, C]` in [0, 1] -> `[B, 3, H, W]` in [-1, 1] (inverse of `generator_to_comfy`).

    Grayscale is repeated to RGB and an alpha channel dropped. An empty batch, or values more than
    `IMAGE_RANGE_TOLERANCE` outside [0, 1], are refused with a ValueError.
    """
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an IMAGE [B, H, W, C] with 1, 3 or 4 channels, got {list(image.shape)}")
    if 0 in image.shape[:3]:
        raise ValueError(f"the IMAGE is empty (shape {list(image.shape)}: no images or no pixels); connect a node "
                         f"that outputs at least one image")
    x = image.detach().to(torch.float32)
    lo, hi = (float(v) for v in torch.aminmax(x))  # NaN passes here and is refused, by count, where it is used
    if lo < -IMAGE_RANGE_TOLERANCE or hi > 1 + IMAGE_RANGE_TOLERANCE:
        raise ValueError(f"the IMAGE has values from {lo:.4g} to {hi:.4g}, but a ComfyUI IMAGE is in [0, 1] (up to "
                         f"{IMAGE_RANGE_TOLERANCE:g} outside is accepted, as resizing filters overshoot); an image in "
                         f"0..255 must be divided by 255 first, otherwise clamp it to [0, 1]")
    if x.shape[-1] == 1:
        x = x.repeat(1, 1, 1, 3)
    x = x[..., :3].permute(0, 3, 1, 2)
    return (x * 255 - 128) / 127.5


def to_pil(image: torch.Tensor):
    """One IMAGE `[H, W, 3]` in [0, 1] -> PIL image (for previews and files)."""
    from PIL import Image

    array = (image.detach().cpu().clamp(0, 1) * 255).to(torch.uint8).numpy()
    return Image.fromarray(array)
