"""Speed-up switches of the synthesis: torch.compile (CUDA graphs for fixed-shape loops), autocast, channels-last, TF32.

One frozen `AccelConfig` per synthesis network (`G.synthesis.accel`, set with `set_accel(G, ...)`), read by its
`forward` (so every editing loop that renders with `G.synthesis(ws, ...)`, the inversion and CLIP loops included,
picks it up without change). The defaults are today's plain path: with `AccelConfig()` the forward is the same code,
bit for bit. Each switch is independent:

- `compile`: `torch.compile` of the whole synthesis forward ('default', 'max-autotune'), or 'reduce-overhead',
  which adds CUDA graphs: the launch overhead of a fixed-shape loop (the projector's 1000 steps at batch 1) goes.
  Shapes are never assumed: a new batch size or resolution compiles (and records) again, and a generator that
  cannot be compiled falls back to the plain path with one warning. Outputs of a CUDA-graph run are cloned, so a
  loop may keep them across steps. Staged runs (`synthesis.run`) stay plain.
- `autocast`: the whole synthesis under `torch.autocast` in bfloat16 or float16 (on top of `G.precision`, which
  already runs the blocks NVIDIA trained in fp16 in fp16 on CUDA). Not bit-exact: see `AUTOCAST_TOLERANCE`.
- `channels_last`: activations in channels-last memory (the default, as before; cuDNN and oneDNN run these
  convolutions faster in it). False keeps NCHW-contiguous activations (equal up to float rounding).
- `tf32`: TF32 matmuls and convolutions on Ampere+ GPUs while the synthesis runs (restored after); None leaves
  PyTorch's process settings alone (the default). No effect on CPU.
- `kernels`: the resampling ops' implementation while the synthesis runs (`core.ops.impl.ops_impl`): 'torch' (the
  default), 'triton' (the fused Triton kernels: filtered_lrelu without the upsampled tensor in memory, upfirdn2d) or
  'auto' (Triton on CUDA tensors when triton imports). Equal to the PyTorch ops up to float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from .log import logger
from .ops.impl import IMPLS, ops_impl

COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")
"""'off': eager. 'default' / 'max-autotune': torch.compile modes (max-autotune benchmarks kernels once, slower to
start). 'reduce-overhead': torch.compile with CUDA graphs (on CUDA; same as 'default' elsewhere)."""

AUTOCAST_DTYPES: dict[str, Optional[torch.dtype]] = {"off": None, "bfloat16": torch.bfloat16, "float16": torch.float16}

AUTOCAST_TOLERANCE = {"bfloat16": 0.1, "float16": 0.02}
"""Max |autocast - float32| of a rendered image, relative to the image's max |x|, that the tests hold the autocast
switch to. bfloat16 measured on CPU with seeded random weights: StyleGAN2 1.2-1.6 %, StyleGAN3 3.4 % (32 px) and
6.2 % (64 px) — StyleGAN3 is the more sensitive (no model was trained in bfloat16; prefer float16 or `G.precision`
'auto' on CUDA). float16 keeps 3 more mantissa bits. bench/bench_gpu.py prints the error of every switch at full
size."""

COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
"""'inductor' generates kernels (the speed-up); 'aot_eager' / 'eager' only trace (checks of the capture, in tests)."""


@dataclass(frozen=True)
class AccelConfig:
    """How the synthesis forward runs; `AccelConfig()` is the plain path (every switch off)."""

    compile: str = "off"                  # torch.compile mode of the synthesis forward (COMPILE_MODES).
    autocast: str = "off"                 # 'off', 'bfloat16' or 'float16': torch.autocast around the forward.
    channels_last: bool = True            # Activations in channels-last memory (False: NCHW-contiguous).
    tf32: Optional[bool] = None           # TF32 on CUDA while rendering; None: leave PyTorch's setting.
    backend: str = "inductor"             # torch.compile backend (COMPILE_BACKENDS).
    kernels: str = "torch"                # resampling ops (core/ops/impl.py): 'torch', 'triton' or 'auto'.

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {tuple(AUTOCAST_DTYPES)}, got {self.autocast!r}")
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"channels_last must be True or False, got {self.channels_last!r}")
        if not (self.tf32 is None or isinstance(self.tf32, bool)):
            raise ValueError(f"tf32 must be None (PyTorch's setting), True or False, got {self.tf32!r}")
        if self.backend not in COMPILE_BACKENDS:
            raise ValueError(f"backend must be one of {COMPILE_BACKENDS}, got {self.backend!r}")
        if self.kernels not in IMPLS:
            raise ValueError(f"kernels must be one of {IMPLS}, got {self.kernels!r}")

    @property
    def wraps_forward(self) -> bool:
        """Whether the forward needs the accelerated wrapper (compile, autocast, TF32 or kernels set)."""
        return self.compile != "off" or self.autocast != "off" or self.tf32 is not None or self.kernels != "torch"

    def describe(self) -> str:
        """Short label of the switches that differ from the plain path ('plain' when none)."""
        plain = AccelConfig()
        parts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                 if getattr(self, f.name) != getattr(plain, f.name)
                 and not (f.name == "backend" and self.compile == "off")]
        return ", ".join(parts) or "plain"


def set_accel(G: nn.Module, config: Optional[AccelConfig] = None, **switches: Any) -> AccelConfig:
    """Set the speed-up switches of `G` (a Generator or its synthesis network): `config`, with `switches`
    (AccelConfig field names) replacing its fields; `set_accel(G)` restores the plain path. Returns the new config.

    Only the settings change (no weights): the copies editing methods make inherit them."""
    synthesis = getattr(G, "synthesis", G)
    if not hasattr(synthesis, "accel"):
        raise TypeError(f"set_accel needs a core Generator or its synthesis network, got {type(G).__name__}")
    config = dataclasses.replace(config or AccelConfig(), **switches)
    synthesis.accel = config
    return config


_tf32_lock = threading.RLock()


@contextlib.contextmanager
def tf32_mode(enabled: Optional[bool]) -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN convolutions on (True) or off (False) inside the block, restored after;
    None changes nothing."""
    if enabled is None:
        yield
        return
    # The flags are process-wide: renders in two threads (a live preview beside the prompt executor) would
    # interleave their save / restore and leave the wrong setting behind, so blocks that set them run one at a time.
    with _tf32_lock:
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextlib.contextmanager
def accel_context(config: AccelConfig, device: torch.device) -> Iterator[None]:
    """The process-level part of `config` (TF32, autocast, the ops' kernels) around one render on `device`."""
    dtype = AUTOCAST_DTYPES[config.autocast]
    with tf32_mode(config.tf32 if device.type == "cuda" else None), ops_impl(config.kernels):
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def plain_forward(synthesis: nn.Module, ws: Optional[torch.Tensor], kwargs: dict) -> torch.Tensor:
    """The synthesis forward without any wrapper: one `run`, the image made contiguous."""
    return synthesis.run(ws, **kwargs).img.contiguous()


