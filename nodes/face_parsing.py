"""Face parsing nodes: Load Face Parser, Face Parse (IMAGE → MASK of named classes, a colour preview and the
parsing result) and Face Parsing Mask (more masks from one parsing result)."""

from __future__ import annotations

import torch

from ..core.models import face_parsing as FP
from . import comfy_env
from .caches import ModelCache
from .convert import comfy_to_generator
from .registry import register_node
from .types import CATEGORY_ROOT, FACE_PARSER, FACE_PARSING

_cache = ModelCache("face_parser", max_items=2)   # by (file, mtime, size, device)

# 'auto' entries: a published parser found in models/face_parsing, else downloaded from the Hugging Face Hub.
AUTO_PARSERS = {
    "auto: BiSeNet 79999_iter.pth (19 classes, bisenet19)": "bisenet19",
    "auto: Barbershop seg.pth (16 classes, barbershop16)": "barbershop16",
    "auto: SegFormer jonathandinu/face-parsing (19 classes, celebamask19)": "celebamask19",
}
DEFAULT_CLASSES = "hair"
CLASS_TOOLTIP = (
    "Class names, comma separated (any case; spaces or hyphens for underscores). Classes: "
    + ", ".join(FP.CANONICAL_CLASSES) + ". Merged pairs: eyes, brows, ears (Barbershop's seg.pth has only these, "
    "not left_/right_). Groups: " + ", ".join(FP.GROUPS) + ". Short names such as l_eye, u_lip, eye_g, ear_r, "
    "neck_l also work. Selected by name, so the same text works with every parser's label order.")


def parser_files() -> list[str]:
    return comfy_env.list_files(comfy_env.face_parsing_dirs(), FP.parser.WEIGHT_SUFFIXES)


def _parser_path(name: str):
    """(path of the file or folder, its cache stamp) for a choice of Load Face Parser."""
    if name in AUTO_PARSERS:
        dirs = comfy_env.face_parsing_dirs()
        path = FP.find_face_parser(AUTO_PARSERS[name], dirs)
    else:
        comfy_env.check_name(name, "face parser file", "models/face_parsing")
        path = comfy_env.find_in_folders(comfy_env.face_parsing_dirs(), name)
        if path is None:
            raise FileNotFoundError(f"face parser {name!r} not found in "
                                    f"{', '.join(map(str, comfy_env.face_parsing_dirs()))}; put 79999_iter.pth, "
                                    f"seg.pth or a SegFormer folder (config.json + model.safetensors) in "
                                    f"models/face_parsing")
    weights = path / "model.safetensors" if path.is_dir() else path
    stat = weights.stat()
    return path, (str(path), stat.st_mtime_ns, stat.st_size)


def describe(parser: FP.FaceParser) -> str:
    s = parser.schema
    return (f"{parser.kind} face parser, schema {s.name} ({s.num_classes} classes: {', '.join(s.classes)}), input "
            f"{parser.input_size} px, from {parser.source}")


