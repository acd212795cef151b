"""Face alignment on hostile input (issue 13, class 5 and the landmark part of class 4): impossible landmarks,
absurd faces and photos, malformed landmark JSON and POSE_KEYPOINT frames, the detector's input, and transforms
that no Align Face could have made. Every refusal is an AlignmentError whose whole message is asserted; the
crafted inputs come from tests/forge.py. A real photo (skimage's astronaut) with hand-placed landmarks checks
that the new bounds leave genuine faces, including faces cut by the photo's edge, alone."""

from __future__ import annotations

import json
import math
import time
import tracemalloc

import numpy as np
import pytest
import torch

import forge
from core import align as A
from core import landmarks as L
from core.errors import AlignmentError

from test_align import face_landmarks, pack_modules, synthetic_photo

SIX = np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]], dtype=np.float64)


def raises(fn, *args, **kwargs) -> str:
    """The message of the AlignmentError that fn(*args, **kwargs) must raise (core's, or the pack's own class when
    the pack is imported the way ComfyUI imports it)."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    assert type(info.value).__name__ == "AlignmentError", repr(info.value)
    return str(info.value)


def align(photo, landmarks, size: int = 32, **kwargs):
    return A.align_face(photo, A.face_keypoints(landmarks), size, size, **kwargs)


def peak_bytes(fn) -> int:
    """tracemalloc's peak (numpy and Python allocations) while fn runs; fn must raise AlignmentError."""
    tracemalloc.start()
    try:
        with pytest.raises(AlignmentError):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- points that cannot be a face ---------------------------------------------------------------------------------

def test_non_finite_and_absurd_coordinates_name_the_point():
    lm = face_landmarks(100, 100, 40)
    lm[40, 0] = np.nan
    assert raises(A.face_keypoints, lm) == (
        "landmarks contain NaN or infinite coordinates (a face part was not detected?): point 41 of 68 is (nan, "
        f"{lm[40, 1]:.6g}); give landmarks with every point found")
    lm = face_landmarks(100, 100, 40)
    lm[:, 0] = 1e308  # the eye means would overflow to inf, then NaN through the quad
    assert raises(A.face_keypoints, lm) == (
        f"landmark 1 of 68 is at (1e+308, {lm[0, 1]:.6g}): landmarks are pixel coordinates of the photo, at most "
        "1,000,000 in size; these are not")
    assert "point 1 of 68 is (inf, " in raises(A.face_keypoints, np.full((68, 2), np.inf))


def test_degenerate_landmarks():
    assert raises(A.face_keypoints, np.full((68, 2), 50.0)) == (
        "both eyes are at the same point (50, 50): the landmarks do not describe a face (all points equal?); give "
        "68 [x, y] points in pixels (iBUG/dlib/face_alignment), or 70 (OpenPose face), 98 (WFLW) or 5 (eyes, nose, "
        "mouth corners)")
    # Eyes 10 apart and the mouth exactly 10 above them: the levelling direction is the zero vector (a division
    # by zero that used to make a NaN quad).
    five = np.array([[0, 0], [10, 0], [5, -5], [5, -10], [5, -10]], dtype=np.float64)
    assert raises(A.ffhq_quad, A.face_keypoints(five)) == (
        "the face has no orientation: the mouth (5, -10) sits exactly above the eyes (0, 0), (10, 0) at their "
        "distance, which no face does; check that the points are [x, y] (not [y, x]) and in the layout's order")
    assert A.ffhq_quad(A.face_keypoints(five), rotate_level=False)[1] == pytest.approx(40)


def test_too_few_points_and_wrong_shapes():
    assert raises(A.face_keypoints, np.zeros((17, 2))) == (
        "17 landmarks: expected 68 (iBUG/dlib/face_alignment), 70 (OpenPose face), 98 (WFLW) or 5 (eyes, nose, "
        "mouth corners)")
    assert raises(A.face_keypoints, np.zeros((68, 2, 2))) == (
        "landmarks must be a list of (x, y) points, got an array of shape (68, 2, 2): expected 68 [x, y] points in "
        "pixels (iBUG/dlib/face_alignment), or 70 (OpenPose face), 98 (WFLW) or 5 (eyes, nose, mouth corners)")
    assert raises(A.face_keypoints, [["a", "b"]] * 68).startswith("landmarks must be numbers, 68 [x, y] points")


