"""The one table of GGML facts: tensor type ids, block geometry, file types, value types.

Everything here is a fact of the GGUF format as ggml (``ggml.h``, ``ggml-common.h``) and gguf-py
0.19.0 define it; nothing is computed from a file. The module is pure (stdlib only) so that the
reader, the parser and the kernels can share it without importing numpy or gguf.

A quantized tensor is a sequence of fixed-size *blocks*: ``block_size`` weights stored in
``type_size`` bytes. A row of ``n`` weights therefore takes ``n // block_size * type_size`` bytes,
and ``n`` must be a multiple of ``block_size``.

>>> from quantdispatch.gguf.types import GgmlType, row_bytes, bits_per_weight
>>> row_bytes(GgmlType.Q4_K, 4096)
2304
>>> bits_per_weight(GgmlType.Q4_0)
4.5
>>> LlamaFileType.MOSTLY_Q4_K_M.recipe
'Q4_K_M'
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "ROW_MISALIGNED", "DUPLICATE_NAME", "misaligned_row", "duplicate_names",
    "QK_K",
    "GgmlType",
    "GgufValueType",
    "LlamaFileType",
    "BLOCK",
    "REMOVED_GGML_TYPES",
    "block_size",
    "type_size",
    "bits_per_weight",
    "is_quantized",
    "row_bytes",
]

QK_K: Final = 256
"""Weights per super-block of the K-, IQ- and TQ-quants."""


class GgmlType(enum.IntEnum):
    """A ggml tensor type id, as stored in a GGUF tensor info (``enum ggml_type``).

    Only live ids are members; ids removed from ggml are listed in ``REMOVED_GGML_TYPES``.
    """

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


REMOVED_GGML_TYPES: Final[Mapping[int, str]] = MappingProxyType(
    {
        4: "Q4_2",  # removed from ggml in 2023
        5: "Q4_3",
        31: "Q4_0_4_4",  # ARM repacks: removed from GGUF files; llama.cpp repacks Q4_0 at load time
        32: "Q4_0_4_8",
        33: "Q4_0_8_8",
        36: "IQ4_NL_4_4",  # likewise repacked from IQ4_NL at load time
        37: "IQ4_NL_4_8",
        38: "IQ4_NL_8_8",
    }
)
"""Type ids that ggml once defined and no longer reads, with their old names (for error hints)."""

# (weights per block, bytes per block). Each byte count is the struct of ggml-common.h, fields in
# storage order. f16 = 2 bytes, u8[n] = n bytes; QK_K = 256.
#
# Legacy 32-weight blocks: d = f16 scale, m = f16 min, qh = the 5th bit of each code.
#   Q4_0   | d | qs: 32 x 4 bit  |                            18 B
#   Q4_1   | d | m | qs: 32 x 4 bit |                         20 B
#   Q5_0   | d | qh: u32 | qs: 32 x 4 bit |                   22 B
#   Q5_1   | d | m | qh: u32 | qs: 32 x 4 bit |               24 B
#   Q8_0   | d | qs: 32 x i8 |                                34 B
#   Q8_1   | d | s = d * sum(qs) | qs: 32 x i8 |              36 B
# K-quants, 256 weights in 16 or 8 sub-blocks with quantized sub-block scales:
#   Q2_K   | scales: 16 x (4-bit scale, 4-bit min) | qs: 256 x 2 bit | d | dmin |         84 B
#   Q3_K   | hmask: 256 x 1 bit | qs: 256 x 2 bit | scales: 16 x 6 bit | d |           110 B
#   Q4_K   | d | dmin | scales: 8 x (6-bit scale, 6-bit min) = 12 B | qs: 256 x 4 bit | 144 B
#   Q5_K   | d | dmin | scales: 12 B | qh: 256 x 1 bit | qs: 256 x 4 bit |              176 B
#   Q6_K   | ql: 256 x 4 bit | qh: 256 x 2 bit | scales: 16 x i8 | d |                  210 B
#   Q8_K   | d: f32 | qs: 256 x i8 | bsums: 16 x i16 |                                  292 B
# IQ-quants (lattice codebooks), TQ (ternary), microscaling FP4 and 1-bit:
#   IQ2_XXS | d | qs: 32 x u16 |                                       66 B
#   IQ2_XS  | d | qs: 32 x u16 | scales: 8 x u8 |                      74 B
#   IQ3_XXS | d | qs: 64 B grid indices + 32 B signs/scales |         98 B
#   IQ1_S   | d | qs: 32 B | qh: 8 x u16 |                            50 B
#   IQ4_NL  | d | qs: 32 x 4 bit (non-linear codebook) |              18 B   (32 weights)
#   IQ3_S   | d | qs: 64 B | qh: 8 B | signs: 32 B | scales: 4 B |    110 B
#   IQ2_S   | d | qs: 64 B (incl. signs) | qh: 8 B | scales: 8 B |    82 B
#   IQ4_XS  | d | scales_h: u16 | scales_l: 4 B | qs: 256 x 4 bit |   136 B
#   IQ1_M   | qs: 32 B | qh: 16 B | scales: 8 B (f16 scale spread in its top bits) |  56 B
#   TQ1_0   | qs: 48 B (5 trits per byte) | qh: 4 B (4 trits per byte) | d |          54 B
#   TQ2_0   | qs: 256 x 2 bit | d |                                                   66 B
#   MXFP4   | e: E8M0 shared exponent | qs: 32 x E2M1 |              17 B   (32 weights)
#   NVFP4   | d: 4 x UE4M3 (one per 16) | qs: 64 x E2M1 |           36 B   (64 weights)
#   Q1_0    | d | qs: 128 x 1 bit (sign) |                          18 B   (128 weights)
_BLOCK: dict[GgmlType, tuple[int, int]] = {
    GgmlType.F32: (1, 4),
    GgmlType.F16: (1, 2),
    GgmlType.Q4_0: (32, 2 + 32 // 2),
    GgmlType.Q4_1: (32, 2 + 2 + 32 // 2),
    GgmlType.Q5_0: (32, 2 + 4 + 32 // 2),
    GgmlType.Q5_1: (32, 2 + 2 + 4 + 32 // 2),
    GgmlType.Q8_0: (32, 2 + 32),
    GgmlType.Q8_1: (32, 2 + 2 + 32),
    GgmlType.Q2_K: (QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
    GgmlType.Q3_K: (QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
    GgmlType.Q4_K: (QK_K, 2 + 2 + 12 + QK_K // 2),
    GgmlType.Q5_K: (QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    GgmlType.Q6_K: (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    GgmlType.Q8_K: (QK_K, 4 + QK_K + 2 * QK_K // 16),
    GgmlType.IQ2_XXS: (QK_K, 2 + 2 * QK_K // 8),
    GgmlType.IQ2_XS: (QK_K, 2 + 2 * QK_K // 8 + QK_K // 32),
    GgmlType.IQ3_XXS: (QK_K, 2 + 3 * QK_K // 8),
    GgmlType.IQ1_S: (QK_K, 2 + QK_K // 8 + 2 * QK_K // 32),
    GgmlType.IQ4_NL: (32, 2 + 32 // 2),
    GgmlType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 32 + QK_K // 8 + QK_K // 64),
    GgmlType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 32 + QK_K // 32),
    GgmlType.IQ4_XS: (QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),
    GgmlType.I8: (1, 1),
    GgmlType.I16: (1, 2),
    GgmlType.I32: (1, 4),
    GgmlType.I64: (1, 8),
    GgmlType.F64: (1, 8),
    GgmlType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GgmlType.BF16: (1, 2),
    GgmlType.TQ1_0: (QK_K, (QK_K - 4 * QK_K // 64) // 5 + QK_K // 64 + 2),
    GgmlType.TQ2_0: (QK_K, QK_K // 4 + 2),
    GgmlType.MXFP4: (32, 1 + 32 // 2),
    GgmlType.NVFP4: (64, 64 // 16 + 64 // 2),
    GgmlType.Q1_0: (128, 2 + 128 // 8),
}
BLOCK: Final[Mapping[GgmlType, tuple[int, int]]] = MappingProxyType(_BLOCK)
"""``(weights per block, bytes per block)`` of every ``GgmlType``."""


def block_size(t: GgmlType) -> int:
    """Return how many weights one block of type ``t`` holds.

    >>> block_size(GgmlType.Q6_K), block_size(GgmlType.F16)
    (256, 1)
    """
    return BLOCK[t][0]


def type_size(t: GgmlType) -> int:
    """Return how many bytes one block of type ``t`` takes.

    >>> type_size(GgmlType.Q8_0)
    34
    """
    return BLOCK[t][1]


def bits_per_weight(t: GgmlType) -> float:
    """Return the storage cost of one weight of type ``t`` in bits, scales included.

    >>> bits_per_weight(GgmlType.Q6_K)
    6.5625
    """
    n, size = BLOCK[t]
    return size * 8 / n


def is_quantized(t: GgmlType) -> bool:
    """Return whether ``t`` stores weights in multi-weight blocks (not plain floats or ints).

    >>> is_quantized(GgmlType.Q4_K), is_quantized(GgmlType.BF16)
    (True, False)
    """
    return BLOCK[t][0] > 1


def row_bytes(t: GgmlType, n: int) -> int | None:
    """Return the bytes taken by ``n`` consecutive weights of type ``t``.

    Returns:
        The byte count, or ``None`` when ``n`` is negative or not a multiple of the block size
        (such a row cannot be stored in type ``t``).

    >>> row_bytes(GgmlType.Q8_0, 64), row_bytes(GgmlType.Q8_0, 48)
    (68, None)
    """
    per_block, size = BLOCK[t]
    if n < 0 or n % per_block:
        return None
    return n // per_block * size


ROW_MISALIGNED: Final = "gguf.tensor.shape_misaligned"
DUPLICATE_NAME: Final = "gguf.tensor.duplicate_name"


def misaligned_row(t: GgmlType, ne0: int) -> str | None:
    """The rule that rows are whole blocks: why a row of ``ne0`` weights cannot be stored in
    ``t``, or ``None`` when it can. The reader and ``validate`` both report it as
    ``ROW_MISALIGNED``.

    >>> misaligned_row(GgmlType.Q4_K, 100)
    'rows of 100 weights are not a multiple of the Q4_K block size 256'
    """
    per_block = BLOCK[t][0]
    if ne0 % per_block:
        return f"rows of {ne0} weights are not a multiple of the {t.name} block size {per_block}"
    return None


def duplicate_names(names: Iterable[str]) -> Iterator[tuple[int, int]]:
    """The rule that tensor names are unique: yield ``(index, first index)`` for each name seen
    before, in linear time. Reported as ``DUPLICATE_NAME``."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        j = first.setdefault(name, i)
        if j != i:
            yield i, j


