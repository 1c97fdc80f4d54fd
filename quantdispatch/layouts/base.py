"""What every layout is: a frozen, pure description of how one linear layer's weights are stored.

A layout says which tensors a layer holds (names, safetensors dtypes, shapes as functions of the
layer's ``in_features`` and ``out_features``), which stored tensor marks a layer as stored in it,
how to read a stored layer's ``out_features`` back from its tensors' shapes, which tensors can be
derived when missing, which ones index others (so their values are range-checked), which must
be finite or keep a sign, and which hold values the layer's shape fixes. The shell reads only
these declarations: nothing in ``quantdispatch.loading`` names a method.

Torch code a layout needs (its portable module, its conversions to a kernel's input form) is
named by a ``Lazy`` reference and imported only when a load executes; a test imports every one.

>>> from quantdispatch.layouts import GptqPacked
>>> layout = GptqPacked(bits=4, group_size=128, v1=True, desc_act=False)
>>> layout.tensors(256, 64, bias=False)["qweight"]
TensorDecl(shape=(32, 64), dtype='I32', accepted=())
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar

import attrs

from ..configs.base import AbstractQuantConfig
from ..rules import ConfigRule

__all__ = ["Lazy", "TensorDecl", "Unpackable", "Tensors", "Sign", "FLOAT_CODES", "AbstractLayout", "AbstractIntLayout",
           "layout_of", "declare_layout", "layouts", "NO_FORMS"]

T = TypeVar("T")

FLOAT_CODES: Final = ("F16", "BF16", "F32")
"""safetensors dtype codes accepted for scales and biases: every reader goes through float32."""


@attrs.frozen
class Lazy(Generic[T]):
    """A typed reference to a shell object (``module``'s attribute ``name``), imported when resolved.

    The pure core names torch code this way without importing it; ``tests/unit/test_layouts.py``
    resolves every reference the registered layouts and kernels hold.
    """

    module: str
    name: str

    def resolve(self) -> T:
        """Import the module and return the attribute.

        Raises:
            ImportError: The module cannot be imported.
            AttributeError: It has no such attribute.
        """
        found: T = getattr(importlib.import_module(self.module), self.name)
        return found

    def __str__(self) -> str:
        return f"{self.module}:{self.name}"


@attrs.frozen
class TensorDecl:
    """One tensor of a stored layer: its shape, the safetensors dtype code the reference tools
    write, and the other codes a checkpoint may use instead (empty: that one only)."""

    shape: tuple[int, ...]
    dtype: str
    accepted: tuple[str, ...] = ()


@attrs.frozen
class Unpackable:
    """Why a layer of some shape cannot be stored in a layout (``code``: stable, dotted)."""

    code: str
    message: str


Tensors = Mapping[str, TensorDecl]
Sign = Literal["positive", "nonnegative"]
NO_FORMS: Final[Mapping[str, Lazy[Any]]] = MappingProxyType({})


@attrs.frozen(kw_only=True)
class AbstractLayout:
    """Base of every layout. Subclasses are frozen values; their class attributes say how the
    shell finds their torch side.

    Class attributes:
        marker: The tensor (name suffix) whose presence says a layer is stored in this layout.
        portable: The torch module that holds a stored layer's tensors as buffers and computes
            with them anywhere; built as ``portable(layout, in_features, out_features, bias,
            device=..., dequantize_at_load=...)``. ``None``: no portable module (the layout is
            tiled for one GPU kernel).
        forms: The kernel input forms this layout converts to, each a function of the loaded
            portable module (``"int4"``: ``Int4Weights`` or a reason string).
    """

    marker: ClassVar[str] = "weight"
    portable: ClassVar[Lazy[Any] | None] = Lazy("quantdispatch.kernels.modules", "PackedLinear")
    forms: ClassVar[Mapping[str, Lazy[Any]]] = NO_FORMS
    whole_modules: ClassVar[bool] = False
    """Whether the layout also stores model modules that are not linear layers (a mixture-of-experts
    block whose experts are 3-D tensors): the loader then replaces any module whose ``marker``
    tensor is stored with ``portable.from_module(layout, module, device=..., dequantize_at_load=...)``,
    which raises ``ValueError`` for a module it cannot take."""

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        """The tensors one layer holds, by name suffix, or why this shape cannot be stored."""
        return Unpackable("layout.abstract", f"{type(self).__name__} declares no tensors")

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        """A stored layer's ``out_features`` read from its tensors' shapes (``None``: not readable)."""
        return None

    def derivable(self) -> frozenset[str]:
        """Tensors a checkpoint may leave out because the portable module computes them."""
        return frozenset()

    def indexes(self, in_features: int, out_features: int) -> Mapping[str, tuple[str, int]]:
        """Tensors whose values index another's first dimension: name -> (indexed tensor, its size)."""
        return {}

    def finite(self) -> frozenset[str]:
        """Float tensors that must hold no NaN or infinity."""
        return frozenset()

    def signs(self) -> Mapping[str, Sign]:
        """Float tensors whose values the format keeps on one side of zero: ``"nonnegative"``
        (block scales, where an all-zero block may have scale 0) or ``"positive"`` (a global
        scale that divides)."""
        return {}

    def views(self) -> Mapping[str, str]:
        """Integer tensors whose bytes are values of a float format, by the safetensors code of that
        format (MXFP4's ``U8`` block scales are E8M0: ``"F8_E8M0"``); the ``finite`` check reads
        them as that format (E8M0's byte 255 is NaN)."""
        return {}

    def fixed(self, in_features: int, out_features: int) -> Mapping[str, tuple[int, ...]]:
        """Integer tensors whose values the layer's shape fixes: name -> the values, in order
        (compressed-tensors' ``weight_shape`` is ``[out_features, in_features]``)."""
        return {}

    def unused(self) -> frozenset[str]:
        """Tensors a stored layer may hold that this load does not read (KV-cache scales beside
        a projection): accepted, and not loaded."""
        return frozenset()

    def notes(self) -> tuple[str, ...]:
        """What loading this layout on its kernels does beyond them computing the stored weights,
        in plain words, for the plan's notes (activation quantization the kernels do not apply)."""
        return ()

    def describe(self) -> str:
        """The layout in words, for ``inspect``."""
        return type(self).__name__

    def dequantize(self, tensors: Mapping[str, Any], dtype: Any) -> Any:
        """The dense weight ``[out_features, in_features]`` in ``dtype`` from one layer's loaded
        tensors (torch tensors, by name); used by the generic portable module.

        Raises:
            NotImplementedError: The layout has its own portable module instead.
        """
        msg = f"{type(self).__name__} has no generic dequantization; its portable module computes it"
        raise NotImplementedError(msg)


@attrs.frozen(kw_only=True)
class AbstractIntLayout(AbstractLayout):
    """Integer weights with per-group scales: ``bits`` per code, ``group_size`` input columns per
    scale (-1: one group per row). What integer kernels read to decide whether they fit."""

    bits: int
    group_size: int


def _no_layout(config: AbstractQuantConfig, /) -> AbstractLayout | None:
    """Return the layout a config's checkpoint stores its linear layers in (``None``: no layout
    the shell can load layer by layer)."""
    return None


layout_of: ConfigRule[AbstractLayout | None] = ConfigRule("layout_of", _no_layout)

_LAYOUTS: list[type[AbstractLayout]] = []

L = TypeVar("L", bound=type[AbstractLayout])


def declare_layout(cls: L) -> L:
    """Make a layout type known (for the test that resolves every lazy reference, and for docs).

    Raises:
        RegistrationError: ``cls`` is not a layout type, or is declared already.
    """
    from ..rules import RegistrationError

    given: object = cls
    if not (isinstance(given, type) and issubclass(given, AbstractLayout)):
        raise RegistrationError(f"{cls!r} is not a subclass of AbstractLayout")
    if cls in _LAYOUTS:
        raise RegistrationError(f"{cls.__qualname__} is already declared")
    _LAYOUTS.append(cls)
    return cls


def layouts() -> tuple[type[AbstractLayout], ...]:
    """Every declared layout type, in declaration order."""
    return tuple(_LAYOUTS)
