"""Face parsers (BiSeNet 79999_iter.pth / seg.pth, SegFormer jonathandinu/face-parsing), their label schemas and
masks selected by class name."""

from .bisenet import BISENET_CLASSES, BiSeNet, random_bisenet
from .masks import FEATHER_DEFAULT, GROW_DEFAULT, feather_mask, grow_mask, refine_mask
from .parser import (DOWNLOADABLE, INPUT_SIZE, FaceParser, FaceParsing, colorize_labels, find_face_parser,
                     load_bisenet_state, load_face_parser, random_face_parser)
from .schemas import (ALIASES, BARBERSHOP16, BISENET19, CANONICAL_CLASSES, CELEBAMASK19, GROUPS, MERGED_CLASSES,
                      PALETTE, SCHEMAS, LabelSchema, get_schema, normalize_name, split_names)

__all__ = ["FEATHER_DEFAULT", "GROW_DEFAULT", "feather_mask", "grow_mask", "refine_mask", "BISENET_CLASSES", "BiSeNet", "random_bisenet", "DOWNLOADABLE", "INPUT_SIZE", "FaceParser", "FaceParsing",
           "colorize_labels", "find_face_parser", "load_bisenet_state", "load_face_parser", "random_face_parser",
           "ALIASES", "BARBERSHOP16", "BISENET19", "CANONICAL_CLASSES", "CELEBAMASK19", "GROUPS", "MERGED_CLASSES",
           "PALETTE", "SCHEMAS", "LabelSchema", "get_schema", "normalize_name", "split_names"]
