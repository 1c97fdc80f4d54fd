"""Backend selection by multiple dispatch on (config type, device type).

``select_backend(config, device)`` returns the backends that can run a config on a device kind,
best first, each with the config-specific reasons it cannot take this config, or a typed
``Refusal`` when no backend exists at all. It is total: the fallback on the abstract bases
answers every pair, including third-party types nobody registered a backend for.

Third parties add implementations with ``register_backend``; a duplicate or ambiguous signature is
refused when it is registered, not when a user first calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

import plum

from .backend import Candidate, Refusal
from .builtin_backends import (
    AWQ_CUDA, AWQ_MARLIN, BNB_4BIT, BNB_8BIT, GPTQMODEL_MARLIN, TORCH_AWQ, TORCH_GGUF, TORCH_GPTQ,
)
from .codec.registry import RegistrationError
from .configs.awq import AbstractAwq, AwqLlm, AwqMarlin
from .configs.base import AbstractQuantConfig
from .configs.bnb import Bnb4Bit, Bnb8Bit
from .configs.gguf import Gguf
from .configs.gptq import AbstractGptq
from .environment import AbstractDevice, Cpu, Cuda
from .gguf.types import GgmlType

__all__ = ["select_backend", "register_backend", "Selection", "GGUF_DEQUANT_TYPES"]

Selection = tuple[Candidate, ...] | Refusal
C = TypeVar("C", bound=AbstractQuantConfig)
D = TypeVar("D", bound=AbstractDevice)

_dispatch = plum.Dispatcher(warn_redefinition=True)

_MARLIN_GROUPS: Final = (-1, 32, 64, 128)
GGUF_DEQUANT_TYPES: Final = frozenset(GgmlType) - {GgmlType.Q8_1, GgmlType.Q8_K, GgmlType.I8, GgmlType.I16,
                                                    GgmlType.I32, GgmlType.I64, GgmlType.F64}
"""GGML types the torch GGUF backend dequantizes (every stored block type; not the integer and
dot-product-only types, which model weights never use)."""


def _marlin_unfit(bits: int, sym: bool, group_size: int) -> tuple[str, ...]:
    reasons = []
    if bits not in (4, 8):
        reasons.append(f"Marlin takes 4- or 8-bit weights, not {bits}-bit")
    if not sym:
        reasons.append("Marlin takes symmetric GPTQ weights only (sym=false here)")
    if group_size not in _MARLIN_GROUPS:
        reasons.append(f"Marlin takes group_size in {list(_MARLIN_GROUPS)}, not {group_size}")
    return tuple(reasons)


@overload
def _select_backend(config: AwqMarlin, device: Cuda, /) -> Selection:
    return (Candidate(AWQ_MARLIN, _marlin_unfit(config.bits, True, config.group_size)),)


@overload
def _select_backend(config: AwqMarlin, device: AbstractDevice, /) -> Selection:
    return Refusal("awq.marlin.needs_cuda", "Marlin-packed AWQ weights are tiled for the Marlin CUDA kernel; no portable kernel reads them",
                   "load on a CUDA GPU with compute capability 8.0+, or use a GEMM-packed copy of the model")


@overload
def _select_backend(config: AbstractAwq, device: Cuda, /) -> Selection:
    # AWQ Marlin handles zero points itself, so only the width and group size matter.
    marlin = Candidate(AWQ_MARLIN, _marlin_unfit(config.bits, True, config.group_size))
    if isinstance(config, AwqLlm):
        return (Candidate(TORCH_AWQ),)
    return (marlin, Candidate(AWQ_CUDA), Candidate(TORCH_AWQ))


@overload
def _select_backend(config: AbstractAwq, device: AbstractDevice, /) -> Selection:
    return (Candidate(TORCH_AWQ),)


@overload
def _select_backend(config: AbstractGptq, device: Cuda, /) -> Selection:
    return (Candidate(GPTQMODEL_MARLIN, _marlin_unfit(config.bits, config.sym, config.group_size)), Candidate(TORCH_GPTQ))


@overload
def _select_backend(config: AbstractGptq, device: AbstractDevice, /) -> Selection:
    return (Candidate(TORCH_GPTQ),)


@overload
def _select_backend(config: Bnb4Bit, device: AbstractDevice, /) -> Selection:
    return (Candidate(BNB_4BIT),)


@overload
def _select_backend(config: Bnb8Bit, device: AbstractDevice, /) -> Selection:
    return (Candidate(BNB_8BIT),)


@overload
def _select_backend(config: Gguf, device: AbstractDevice, /) -> Selection:
    odd = sorted({t.ggml_type.name for t in config.tensors if t.ggml_type not in GGUF_DEQUANT_TYPES})
    return (Candidate(TORCH_GGUF, tuple(f"cannot dequantize {name} tensors" for name in odd)),)


@overload
def _select_backend(config: AbstractQuantConfig, device: AbstractDevice, /) -> Selection:
    return Refusal("plan.no_backend", f"no backend is registered for {type(config).__name__} on {type(device).__name__}",
                   "register one with quantdispatch.register_backend")


@_dispatch
def _select_backend(config: AbstractQuantConfig, device: AbstractDevice, /) -> Selection:
    raise AssertionError("unreachable: plum calls the @overload bodies")


_RESOLVED: dict[tuple[type, type], Callable[[Any, Any], Selection]] = {}


def select_backend(config: AbstractQuantConfig, device: AbstractDevice, /) -> Selection:
    """Return the backends for ``config`` on ``device``'s kind, best first, or a ``Refusal``.

    Plum resolves the most specific implementation once per (config type, device type); the
    result is cached, so a call costs a dictionary lookup plus the implementation itself.

    >>> from quantdispatch import Gptq, Cuda
    >>> [c.backend.name for c in select_backend(Gptq(bits=4), Cuda(capability=(8, 0)))]
    ['gptqmodel-marlin', 'torch-gptq']
    """
    key = (type(config), type(device))
    impl = _RESOLVED.get(key)
    if impl is None:
        function: Any = _select_backend
        impl = _RESOLVED[key] = function.resolve_method((config, device))[0]
    return impl(config, device)


_SIGNATURES: list[tuple[type[AbstractQuantConfig], type[AbstractDevice]]] = [
    (Bnb4Bit, AbstractDevice), (Bnb8Bit, AbstractDevice), (AbstractGptq, AbstractDevice), (AbstractGptq, Cuda),
    (AbstractAwq, AbstractDevice), (AbstractAwq, Cuda), (AwqMarlin, AbstractDevice), (AwqMarlin, Cuda),
    (Gguf, AbstractDevice), (AbstractQuantConfig, AbstractDevice),
]


def _le(a: tuple[type, ...], b: tuple[type, ...]) -> bool:
    return all(issubclass(x, y) for x, y in zip(a, b, strict=True))


def _check_new(new: tuple[type[AbstractQuantConfig], type[AbstractDevice]]) -> None:
    for old in _SIGNATURES:
        if old == new:
            msg = f"select_backend already has an implementation for ({new[0].__qualname__}, {new[1].__qualname__})"
            raise RegistrationError(msg + "; register a more specific config or device type instead")
        overlap = all(issubclass(x, y) or issubclass(y, x) for x, y in zip(old, new, strict=True))
        if overlap and not (_le(old, new) or _le(new, old)):
            names = ", ".join(t.__qualname__ for t in old)
            raise RegistrationError(
                f"({new[0].__qualname__}, {new[1].__qualname__}) and ({names}) would be ambiguous for configs and devices of both;"
                " register the intersection first or narrow one side"
            )


Impl = Callable[[C, D], Selection]


def _is_subclass(obj: object, base: type) -> bool:
    """issubclass that answers False for non-types (untyped callers pass anything)."""
    return isinstance(obj, type) and issubclass(obj, base)


def register_backend(config_type: type[C], device_type: type[D]) -> Callable[[Impl[C, D]], Impl[C, D]]:
    """Register how ``select_backend`` answers for ``(config_type, device_type)``.

    The decorated function receives the config and the device and returns candidates or a
    ``Refusal``. Its annotations must name exactly the two registered types.

    Raises:
        RegistrationError: The signature is already registered, or would be ambiguous with one.
    """
    if not _is_subclass(config_type, AbstractQuantConfig):
        raise RegistrationError(f"{config_type!r} is not a subclass of AbstractQuantConfig")
    if not _is_subclass(device_type, AbstractDevice):
        raise RegistrationError(f"{device_type!r} is not a subclass of AbstractDevice")

    def decorator(impl: Impl[C, D]) -> Impl[C, D]:
        _check_new((config_type, device_type))
        declared = plum.Signature(config_type, device_type)
        found = plum.Signature.from_callable(impl)
        if found.types != declared.types:
            raise RegistrationError(f"{impl.__qualname__} is annotated {found}, but was registered for {declared}")
        function: Any = _select_backend
        function.dispatch(impl)
        _SIGNATURES.append((config_type, device_type))
        _RESOLVED.clear()  # a new, more specific implementation may now win for cached pairs
        return impl

    return decorator
