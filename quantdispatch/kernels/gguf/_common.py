"""The kernel registry and the unpacking helpers shared by the block definitions.

``blocks.py`` states the contract every kernel keeps. ``KERNELS`` is complete once ``blocks`` and
``lattice`` are imported, which ``quantdispatch.kernels.gguf`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

import torch

from quantdispatch.gguf.types import GgmlType

__all__ = [
    "Kernel", "KERNELS", "register", "u8_const", "NIB", "CRUMB", "BIT", "f16_at", "int32_words",
    "uint_words", "split_fields", "bit_fields", "nibbles_into",
]

Kernel: TypeAlias = Callable[[torch.Tensor, torch.Tensor], None]
"""``kernel(blocks, out)``: dequantize ``(B, type_size)`` uint8 blocks into ``(B, block_size)`` float32."""

_KERNELS: dict[GgmlType, Kernel] = {}
KERNELS: Final[Mapping[GgmlType, Kernel]] = MappingProxyType(_KERNELS)
"""The kernel of every block type we dequantize, by type."""


def register(t: GgmlType) -> Callable[[Kernel], Kernel]:
    def register(kernel: Kernel) -> Kernel:
        if t in _KERNELS:
            msg = f"two kernels for {t.name}: {_KERNELS[t].__name__} and {kernel.__name__}"
            raise RuntimeError(msg)
        _KERNELS[t] = kernel
        return kernel

    return register


def u8_const(values: tuple[int, ...], *shape: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).reshape(shape)


NIB: Final = u8_const((0, 4), 1, 1, 2, 1)  # low nibble first, then high
CRUMB: Final = u8_const((0, 2, 4, 6), 1, 1, 4, 1)  # four 2-bit fields of a byte, lowest first
BIT: Final = u8_const(tuple(range(8)), 1, 1, 8, 1)  # eight bits of a byte, lowest first


def f16_at(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The f16 at byte ``at`` of each block, as float32 ``(B, 1)``.

    Every GGML block has an even size and its f16 fields even offsets, so the blocks viewed as
    halves give the field as one strided column (copying 2-byte slices first is 3x slower).
    """
    if blocks.is_contiguous() and blocks.storage_offset() % 2 == 0 and not at % 2:
        return blocks.view(torch.float16)[:, at // 2 : at // 2 + 1].to(torch.float32)
    return blocks[:, at : at + 2].contiguous().view(torch.float16).to(torch.float32)


def int32_words(blocks: torch.Tensor, at: int, n: int) -> torch.Tensor:
    """``n`` bytes from ``at`` of each block as int32 words ``(B, n // 4)``, without a copy when aligned."""
    if blocks.is_contiguous() and blocks.storage_offset() % 4 == 0 and not (at % 4 or blocks.shape[1] % 4):
        return blocks.view(torch.int32)[:, at // 4 : (at + n) // 4]
    return blocks[:, at : at + n].contiguous().view(torch.int32)


def uint_words(blocks: torch.Tensor, at: int, n: int, width: int) -> torch.Tensor:
    """``n`` bytes from ``at`` of each block as little-endian unsigned words of ``width`` bytes.

    Returns int64 ``(B, n // width)``: assembled from bytes, so unsigned and unaligned-safe.
    """
    raw = blocks[:, at : at + n].reshape(blocks.shape[0], n // width, width).to(torch.int64)
    word = raw[..., 0].clone()
    for k in range(1, width):
        word.bitwise_or_(raw[..., k] << (8 * k))
    return word


def split_fields(packed: torch.Tensor, shifts: torch.Tensor, mask: int) -> torch.Tensor:
    """``(B, g, 1, w)`` uint8 → ``(B, g, k, w)``: the ``k`` fields at ``shifts``, each ``& mask``.

    For the small per-block fields; the per-weight codes go through ``bit_fields``.
    """
    return torch.bitwise_right_shift(packed, shifts).bitwise_and_(mask)


_BIT_SHIFTS: Final = torch.arange(8, dtype=torch.int64).reshape(8, 1)


def bit_fields(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """``(..., w)`` uint8 → ``(..., 8 // bits, w)``: field k holds bits ``k*bits`` up of each byte.

    ``bits`` is 1, 2 or 4. Shifts run on contiguous data and the interleaving is a plain copy:
    uint8 ops on strided views are several times slower in torch than copies. Single bits go
    eight bytes at a time, as int64 words (3x faster, measured; no gain for wider fields).
    """
    count = 8 // bits
    if bits == 1 and packed.shape[-1] % 8 == 0:
        fresh = torch.empty(packed.shape, dtype=torch.uint8).copy_(packed)  # aligned, whatever the input
        words = fresh.view(torch.int64).unsqueeze(-2)
        return (words >> _BIT_SHIFTS).bitwise_and_(0x0101010101010101).view(torch.uint8)
    q = torch.empty((*packed.shape[:-1], count, packed.shape[-1]), dtype=torch.uint8)
    q.select(-2, 0).copy_(packed)
    for k in range(1, count):
        q.select(-2, k).copy_(torch.bitwise_right_shift(packed, k * bits))
    q.bitwise_and_((1 << bits) - 1)
    return q


def nibbles_into(out: torch.Tensor, qs: torch.Tensor, minus: int = 0) -> None:
    """Write the 4-bit codes of ``(B, g, w)`` bytes, less ``minus``, as floats into ``out`` viewed
    ``(B, g, 2, w)``: the low nibbles of each group, then its high nibbles.

    Converting straight into the two strided halves beats interleaving bytes first (1.3x, measured).
    """
    b, g, w = qs.shape
    halves = out.view(b, g, 2, w)
    for k, codes in enumerate((qs & 0x0F, qs >> 4)):
        halves.select(2, k).copy_(codes.sub_(minus).view(torch.int8) if minus else codes)


