"""Face alignment nodes: FFHQ-style Align Face, and Unalign Face to paste an edit back into the photo."""

from __future__ import annotations

import json

import numpy as np
import torch

from ..core import align as A
from ..core import landmarks as L
from ..core.errors import MissingDependencyError
from . import comfy_env
from .caches import add_release_hook
from .registry import register_node
from .types import ALIGN_TRANSFORM, CATEGORY_ROOT, GENERATOR

# The face detectors (dlib's predictor per file, FAN per device) are loaded by core and released with the pack's
# other models.
add_release_hook("landmarks", lambda device: (L.FANDetector.clear_cache(), L.DlibDetector.clear_cache()))

_SOURCES = ["auto", L.DETECTOR_DLIB, L.DETECTOR_FAN, "landmarks input"]
_LEGACY_SOURCES = {"face_alignment (FAN)": L.DETECTOR_FAN}  # the value before dlib (workflows saved with it)

_FIVE_POINTS = ("5 points in this order, left and right as seen in the image: the eye on the image's left (the "
                "subject's right eye), the eye on the image's right, the nose tip, the mouth corner on the image's "
                "left, the mouth corner on the image's right (RetinaFace / InsightFace / MTCNN order)")


def _detector(source: str):
    """The face detector for `source` (dlib, face_alignment, or auto: dlib if installed, else face_alignment) and
    a description of it for the node's info. Auto with neither installed says how to get either."""
    dirs = comfy_env.landmark_dirs()
    if source == "auto":
        if L.dlib_installed() and L.dlib_predictor_path(dirs) is not None:
            source = L.DETECTOR_DLIB
        elif L.face_alignment_installed():
            source = L.DETECTOR_FAN
        elif L.dlib_installed():
            source = L.DETECTOR_DLIB  # dlib without its predictor file: its error says where to get it
        else:
            raise MissingDependencyError(
                f"Align Face has no landmarks and no face detector: pip install {L.DLIB_PACKAGES} (dlib's 68-point "
                f"predictor, the detector FFHQ was aligned with; offline, nothing downloaded at run time) or pip "
                f"install {L.FACE_ALIGNMENT_PACKAGE} (FAN; downloads its weights on first use) into ComfyUI's "
                f"Python, then restart ComfyUI. Or connect landmarks (pose_keypoint from an OpenPose/DWPose "
                f"preprocessor with face detection) or type them into landmarks_json.")
    if source == L.DETECTOR_DLIB:
        detector = L.DlibDetector(dirs)
        path = detector.predictor_path
        return detector, f"dlib 68-point shape predictor ({path.name} from {path.parent})"
    device = comfy_env.torch_device("auto")
    device = "cpu" if device.type == "mps" else str(device)
    return L.FANDetector(device, dirs), f"face_alignment FAN 68-point (SFD face detector, on {device})"


def _landmark_frames(batch: int, pose_keypoint, landmarks_json: str):
    """Per image, the list of faces given by the inputs (None when no landmarks were connected)."""
    if pose_keypoint is not None:
        frames = pose_keypoint if isinstance(pose_keypoint, list) else [pose_keypoint]
        faces = []
        for k, frame in enumerate(frames):
            try:
                faces.append(L.faces_from_pose_keypoint(frame))
            except A.AlignmentError as e:
                raise A.AlignmentError(f"pose_keypoint, frame {k + 1}: {e}") from e
    elif landmarks_json is not None and (not isinstance(landmarks_json, str) or landmarks_json.strip()):
        faces = L.parse_landmarks_text(landmarks_json, "landmarks_json")
    else:
        return None
    if len(faces) == 1 and batch > 1:
        return faces * batch
    if len(faces) != batch:
        raise A.AlignmentError(f"landmarks are given for {len(faces)} image(s) but the batch has {batch}")
    return faces


