"""FFHQ-style face alignment and its inverse (pasting an edited face back into the photo).

`align_face` reproduces the arithmetic with which NVIDIA made the FFHQ dataset (ffhq-dataset's
`recreate_aligned_images`): an oriented square ("quad") from the eye centres and mouth corners, then shrink,
crop, reflect-pad with blur and median fade, a bilinear quad warp to `transform_size` and an antialiased resize
to `output_size`. Generators trained on FFHQ (and PTI, e4e, II2S, Barbershop) expect exactly this framing;
photos framed differently invert badly.

`unalign_face` maps an edited aligned image back through the recorded transform and blends it into the
original photo with a feathered mask (or a user mask given in aligned space).

Landmarks are plain arrays of (x, y) pixel coordinates; `face_keypoints` reduces the common layouts (68-point
iBUG/dlib/face_alignment, 70-point OpenPose face, 98-point WFLW, 5-point RetinaFace/InsightFace) to the four
points the FFHQ recipe uses. Detectors live in `core.landmarks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from .errors import AlignmentError

FFHQ_OUTPUT_SIZE = 1024
FFHQ_TRANSFORM_SIZE = 4096


@dataclass(frozen=True)
class FaceKeypoints:
    """The four points of the FFHQ recipe, in pixels of the source image. "Left" is the image's left."""
    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    mouth_left: tuple[float, float]
    mouth_right: tuple[float, float]


# Index sets of the supported landmark layouts: (left-eye points, right-eye points, mouth-left, mouth-right).
_LAYOUTS = {
    68: (range(36, 42), range(42, 48), 48, 54),   # iBUG 300-W (dlib, face_alignment): FFHQ's own layout
    70: (range(36, 42), range(42, 48), 48, 54),   # OpenPose / DWPose face: iBUG 68 plus two pupils
    98: (range(60, 68), range(68, 76), 76, 82),   # WFLW
    5: ([0], [1], 3, 4),                          # RetinaFace / InsightFace / MTCNN: eyes, nose, mouth corners
}


def face_keypoints(landmarks) -> FaceKeypoints:
    """Reduce landmarks ([N, 2] or [N, 3] with a confidence column; N = 68, 70, 98 or 5) to FFHQ's four points.

    Eye centres are the mean of each eye's contour points (as FFHQ did), or the eye point itself for 5-point
    layouts; the mouth corners are the outer-lip corners.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise AlignmentError(f"landmarks must be a list of (x, y) points, got an array of shape {tuple(pts.shape)}")
    pts = pts[:, :2]
    if pts.shape[0] not in _LAYOUTS:
        raise AlignmentError(
            f"{pts.shape[0]} landmarks: expected 68 (iBUG/dlib/face_alignment), 70 (OpenPose face), 98 (WFLW) or 5 "
            f"(eyes, nose, mouth corners)")
    if not np.isfinite(pts).all():
        raise AlignmentError("landmarks contain NaN or infinite coordinates (a face part was not detected?)")
    eye_l, eye_r, mouth_l, mouth_r = _LAYOUTS[pts.shape[0]]
    kp = FaceKeypoints(tuple(pts[list(eye_l)].mean(0)), tuple(pts[list(eye_r)].mean(0)),
                       tuple(pts[mouth_l]), tuple(pts[mouth_r]))
    if np.hypot(*np.subtract(kp.eye_right, kp.eye_left)) < 1e-6:
        raise AlignmentError("both eyes are at the same point: the landmarks do not describe a face")
    return kp


def ffhq_quad(keypoints: FaceKeypoints, rotate_level: bool = True) -> tuple[np.ndarray, float]:
    """FFHQ's crop square: returns (quad [4, 2] float64, qsize), corners upper-left, lower-left, lower-right,
    upper-right of the aligned image, in source pixel coordinates; qsize is the square's side length."""
    eye_left, eye_right = np.array(keypoints.eye_left), np.array(keypoints.eye_right)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (np.array(keypoints.mouth_left) + np.array(keypoints.mouth_right)) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    if rotate_level:
        x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
        x /= np.hypot(*x)
    else:
        x = np.array([1.0, 0.0])
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


