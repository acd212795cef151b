"""Label schemas of the face parsers in circulation, with class names shared across them.

Three incompatible label orders are in use (methods-edits.md B.2): the same integer means a different class in
each, so a label map always travels with its schema and masks are selected by class NAME, never by index.

- `bisenet19`: zllrunning's BiSeNet `79999_iter.pth` (CelebAMask-HQ classes in the order of its
  `prepropess_data.py`; hair = 17).
- `barbershop16`: Barbershop's BiSeNet `seg.pth` (left/right eyes, brows and ears merged; hair = 10).
- `celebamask19`: the SegFormer `jonathandinu/face-parsing` (CelebAMask-HQ order of its config.json; hair = 13).

Names: the canonical classes below; the merged classes `eyes`, `brows`, `ears` (one class in barbershop16, two
elsewhere); groups (`lips`, `face`, `head`, ...); and the short names of the datasets and other packs (`l_eye`,
`u_lip`, `eye_g`, `ear_r`, `neck_l`, ...). Left and right are the datasets' `l_`/`r_` labels as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch

# Canonical classes: every schema's classes are these or merges of them.
CANONICAL_CLASSES = ("background", "skin", "nose", "eyeglasses", "left_eye", "right_eye", "left_brow", "right_brow",
                     "left_ear", "right_ear", "earring", "mouth", "upper_lip", "lower_lip", "hair", "hat", "neck",
                     "necklace", "cloth")

# Classes some schemas have as one label (barbershop16).
MERGED_CLASSES = {
    "eyes": ("left_eye", "right_eye"),
    "brows": ("left_brow", "right_brow"),
    "ears": ("left_ear", "right_ear"),
}

# Names for sets of classes, valid on every schema.
GROUPS = {
    "lips": ("upper_lip", "lower_lip"),
    "mouth_area": ("mouth", "upper_lip", "lower_lip"),
    "face": ("skin", "nose", "left_eye", "right_eye", "left_brow", "right_brow", "mouth", "upper_lip", "lower_lip"),
    "head": ("skin", "nose", "eyeglasses", "left_eye", "right_eye", "left_brow", "right_brow", "left_ear",
             "right_ear", "earring", "mouth", "upper_lip", "lower_lip", "hair", "hat"),
    "accessories": ("eyeglasses", "earring", "hat", "necklace"),
    "foreground": tuple(c for c in CANONICAL_CLASSES if c != "background"),
}

# Other spellings (datasets, other packs, plurals) -> a name above.
ALIASES = {
    "bg": "background", "l_eye": "left_eye", "r_eye": "right_eye", "l_brow": "left_brow", "r_brow": "right_brow",
    "l_ear": "left_ear", "r_ear": "right_ear", "eye_g": "eyeglasses", "glasses": "eyeglasses", "ear_r": "earring",
    "earrings": "earring", "neck_l": "necklace", "u_lip": "upper_lip", "l_lip": "lower_lip", "clothes": "cloth",
    "clothing": "cloth", "eyebrows": "brows", "eyebrow": "brows", "eye": "eyes", "ear": "ears", "lip": "lips",
    "left_eyebrow": "left_brow", "right_eyebrow": "right_brow", "teeth": "mouth",
}

# A fixed colour per name (RGB 0..255): the same class has the same colour in every schema's preview.
PALETTE = {
    "background": (0, 0, 0), "skin": (204, 153, 119), "nose": (255, 153, 51), "eyeglasses": (153, 0, 204),
    "left_eye": (0, 102, 255), "right_eye": (0, 204, 255), "eyes": (0, 153, 255),
    "left_brow": (102, 51, 0), "right_brow": (153, 102, 51), "brows": (128, 77, 26),
    "left_ear": (255, 204, 0), "right_ear": (204, 255, 0), "ears": (230, 230, 0),
    "earring": (255, 0, 255), "mouth": (255, 0, 0), "upper_lip": (204, 0, 102), "lower_lip": (255, 102, 153),
    "hair": (102, 51, 153), "hat": (0, 153, 0), "neck": (255, 204, 153), "necklace": (0, 255, 153),
    "cloth": (51, 102, 153),
}


def normalize_name(name: str) -> str:
    """'Left Eye', 'left-eye', ' left_eye ' -> 'left_eye'; aliases ('l_eye', 'u_lip', ...) -> their name."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return ALIASES.get(key, key)


def _atoms(name: str) -> frozenset:
    """The canonical classes a normalised name covers."""
    if name in CANONICAL_CLASSES:
        return frozenset({name})
    if name in MERGED_CLASSES:
        return frozenset(MERGED_CLASSES[name])
    if name in GROUPS:
        return frozenset(GROUPS[name])
    raise KeyError(name)


def split_names(names: Union[str, Iterable[str]]) -> list[str]:
    """A comma (or newline) separated string, or a list of names -> the non-empty names, stripped."""
    if isinstance(names, str):
        names = re.split(r"[,\n;]", names)
    return [n.strip() for n in names if str(n).strip()]


