"""Reading pSp, e4e and ReStyle checkpoints safely, and checking them against the generator they are used with.

A checkpoint (each repo's coach `__get_save_dict`) is `{'state_dict': {'encoder.*', 'decoder.*'}, 'opts': dict,
'latent_avg': [num_ws, w_dim]}` (+ optional `global_step`, `best_val_loss`, optimiser and discriminator states).
It is read with `torch.load(weights_only=True)` after `core.files.check_torch_file`: nothing in it is executed.
The decoder is a rosinality StyleGAN2 generator (Load StyleGAN reads the same file as a generator); only its
architecture and mapping network are kept here, to check that the chosen generator is the encoder's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ...errors import CheckpointError
from ...files import describe, load_state_strict, read_state_dict
from .irse import IR_SE50_STAGES
from .networks import EncoderConfig, StyleEncoder, prepare_for_inference

PathLike = Union[str, Path]

ENCODER_EXTENSIONS = (".pt", ".pth")
KINDS = ("psp", "e4e", "restyle_psp", "restyle_e4e")
DEFAULT_RESTYLE_ITERATIONS = 5           # ReStyle's README / test_options `n_iters_per_batch`
ENCODER_RESOLUTION = 256                 # every reference resizes its input to 256×256
# encoder_type in opts → (kind, arch, progressive); ReStyle's are told apart by their 6-channel input.
_TYPES = {
    "GradualStyleEncoder": ("psp", "fpn", False),
    "Encoder4Editing": ("e4e", "fpn", True),
    "BackboneEncoder": ("restyle_psp", "backbone", False),
    "ProgressiveBackboneEncoder": ("restyle_e4e", "backbone", True),
}
_UNSUPPORTED_TYPES = {
    "ResNetGradualStyleEncoder": "ReStyle's ResNet-34 encoders (cars, churches, horses, AFHQ)",
    "ResNetBackboneEncoder": "ReStyle's ResNet-34 encoders (cars, churches, horses, AFHQ)",
    "ResNetProgressiveBackboneEncoder": "ReStyle's ResNet-34 encoders (cars, churches, horses, AFHQ)",
    "BackboneEncoderUsingLastLayerIntoW": "pSp's single-w encoder",
    "BackboneEncoderUsingLastLayerIntoWPlus": "pSp's single-layer W+ encoder",
    "SingleStyleCodeEncoder": "e4e's single-w encoder",
}
_HINT = ("use a pSp, e4e or ReStyle (IR-SE50) checkpoint as published (e.g. e4e_ffhq_encode.pt, psp_ffhq_encode.pt, "
         "restyle_e4e_ffhq_encode.pt)")


@dataclass
class DecoderSummary:
    """What the file's decoder is: enough to tell whether a generator is the one the encoder was trained with."""

    img_resolution: int
    w_dim: int
    num_ws: int
    mapping: dict[str, torch.Tensor] = field(default_factory=dict)  # our names (mapping.fc*), for a weight check


@dataclass
class EncoderInfo:
    name: str
    kind: str                            # 'psp', 'e4e', 'restyle_psp' or 'restyle_e4e'
    encoder_type: str                    # the reference class name
    stylegan_size: Optional[int]         # opts stylegan_size / output_size
    start_from_latent_avg: bool
    decoder: Optional[DecoderSummary]
    dataset_type: str = ""

    @property
    def iterative(self) -> bool:
        return self.kind.startswith("restyle")