class GgufValueType(enum.IntEnum):
    """The type tag of a GGUF metadata value (``enum gguf_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


class LlamaFileType(enum.IntEnum):
    """The ``general.file_type`` of a GGUF model (``enum llama_ftype``): the quantization recipe.

    "MOSTLY" means that 1-D tensors (norms, biases) stay in F32. Ids 4-6 and 33-35 were removed
    from llama.cpp and are not members.
    """

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_IQ2_XXS = 19
    MOSTLY_IQ2_XS = 20
    MOSTLY_Q2_K_S = 21
    MOSTLY_IQ3_XS = 22
    MOSTLY_IQ3_XXS = 23
    MOSTLY_IQ1_S = 24
    MOSTLY_IQ4_NL = 25
    MOSTLY_IQ3_S = 26
    MOSTLY_IQ3_M = 27
    MOSTLY_IQ2_S = 28
    MOSTLY_IQ2_M = 29
    MOSTLY_IQ4_XS = 30
    MOSTLY_IQ1_M = 31
    MOSTLY_BF16 = 32
    MOSTLY_TQ1_0 = 36
    MOSTLY_TQ2_0 = 37
    MOSTLY_MXFP4_MOE = 38
    MOSTLY_NVFP4 = 39
    MOSTLY_Q1_0 = 40
    GUESSED = 1024  # not stored in the file; llama.cpp guessed it from the tensor types

    @property
    def recipe(self) -> str:
        """The recipe label that llama-quantize and model cards use: ``"Q4_K_M"``, ``"F16"``.

        >>> LlamaFileType.ALL_F32.recipe, LlamaFileType.MOSTLY_MXFP4_MOE.recipe
        ('F32', 'MXFP4_MOE')
        """
        return self.name.removeprefix("MOSTLY_").removeprefix("ALL_")
