"""Face alignment: FFHQ's quad arithmetic against hand-computed quads, the warp against NVIDIA's recipe, the paste
back, landmark parsing and the detector adapter. No detector weights are needed."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import align as A
from core import landmarks as L
from core.errors import MissingDependencyError, MissingWeightsError

FIXTURES = Path(__file__).parent / "fixtures"


def synthetic_photo(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random RGB uint8 photo (bilinear upsampling of a coarse random grid); deterministic."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def face_landmarks(cx: float, cy: float, s: float, angle: float = 0.0, seed: int = 0) -> np.ndarray:
    """68 iBUG points of a schematic face: eyes s apart, mouth corners 0.9 s below, rotated by `angle`, with
    seeded jitter on every point (so eye centres are true means of six points)."""
    rng = np.random.default_rng(seed)
    lm = rng.normal(0, 2, (68, 2))
    lm[36:42] += [-s / 2, 0]
    lm[42:48] += [s / 2, 0]
    lm[48] += [-s / 3, 0.9 * s]
    lm[54] += [s / 3, 0.9 * s]
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return lm @ rot.T + [cx, cy]


def ibug(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """68 points whose eye contours average exactly to the given eye centres (six points on a small ring)."""
    lm = np.zeros((68, 2))
    ring = np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]], dtype=np.float64)
    lm[36:42] = np.array(eye_left) + ring
    lm[42:48] = np.array(eye_right) + ring
    lm[48], lm[54] = mouth_left, mouth_right
    return lm


# --- the quad -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eyes, mouth, quad, qsize", [
    # eye-to-mouth (x1.8) sets the size: eye_avg (50, 50), eye_to_mouth (0, 30) -> x = (54, 0), c = (50, 53)
    (((40, 50), (60, 50)), ((42, 80), (58, 80)), [(-4, -1), (-4, 107), (104, 107), (104, -1)], 108),
    # eye distance (x2) sets it: eye_to_eye (40, 0) -> x = (80, 0), c = (50, 52)
    (((30, 50), (70, 50)), ((45, 70), (55, 70)), [(-30, -28), (-30, 132), (130, 132), (130, -28)], 160),
    # head tilted 45 degrees: eye_to_eye (40, 40), eye_to_mouth (-20, 20) -> x = (80, 80), y = (-80, 80),
    # c = (118, 122)
    (((100, 100), (140, 140)), ((90, 130), (110, 150)), [(118, -38), (-42, 122), (118, 282), (278, 122)],
     2 * 80 * math.sqrt(2)),
])
def test_ffhq_quad_matches_hand_computed(eyes, mouth, quad, qsize):
    kp = A.face_keypoints(ibug(*eyes, *mouth))
    got, got_size = A.ffhq_quad(kp)
    np.testing.assert_allclose(got, quad, atol=1e-9)
    assert got_size == pytest.approx(qsize)


def test_ffhq_quad_without_levelling_is_axis_aligned():
    kp = A.face_keypoints(ibug((100, 100), (140, 140), (90, 130), (110, 150)))
    quad, qsize = A.ffhq_quad(kp, rotate_level=False)
    # x = (1, 0) * max(2 * 40 sqrt 2, 1.8 * 20 sqrt 2); c = (118, 122)
    h = 80 * math.sqrt(2)
    np.testing.assert_allclose(quad, [(118 - h, 122 - h), (118 - h, 122 + h), (118 + h, 122 + h), (118 + h, 122 - h)])
    assert qsize == pytest.approx(2 * h)


def test_ffhq_quad_turns_with_the_face():
    lm = face_landmarks(0, 0, 60, seed=3)
    quad0, size0 = A.ffhq_quad(A.face_keypoints(lm))
    a = 0.7
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    quad1, size1 = A.ffhq_quad(A.face_keypoints(lm @ rot.T))
    np.testing.assert_allclose(quad1, quad0 @ rot.T, atol=1e-9)
    assert size1 == pytest.approx(size0)


@pytest.mark.parametrize("n, eye_left, eye_right, mouth", [
    (68, slice(36, 42), slice(42, 48), (48, 54)),
    (70, slice(36, 42), slice(42, 48), (48, 54)),
    (98, slice(60, 68), slice(68, 76), (76, 82)),
    (5, slice(0, 1), slice(1, 2), (3, 4)),
])
def test_landmark_layouts(n, eye_left, eye_right, mouth):
    pts = np.random.default_rng(n).uniform(0, 100, (n, 2))
    kp = A.face_keypoints(np.concatenate([pts, np.ones((n, 1))], 1))  # a confidence column is ignored
    np.testing.assert_allclose(kp.eye_left, pts[eye_left].mean(0))
    np.testing.assert_allclose(kp.eye_right, pts[eye_right].mean(0))
    np.testing.assert_allclose(kp.mouth_left, pts[mouth[0]])
    np.testing.assert_allclose(kp.mouth_right, pts[mouth[1]])


@pytest.mark.parametrize("points, message", [
    (np.zeros((17, 2)), "17 landmarks: expected 68"),
    (np.zeros((68,)), "list of (x, y) points"),
    (np.full((68, 2), np.nan), "NaN"),
    (np.zeros((68, 2)), "both eyes are at the same point"),
])
def test_bad_landmarks_are_refused(points, message):
    with pytest.raises(A.AlignmentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        A.face_keypoints(points)


# --- the warp ---------------------------------------------------------------------------------------------------

# Outputs of NVIDIA's ffhq-dataset `recreate_aligned_images` steps (PIL LANCZOS for ANTIALIAS, scipy blur) on
# synthetic_photo / face_landmarks inputs, made once with the reference script; only the uint8 results are stored.
REFERENCE_CASES = {
    "inside": dict(photo=(1, 240, 200), face=(100, 110, 40, 0.2, 1), output_size=48, transform_size=48),
    "padded": dict(photo=(2, 160, 220), face=(30, 120, 36, -0.4, 2), output_size=32, transform_size=128),
    "shrunk": dict(photo=(3, 400, 360), face=(180, 190, 110, 0.1, 3), output_size=24, transform_size=24),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_align_face_reproduces_nvidia_ffhq_recipe(name):
    case = REFERENCE_CASES[name]
    photo = synthetic_photo(*case["photo"])
    lm = face_landmarks(*case["face"])
    out, tf = A.align_face(photo, A.face_keypoints(lm), case["output_size"], case["transform_size"])
    ours = np.rint(out.numpy() * 255).astype(np.int16)
    ref = np.load(FIXTURES / "ffhq_align_reference.npz")[name].astype(np.int16)
    assert ours.shape == ref.shape == (case["output_size"], case["output_size"], 3)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1, f"max difference {diff.max()} levels"  # 1 level: float rounding in the pad blur
    assert (diff > 0).mean() < 0.01


def coordinate_photo(height: int, width: int) -> np.ndarray:
    """R encodes x and G encodes y (one level per pixel for sizes up to 256); B constant."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x, y, np.full_like(x, 128)], -1).astype(np.uint8)