class Encoder(nn.Module):
    """A loaded encoder: the network, its `latent_avg` `[num_ws, w_dim]` (None when the file has none) and what
    the file says about itself. Frozen, eval mode; shared and cached by the nodes, so never modified."""

    def __init__(self, net: StyleEncoder, latent_avg: Optional[torch.Tensor], info: EncoderInfo):
        super().__init__()
        self.net = net
        self.register_buffer("latent_avg", latent_avg, persistent=False)
        self.info = info
        self.input_resolution = ENCODER_RESOLUTION
        self.eval().requires_grad_(False)

    @property
    def config(self) -> EncoderConfig:
        return self.net.config

    def describe(self) -> str:
        i, c = self.info, self.config
        dec = i.decoder
        return (f"{i.name}: {i.kind} ({i.encoder_type}), {c.num_ws} style layers, w {c.w_dim}, input "
                f"{self.input_resolution} px" + (f", {DEFAULT_RESTYLE_ITERATIONS} iterations by default"
                                                  if i.iterative else "")
                + (f"; trained with a {dec.img_resolution} px generator" if dec else
                   (f"; trained with a {i.stylegan_size} px generator" if i.stylegan_size else "")))


def _opts(data: Mapping, what: str) -> dict:
    opts = data.get("opts", {})
    if opts is None:
        opts = {}
    if not isinstance(opts, Mapping):
        raise CheckpointError(f"{what}: 'opts' is a {type(opts).__name__}, expected the dict of training options "
                              f"pSp/e4e/ReStyle save; {_HINT}")
    return dict(opts)


def _opt_int(opts: Mapping, key: str, what: str) -> Optional[int]:
    v = opts.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 16:
        raise CheckpointError(f"{what}: opts[{key!r}] is {describe(v)}, expected an image size such as 1024")
    return v


def read_encoder_checkpoint(path: PathLike) -> dict:
    """The checkpoint dict, read safely (`read_state_dict`: size checks, `weights_only=True`, no TorchScript)."""
    return read_state_dict(path, what="pSp/e4e/ReStyle encoder",
                           hint="retrained encoders must be saved as plain tensors and dicts, as the references' "
                                "coach does ({'state_dict', 'opts', 'latent_avg'}); " + _HINT)


