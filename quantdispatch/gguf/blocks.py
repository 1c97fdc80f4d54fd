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

import math
from collections.abc import Sequence
from typing import Final

import attrs

from quantdispatch.result import Issue, Issues

from .header import TensorInfo
from .types import BLOCK, REMOVED_GGML_TYPES, GgmlType, bits_per_weight

__all__ = ["DEQUANTIZABLE_TYPES", "undequantizable", "TensorSummary", "summarize"]

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


def undequantizable(tensors: Sequence[TensorInfo]) -> Issues:
    """Return an issue for each tensor whose type is not in ``DEQUANTIZABLE_TYPES``, naming both.

    Pure: it reads the header's type ids only, so a caller can refuse a file before reading data.

    >>> from quantdispatch.gguf.header import TensorInfo
    >>> [i.message for i in undequantizable([TensorInfo("a", (32,), 2, 0), TensorInfo("b", (256,), 15, 64)])]
    ["tensor 'b' has type Q8_K, which quantdispatch cannot dequantize"]
    """
    issues: list[Issue] = []
    for i, t in enumerate(tensors):
        if t.ggml_type in _DEQUANTIZABLE_IDS:
            continue
        if t.ggml_type in GgmlType._value2member_map_:
            kind = GgmlType(t.ggml_type).name
        else:
            kind = f"id {t.ggml_type} ({REMOVED_GGML_TYPES.get(t.ggml_type, 'unknown')})"
        msg = f"tensor {t.name!r} has type {kind}, which quantdispatch cannot dequantize"
        hint = "supported: " + ", ".join(sorted(x.name for x in DEQUANTIZABLE_TYPES))
        issues.append(Issue("gguf.tensor.type_unsupported", f"$.tensors[{i}]", msg, hint))
    return tuple(issues)


_DEQUANTIZABLE_IDS: Final = frozenset(int(t) for t in DEQUANTIZABLE_TYPES)


@attrs.frozen
class TensorSummary:
    """What ``quantdispatch inspect --tensors`` prints for one tensor.

    Attributes:
        name: As stored.
        type_name: ``Q4_K``, or ``id N`` for a type id ggml does not define.
        shape: The PyTorch shape, ``[out, in]`` (the ggml shape reversed).
        nbytes: Its data size; 0 when the type is unknown.
        bits: Bits per weight, scales included; 0.0 when the type is unknown.
    """

    name: str
    type_name: str
    shape: tuple[int, ...]
    nbytes: int
    bits: float


def summarize(tensors: Sequence[TensorInfo]) -> tuple[TensorSummary, ...]:
    """Describe each tensor of a header (pure).

    >>> from quantdispatch.gguf.header import TensorInfo
    >>> summarize([TensorInfo("w", (4096, 11008), 12, 0)])[0]
    TensorSummary(name='w', type_name='Q4_K', shape=(11008, 4096), nbytes=25362432, bits=4.5)
    """
    out: list[TensorSummary] = []
    for t in tensors:
        known = t.ggml_type in GgmlType._value2member_map_
        gtype = GgmlType(t.ggml_type) if known else None
        n = math.prod(t.shape)
        if gtype is None:
            out.append(TensorSummary(t.name, f"id {t.ggml_type}", t.shape[::-1], 0, 0.0))
            continue
        per_block, size = BLOCK[gtype]
        out.append(TensorSummary(t.name, gtype.name, t.shape[::-1], n // per_block * size, bits_per_weight(gtype)))
    return tuple(out)
