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

# Bounds on what alignment accepts; each refusal says which one and why.
MIN_PHOTO_SIDE = 16            # pixels: a smaller photo cannot hold two eyes and a mouth (FFHQ faces are >= 64 px)
MAX_ALIGNED_SIZE = 16384       # output_size / transform_size: larger squares only cost memory (ComfyUI's own cap)
MAX_COORDINATE = 1e6           # |x|, |y| of a landmark in pixels: far beyond any photo, far below float overflow
# A keypoint (eye centre, mouth corner) may lie outside the photo by this fraction of the face square: a face cut
# by the photo's edge has its eye or mouth a little outside (FFHQ then pads with reflection); further out, the
# landmarks belong to another photo or another scale.
KEYPOINT_MARGIN = 0.25
# The photo must cover at least this fraction of the face square; less, and the aligned image is mostly the
# blurred reflection padding (a face many times the photo, or a face beside it).
MIN_PHOTO_COVERAGE = 1 / 16


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
LANDMARK_COUNTS = tuple(_LAYOUTS)  # the point counts `face_keypoints` understands
LANDMARK_COUNTS_TEXT = ("68 [x, y] points in pixels (iBUG/dlib/face_alignment), or 70 (OpenPose face), 98 (WFLW) or "
                        "5 (eyes, nose, mouth corners)")


def face_keypoints(landmarks) -> FaceKeypoints:
    """Reduce landmarks ([N, 2] or [N, 3] with a confidence column; N = 68, 70, 98 or 5) to FFHQ's four points.

    Eye centres are the mean of each eye's contour points (as FFHQ did), or the eye point itself for 5-point
    layouts; the mouth corners are the outer-lip corners. Raises AlignmentError naming the offending point for
    wrong shapes, NaN / infinite / absurd (> 1e6 px) coordinates, and eyes at one point.
    """
    try:
        pts = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise AlignmentError(f"landmarks must be numbers, {LANDMARK_COUNTS_TEXT}; got {short_repr(landmarks)} "
                             f"({e})") from e
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise AlignmentError(f"landmarks must be a list of (x, y) points, got an array of shape {tuple(pts.shape)}: "
                             f"expected {LANDMARK_COUNTS_TEXT}")
    pts = pts[:, :2]
    if pts.shape[0] not in _LAYOUTS:
        raise AlignmentError(
            f"{pts.shape[0]} landmarks: expected 68 (iBUG/dlib/face_alignment), 70 (OpenPose face), 98 (WFLW) or 5 "
            f"(eyes, nose, mouth corners)")
    bad = ~np.isfinite(pts).all(1)
    if bad.any():
        i = int(np.argmax(bad))
        raise AlignmentError(f"landmarks contain NaN or infinite coordinates (a face part was not detected?): point "
                             f"{i + 1} of {pts.shape[0]} is {_point(pts[i])}; give landmarks with every point found")
    far = (np.abs(pts) > MAX_COORDINATE).any(1)
    if far.any():
        i = int(np.argmax(far))
        raise AlignmentError(f"landmark {i + 1} of {pts.shape[0]} is at {_point(pts[i])}: landmarks are pixel "
                             f"coordinates of the photo, at most {MAX_COORDINATE:,.0f} in size; these are not")
    eye_l, eye_r, mouth_l, mouth_r = _LAYOUTS[pts.shape[0]]
    kp = FaceKeypoints(tuple(pts[list(eye_l)].mean(0)), tuple(pts[list(eye_r)].mean(0)),
                       tuple(pts[mouth_l]), tuple(pts[mouth_r]))
    if np.hypot(*np.subtract(kp.eye_right, kp.eye_left)) < 1e-6:
        raise AlignmentError(f"both eyes are at the same point {_point(kp.eye_left)}: the landmarks do not describe "
                             f"a face (all points equal?); give {LANDMARK_COUNTS_TEXT}")
    return kp


def _point(p) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in p) + ")"