_compiled: dict[tuple[str, str], Callable] = {}   # (mode, backend) -> compiled plain_forward (guards per module)


def compiled_forward(mode: str, backend: str) -> Callable:
    """`plain_forward` compiled with `mode` / `backend` (one function per pair; dynamo guards on the module and the
    shapes, so copies of a generator and new shapes recompile rather than reuse a wrong graph)."""
    key = (mode, backend)
    if key not in _compiled:
        options = dict(mode=mode) if backend == "inductor" else {}
        _compiled[key] = torch.compile(plain_forward, backend=backend, dynamic=False, **options)
    return _compiled[key]


def accelerated_forward(synthesis: nn.Module, ws: Optional[torch.Tensor], kwargs: dict) -> torch.Tensor:
    """The synthesis forward under `synthesis.accel` (called by `forward` when `accel.wraps_forward`)."""
    config: AccelConfig = synthesis.accel
    ref = ws if ws is not None else next(iter((kwargs.get("styles") or {}).values()), None)
    device = ref.device if ref is not None else next(synthesis.parameters()).device
    out = _forward_in_context(synthesis, ws, kwargs, config, device)
    return out.to(torch.float32) if config.autocast != "off" else out   # the image is float32, as without autocast


def _forward_in_context(synthesis: nn.Module, ws: Optional[torch.Tensor], kwargs: dict, config: AccelConfig,
                        device: torch.device) -> torch.Tensor:
    with accel_context(config, device):
        key = (config.compile, config.backend)
        failed = synthesis.__dict__.setdefault("accel_failed", set())   # settings this network could not compile
        if config.compile == "off" or key in failed:
            return plain_forward(synthesis, ws, kwargs)
        fn = compiled_forward(config.compile, config.backend)
        graphs = config.compile == "reduce-overhead" and device.type == "cuda"
        try:
            if graphs:
                # Each call is a new step: outputs of the previous replay may be overwritten, so they are cloned.
                torch.compiler.cudagraph_mark_step_begin()
                return fn(synthesis, ws, kwargs).clone()
            return fn(synthesis, ws, kwargs)
        except Exception as e:  # noqa: BLE001 - a compiler failure must not stop a render the plain path can do
            out = plain_forward(synthesis, ws, kwargs)   # a user error raises here, with its own message
            failed.add(key)
            logger.warning("torch.compile(mode=%r, backend=%r) failed on this generator (%s: %s); rendering "
                           "without it", config.compile, config.backend, type(e).__name__, str(e)[:300])
            return out


__all__ = ["AccelConfig", "COMPILE_MODES", "AUTOCAST_DTYPES", "AUTOCAST_TOLERANCE", "COMPILE_BACKENDS", "set_accel",
           "tf32_mode", "accel_context", "plain_forward", "accelerated_forward"]
