"""Facial landmarks for alignment: parsing landmarks that come from elsewhere, and a detector adapter.

Landmarks can come from another ComfyUI node (OpenPose/DWPose POSE_KEYPOINT, whose face has the 68 iBUG points
plus two pupils), from JSON text (a list of [x, y] points, FFHQ's metadata `{"face_landmarks": ...}`, or
POSE_KEYPOINT JSON), or from a detector users install from PyPI:
- dlib (`pip install dlib-bin face-recognition-models`): dlib's HOG frontal face detector and its 68-point shape
  predictor `shape_predictor_68_face_landmarks.dat`, the detector FFHQ itself was aligned with; offline, no
  download at run time (the predictor ships in the face-recognition-models wheel, or sits in models/landmarks);
- face_alignment (`pip install face-alignment`): Bulat & Tzimiropoulos' FAN with the SFD face detector, 68 iBUG
  points; its first run downloads its weights (or finds them in models/landmarks).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .align import (LANDMARK_COUNTS, LANDMARK_COUNTS_TEXT, MAX_COORDINATE, MIN_PHOTO_SIDE, check_photo_size,
                    face_keypoints, short_repr)
from .errors import AlignmentError, MissingDependencyError, MissingWeightsError
from .log import logger

FACE_ALIGNMENT_PACKAGE = "face-alignment"
# Weight files the face_alignment package downloads on first use (2D landmarks + its default SFD face detector).
FAN_WEIGHTS = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


DLIB_PACKAGES = "dlib-bin face-recognition-models"  # the pip packages of the dlib detector (wheels, no compiler)
DLIB_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
DLIB_PREDICTOR_URL = "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2"  # unpack with bunzip2
# The detector names Align Face reports and accepts.
DETECTOR_DLIB = "dlib"
DETECTOR_FAN = "face_alignment"


# Landmark text is parsed whole, so its size is bounded first: 4 MB holds ~1,000 POSE_KEYPOINT frames.
MAX_LANDMARKS_TEXT = 4 * 2**20  # characters
# The deepest accepted layout is a list of POSE_KEYPOINT frames (list > frame > people > person > keypoints);
# deeper text is refused before parsing (Python's JSON parser recurses once per level).
MAX_LANDMARKS_DEPTH = 16
# Detection runs on at most this many pixels on the longer side (larger photos are downscaled first, and the
# landmarks scaled back): the SFD detector's activations grow with the image, ~1 GB at 2048 x 2048.
DETECT_MAX_SIDE = 2048


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _points_from_flat(flat: Sequence[float], width: float = 1.0, height: float = 1.0,
                      where: str = "face_keypoints_2d") -> np.ndarray:
    """OpenPose's flat [x0, y0, c0, x1, ...] list -> [N, 2]; coordinates in 0..1 are scaled to the canvas.

    Points with confidence <= 0 were not detected: they become NaN (`pick_face` skips faces missing eyes or
    mouth corners). Anything but finite numbers in a supported count raises AlignmentError naming `where`."""
    if isinstance(flat, np.ndarray):
        flat = flat.tolist()
    if not isinstance(flat, (list, tuple)):
        raise AlignmentError(f"{where} must be a flat list [x0, y0, c0, x1, ...] of numbers, got {short_repr(flat)}")
    bad = next((v for v in flat if not _is_number(v)), None)
    if bad is not None:
        raise AlignmentError(f"{where} must hold numbers (x, y, confidence per point), got {short_repr(bad)} in it")
    arr = np.asarray(flat, dtype=np.float64)
    if arr.size % 3:
        raise AlignmentError(f"OpenPose keypoints come in (x, y, confidence) triples; got {arr.size} numbers "
                             f"in {where}")
    pts = arr.reshape(-1, 3)
    if len(pts) not in LANDMARK_COUNTS:
        raise AlignmentError(f"{where} has {len(pts)} points: expected {LANDMARK_COUNTS_TEXT}, as "
                             f"(x, y, confidence) triples")
    if not np.isfinite(pts).all():
        i = int(np.argmax(~np.isfinite(pts).all(1)))
        raise AlignmentError(f"{where}: point {i + 1} is {short_repr(pts[i].tolist())}, not finite numbers; give "
                             f"(x, y, confidence) with confidence 0 for a point that was not detected")
    xy = pts[:, :2].copy()
    missing = pts[:, 2] <= 0
    if np.nanmax(np.abs(xy)) <= 1.0 + 1e-6:  # DWPose in some packs writes normalised coordinates
        xy *= [width, height]
    xy[missing] = np.nan
    return xy


def _canvas_side(pose: dict, key: str) -> float:
    value = pose.get(key, 1)
    if not _is_number(value) or not 0 < float(value) <= MAX_COORDINATE:
        raise AlignmentError(f"POSE_KEYPOINT {key} is {short_repr(value)}: expected the canvas size in pixels (a "
                             f"positive number)")
    return float(value)


def faces_from_pose_keypoint(pose: dict) -> list[np.ndarray]:
    """Faces ([N, 2] pixel arrays) of one frame of ComfyUI's POSE_KEYPOINT ({"people": [...], canvas size})."""
    if not isinstance(pose, dict) or "people" not in pose:
        raise AlignmentError("POSE_KEYPOINT frame must be a dict with a 'people' list (from an OpenPose/DWPose "
                             "preprocessor with face detection enabled)")
    w, h = _canvas_side(pose, "canvas_width"), _canvas_side(pose, "canvas_height")
    people = pose["people"] or []
    if not isinstance(people, (list, tuple)):
        raise AlignmentError(f"POSE_KEYPOINT 'people' must be a list of persons, got {short_repr(people)}")
    faces = []
    for k, person in enumerate(people):
        if not isinstance(person, dict):
            raise AlignmentError(f"POSE_KEYPOINT person {k + 1} must be a dict with 'face_keypoints_2d', got "
                                 f"{short_repr(person)}")
        flat = person.get("face_keypoints_2d")
        if flat is None or (isinstance(flat, (list, tuple, np.ndarray)) and len(flat) == 0):
            continue  # this person's face was not detected
        faces.append(_points_from_flat(flat, w, h, f"person {k + 1}'s face_keypoints_2d"))
    return faces


