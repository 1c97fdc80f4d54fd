"""GPTQ's packing (AutoGPTQ, GPTQModel, Optimum): codes in int32 words along the input dimension.

One linear layer with ``in_features`` K, ``out_features`` N, ``bits`` b and G groups holds::

    qweight  I32  [K // 32 * b, N]   codes packed along the input dimension
    qzeros   I32  [G, N // 32 * b]   zero points packed along the output dimension
    scales   F16  [G, N]
    g_idx    I32  [K]                group of each input column (non-monotonic under act-order)
    bias     F16  [N]                optional

``v1`` (``checkpoint_format: "gptq"``) stores every zero point minus one; v2 as is. Without act-order
``g_idx`` is ``k // group_size`` and may be missing (old GPTQ-for-LLaMa checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import attrs

from ..configs.gptq import AbstractGptq, Gptq
from .base import FLOAT_CODES, AbstractIntLayout, Lazy, TensorDecl, Tensors, Unpackable, declare_layout, layout_of

__all__ = ["GptqPacked", "gptq_layout", "gptq_groups", "values_per_block", "words_per_block"]


def values_per_block(bits: int) -> int:
    """Values in the smallest run of whole int32 words: ``32 // bits``, or 32 for 3 bits."""
    return 32 // bits if 32 % bits == 0 else 32


def words_per_block(bits: int) -> int:
    """Words in that run: 1 for 2/4/8 bits, 3 for 3 bits."""
    return 1 if 32 % bits == 0 else bits


def gptq_groups(in_features: int, group_size: int) -> int:
    """Number of groups (rows of ``scales``): ``ceil(K / group_size)``, or 1 for ``group_size == -1``."""
    return 1 if group_size == -1 else -(-in_features // group_size)


@declare_layout
@attrs.frozen(kw_only=True)
class GptqPacked(AbstractIntLayout):
    """GPTQ weights: ``bits`` in 2, 3, 4, 8; ``v1`` zero points stored minus one; ``desc_act``: act-order."""

    v1: bool
    desc_act: bool = False

    marker: ClassVar[str] = "qweight"
    portable: ClassVar[Lazy[Any] | None] = Lazy("quantdispatch.kernels.modules", "GptqLinear")
    forms: ClassVar[Mapping[str, Lazy[Any]]] = MappingProxyType({"int4": Lazy("quantdispatch.kernels.int4", "int4_from_gptq")})

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        """``qweight``, ``qzeros``, ``scales``, ``g_idx`` and the optional ``bias``."""
        per_block, words = values_per_block(self.bits), words_per_block(self.bits)
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if size <= 0 or size % per_block:
                return Unpackable("gptq.shape.not_packable", f"GPTQ {self.bits}-bit packs {per_block} values per {words} int32 "
                                  f"word(s); {name}={size} is not a multiple")
        if self.group_size != -1 and self.group_size <= 0:
            return Unpackable("gptq.group_size.range", f"group_size must be positive or -1, got {self.group_size}")
        groups = gptq_groups(in_features, self.group_size)
        found = {
            "qweight": TensorDecl((in_features // per_block * words, out_features), "I32"),
            "qzeros": TensorDecl((groups, out_features // per_block * words), "I32"),
            "scales": TensorDecl((groups, out_features), "F16", FLOAT_CODES),
            "g_idx": TensorDecl((in_features,), "I32"),
        }
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        """``scales`` is ``[G, N]``."""
        scales = shapes.get("scales")
        return scales[-1] if scales is not None and len(scales) == 2 else None

    def derivable(self) -> frozenset[str]:
        """``g_idx`` without act-order (it is then ``k // group_size``)."""
        return frozenset() if self.desc_act else frozenset({"g_idx"})

    def indexes(self, in_features: int, out_features: int) -> Mapping[str, tuple[str, int]]:
        """``g_idx`` picks a group: a row of ``scales`` (and of ``qzeros``)."""
        return {"g_idx": ("scales", gptq_groups(in_features, self.group_size))}

    def finite(self) -> frozenset[str]:
        return frozenset({"scales"})

    def describe(self) -> str:
        groups = "one group per row" if self.group_size == -1 else f"groups of {self.group_size}"
        zeros = "v1 zero points (stored minus one)" if self.v1 else "v2 zero points"
        order = ", act-order g_idx" if self.desc_act else ""
        return f"GPTQ {self.bits}-bit codes in int32 words along the input dimension, {groups}, {zeros}{order}"


def gptq_layout(config: AbstractGptq) -> GptqPacked:
    """The layout a GPTQ config's checkpoint stores."""
    return GptqPacked(bits=config.bits, group_size=config.group_size, v1=isinstance(config, Gptq), desc_act=config.desc_act)


@layout_of.register(AbstractGptq)
def _gptq_layout(config: AbstractGptq, /) -> GptqPacked:
    return gptq_layout(config)