@dataclass(frozen=True)
class LabelSchema:
    """What each label integer of a parser means. `classes[i]` is the name of label i: a canonical class or a
    merged one (`eyes`, `brows`, `ears`)."""

    name: str
    classes: tuple
    description: str = ""

    def __post_init__(self):
        seen: set = set()
        for c in self.classes:
            atoms = _atoms(c)  # KeyError for a name that is neither canonical nor merged
            if c in GROUPS or atoms & seen:
                raise ValueError(f"schema {self.name!r}: class {c!r} is a group or overlaps another class")
            seen |= atoms

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def valid_names(self) -> list[str]:
        """Every name this schema can select: its classes, then the groups (and merged names) it covers."""
        out = list(self.classes)
        for name in [*MERGED_CLASSES, *GROUPS]:
            if name not in out:
                try:
                    self.indices([name])
                    out.append(name)
                except ValueError:
                    pass
        return out

    def indices(self, names: Union[str, Iterable[str]]) -> list[int]:
        """The sorted label integers of `names` (a comma list or a sequence of class/group names).

        Raises:
            ValueError: an unknown name (the message lists the valid ones), no name at all, or a class this schema
                merges with another (e.g. 'left_eye' on barbershop16: select 'eyes').
        """
        wanted = split_names(names)
        if not wanted:
            raise ValueError(f"no class names given; choose from: {', '.join(self.valid_names())}")
        out: set = set()
        for raw in wanted:
            name = normalize_name(raw)
            try:
                atoms = _atoms(name)
            except KeyError:
                raise ValueError(f"unknown face class {raw!r} for the {self.name} schema; valid names: "
                                 f"{', '.join(self.valid_names())}") from None
            for i, c in enumerate(self.classes):
                cls_atoms = _atoms(c)
                if not cls_atoms & atoms:
                    continue
                if not cls_atoms <= atoms:
                    raise ValueError(f"the {self.name} schema has no class {raw!r}: it merges "
                                     f"{' and '.join(sorted(cls_atoms))} into one class {c!r}; select {c!r} instead")
                out.add(i)
            covered = set().union(*(_atoms(self.classes[i]) for i in out)) if out else set()
            if not atoms <= covered:
                missing = sorted(atoms - covered)
                raise ValueError(f"the {self.name} schema has no label for {', '.join(missing)} (asked for {raw!r})")
        return sorted(out)

    def lookup_table(self, names: Union[str, Iterable[str]], device=None) -> torch.Tensor:
        """A `[num_classes]` bool table: True for the labels of `names` (`table[labels]` is the mask)."""
        table = torch.zeros(self.num_classes, dtype=torch.bool, device=device)
        table[self.indices(names)] = True
        return table

    def palette(self) -> torch.Tensor:
        """`[num_classes, 3]` uint8 colours of this schema's labels (by name: stable across schemas)."""
        return torch.tensor([PALETTE[c] for c in self.classes], dtype=torch.uint8)


BISENET19 = LabelSchema("bisenet19", (
    "background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "eyeglasses", "left_ear", "right_ear",
    "earring", "nose", "mouth", "upper_lip", "lower_lip", "neck", "necklace", "cloth", "hair", "hat"),
    "zllrunning face-parsing.PyTorch BiSeNet (79999_iter.pth)")
BARBERSHOP16 = LabelSchema("barbershop16", (
    "background", "skin", "nose", "eyeglasses", "eyes", "brows", "ears", "mouth", "upper_lip", "lower_lip", "hair",
    "hat", "earring", "necklace", "neck", "cloth"),
    "Barbershop BiSeNet (seg.pth)")
CELEBAMASK19 = LabelSchema("celebamask19", (
    "background", "skin", "nose", "eyeglasses", "left_eye", "right_eye", "left_brow", "right_brow", "left_ear",
    "right_ear", "mouth", "upper_lip", "lower_lip", "hair", "hat", "earring", "necklace", "neck", "cloth"),
    "CelebAMask-HQ order (SegFormer jonathandinu/face-parsing)")

SCHEMAS = {s.name: s for s in (BISENET19, BARBERSHOP16, CELEBAMASK19)}


def get_schema(schema: Union[str, LabelSchema]) -> LabelSchema:
    """A schema by name (`bisenet19`, `barbershop16`, `celebamask19`), or the schema itself."""
    if isinstance(schema, LabelSchema):
        return schema
    key = str(schema).strip().lower()
    if key not in SCHEMAS:
        raise ValueError(f"unknown label schema {schema!r}; known: {', '.join(SCHEMAS)}")
    return SCHEMAS[key]


def schema_from_labels(labels: Sequence[str], name: str) -> LabelSchema:
    """A schema from a model's own label names in index order (e.g. a SegFormer config's id2label): one of the
    known schemas when the names match it, else a new one. ValueError for a name that is no face class."""
    try:
        classes = tuple(normalize_name(n) for n in labels)
        for s in SCHEMAS.values():
            if s.classes == classes:
                return s
        return LabelSchema(name, classes, "from the model's label names")
    except (KeyError, ValueError) as e:
        raise ValueError(f"the model's labels {list(labels)} are not all face classes ({e}); known names: "
                         f"{', '.join(CANONICAL_CLASSES + tuple(MERGED_CLASSES))}") from None