def _json_depth(text: str) -> int:
    """The deepest [ / { nesting of JSON text (brackets inside strings ignored), without parsing it."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    codes = np.frombuffer(unquoted.encode("utf-8", "replace"), dtype=np.uint8)
    step = np.zeros(len(codes), dtype=np.int8)
    step[(codes == ord("[")) | (codes == ord("{"))] = 1
    step[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(step, dtype=np.int32).max(initial=0))


def _refuse_constant(token: str):
    raise AlignmentError(f"{token} is not a finite number: every coordinate must be a finite number of pixels")


def _finite_number(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise AlignmentError(f"{short_repr(token, 30)} is beyond float range: every coordinate must be a finite "
                             f"number of pixels")
    return value


def _face_points(obj, where: str) -> np.ndarray:
    """One face of landmark JSON: a list of [x, y] (or [x, y, confidence]) numbers -> [N, 2] float64."""
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], list):
        raise AlignmentError(f"{where} must be a list of [x, y] points, got {short_repr(obj)}: expected "
                             f"{LANDMARK_COUNTS_TEXT}")
    for i, p in enumerate(obj):
        if not isinstance(p, list) or len(p) not in (2, 3) or not all(type(v) is float for v in p):
            raise AlignmentError(f"ragged or non-numeric points: point {i + 1} of {where} is "
                                 f"{short_repr(p)}; expected [x, y] numbers in pixels")
    if len(obj) not in LANDMARK_COUNTS:
        raise AlignmentError(f"{where} has {len(obj)} points: expected {LANDMARK_COUNTS_TEXT}")
    return np.array([p[:2] for p in obj], dtype=np.float64)


def parse_landmarks_text(text: str, source: str = "landmarks JSON") -> list[list[np.ndarray]]:
    """JSON text -> per image, a list of faces ([N, 2] arrays). Accepts: one face `[[x, y], ...]`; several faces
    `[[[x, y], ...], ...]`; FFHQ metadata `{"face_landmarks": [...]}` (or `{"in_the_wild": {...}}`); a
    POSE_KEYPOINT frame or list of frames. A single face or frame applies to the first image.

    The text is bounded (MAX_LANDMARKS_TEXT characters, MAX_LANDMARKS_DEPTH levels) before it is parsed; NaN,
    Infinity and numbers beyond float range are refused, and every face must be a supported count of [x, y]
    numbers. Errors name `source` (the node input) and the face."""
    if not isinstance(text, str):
        raise AlignmentError(f"{source} must be text, got {type(text).__name__}")
    if len(text) > MAX_LANDMARKS_TEXT:
        raise AlignmentError(f"{source} is {len(text) / 2**20:.1f} MB of text; at most {MAX_LANDMARKS_TEXT // 2**20} "
                             f"MB is read (about 1,000 frames of face keypoints): give fewer frames, or only "
                             f"the faces' points")
    depth = _json_depth(text)
    if depth > MAX_LANDMARKS_DEPTH:
        raise AlignmentError(f"{source} is nested {depth} levels deep; landmarks need at most 5 (a list of "
                             f"POSE_KEYPOINT frames) and at most {MAX_LANDMARKS_DEPTH} are read: expected "
                             f"{LANDMARK_COUNTS_TEXT}, or a list of those")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_number,
                          parse_int=_finite_number)
    except json.JSONDecodeError as e:
        raise AlignmentError(f"{source} is not valid JSON ({e}): expected {LANDMARK_COUNTS_TEXT} as "
                             f"[[x, y], ...], or a list of those") from e
    except RecursionError as e:  # not reached after the depth check; kept so no raw RecursionError escapes
        raise AlignmentError(f"{source} is nested too deeply") from e
    except AlignmentError as e:
        raise AlignmentError(f"{source}: {e}") from e

    def one_frame(obj, where: str) -> list[np.ndarray]:
        if isinstance(obj, dict):
            if "people" in obj:
                return faces_from_pose_keypoint(obj)
            if "in_the_wild" in obj:
                obj = obj["in_the_wild"]
                if not isinstance(obj, dict):
                    raise AlignmentError(f"{where}: 'in_the_wild' must be an object with 'face_landmarks'")
            if "face_landmarks" in obj:
                return [_face_points(obj["face_landmarks"], f"{where}'s face_landmarks")]
            raise AlignmentError(f"an object needs 'face_landmarks' or 'people' ({where} has keys "
                                 f"{short_repr(sorted(map(str, obj)))})")
        if isinstance(obj, list) and obj and isinstance(obj[0], list) and obj[0] and isinstance(obj[0][0], list):
            return [_face_points(face, f"face {k + 1} of {where}") for k, face in enumerate(obj)]
        if isinstance(obj, list) and obj and isinstance(obj[0], list):
            return [_face_points(obj, f"the face of {where}")]
        raise AlignmentError(f"{where} is {short_repr(obj)}: expected {LANDMARK_COUNTS_TEXT} as [[x, y], ...], "
                             f"or a list of those")

    try:
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return [one_frame(d, f"frame {i + 1}") for i, d in enumerate(data)]
        return [one_frame(data, "image 1")]
    except AlignmentError as e:
        raise AlignmentError(f"{source}: {e}") from e


class FANDetector:
    """The `face_alignment` package's 68-point 2D FAN with its SFD face detector.

    Weights are looked up in `model_dirs` (e.g. ComfyUI/models/landmarks) and torch hub's checkpoint folder;
    missing ones are downloaded by the package when online, otherwise a MissingWeightsError names them.
    """

    _lock = threading.Lock()
    _cache: dict = {}

    def __init__(self, device: str = "cpu", model_dirs: Sequence[os.PathLike] = ()):
        try:
            import face_alignment  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(
                f"face detection needs the '{FACE_ALIGNMENT_PACKAGE}' package: pip install {FACE_ALIGNMENT_PACKAGE} "
                f"(into ComfyUI's Python). Its first run downloads {', '.join(FAN_WEIGHTS)}; offline, put those "
                f"files in ComfyUI/models/landmarks. Or connect landmarks from another node "
                f"(OpenPose/DWPose face keypoints) or paste them as JSON.") from e
        self.device = str(device)
        self.model_dirs = [Path(d) for d in model_dirs]

    def _weight_files(self) -> dict[str, Path]:
        import torch.hub
        found, missing = {}, []
        places = self.model_dirs + [Path(torch.hub.get_dir()) / "checkpoints"]
        for name in FAN_WEIGHTS:
            hit = next((d / name for d in places if (d / name).is_file()), None)
            if hit is None:
                missing.append(name)
            else:
                found[name] = hit
        return found, missing, places

    def _model(self):
        import face_alignment
        key = self.device
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            found, missing, places = self._weight_files()

            import face_alignment.api as fa_api
            original = fa_api.load_file_from_url

            def resolve(url, *args, **kwargs):  # FAN weights from our folders, else the package's download
                name = os.path.basename(url.split("?")[0])
                return str(found[name]) if name in found else original(url, *args, **kwargs)

            detector_kwargs = {}
            if "s3fd-619a316812.pth" in found:
                detector_kwargs["path_to_detector"] = str(found["s3fd-619a316812.pth"])
            kwargs = dict(device=self.device, face_detector="sfd", face_detector_kwargs=detector_kwargs)
            fa_api.load_file_from_url = resolve
            try:
                try:
                    model = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, compile=False,
                                                         **kwargs)
                except TypeError:  # versions before the compile option
                    model = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)
            except (OSError, RuntimeError) as e:
                if missing:
                    raise MissingWeightsError(
                        f"face_alignment could not get its weights ({e}). Download "
                        + "; ".join(f"{FAN_WEIGHTS[n]}" for n in missing)
                        + f" and put the file(s) in one of: {', '.join(str(p) for p in places)}") from e
                raise
            finally:
                fa_api.load_file_from_url = original
            self._cache[key] = model
            logger.info("face_alignment FAN loaded on %s", self.device)
            return model

    @classmethod
    def clear_cache(cls) -> None:
        """Forget the loaded detectors (one per device); the next detection loads them again."""
        with cls._lock:
            cls._cache.clear()

    def detect(self, image_uint8: np.ndarray, what: str = "the image") -> list[np.ndarray]:
        """All faces in one RGB uint8 image [H, W, 3], as [68, 2] float64 arrays in its pixels.

        An image under 16 pixels on a side is refused; one over DETECT_MAX_SIDE pixels on its longer side is
        downscaled (antialiased) for detection and the landmarks scaled back, so the detector's memory stays
        bounded whatever the photo's size. `what` names the image in errors."""
        image, factors = detection_image(image_uint8, what)
        faces = self._model().get_landmarks_from_image(image)
        faces = [np.asarray(f, dtype=np.float64)[:, :2] for f in (faces or [])]
        return scale_back(faces, factors)