@pytest.mark.parametrize("size, transform_size, angle", [(64, 64, 0.0), (48, 192, 0.5), (32, 32, -0.3)])
def test_aligned_pixels_come_from_the_transform_quad(size, transform_size, angle):
    photo = coordinate_photo(240, 250)
    lm = face_landmarks(125, 110, 50, angle, seed=7)
    out, tf = A.align_face(photo, A.face_keypoints(lm), size, transform_size)
    q = np.array(tf.quad)
    t = (np.arange(size) + 0.5) / size
    u, v = np.meshgrid(t, t, indexing="xy")
    expected = q[0] + u[..., None] * (q[3] - q[0]) + v[..., None] * (q[1] - q[0]) - 0.5  # pixel index
    got = out.numpy()[..., :2] * 255
    inside = ((expected > 2) & (expected < [247, 237])).all(-1)
    assert inside.mean() > 0.9
    err = (got - expected)[inside]
    # FFHQ's 8-bit steps bias values down: PIL truncates its bilinear warp (-0.5 level on average) and the
    # shrink's 8-bit rounding costs another half level. A geometric error would show as a larger shift.
    assert -1.2 < err.mean() < 0.1 and np.abs(err).max() < 2.5, (err.mean(0), np.abs(err).max())


def test_transform_quad_is_in_source_pixels_after_shrink():
    photo = synthetic_photo(4, 600, 500)
    lm = face_landmarks(250, 300, 150, 0.3, seed=4)
    quad, qsize = A.ffhq_quad(A.face_keypoints(lm))
    _, tf = A.align_face(photo, A.face_keypoints(lm), 32, 32)
    assert tf.source_size == (600, 500) and tf.output_size == 32
    # FFHQ shrinks the photo to round(500 / 9) x round(600 / 9) = 56 x 67 but divides the quad by 9: the face is
    # cut from (quad / 9 + 0.5) in the shrunk photo, i.e. that times (500 / 56, 600 / 67) in the source, which
    # is up to ~5 px away from the nominal quad. The transform must record where the pixels really came from.
    shrink = int(qsize / 32 * 0.5)
    assert shrink == 9
    actual = (quad / shrink + 0.5) * [500 / 56, 600 / 67]
    np.testing.assert_allclose(np.array(tf.quad), actual, atol=1e-9)
    assert np.abs(actual - (quad + 0.5)).max() > 3


