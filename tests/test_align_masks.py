"""Masks through the alignment: a photo-frame MASK warped into Align Face's aligned frame and back lands where it
started; the aligned image's padding is 0 in the mask; Unalign Face's blend mask is the weight it composited with;
the nodes' mask input/outputs, batch rules and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from core import align as A
from test_align import face_landmarks, openpose_face, pack_modules, synthetic_photo

H, W = 180, 160


def pixel_centres(height: int, width: int):
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return xx.double(), yy.double()


def disk(cx, cy, r, height=H, width=W):
    """A hard disk mask and each pixel's distance to its boundary circle."""
    xx, yy = pixel_centres(height, width)
    d = torch.hypot(xx - cx, yy - cy)
    return (d < r).float(), (d - r).abs()


def rectangle(x0, y0, x1, y1, height=H, width=W):
    """A hard rectangle mask and each pixel centre's distance to the rectangle's outline."""
    xx, yy = pixel_centres(height, width)
    inside = (xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)
    dx = torch.maximum(x0 - xx, xx - x1)
    dy = torch.maximum(y0 - yy, yy - y1)
    outside = torch.hypot(dx.clamp(min=0), dy.clamp(min=0))
    inner = torch.minimum(torch.minimum(xx - x0, x1 - xx), torch.minimum(yy - y0, y1 - yy))
    return inside.float(), torch.where(inside, inner, outside)


def centroid(mask):
    xx, yy = pixel_centres(*mask.shape)
    m = mask.double()
    return torch.stack([(xx * m).sum() / m.sum(), (yy * m).sum() / m.sum()])


def aligned(photo, lm, size, transform_size=None, **kw):
    return A.align_face(photo, A.face_keypoints(lm), size, transform_size or 2 * size, **kw)


