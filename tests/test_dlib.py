"""Align Face's dlib detector, for real: dlib's HOG face detector and the 68-point shape predictor that
face-recognition-models ships, on scikit-image's astronaut photo (Eileen Collins, public domain), and the aligned
crop against NVIDIA's FFHQ recipe written out here independently of core.align.

Skipped when dlib, the predictor or scikit-image is missing (`pip install -r requirements-dev.txt` installs them).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from core import align as A
from core import landmarks as L

dlib = pytest.importorskip("dlib", reason="dlib is not installed: pip install dlib-bin face-recognition-models")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (the astronaut photo)")
scipy_ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is not installed (NVIDIA's padding blur)")

PREDICTOR = L.dlib_predictor_path()
pytestmark = pytest.mark.skipif(PREDICTOR is None, reason="shape_predictor_68_face_landmarks.dat is not installed: "
                                                          "pip install face-recognition-models")

# dlib's detection box of the astronaut's face (upsampled once: left, top, right, bottom), measured once.
ASTRONAUT_FACE_BOX = (175, 76, 265, 166)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # 512 x 512 RGB uint8


@pytest.fixture(scope="module")
def detected(astronaut) -> list[np.ndarray]:
    return L.DlibDetector().detect(astronaut)


def nvidia_recreate_aligned(img: Image.Image, lm: np.ndarray, output_size: int, transform_size: int,
                            enable_padding: bool = True) -> tuple[Image.Image, np.ndarray, set]:
    """NVIDIA's ffhq-dataset `recreate_aligned_images` for one photo, step by step (PIL.Image.ANTIALIAS is
    LANCZOS in today's Pillow). Returns the aligned image, the quad it warped in continuous coordinates of the
    photo (pixel (i, j) covers [j, j+1) x [i, i+1); the warp samples at quad + 0.5 of the image it is given, which
    after a shrink is the shrunk image) and which of the optional steps ran ("shrink", "crop", "pad")."""
    lm_eye_left, lm_eye_right, lm_mouth_outer = lm[36:42], lm[42:48], lm[48:60]
    eye_left = np.mean(lm_eye_left, axis=0)
    eye_right = np.mean(lm_eye_right, axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_left = lm_mouth_outer[0]
    mouth_right = lm_mouth_outer[6]
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = np.hypot(*x) * 2
    source_quad = quad + 0.5
    steps = set()

    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        steps.add("shrink")
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        source_size = img.size
        img = img.resize(rsize, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink
        source_quad = (quad + 0.5) * [source_size[0] / rsize[0], source_size[1] / rsize[1]]

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
            int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, img.size[0]),
            min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        steps.add("crop")
        img = img.crop(crop)
        quad -= crop[0:2]

    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
           int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - img.size[0] + border, 0),
           max(pad[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        steps.add("pad")
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = img.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                          1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
        blur = qsize * 0.02
        img += (scipy_ndimage.gaussian_filter(img, [blur, blur, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(img), 0, 255)), "RGB")
        quad += pad[:2]

    img = img.transform((transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return img, source_quad, steps


# --- the detector ---------------------------------------------------------------------------------------------

def test_predictor_comes_from_the_package():
    assert PREDICTOR.name == "shape_predictor_68_face_landmarks.dat" and PREDICTOR.stat().st_size > 90e6


def test_astronaut_landmarks_are_a_plausible_face(detected):
    # dlib's HOG detector finds the face and one weak false positive on the suit; the face is the larger set of
    # landmarks, so face_index 0 (the largest) is the face.
    assert 1 <= len(detected) <= 2 and all(f.shape == (68, 2) and f.dtype == np.float64 for f in detected)
    lm = L.pick_face(detected, 0, "the astronaut")
    left, top, right, bottom = ASTRONAUT_FACE_BOX
    margin = 0.25 * (right - left)
    assert (lm[:, 0] > left - margin).all() and (lm[:, 0] < right + margin).all()
    assert (lm[:, 1] > top - margin).all() and (lm[:, 1] < bottom + margin).all()
    kp = A.face_keypoints(lm)
    eye_l, eye_r = np.array(kp.eye_left), np.array(kp.eye_right)
    mouth_l, mouth_r = np.array(kp.mouth_left), np.array(kp.mouth_right)
    eye_distance = np.hypot(*(eye_r - eye_l))
    assert 25 < eye_distance < 60  # a ~90-pixel face
    assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]  # image-left first
    assert max(eye_l[1], eye_r[1]) < min(mouth_l[1], mouth_r[1])  # eyes above the mouth
    nose_tip, chin = lm[30], lm[8]
    assert eye_l[0] < nose_tip[0] < eye_r[0]
    assert max(eye_l[1], eye_r[1]) < nose_tip[1] < min(mouth_l[1], mouth_r[1]) < chin[1]
    brows = lm[17:27, 1].mean()
    assert brows < min(eye_l[1], eye_r[1])
    # the mouth is roughly under the eyes, at about the eye distance below them (a frontal face)
    assert 0.6 < np.hypot(*((mouth_l + mouth_r) / 2 - (eye_l + eye_r) / 2)) / eye_distance < 1.6


def test_dlib_detector_matches_dlib_called_directly(astronaut, detected):
    """The adapter returns what dlib returns (upsampled once on a photo this size), point for point."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(PREDICTOR))
    boxes = detector(astronaut, 1)
    assert [(b.left(), b.top(), b.right(), b.bottom()) for b in boxes][0] == ASTRONAUT_FACE_BOX
    direct = [np.array([[p.x, p.y] for p in predictor(astronaut, b).parts()], dtype=np.float64) for b in boxes]
    assert len(direct) == len(detected) and all(np.array_equal(a, b) for a, b in zip(direct, detected))