def test_align_accepts_float_gray_and_rgba_images():
    photo = synthetic_photo(5, 120, 120)
    lm = face_landmarks(60, 55, 24, seed=5)
    kp = A.face_keypoints(lm)
    rgb, _ = A.align_face(torch.from_numpy(photo.copy()).float() / 255, kp, 16, 16)
    rgba, _ = A.align_face(np.concatenate([photo, np.zeros_like(photo[..., :1])], -1), kp, 16, 16)
    gray, _ = A.align_face(torch.from_numpy(photo[..., :1].copy()).float() / 255, kp, 16, 16)
    assert torch.equal(rgb, rgba)
    assert gray.shape == (16, 16, 3) and torch.equal(gray[..., 0], gray[..., 2])
    with pytest.raises(A.AlignmentError, match="NaN"):
        A.align_face(torch.full((20, 20, 3), float("nan")), kp, 16, 16)
    with pytest.raises(A.AlignmentError, match="normalised"):
        A.align_face(photo, A.face_keypoints(lm / 120), 16, 16)


# --- pasting back -----------------------------------------------------------------------------------------------

def test_unalign_puts_the_aligned_face_back_where_it_came_from():
    photo = synthetic_photo(6, 200, 180)
    lm = face_landmarks(90, 95, 36, 0.35, seed=6)
    aligned, tf = A.align_face(photo, A.face_keypoints(lm), 128, 512)
    original = torch.from_numpy(photo.copy()).float() / 255
    marker = torch.zeros_like(original)  # paste the unchanged face into a black image: the face reappears
    pasted = A.unalign_face(marker, aligned, tf, feather=0.0)
    grid = A.aligned_to_source_grid(tf, 200, 180)
    deep = (grid.abs() < 0.8).all(-1)  # well inside the face square, away from its edge
    assert deep.sum() > 1000
    err = (pasted - original).abs()[deep]
    assert err.mean() < 0.02, err.mean()
    assert pasted[(grid.abs() > 1.0 + 2 / 128).any(-1)].abs().max() == 0  # outside the square: untouched


def test_unalign_feather_mask_and_identity():
    photo = torch.from_numpy(synthetic_photo(7, 100, 100).copy()).float() / 255
    lm = face_landmarks(50, 48, 20, seed=7)
    aligned, tf = A.align_face(photo, A.face_keypoints(lm), 32, 32)
    white = torch.ones(64, 64, 3)  # an edit at another resolution
    soft = A.unalign_face(photo, white, tf, feather=0.25)
    hard = A.unalign_face(photo, white, tf, feather=0.0)
    grid = A.aligned_to_source_grid(tf, 100, 100)
    centre = (grid.abs() < 0.3).all(-1)
    ring = ((grid.abs() < 0.95).all(-1) & (grid.abs() > 0.8).any(-1))
    assert torch.allclose(soft[centre], torch.ones(1)) and torch.allclose(hard[centre], torch.ones(1))
    assert (soft[ring] < hard[ring] - 1e-3).any()  # the feathered edge blends with the photo
    nothing = A.unalign_face(photo, white, tf, mask=torch.zeros(32, 32))
    assert torch.equal(nothing, photo)
    m = A.feather_mask(10, 0.2)
    assert m.shape == (10, 10) and m[5, 5] == 1 and 0 < m[0, 5] < 0.2


def test_unalign_errors():
    tf = A.AlignTransform(((0, 0), (0, 10), (10, 10), (10, 0)), (20, 20), 8)
    with pytest.raises(A.AlignmentError, match="feather"):
        A.unalign_face(torch.zeros(20, 20, 3), torch.zeros(8, 8, 3), tf, feather=0.9)
    flat = A.AlignTransform(((0, 0), (0, 0), (10, 10), (10, 0)), (20, 20), 8)
    with pytest.raises(A.AlignmentError, match="degenerate"):
        A.unalign_face(torch.zeros(20, 20, 3), torch.zeros(8, 8, 3), flat)
    assert A.AlignTransform.from_dict(json.loads(json.dumps(tf.to_dict()))) == tf
    with pytest.raises(A.AlignmentError, match="not an alignment transform"):
        A.AlignTransform.from_dict({"quad": []})


