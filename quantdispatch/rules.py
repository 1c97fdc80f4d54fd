"""The per-method rules of planning and validation, as dispatched functions a plugin extends.

Each rule is a function of the config type (``ConfigRule``) or of the config and device types
(``DeviceRule``), dispatched by ``plum`` on the most specific registered types. A fallback on the
abstract bases makes every rule total, so a third-party config type nobody wrote rules for still
plans (and is refused with a reason where that is the answer). Registration is eager: a duplicate
or ambiguous signature raises ``RegistrationError`` when it is registered, not at a user's call.

The built-in methods register their rules in ``quantdispatch.methods``; a plugin does the same:

>>> import attrs
>>> from quantdispatch import AbstractQuantConfig, Cpu
>>> @attrs.frozen(kw_only=True)
... class Toy(AbstractQuantConfig):
...     method = "toy"
>>> @quantizes_on_load.register(Toy)
... def _toy_quantizes(config: Toy, /) -> bool:
...     return True
>>> quantizes_on_load(Toy()), compute_dtype(Toy(), Cpu())[0].value
(True, 'float32')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import plum

from .backend import Backend, Candidate, Refusal
from .configs.base import AbstractQuantConfig
from .dtypes import DType
from .environment import AbstractDevice
from .result import Issues

__all__ = [
    "RegistrationError", "ConfigRule", "DeviceRule", "Selection", "select_backend", "cross_field_issues",
    "compute_dtype", "skip_modules", "quantizes_on_load", "backend_notes", "declare_backend", "backends", "backend_named",
]

R = TypeVar("R")
C = TypeVar("C", bound=AbstractQuantConfig)
D = TypeVar("D", bound=AbstractDevice)

Selection = tuple[Candidate, ...] | Refusal
"""What ``select_backend`` answers: candidate backends, best first, or a typed refusal."""


class RegistrationError(ValueError):
    """A registration that would make dispatch ambiguous or silently replace an earlier one."""


def _is_subclass(obj: object, base: type) -> bool:
    """issubclass that answers False for non-types (untyped callers pass anything)."""
    return isinstance(obj, type) and issubclass(obj, base)


def _le(a: tuple[type, ...], b: tuple[type, ...]) -> bool:
    return all(issubclass(x, y) for x, y in zip(a, b, strict=True))


def _names(types: tuple[type, ...]) -> str:
    return "(" + ", ".join(t.__qualname__ for t in types) + ")"


class _Table:
    """A plum function plus what plum leaves to call time: duplicate and ambiguity checks, done
    at registration, and a cache of resolved implementations per tuple of argument types."""

    def __init__(self, name: str, fallback: Callable[..., Any]) -> None:
        self.name = name
        self._function = plum.Function(fallback)
        self._function.register(fallback)
        self._cache: dict[Any, Callable[..., Any]] = {}  # keyed by a type or a tuple of types

    def signatures(self) -> tuple[tuple[type, ...], ...]:
        """The registered signatures, read from the dispatcher itself."""
        return tuple(tuple(t for t in m.signature.types if isinstance(t, type)) for m in self._function.methods)

    def add(self, impl: Callable[..., Any], types: tuple[type, ...]) -> None:
        known = self.signatures()
        for old in known:
            if old == types:
                raise RegistrationError(f"{self.name} already has an implementation for {_names(types)}; "
                                        "register a more specific type instead")
            overlap = all(issubclass(x, y) or issubclass(y, x) for x, y in zip(old, types, strict=True))
            meet = tuple(x if issubclass(x, y) else y for x, y in zip(old, types, strict=True))
            if overlap and not (_le(old, types) or _le(types, old)) and meet not in known:
                raise RegistrationError(f"{self.name}: {_names(types)} and {_names(old)} would be ambiguous for "
                                        "arguments of both; register the intersection first or narrow one side")
        found = tuple(t for t in plum.Signature.from_callable(impl).types if isinstance(t, type))
        if found != types:
            raise RegistrationError(f"{impl.__qualname__} is annotated {_names(found)}, but was registered for {_names(types)}")
        self._function.dispatch(impl)
        self._cache.clear()  # a new, more specific implementation may now win for cached types

    def resolve(self, key: Any, args: tuple[object, ...]) -> Callable[..., Any]:
        """The implementation for ``args``, whose types make ``key`` (a type, or a tuple of types)."""
        impl = self._cache.get(key)
        if impl is None:
            impl = self._cache[key] = self._function.resolve_method(args)[0]
        return impl


class ConfigRule(Generic[R]):
    """A rule dispatched on the config type.

    Calling it costs a dictionary lookup plus the implementation (plum resolves once per type).
    """

    def __init__(self, name: str, fallback: Callable[[AbstractQuantConfig], R]) -> None:
        self._table = _Table(name, fallback)
        self.__doc__ = fallback.__doc__

    def __call__(self, config: AbstractQuantConfig, /) -> R:
        impl = self._table._cache.get(type(config)) or self._table.resolve(type(config), (config,))
        result: R = impl(config)
        return result

    def register(self, config_type: type[C]) -> Callable[[Callable[[C], R]], Callable[[C], R]]:
        """Decorate the implementation of this rule for ``config_type`` (annotated exactly so).

        Raises:
            RegistrationError: The type is not a config type, or is registered already.
        """
        if not _is_subclass(config_type, AbstractQuantConfig):
            raise RegistrationError(f"{config_type!r} is not a subclass of AbstractQuantConfig")

        def decorator(impl: Callable[[C], R]) -> Callable[[C], R]:
            self._table.add(impl, (config_type,))
            return impl

        return decorator

    def signatures(self) -> tuple[tuple[type, ...], ...]:
        """Every registered signature, the fallback's included."""
        return self._table.signatures()