# --- the face against the photo -----------------------------------------------------------------------------------

def test_points_outside_the_photo_are_refused():
    photo = synthetic_photo(1, 200, 200)
    lm = face_landmarks(5000, 5000, 40, seed=0)
    kp = A.face_keypoints(lm)
    assert raises(A.align_face, photo, kp, 32, 32) == (
        f"the left eye centre is at ({kp.eye_left[0]:.6g}, {kp.eye_left[1]:.6g}), 6774 pixels outside the photo "
        "(200x200); a face at the edge may reach 39 pixels out (a quarter of its 155-pixel square). The landmarks "
        "belong to another photo or another scale: detect them on this image, or scale them by its size")
    # The same face beside the photo, its nearest eye 119 px left of it: still another photo's landmarks.
    assert "the left eye centre is at (-119.325, 99.7583), 119 pixels outside the photo" in raises(
        align, photo, face_landmarks(-100, 100, 40, seed=0))


def test_faces_at_the_edge_are_aligned_with_padding():
    """An eye 8 px outside the photo (the face cut by its edge) is what FFHQ's reflect padding is for."""
    photo = synthetic_photo(2, 160, 160)
    lm = face_landmarks(12, 80, 40, seed=1)  # left eye centre ~(-8, 80)
    assert A.face_keypoints(lm).eye_left[0] < -5
    out, tf = align(photo, lm, 32)
    assert out.shape == (32, 32, 3) and torch.isfinite(out).all()
    assert min(x for x, _ in tf.quad) < -50  # the square reaches well outside: padded, not refused


def test_absurdly_large_faces_are_refused_before_any_padding():
    photo = synthetic_photo(3, 200, 200)
    lm = face_landmarks(100, 100, 20000, seed=0)
    assert raises(align, photo, lm) == (
        "the face square is 79995 pixels wide (400.0x the photo, 200x200) and only 0.0% of it lies inside the photo "
        "(at least 6.2% needed): the aligned image would be padding. Give landmarks in this photo's pixels "
        "(detected on a larger copy?)")
    # Ten times the photo, centred on it: the photo would be 1% of the aligned image.
    ten = A.face_keypoints(face_landmarks(100, 100, 500, seed=0))
    assert raises(A.align_face, photo, ten, 1024, 1024) == (
        "the face square is 1995 pixels wide (10.0x the photo, 200x200) and only 1.0% of it lies inside the photo "
        "(at least 6.2% needed): the aligned image would be padding. Give landmarks in this photo's pixels "
        "(detected on a larger copy?)")
    # At FFHQ's 1024 this face cost 350 MB (tracemalloc peak) and 17 s of reflection padding and blur for an
    # image that is 99% padding; the refusal comes before a single padded pixel.
    assert peak_bytes(lambda: A.align_face(photo, ten, 1024, 1024)) < 2 * 2**20


@pytest.mark.parametrize("shape", [(1, 1, 3), (0, 0, 3), (15, 400, 3), (400, 1, 3)])
def test_photos_too_small_to_hold_a_face(shape):
    lm = face_landmarks(0.5, 0.5, 5)
    h, w = shape[:2]
    assert raises(align, np.zeros(shape, np.uint8), lm, what="image 2 of 3") == (
        f"image 2 of 3 is {w}x{h} pixels: too small to hold a face; Align Face needs at least 16x16 (faces align "
        "well from ~64 pixels wide)")


def test_the_smallest_photo_still_aligns():
    out, _ = align(synthetic_photo(4, 16, 16), face_landmarks(8, 6, 4, seed=2), 16)
    assert out.shape == (16, 16, 3) and torch.isfinite(out).all()