def encoder_from_checkpoint(data: Any, what: str) -> Encoder:
    """Build the `Encoder` of a loaded checkpoint dict, every name and shape checked. CheckpointError otherwise."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{what}: expected a dict from torch.save, got {type(data).__name__}; {_HINT}")
    sd = data.get("state_dict")
    if not isinstance(sd, Mapping):
        if any(isinstance(k, str) and k.startswith(("g_ema", "style.")) for k in data):
            raise CheckpointError(f"{what}: a StyleGAN generator checkpoint, not an encoder; load it with Load "
                                  f"StyleGAN and put encoders (e4e, pSp, ReStyle) in models/encoders")
        raise CheckpointError(f"{what}: no 'state_dict' (keys: {', '.join(describe(k, 40) for k in list(data)[:8])});"
                              f" {_HINT}")
    if not all(isinstance(k, str) for k in sd) or not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError(f"{what}: 'state_dict' must map names to tensors; {_HINT}")
    if any(k.startswith(("hypernet.", "w_encoder.")) for k in sd):
        raise CheckpointError(f"{what}: a HyperStyle checkpoint (hypernetwork weight offsets); HyperStyle is not "
                              f"supported. Use its W encoder's source instead: e4e (e4e_ffhq_encode.pt) or ReStyle "
                              f"(restyle_e4e_ffhq_encode.pt), then PTI for fidelity")
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    if not enc:
        raise CheckpointError(f"{what}: the state dict has no 'encoder.*' tensors; {_HINT}")
    opts = _opts(data, what)
    etype = opts.get("encoder_type")
    if etype in _UNSUPPORTED_TYPES:
        raise CheckpointError(f"{what}: encoder_type {etype!r} ({_UNSUPPORTED_TYPES[etype]}) is not supported; only "
                              f"the IR-SE50 encoders ({', '.join(_TYPES)})")
    if etype is None:
        raise CheckpointError(f"{what}: opts has no 'encoder_type', so pSp and e4e (same tensor shapes) cannot be told "
                              f"apart; add opts['encoder_type'] ({', '.join(_TYPES)}) to the file")
    if etype not in _TYPES:
        raise CheckpointError(f"{what}: unknown encoder_type {describe(etype)}; supported: {', '.join(_TYPES)}")
    kind, arch, progressive = _TYPES[etype]
    if "input_layer.0.weight" not in enc or enc["input_layer.0.weight"].ndim != 4:
        raise CheckpointError(f"{what}: the encoder has no IR-SE input layer (encoder.input_layer.0.weight)")
    in_ch = int(enc["input_layer.0.weight"].shape[1])
    if in_ch == 6 and kind in ("psp", "e4e"):
        kind = "restyle_" + kind  # ReStyle's pSp can also use the FPN GradualStyleEncoder, on 6 channels
    if in_ch != (6 if kind.startswith("restyle") else 3):
        raise CheckpointError(f"{what}: {etype} with {in_ch} input channels; expected 3 (pSp, e4e) or 6 (ReStyle: "
                              f"image + reconstruction)")
    config = EncoderConfig(arch=arch, progressive=progressive, num_ws=_count_styles(enc, what), input_channels=in_ch,
                           stages=_stages(enc, what), stem_channels=int(enc["input_layer.0.weight"].shape[0]))
    net = StyleEncoder(config)
    _load_strict(net, enc, what)
    prepare_for_inference(net)

    stylegan_size = _opt_int(opts, "stylegan_size", what) or _opt_int(opts, "output_size", what)
    decoder = _decoder_summary(data, what) if any(k.startswith("decoder.") for k in sd) else None
    size = decoder.img_resolution if decoder else stylegan_size
    if size is not None and 2 * int(math.log2(size)) - 2 != config.num_ws:
        raise CheckpointError(f"{what}: the encoder has {config.num_ws} style layers but its generator is {size} px "
                              f"({2 * int(math.log2(size)) - 2} layers); the file is inconsistent")
    latent_avg = data.get("latent_avg")
    if latent_avg is not None:
        if not torch.is_tensor(latent_avg) or not latent_avg.is_floating_point():
            raise CheckpointError(f"{what}: 'latent_avg' is {describe(latent_avg)}, expected a float tensor")
        if latent_avg.shape == (config.w_dim,) or latent_avg.shape == (1, config.w_dim):
            latent_avg = latent_avg.reshape(1, -1).repeat(config.num_ws, 1)
        if tuple(latent_avg.shape) != (config.num_ws, config.w_dim):
            raise CheckpointError(f"{what}: 'latent_avg' has shape {list(latent_avg.shape)}, expected "
                                  f"[{config.num_ws}, {config.w_dim}]")
        latent_avg = latent_avg.float().clone()
    # pSp's default is False, e4e's and ReStyle's always add it (ReStyle without the option).
    start = bool(opts.get("start_from_latent_avg", kind != "psp")) or kind.startswith("restyle")
    info = EncoderInfo(name=Path(str(what)).name, kind=kind, encoder_type=etype, stylegan_size=stylegan_size,
                       start_from_latent_avg=start, decoder=decoder, dataset_type=str(opts.get("dataset_type", "")))
    return Encoder(net, latent_avg, info)


def load_encoder(path: PathLike, device=None) -> Encoder:
    """Read a pSp / e4e / ReStyle `.pt` safely and build its encoder (see the module docstring).

    Raises:
        CheckpointError: the file is unreadable, holds Python objects besides tensors, is a HyperStyle or generator
            checkpoint, or its names and shapes are not an IR-SE50 encoder's; the message says which.
    """
    enc = encoder_from_checkpoint(read_encoder_checkpoint(path), str(path))
    return enc.to(device) if device is not None else enc


def _count_styles(enc: Mapping[str, torch.Tensor], what: str) -> int:
    idx = {int(m.group(1)) for k in enc if (m := re.fullmatch(r"styles\.(\d{1,3})\.linear\.weight", k))}
    if not idx or idx != set(range(len(idx))) or len(idx) > 40:
        raise CheckpointError(f"{what}: the encoder's styles.* blocks are missing or not numbered 0..n-1")
    return len(idx)


def _stages(enc: Mapping[str, torch.Tensor], what: str) -> tuple[tuple[int, int], ...]:
    """Backbone widths from the shapes; the unit counts are IR-SE50's (the references tap units 6, 20 and 23)."""
    units = sum(IR_SE50_STAGES[i][1] for i in range(4))
    found = {int(m.group(1)) for k in enc if (m := re.fullmatch(r"body\.(\d{1,3})\.res_layer\.1\.weight", k))}
    if found != set(range(units)):
        raise CheckpointError(f"{what}: the encoder backbone has {len(found)} units, expected IR-SE50's {units} "
                              f"(IR-SE100/152 backbones are not used by the published encoders)")
    stages, start = [], 0
    for _, n in IR_SE50_STAGES:
        stages.append((int(enc[f"body.{start}.res_layer.1.weight"].shape[0]), n))
        start += n
    return tuple(stages)