def detection_image(image_uint8: np.ndarray, what: str = "the image") -> tuple[np.ndarray, np.ndarray | None]:
    """The image a detector searches: one contiguous RGB uint8 [H, W, 3], at most DETECT_MAX_SIDE pixels on its
    longer side (larger photos are downscaled, antialiased), and the factors (x, y) back to the photo's pixels
    (None when it was not downscaled). Refuses other arrays, photos under 16 pixels on a side and photos so
    narrow that the downscaled image would be."""
    image = np.asarray(image_uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise AlignmentError(f"face detection needs one RGB uint8 image [H, W, 3]; {what} is {image.dtype} of "
                             f"shape {image.shape}")
    height, width = image.shape[:2]
    check_photo_size(height, width, what)
    scale = max(height, width) / DETECT_MAX_SIDE
    if scale <= 1:
        return np.ascontiguousarray(image), None
    small = (max(round(width / scale), 1), max(round(height / scale), 1))
    if min(small) < MIN_PHOTO_SIDE:
        raise AlignmentError(f"{what} is {width}x{height} pixels: too narrow to find a face in (it would "
                             f"be {small[0]}x{small[1]} for the detector); crop it around the face")
    from PIL import Image
    image = np.asarray(Image.fromarray(image, "RGB").resize(small, Image.BOX))
    return np.ascontiguousarray(image), np.array([width / small[0], height / small[1]])


def scale_back(faces: list[np.ndarray], factors: np.ndarray | None) -> list[np.ndarray]:
    """Landmarks found in `detection_image`'s image -> the photo's pixels."""
    if factors is None:
        return faces
    # Pixel-centre convention: centre (x + 0.5) of the small image is centre (x + 0.5) * f of the photo.
    return [(f + 0.5) * factors - 0.5 for f in faces]


def dlib_predictor_path(model_dirs: Sequence[os.PathLike] = ()) -> Path | None:
    """Where `shape_predictor_68_face_landmarks.dat` is: a copy in one of `model_dirs` (e.g. models/landmarks)
    first, else the one the face-recognition-models package ships (located without importing the package, whose
    `__init__` needs setuptools' pkg_resources); None when neither is there."""
    for d in model_dirs:
        candidate = Path(d) / DLIB_PREDICTOR
        if candidate.is_file():
            return candidate
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(root) / "models" / DLIB_PREDICTOR
        if candidate.is_file():
            return candidate
    return None


def dlib_installed() -> bool:
    """Whether the `dlib` module (from the dlib-bin or dlib package) can be imported."""
    try:
        return importlib.util.find_spec("dlib") is not None
    except (ImportError, ValueError):
        return False


def face_alignment_installed() -> bool:
    """Whether the `face_alignment` package can be imported."""
    try:
        return importlib.util.find_spec("face_alignment") is not None
    except (ImportError, ValueError):
        return False


class DlibDetector:
    """dlib's HOG frontal face detector with its 68-point shape predictor (iBUG 300-W layout): the detector FFHQ
    itself was aligned with. Offline: `shape_predictor_68_face_landmarks.dat` comes from `model_dirs` (e.g.
    ComfyUI/models/landmarks) or the face-recognition-models package; nothing is downloaded.

    The loaded predictor (~100 MB in memory) is cached per file; `clear_cache` releases it."""

    _lock = threading.Lock()
    _cache: dict = {}

    def __init__(self, model_dirs: Sequence[os.PathLike] = ()):
        try:
            import dlib  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(
                f"dlib face detection needs the 'dlib' module: pip install {DLIB_PACKAGES} (into ComfyUI's Python; "
                f"dlib-bin is a prebuilt wheel of dlib, face-recognition-models ships {DLIB_PREDICTOR}). Or choose "
                f"landmarks_source 'face_alignment' (pip install {FACE_ALIGNMENT_PACKAGE}), connect landmarks from "
                f"another node (OpenPose/DWPose face keypoints) or paste them as JSON. ({e})") from e
        self.model_dirs = [Path(d) for d in model_dirs]
        self.predictor_path = dlib_predictor_path(self.model_dirs)
        if self.predictor_path is None:
            places = ", ".join(str(d) for d in self.model_dirs) or "ComfyUI/models/landmarks"
            raise MissingDependencyError(
                f"dlib face detection needs {DLIB_PREDICTOR}: pip install face-recognition-models (into ComfyUI's "
                f"Python; it ships the file), or download {DLIB_PREDICTOR_URL}, unpack it (bunzip2) and put "
                f"{DLIB_PREDICTOR} in {places}")

    def _model(self):
        import dlib
        key = str(self.predictor_path)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            try:
                predictor = dlib.shape_predictor(key)
            except RuntimeError as e:
                raise MissingWeightsError(
                    f"{self.predictor_path} is not a dlib shape predictor dlib can read ({e}): replace it with "
                    f"{DLIB_PREDICTOR} from {DLIB_PREDICTOR_URL} (unpacked with bunzip2), or remove it to use the "
                    f"one face-recognition-models ships") from e
            model = (dlib.get_frontal_face_detector(), predictor)
            self._cache[key] = model
            logger.info("dlib 68-point shape predictor loaded from %s", key)
            return model

    @classmethod
    def clear_cache(cls) -> None:
        """Forget the loaded predictors; the next detection loads them again."""
        with cls._lock:
            cls._cache.clear()

    def detect(self, image_uint8: np.ndarray, what: str = "the image") -> list[np.ndarray]:
        """All faces in one RGB uint8 image [H, W, 3], as [68, 2] float64 arrays in its pixels.

        The photo is bounded as for FAN (`detection_image`: at least 16 pixels a side, downscaled to
        DETECT_MAX_SIDE). dlib's detector finds faces from ~80 pixels wide; images up to half DETECT_MAX_SIDE are
        searched at twice their size too (faces from ~40 pixels), as dlib's examples and FFHQ-style alignment
        scripts do, so the search never runs on more than DETECT_MAX_SIDE pixels a side."""
        image, factors = detection_image(image_uint8, what)
        detector, predictor = self._model()
        upsample = 1 if 2 * max(image.shape[:2]) <= DETECT_MAX_SIDE else 0
        faces = []
        for box in detector(image, upsample):
            shape = predictor(image, box)
            faces.append(np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64))
        return scale_back(faces, factors)


