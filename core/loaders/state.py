"""Strict state-dict loading shared by every converter: every key and every shape is checked, and a generator is
only allocated once the file is known to hold the weights its config declares."""

from __future__ import annotations

from typing import Mapping, Union

import torch
from torch.overrides import TorchFunctionMode

from ..config import GeneratorConfig
from ..errors import CheckpointError
from ..networks import Generator


class _SizedFactoriesOnMeta(TorchFunctionMode):
    """Creates tensors from sizes (`torch.empty`, `zeros`, ...) on the meta device and leaves tensors made from
    data (`as_tensor`: the few FIR taps) on the CPU, so building a generator allocates nothing of its size and runs
    no arithmetic on meta tensors (whose first use imports torch's symbolic-shape machinery: seconds)."""

    FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.randn, torch.rand})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def meta_generator(config: GeneratorConfig) -> Generator:
    """`Generator(config)` with its weights on the meta device: its structure (modules, names, shapes) without
    allocating it (cheap once `config` passed its bounds check). Never run it."""
    with _SizedFactoriesOnMeta():
        return Generator(config)


def expected_state_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of `Generator(config).state_dict()`, without allocating it."""
    return {k: tuple(v.shape) for k, v in meta_generator(config).state_dict().items()}


def build_generator_for(config: GeneratorConfig, weights: Union[Mapping[str, torch.Tensor], int], what: str, *,
                        optional: tuple[str, ...] = ("mapping.w_avg",)) -> Generator:
    """`Generator(config)`, allocated only after checking that the file can hold its weights.

    Args:
        config: the architecture the file declares (already bounds-checked by `GeneratorConfig`).
        weights: the file's tensors under our names (every name and shape is compared, as `load_state_strict`
            will), or, where names are only known after building (TensorFlow pickles), the number of tensor
            elements the file holds: it must be at least what the config needs.
        what: the file, for the messages.
        optional: tensors that may be absent (they are neither required nor counted).

    Raises:
        CheckpointError: naming the file, when the weights cannot fit the declared architecture. Nothing of the
            generator's size has been allocated then.
    """
    shapes = expected_state_shapes(config)
    if isinstance(weights, Mapping):
        problems = _fit_problems(shapes, {k: tuple(v.shape) for k, v in weights.items()}, optional)
        if problems:
            raise _fit_error(what, config, problems)
    else:
        needed = sum(_numel(s) for k, s in shapes.items() if k not in optional)
        if int(weights) < needed:
            raise CheckpointError(
                f"{what}: the file holds {int(weights):,} weight values but the architecture it declares "
                f"({config.arch}, {config.img_resolution} px, {len(shapes)} tensors) needs {needed:,}; the file is "
                f"truncated or its settings are forged; download it again")
    return Generator(config)


def load_state_strict(G: Generator, state: Mapping[str, torch.Tensor], what: str,
                      optional: tuple[str, ...] = ("mapping.w_avg",)) -> list[str]:
    """Copy `state` into `G`; raise CheckpointError naming missing, unexpected or mis-shaped tensors.

    Keys listed in `optional` may be absent (they keep their current value); returns those that were.
    """
    expected = G.state_dict()
    for k, v in state.items():
        if not torch.is_tensor(v):
            raise CheckpointError(f"{what}: entry {k!r} is a {type(v).__name__}, expected a tensor")
    problems = _fit_problems({k: tuple(v.shape) for k, v in expected.items()},
                             {k: tuple(v.shape) for k, v in state.items()}, optional)
    if problems:
        raise _fit_error(what, G.config, problems)
    for k, v in state.items():
        if v.is_complex() or v.dtype == torch.bool:
            raise CheckpointError(f"{what}: tensor {k!r} has dtype {v.dtype}, expected real numbers; the file is "
                                  f"corrupt")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{what}: tensor {k!r} contains NaN or infinite values; the file is corrupt")
    with torch.no_grad():
        for k, v in expected.items():
            if k in state:
                v.copy_(state[k].to(v.dtype))
    return [k for k in optional if k not in state]


def _fit_problems(expected: Mapping[str, tuple], found: Mapping[str, tuple], optional: tuple[str, ...]) -> list[str]:
    missing = [k for k in expected if k not in found and k not in optional]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: file {list(found[k])} vs expected {list(s)}"
              for k, s in expected.items() if k in found and tuple(found[k]) != tuple(s)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) {_preview(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) {_preview(shapes)}")
    return problems


def _fit_error(what: str, config: GeneratorConfig, problems: list[str]) -> CheckpointError:
    return CheckpointError(f"{what}: the weights do not fit the architecture described by the file "
                           f"({config.arch}, {config.img_resolution} px): " + "; ".join(problems))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _preview(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"