# A face small in the aligned image (shrunk: FFHQ's integer shrink of the photo runs), a face at about the aligned
# size, a face enlarged into a big aligned image, and a tilted face cut by the photo's edge (padding).
CASES = {
    "shrunk": (dict(cx=80, cy=88, s=44, angle=0.3), 24),
    "same-scale": (dict(cx=80, cy=90, s=30, angle=-0.2), 96),
    "enlarged": (dict(cx=82, cy=92, s=26, angle=0.5), 256),
    "at-the-edge": (dict(cx=30, cy=70, s=30, angle=0.15), 64),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("shape", ["disk", "rectangle"])
def test_masks_through_align_and_back_land_where_they_started(case, shape):
    face, size = CASES[case]
    photo = synthetic_photo(11, H, W)
    lm = face_landmarks(face["cx"], face["cy"], face["s"], face["angle"], seed=11)
    _, tf = aligned(photo, lm, size)
    cx, cy = face["cx"] + 3, face["cy"] + 12  # a region of the face (off its centre), inside the face square
    if shape == "disk":
        mask, dist = disk(cx, cy, 0.55 * face["s"])
    else:
        mask, dist = rectangle(cx - 0.6 * face["s"], cy - 0.4 * face["s"], cx + 0.5 * face["s"], cy + 0.3 * face["s"])
    inside = A.unalign_mask(A.photo_coverage(tf), tf)[0] > 0.999  # photo pixels the aligned frame holds in full
    assert bool(inside[mask > 0].all())
    am = A.align_mask(mask, tf)
    assert am.shape == (1, size, size) and 0 <= float(am.min()) and float(am.max()) <= 1
    back = A.unalign_mask(am, tf)[0]
    assert back.shape == (H, W)
    a, b = mask > 0.5, back > 0.5
    iou = float((a & b).sum() / (a | b).sum())
    moved = float((centroid(back) - centroid(mask)).abs().max())
    # The round trip resamples twice at the aligned resolution: the shrunk face's aligned pixel is ~3 photo pixels
    # wide, so its boundary may wander by up to one aligned pixel; elsewhere within a photo pixel.
    px = max(1.0, max(np.hypot(*np.subtract(tf.quad[3], tf.quad[0])) / size, 1.0))
    worst = float(dist[a ^ b].max()) if bool((a ^ b).any()) else 0.0
    assert worst <= px, (iou, moved, worst, px)
    assert moved < 0.25 * px, moved
    assert iou > (0.97 if px == 1 else 0.9), iou


def smooth_photo(seed: int, height: int, width: int, cell: int = 48) -> np.ndarray:
    """Random RGB uint8 photo smooth at the scale of a shrunk aligned pixel (bicubic from a coarse grid)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def test_aligned_mask_is_warped_like_the_image():
    """A soft mask made from the photo's own red channel, aligned, equals the aligned image's red channel (same
    quad, shrink and sampling) wherever the aligned image shows the photo: soft values are kept."""
    photo = smooth_photo(12, 240, 200)
    for lm, size in ((face_landmarks(100, 120, 45, 0.35, seed=12), 32),  # shrunk by 2 first, then warped
                     (face_landmarks(100, 110, 40, -0.25, seed=13), 128)):
        img, tf = aligned(photo, lm, size, 4 * size)
        red = torch.from_numpy(photo[..., 0].copy()).float() / 255
        am = A.align_mask(red[None], tf)[0]
        err = (am - img[..., 0]).abs()[A.photo_coverage(tf) > 0.999]
        assert err.numel() > 0.9 * size * size
        # FFHQ's 8-bit resampling (PIL truncates: ~1/255 low) and its Lanczos filters differ from ours a little;
        # half a pixel off would double the mean.
        assert float(err.mean()) < 0.008 and float(err.max()) < 0.05, (float(err.mean()), float(err.max()))
        assert 0.1 < float(am.std())  # a soft mask, not thresholded


def test_photo_coverage_is_the_padding():
    photo = synthetic_photo(13, H, W)
    lm = face_landmarks(30, 70, 30, 0.15, seed=14)  # a face cut by the photo's left edge
    for size in (48, 96):
        _, tf = aligned(photo, lm, size)
        cov = A.photo_coverage(tf)
        assert cov.shape == (size, size) and float(cov.min()) == 0 and float(cov.max()) == 1
        # The same photo in white, aligned without FFHQ's padding: black exactly where the padding would be.
        white, _ = aligned(np.full((H, W, 3), 255, np.uint8), lm, size, enable_padding=False)
        differ = (cov > 0.5) != (white[..., 0] > 0.5)
        hard = (cov > 0.5).float()[None, None]
        edge = (torch.nn.functional.max_pool2d(hard, 3, 1, 1) != -torch.nn.functional.max_pool2d(-hard, 3, 1, 1))[0, 0]
        assert not bool((differ & ~edge).any())  # they agree but on the pixels along the photo's edge
        assert float(differ.float().mean()) < 0.01, float(differ.float().mean())
        assert 0.1 < float((cov < 0.5).float().mean()) < 0.6  # a real part of the image is padding
        # Any mask is 0 in the padding (FFHQ's reflection there holds no mask content), even a mask of ones.
        assert torch.equal(A.align_mask(torch.ones(H, W), tf)[0], cov)
    _, tf = aligned(photo, face_landmarks(80, 85, 24, 0.2, seed=15), 32)  # well inside the photo
    torch.testing.assert_close(A.photo_coverage(tf), torch.ones(32, 32))


def test_a_resized_mask_and_other_sizes():
    photo = synthetic_photo(14, H, W)
    lm = face_landmarks(80, 90, 30, 0.1, seed=16)
    _, tf = aligned(photo, lm, 64)
    mask, _ = disk(82, 100, 18)
    half, _ = disk(41, 50, 9, H // 2, W // 2)  # the same mask at half the photo's resolution: it scales
    full, small = A.align_mask(mask, tf), A.align_mask(half, tf)
    assert float((full - small).abs().mean()) < 0.02
    assert A.align_mask(torch.stack([mask, 1 - mask]), tf, 40).shape == (2, 40, 40)  # a batch, another size
    assert A.unalign_mask(full, tf, H * 2, W * 2).shape == (1, H * 2, W * 2)  # into a resized photo
    assert A.align_mask(mask.bool(), tf).dtype == torch.float32


def test_mask_errors_say_what_and_how():
    photo = synthetic_photo(15, H, W)
    _, tf = aligned(photo, face_landmarks(80, 90, 30, 0.0, seed=17), 32)
    with pytest.raises(A.AlignmentError, match=r"is 160x160 \(width x height\) but the face was aligned from a "
                                                r"160x180 photo.*SolidMask with width 160, height 180"):
        A.align_mask(torch.ones(160, 160), tf)
    with pytest.raises(A.AlignmentError, match=r"shape \(1, 180, 160, 1\).*Convert Image to Mask"):
        A.align_mask(torch.ones(1, H, W, 1), tf)
    with pytest.raises(A.AlignmentError, match="NaN"):
        A.align_mask(torch.full((H, W), float("nan")), tf)
    with pytest.raises(A.AlignmentError, match="must be a MASK tensor"):
        A.align_mask(np.ones((H, W)), tf)
    with pytest.raises(A.AlignmentError, match="another aspect ratio"):
        A.unalign_mask(torch.ones(32, 32), tf, 100, 100)


# --- Unalign Face's blend mask --------------------------------------------------------------------------------------

@pytest.mark.parametrize("feather, user_mask", [(0.1, False), (0.0, False), (0.3, False), (0.1, True)])
def test_blend_mask_is_the_weight_of_the_composite(feather, user_mask):
    photo = torch.from_numpy(synthetic_photo(16, H, W).copy()).float() / 255
    lm = face_landmarks(80, 90, 30, 0.3, seed=18)
    _, tf = aligned(photo, lm, 48)
    mask = None
    if user_mask:
        mask, _ = disk(24, 28, 14, 48, 48)
        mask = mask * 0.7  # soft: clamped to [0, 1] and kept
    colour = torch.tensor([0.9, 0.2, 0.5])
    edit = colour.expand(64, 64, 3)  # a flat edit: the pasted face is that colour everywhere
    image, blend = A.unalign_face_and_blend(photo, edit, tf, feather, mask)
    assert blend.shape == (H, W) and 0 <= float(blend.min()) and float(blend.max()) <= 1
    torch.testing.assert_close(image, blend[..., None] * colour + (1 - blend[..., None]) * photo, atol=1e-6,
                               rtol=0)
    assert torch.equal(A.unalign_face(photo, edit, tf, feather, mask), image)
    assert torch.equal(blend, A.blend_mask(tf, H, W, feather, mask, 64))
    grid = A.aligned_to_source_grid(tf, H, W)
    assert float(blend[(grid.abs() > 1 + 2 / 48).any(-1)].abs().max()) == 0  # nothing outside the face square
    centre = (grid.abs() < 0.2).all(-1)
    expected = 0.7 if user_mask else 1.0
    assert torch.allclose(blend[centre], torch.tensor(expected), atol=1e-5)
    if feather > 0 and not user_mask:
        ring = (grid.abs() < 0.95).all(-1) & (grid.abs() > 1 - feather).any(-1)
        assert float(blend[ring].max()) < 1 - 1e-3  # the feathered edge is in the mask, not only in the image


def test_blend_mask_errors():
    tf = A.AlignTransform(((0, 0), (0, 10), (10, 10), (10, 0)), (20, 20), 8)
    with pytest.raises(A.AlignmentError, match="feather"):
        A.blend_mask(tf, 20, 20, feather=0.7)
    with pytest.raises(A.AlignmentError, match=r"one \[H, W\] mask, got \(2, 8, 8\)"):
        A.blend_mask(tf, 20, 20, mask=torch.ones(2, 8, 8))


# --- the nodes ------------------------------------------------------------------------------------------------------

def two_photos():
    photos = torch.from_numpy(np.stack([synthetic_photo(17, 120, 100), synthetic_photo(18, 120, 100)])).float() / 255
    faces = [face_landmarks(50, 55, 20, 0.1, seed=19).tolist(), face_landmarks(52, 60, 24, -0.2, seed=20).tolist()]
    # One OpenPose frame per image (a plain list of two 68-point lists would read as two faces of one image).
    return photos, json.dumps([{"people": [{"face_keypoints_2d": openpose_face(np.array(f))}]} for f in faces])


def test_align_face_mask_input_and_output(pack):
    PA, _ = pack_modules(pack)
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    assert align.RETURN_TYPES[:3] == ("IMAGE", "SGS_ALIGN_TRANSFORM", "STRING")  # saved links keep their slots
    assert align.RETURN_TYPES[3] == "MASK"
    photos, faces = two_photos()
    # No mask: the mask of aligned pixels that came from the photo.
    images, tfs, _, masks = align.align(photos, "auto", 48, 0, landmarks_json=faces, transform_size=96)["result"]
    assert masks.shape == (2, 48, 48)
    for i in range(2):
        assert torch.equal(masks[i], PA.photo_coverage(tfs[i], 48))
    # One mask for the batch: warped into each face's own frame.
    disk1, _ = disk(50, 62, 10, 120, 100)
    _, tfs, _, masks = align.align(photos, "auto", 48, 0, landmarks_json=faces, transform_size=96,
                                   mask=disk1[None])["result"]
    for i in range(2):
        assert torch.equal(masks[i], PA.align_mask(disk1, tfs[i], 48)[0])
    assert not torch.equal(masks[0], masks[1])  # two faces, two frames
    # One mask per image; a 2-D mask counts as one.
    pair = torch.stack([disk1, 1 - disk1])
    masks = align.align(photos, "auto", 48, 0, landmarks_json=faces, transform_size=96, mask=pair)["result"][3]
    assert torch.equal(masks[1], PA.align_mask(1 - disk1, tfs[1], 48)[0])
    masks = align.align(photos, "auto", 48, 0, landmarks_json=faces, transform_size=96, mask=disk1)["result"][3]
    assert torch.equal(masks[1], PA.align_mask(disk1, tfs[1], 48)[0])
    with pytest.raises(PA.AlignmentError, match=r"mask is a batch of 3 but image is a batch of 2: connect one mask "
                                                r"\(used for every image\) or one per image \(2\)"):
        align.align(photos, "auto", 48, 0, landmarks_json=faces, mask=torch.ones(3, 120, 100))
    with pytest.raises(PA.AlignmentError, match=r"mask is 512x512 \(width x height\) but the image is 100x120.*"
                                                r"SolidMask with width 100 and height 120"):
        align.align(photos, "auto", 48, 0, landmarks_json=faces, mask=torch.ones(1, 512, 512))
    with pytest.raises(PA.AlignmentError, match=r"shape \(1, 120, 100, 3\)"):
        align.align(photos, "auto", 48, 0, landmarks_json=faces, mask=photos[:1])


def test_mask_through_align_face_and_unalign_face_nodes(pack):
    """A mask drawn on the photo, through Align Face's mask output into Unalign Face's mask input, pastes the edit
    exactly where the mask was; Unalign Face's blend_mask output is that region in the photo's frame."""
    PA, _ = pack_modules(pack)
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    unalign = pack.NODE_CLASS_MAPPINGS["SGS_UnalignFace"]()
    assert unalign.RETURN_TYPES == ("IMAGE", "MASK")
    photos, faces = two_photos()
    region, dist = disk(50, 64, 11, 120, 100)
    _, tfs, _, masks = align.align(photos[:1], "auto", 64, 0, landmarks_json=json.dumps(json.loads(faces)[:1]),
                                   transform_size=128, mask=region[None])["result"]
    white = torch.ones(1, 64, 64, 3)
    image, blend = unalign.unalign(torch.zeros(1, 120, 100, 3), white, tfs, 0.1, mask=masks)
    assert image.shape == (1, 120, 100, 3) and blend.shape == (1, 120, 100)
    torch.testing.assert_close(image[0, ..., 0], blend[0])  # white pasted onto black: the image is the blend
    a, b = region > 0.5, blend[0] > 0.5
    assert float((a & b).sum() / (a | b).sum()) > 0.95
    assert float(torch.cat([dist[a ^ b], torch.zeros(1, dtype=dist.dtype)]).max()) <= 1.0
    # Several frames into one photo: one blend mask per frame.
    frames, blends = unalign.unalign(photos[:1], torch.rand(3, 32, 32, 3), tfs, 0.2)
    assert frames.shape == (3, 120, 100, 3) and blends.shape == (3, 120, 100)
    assert torch.equal(blends[0], PA.blend_mask(tfs[0], 120, 100, 0.2, None, 32))