@dataclass(frozen=True)
class AlignTransform:
    """Where an aligned image came from: `quad` holds the source-image positions (continuous coordinates, pixel
    (i, j) covers [j, j+1) x [i, i+1)) of the aligned image's corners upper-left, lower-left, lower-right,
    upper-right; `source_size` is (height, width) of the photo; `output_size` the aligned side length."""
    quad: tuple[tuple[float, float], ...]
    source_size: tuple[int, int]
    output_size: int

    def to_dict(self) -> dict:
        return {"quad": [list(p) for p in self.quad], "source_size": list(self.source_size),
                "output_size": self.output_size}

    @classmethod
    def from_dict(cls, d: dict) -> "AlignTransform":
        try:
            quad = tuple((float(x), float(y)) for x, y in d["quad"])
            h, w = (int(v) for v in d["source_size"])
            out = int(d["output_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise AlignmentError(f"not an alignment transform ({e}): expected quad, source_size, output_size") from e
        if len(quad) != 4:
            raise AlignmentError(f"an alignment transform has 4 corners, got {len(quad)}")
        return cls(quad, (h, w), out)


def to_uint8_rgb(image) -> np.ndarray:
    """[H, W, C] float in [0, 1] (tensor or array) or uint8 -> uint8 RGB array (gray repeated, alpha dropped)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise AlignmentError(f"expected one image [H, W, C], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.isfinite(arr).all():
            raise AlignmentError("the image contains NaN or infinite values")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] != 3:
        raise AlignmentError(f"expected 1, 3 or 4 channels, got {arr.shape[2]}")
    return np.ascontiguousarray(arr)


def _gaussian_blur_hw(img: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0]) (truncate 4, mode 'reflect'), in torch."""
    radius = int(4.0 * sigma + 0.5)
    if radius < 1:
        return img.copy()
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(torch.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[:, None]  # [C, 1, H, W]
    for dim in (2, 3):
        size = x.shape[dim]
        # scipy 'reflect' is half-sample symmetric (d c b a | a b c d | d c b a); repeat for radii > size.
        idx = torch.arange(-radius, size + radius)
        period = 2 * size
        idx = torch.remainder(idx, period)
        idx = torch.where(idx >= size, period - 1 - idx, idx)
        x = x.index_select(dim, idx)
        kernel = k.view(1, 1, -1, 1) if dim == 2 else k.view(1, 1, 1, -1)
        x = F.conv2d(x, kernel)
    return x[:, 0].permute(1, 2, 0).contiguous().numpy()


def align_face(image, keypoints: FaceKeypoints, output_size: int = FFHQ_OUTPUT_SIZE,
               transform_size: int = FFHQ_TRANSFORM_SIZE, enable_padding: bool = True,
               rotate_level: bool = True) -> tuple[torch.Tensor, AlignTransform]:
    """Crop, rotate and scale one photo ([H, W, C] in [0, 1], or uint8) as FFHQ was made.

    Returns the aligned image [output_size, output_size, 3] float32 in [0, 1] and its `AlignTransform`.
    `transform_size` is FFHQ's intermediate warp resolution (4096); it is raised to `output_size` if smaller.
    """
    from PIL import Image  # PIL only when aligning: `import core` stays torch/numpy only

    if int(output_size) < 8:
        raise AlignmentError(f"output_size must be at least 8 pixels, got {output_size}")
    output_size = int(output_size)
    transform_size = max(int(transform_size), output_size)
    arr = to_uint8_rgb(image)
    src_h, src_w = arr.shape[:2]
    img = Image.fromarray(arr, "RGB")
    quad, qsize = ffhq_quad(keypoints, rotate_level)
    if qsize < 4:
        raise AlignmentError(f"the face is only {qsize:.1f} pixels wide: landmarks in the wrong units (normalised "
                             f"0..1 instead of pixels?)")
    scale = (1.0, 1.0)  # source pixels per pixel of the working image (after the shrink)
    offset = np.zeros(2)  # working-image position of the (shrunk) source image's origin

    # Shrink.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.LANCZOS)
        scale = (src_w / rsize[0], src_h / rsize[1])
        quad /= shrink
        qsize /= shrink

    # Crop.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
        offset -= crop[0:2]

    # Pad.
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        work = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = work.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        blur = qsize * 0.02
        work += (_gaussian_blur_hw(work, blur) - work) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        work += (np.median(work, axis=(0, 1)) - work) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(work), 0, 255)), "RGB")
        quad += pad[:2]
        offset += pad[:2]

    # Transform.
    img = img.transform((transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()),
                        Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)

    # The corners in the source photo: working continuous coordinate quad + 0.5 -> source continuous coordinate.
    src_quad = (quad + 0.5 - offset) * np.array(scale)
    transform = AlignTransform(tuple((float(x), float(y)) for x, y in src_quad), (src_h, src_w), output_size)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0), transform