# --- landmarks from elsewhere -------------------------------------------------------------------------------------

def openpose_face(points: np.ndarray, scale=(1.0, 1.0)) -> list[float]:
    flat = []
    for x, y in points:
        flat += [x * scale[0], y * scale[1], 0.9]
    return flat


def test_pose_keypoint_faces_in_pixels_and_normalised():
    pts = np.vstack([face_landmarks(100, 80, 30), [[90, 70], [110, 70]]])  # 70 points: + pupils
    frame = {"people": [{"face_keypoints_2d": openpose_face(pts)}], "canvas_width": 200, "canvas_height": 160}
    (face,) = L.faces_from_pose_keypoint(frame)
    np.testing.assert_allclose(face, pts)
    norm = {"people": [{"face_keypoints_2d": openpose_face(pts, (1 / 200, 1 / 160))}], "canvas_width": 200,
            "canvas_height": 160}
    np.testing.assert_allclose(L.faces_from_pose_keypoint(norm)[0], pts)
    missing = openpose_face(pts)
    missing[36 * 3 + 2] = 0  # an undetected eye point
    (face,) = L.faces_from_pose_keypoint({"people": [{"face_keypoints_2d": missing}]})
    assert np.isnan(face[36]).all()
    with pytest.raises(A.AlignmentError, match="no face found in image 1.*without both eyes"):
        L.pick_face([face], 0, "image 1")
    with pytest.raises(A.AlignmentError, match="'people'"):
        L.faces_from_pose_keypoint({"canvas_width": 3})


def test_landmarks_json_formats():
    face = face_landmarks(50, 50, 20)
    one = L.parse_landmarks_text(json.dumps(face.tolist()))
    assert len(one) == 1 and len(one[0]) == 1 and np.allclose(one[0][0], face)
    ffhq = L.parse_landmarks_text(json.dumps({"in_the_wild": {"face_landmarks": face.tolist()}}))
    assert np.allclose(ffhq[0][0], face)
    two = L.parse_landmarks_text(json.dumps([face.tolist(), (face + 100).tolist()]))
    assert len(two) == 1 and len(two[0]) == 2
    frames = L.parse_landmarks_text(json.dumps([{"people": [{"face_keypoints_2d": openpose_face(face)}]}] * 3))
    assert len(frames) == 3
    with pytest.raises(A.AlignmentError, match="not valid JSON"):
        L.parse_landmarks_text("[[1, 2],")
    with pytest.raises(A.AlignmentError, match="ragged"):
        L.parse_landmarks_text("[[1, 2], [3]]")


def test_pick_face_orders_by_size():
    small, big = face_landmarks(50, 50, 10), face_landmarks(150, 50, 40)
    assert np.array_equal(L.pick_face([small, big], 0, "x"), big)
    assert np.array_equal(L.pick_face([small, big], 1, "x"), small)
    with pytest.raises(A.AlignmentError, match="face_index 2 asked for, but photo.jpg has only 2"):
        L.pick_face([small, big], 2, "photo.jpg")
    with pytest.raises(A.AlignmentError, match="no face found in image 3"):
        L.pick_face([], 0, "image 3")


# --- the face_alignment detector adapter ----------------------------------------------------------------------------

def test_detector_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    with pytest.raises(MissingDependencyError, match="pip install face-alignment.*2DFAN4-11f355bf06.pth.tar"):
        L.FANDetector("cpu")


def _face_alignment():
    try:
        import face_alignment
        import face_alignment.api  # noqa: F401
        return face_alignment
    except ImportError:
        return None


needs_fa = pytest.mark.skipif(_face_alignment() is None, reason="face-alignment not installed")


