"""bitsandbytes' stored layers (a description: loading goes through Transformers' integration,
``quantdispatch.backends.bnb``, which checks the same tensors against each layer's own quant state).

4-bit (``Linear4bit``), for ``n = out * in`` weights and block size ``b`` (64 unless the state says otherwise)::

    weight                 U8   [ceil(n / 2), 1]   two codes a byte (the quant storage's dtype, U8 by default)
    weight.absmax          F32  [ceil(n / b)]      (U8 when double-quantized)
    weight.quant_map       F32  [16]
    weight.quant_state.*   U8   [any]              a JSON object: quant_type, blocksize, dtype, shape

8-bit (``Linear8bitLt``): ``weight`` I8 ``[out, in]`` and ``SCB`` F32 ``[out]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import attrs

from ..configs.bnb import AbstractBnb, Bnb4Bit
from .base import AbstractLayout, Lazy, TensorDecl, Tensors, Unpackable, declare_layout, layout_of

__all__ = ["Bnb4BitBlocks", "Bnb8BitRows", "ANY_LENGTH"]

ANY_LENGTH = -1
"""A dimension the layout does not fix (the JSON quant state's byte length)."""


@declare_layout
@attrs.frozen(kw_only=True)
class Bnb4BitBlocks(AbstractLayout):
    """bitsandbytes 4-bit codes (NF4 or FP4) with one absmax per block of ``blocksize`` weights."""

    quant_type: Literal["fp4", "nf4"]
    double_quant: bool
    blocksize: int = 64

    marker: ClassVar[str] = "weight.absmax"
    portable: ClassVar[Lazy[Any] | None] = None

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        n = in_features * out_features
        if n <= 0:
            return Unpackable("bnb.shape.empty", f"a layer of {in_features} -> {out_features} holds no weights")
        blocks = -(-n // self.blocksize)
        found = {"weight": TensorDecl((-(-n // 2), 1), "U8"), "weight.absmax": TensorDecl((blocks,), "U8" if self.double_quant else "F32"),
                 "weight.quant_map": TensorDecl((16,), "F32"), f"weight.quant_state.bitsandbytes__{self.quant_type}": TensorDecl((ANY_LENGTH,), "U8")}
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", ("F16", "BF16", "F32"))
        return found

    def describe(self) -> str:
        nested = ", absmax double-quantized" if self.double_quant else ""
        return f"bitsandbytes 4-bit {self.quant_type.upper()} codes, two a byte, one absmax per {self.blocksize} weights{nested}"


@declare_layout
@attrs.frozen(kw_only=True)
class Bnb8BitRows(AbstractLayout):
    """bitsandbytes LLM.int8 weights: int8 codes with one float32 scale per output row."""

    marker: ClassVar[str] = "SCB"
    portable: ClassVar[Lazy[Any] | None] = None

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        if in_features <= 0 or out_features <= 0:
            return Unpackable("bnb.shape.empty", f"a layer of {in_features} -> {out_features} holds no weights")
        found = {"weight": TensorDecl((out_features, in_features), "I8"), "SCB": TensorDecl((out_features,), "F32")}
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", ("F16", "BF16", "F32"))
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        scb = shapes.get("SCB")
        return scb[0] if scb is not None and len(scb) == 1 else None

    def describe(self) -> str:
        return "bitsandbytes LLM.int8: int8 codes with one float32 scale per output row"


@layout_of.register(AbstractBnb)
def _bnb_layout(config: AbstractBnb, /) -> AbstractLayout:
    if isinstance(config, Bnb4Bit):
        return Bnb4BitBlocks(quant_type=config.quant_type, double_quant=config.use_double_quant)
    return Bnb8BitRows()