def short_repr(obj, limit: int = 60) -> str:
    """repr(obj) cut to `limit` characters (messages quote user input, never all of it)."""
    text = repr(obj)
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
        if np.hypot(*x) <= 1e-9 * max(np.hypot(*eye_to_eye), np.hypot(*eye_to_mouth)):
            # The eye line's normal cancels the eye-to-mouth direction exactly: no orientation to level.
            raise AlignmentError(
                f"the face has no orientation: the mouth {_point(mouth_avg)} sits exactly above the eyes "
                f"{_point(eye_left)}, {_point(eye_right)} at their distance, which no face does; check that the "
                f"points are [x, y] (not [y, x]) and in the layout's order")
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

    def __post_init__(self):
        # A transform arrives through a node input (or from_dict): refuse one that cannot describe a photo here,
        # rather than fail inside the paste with a raw numeric error.
        what = "the alignment transform (connect Align Face's transform output)"
        try:
            quad = np.asarray(self.quad, dtype=np.float64)
            size = [int(v) for v in self.source_size]
            out = int(self.output_size)
        except (TypeError, ValueError, OverflowError) as e:
            raise AlignmentError(f"{what} is malformed ({e}): expected 4 (x, y) corners, a (height, width) source "
                                 f"size and an output size") from e
        if quad.shape != (4, 2):
            raise AlignmentError(f"{what} has corners of shape {tuple(quad.shape)}: expected 4 (x, y) corners")
        if not np.isfinite(quad).all() or np.abs(quad).max() > MAX_COORDINATE:
            raise AlignmentError(f"{what} has corners {short_repr(self.quad, 120)}: expected finite pixel positions "
                                 f"within {MAX_COORDINATE:,.0f}")
        if len(size) != 2 or min(size) < 1 or max(size) > MAX_COORDINATE:
            raise AlignmentError(f"{what} records a source photo of size {short_repr(self.source_size)}: expected "
                                 f"(height, width) of at least 1 pixel")
        if not 1 <= out <= MAX_ALIGNED_SIZE:
            raise AlignmentError(f"{what} records output_size {self.output_size}: expected 1 to {MAX_ALIGNED_SIZE}")

    def to_dict(self) -> dict:
        return {"quad": [list(p) for p in self.quad], "source_size": list(self.source_size),
                "output_size": self.output_size}

    @classmethod
    def from_dict(cls, d: dict) -> "AlignTransform":
        try:
            quad = tuple((float(x), float(y)) for x, y in d["quad"])
            h, w = (int(v) for v in d["source_size"])
            out = int(d["output_size"])
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise AlignmentError(f"not an alignment transform ({e}): expected quad, source_size, output_size") from e
        if len(quad) != 4:
            raise AlignmentError(f"an alignment transform has 4 corners, got {len(quad)}")
        return cls(quad, (h, w), out)