def test_bad_pixels_and_sizes_are_named():
    lm = face_landmarks(60, 55, 24, seed=5)
    kp = A.face_keypoints(lm)
    nan = torch.rand(120, 120, 3)
    nan[7, 9, 1] = float("nan")
    assert raises(A.align_face, nan, kp, 16, 16, what="image 1 of 2") == (
        "the image contains NaN or infinite values (image 1 of 2): fix the node that made it")
    assert raises(A.align_face, torch.rand(120, 120, 2), kp, 16, 16) == (
        "the photo has 2 channels (shape (120, 120, 2)): expected 1 (gray), 3 (RGB) or 4 (RGBA) channels last, "
        "[H, W, C]")
    assert raises(A.align_face, torch.rand(120, 120, 3), kp, 10**6, 16) == (
        "output_size must be at most 16384 pixels, got 1000000")
    assert raises(A.align_face, torch.rand(120, 120, 3), kp, 16, 10**9) == (
        "transform_size must be at most 16384 pixels, got 1000000000")


# --- a real photo ----------------------------------------------------------------------------------------------------

# skimage's astronaut (512 x 512, Eileen Collins): eye centres and outer mouth corners placed by hand.
ASTRONAUT = dict(eye_left=(201.75, 100.0), eye_right=(246.75, 104.0), mouth_left=(203.0, 140.75),
                 mouth_right=(245.5, 142.0))


