"""The lookup tables of the GGML block formats, in one place, and their torch forms.

Facts (pure Python values) come first: the non-linear 4-bit codebooks, the sign-pattern rule of
the IQ2/IQ3 quants, the E8M0 and UE4M3 scale encodings. The lattice grids live in ``grids.py``
(generated from ggml-common.h's arrays). The ``*_table()`` functions build the torch tensors once.
"""

from __future__ import annotations

import functools
import struct
from typing import Final

import torch

from . import grids

__all__ = [
    "IQ4NL_VALUES",
    "E2M1_VALUES",
    "ksigns",
    "e8m0_half",
    "ue4m3_half",
    "iq4nl_table",
    "e2m1_table",
    "sign_mask_table",
    "e8m0_table",
    "ue4m3_table",
    "grid_table",
    "GRIDS",
]

IQ4NL_VALUES: Final = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
"""``kvalues_iq4nl``: the codebook of IQ4_NL and IQ4_XS, indexed by a 4-bit code."""

E2M1_VALUES: Final = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)
"""``kvalues_mxfp4``: FP4 E2M1 values doubled (0.5 is 1), shared by MXFP4 and NVFP4; the scales
carry the matching factor 1/2."""

GRIDS: Final = {
    "iq2xxs": grids.IQ2XXS_GRID,
    "iq2xs": grids.IQ2XS_GRID,
    "iq2s": grids.IQ2S_GRID,
    "iq3xxs": grids.IQ3XXS_GRID,
    "iq3s": grids.IQ3S_GRID,
    "iq1s": grids.IQ1S_GRID,
}
"""The lattice codebooks by ggml name (without ``_grid``): ``(rows, width, row-major bytes)``."""


def ksigns(i: int) -> int:
    """Return ``ksigns_iq2xs[i]``: 7 stored sign bits plus an 8th that makes their parity even.

    >>> [ksigns(i) for i in (0, 1, 3, 127)]
    [0, 129, 3, 255]
    """
    return i | (bin(i).count("1") & 1) << 7


def e8m0_half(e: int) -> float:
    """Return half the value of the E8M0 scale byte ``e``: ``2 ** (e - 128)`` (ggml's MXFP4 scale).

    >>> e8m0_half(128), e8m0_half(0) == 2.0 ** -128
    (1.0, True)
    """
    bits = 0x00200000 << e if e < 2 else (e - 1) << 23
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return value


def ue4m3_half(x: int) -> float:
    """Return half the value of the unsigned E4M3 scale byte ``x`` (bias 7; the top bit is ignored).

    0x00 and the NaN pattern 0x7F are 0.

    >>> ue4m3_half(0x38), ue4m3_half(0x7F), ue4m3_half(0x01)
    (0.5, 0.0, 0.0009765625)
    """
    if x in (0, 0x7F):
        return 0.0
    exp, man = (x >> 3) & 0xF, x & 7
    value = man * 2.0**-9 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7)
    return value * 0.5


@functools.cache
def iq4nl_table() -> torch.Tensor:
    """``IQ4NL_VALUES`` as float32, for index lookups."""
    return torch.tensor(IQ4NL_VALUES, dtype=torch.float32)


@functools.cache
def e2m1_table() -> torch.Tensor:
    """``E2M1_VALUES`` as float32, for index lookups."""
    return torch.tensor(E2M1_VALUES, dtype=torch.float32)


@functools.cache
def sign_mask_table(packed7: bool) -> torch.Tensor:
    """int32 ``(256, 8)``, or ``(128, 8)`` when ``packed7``: the float32 sign bits to XOR into 8 values.

    Row ``b`` has bit 31 set in column ``j`` where bit ``j`` of the sign byte is set; the sign
    byte is ``b`` itself, or ``ksigns(b)`` for a 7-bit index.
    """
    rows = [[((ksigns(i) if packed7 else i) >> j & 1) << 31 for j in range(8)] for i in range(128 if packed7 else 256)]
    return torch.tensor(rows, dtype=torch.int64).to(torch.int32)  # 1 << 31 wraps to INT32_MIN


@functools.cache
def e8m0_table() -> torch.Tensor:
    """``(256,)`` float32: ``e8m0_half`` of every byte."""
    return torch.tensor([e8m0_half(e) for e in range(256)], dtype=torch.float32)


@functools.cache
def ue4m3_table() -> torch.Tensor:
    """``(256,)`` float32: ``ue4m3_half`` of every byte."""
    return torch.tensor([ue4m3_half(x) for x in range(256)], dtype=torch.float32)


@functools.cache
def grid_table(name: str) -> torch.Tensor:
    """The codebook ``name`` (a key of ``GRIDS``) as a float32 ``(rows, width)`` tensor."""
    rows, width, raw = GRIDS[name]
    dtype = torch.int8 if name == "iq1s" else torch.uint8
    values = torch.frombuffer(bytearray(raw), dtype=dtype)
    return values.to(torch.float32).reshape(rows, width)