def to_uint8_rgb(image, what: str = "the image") -> np.ndarray:
    """[H, W, C] float in [0, 1] (tensor or array) or uint8 -> uint8 RGB array (gray repeated, alpha dropped).

    `what` names the image in error messages (e.g. "image 2 of 4")."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise AlignmentError(f"expected one image [H, W, C], got shape {arr.shape} for {what}")
    if arr.shape[2] not in (1, 3, 4):
        raise AlignmentError(f"{what} has {arr.shape[2]} channels (shape {arr.shape}): expected 1 (gray), 3 (RGB) "
                             f"or 4 (RGBA) channels last, [H, W, C]")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise AlignmentError(f"{what} has pixels of type {arr.dtype}: expected float in [0, 1] or uint8")
        if not np.isfinite(arr).all():
            raise AlignmentError(f"the image contains NaN or infinite values ({what}): fix the node that made it")
        arr = arr * np.float32(255.0)  # one float copy, rounded and clipped in place (photos can be large)
        np.rint(arr, out=arr)
        arr = np.clip(arr, 0, 255, out=arr).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
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


def check_photo_size(height: int, width: int, what: str = "the photo") -> None:
    """Refuse a photo too small to hold a face (under MIN_PHOTO_SIDE pixels on a side)."""
    if min(height, width) < MIN_PHOTO_SIDE:
        raise AlignmentError(f"{what} is {width}x{height} pixels: too small to hold a face; Align Face needs at "
                             f"least {MIN_PHOTO_SIDE}x{MIN_PHOTO_SIDE} (faces align well from ~64 pixels wide)")


_KEYPOINT_NAMES = ("left eye centre", "right eye centre", "left mouth corner", "right mouth corner")


def check_face_in_photo(keypoints: FaceKeypoints, quad: np.ndarray, qsize: float, height: int, width: int,
                        what: str = "the photo") -> None:
    """Refuse landmarks that cannot be this photo's face.

    A keypoint may lie outside the photo by KEYPOINT_MARGIN of the face square `qsize` (a face cut by the edge;
    FFHQ pads it with reflection); the photo must cover MIN_PHOTO_COVERAGE of the square `quad` ([4, 2], as
    `ffhq_quad` returns), else the aligned image would be made of padding.
    """
    margin = KEYPOINT_MARGIN * qsize
    for name, (x, y) in zip(_KEYPOINT_NAMES, (keypoints.eye_left, keypoints.eye_right, keypoints.mouth_left,
                                              keypoints.mouth_right)):
        out = math.hypot(max(-x, x - width, 0.0), max(-y, y - height, 0.0))
        if out > margin:
            raise AlignmentError(
                f"the {name} is at {_point((x, y))}, {out:.0f} pixels outside {what} ({width}x{height}); a face at "
                f"the edge may reach {margin:.0f} pixels out (a quarter of its {qsize:.0f}-pixel square). The "
                f"landmarks belong to another photo or another scale: detect them on this image, or scale them by "
                f"its size")
    # The share of the face square inside the photo, on a 64 x 64 grid of the square's cell centres.
    t = (np.arange(64) + 0.5) / 64
    u, v = np.meshgrid(t, t, indexing="xy")
    pts = quad[0] + u[..., None] * (quad[3] - quad[0]) + v[..., None] * (quad[1] - quad[0])
    coverage = float(((pts >= 0) & (pts <= [width, height])).all(-1).mean())
    if coverage < MIN_PHOTO_COVERAGE:
        raise AlignmentError(
            f"the face square is {qsize:.0f} pixels wide ({qsize / max(height, width):.1f}x {what}, {width}x{height}) "
            f"and only {coverage:.1%} of it lies inside the photo (at least {MIN_PHOTO_COVERAGE:.1%} needed): the "
            f"aligned image would be padding. Give landmarks in this photo's pixels (detected on a larger copy?)")


def align_face(image, keypoints: FaceKeypoints, output_size: int = FFHQ_OUTPUT_SIZE,
               transform_size: int = FFHQ_TRANSFORM_SIZE, enable_padding: bool = True,
               rotate_level: bool = True, what: str = "the photo") -> tuple[torch.Tensor, AlignTransform]:
    """Crop, rotate and scale one photo ([H, W, C] in [0, 1], or uint8) as FFHQ was made.

    Returns the aligned image [output_size, output_size, 3] float32 in [0, 1] and its `AlignTransform`.
    `transform_size` is FFHQ's intermediate warp resolution (4096); it is raised to `output_size` if smaller.
    `what` names the photo in error messages. Before any pixel work the face is checked against the photo
    (`check_face_in_photo`): a photo under 16 px, keypoints far outside it, or a face square that the photo
    barely covers raise AlignmentError.
    """
    from PIL import Image  # PIL only when aligning: `import core` stays torch/numpy only

    for name, value in (("output_size", output_size), ("transform_size", transform_size)):
        if not 8 <= int(value) <= MAX_ALIGNED_SIZE:
            raise AlignmentError(f"{name} must be at least 8 pixels, got {value}" if int(value) < 8 else
                                 f"{name} must be at most {MAX_ALIGNED_SIZE} pixels, got {value}")
    output_size = int(output_size)
    transform_size = max(int(transform_size), output_size)
    arr = to_uint8_rgb(image, what)
    src_h, src_w = arr.shape[:2]
    check_photo_size(src_h, src_w, what)
    quad, qsize = ffhq_quad(keypoints, rotate_level)
    if qsize < 4:
        raise AlignmentError(f"the face is only {qsize:.1f} pixels wide: landmarks in the wrong units (normalised "
                             f"0..1 instead of pixels?)")
    check_face_in_photo(keypoints, quad, qsize, src_h, src_w, what)
    img = Image.fromarray(arr, "RGB")
    scale = (1.0, 1.0)  # source pixels per pixel of the working image (after the shrink)
    offset = np.zeros(2)  # working-image position of the (shrunk) source image's origin

    # Shrink.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        # At least one pixel: a narrow photo shrunk a lot would round to zero (FFHQ's photos never did).
        rsize = (max(int(np.rint(float(img.size[0]) / shrink)), 1), max(int(np.rint(float(img.size[1]) / shrink)), 1))
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
    # Singular when the corners are collinear or coincide; relative to the sides, so scale does not matter.
    sides = float(torch.linalg.norm(ex)) * float(torch.linalg.norm(ey))
    if sides < 1e-12 or abs(float(torch.linalg.det(m))) < 1e-6 * sides:
        raise AlignmentError(f"degenerate alignment transform (its corners are collinear or coincide: "
                             f"{short_repr(transform.quad, 120)}); connect the transform output of Align Face")
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


# --- masks through the alignment ----------------------------------------------------------------------------------
# A mask follows the photo's pixels through the same quad as `align_face` (and back as `unalign_face`), bilinearly
# with soft values kept, antialiased (a triangle prefilter) where the warp shrinks. Outside the photo a mask is 0:
# FFHQ's reflect/blur padding invents image pixels, but no mask content (a padded region is not "hair" or "the
# user's selection"); `photo_coverage` is exactly that: 1 where an aligned pixel came from the photo, 0 in the
# padding, 0.5 on the photo's edge.

ASPECT_TOLERANCE = 0.02  # a mask or photo may be resized since alignment; a different aspect ratio is another image


def mask_batch(mask, what: str = "the mask") -> torch.Tensor:
    """A MASK as a float [N, H, W] batch (one [H, W] mask is a batch of one); refuses other shapes and NaN/inf."""
    if not isinstance(mask, torch.Tensor):
        raise AlignmentError(f"{what} must be a MASK tensor [B, H, W], got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or min(mask.shape) < 1:
        hint = (" (an image-shaped tensor: convert it with a core node such as Convert Image to Mask)"
                if mask.ndim == 4 else "")
        raise AlignmentError(f"{what} has shape {tuple(mask.shape)}: expected a MASK [B, H, W] (or one [H, W]) with "
                             f"pixels{hint}")
    if mask.dtype == torch.bool or not mask.is_floating_point():
        mask = mask.float()
    if not bool(torch.isfinite(mask).all()):
        raise AlignmentError(f"{what} contains NaN or infinite values: fix the node that made it")
    return mask


def _scaled_quad(transform: AlignTransform, height: int, width: int, what: str) -> np.ndarray:
    """The transform's quad in pixels of a [height, width] image of the same photo (resized since alignment is
    fine; another aspect ratio is refused)."""
    sh, sw = transform.source_size
    if abs((width / sw) / (height / sh) - 1) > ASPECT_TOLERANCE:
        raise AlignmentError(f"{what} is {width}x{height} (width x height) but the face was aligned from a {sw}x{sh} "
                             f"photo (another aspect ratio): give a mask of the photo's size ({sw}x{sh}; e.g. "
                             f"SolidMask with width {sw}, height {sh}, or the mask of the same Load Image), or "
                             f"scaled to the same aspect ratio")
    return np.array(transform.quad, dtype=np.float64) * np.array([width / sw, height / sh])


def _shrink(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Antialiased resize of [N, C, H, W] by 1 / factor when factor > 1 (else unchanged)."""
    if factor <= 1:
        return x
    size = (max(int(round(x.shape[-2] / factor)), 1), max(int(round(x.shape[-1] / factor)), 1))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def align_mask(mask, transform: AlignTransform, size: Optional[int] = None, *,
               what: str = "the mask") -> torch.Tensor:
    """Warp photo-frame masks into the aligned frame of `transform`, as `align_face` warps the photo.

    mask: [N, H, W] (or [H, W]) float, soft values kept, the photo's size or the same aspect ratio (it scales).
    size: the aligned side (default: transform.output_size). Returns [N, size, size] float32 on the mask's
    device: aligned pixel (i, j) takes the mask at quad[0] + u (quad[3] - quad[0]) + v (quad[1] - quad[0]),
    u = (j + 0.5) / size, v = (i + 0.5) / size (bilinear, prefiltered where the face is shrunk); 0 outside the
    photo (where the image has FFHQ's padding). Raises AlignmentError for another aspect ratio or NaN values.
    """
    m = mask_batch(mask, what)
    n, height, width = m.shape
    size = transform.output_size if size is None else int(size)
    if not 1 <= size <= MAX_ALIGNED_SIZE:
        raise AlignmentError(f"the aligned mask size must be 1 to {MAX_ALIGNED_SIZE}, got {size}")
    q = torch.from_numpy(_scaled_quad(transform, height, width, what))
    origin, ex, ey = q[0], q[3] - q[0], q[1] - q[0]
    side = max(float(torch.linalg.norm(ex)), float(torch.linalg.norm(ey)))  # mask pixels along an aligned side
    x = _shrink(m[:, None].float(), side / size)
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    v, u = torch.meshgrid(t, t, indexing="ij")
    p = origin + u[..., None] * ex + v[..., None] * ey  # [S, S, 2] (x, y) in mask pixels (continuous)
    grid = (p / torch.tensor([width, height], dtype=torch.float64) * 2 - 1).to(x.device, torch.float32)
    out = F.grid_sample(x, grid[None].expand(n, -1, -1, -1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    # The prefilter's rounding may overshoot by an ulp: keep the mask's own range (a 0/1 mask stays in [0, 1]).
    return out[:, 0].clamp(min(float(m.min()), 0.0), max(float(m.max()), 0.0))


def photo_coverage(transform: AlignTransform, size: Optional[int] = None, device=None) -> torch.Tensor:
    """[size, size] float32: 1 where the aligned image shows the photo, 0 where it shows FFHQ's padding (or black
    without padding), soft over the pixel on the photo's edge: `align_mask` of a mask of ones (an inpainting mask
    for the padded area is 1 - this)."""
    return align_mask(torch.ones(transform.source_size, device=device), transform, size, what="the photo")[0]


def unalign_mask(mask, transform: AlignTransform, height: Optional[int] = None, width: Optional[int] = None, *,
                 what: str = "the aligned mask") -> torch.Tensor:
    """Warp aligned-frame masks ([N, h, w] or [h, w], any square resolution) back into the photo frame, the
    inverse of `align_mask` (the map `unalign_face` pastes through). height, width: the photo's size (default
    transform.source_size; a resized photo of the same aspect ratio is fine). Returns [N, height, width] float32:
    0 outside the face square; antialiased where the face is smaller in the photo than the mask."""
    m = mask_batch(mask, what)
    sh, sw = transform.source_size
    height, width = (sh if height is None else int(height)), (sw if width is None else int(width))
    q = _scaled_quad(transform, height, width, "the photo")
    side = max(np.hypot(*(q[3] - q[0])), np.hypot(*(q[1] - q[0])))
    x = _shrink(m[:, None].float(), max(m.shape[-2:]) / max(side, 1.0))
    grid = aligned_to_source_grid(transform, height, width, device=x.device)[None]
    out = F.grid_sample(x, grid.expand(m.shape[0], -1, -1, -1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[:, 0].clamp(min(float(m.min()), 0.0), max(float(m.max()), 0.0))


def blend_mask(transform: AlignTransform, height: int, width: int, feather: float = 0.1,
               mask: Optional[torch.Tensor] = None, size: int = FFHQ_OUTPUT_SIZE, device=None) -> torch.Tensor:
    """The weights `unalign_face` composites with, in the photo frame: [height, width] float32 in [0, 1],
    result = blend * pasted face + (1 - blend) * photo. Built in aligned space as `feather_mask(size, feather)`
    (size: the edited image's side), or `mask` ([h, w], clamped to [0, 1]) when given, and warped into the photo
    bilinearly (0 outside the face square). `1 - blend` is unchanged photo; the ramp is where seams can show."""
    if not 0 <= feather <= 0.5:
        raise AlignmentError(f"feather must be in [0, 0.5] (a fraction of the face square), got {feather}")
    if mask is None:
        m = feather_mask(int(size), feather, device=device)
    else:
        if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or min(mask.shape) < 1:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise AlignmentError(f"the paste mask must be one [H, W] mask, got {shape}")
        if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
            raise AlignmentError("the paste mask contains NaN or infinite values: fix the node that made it")
        m = mask.to(device, torch.float32).clamp(0, 1)
    grid = aligned_to_source_grid(transform, height, width, device=m.device)[None]
    return F.grid_sample(m[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]


def unalign_face(original: torch.Tensor, edited: torch.Tensor, transform: AlignTransform,
                 feather: float = 0.1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Paste an edited aligned face back into the photo it was aligned from.

    original [H, W, C] and edited [h, w, C'] float in [0, 1] (any aligned resolution: the generator's output may
    be smaller than the alignment); `mask` [h', w'] in aligned space (1 = use the edit) replaces the square
    feathered by `feather` (a fraction of the side). Returns [H, W, C] float32; `unalign_face_and_blend` also
    returns the blend mask.
    """
    return unalign_face_and_blend(original, edited, transform, feather, mask)[0]


def unalign_face_and_blend(original: torch.Tensor, edited: torch.Tensor, transform: AlignTransform,
                           feather: float = 0.1, mask: Optional[torch.Tensor] = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """`unalign_face`, returning (image [H, W, C], blend [H, W]): the composite and the `blend_mask` it used
    (image = blend * pasted face + (1 - blend) * original), e.g. to inpaint the seam."""
    if original.ndim != 3 or edited.ndim != 3:
        raise AlignmentError(f"expected single images [H, W, C], got {tuple(original.shape)} and "
                             f"{tuple(edited.shape)}")
    if not 0 <= feather <= 0.5:
        raise AlignmentError(f"feather must be in [0, 0.5] (a fraction of the face square), got {feather}")
    if not isinstance(transform, AlignTransform):
        raise AlignmentError(f"the transform must be Align Face's transform output, got {type(transform).__name__}")
    for name, img in (("original photo", original), ("edited image", edited)):
        if min(img.shape) < 1:
            raise AlignmentError(f"the {name} is empty (shape {tuple(img.shape)}): expected [H, W, C] with pixels")
        if img.is_floating_point() and not bool(torch.isfinite(img).all()):
            raise AlignmentError(f"the {name} contains NaN or infinite values: fix the node that made it")
    height, width, channels = original.shape
    sh, sw = transform.source_size
    # A photo resized since alignment is fine (the quad scales with it); another shape is another photo.
    if abs((width / sw) / (height / sh) - 1) > ASPECT_TOLERANCE:
        raise AlignmentError(f"the original photo is {width}x{height} but the transform was made on a {sw}x{sh} "
                             f"photo (another aspect ratio): connect the photo that was given to Align Face")
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
    blend = blend_mask(transform, height, width, feather, mask, max(edited.shape[:2]), original.device)
    out = original.permute(2, 0, 1) * (1 - blend) + pasted * blend
    return out.permute(1, 2, 0).contiguous(), blend


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