def _image_batch(image, name: str) -> torch.Tensor:
    """An IMAGE input as [B, H, W, C] with B >= 1 (a single [H, W, C] image is a batch of one)."""
    if not isinstance(image, torch.Tensor):
        raise A.AlignmentError(f"{name} must be an IMAGE tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] < 1:
        raise A.AlignmentError(f"{name} must be a batch of images [B, H, W, C] with at least one image, got shape "
                               f"{tuple(image.shape)}")
    return image


def _photo_masks(mask, image: torch.Tensor) -> torch.Tensor:
    """Align Face's mask input as [1 or B, H, W]: one mask for every image of the batch, or one per image; the
    size is checked per face against its transform (the photo's size, or scaled with the same aspect ratio)."""
    masks = A.mask_batch(mask, "mask")
    batch, height, width = image.shape[0], image.shape[1], image.shape[2]
    if masks.shape[0] not in (1, batch):
        raise A.AlignmentError(f"mask is a batch of {masks.shape[0]} but image is a batch of {batch}: connect one "
                               f"mask (used for every image) or one per image ({batch})")
    mh, mw = masks.shape[1:]
    if abs((mw / width) / (mh / height) - 1) > A.ASPECT_TOLERANCE:
        raise A.AlignmentError(f"mask is {mw}x{mh} (width x height) but the image is {width}x{height}: give a mask "
                               f"of the photo's size (e.g. the MASK of the same Load Image, or SolidMask with width "
                               f"{width} and height {height}), or one scaled to the same aspect ratio")
    return masks


@register_node("SGS_AlignFace", "Align Face")
class AlignFace:
    DESCRIPTION = ("Crops, rotates and scales a photo around its face exactly as the FFHQ dataset was made (from the "
                   "eye and mouth landmarks), which is what face generators and inversion expect. Landmarks come from "
                   "another node (OpenPose/DWPose face keypoints, JSON) or from a detector: dlib's 68-point predictor "
                   "(pip install dlib-bin face-recognition-models; offline, the detector FFHQ was aligned with) or "
                   "the face_alignment package. Keep the transform to paste the edited face back with Unalign Face. "
                   "A connected MASK on the photo comes out warped into each aligned face's frame; without one, the "
                   "mask output marks the aligned pixels that came from the photo (1) and FFHQ's padding (0).")
    CATEGORY = f"{CATEGORY_ROOT}/align"
    RETURN_TYPES = ("IMAGE", ALIGN_TRANSFORM, "STRING", "MASK")
    RETURN_NAMES = ("aligned", "transform", "landmarks", "mask")
    OUTPUT_TOOLTIPS = ("The aligned face(s), square, at the generator's resolution (or output_size).",
                       "Where each aligned image came from, for Unalign Face.",
                       ("The landmarks used, as JSON (one list of [x, y] points per image): reuse or inspect them. "
                        "Which detector (or input) gave them is shown on the node."),
                       ("Each aligned face's own mask: the connected mask warped into that face's aligned frame (0 "
                        "where the aligned image is padding outside the photo); with no mask connected, 1 where the "
                        "aligned pixels came from the photo and 0 where they are FFHQ's padding (invert it to "
                        "inpaint the padding)."))
    FUNCTION = "align"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Photo(s) with a face; each image of a batch is aligned on its own."}),
                "landmarks_source": (_SOURCES, {"default": "auto", "tooltip":
                                     "auto: the connected pose_keypoint / landmarks_json if any, else the first "
                                     "installed detector: dlib, then face_alignment. dlib: dlib's HOG face detector "
                                     "and 68-point predictor, as FFHQ was aligned (pip install dlib-bin "
                                     "face-recognition-models, or shape_predictor_68_face_landmarks.dat in "
                                     "models/landmarks; offline). face_alignment: FAN (pip install face-alignment; "
                                     "downloads its weights on first use). landmarks input: only the connected "
                                     "pose_keypoint / landmarks_json. The node shows which was used."}),
                "output_size": ("INT", {"default": 1024, "min": 8, "max": 8192, "step": 8, "tooltip":
                                "Side of the aligned image; ignored when a generator is connected (its resolution "
                                "is used)."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 64,
                                       "tooltip": "Which face when there are several: 0 = the largest."}),
            },
            "optional": {
                "generator": (GENERATOR, {"tooltip": "Align at this generator's resolution."}),
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Face keypoints from an OpenPose/DWPose preprocessor "
                                  "(enable its face detection)."}),
                "landmarks_json": ("STRING", {"default": "", "multiline": True, "tooltip":
                                   "Landmarks as JSON, [x, y] in pixels of the photo: [[x, y], ...] with 68 points "
                                   "(iBUG 300-W order: jaw 1-17, brows 18-27, nose 28-36, eyes 37-48, mouth 49-68; "
                                   "dlib, face_alignment), 70 (OpenPose/DWPose face: the 68 plus two pupils), 98 "
                                   "(WFLW) or " + _FIVE_POINTS + "; FFHQ's {\"face_landmarks\": ...}; a "
                                   "POSE_KEYPOINT frame; or a list of those, one per image."}),
                "transform_size": ("INT", {"default": A.FFHQ_TRANSFORM_SIZE, "min": 8, "max": 8192, "step": 8,
                                           "tooltip": "Resolution of FFHQ's intermediate warp before the final "
                                           "antialiased resize (4096 as FFHQ; smaller is faster)."}),
                "rotate_level": ("BOOLEAN", {"default": True, "tooltip": "Rotate so the eyes are level (FFHQ)."}),
                "enable_padding": ("BOOLEAN", {"default": True, "tooltip": "Fill the area outside the photo with "
                                   "blurred reflection, as FFHQ did (else black)."}),
                "mask": ("MASK", {"tooltip": "A mask on the photo (SAM, a face parser, a painted mask, SolidMask): "
                         "warped into each aligned face's frame and given as the mask output. The photo's size (or "
                         "its aspect ratio, scaled); one mask for every image, or one per image."}),
            },
        }

    def align(self, image, landmarks_source, output_size, face_index, generator=None, pose_keypoint=None,
              landmarks_json="", transform_size=A.FFHQ_TRANSFORM_SIZE, rotate_level=True, enable_padding=True,
              mask=None):
        image = _image_batch(image, "image")
        masks = None if mask is None else _photo_masks(mask, image)
        size = int(generator.img_resolution) if generator is not None else int(output_size)
        source = _LEGACY_SOURCES.get(landmarks_source, landmarks_source)
        if source not in _SOURCES:
            raise A.AlignmentError(f"landmarks_source is {A.short_repr(landmarks_source)}: expected one of "
                                   f"{', '.join(_SOURCES)}")
        detecting = source in (L.DETECTOR_DLIB, L.DETECTOR_FAN)
        given = None if detecting else _landmark_frames(image.shape[0], pose_keypoint, landmarks_json)
        if given is None and source == "landmarks input":
            raise A.AlignmentError("landmarks_source is 'landmarks input' but neither pose_keypoint nor "
                                   "landmarks_json is given")
        detector = None
        if given is None:
            detector, info = _detector(source)
        else:
            info = "the connected pose_keypoint" if pose_keypoint is not None else "landmarks_json"
        progress = comfy_env.Progress(image.shape[0])
        aligned, transforms, used, counts, aligned_masks = [], [], [], [], []
        for i in range(image.shape[0]):
            comfy_env.throw_if_interrupted()
            photo = image[i]
            what = f"image {i + 1} of {image.shape[0]}"
            if given is not None:
                # Typed landmarks are refused with their own reason; pose estimators list faces without eyes.
                points = L.pick_face(given[i], int(face_index), what, strict=pose_keypoint is None)
            else:
                pixels = A.to_uint8_rgb(photo, what)
                try:
                    faces = detector.detect(pixels)
                except A.AlignmentError as e:  # the detector's refusals say "the image": say which one
                    raise A.AlignmentError(f"{what}: {e}") from e
                points = L.pick_face(faces, int(face_index), what)
                counts.append(len(faces))
            out, tf = A.align_face(photo, A.face_keypoints(points), size, int(transform_size),
                                   bool(enable_padding), bool(rotate_level), what=what)
            aligned.append(out)
            transforms.append(tf)
            if masks is None:
                aligned_masks.append(A.photo_coverage(tf, size))
            else:
                aligned_masks.append(A.align_mask(masks[i if masks.shape[0] > 1 else 0], tf, size,
                                                  what=f"mask {i + 1 if masks.shape[0] > 1 else 1} of "
                                                       f"{masks.shape[0]}")[0])
            used.append(np.round(points, 2).tolist())
            progress.update(i + 1)
        images = torch.stack(aligned).to(comfy_env.intermediate_device())
        aligned_masks = torch.stack(aligned_masks).to(comfy_env.intermediate_device())
        text = f"landmarks from {info}"
        if counts:
            found = (", ".join(str(c) for c in counts) if len(counts) <= 8 else
                     f"{min(counts)} to {max(counts)} in {len(counts)} images")
            text += f"; faces found per image: {found}; face_index {int(face_index)} used (0 = the largest)"
        return {"ui": {"text": [text]}, "result": (images, transforms, json.dumps(used), aligned_masks)}