@pytest.mark.slow
@needs_fa
def test_detector_runs_the_package_with_weights_from_our_folder(tmp_path, monkeypatch):
    """Random FAN / SFD weights written where a user would put the real ones: the package must load them from
    there (no download) and run on an image."""
    fa_mod = _face_alignment()
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), tmp_path / "2DFAN4-11f355bf06.pth.tar")
    torch.save(s3fd().state_dict(), tmp_path / "s3fd-619a316812.pth")

    def no_download(*args, **kwargs):
        raise AssertionError("the adapter tried to download weights that are in the model folder")

    monkeypatch.setattr(fa_mod.api, "load_file_from_url", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(L.FANDetector, "_cache", {})
    det = L.FANDetector("cpu", [tmp_path])
    model = det._model()
    photo = synthetic_photo(8, 96, 96)
    boxes = model.face_detector.detect_from_image(photo.copy())  # random SFD weights: arbitrary boxes
    assert all(len(b) == 5 for b in boxes)
    # one box, so the (slow on CPU) FAN runs once: landmarks come back in the box, in image pixels
    model.face_detector.detect_from_image = lambda image: [np.array([20.0, 16.0, 76.0, 80.0, 0.99])]
    faces = det.detect(photo)
    assert len(faces) == 1 and faces[0].shape == (68, 2) and np.isfinite(faces[0]).all()
    assert (np.abs(faces[0] - 48) < 96).all()  # around the box (FAN crops it with a margin)
    assert fa_mod.api.load_file_from_url is no_download  # our temporary redirect was undone


@needs_fa
def test_detector_offline_without_weights_names_files_and_folders(tmp_path, monkeypatch):
    import urllib.error

    import face_alignment.detection.sfd.sfd_detector as sfd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(_face_alignment().api, "load_file_from_url", offline)
    monkeypatch.setattr(sfd, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(L.FANDetector, "_cache", {})
    with pytest.raises(MissingWeightsError, match=r"2DFAN4-11f355bf06\.pth\.tar.*s3fd-619a316812\.pth.*models_x"):
        L.FANDetector("cpu", [tmp_path / "models_x"]).detect(np.zeros((32, 32, 3), np.uint8))


# --- the nodes ----------------------------------------------------------------------------------------------------

def pack_modules(pack):
    """The pack's own core.align / core.landmarks (ComfyUI imports the pack under another name)."""
    return sys.modules[f"{pack.__name__}.core.align"], sys.modules[f"{pack.__name__}.core.landmarks"]


def test_align_and_unalign_nodes(pack, G2):
    A, _ = pack_modules(pack)
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    unalign = pack.NODE_CLASS_MAPPINGS["SGS_UnalignFace"]()
    photos = torch.from_numpy(np.stack([synthetic_photo(9, 120, 100), synthetic_photo(10, 120, 100)])).float() / 255
    faces = [face_landmarks(50, 55, 20, 0.1, seed=9).tolist(), face_landmarks(52, 60, 24, -0.2, seed=10).tolist()]
    frames = json.dumps([{"people": [{"face_keypoints_2d": openpose_face(np.array(f))}]} for f in faces])
    out = align.align(photos, "auto", 64, 0, generator=G2, landmarks_json=frames, transform_size=128)
    aligned, transforms, used, _ = out["result"]
    assert out["ui"]["text"] == ["landmarks from landmarks_json"]
    assert aligned.shape == (2, G2.img_resolution, G2.img_resolution, 3)  # the generator's resolution wins
    assert len(transforms) == 2 and all(isinstance(t, A.AlignTransform) for t in transforms)
    expected, _ = A.align_face(photos[1], A.face_keypoints(np.array(faces[1])), G2.img_resolution, 128)
    assert torch.equal(aligned[1], expected)
    assert np.allclose(json.loads(used)[0], np.round(faces[0], 2))
    # one photo, five edited frames (an interpolation), one transform: five pasted frames
    frames_out = unalign.unalign(photos[:1], torch.rand(5, 32, 32, 3), transforms[:1], 0.1)[0]
    assert frames_out.shape == (5, 120, 100, 3)
    assert not torch.equal(frames_out[0], frames_out[1])
    with pytest.raises(A.AlignmentError, match="batch sizes do not match: 2 photo"):
        unalign.unalign(photos, torch.rand(3, 32, 32, 3), transforms, 0.1)
    with pytest.raises(A.AlignmentError, match="landmarks are given for 2 image"):
        align.align(photos[:1].expand(3, -1, -1, -1), "auto", 64, 0, landmarks_json=frames)
    with pytest.raises(A.AlignmentError, match="neither pose_keypoint nor landmarks_json"):
        align.align(photos, "landmarks input", 64, 0)


def test_align_node_uses_the_detector_when_no_landmarks(pack, monkeypatch):
    A, L = pack_modules(pack)
    calls = []
    monkeypatch.setattr(L, "dlib_installed", lambda: False)  # auto: dlib first when installed (test_dlib.py)
    monkeypatch.setattr(L, "face_alignment_installed", lambda: True)

    class FakeDetector:
        def __init__(self, device, dirs):
            calls.append((device, [str(d) for d in dirs]))

        def detect(self, image):
            assert image.dtype == np.uint8 and image.shape == (120, 100, 3)
            return [face_landmarks(30, 30, 8), face_landmarks(50, 55, 20)]

    monkeypatch.setattr(L, "FANDetector", FakeDetector)
    photo = torch.from_numpy(synthetic_photo(9, 120, 100).copy()).float()[None] / 255
    for source in ("auto", "face_alignment", "face_alignment (FAN)"):  # the last: workflows saved before dlib
        out = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]().align(photo, source, 32, 0, transform_size=32)
        aligned, (tf,), _, _ = out["result"]
        assert aligned.shape == (1, 32, 32, 3) and calls and calls[-1][1][0].endswith("landmarks")
        big, _ = A.align_face(photo[0], A.face_keypoints(face_landmarks(50, 55, 20)), 32, 32)
        assert torch.equal(aligned[0], big)  # face_index 0: the largest face
        assert out["ui"]["text"] == ["landmarks from face_alignment FAN 68-point (SFD face detector, on cpu); faces "
                                     "found per image: 2; face_index 0 used (0 = the largest)"]
    assert len(calls) == 3
    out = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]().align(photo.expand(9, -1, -1, -1), "auto", 32, 0,
                                                            transform_size=32)
    assert out["result"][0].shape == (9, 32, 32, 3)
    assert out["ui"]["text"][0].endswith("faces found per image: 2 to 2 in 9 images; face_index 0 used (0 = the "
                                         "largest)")