def _load_strict(net: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    load_state_strict(net, state, what, noun="encoder tensor",
                      mismatch=f"the encoder tensors do not match {net.config.arch} "
                               f"{'(progressive) ' if net.config.progressive else ''}IR-SE50 encoder")


def _decoder_summary(data: Mapping, what: str) -> DecoderSummary:
    from ...loaders.rosinality import config_from_rosinality, convert_rosinality_state, extract_rosinality_state

    state, _ = extract_rosinality_state(data, f"{what} (its decoder)")
    cfg = config_from_rosinality(state, f"{what} (its decoder)")
    mapping = convert_rosinality_state({k: v for k, v in state.items() if k.startswith("style.")}, what)
    num_ws = 2 * int(math.log2(cfg.img_resolution)) - 2
    return DecoderSummary(cfg.img_resolution, cfg.w_dim, num_ws, {k: v.float() for k, v in mapping.items()})


def check_pairing(encoder: Encoder, G) -> list[str]:
    """Whether `G` is the generator `encoder` was trained with. ValueError when it cannot be (another size, w
    width or number of style layers); notes (a list of sentences) when it has the same architecture but other
    mapping weights (a fine-tuned copy or another generator: the codes were learned for the original)."""
    c, info = encoder.config, encoder.info
    dec = info.decoder
    size = dec.img_resolution if dec else info.stylegan_size
    trained = (f"{info.name} was trained with a {size} px generator ({c.num_ws} style layers, w {c.w_dim})"
               if size else f"{info.name} makes {c.num_ws} style layers of width {c.w_dim}")
    fix = ("load the generator it was trained with (a pSp/e4e/ReStyle file carries it: Load StyleGAN reads the same "
           ".pt)")
    if G.num_ws != c.num_ws or G.w_dim != c.w_dim or (size is not None and G.img_resolution != size):
        raise ValueError(f"the encoder does not match the generator: {trained}, but the generator "
                         f"'{G.info.name}' is {G.img_resolution} px with {G.num_ws} style layers and w {G.w_dim}; "
                         f"{fix}")
    notes = []
    if dec is not None and dec.mapping:
        own = dict(G.mapping.named_parameters(prefix="mapping"))
        same = all(k in own and own[k].shape == v.shape and
                   torch.allclose(own[k].detach().float().cpu(), v, rtol=1e-3, atol=1e-5) for k, v in dec.mapping.items())
        if not same:
            notes.append(f"the generator '{G.info.name}' has other mapping weights than {info.name}'s decoder (a "
                         f"fine-tuned copy or another model of the same size): the encoder's latents were learned for "
                         f"its own generator and may reconstruct worse")
    if encoder.latent_avg is None and info.start_from_latent_avg:
        notes.append(f"{info.name} has no latent_avg: the generator's mean w is used instead")
    return notes