def test_large_photos_are_searched_downscaled(astronaut, detected):
    """A photo over DETECT_MAX_SIDE is downscaled for detection; the landmarks come back in its pixels."""
    big = np.asarray(Image.fromarray(astronaut).resize((4608, 4608), Image.LANCZOS))  # 9x: searched at 2048
    faces = L.DlibDetector().detect(big)
    face = L.pick_face(faces, 0, "big")
    expected = (L.pick_face(detected, 0, "small") + 0.5) * 9 - 0.5
    eye = lambda f: np.array(A.face_keypoints(f).eye_left)  # noqa: E731
    assert np.hypot(*(eye(face) - eye(expected))) < 0.1 * 9 * 40  # within a tenth of the eye distance


def test_dlib_refuses_images_it_cannot_search():
    with pytest.raises(A.AlignmentError, match="too small to hold a face"):
        L.DlibDetector().detect(np.zeros((8, 300, 3), np.uint8))
    with pytest.raises(A.AlignmentError, match="needs one RGB uint8 image"):
        L.DlibDetector().detect(np.zeros((64, 64), np.uint8))


def test_predictor_is_loaded_once_and_released(astronaut):
    L.DlibDetector.clear_cache()
    L.DlibDetector().detect(astronaut[:128, :128].copy())
    assert list(L.DlibDetector._cache) == [str(PREDICTOR)]
    cached = L.DlibDetector._cache[str(PREDICTOR)]
    L.DlibDetector().detect(astronaut[:128, :128].copy())
    assert L.DlibDetector._cache[str(PREDICTOR)] is cached
    L.DlibDetector.clear_cache()
    assert L.DlibDetector._cache == {}


def test_user_predictor_in_models_landmarks_is_used_first(tmp_path):
    user = tmp_path / "shape_predictor_68_face_landmarks.dat"
    user.symlink_to(PREDICTOR)
    assert L.DlibDetector([tmp_path]).predictor_path == user
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "shape_predictor_68_face_landmarks.dat").write_bytes(b"not a predictor")
    with pytest.raises(FileNotFoundError) as info:
        L.DlibDetector([broken]).detect(np.zeros((64, 64, 3), np.uint8))
    message = str(info.value)
    assert message.startswith(f"{broken / 'shape_predictor_68_face_landmarks.dat'} is not a dlib shape predictor")
    assert "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2" in message
    L.DlibDetector.clear_cache()


# --- the aligned crop against NVIDIA's recipe -------------------------------------------------------------------

@pytest.mark.parametrize("output_size, transform_size, top, steps", [
    (256, 1024, 0, {"crop"}),          # the face inside the photo: crop and warp
    (256, 1024, 60, {"crop", "pad"}),  # the photo cut above the eyes: the square reaches out, reflection padding
    (32, 128, 0, {"shrink", "crop"}),  # a small output: the photo is shrunk first
    pytest.param(1024, 4096, 0, {"crop"}, marks=pytest.mark.slow),  # FFHQ's own sizes
])
def test_aligned_astronaut_matches_nvidia_recipe(astronaut, detected, output_size, transform_size, top, steps):
    photo = np.ascontiguousarray(astronaut[top:])
    lm = L.pick_face(detected, 0, "the astronaut") - [0, top]  # the same landmarks, in the cut photo's pixels
    expected, quad, ran = nvidia_recreate_aligned(Image.fromarray(photo), lm.copy(), output_size, transform_size)
    assert ran == steps
    ours, tf = A.align_face(photo, A.face_keypoints(lm), output_size, transform_size)
    assert np.allclose(np.array(tf.quad), quad, atol=1e-9)  # the same square, as core records it
    ours = np.rint(ours.numpy() * 255).astype(np.int16)
    expected = np.asarray(expected, dtype=np.int16)
    assert ours.shape == expected.shape == (output_size, output_size, 3)
    diff = np.abs(ours - expected)
    assert diff.max() <= 1, f"max difference {diff.max()} levels"  # 1 level: float rounding in the pad blur
    assert (diff > 0).mean() < 0.01


# --- through the node ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["auto", "dlib"])
def test_align_node_detects_with_dlib(pack, astronaut, detected, source):
    PA = sys.modules[f"{pack.__name__}.core.align"]
    photo = torch.from_numpy(astronaut.copy()).float()[None] / 255
    out = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]().align(photo, source, 128, 0, transform_size=512)
    aligned, (tf,), used, _ = out["result"]
    lm = L.pick_face(detected, 0, "the astronaut")
    assert np.allclose(json.loads(used)[0], np.round(lm, 2))
    expected, _ = PA.align_face(photo[0], PA.face_keypoints(lm), 128, 512)
    assert aligned.shape == (1, 128, 128, 3) and torch.equal(aligned[0], expected)
    text = out["ui"]["text"][0]
    assert text.startswith(f"landmarks from dlib 68-point shape predictor (shape_predictor_68_face_landmarks.dat "
                           f"from {PREDICTOR.parent}); faces found per image: {len(detected)}; face_index 0 used")