def aligned_to_source_grid(transform: AlignTransform, height: int, width: int,
                           dtype=torch.float32, device=None) -> torch.Tensor:
    """Inverse of the quad map: for each pixel centre of a [height, width] source photo, its position in the
    aligned image as (u, v) in [-1, 1] (grid_sample's align_corners=False convention). Returns [H, W, 2]."""
    q = torch.tensor(transform.quad, dtype=torch.float64)
    sh, sw = transform.source_size
    # The photo being pasted into may have been resized since alignment: scale the quad with it.
    q = q * torch.tensor([width / sw, height / sh], dtype=torch.float64)
    origin, ex, ey = q[0], q[3] - q[0], q[1] - q[0]  # aligned u axis -> ex, v axis -> ey
    m = torch.stack([ex, ey], dim=1)  # source = origin + m @ (u, v)
    if abs(float(torch.linalg.det(m))) < 1e-9:
        raise AlignmentError("degenerate alignment transform (its corners are collinear)")
    minv = torch.linalg.inv(m)
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    p = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1) - origin  # [H, W, 2] (x, y)
    uv = p @ minv.T
    return (uv * 2 - 1).to(device=device, dtype=dtype)


def feather_mask(size: int, feather: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """[size, size] mask in aligned space: 1 inside, a smooth (smoothstep) ramp to 0 over the outer `feather`
    fraction of the side at each edge."""
    t = (torch.arange(size, dtype=torch.float64, device=device) + 0.5) / size
    edge = torch.minimum(t, 1 - t)
    if feather <= 0:
        ramp = torch.ones_like(edge)
    else:
        r = torch.clamp(edge / feather, 0, 1)
        ramp = r * r * (3 - 2 * r)
    return (ramp[:, None] * ramp[None, :]).to(dtype)


def unalign_face(original: torch.Tensor, edited: torch.Tensor, transform: AlignTransform,
                 feather: float = 0.1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Paste an edited aligned face back into the photo it was aligned from.

    original [H, W, C] and edited [h, w, C'] float in [0, 1] (any aligned resolution: the generator's output may
    be smaller than the alignment); `mask` [h', w'] in aligned space (1 = use the edit) replaces the square
    feathered by `feather` (a fraction of the side). Returns [H, W, C] float32.
    """
    if original.ndim != 3 or edited.ndim != 3:
        raise AlignmentError(f"expected single images [H, W, C], got {tuple(original.shape)} and "
                             f"{tuple(edited.shape)}")
    if not 0 <= feather <= 0.5:
        raise AlignmentError(f"feather must be in [0, 0.5] (a fraction of the face square), got {feather}")
    height, width, channels = original.shape
    original = original.float()
    edited = edited.to(original.device, torch.float32)
    if edited.shape[2] != channels:
        edited = _match_channels(edited, channels)
    # Avoid aliasing when the face covers fewer photo pixels than the edit has: pre-shrink with antialiasing.
    q = np.array(transform.quad) * np.array([width / transform.source_size[1], height / transform.source_size[0]])
    side = max(np.hypot(*(q[3] - q[0])), np.hypot(*(q[1] - q[0])))
    target = max(int(math.ceil(side)), 1)
    ed = edited.permute(2, 0, 1)[None]
    if target < max(ed.shape[-2:]):
        ed = F.interpolate(ed, size=(target, target), mode="bilinear", antialias=True, align_corners=False)
    grid = aligned_to_source_grid(transform, height, width, device=original.device)[None]
    pasted = F.grid_sample(ed, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    if mask is None:
        m = feather_mask(max(edited.shape[:2]), feather, device=original.device)
    else:
        if mask.ndim != 2:
            raise AlignmentError(f"the paste mask must be one [H, W] mask, got {tuple(mask.shape)}")
        m = mask.to(original.device, torch.float32).clamp(0, 1)
    inside = F.grid_sample(m[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    out = original.permute(2, 0, 1) * (1 - inside) + pasted * inside
    return out.permute(1, 2, 0).contiguous()


def _match_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    if img.shape[2] == 1:
        return img.expand(-1, -1, channels) if channels != 4 else torch.cat([img.expand(-1, -1, 3),
                                                                                torch.ones_like(img)], 2)
    if channels == 4 and img.shape[2] == 3:
        return torch.cat([img, torch.ones_like(img[:, :, :1])], 2)
    if channels == 3 and img.shape[2] == 4:
        return img[:, :, :3]
    if channels == 1:
        return img[:, :, :3].mean(2, keepdim=True)
    raise AlignmentError(f"cannot paste a {img.shape[2]}-channel image into a {channels}-channel photo")
