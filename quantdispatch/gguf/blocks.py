"""Which GGML block types quantdispatch can dequantize: a pure fact the planner reads.

The torch kernels (``quantdispatch.kernels.gguf``) implement exactly these types, bit-exact against
gguf-py 0.19's ``gguf.quants.dequantize``; a test keeps the two sets equal. The planner refuses a
GGUF file holding any other type before a byte of tensor data is read.

Not here: Q8_1 and Q8_K (ggml's activation types, never stored as weights), Q1_0 (newer than
gguf-py 0.19, no oracle), the integer types and F64 (not quantized weights; read raw if ever).

>>> from quantdispatch.gguf.blocks import DEQUANTIZABLE_TYPES
>>> from quantdispatch.gguf.types import GgmlType
>>> GgmlType.Q4_K in DEQUANTIZABLE_TYPES, GgmlType.Q8_K in DEQUANTIZABLE_TYPES
(True, False)
>>> len(DEQUANTIZABLE_TYPES)
26
"""

from __future__ import annotations

from typing import Final

from .types import GgmlType

__all__ = ["DEQUANTIZABLE_TYPES"]

DEQUANTIZABLE_TYPES: Final[frozenset[GgmlType]] = frozenset(
    {
        GgmlType.F32, GgmlType.F16, GgmlType.BF16,
        GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
        GgmlType.IQ1_S, GgmlType.IQ1_M, GgmlType.IQ2_XXS, GgmlType.IQ2_XS, GgmlType.IQ2_S,
        GgmlType.IQ3_XXS, GgmlType.IQ3_S, GgmlType.IQ4_NL, GgmlType.IQ4_XS,
        GgmlType.TQ1_0, GgmlType.TQ2_0, GgmlType.MXFP4, GgmlType.NVFP4,
    }
)  # fmt: skip
"""The GGML tensor types whose data quantdispatch dequantizes (the classes of gguf-py's quants.py)."""