def pick_face(faces: list[np.ndarray], index: int, what: str, strict: bool = False) -> np.ndarray:
    """Face number `index` (0 = largest) of `faces`, with a clear error when there is none.

    A face without usable eyes and mouth corners is skipped (a detector or pose estimator lists such faces);
    with `strict` (landmarks a user gave) it raises its own error instead, naming the face."""
    usable, reasons = [], []
    for k, f in enumerate(faces):
        try:
            face_keypoints(f)
        except AlignmentError as e:
            if strict:
                raise AlignmentError(f"{what}, face {k + 1}: {e}") from e
            reasons.append(f"face {k + 1}: {e}")
            continue
        usable.append(np.asarray(f, dtype=np.float64)[:, :2])
    if not usable:
        raise AlignmentError(f"no face found in {what}" + (
            f" (faces were listed, but without both eyes and mouth corners; {reasons[0]})" if faces else "") +
            ": use a photo where the face is visible and at least ~64 pixels wide, or give landmarks")
    def area(f):
        return float((np.nanmax(f[:, 0]) - np.nanmin(f[:, 0])) * (np.nanmax(f[:, 1]) - np.nanmin(f[:, 1])))
    order = sorted(range(len(usable)), key=lambda i: -area(usable[i]))
    if index >= len(order):
        raise AlignmentError(f"face_index {index} asked for, but {what} has only {len(order)} face(s)")
    return usable[order[index]]


__all__ = ["DETECTOR_DLIB", "DETECTOR_FAN", "DETECT_MAX_SIDE", "DLIB_PACKAGES", "DLIB_PREDICTOR", "FAN_WEIGHTS",
           "MAX_LANDMARKS_DEPTH", "MAX_LANDMARKS_TEXT", "DlibDetector", "FANDetector", "detection_image",
           "dlib_installed", "dlib_predictor_path", "face_alignment_installed", "faces_from_pose_keypoint",
           "parse_landmarks_text", "pick_face", "scale_back"]
