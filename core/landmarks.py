"""Facial landmarks for alignment: parsing landmarks that come from elsewhere, and a detector adapter.

Landmarks can come from another ComfyUI node (OpenPose/DWPose POSE_KEYPOINT, whose face has the 68 iBUG points
plus two pupils), from JSON text (a list of [x, y] points, FFHQ's metadata `{"face_landmarks": ...}`, or
POSE_KEYPOINT JSON), or from the `face_alignment` package (Bulat & Tzimiropoulos' FAN, 68 iBUG points, the
layout FFHQ was aligned with), which users install from PyPI.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .align import face_keypoints
from .errors import AlignmentError, MissingDependencyError, MissingWeightsError
from .log import logger

FACE_ALIGNMENT_PACKAGE = "face-alignment"
# Weight files the face_alignment package downloads on first use (2D landmarks + its default SFD face detector).
FAN_WEIGHTS = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


def _points_from_flat(flat: Sequence[float], width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """OpenPose's flat [x0, y0, c0, x1, ...] list -> [N, 2]; coordinates in 0..1 are scaled to the canvas."""
    arr = np.asarray(flat, dtype=np.float64)
    if arr.size % 3:
        raise AlignmentError(f"OpenPose keypoints come in (x, y, confidence) triples; got {arr.size} numbers")
    pts = arr.reshape(-1, 3)
    xy = pts[:, :2].copy()
    missing = pts[:, 2] <= 0
    if np.nanmax(np.abs(xy)) <= 1.0 + 1e-6:  # DWPose in some packs writes normalised coordinates
        xy *= [width, height]
    xy[missing] = np.nan
    return xy


def faces_from_pose_keypoint(pose: dict) -> list[np.ndarray]:
    """Faces ([N, 2] pixel arrays) of one frame of ComfyUI's POSE_KEYPOINT ({"people": [...], canvas size})."""
    if not isinstance(pose, dict) or "people" not in pose:
        raise AlignmentError("POSE_KEYPOINT frame must be a dict with a 'people' list (from an OpenPose/DWPose "
                             "preprocessor with face detection enabled)")
    w, h = float(pose.get("canvas_width", 1)), float(pose.get("canvas_height", 1))
    faces = []
    for person in pose["people"] or []:
        flat = person.get("face_keypoints_2d")
        if flat:
            faces.append(_points_from_flat(flat, w, h))
    return faces


def parse_landmarks_text(text: str) -> list[list[np.ndarray]]:
    """JSON text -> per image, a list of faces ([N, 2] arrays). Accepts: one face `[[x, y], ...]`; several faces
    `[[[x, y], ...], ...]`; FFHQ metadata `{"face_landmarks": [...]}` (or `{"in_the_wild": {...}}`); a
    POSE_KEYPOINT frame or list of frames. A single face or frame applies to the first image."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AlignmentError(f"landmarks text is not valid JSON: {e}") from e

    def one_frame(obj) -> list[np.ndarray]:
        if isinstance(obj, dict):
            if "people" in obj:
                return faces_from_pose_keypoint(obj)
            if "in_the_wild" in obj:
                obj = obj["in_the_wild"]
            if "face_landmarks" in obj:
                return [np.asarray(obj["face_landmarks"], dtype=np.float64)]
            raise AlignmentError("landmarks JSON object needs 'face_landmarks' or 'people'")
        arr = np.asarray(obj, dtype=np.float64)
        if arr.ndim == 2:
            return [arr]
        if arr.ndim == 3:
            return list(arr)
        raise AlignmentError(f"landmarks JSON must be [[x, y], ...] or a list of those; got depth {arr.ndim}")

    if isinstance(data, list) and data and isinstance(data[0], dict):
        return [one_frame(d) for d in data]
    try:
        return [one_frame(data)]
    except ValueError as e:
        if isinstance(e, AlignmentError):
            raise
        raise AlignmentError(f"landmarks JSON has ragged or non-numeric points: {e}") from e


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

    def detect(self, image_uint8: np.ndarray) -> list[np.ndarray]:
        """All faces in one RGB uint8 image [H, W, 3], as [68, 2] float64 arrays."""
        faces = self._model().get_landmarks_from_image(np.ascontiguousarray(image_uint8))
        return [np.asarray(f, dtype=np.float64)[:, :2] for f in (faces or [])]


def pick_face(faces: list[np.ndarray], index: int, what: str) -> np.ndarray:
    """Face number `index` (0 = largest) of `faces`, with a clear error when there is none."""
    usable = []
    for f in faces:
        try:
            face_keypoints(f)
        except AlignmentError:
            continue
        usable.append(np.asarray(f, dtype=np.float64)[:, :2])
    if not usable:
        raise AlignmentError(f"no face found in {what}" + (
            " (faces were listed, but without both eyes and mouth corners)" if faces else "") +
            ": use a photo where the face is visible and at least ~64 pixels wide, or give landmarks")
    def area(f):
        return float((np.nanmax(f[:, 0]) - np.nanmin(f[:, 0])) * (np.nanmax(f[:, 1]) - np.nanmin(f[:, 1])))
    order = sorted(range(len(usable)), key=lambda i: -area(usable[i]))
    if index >= len(order):
        raise AlignmentError(f"face_index {index} asked for, but {what} has only {len(order)} face(s)")
    return usable[order[index]]


__all__ = ["FANDetector", "FAN_WEIGHTS", "faces_from_pose_keypoint", "parse_landmarks_text", "pick_face"]
