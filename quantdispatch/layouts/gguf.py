"""GGUF's stored tensors: rows of GGML blocks, each type's block size taken from the one block
table (``quantdispatch.gguf.types.BLOCK``). A description: GGUF files load through
``quantdispatch.loading.gguf``, tensor by tensor, each in its own block type."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from ..configs.gguf import Gguf
from ..gguf.types import BLOCK, GgmlType
from .base import AbstractLayout, Lazy, TensorDecl, Tensors, Unpackable, declare_layout, layout_of

__all__ = ["GgufBlocks", "gguf_row"]


def gguf_row(ggml_type: GgmlType, in_features: int, out_features: int) -> TensorDecl | Unpackable:
    """One weight of ``ggml_type`` as raw bytes: ``[out_features, in_features // n * size]`` for
    blocks of ``n`` weights in ``size`` bytes (rows are whole blocks)."""
    n, size = BLOCK[ggml_type]
    if in_features <= 0 or in_features % n:
        return Unpackable("gguf.row.not_whole_blocks", f"{ggml_type.name} stores blocks of {n} weights; a row of {in_features} is not whole blocks")
    return TensorDecl((out_features, in_features // n * size), "U8")


@declare_layout
@attrs.frozen(kw_only=True)
class GgufBlocks(AbstractLayout):
    """The GGML block types a GGUF file stores its weights in (each tensor has one)."""

    types: tuple[GgmlType, ...]

    portable: ClassVar[Lazy[Any] | None] = None

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        """A layer in the file's first quantized type (each tensor names its own in the file)."""
        quantized = [t for t in self.types if BLOCK[t][0] > 1] or list(self.types)
        if not quantized:
            return Unpackable("gguf.types.none", "the file stores no tensors")
        row = gguf_row(quantized[0], in_features, out_features)
        return row if isinstance(row, Unpackable) else {"weight": row}

    def describe(self) -> str:
        blocks = ", ".join(f"{t.name} ({BLOCK[t][0]} weights in {BLOCK[t][1]} bytes)" for t in self.types)
        return f"GGML blocks per tensor: {blocks}"


@layout_of.register(Gguf)
def _gguf_layout(config: Gguf, /) -> GgufBlocks:
    return GgufBlocks(types=tuple(sorted({t.ggml_type for t in config.tensors}, key=lambda t: t.value)))
