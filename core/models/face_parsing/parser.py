"""Face parsers behind one interface: images in [-1, 1] → per-pixel class logits or a label map with its schema.

`load_face_parser(path)` reads BiSeNet state dicts (`79999_iter.pth`: 19 classes, `seg.pth`: 16; the schema is
detected from the head's shape) with `weights_only=True` or from safetensors, and SegFormer folders
(`config.json` + `model.safetensors`, e.g. jonathandinu/face-parsing) through `transformers`. Files that are not
a face parser (a ResNet classifier, a StyleGAN checkpoint, a damaged or unsafe file) get errors that say what
they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from ...files import (MissingWeights, download_from_hub, find_or_download, load_state_strict, missing_weights_error,
                      read_state_dict, safetensors_format, try_download)
from .bisenet import empty_bisenet, fuse_bisenet
from .schemas import BARBERSHOP16, BISENET19, LabelSchema, get_schema
from .segformer import (SEGFORMER_FILES, SEGFORMER_REPO, SegformerLogits, build_segformer, config_schema,
                        is_segformer_state, read_config)

PathLike = Union[str, Path]

INPUT_SIZE = 512                         # what every published face parser was trained at
IMAGENET_MEAN = (0.485, 0.456, 0.406)    # both BiSeNet (torchvision Normalize) and SegFormer's preprocessor
IMAGENET_STD = (0.229, 0.224, 0.225)
PARSE_BATCH = 4                          # images per forward in parse(): bounds memory on long batches
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

# Where the files come from (public Hugging Face repositories; HairFastGAN mirrors both BiSeNet files).
BISENET19_FILE = "79999_iter.pth"
BARBERSHOP16_FILE = "seg.pth"
HAIRFAST_REPO = "AIRI-Institute/HairFastGAN"
HUB_FILES = {
    "bisenet19": (HAIRFAST_REPO, "pretrained_models/BiSeNet/face_parsing_79999_iter.pth"),
    "barbershop16": (HAIRFAST_REPO, "pretrained_models/BiSeNet/seg.pth"),
}
ORIGINAL_SOURCES = {
    "bisenet19": "https://github.com/zllrunning/face-parsing.PyTorch (79999_iter.pth, linked from its README)",
    "barbershop16": "https://github.com/ZPdesu/Barbershop (seg.pth, the Google Drive link in utils/model_utils.py)",
    "celebamask19": f"https://huggingface.co/{SEGFORMER_REPO} (config.json and model.safetensors)",
}
_SCHEMA_OF_CLASSES = {16: BARBERSHOP16, 19: BISENET19}


def hub_url(repo: str, filename: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


# ------------------------------------------------------------------------------------------------
# Label maps


def colorize_labels(labels: torch.Tensor, schema: Union[str, LabelSchema]) -> torch.Tensor:
    """Label maps `[N, H, W]` → a colour preview `[N, 3, H, W]` float in [0, 1], one fixed colour per class name
    (the same class has the same colour whichever schema labelled it)."""
    schema = get_schema(schema)
    palette = schema.palette().to(labels.device)
    rgb = palette[labels.long().clamp(0, schema.num_classes - 1)]  # [N, H, W, 3]
    return rgb.permute(0, 3, 1, 2).float() / 255


@dataclass
class FaceParsing:
    """Label maps `labels` `[N, H, W]` uint8 with the `schema` that says what each label means."""

    labels: torch.Tensor
    schema: LabelSchema

    def __post_init__(self):
        self.schema = get_schema(self.schema)
        if self.labels.ndim != 3 or self.labels.dtype != torch.uint8:
            raise ValueError(f"face parsing labels must be uint8 [N, H, W], got {self.labels.dtype} "
                             f"{list(self.labels.shape)}")
        if self.labels.numel() and int(self.labels.max()) >= self.schema.num_classes:
            raise ValueError(f"label {int(self.labels.max())} is out of range for the {self.schema.name} schema "
                             f"({self.schema.num_classes} classes)")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def mask(self, names: Union[str, Iterable[str]]) -> torch.Tensor:
        """`[N, H, W]` float32 mask, 1 where the label is one of `names` (class or group names, or a comma list;
        see LabelSchema.indices for the errors)."""
        table = self.schema.lookup_table(names, device=self.labels.device)
        return table[self.labels.long()].float()

    def colorize(self) -> torch.Tensor:
        """`[N, 3, H, W]` colour preview in [0, 1] (see colorize_labels)."""
        return colorize_labels(self.labels, self.schema)


# ------------------------------------------------------------------------------------------------
# The parser


class FaceParser(nn.Module):
    """A face-parsing network with its preprocessing and label schema. Frozen, in eval mode.

    Attributes: `schema` (LabelSchema), `kind` ('bisenet' | 'segformer'), `input_size` (512), `source` (the file).
    """

    def __init__(self, net: nn.Module, kind: str, schema: Union[str, LabelSchema], *, input_size: int = INPUT_SIZE,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 source: Optional[str] = None):
        super().__init__()
        if kind not in ("bisenet", "segformer"):
            raise ValueError(f"kind must be 'bisenet' or 'segformer', got {kind!r}")
        self.net = net
        self.kind = kind
        self.schema = get_schema(schema)
        self.input_size = int(input_size)
        self.source = source
        # Images in [-1, 1]: (x + 1) / 2 then (. - mean) / std, as one affine map x * scale + shift.
        mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.register_buffer("scale", 0.5 / std_t, persistent=False)
        self.register_buffer("shift", (0.5 - mean_t) / std_t, persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FaceParser":
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return self.schema.num_classes

    @property
    def device(self) -> torch.device:
        return self.scale.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def extra_repr(self) -> str:
        return f"kind={self.kind}, schema={self.schema.name}, input_size={self.input_size}, source={self.source}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` in [-1, 1] → the network's input: resized to input_size² (bilinear, antialiased when
        shrinking, as PIL's resize in the references' preprocessing) and ImageNet-normalised. Differentiable."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"face parsing needs RGB images [N, 3, H, W] in [-1, 1], got {list(images.shape)}")
        x = images.to(device=self.device, dtype=self.dtype)
        s = self.input_size
        if tuple(x.shape[2:]) != (s, s):
            shrink = x.shape[2] > s or x.shape[3] > s
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=shrink)
        x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.kind == "bisenet" else x

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits `[N, C, input_size, input_size]` of images `[N, 3, H, W]` in [-1, 1] (any size; moved to
        the parser's device and dtype). Differentiable with respect to `images` (the parser stays frozen)."""
        out = self.net(self.preprocess(images))
        if out.shape[-1] != self.input_size or out.shape[-2] != self.input_size:  # SegFormer: a quarter size
            out = F.interpolate(out, (self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return out

    forward = logits

    @torch.no_grad()
    def parse(self, images: torch.Tensor, *, batch_size: int = PARSE_BATCH) -> FaceParsing:
        """Label maps of images `[N, 3, H, W]` in [-1, 1] at the images' size (logits resized bilinearly, then
        argmax), on the images' device."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"face parsing needs RGB images [N, 3, H, W] in [-1, 1], got {list(images.shape)}")
        size = tuple(images.shape[2:])
        out = []
        for start in range(0, images.shape[0], max(1, int(batch_size))):
            logits = self.logits(images[start:start + batch_size]).float()
            if size != tuple(logits.shape[2:]):
                shrink = size[0] < logits.shape[2] or size[1] < logits.shape[3]
                logits = F.interpolate(logits, size, mode="bilinear", align_corners=False, antialias=shrink)
            out.append(logits.argmax(1).to(torch.uint8).to(images.device))
        labels = torch.cat(out) if out else torch.zeros((0, *size), dtype=torch.uint8, device=images.device)
        return FaceParsing(labels, self.schema)


# ------------------------------------------------------------------------------------------------
# Loading


def _shorten(keys: Sequence[str], n: int = 4) -> str:
    keys = list(keys)
    return f"{keys[:n]}{' ...' if len(keys) > n else ''} ({len(keys)} in all)"


def _unwrap(state: dict, path: Path) -> dict:
    """The tensors of a state dict saved directly, inside {'state_dict': ...} / {'model': ...}, or from
    nn.DataParallel ('module.' prefixes); StyleGAN checkpoints are recognised and refused here."""
    if "g_ema" in state or "G_ema" in state or "latent_avg" in state:
        raise CheckpointError(f"{path}: a StyleGAN generator checkpoint (keys {_shorten(list(state))}), not a face "
                              f"parser; load it with Load StyleGAN. A face parser is a BiSeNet state dict "
                              f"({BISENET19_FILE} or {BARBERSHOP16_FILE}) or a SegFormer folder")
    for key in ("state_dict", "model_state_dict", "model"):
        inner = state.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            state = inner
            break
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict of tensors: entry {bad[0]!r} is a "
                              f"{type(state[bad[0]]).__name__}; a face parser file holds only tensors")
    return state


def _what_is(state: dict) -> Optional[str]:
    """A description of well-known non-parser state dicts, else None."""
    keys = list(state)
    if "fc.weight" in state and "layer1.0.conv1.weight" in state and "conv1.weight" in state:
        return (f"a ResNet image classifier (torchvision layout: conv1, layer1..4, fc with "
                f"{state['fc.weight'].shape[0]} outputs), not a face parser; BiSeNet's ResNet18 keys start with "
                f"'cp.resnet.' and it has the heads conv_out, conv_out16, conv_out32")
    stylegan = ("synthesis.", "mapping.", "convs.", "to_rgbs.", "style.", "to_rgb1.", "conv1.conv.")
    if sum(any(str(k).startswith(p) for p in stylegan) for k in keys) >= max(2, len(keys) // 4):
        return ("a StyleGAN generator's weights, not a face parser; load it with Load StyleGAN")
    return None


def _check_finite(state: dict, path: Path) -> None:
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: tensor {k} holds NaN or infinite values: the file is damaged (or saved "
                                  f"from a diverged training run); download it again")


def load_bisenet_state(state: dict, path: PathLike, schema: Union[str, LabelSchema, None] = None) -> FaceParser:
    """A FaceParser from a BiSeNet state dict (zllrunning layout), every key and shape checked; the class count
    (16 or 19) comes from `conv_out.conv_out.weight` and picks the schema unless `schema` is given."""
    path = Path(path)
    head = state["conv_out.conv_out.weight"]
    n = int(head.shape[0]) if head.ndim == 4 else -1
    if schema is None:
        if n not in _SCHEMA_OF_CLASSES:
            raise CheckpointError(f"{path}: a BiSeNet with {n} classes (conv_out.conv_out.weight "
                                  f"{list(head.shape)}); the known face parsers have 19 ({BISENET19_FILE}, schema "
                                  f"bisenet19) or 16 ({BARBERSHOP16_FILE}, schema barbershop16) classes")
        schema = _SCHEMA_OF_CLASSES[n]
    schema = get_schema(schema)
    if schema.num_classes != n:
        raise CheckpointError(f"{path}: the BiSeNet has {n} classes but the {schema.name} schema {schema.num_classes}")
    model = empty_bisenet(n)
    load_state_strict(model, state, str(path), mismatch="not a BiSeNet-ResNet18 face parser state dict",
                      hint=f". Expected {BISENET19_FILE} ({ORIGINAL_SOURCES['bisenet19']}) or {BARBERSHOP16_FILE}",
                      shape_note=f" for a {n}-class BiSeNet-ResNet18")
    return FaceParser(fuse_bisenet(model), "bisenet", schema, source=str(path))


def _load_segformer(folder: Path, weights: Path, schema) -> FaceParser:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{weights}: SegFormer weights without a config.json beside them; put config.json "
                              f"from https://huggingface.co/{SEGFORMER_REPO} in {folder}")
    config = read_config(config_path)
    found = config_schema(config, config_path)
    if schema is not None:
        schema = get_schema(schema)
        if schema.num_classes != found.num_classes:
            raise CheckpointError(f"{config_path}: {found.num_classes} labels, but the {schema.name} schema has "
                                  f"{schema.num_classes}")
        found = schema
    state = _unwrap(read_state_dict(weights, what="SegFormer face parser weights"), weights)
    _check_finite(state, weights)
    net = build_segformer(config, state, weights)
    return FaceParser(SegformerLogits(net), "segformer", found, source=str(folder))


def load_face_parser(path: PathLike, *, device=None, schema: Union[str, LabelSchema, None] = None) -> FaceParser:
    """A face parser from `path`:

    - a BiSeNet state dict (`.pth`/`.pt`/`.bin` read with `weights_only=True`, or `.safetensors`): 19 classes →
      schema bisenet19 (`79999_iter.pth`), 16 → barbershop16 (`seg.pth`);
    - a SegFormer folder with `config.json` and `model.safetensors` (or that `model.safetensors` itself), e.g.
      jonathandinu/face-parsing → schema from the config's id2label (celebamask19); needs `transformers`.

    `schema` overrides the detected one (same class count) for a network trained with another label order.

    Raises:
        FileNotFoundError: no such file or folder.
        CheckpointError: the file is unreadable, unsafe, damaged (NaN), or another network (a ResNet classifier,
            a StyleGAN checkpoint, ...); the message names the file and says what it is.
        MissingDependencyError: a SegFormer without `transformers` installed.
    """
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{path}: a face parser folder needs {' and '.join(SEGFORMER_FILES)} (the layout "
                                  f"of https://huggingface.co/{SEGFORMER_REPO}); model.safetensors is missing")
        parser = _load_segformer(path, weights, schema)
    elif not path.is_file():
        raise FileNotFoundError(f"face parser not found: {path}")
    else:
        if path.suffix == ".safetensors":
            fmt = safetensors_format(path)
            if fmt == "stylegan-studio":
                raise CheckpointError(f"{path}: a StyleGAN generator checkpoint (StyleGAN Studio .safetensors), not "
                                      f"a face parser; load it with Load StyleGAN")
            if fmt:
                raise CheckpointError(f"{path}: a StyleGAN Studio {fmt!r} file, not a face parser")
        state = _unwrap(read_state_dict(path, what="face parser weights"), path)
        if is_segformer_state(state):
            parser = _load_segformer(path.parent, path, schema)
        elif "conv_out.conv_out.weight" in state:
            parser = load_bisenet_state(state, path, schema)
        else:
            known = _what_is(state)
            if known:
                raise CheckpointError(f"{path}: {known}")
            raise CheckpointError(f"{path}: not a face parser: its keys {_shorten(list(state))} are neither "
                                  f"BiSeNet's (cp.resnet.*, conv_out.*) nor SegFormer's (segformer.*, "
                                  f"decode_head.*). Use {BISENET19_FILE}, {BARBERSHOP16_FILE} or the "
                                  f"{SEGFORMER_REPO} folder")
    return parser.to(device) if device is not None else parser


# ------------------------------------------------------------------------------------------------
# Finding and downloading the published files

DOWNLOADABLE = ("bisenet19", "barbershop16", "celebamask19")
LOCAL_NAMES = {
    "bisenet19": (BISENET19_FILE, "face_parsing_79999_iter.pth", "79999_iter.safetensors"),
    "barbershop16": (BARBERSHOP16_FILE, "seg.safetensors"),
}
SEGFORMER_FOLDER = "segformer_face_parsing"  # where a download puts jonathandinu/face-parsing


def _segformer_folder(dirs: Sequence[PathLike]) -> Optional[Path]:
    """A folder holding config.json + model.safetensors: a folder of `dirs` itself (other face-parsing packs
    download there) or SEGFORMER_FOLDER inside it."""
    for d in dirs:
        for folder in (Path(d), Path(d) / SEGFORMER_FOLDER):
            if all((folder / f).is_file() for f in SEGFORMER_FILES):
                return folder
    return None


def find_face_parser(which: str, dirs: Sequence[PathLike], *, download_dir: Optional[PathLike] = None) -> Path:
    """The file (or folder) of a published face parser — `which` is 'bisenet19' (79999_iter.pth), 'barbershop16'
    (seg.pth) or 'celebamask19' (SegFormer jonathandinu/face-parsing) — from `dirs`, else downloaded from the
    Hugging Face Hub into `download_dir` (default: the first of `dirs`).

    Raises:
        MissingWeightsError: not found and not downloadable (offline); the message says where to get it.
    """
    if which not in DOWNLOADABLE:
        raise ValueError(f"unknown face parser {which!r}; known: {', '.join(DOWNLOADABLE)}")
    target = Path(download_dir) if download_dir is not None else (Path(dirs[0]) if dirs else None)
    if which == "celebamask19":
        found = _segformer_folder([*dirs, *([target] if target else [])])
        if found is not None:
            return found
        error = "no folder to download into was given"
        if target is not None:
            folder = target / SEGFORMER_FOLDER
            got, error = None, ""
            for name in SEGFORMER_FILES:
                got, error = try_download(f"{SEGFORMER_REPO} {name}",
                                          lambda name=name: download_from_hub(SEGFORMER_REPO, name, folder))
                if got is None:
                    break
            if got is not None:
                return folder
        raise missing_weights_error([MissingWeights(
            "SegFormer face parser", f"{SEGFORMER_FOLDER}/config.json and model.safetensors",
            f"https://huggingface.co/{SEGFORMER_REPO}", error,
            also="any folder holding both files works")], dirs)
    repo, filename = HUB_FILES[which]
    url = hub_url(repo, filename)
    if target is None:
        raise missing_weights_error([MissingWeights(f"BiSeNet face parser ({which})", LOCAL_NAMES[which][0], url,
                                                    "no folder to download into was given")], dirs)
    got = find_or_download(f"BiSeNet face parser ({which})", LOCAL_NAMES[which], url, dirs, download_dir=target,
                           check_hash=False)
    if isinstance(got, MissingWeights):
        got = MissingWeights(got.what, got.file_name, got.url, got.error, also=f"originally from "
                             f"{ORIGINAL_SOURCES[which]}")
        raise missing_weights_error([got], dirs)
    return got


def random_face_parser(kind: str = "bisenet19", seed: int = 0, *, input_size: int = INPUT_SIZE) -> FaceParser:
    """A BiSeNet FaceParser (fused, see fuse_bisenet) with seeded random weights (schema 'bisenet19' or 'barbershop16'), for tests."""
    from .bisenet import random_bisenet

    schema = get_schema(kind)
    if schema.name not in ("bisenet19", "barbershop16"):
        raise ValueError(f"random_face_parser builds BiSeNets: 'bisenet19' or 'barbershop16', got {kind!r}")
    return FaceParser(fuse_bisenet(random_bisenet(schema.num_classes, seed)), "bisenet", schema, input_size=input_size,
                      source=f"random seed {seed}")