class FakeDlib:
    """Stands in for DlibDetector: records that it was made, finds one face."""
    made = 0

    def __init__(self, dirs):
        FakeDlib.made += 1
        self.predictor_path = Path(dirs[0]) / "shape_predictor_68_face_landmarks.dat"

    def detect(self, image):
        return [face_landmarks(50, 55, 20)]


@pytest.mark.parametrize("dlib, predictor, fan, expected", [
    (True, True, True, "dlib"),            # dlib first
    (True, True, False, "dlib"),
    (True, False, True, "face_alignment"),  # dlib without its predictor file: the next detector
    (False, False, True, "face_alignment"),
    (True, False, False, "dlib"),           # only dlib, without the file: dlib's own error (where to get it)
    (False, True, False, None),             # nothing installed: how to get either
])
def test_auto_uses_the_installed_detector(pack, monkeypatch, dlib, predictor, fan, expected):
    A, L = pack_modules(pack)
    monkeypatch.setattr(L, "dlib_installed", lambda: dlib)
    monkeypatch.setattr(L, "dlib_predictor_path", lambda dirs: Path(dirs[0]) / "p.dat" if predictor else None)
    monkeypatch.setattr(L, "face_alignment_installed", lambda: fan)
    made = []

    class Fan(FakeDlib):
        def __init__(self, device, dirs):
            made.append("face_alignment")

    class Dlib(FakeDlib):
        def __init__(self, dirs):
            made.append("dlib")
            if not predictor:
                raise L.MissingDependencyError("dlib face detection needs shape_predictor_68_face_landmarks.dat")
            super().__init__(dirs)

    monkeypatch.setattr(L, "FANDetector", Fan)
    monkeypatch.setattr(L, "DlibDetector", Dlib)
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    photo = torch.from_numpy(synthetic_photo(9, 120, 100).copy()).float()[None] / 255
    if expected is None:
        with pytest.raises(ImportError, match="no landmarks and no face detector: pip install dlib-bin "
                                              "face-recognition-models .* or pip install face-alignment"):
            align.align(photo, "auto", 32, 0, transform_size=32)
        assert made == []
        return
    if expected == "dlib" and not predictor:
        with pytest.raises(ImportError, match="needs shape_predictor_68_face_landmarks.dat"):
            align.align(photo, "auto", 32, 0, transform_size=32)
        assert made == ["dlib"]
        return
    out = align.align(photo, "auto", 32, 0, transform_size=32)
    assert made == [expected]
    said = "dlib 68-point shape predictor (shape_predictor_68_face_landmarks.dat" if expected == "dlib" else (
        "face_alignment FAN")
    assert out["ui"]["text"][0].startswith("landmarks from " + said)
    # Connected landmarks come first whatever is installed; an explicit detector ignores them.
    text = json.dumps(face_landmarks(50, 55, 20).tolist())
    assert align.align(photo, "auto", 32, 0, landmarks_json=text)["ui"]["text"] == ["landmarks from landmarks_json"]
    assert made == [expected]