class DeviceRule(Generic[R]):
    """A rule dispatched on the config type and the device type."""

    def __init__(self, name: str, fallback: Callable[[AbstractQuantConfig, AbstractDevice], R]) -> None:
        self._table = _Table(name, fallback)
        self.__doc__ = fallback.__doc__

    def __call__(self, config: AbstractQuantConfig, device: AbstractDevice, /) -> R:
        key = (type(config), type(device))
        impl = self._table._cache.get(key) or self._table.resolve(key, (config, device))
        result: R = impl(config, device)
        return result

    def register(self, config_type: type[C], device_type: type[D]) -> Callable[[Callable[[C, D], R]], Callable[[C, D], R]]:
        """Decorate the implementation of this rule for ``(config_type, device_type)``.

        Raises:
            RegistrationError: A type is of the wrong kind, or the pair is registered already or
                would be ambiguous with one that is.
        """
        if not _is_subclass(config_type, AbstractQuantConfig):
            raise RegistrationError(f"{config_type!r} is not a subclass of AbstractQuantConfig")
        if not _is_subclass(device_type, AbstractDevice):
            raise RegistrationError(f"{device_type!r} is not a subclass of AbstractDevice")

        def decorator(impl: Callable[[C, D], R]) -> Callable[[C, D], R]:
            self._table.add(impl, (config_type, device_type))
            return impl

        return decorator

    def signatures(self) -> tuple[tuple[type, ...], ...]:
        """Every registered signature, the fallback's included."""
        return self._table.signatures()


# --------------------------------------------------------------------------------- the rules
def _no_backend(config: AbstractQuantConfig, device: AbstractDevice, /) -> Selection:
    """Return the backends for a config on a device's kind, best first, each with the
    config-specific reasons it cannot take this config, or a ``Refusal``."""
    return Refusal("plan.no_backend", f"no backend is registered for {type(config).__name__} on {type(device).__name__}",
                   "register one with quantdispatch.register_backend")


def _no_cross_field_rules(config: AbstractQuantConfig, /) -> Issues:
    """Return the issues that involve more than one field of a config (empty when none)."""
    return ()


def _float32(config: AbstractQuantConfig, device: AbstractDevice, /) -> tuple[DType, str]:
    """Return the compute dtype a config runs in on a device, and why."""
    return DType.FLOAT32, "float32, the default"


def _default_skips(config: AbstractQuantConfig, /) -> tuple[str, ...] | None:
    """Return the module patterns a config leaves unquantized; ``None``: the output and tied
    embeddings (Transformers' default)."""
    return None


def _needs_calibration(config: AbstractQuantConfig, /) -> bool:
    """Return whether a config's weights can be made while loading a full-precision checkpoint
    (bitsandbytes) rather than by a separate calibration run (GPTQ, AWQ)."""
    return False


def _no_backend_notes(config: AbstractQuantConfig, /) -> Mapping[str, tuple[str, ...]]:
    """Return what loading a config through each backend (by name) will do beyond the backend's
    summary, in plain words, for the plan's notes (empty: nothing more to say)."""
    return {}


select_backend: DeviceRule[Selection] = DeviceRule("select_backend", _no_backend)
cross_field_issues: ConfigRule[Issues] = ConfigRule("cross_field_issues", _no_cross_field_rules)
compute_dtype: DeviceRule[tuple[DType, str]] = DeviceRule("compute_dtype", _float32)
skip_modules: ConfigRule[tuple[str, ...] | None] = ConfigRule("skip_modules", _default_skips)
quantizes_on_load: ConfigRule[bool] = ConfigRule("quantizes_on_load", _needs_calibration)
backend_notes: ConfigRule[Mapping[str, tuple[str, ...]]] = ConfigRule("backend_notes", _no_backend_notes)


# --------------------------------------------------------------------------------- backends
_BACKENDS: dict[str, Backend] = {}


def declare_backend(backend: Backend) -> Backend:
    """Make a backend known by name (for ``LoadOptions(backend=...)``, ``probe`` and docs).

    Raises:
        RegistrationError: Another backend has this name.
    """
    if not isinstance(backend, Backend):
        raise RegistrationError(f"{backend!r} is not a Backend")
    old = _BACKENDS.get(backend.name)
    if old is not None and old != backend:
        raise RegistrationError(f"a backend named {backend.name!r} is already declared; pick another name")
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> tuple[Backend, ...]:
    """Every declared backend, in declaration order."""
    return tuple(_BACKENDS.values())


def backend_named(name: str) -> Backend | None:
    """The declared backend of that name, or ``None``."""
    return _BACKENDS.get(name)
