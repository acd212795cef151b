"""Which implementation the resampling ops run: the pure-PyTorch path (default) or the Triton kernels.

`impl` is "torch" (today's path, the default everywhere), "triton" (the fused Triton kernels of
`triton_resample.py` wherever they apply; with a warning and the PyTorch path where Triton cannot
run), or "auto" (Triton on CUDA tensors when triton imports, PyTorch otherwise). It is chosen per
call (`filtered_lrelu(..., impl=)`, `upfirdn2d(..., impl=)`) or for a block of code
(`with ops_impl("auto"): G(z, c)`); a per-call value wins. The setting lives in a context variable,
so it follows the thread / task that set it and never leaks into other work.

Triton runs CUDA tensors; CPU tensors only under `TRITON_INTERPRET=1` (set before triton is first
imported), which is how the tests check the kernels without a GPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import os
from types import ModuleType
from typing import Iterator

import torch

IMPLS = ("auto", "triton", "torch")
DEFAULT_IMPL = "torch"

_impl: contextvars.ContextVar[str] = contextvars.ContextVar("stylegan_studio_ops_impl", default=DEFAULT_IMPL)
_log = logging.getLogger("stylegan_studio.ops")
_warned: set[str] = set()
_kernels: ModuleType | None = None
_import_error: str | None = None


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
    return impl


@contextlib.contextmanager
def ops_impl(impl: str) -> Iterator[None]:
    """Run the ops inside the block with `impl` ("auto" | "triton" | "torch")."""
    token = _impl.set(check_impl(impl))
    try:
        yield
    finally:
        _impl.reset(token)


def current_impl() -> str:
    return _impl.get()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_kernels() -> ModuleType | None:
    """The kernel module, imported on first use; None (and the reason in `triton_unavailable()`) if triton fails."""
    global _kernels, _import_error
    if _kernels is None and _import_error is None:
        try:
            _kernels = importlib.import_module(".triton_resample", __package__)
        except Exception as e:  # an ImportError, or triton failing to find a compiler / driver
            _import_error = f"{type(e).__name__}: {e}"
    return _kernels


def triton_unavailable() -> str | None:
    triton_kernels()
    return _import_error


def use_triton(x: torch.Tensor, impl: str | None, op: str, unsupported: str | None = None) -> bool:
    """Decide for one call. `unsupported` names an argument the kernel does not handle (then PyTorch runs)."""
    impl = check_impl(current_impl() if impl is None else impl)
    if impl == "torch":
        return False
    if impl == "auto":
        return x.is_cuda and unsupported is None and triton_kernels() is not None
    # impl == "triton": asked for explicitly, so say why when it cannot be honoured.
    if unsupported is not None:
        _warn_once(f"{op}:{unsupported}", f"{op}: the Triton kernel does not handle {unsupported}; "
                                           f"running the PyTorch path")
        return False
    if not x.is_cuda and not interpreter_on():
        _warn_once(f"{op}:device", f"{op}: Triton runs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), "
                                   f"got a {x.device.type} tensor; running the PyTorch path")
        return False
    if triton_kernels() is None:
        _warn_once(f"{op}:import", f"{op}: triton is not usable ({_import_error}); running the PyTorch path. "
                                   f"Install triton (it ships with PyTorch's Linux CUDA wheels) to use the kernels")
        return False
    return True


class RecomputeGrad(torch.autograd.Function):
    """Forward through a fast kernel; backward recomputes the PyTorch path channel chunk by channel chunk.

    `fast(x, b)` and `ref(x, b)` must compute the same per-channel function of `x` `[N, C, H, W]` and
    `b` `[C]` (or None). The backward is the PyTorch op's own autograd (so the gradient is the
    reference formulation's by construction), run on `chunk` channels at a time so that at most one
    chunk's intermediates (e.g. filtered_lrelu's upsampled image) exist at once. First-order only.
    """

    @staticmethod
    def forward(ctx, fast, ref, chunk: int, x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.ref, ctx.chunk = ref, chunk
        ctx.save_for_backward(x, b)
        return fast(x, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor):
        x, b = ctx.saved_tensors
        need_x, need_b = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        gx = torch.empty_like(x) if need_x else None
        gb = torch.empty_like(b) if need_b else None
        c = x.shape[1]
        for i in range(0, c, ctx.chunk):
            j = min(c, i + ctx.chunk)
            with torch.enable_grad():
                xi = x[:, i:j].detach().requires_grad_(need_x)
                bi = None if b is None else b[i:j].detach().requires_grad_(need_b)
                yi = ctx.ref(xi, bi)
                wrt = [t for t in (xi, bi) if t is not None and t.requires_grad]
                grads = iter(torch.autograd.grad(yi, wrt, gy[:, i:j]))
            if need_x:
                gx[:, i:j] = next(grads)
            if need_b:
                gb[i:j] = next(grads)
        return None, None, None, gx, gb