def test_wrong_point_counts_through_the_node(pack):
    """4 points are refused for their count (not as a face without eyes), from JSON and from POSE_KEYPOINT."""
    align = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"]()
    photo = torch.from_numpy(synthetic_photo(9, 120, 100).copy()).float()[None] / 255
    four = [[40.0, 50.0], [60.0, 50.0], [42.0, 70.0], [58.0, 70.0]]
    expected = ("68 [x, y] points in pixels (iBUG/dlib/face_alignment), or 70 (OpenPose face), 98 (WFLW) or 5 "
                "(eyes, nose, mouth corners)")
    for source in ("auto", "landmarks input"):
        with pytest.raises(ValueError) as info:
            align.align(photo, source, 32, 0, landmarks_json=json.dumps(four))
        assert str(info.value) == f"landmarks_json: the face of image 1 has 4 points: expected {expected}"
        frame = {"people": [{"face_keypoints_2d": [v for p in four for v in (*p, 1.0)]}], "canvas_width": 100,
                 "canvas_height": 120}
        with pytest.raises(ValueError) as info:
            align.align(photo, source, 32, 0, pose_keypoint=frame)
        assert str(info.value) == (f"pose_keypoint, frame 1: person 1's face_keypoints_2d has 4 points: expected "
                                   f"{expected}, as (x, y, confidence) triples")
        assert "no face found" not in str(info.value)


def test_five_points_are_eyes_nose_mouth_corners_in_image_order(pack):
    """The 5-point order the tooltip documents: image-left eye, image-right eye, nose, image-left mouth corner,
    image-right mouth corner; it aligns as the 68 points with the same eye centres and mouth corners do."""
    A, _ = pack_modules(pack)
    lm = ibug((40, 50), (60, 52), (43, 75), (57, 76))
    five = [[40, 50], [60, 52], [50, 63], [43, 75], [57, 76]]
    assert A.face_keypoints(np.array(five)) == A.face_keypoints(lm)
    tooltip = pack.NODE_CLASS_MAPPINGS["SGS_AlignFace"].INPUT_TYPES()["optional"]["landmarks_json"][1]["tooltip"]
    assert ("the eye on the image's left (the subject's right eye), the eye on the image's right, the nose tip, the "
            "mouth corner on the image's left, the mouth corner on the image's right") in tooltip
    assert all(k in tooltip for k in ("68 points", "70 (OpenPose", "98 (WFLW)", "5 points in this order"))


def test_release_forgets_the_dlib_predictor(pack, monkeypatch):
    _, L = pack_modules(pack)
    monkeypatch.setattr(L.DlibDetector, "_cache", {"/x/shape_predictor_68_face_landmarks.dat": object()})
    pack.nodes.caches.release_models()
    assert L.DlibDetector._cache == {}


def test_dlib_missing_says_which_packages_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    with pytest.raises(MissingDependencyError, match=r"needs the 'dlib' module: pip install dlib-bin "
                                                     r"face-recognition-models \(into ComfyUI's Python"):
        L.DlibDetector([tmp_path])
    assert not L.dlib_installed() or "dlib" in sys.modules


def test_dlib_predictor_missing_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "dlib", types.ModuleType("dlib"))
    real_find_spec = L.importlib.util.find_spec
    monkeypatch.setattr(L.importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a))
    assert L.dlib_predictor_path([tmp_path]) is None
    with pytest.raises(MissingDependencyError) as info:
        L.DlibDetector([tmp_path])
    assert str(info.value) == (
        "dlib face detection needs shape_predictor_68_face_landmarks.dat: pip install face-recognition-models (into "
        "ComfyUI's Python; it ships the file), or download "
        "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2, unpack it (bunzip2) and put "
        f"shape_predictor_68_face_landmarks.dat in {tmp_path}")
    (tmp_path / "shape_predictor_68_face_landmarks.dat").write_bytes(b"x")
    assert L.DlibDetector([tmp_path]).predictor_path == tmp_path / "shape_predictor_68_face_landmarks.dat"
