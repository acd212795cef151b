"""CLIP (open_clip) for text-driven editing: safe weight loading, differentiable image embeddings of generator
images, and cached template-averaged text embeddings computed without the padding tokens.

StyleCLIP (Patashnik et al. 2021) scores an image against a text with D_CLIP = 1 − cos(E_I(G(w)), E_T(t)); its
global directions embed a text as the normalised mean of its 80 ImageNet-template embeddings (Radford et al.
2021, "Prompt engineering"). open_clip is imported only when a function here is called, so `core` imports
without it.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, MissingDependencyError, MissingWeightsError
from ..files import (HUB_UNREACHABLE, MissingWeights, find_weights, hub_reachable, is_torchscript_archive,
                     missing_weights_error, read_state_dict, try_download)
from ..log import logger

PathLike = Union[str, Path]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# StyleCLIP used OpenAI's ViT-B/32; open_clip's tag for OpenAI's weights.
DEFAULT_TAG = "openai"
HF_HUB_PREFIX = "hf-hub:"
RESAMPLE_MODES = ("bicubic", "area")
# Keys some CLIP checkpoints carry besides the weights (OpenAI's TorchScript state dict).
_EXTRA_KEYS = {"input_resolution", "context_length", "vocab_size"}

# The 80 ImageNet prompt templates of CLIP's "Prompt_Engineering_for_ImageNet" notebook, in its order; StyleCLIP's
# global directions average a text over them. "{}" stands for the prompt.
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise MissingDependencyError("CLIP features need the open_clip package; install it with "
                                     "`pip install open_clip_torch` (2.24 or newer) and restart") from e
    return open_clip


# ------------------------------------------------------------------------------------------------
# The model wrapper


class _TextTower:
    """The parts of an open_clip causal text transformer that `ClipModel` runs itself."""

    def __init__(self, owner, pool_type: str, eos_id: Optional[int]):
        self.token_embedding = owner.token_embedding
        self.positional_embedding = owner.positional_embedding
        self.transformer = owner.transformer
        self.ln_final = owner.ln_final
        self.text_projection = owner.text_projection
        self.owner = owner  # holds attn_mask as a buffer: read it at call time so .to(device) is followed
        self.pool_type = pool_type
        self.eos_id = eos_id

    @property
    def attn_mask(self) -> torch.Tensor:
        return self.owner.attn_mask


def _text_tower(model) -> Optional[_TextTower]:
    """A `_TextTower` when the text encoder is a causal open_clip transformer pooled at a token that only
    sees tokens before it (so tokens after the pooled one never matter), else None."""
    oc = _open_clip()
    if isinstance(model, oc.CLIP):
        owner, pool, eos = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    elif isinstance(getattr(model, "text", None), oc.transformer.TextTransformer):
        owner, pool, eos = model.text, model.text.pool_type, model.text.eos_id
        if owner.cls_emb is not None or owner.use_pad_mask:
            return None
    else:
        return None
    if getattr(owner, "attn_mask", None) is None or pool not in ("argmax", "eos", "first"):
        return None  # bidirectional attention or 'last' pooling: every position matters
    if pool == "eos" and eos is None:
        return None
    return _TextTower(owner, pool, eos)


def _resize_shorter(x: torch.Tensor, size: tuple[int, int], resample: str) -> torch.Tensor:
    """CLIP's image preprocessing on tensors: resize the shorter side to the crop size (torchvision's
    `Resize(int)` rounding), then centre-crop (torchvision's `CenterCrop` offsets). Differentiable."""
    h, w = x.shape[2], x.shape[3]
    th, tw = size
    short = min(th, tw)
    if h <= w:
        nh, nw = short, int(short * w / h)
    else:
        nh, nw = int(short * h / w), short
    nh, nw = max(nh, th), max(nw, tw)
    if (nh, nw) != (h, w):
        if resample == "area":
            x = F.interpolate(x, size=(nh, nw), mode="area")
        else:
            # antialias: PIL's bicubic (what CLIP was trained with) filters when it shrinks; plain bicubic
            # would alias a 1024 px render down to 224 px.
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top = int(round((nh - th) / 2.0))
    left = int(round((nw - tw) / 2.0))
    return x[:, :, top:top + th, left:left + tw]


class ClipModel:
    """A loaded open_clip model, frozen, with StyleGAN-friendly encoders. Shared through `load_clip`'s cache:
    never mutate `model`."""

    def __init__(self, model, tokenizer, *, name: str, source: str, preprocess_cfg: dict):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.source = source  # the weight file, or "random" for tests and benchmarks
        size = preprocess_cfg.get("size", getattr(model.visual, "image_size", 224))
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = tuple(float(v) for v in preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(float(v) for v in preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.resize_mode = preprocess_cfg.get("resize_mode", "shortest")
        self.text_tower = _text_tower(model)
        if self.text_tower is None:
            logger.info("CLIP %s: text encoder is not a causal open_clip transformer; text embeddings use "
                        "open_clip's full-length encode_text", name)
        # (prompt, templates) -> unit embedding [D]; the least recently used beyond MAX_CACHED_TEXTS are forgotten
        self._text_cache: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClipModel({self.name!r}, source={self.source!r}, image_size={self.image_size})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def embed_dim(self) -> int:
        return int(self.encode_text("a").shape[-1])

    # -- images -----------------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor, *, normalize: bool = True, resample: str = "bicubic") -> torch.Tensor:
        """Generator images `[N, 3, H, W]` in [-1, 1] → CLIP's input `[N, 3, S, S]`, differentiably.

        Resize (shorter side to S) + centre crop as CLIP's own preprocessing does, with `resample="bicubic"`
        (antialiased, like the PIL resize CLIP was trained with; the default) or `"area"` (box averaging, close
        to the StyleCLIP reference's ×7 upsample + 32 px average pool of a 1024 px render). `normalize=True`
        maps to [0, 1] and applies the model's mean/std; `normalize=False` feeds the [-1, 1] values unchanged,
        reproducing the StyleCLIP reference's acknowledged bug (for comparisons only). Values are not
        clamped, so gradients flow for pixels slightly outside [-1, 1].
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"CLIP needs RGB images [N, 3, H, W] in [-1, 1], got shape {list(images.shape)}")
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
        x = images.to(self.dtype if images.is_floating_point() else torch.float32)
        if self.resize_mode == "squash":
            if tuple(x.shape[2:]) != self.image_size:
                x = (F.interpolate(x, size=self.image_size, mode="area") if resample == "area" else
                     F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True))
        else:
            x = _resize_shorter(x, self.image_size, resample)
        if not normalize:
            return x
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
        return ((x + 1) / 2 - mean) / std

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True, resample: str = "bicubic") -> torch.Tensor:
        """L2-normalised image embeddings `[N, D]` (images' dtype) of images `[N, 3, H, W]` in [-1, 1] of any
        size; differentiable with respect to `images` (see `preprocess` for `normalize` and `resample`)."""
        x = self.preprocess(images, normalize=normalize, resample=resample)
        emb = self.model.encode_image(x.to(self.device))
        return F.normalize(emb.float(), dim=-1).to(images.dtype if images.is_floating_point() else torch.float32)

    # -- text -------------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids `[B, context_length]` (int64) on the model's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def encode_tokens(self, tokens: torch.Tensor, *, truncate: bool = True, group_by_length: bool = False
                      ) -> torch.Tensor:
        """Unnormalised text features `[B, D]` of token ids `[B, L]` (int64).

        `truncate=True` drops the padding: the text transformer's causal mask lets no position attend to a
        later one, so the features at the pooled (end-of-text) token are those of the full 77-token pass
        (equal up to float rounding) when every token after it is cut off: the batch is cut after its longest
        row. `group_by_length=True` instead runs rows in groups sharing their pooled position, so no row carries
        padding (about a fifth fewer FLOPs for the ImageNet templates, but several times more kernel launches:
        slower on busy or many-threaded CPUs, hence off by default). `truncate=False`, and text encoders that are not causal, run open_clip's own
        `encode_text`.
        """
        tower = self.text_tower
        if not truncate or tower is None:
            return self.model.encode_text(tokens)
        if tower.pool_type == "argmax":  # end-of-text has the largest id in CLIP's vocabulary
            idx = tokens.argmax(dim=-1)
        elif tower.pool_type == "eos":
            idx = (tokens == tower.eos_id).int().argmax(dim=-1)
        else:  # 'first'
            idx = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        if not group_by_length:
            return self._encode_truncated(tokens[:, :int(idx.max()) + 1], idx)
        out = None
        for pos in torch.unique(idx).tolist():
            rows = (idx == pos).nonzero().squeeze(1)
            feats = self._encode_truncated(tokens[rows, :pos + 1], idx[rows])
            out = feats.new_empty(tokens.shape[0], feats.shape[1]) if out is None else out
            out[rows] = feats
        return out

    def _encode_truncated(self, tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """open_clip's `encode_text` on token ids `[B, L]` cut after their largest pooled position `idx` `[B]`."""
        tower = self.text_tower
        length = tokens.shape[1]
        cast_dtype = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast_dtype)  # [B, L, C]
        x = x + tower.positional_embedding[:length].to(cast_dtype)
        x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
        # LayerNorm acts on each token alone: normalising only the pooled token gives the same numbers.
        x = tower.ln_final(x[torch.arange(x.shape[0], device=x.device), idx])  # [B, C]
        proj = tower.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, torch.nn.Module) else x @ proj

    def encode_text(self, prompts: Union[str, Sequence[str]], templates: Optional[Sequence[str]] = None, *,
                    batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings `[P, D]` (float32, on the model's device) of P prompts.

        With `templates` (strings with "{}" for the prompt, e.g. `IMAGENET_TEMPLATES`) each prompt's embedding
        is the normalised mean of its normalised template embeddings (CLIP's zero-shot classifier recipe, used
        by StyleCLIP's global directions). Cached by (prompt, templates); returns a fresh tensor that is not
        tied to autograd or inference mode.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"encode_text needs a prompt or a list of prompt strings, got {prompts!r}")
        key_t = None
        if templates is not None:
            key_t = tuple(templates)
            bad = [t for t in key_t if not isinstance(t, str) or "{}" not in t]
            if not key_t or bad:
                raise ValueError(f"templates must be strings containing '{{}}' for the prompt, got {bad or key_t!r}")
        # Cached tensors must outlive any inference_mode a caller runs in (an optimisation later needs them).
        with torch.inference_mode(False), torch.no_grad(), self._lock:
            todo = [p for p in dict.fromkeys(prompts) if (p, key_t) not in self._text_cache]
            if todo:
                texts = [t.replace("{}", p) for p in todo for t in (key_t or ("{}",))]
                feats = torch.cat([self.encode_tokens(self.tokenize(texts[i:i + batch_size])).float()
                                   for i in range(0, len(texts), batch_size)])
                feats = F.normalize(feats, dim=-1).reshape(len(todo), len(key_t or ("{}",)), -1)
                for p, f in zip(todo, feats):
                    self._text_cache[(p, key_t)] = F.normalize(f.mean(0), dim=-1)
            out = torch.stack([self._text_cache[(p, key_t)] for p in prompts]).clone()
            for p in prompts:
                self._text_cache.move_to_end((p, key_t))
            while len(self._text_cache) > MAX_CACHED_TEXTS:
                self._text_cache.popitem(last=False)
            return out


def clip_distance(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """StyleCLIP's D_CLIP = 1 − cos(image, text) `[N]`, for image embeddings `[N, D]` and text embeddings `[D]`,
    `[1, D]` or `[N, D]` (normalised here, so unnormalised inputs are fine)."""
    if image_emb.ndim != 2:
        raise ValueError(f"image_emb must be [N, D], got shape {list(image_emb.shape)}")
    if text_emb.shape[-1] != image_emb.shape[-1] or text_emb.ndim > 2:
        raise ValueError(f"text_emb must be [D], [1, D] or [N, D] with D={image_emb.shape[-1]}, got shape "
                         f"{list(text_emb.shape)}")
    return 1 - (F.normalize(image_emb, dim=-1) * F.normalize(text_emb.to(image_emb), dim=-1)).sum(-1)


# ------------------------------------------------------------------------------------------------
# Finding and reading weights


def _read_state(path: Path) -> dict:
    """An open_clip state dict of tensors from a .safetensors / .bin / .pt / .pth file (`files.read_state_dict`:
    nothing in the file is executed), unwrapped from `{"state_dict": ...}` and DistributedDataParallel's
    `module.` prefix."""
    if is_torchscript_archive(path):
        raise CheckpointError(
            f"{path}: a TorchScript archive (such as OpenAI's original ViT-B-32.pt); reading it would run "
            f"code stored in the file. Use open_clip's state dict instead (e.g. open_clip_model.safetensors "
            f"from the model's Hugging Face repository)")
    state = read_state_dict(path, what="CLIP weights", hint="expected an open_clip state dict (.safetensors, or a "
                                                            ".bin/.pt/.pth saved with torch.save)")
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got a dict holding other values")
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_state(model, state: dict, path: Path, what: str) -> None:
    """Copy `state` into `model`, checking every key and shape."""
    if any(k.startswith(("text_model.", "vision_model.")) for k in state):
        raise CheckpointError(f"{path}: a Hugging Face transformers CLIP file (keys 'text_model.*' / "
                              f"'vision_model.*', like ComfyUI's clip_l text encoders), not open_clip's {what}; "
                              f"use the open_clip weights (open_clip_model.safetensors) of that model")
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k not in _EXTRA_KEYS}
    if "logit_scale" in state and "logit_scale" in own and state["logit_scale"].numel() == own["logit_scale"].numel():
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        def few(xs):
            return ", ".join(xs[:4]) + (f" and {len(xs) - 4} more" if len(xs) > 4 else "")
        parts = [f"missing {few(missing)}" if missing else "", f"unexpected {few(unexpected)}" if unexpected else "",
                 f"wrong shapes: {few(wrong)}" if wrong else ""]
        raise CheckpointError(f"{path}: not the weights of open_clip's {what}: {'; '.join(p for p in parts if p)}. "
                              f"Choose the architecture this file was trained with, or the file for this one")
    with torch.no_grad():
        model.load_state_dict({k: state[k] for k in own}, strict=True)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """`files.hub_reachable`, looked up here at call time so that tests can simulate being offline."""
    return hub_reachable(timeout)


def _download(what: str, fetch) -> tuple[Optional[str], str]:
    """(path, "") from `fetch()`, or (None, why) when offline or the download fails."""
    if not _hub_reachable():
        return None, HUB_UNREACHABLE
    got, why = try_download(f"CLIP {what}", fetch)
    return (str(got) if got is not None else None), why


def _weight_names(stems: Sequence[str]) -> list[str]:
    return [s + suffix for s in stems for suffix in WEIGHT_SUFFIXES]


def _hub_repo(tag_cfg: dict) -> Optional[str]:
    hub = tag_cfg.get("hf_hub", "")
    return hub.rstrip("/").rsplit("/", 1)[0] if hub and not hub.endswith("/") else (hub.rstrip("/") or None)


def _missing(what: str, names: Sequence[str], dirs: Sequence[PathLike], why: str, url: Optional[str]) -> MissingWeightsError:
    return missing_weights_error([MissingWeights(
        f"CLIP {what}", names[0], url, why,
        also="a .safetensors, .bin, .pt or .pth state dict under the same name also works" + (
            "" if url else "; save the model's open_clip state dict"))], dirs)


def _resolve_hub_name(oc, repo: str) -> Optional[tuple[str, str]]:
    """(architecture, tag) of an open_clip pretrained entry whose Hub repository is `repo`."""
    for arch, tag in oc.list_pretrained():
        if _hub_repo(oc.get_pretrained_cfg(arch, tag)) == repo:
            return arch, tag
    return None


# ------------------------------------------------------------------------------------------------
# Loading


MAX_CACHED_TEXTS = 1024  # text embeddings kept per model (a few KB each)
MAX_CACHED_MODELS = 2  # the least recently used CLIP beyond these is forgotten (a ViT-L/14 is about 1.7 GB)
_MODELS: "collections.OrderedDict[tuple, ClipModel]" = collections.OrderedDict()
_MODELS_LOCK = threading.Lock()


def clear_clip_cache() -> None:
    """Forget every model `load_clip` has cached (frees their memory once nothing else holds them)."""
    with _MODELS_LOCK:
        _MODELS.clear()


class _QuietRandomInit:
    """open_clip logs a root-logger warning for every model it builds without weights; ours get weights next."""

    @staticmethod
    def filter(record) -> bool:
        return "No pretrained weights loaded" not in str(record.msg)

    def __enter__(self):
        import logging

        logging.getLogger().addFilter(self)

    def __exit__(self, *exc):
        import logging

        logging.getLogger().removeFilter(self)


def _build(oc, arch: str, quick_gelu: bool):
    with _QuietRandomInit():
        if arch.startswith("local-dir:"):
            return oc.create_model(arch, load_weights=False, device="cpu")
        return oc.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu, device="cpu")


def load_clip(name: str, *, model_dirs: Sequence[PathLike] = (), pretrained: Optional[str] = None,
              device=None, dtype: Optional[torch.dtype] = None) -> ClipModel:
    """An open_clip model with real weights, cached by (name, weight file, device, dtype).

    Args:
        name: an open_clip architecture ("ViT-B-32"; "ViT-B/32" is read as that) or a Hub repository
            ("hf-hub:timm/vit_base_patch32_clip_224.openai").
        model_dirs: folders searched for the weight file first (ComfyUI passes models/clip and
            models/text_encoders).
        pretrained: for an architecture name, open_clip's tag ("openai", "laion2b_s34b_b79k", ...; default
            "openai" where the architecture has it, as StyleCLIP used OpenAI's ViT-B/32) or a weight file (a path,
            or a file name looked up in `model_dirs`). Must be None with "hf-hub:" names.
        device, dtype: where and in which precision the model runs (default: CPU, the file's float32).

    A tag's file is looked up in `model_dirs` as "<arch>-<tag>.safetensors" (or .bin/.pt/.pth; e.g.
    "ViT-B-32-openai.safetensors"), as "<hub repo name>.safetensors", or as "<hub repo name>/open_clip_model.
    safetensors" (a downloaded Hub folder); otherwise it is downloaded from the Hugging Face Hub into its cache
    when online. Tags trained with QuickGELU (OpenAI's, LAION-400M's) get it automatically; for a file given by
    path, pick the "-quickgelu" architecture if it needs it. Files are read with safetensors or
    `torch.load(weights_only=True)`; TorchScript archives are refused.

    Raises:
        MissingWeightsError: the file is in no folder and cannot be downloaded; the message names the file
            to save, where to get it and the folders searched.
        CheckpointError: a file is unreadable, unsafe, or holds another architecture.
        ValueError: unknown architecture or tag.
        MissingDependencyError: open_clip is not installed.
    """
    oc = _open_clip()
    dirs = [Path(d) for d in model_dirs]
    arch, tag, path, local_cfg_dir, hub_id = None, None, None, None, None
    if name.startswith(HF_HUB_PREFIX):
        if pretrained is not None:
            raise ValueError(f"pretrained must be None with a Hub name ({name!r}): the repository holds the weights")
        hub_id = name[len(HF_HUB_PREFIX):].strip("/")
        if hub_id.count("/") != 1:
            raise ValueError(f"expected 'hf-hub:<organisation>/<repository>', got {name!r}")
        known = _resolve_hub_name(oc, hub_id)
        if known is not None:
            arch, tag = known
    else:
        arch = name.replace("/", "-")
        if arch not in oc.list_models():
            import difflib

            close = difflib.get_close_matches(arch, oc.list_models(), n=5)
            raise ValueError(f"unknown open_clip architecture {name!r}; did you mean one of {close}? "
                             f"(open_clip.list_models() lists all)")
        if pretrained is not None and pretrained.lower().endswith(WEIGHT_SUFFIXES):
            p = Path(pretrained).expanduser()
            path = p if p.is_file() else find_weights([pretrained], dirs)
            if path is None:
                raise _missing(f"{arch} file", [Path(pretrained).name], dirs, f"{pretrained} does not exist", None)
        else:
            tags = oc.list_pretrained_tags_by_model(arch)
            if pretrained is None:
                tag = DEFAULT_TAG if DEFAULT_TAG in tags else (tags[0] if tags else None)
                if tag is None:
                    raise ValueError(f"open_clip has no published weights for {arch}; pass pretrained=<weight file>")
            elif pretrained in tags:
                tag = pretrained
            else:
                raise ValueError(f"unknown pretrained tag {pretrained!r} for {arch}; open_clip's tags: {tags}, "
                                 f"or give a weight file (.safetensors/.bin/.pt/.pth)")

    tag_cfg = oc.get_pretrained_cfg(arch, tag) if arch and tag else {}
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    repo = _hub_repo(tag_cfg) if tag_cfg else hub_id
    if path is None:
        stems = [f"{arch}-{tag}", f"{arch}_{tag}"] if arch and tag else []
        if repo:
            base = repo.split("/")[-1]
            stems += [base, f"{base}/open_clip_model", f"{base}/open_clip_pytorch_model"]
        names = _weight_names(stems)
        path = find_weights(names, dirs)
        if arch is None and repo:  # a Hub model open_clip does not know: its config must come along
            base = repo.split("/")[-1]
            cfg = find_weights([f"{base}/open_clip_config.json"], dirs)
            local_cfg_dir = cfg.parent if cfg is not None and path is not None and path.parent == cfg.parent else None
            if local_cfg_dir is None:
                path = None
                cfg_path, why = _download(f"{repo} config", lambda: oc.pretrained.download_pretrained_from_hf(
                    repo, filename="open_clip_config.json"))
                if cfg_path is None:
                    raise _missing(f"{repo}", [f"{base}/open_clip_model.safetensors"], dirs, why,
                                   f"https://huggingface.co/{repo} (open_clip_config.json and "
                                   f"open_clip_model.safetensors)")
                local_cfg_dir = Path(cfg_path).parent
        if path is None:
            what = f"{arch} ({tag})" if arch else repo
            if tag_cfg:
                got, why = _download(what, lambda: oc.pretrained.download_pretrained(tag_cfg))
            else:
                got, why = _download(what, lambda: oc.pretrained.download_pretrained_from_hf(repo))
            if got is None:
                url = f"https://huggingface.co/{repo}/resolve/main/open_clip_model.safetensors" if repo else \
                    tag_cfg.get("url")
                raise _missing(what, [n for n in names if n.endswith(".safetensors")][:1] or names, dirs, why, url)
            path = Path(got)
    if local_cfg_dir is not None:
        import json

        arch = f"local-dir:{local_cfg_dir}"
        config = json.loads((local_cfg_dir / "open_clip_config.json").read_text(encoding="utf-8"))
        preprocess_cfg = dict(config.get("preprocess_cfg", {}))
    else:
        preprocess_cfg = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}

    path = Path(path).resolve()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (name, pretrained, str(path), path.stat().st_mtime_ns, str(dev), dtype)
    with _MODELS_LOCK:
        cached = _MODELS.get(key)
        if cached is not None:
            _MODELS.move_to_end(key)
            return cached
        # Built and loaded outside any inference_mode, so the weights can take part in optimisations later.
        with torch.inference_mode(False):
            model = _build(oc, arch, quick_gelu)
            _load_state(model, _read_state(path), path, f"{name}" + (f" ({tag})" if tag else ""))
            model = model.to(device=dev, dtype=dtype)
        preprocess_cfg.setdefault("size", model.visual.image_size)
        clip = ClipModel(model, oc.get_tokenizer(arch), name=name, source=str(path), preprocess_cfg=preprocess_cfg)
        _MODELS[key] = clip
        while len(_MODELS) > MAX_CACHED_MODELS:
            _MODELS.popitem(last=False)
        logger.info("CLIP %s loaded from %s", name, path)
        return clip


def random_clip(arch: str = "ViT-B-32", *, seed: int = 0, device=None, dtype=None) -> ClipModel:
    """An open_clip architecture with seeded random weights (open_clip's initialisation), for tests and
    benchmarks; timings do not depend on the weights."""
    oc = _open_clip()
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(oc, arch, False)
    model = model.to(device=device, dtype=dtype)
    return ClipModel(model, oc.get_tokenizer(arch), name=arch, source="random",
                     preprocess_cfg={"size": model.visual.image_size})
