"""Encoder inversion: an image into W+ in one pass (pSp, e4e) or a few (ReStyle), instead of an optimisation.

pSp (Richardson et al. 2021): w+ = E(x) + w̄ when trained with `start_from_latent_avg` (always for e4e, Tov et al.
2021). ReStyle (Alaluf et al. 2021, eq. 2–3): w₀ = w̄, ŷ₀ = G(w̄); for t = 1..T: w_t = E(x ⊕ ŷ_{t−1}) + w_{t−1},
ŷ_t = G(w_t), with ⊕ the channel concatenation and every ŷ average-pooled to the encoder's 256 px. Images are
rendered with the generator's constant noise (the references' `randomize_noise=False`).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..latents import Latent, generator_ref
from ..models.encoders import DEFAULT_RESTYLE_ITERATIONS, Encoder, check_pairing
from ..networks import Generator

MAX_ITERATIONS = 100


@dataclass
class EncodeResult:
    """latent: w+ `[N, num_ws, w_dim]`; image: the reconstruction `[N, 3, R, R]` in [−1, 1] (CPU); ws_per_iteration:
    ReStyle's w+ after every iteration (one entry for pSp / e4e)."""

    latent: Latent
    image: torch.Tensor
    ws_per_iteration: list[torch.Tensor]
    iterations: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        return "\n".join([f"encoder: {self.iterations} pass{'es' if self.iterations != 1 else ''} in "
                          f"{self.seconds:.2f} s"] + self.notes)


def encoder_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images `[N, 3, H, W]` in [−1, 1] → `[N, 3, resolution, resolution]`: area filter when shrinking, bilinear
    when enlarging (the references resize aligned photos to 256 with PIL's bilinear filter)."""
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    if images.shape[-1] >= resolution and images.shape[-2] >= resolution:
        return F.interpolate(images, size=(resolution, resolution), mode="area")
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


def average_image(encoder: Encoder, G: Generator, latent_avg: torch.Tensor) -> torch.Tensor:
    """ReStyle's start ŷ₀: G(w̄) with constant noise, pooled to the encoder's size, `[1, 3, r, r]`."""
    img = G.synthesis(latent_avg[None].to(G.w_avg.device), noise_mode="const")
    return F.adaptive_avg_pool2d(img.float(), encoder.input_resolution)


def _version(t: torch.Tensor) -> int:
    return -1 if t.is_inference() else t._version  # inference tensors cannot be edited outside inference mode


def _cached_average_image(encoder: Encoder, G: Generator, latent_avg: torch.Tensor) -> torch.Tensor:
    """`average_image`, kept on the encoder for the next call with the same generator (the same object, its
    synthesis weights not edited since), the same w̄ and dtype: ReStyle's references render G(w̄) once per run,
    not once per image (one render of five at the generator's full size)."""
    tensors = [*G.synthesis.parameters(), *G.synthesis.buffers(), latent_avg]
    key = (tuple((t.data_ptr(), _version(t)) for t in tensors), latent_avg.dtype, latent_avg.device,
           encoder.input_resolution)
    cached = getattr(encoder, "_average_image", None)
    if cached is not None and cached[0]() is G and cached[1] == key:
        return cached[2]
    img = average_image(encoder, G, latent_avg)
    encoder._average_image = (weakref.ref(G), key, img)
    return img


def _pool(img: torch.Tensor, resolution: int) -> torch.Tensor:
    """ReStyle's face_pool (adaptive average pooling to the encoder's size); nothing to do at that size."""
    return img if tuple(img.shape[-2:]) == (resolution, resolution) else F.adaptive_avg_pool2d(img, resolution)


def encode_image(encoder: Encoder, G: Generator, images: torch.Tensor, *, num_iterations: Optional[int] = None,
                 render: bool = True, callback: Optional[Callable[[int, int, torch.Tensor], object]] = None
                 ) -> EncodeResult:
    """Encode aligned images into `G`'s W+.

    Args:
        encoder: a loaded `Encoder` (not modified), on G's device.
        G: the generator the encoder was trained with (checked: `check_pairing`).
        images: `[N, 3, H, W]` in [−1, 1] (see `core.edits.inversion.prepare_target`); resized to 256 px.
        num_iterations: ReStyle's passes (default 5; 1 is one pass from the average image); pSp / e4e take one.
        render: also render the final reconstruction at G's resolution.
        callback: `callback(iteration, total, ws)` after every ReStyle pass; may raise to cancel.
    Returns:
        `EncodeResult`; its latent is tied to `G`.
    """
    from .inversion import prepare_target  # the shared checks of target images (range, NaN, channels)

    t0 = time.perf_counter()
    notes = check_pairing(encoder, G)
    info = encoder.info
    if num_iterations is None or num_iterations == 0:
        num_iterations = DEFAULT_RESTYLE_ITERATIONS if info.iterative else 1
    if not 1 <= int(num_iterations) <= MAX_ITERATIONS:
        raise ValueError(f"num_iterations must be 1..{MAX_ITERATIONS}, got {num_iterations}")
    if not info.iterative and num_iterations != 1:
        notes.append(f"{info.kind} encodes in one pass: num_iterations {num_iterations} ignored")
        num_iterations = 1
    device = G.w_avg.device
    p = next(encoder.parameters())
    if p.device != device:
        raise ValueError(f"the encoder is on {p.device} but the generator on {device}: load both on one device")
    # Inference mode (no autograd records, no version counters) for the passes; the results are cloned outside it
    # below, so callers (PTI / II2S started from the latent) get ordinary tensors.
    with torch.inference_mode():
        target, target_notes = prepare_target(images.detach(), images.shape[-1] if images.shape[-1] ==
                                              images.shape[-2] else encoder.input_resolution)
        notes += [n for n in target_notes if "resized" not in n]
        x = encoder_input(target.to(device), encoder.input_resolution).to(p.dtype)
        n = x.shape[0]
        latent_avg = encoder.latent_avg
        if latent_avg is None:
            latent_avg = G.w_avg.detach().float().reshape(1, -1).repeat(G.num_ws, 1)
        latent_avg = latent_avg.to(device=device, dtype=p.dtype)
        history: list[torch.Tensor] = []
        if not info.iterative:
            ws = encoder.net(x)
            if info.start_from_latent_avg:
                ws = ws + latent_avg[None]
            history.append(ws)
        else:
            y_hat = _cached_average_image(encoder, G, latent_avg).to(p.dtype).expand(n, -1, -1, -1)
            ws = latent_avg[None].expand(n, -1, -1)
            for t in range(int(num_iterations)):
                ws = encoder.net(torch.cat([x, y_hat], dim=1)) + ws
                history.append(ws)
                if t + 1 < num_iterations:
                    y_hat = _pool(G.synthesis(ws.float(), noise_mode="const").float(),
                                  encoder.input_resolution).to(p.dtype)
                if callback is not None:
                    callback(t + 1, int(num_iterations), ws)
        ws = ws.float()
        image = G.synthesis(ws, noise_mode="const").float().cpu() if render else torch.empty(0)
    latent = Latent(ws.detach().cpu().clone(), "w+", generator_ref(G))
    return EncodeResult(latent=latent, image=image.clone(),
                        ws_per_iteration=[h.float().cpu().clone() for h in history],
                        iterations=int(num_iterations), seconds=time.perf_counter() - t0, notes=notes)
