"""Which GGML block types quantdispatch's C kernels take: the one table the planner and the kernels read.

Pure (no torch), so that the backend rules (``quantdispatch.methods.gguf``) can state which tensors
a fused backend runs without importing the kernels; the kernels (``quantdispatch.kernels.gguf``)
bind one C function per type listed here, named after the type (``Q4_K`` → ``q4_k``), and a
test checks every listed type has its function. Adding a type to the fused path is a row here and
its C function.

>>> from quantdispatch.gguf.native import FUSED_MATVEC_TYPES, NATIVE_DEQUANT_TYPES
>>> sorted(t.name for t in FUSED_MATVEC_TYPES)
['Q4_0', 'Q4_1', 'Q4_K', 'Q6_K', 'Q8_0']
"""

from __future__ import annotations

from typing import Final

from .types import GgmlType

__all__ = ["FUSED_MATVEC_TYPES", "NATIVE_DEQUANT_TYPES", "c_name"]

FUSED_MATVEC_TYPES: Final[frozenset[GgmlType]] = frozenset({GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q4_K, GgmlType.Q8_0, GgmlType.Q6_K})
"""Types with fused matrix-vector kernels on the blocks in place (``kernels/gguf/matvec.c``, both
arithmetics): what ``cpu-gguf-matvec`` and ``cpu-gguf-q8dot`` run fused; other types dequantize per call."""

NATIVE_DEQUANT_TYPES: Final[frozenset[GgmlType]] = frozenset(
    {GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.IQ4_XS, GgmlType.IQ2_XS})
"""Types with a fused C dequantization kernel (``kernels/gguf/native.c``); the others use the eager
torch kernels (the same bits either way)."""


def c_name(t: GgmlType) -> str:
    """The stem of the C functions of type ``t``.

    >>> c_name(GgmlType.IQ4_XS), c_name(GgmlType.Q4_K)
    ('iq4_xs', 'q4_k')
    """
    return t.name.lower()