def astronaut_landmarks(scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    lm = np.full((68, 2), 224.0)
    lm[36:42] = np.array(ASTRONAUT["eye_left"]) + SIX
    lm[42:48] = np.array(ASTRONAUT["eye_right"]) + SIX
    lm[48], lm[54] = ASTRONAUT["mouth_left"], ASTRONAUT["mouth_right"]
    return lm * scale - np.array(shift)


def test_real_photo_aligns_and_pastes_back():
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()
    aligned, tf = align(photo, astronaut_landmarks(), 128)
    # The whole face square lies inside the photo: no padding, and the paste-back reproduces the face.
    assert all(0 <= x <= 512 and 0 <= y <= 512 for x, y in tf.quad)
    original = torch.from_numpy(photo.copy()).float() / 255
    pasted = A.unalign_face(torch.zeros_like(original), aligned, tf, feather=0.0)
    deep = (A.aligned_to_source_grid(tf, 512, 512).abs() < 0.8).all(-1)
    assert deep.sum() > 5000 and (pasted - original).abs()[deep].mean() < 0.03
    # The eyes are dark in the aligned image's eye band (FFHQ puts them ~48% down, ~38% / 62% across).
    band = aligned[56:68].mean(-1)
    assert band[:, 40:56].min() < 0.25 and band[:, 72:88].min() < 0.25 and band.max() > 0.6


def test_real_photo_cut_by_its_edge_is_accepted_and_another_scale_refused():
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()
    # Cropped 10 px into the left eye: its centre lies 3.25 px outside; FFHQ pads the missing side.
    cut = photo[:, 205:]
    out, tf = align(cut, astronaut_landmarks(shift=(205, 0)), 64)
    assert torch.isfinite(out).all() and min(x for x, _ in tf.quad) < 0
    # Landmarks detected on a 4x larger copy: the eyes land 300-470 px beyond this photo's right edge.
    assert raises(align, photo, astronaut_landmarks(scale=4.0)) == (
        "the left eye centre is at (807, 400), 295 pixels outside the photo (512x512); a face at the edge may reach "
        "181 pixels out (a quarter of its 723-pixel square). The landmarks belong to another photo or another "
        "scale: detect them on this image, or scale them by its size")


# --- landmark JSON --------------------------------------------------------------------------------------------------

LJ = "landmarks_json"
EXPECTED = ("68 [x, y] points in pixels (iBUG/dlib/face_alignment), or 70 (OpenPose face), 98 (WFLW) or 5 (eyes, "
            "nose, mouth corners)")


def test_deeply_nested_json_is_refused_before_parsing():
    text = forge.nested_json(100_000)
    t0 = time.process_time()  # CPU seconds of this process: a bound that other jobs on the machine do not move
    assert raises(L.parse_landmarks_text, text, LJ) == (
        f"landmarks_json is nested 100000 levels deep; landmarks need at most 5 (a list of POSE_KEYPOINT frames) and "
        f"at most 16 are read: expected {EXPECTED}, or a list of those")
    assert time.process_time() - t0 < 2
    # brackets inside strings do not count; 17 levels do
    assert L.parse_landmarks_text(json.dumps({"face_landmarks": forge.ibug_face(), "note": "[" * 100}))
    assert "nested 17 levels deep" in raises(L.parse_landmarks_text, forge.nested_json(17), LJ)


def test_huge_json_is_refused_before_parsing():
    text = forge.huge_landmarks_json(5 * 2**20)
    assert raises(L.parse_landmarks_text, text, LJ) == (
        f"landmarks_json is {len(text) / 2**20:.1f} MB of text; at most 4 MB is read (about 1,000 frames of face "
        "keypoints): give fewer frames, or only the faces' points")
    # Parsing it would build ~700,000 Python floats in lists (tens of MB); the refusal allocates nothing.
    assert peak_bytes(lambda: L.parse_landmarks_text(text, LJ)) < 2**20
    ok = forge.huge_landmarks_json(2**20)  # 1 MB of faces is read
    assert len(L.parse_landmarks_text(ok)[0]) > 500


@pytest.mark.parametrize("token, message", [
    ("NaN", "landmarks_json: NaN is not a finite number: every coordinate must be a finite number of pixels"),
    ("-Infinity", "landmarks_json: -Infinity is not a finite number: every coordinate must be a finite number of "
                  "pixels"),
    ("1e400", "landmarks_json: '1e400' is beyond float range: every coordinate must be a finite number of pixels"),
    ("9" * 5000, "landmarks_json: '99999999999999999999999999... is beyond float range: every coordinate must be a "
                 "finite number of pixels"),
    ('"12"', "landmarks_json: ragged or non-numeric points: point 41 of the face of image 1 is ['12', 101.0]; "
             "expected [x, y] numbers in pixels"),
    ("true", "landmarks_json: ragged or non-numeric points: point 41 of the face of image 1 is [True, 101.0]; "
             "expected [x, y] numbers in pixels"),
    ("null", "landmarks_json: ragged or non-numeric points: point 41 of the face of image 1 is [None, 101.0]; "
             "expected [x, y] numbers in pixels"),
    ("[1, 2]", "landmarks_json: ragged or non-numeric points: point 41 of the face of image 1 is [[1.0, 2.0], "
               "101.0]; expected [x, y] numbers in pixels"),
])
def test_non_numbers_in_landmark_json(token, message):
    assert raises(L.parse_landmarks_text, forge.landmarks_json_with(token), LJ) == message


@pytest.mark.parametrize("text, message", [
    (json.dumps(forge.ibug_face()[:17]), f"landmarks_json: the face of image 1 has 17 points: expected {EXPECTED}"),
    (json.dumps([forge.ibug_face(), forge.ibug_face()[:5] + [[1.0, 2.0]]]),
     f"landmarks_json: face 2 of image 1 has 6 points: expected {EXPECTED}"),
    ('"hello"', f"landmarks_json: image 1 is 'hello': expected {EXPECTED} as [[x, y], ...], or a list of those"),
    ("5", f"landmarks_json: image 1 is 5.0: expected {EXPECTED} as [[x, y], ...], or a list of those"),
    ("[]", f"landmarks_json: image 1 is []: expected {EXPECTED} as [[x, y], ...], or a list of those"),
    ('{"a": 1}', "landmarks_json: an object needs 'face_landmarks' or 'people' (image 1 has keys ['a'])"),
    ('{"face_landmarks": "x"}', f"landmarks_json: image 1's face_landmarks must be a list of [x, y] points, got "
                                f"'x': expected {EXPECTED}"),
    ('{"in_the_wild": [1]}', "landmarks_json: image 1: 'in_the_wild' must be an object with 'face_landmarks'"),
    ("[[[[1, 2]]]]", "landmarks_json: ragged or non-numeric points: point 1 of face 1 of image 1 is [[1.0, 2.0]]; "
                     "expected [x, y] numbers in pixels"),
    ('[{"face_landmarks": []}]', f"landmarks_json: frame 1's face_landmarks must be a list of [x, y] points, got "
                                 f"[]: expected {EXPECTED}"),
])
def test_wrong_structures_in_landmark_json(text, message):
    assert raises(L.parse_landmarks_text, text, LJ) == message


@pytest.mark.parametrize("frame, message", [
    ({"people": "x"}, "POSE_KEYPOINT 'people' must be a list of persons, got 'x'"),
    ({"people": ["x"]}, "POSE_KEYPOINT person 1 must be a dict with 'face_keypoints_2d', got 'x'"),
    (forge.pose_frame(forge.ibug_face(), face_keypoints_2d="abc"),
     "person 1's face_keypoints_2d must be a flat list [x0, y0, c0, x1, ...] of numbers, got 'abc'"),
    (forge.pose_frame(forge.ibug_face(), face_keypoints_2d=[1, "2", 3]),
     "person 1's face_keypoints_2d must hold numbers (x, y, confidence per point), got '2' in it"),
    (forge.pose_frame(forge.ibug_face(), canvas=("x", 200)),
     "POSE_KEYPOINT canvas_width is 'x': expected the canvas size in pixels (a positive number)"),
    (forge.pose_frame(forge.ibug_face(), canvas=(200, -5.5)),
     "POSE_KEYPOINT canvas_height is -5.5: expected the canvas size in pixels (a positive number)"),
    (forge.pose_frame(forge.ibug_face()[:17]),
     f"person 1's face_keypoints_2d has 17 points: expected {EXPECTED}, as (x, y, confidence) triples"),
    (forge.pose_frame([[math.inf, 1.0]] + forge.ibug_face()[1:]),
     "person 1's face_keypoints_2d: point 1 is [inf, 1.0, 0.9], not finite numbers; give (x, y, confidence) with "
     "confidence 0 for a point that was not detected"),
])
def test_malformed_pose_keypoint_frames(frame, message):
    assert raises(L.faces_from_pose_keypoint, frame) == message
    if "inf" not in message:  # as JSON, Infinity is refused by the parser (test_non_numbers_in_landmark_json)
        assert raises(L.parse_landmarks_text, json.dumps(frame), LJ) == f"{LJ}: {message}"


def test_pose_face_without_an_eye_says_which_point():
    frame = forge.pose_frame(forge.ibug_face())
    frame["people"][0]["face_keypoints_2d"][36 * 3 + 2] = 0.0  # point 37 (left eye) not detected
    (face,) = L.faces_from_pose_keypoint(frame)
    assert raises(L.pick_face, [face], 0, "image 1") == (
        "no face found in image 1 (faces were listed, but without both eyes and mouth corners; face 1: landmarks "
        "contain NaN or infinite coordinates (a face part was not detected?): point 37 of 68 is (nan, nan); give "
        "landmarks with every point found): use a photo where the face is visible and at least ~64 pixels wide, or "
        "give landmarks")
    # typed landmarks (strict) keep their own message
    assert raises(L.pick_face, [face], 0, "image 1", strict=True) == (
        "image 1, face 1: landmarks contain NaN or infinite coordinates (a face part was not detected?): point 37 "
        "of 68 is (nan, nan); give landmarks with every point found")


# --- through the Align Face node: the specific message, never "no face found" -------------------------------------

@pytest.mark.parametrize("text, message", [
    (forge.landmarks_json_with("NaN"),
     "landmarks_json: NaN is not a finite number: every coordinate must be a finite number of pixels"),
    (json.dumps(forge.ibug_face()[:17]), f"landmarks_json: the face of image 1 has 17 points: expected {EXPECTED}"),
    (json.dumps([[50.0, 50.0]] * 68),
     f"image 1 of 1, face 1: both eyes are at the same point (50, 50): the landmarks do not describe a face (all "
     f"points equal?); give {EXPECTED}"),
    (json.dumps(forge.ibug_face(5000, 5000)),
     "the left eye centre is at (4980, 5000), 6774 pixels outside image 1 of 1 (200x200); a face at the edge may "
     "reach 40 pixels out (a quarter of its 160-pixel square). The landmarks belong to another photo or another "
     "scale: detect them on this image, or scale them by its size"),
])
def test_align_node_keeps_the_specific_message(pack, text, message):
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    photo = torch.from_numpy(synthetic_photo(9, 200, 200).copy()).float()[None] / 255
    msg = raises(align.align, photo, "landmarks input", 32, 0, landmarks_json=text, transform_size=32)
    assert msg == message and "no face found" not in msg


def test_align_node_refuses_bad_batches_and_pose_frames(pack):
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    text = json.dumps(forge.ibug_face())
    assert raises(align.align, torch.zeros(0, 64, 64, 3), "auto", 32, 0, landmarks_json=text) == (
        "image must be a batch of images [B, H, W, C] with at least one image, got shape (0, 64, 64, 3)")
    assert raises(align.align, torch.zeros(64, 64), "auto", 32, 0, landmarks_json=text) == (
        "image must be a batch of images [B, H, W, C] with at least one image, got shape (64, 64)")
    good = forge.pose_frame(forge.ibug_face())
    assert raises(align.align, torch.rand(2, 200, 200, 3), "auto", 32, 0, pose_keypoint=[good, {"people": 3}]) == (
        "pose_keypoint, frame 2: POSE_KEYPOINT 'people' must be a list of persons, got 3")
    photo = torch.rand(1, 1, 1, 3)
    assert raises(align.align, photo, "auto", 32, 0, landmarks_json=text) == (
        "image 1 of 1 is 1x1 pixels: too small to hold a face; Align Face needs at least 16x16 (faces align well "
        "from ~64 pixels wide)")


# --- the detector's input ---------------------------------------------------------------------------------------------

class FakeFAN:
    """Stands in for face_alignment's model: records the image it is given, finds one face at its centre."""

    def __init__(self):
        self.seen = []

    def get_landmarks_from_image(self, image):
        self.seen.append(image.shape)
        h, w = image.shape[:2]
        return [np.array(forge.ibug_face(w / 2, h / 2, min(h, w) / 4))]


def fake_detector(monkeypatch) -> tuple[L.FANDetector, FakeFAN]:
    model = FakeFAN()
    det = object.__new__(L.FANDetector)  # no face_alignment package or weights needed
    monkeypatch.setattr(det, "_model", lambda: model, raising=False)
    return det, model


def test_detector_downscales_huge_photos_and_scales_landmarks_back(monkeypatch):
    det, model = fake_detector(monkeypatch)
    photo = np.zeros((3000, 4096, 3), np.uint8)
    (face,) = det.detect(photo)
    assert model.seen == [(1500, 2048, 3)]  # the detector never sees more than 2048 px on a side
    # the fake's face centre (1024, 750) in the small image is the photo's centre
    kp = A.face_keypoints(face)
    assert np.mean([kp.eye_left[0], kp.eye_right[0]]) == pytest.approx(2047.5 + 0.5, abs=1)
    assert kp.eye_left[1] == pytest.approx(1500, abs=1)
    det.detect(np.zeros((300, 200, 3), np.uint8))
    assert model.seen[-1] == (300, 200, 3)  # small photos are left alone


@pytest.mark.parametrize("image, message", [
    (np.zeros((1, 100000, 3), np.uint8), "the image is 100000x1 pixels: too small to hold a face; Align Face needs "
                                         "at least 16x16 (faces align well from ~64 pixels wide)"),
    (np.zeros((0, 0, 3), np.uint8), "the image is 0x0 pixels: too small to hold a face; Align Face needs at least "
                                    "16x16 (faces align well from ~64 pixels wide)"),
    (np.zeros((16, 100000, 3), np.uint8), "the image is 100000x16 pixels: too narrow to find a face in (it would be "
                                          "2048x1 for the detector); crop it around the face"),
    (np.zeros((64, 64, 4), np.uint8), "face detection needs one RGB uint8 image [H, W, 3]; the image is uint8 of "
                                      "shape (64, 64, 4)"),
    (np.zeros((64, 64, 3), np.float32), "face detection needs one RGB uint8 image [H, W, 3]; the image is float32 "
                                        "of shape (64, 64, 3)"),
])
def test_detector_refuses_images_it_cannot_search(monkeypatch, image, message):
    det, model = fake_detector(monkeypatch)
    assert raises(det.detect, image) == message
    assert model.seen == []  # refused before the detector allocated anything


def test_align_node_names_the_image_the_detector_refused(pack, monkeypatch):
    _, PL = pack_modules(pack)
    model = FakeFAN()

    class Detector(PL.FANDetector):
        def __init__(self, device, dirs):
            pass

        def _model(self):
            return model

    monkeypatch.setattr(PL, "FANDetector", Detector)
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    photos = torch.rand(2, 64, 64, 3)
    photos[1, 3, 4, 0] = float("nan")
    # 'face_alignment' by name: 'auto' picks dlib first where it is installed (tests/test_dlib.py)
    assert raises(align.align, photos, "face_alignment", 32, 0, transform_size=32) == (
        "the image contains NaN or infinite values (image 2 of 2): fix the node that made it")
    assert model.seen == [(64, 64, 3)]  # image 1 was searched; image 2 never reached the detector
    assert raises(align.align, torch.rand(1, 8, 300, 3), "face_alignment", 32, 0) == (
        "image 1 of 1: the image is 300x8 pixels: too small to hold a face; Align Face needs at least 16x16 (faces "
        "align well from ~64 pixels wide)")


# --- Unalign Face ----------------------------------------------------------------------------------------------

T = "the alignment transform (connect Align Face's transform output)"


@pytest.mark.parametrize("name, message", [
    ("nan corner", f"{T} has corners ((nan, 0.0), (0.0, 10.0), (10.0, 10.0), (10.0, 0.0)): expected finite pixel "
                   "positions within 1,000,000"),
    ("inf corner", f"{T} has corners ((inf, 0.0), (0.0, 10.0), (10.0, 10.0), (10.0, 0.0)): expected finite pixel "
                   "positions within 1,000,000"),
    ("1e308 corners", f"{T} has corners ((1e+308, 0.0), (0.0, 10.0), (10.0, 10.0), (-1e+308, 0.0)): expected "
                      "finite pixel positions within 1,000,000"),
    ("zero source", f"{T} records a source photo of size (0, 0): expected (height, width) of at least 1 pixel"),
    ("3 corners", "an alignment transform has 4 corners, got 3"),
    ("huge output", f"{T} records output_size 1000000000: expected 1 to 16384"),
    ("string size", "not an alignment transform (invalid literal for int() with base 10: 'big'): expected quad, "
                    "source_size, output_size"),
    ("1e400 output", "not an alignment transform (cannot convert float infinity to integer): expected quad, "
                     "source_size, output_size"),
])
def test_hostile_transforms_are_refused(name, message):
    assert raises(A.AlignTransform.from_dict, forge.hostile_transforms()[name]) == message


def test_unalign_refuses_singular_transforms_and_bad_images():
    photo, edit = torch.rand(20, 20, 3), torch.rand(8, 8, 3)
    line = A.AlignTransform(((0, 0), (5, 5), (15, 15), (10, 10)), (20, 20), 8)
    assert raises(A.unalign_face, photo, edit, line) == (
        "degenerate alignment transform (its corners are collinear or coincide: ((0, 0), (5, 5), (15, 15), "
        "(10, 10))); connect the transform output of Align Face")
    tiny = A.AlignTransform(((1, 1), (1, 1 + 1e-8), (1 + 1e-8, 1 + 1e-8), (1 + 1e-8, 1)), (20, 20), 8)
    assert raises(A.unalign_face, photo, edit, tiny).startswith("degenerate alignment transform")
    small = A.AlignTransform(((1, 1), (1, 1.001), (1.001, 1.001), (1.001, 1)), (20, 20), 8)  # tiny but square
    assert torch.isfinite(A.unalign_face(photo, edit, small)).all()
    tf = A.AlignTransform(((2, 2), (2, 18), (18, 18), (18, 2)), (20, 20), 8)
    nan = edit.clone()
    nan[0, 0, 0] = float("nan")
    assert raises(A.unalign_face, photo, nan, tf) == (
        "the edited image contains NaN or infinite values: fix the node that made it")
    assert raises(A.unalign_face, photo, torch.rand(0, 8, 3), tf) == (
        "the edited image is empty (shape (0, 8, 3)): expected [H, W, C] with pixels")
    assert raises(A.unalign_face, torch.rand(20, 40, 3), edit, tf) == (
        "the original photo is 40x20 but the transform was made on a 20x20 photo (another aspect ratio): connect "
        "the photo that was given to Align Face")
    assert A.unalign_face(torch.rand(40, 40, 3), edit, tf).shape == (40, 40, 3)  # resized photo: fine
    assert raises(A.unalign_face, photo, edit, tf, mask=torch.full((8, 8), float("nan"))) == (
        "the paste mask contains NaN or infinite values: fix the node that made it")
    assert raises(A.unalign_face, photo, edit, {"quad": []}) == (
        "the transform must be Align Face's transform output, got dict")


def test_unalign_node_refuses_empty_batches(pack):
    PA, _ = pack_modules(pack)
    unalign = pack.NODE_CLASS_MAPPINGS["SGS_UnalignFace"]()
    tf = PA.AlignTransform(((2, 2), (2, 18), (18, 18), (18, 2)), (20, 20), 8)
    assert raises(unalign.unalign, torch.rand(1, 20, 20, 3), torch.rand(0, 8, 8, 3), [tf], 0.1) == (
        "edited must be a batch of images [B, H, W, C] with at least one image, got shape (0, 8, 8, 3)")
    assert raises(unalign.unalign, torch.rand(1, 20, 20, 3), torch.rand(1, 8, 8, 3), [], 0.1) == (
        "transform is an empty list: connect the transform output of Align Face")
    assert raises(unalign.unalign, torch.rand(1, 20, 20, 3), torch.rand(1, 8, 8, 3), [tf], 0.1,
                  mask=torch.rand(3, 8, 8)) == "mask must be one [H, W] mask or a batch of 1, got shape (3, 8, 8)"
    out = unalign.unalign(torch.rand(1, 20, 20, 3), torch.rand(1, 8, 8, 3), [tf.to_dict()], 0.1)[0]
    assert out.shape == (1, 20, 20, 3)  # a transform saved as JSON is read back
    bad = forge.hostile_transforms()["nan corner"]
    assert raises(unalign.unalign, torch.rand(1, 20, 20, 3), torch.rand(1, 8, 8, 3), [bad], 0.1).startswith(
        "the alignment transform (connect Align Face's transform output) has corners ((nan, 0.0)")


def test_align_node_skips_pose_faces_without_eyes(pack):
    """A pose estimator lists every person, some seen from behind: those are skipped, not refused."""
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    photo = torch.from_numpy(synthetic_photo(9, 200, 200).copy()).float()[None] / 255
    frame = forge.pose_frame(forge.ibug_face(100, 90, 40))
    back = [v for x, y in forge.ibug_face(40, 40, 20) for v in (x, y, 0.0)]  # no point detected
    frame["people"].insert(0, {"face_keypoints_2d": back})
    aligned, (tf,), used, _ = align.align(photo, "auto", 32, 0, pose_keypoint=frame, transform_size=32)["result"]
    assert np.allclose(json.loads(used)[0], forge.ibug_face(100, 90, 40), atol=0.01)  # the face with eyes
    frame["people"].pop(1)
    assert raises(align.align, photo, "auto", 32, 0, pose_keypoint=frame) == (
        "no face found in image 1 of 1 (faces were listed, but without both eyes and mouth corners; face 1: "
        "landmarks contain NaN or infinite coordinates (a face part was not detected?): point 1 of 68 is (nan, nan); "
        "give landmarks with every point found): use a photo where the face is visible and at least ~64 pixels wide, "
        "or give landmarks")
