"""AWQ's packings as AutoAWQ 0.2.9 writes them: GEMM, GEMV and GEMV_FAST (4-bit codes).

For in_features K, out_features N, group size S, G = K // S and Z = ``awq_zeros_width(K, S)``::

    GEMM       qweight I32 [K, N // 8]     qzeros I32 [G, N // 8]    scales F16 [G, N]
    GEMV       qweight I32 [N, K // 8]     qzeros I32 [N, Z]         scales F16 [N, 8 * Z]
    GEMV_FAST  qweight I16 [N // 4, K]     qzeros F16 [8 * Z, N]     scales F16 [8 * Z, N]

(GEMV_FAST's ``qzeros`` are scaled zeros, floats added to every weight.) Marlin-tiled and llm-awq
checkpoints have no layout here: no portable module reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import attrs

from ..configs.awq import AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast
from .base import FLOAT_CODES, AbstractIntLayout, Lazy, TensorDecl, Tensors, Unpackable, declare_layout, layout_of

__all__ = ["AwqPacked", "AwqVersion", "awq_layout", "awq_zeros_width"]

AwqVersion = Literal["gemm", "gemv", "gemv_fast"]
_INTERLEAVE = 4
_KSTRIDE = 64


def awq_zeros_width(in_features: int, group_size: int) -> int | Unpackable:
    """AutoAWQ's ``calculate_zeros_width``: int32 words of packed zero points per output row (GEMV).

    Groups are padded to a multiple of 8 (one word), and for group sizes 64, 32 and 16 further to
    a multiple of 2, 4 and 8 words. AutoAWQ stops at 32; GPTQModel's copy adds 16.

    >>> awq_zeros_width(4096, 128), awq_zeros_width(256, 64), awq_zeros_width(256, 32), awq_zeros_width(256, 16)
    (4, 2, 4, 8)
    """
    multiplier = {64: 2, 32: 4, 16: 8}.get(group_size, 1)
    if group_size < 128 and multiplier == 1:
        return Unpackable("awq.group_size.gemv", f"AWQ's GEMV packings support group sizes 16, 32, 64 and >= 128, not {group_size}")
    words = -(-(in_features // group_size) // 8)
    return -(-words // multiplier) * multiplier


@declare_layout
@attrs.frozen(kw_only=True)
class AwqPacked(AbstractIntLayout):
    """AWQ weights in one of AutoAWQ's packings (``version``); ``bits`` is always 4."""

    version: AwqVersion

    marker: ClassVar[str] = "qweight"
    portable: ClassVar[Lazy[Any] | None] = Lazy("quantdispatch.kernels.modules", "AwqLinear")
    forms: ClassVar[Mapping[str, Lazy[Any]]] = MappingProxyType({"int4": Lazy("quantdispatch.kernels.int4", "int4_from_awq")})

    def size(self, in_features: int) -> int:
        """Input columns per group (``group_size``, or the whole row for -1)."""
        return in_features if self.group_size == -1 else self.group_size

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        """``qweight``, ``qzeros``, ``scales`` and the optional ``bias``, in the packing's orientation."""
        size = self.size(in_features)
        if size <= 0 or in_features % size or out_features % 8:
            return Unpackable("awq.shape.not_packable", f"AWQ needs in_features ({in_features}) divisible by group_size ({size}) "
                              f"and out_features ({out_features}) by 8")
        groups = in_features // size
        found: dict[str, TensorDecl]
        if self.version == "gemm":
            found = {"qweight": TensorDecl((in_features, out_features // 8), "I32"), "qzeros": TensorDecl((groups, out_features // 8), "I32"),
                     "scales": TensorDecl((groups, out_features), "F16", FLOAT_CODES)}
        elif self.version == "gemv":
            if in_features % 8:
                return Unpackable("awq.shape.not_packable", f"AWQ GEMV packs 8 input columns per word; in_features={in_features}")
            width = awq_zeros_width(in_features, size)
            if isinstance(width, Unpackable):
                return width
            found = {"qweight": TensorDecl((out_features, in_features // 8), "I32"), "qzeros": TensorDecl((out_features, width), "I32"),
                     "scales": TensorDecl((out_features, width * 8), "F16", FLOAT_CODES)}
        else:
            if in_features % _KSTRIDE:
                return Unpackable("awq.shape.not_packable", f"AWQ GEMV_FAST packs runs of {_KSTRIDE} input columns; in_features={in_features}")
            width = awq_zeros_width(in_features, size)
            if isinstance(width, Unpackable):
                return width
            found = {"qweight": TensorDecl((out_features // _INTERLEAVE, in_features), "I16"),
                     "qzeros": TensorDecl((width * 8, out_features), "F16", FLOAT_CODES),
                     "scales": TensorDecl((width * 8, out_features), "F16", FLOAT_CODES)}
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        """``scales`` is ``[G, N]`` (GEMM, GEMV_FAST) or ``[N, 8 * Z]`` (GEMV)."""
        scales = shapes.get("scales")
        if scales is None or len(scales) != 2:
            return None
        return scales[0] if self.version == "gemv" else scales[1]

    def finite(self) -> frozenset[str]:
        """``scales``; GEMV_FAST's ``qzeros`` too (scaled zeros, added to every weight)."""
        return frozenset({"scales", "qzeros"}) if self.version == "gemv_fast" else frozenset({"scales"})

    def describe(self) -> str:
        groups = "one group per row" if self.group_size == -1 else f"groups of {self.group_size}"
        packing = {"gemm": "GEMM (int32 words along the output dimension, interleaved)",
                   "gemv": "GEMV (int32 words along the input dimension)",
                   "gemv_fast": "GEMV_FAST (int16 words, 4 output rows interleaved, scaled zeros)"}[self.version]
        return f"AWQ {self.bits}-bit codes, {packing}, {groups}"


def awq_layout(config: AbstractAwq) -> AwqPacked | None:
    """The layout an AWQ config's checkpoint stores (``None``: Marlin-tiled or llm-awq)."""
    version: AwqVersion
    if isinstance(config, AwqGemm):
        version = "gemm"
    elif isinstance(config, AwqGemv):
        version = "gemv"
    elif isinstance(config, AwqGemvFast):
        version = "gemv_fast"
    else:
        return None
    return AwqPacked(bits=config.bits, group_size=config.group_size, version=version)


@layout_of.register(AbstractAwq)
def _awq_layout(config: AbstractAwq, /) -> AwqPacked | None:
    return awq_layout(config)