@register_node("SGS_UnalignFace", "Unalign Face")
class UnalignFace:
    DESCRIPTION = ("Pastes edited aligned faces back into the original photo with a soft edge, undoing Align Face's "
                   "crop, rotation and scale. A batch of edits (e.g. interpolation frames) is pasted into the same "
                   "photo, frame by frame. The blend_mask output is the mask it pasted with, in the photo's frame "
                   "(e.g. to inpaint the seam with a diffusion model).")
    CATEGORY = f"{CATEGORY_ROOT}/align"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "blend_mask")
    OUTPUT_TOOLTIPS = ("The photo(s) with the edited face pasted in, at the photo's size.",
                       ("The blend mask used, in the photo's frame (image = mask x edit + (1 - mask) x photo): 1 "
                        "where the edit replaced the photo, the feathered ramp where they mix. Grow it into a seam "
                        "band (e.g. GrowMask) to inpaint the seam with a diffusion model."))
    FUNCTION = "unalign"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": ("IMAGE", {"tooltip": "The photo(s) given to Align Face."}),
                "edited": ("IMAGE", {"tooltip": "Edited aligned faces (any resolution, e.g. the generator's)."}),
                "transform": (ALIGN_TRANSFORM, {"tooltip": "The transform output of Align Face."}),
                "feather": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 0.5, "step": 0.01, "tooltip":
                            "Width of the soft edge as a fraction of the face square (0 = hard edge)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Where to use the edit, in aligned-image space (e.g. a face-parsing "
                                  "mask, or Align Face's mask output for a mask drawn on the photo); replaces the "
                                  "feathered square."}),
            },
        }

    def unalign(self, original, edited, transform, feather, mask=None):
        original, edited = _image_batch(original, "original"), _image_batch(edited, "edited")
        transforms = list(transform) if isinstance(transform, (list, tuple)) else [transform]
        if not transforms:
            raise A.AlignmentError("transform is an empty list: connect the transform output of Align Face")
        # A transform saved as JSON (to_dict) comes back as a dict; anything else is refused by unalign_face.
        transforms = [A.AlignTransform.from_dict(t) if isinstance(t, dict) else t for t in transforms]
        counts = {original.shape[0], edited.shape[0], len(transforms)}
        n = max(counts)
        if counts - {1, n}:
            raise A.AlignmentError(f"batch sizes do not match: {original.shape[0]} photo(s), {edited.shape[0]} "
                                   f"edit(s), {len(transforms)} transform(s); each must be 1 or the same number")
        if mask is not None and mask.ndim == 2:
            mask = mask[None]
        if mask is not None and (mask.ndim != 3 or mask.shape[0] not in (1, n)):
            raise A.AlignmentError(f"mask must be one [H, W] mask or a batch of {n}, got shape {tuple(mask.shape)}")
        out, blends = [], []
        for i in range(n):
            comfy_env.throw_if_interrupted()
            photo = original[i if original.shape[0] > 1 else 0]
            m = None if mask is None else mask[i if mask.shape[0] > 1 else 0]
            image, blend = A.unalign_face_and_blend(photo, edited[i if edited.shape[0] > 1 else 0],
                                                    transforms[i if len(transforms) > 1 else 0], float(feather), m)
            out.append(image)
            blends.append(blend)
        device = comfy_env.intermediate_device()
        return torch.stack(out).to(device), torch.stack(blends).to(device)