@register_node("SGS_LoadFaceParser", "Load Face Parser")
class LoadFaceParser:
    DESCRIPTION = ("Loads a face parser from models/face_parsing: BiSeNet 79999_iter.pth (19 classes, the file most "
                   "face tools use), Barbershop's seg.pth (16 classes), or the SegFormer jonathandinu/face-parsing "
                   "(config.json + model.safetensors, needs transformers). The label order is detected from the file; "
                   "'auto' entries download the published file from the Hugging Face Hub when it is not there. Read "
                   "safely: nothing in the file is executed. Loaded once and cached.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (FACE_PARSER, "STRING")
    RETURN_NAMES = ("face_parser", "info")
    OUTPUT_TOOLTIPS = ("The face parser, for Face Parse.", "Its kind, label schema and classes.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        choices = list(AUTO_PARSERS) + parser_files()
        return {"required": {
            "parser_name": (choices, {"default": choices[0], "tooltip": "A file from models/face_parsing (a "
                            "SegFormer's model.safetensors loads its folder with the config.json beside it), or "
                            "'auto': that published parser from models/face_parsing, else downloaded there."}),
            "device": (comfy_env.DEVICE_CHOICES, {"default": "auto", "tooltip": "Where the parser runs; 'auto' "
                       "follows ComfyUI."}),
        }}

    @classmethod
    def IS_CHANGED(cls, parser_name, device):
        try:
            return "-".join(map(str, _parser_path(parser_name)[1]))
        except Exception:  # noqa: BLE001 - missing: load() reports it
            return parser_name

    def load(self, parser_name, device):
        path, stamp = _parser_path(parser_name)
        dev = comfy_env.torch_device(device)

        def read():
            with torch.inference_mode(False):  # usable in optimisations (Segment Composite's alignment) later
                return FP.load_face_parser(path, device=dev)

        parser = _cache.get_or_load((*stamp, str(dev)), read)
        info = describe(parser)
        return {"ui": {"text": [info]}, "result": (parser, info)}


def _mask_inputs() -> dict:
    return {
        "grow": ("INT", {"default": FP.GROW_DEFAULT, "min": -FP.masks.MAX_GROW, "max": FP.masks.MAX_GROW,
                         "tooltip": "Grow the mask by this many pixels (negative: shrink)."}),
        "feather": ("FLOAT", {"default": float(FP.FEATHER_DEFAULT), "min": 0.0, "max": float(FP.masks.MAX_FEATHER),
                              "step": 0.5, "tooltip": "Soft edge width in pixels (Gaussian blur); 0 = hard edges."}),
    }


def _mask(parsing: FP.FaceParsing, classes: str, grow: int, feather: float) -> torch.Tensor:
    mask = FP.refine_mask(parsing.mask(classes), grow=grow, feather=feather)
    return mask.to(comfy_env.intermediate_device())


@register_node("SGS_FaceParse", "Face Parse")
class FaceParse:
    DESCRIPTION = ("Parses faces into classes (skin, hair, eyes, lips, ...) with a face parser, for a batch of "
                   "images: a MASK of the chosen classes, a colour preview of every class, and the parsing result "
                   "for Face Parsing Mask (more masks without parsing again). Aligned face crops work best (the "
                   "parsers were trained on CelebAMask-HQ faces).")
    CATEGORY = f"{CATEGORY_ROOT}/face"
    RETURN_TYPES = ("MASK", "IMAGE", FACE_PARSING)
    RETURN_NAMES = ("mask", "preview", "parsing")
    OUTPUT_TOOLTIPS = ("1 on the chosen classes, at the images' size, one per image.",
                       "Every class in its own colour (the same colour for a class with every parser).",
                       "The label maps with their label schema, for Face Parsing Mask.")
    FUNCTION = "parse"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_parser": (FACE_PARSER, {"tooltip": "From Load Face Parser."}),
                "image": ("IMAGE", {"tooltip": "Face images (a batch works); any size, resized to the parser's "
                                               "512 px and the results back."}),
                "classes": ("STRING", {"default": DEFAULT_CLASSES, "tooltip": CLASS_TOOLTIP}),
            },
            "optional": _mask_inputs(),
        }

    def parse(self, face_parser, image, classes, grow=FP.GROW_DEFAULT, feather=float(FP.FEATHER_DEFAULT)):
        face_parser.schema.indices(classes)  # bad names fail before the parser runs
        x = comfy_to_generator(image)
        labels = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], FP.parser.PARSE_BATCH):
                comfy_env.throw_if_interrupted()
                labels.append(face_parser.parse(x[start:start + FP.parser.PARSE_BATCH]).labels.cpu())
        parsing = FP.FaceParsing(torch.cat(labels), face_parser.schema)
        preview = parsing.colorize().permute(0, 2, 3, 1).contiguous().to(comfy_env.intermediate_device())
        return (_mask(parsing, classes, grow, feather), preview, parsing)


@register_node("SGS_FaceParsingMask", "Face Parsing Mask")
class FaceParsingMask:
    DESCRIPTION = ("A MASK of the chosen classes from a parsing result of Face Parse: one parse drives several "
                   "masks (hair, face, background, ...) without running the parser again.")
    CATEGORY = f"{CATEGORY_ROOT}/face"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 on the chosen classes, at the parsed images' size, one per image.",)
    FUNCTION = "mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "parsing": (FACE_PARSING, {"tooltip": "From Face Parse."}),
                "classes": ("STRING", {"default": DEFAULT_CLASSES, "tooltip": CLASS_TOOLTIP}),
            },
            "optional": _mask_inputs(),
        }

    def mask(self, parsing, classes, grow=FP.GROW_DEFAULT, feather=float(FP.FEATHER_DEFAULT)):
        return (_mask(parsing, classes, grow, feather),)
