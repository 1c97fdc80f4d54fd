"""Little-endian bit streams of ``bits``-wide unsigned integers in int32 words, vectorized.

GPTQ (AutoGPTQ, GPTQModel) and AWQ pack ``b``-bit values into int32 words as one little-endian bit
stream: value ``k`` of a block occupies bits ``k*b … k*b + b - 1`` of the block. For b = 2, 4, 8 a
word holds ``32 // b`` whole values; for b = 3 a block of 32 values spans 3 words and values 10
and 21 straddle a word boundary (AutoGPTQ's hand-written 3-bit loop is exactly this stream)::

    word 0: v0 … v9 (bits 0-29), v10 bits 0-1 (bits 30-31)
    word 1: v10 bit 2 (bit 0), v11 … v20 (bits 1-30), v21 bit 0 (bit 31)
    word 2: v21 bits 1-2 (bits 0-1), v22 … v31 (bits 2-31)

A block therefore holds ``32`` values in ``b`` words. Both directions work on the last dimension
with precomputed (word, shift) tables; no Python loop touches tensor data.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["pack_last", "unpack_last", "to_int32", "words_per_block", "values_per_block"]

_U32 = (1 << 32) - 1


def values_per_block(bits: int) -> int:
    """Values in the smallest run of whole words: ``32 // bits`` for 2/4/8 bits, 32 for 3 bits."""
    return 32 // bits if 32 % bits == 0 else 32


def words_per_block(bits: int) -> int:
    """Words in that run: 1 for 2/4/8 bits, 3 for 3 bits."""
    return 1 if 32 % bits == 0 else bits


@functools.lru_cache(maxsize=32)
def _tables(bits: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per value of a block: its first word, its shift in that word, and whether it spills over."""
    offsets = torch.arange(values_per_block(bits), dtype=torch.int64) * bits
    word, shift = offsets // 32, offsets % 32
    spills = shift + bits > 32
    return word.to(device), shift.to(device), spills.to(device)


def unpack_last(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Unpack int32 words along the last dimension into ``bits``-wide unsigned values (uint8).

    ``[..., n_words]`` becomes ``[..., n_words * 32 // bits]``.

    >>> unpack_last(torch.tensor([[0x76543210]], dtype=torch.int32), 4).tolist()
    [[0, 1, 2, 3, 4, 5, 6, 7]]
    """
    per_block, words = values_per_block(bits), words_per_block(bits)
    *lead, n = packed.shape
    if n % words:
        raise ValueError(f"{n} words is not a whole number of {words}-word blocks for {bits}-bit values")
    mask = (1 << bits) - 1
    if words == 1:
        shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=packed.device)
        # int32 >> is arithmetic, but the mask drops the sign-extended bits.
        values = torch.bitwise_and(torch.bitwise_right_shift(packed.unsqueeze(-1), shifts), mask)
        return values.to(torch.uint8).reshape(*lead, n * per_block)
    if bits == 3:
        return _unpack_3(packed).reshape(*lead, (n // words) * per_block)
    word, shift, spills = _tables(bits, packed.device)
    blocks = torch.bitwise_and(packed.to(torch.int64), _U32).reshape(*lead, n // words, words)
    low = torch.bitwise_right_shift(blocks[..., word], shift)
    high_word = blocks[..., torch.clamp(word + 1, max=words - 1)]
    high = torch.where(spills, torch.bitwise_left_shift(high_word, (32 - shift).clamp(max=63)), 0)
    values = torch.bitwise_and(torch.bitwise_or(low, high), mask)
    return values.to(torch.uint8).reshape(*lead, (n // words) * per_block)


def _unpack_3(packed: torch.Tensor) -> torch.Tensor:
    """3-bit values of ``[..., 3k]`` words as ``[..., k, 32]`` uint8, in int32 without gathers: each
    word's ten whole values by fixed shifts, and the two that straddle words from their two parts
    (the layout in the module docstring). About 5x faster than the general path's int64 gathers."""
    w = packed.reshape(*packed.shape[:-1], -1, 3)
    w0, w1, w2 = w[..., 0:1], w[..., 1:2], w[..., 2:3]
    ten = torch.arange(0, 30, 3, dtype=torch.int32, device=packed.device)
    # int32 >> is arithmetic; each mask keeps only bits that came from the word itself
    first = torch.bitwise_and(torch.bitwise_right_shift(w0, ten), 7)
    middle = torch.bitwise_and(torch.bitwise_right_shift(w1, ten + 1), 7)
    last = torch.bitwise_and(torch.bitwise_right_shift(w2, ten + 2), 7)
    v10 = torch.bitwise_or(torch.bitwise_and(torch.bitwise_right_shift(w0, 30), 3), torch.bitwise_left_shift(torch.bitwise_and(w1, 1), 2))
    v21 = torch.bitwise_or(torch.bitwise_and(torch.bitwise_right_shift(w1, 31), 1), torch.bitwise_left_shift(torch.bitwise_and(w2, 3), 1))
    return torch.cat((first, v10, middle, v21, last), dim=-1).to(torch.uint8)


def pack_last(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned ``bits``-wide integers along the last dimension into int32 words.

    The inverse of :func:`unpack_last`; values must lie in ``[0, 2**bits)`` and the last dimension
    must be a whole number of blocks (``32 // bits`` values, or 32 for 3 bits).

    >>> hex(pack_last(torch.arange(8), 4).item())
    '0x76543210'
    """
    per_block, words = values_per_block(bits), words_per_block(bits)
    *lead, n = values.shape
    if n % per_block:
        raise ValueError(f"{n} values is not a whole number of {per_block}-value blocks for {bits}-bit packing")
    v = values.to(torch.int64).reshape(*lead, n // per_block, 1, per_block)
    offsets = torch.arange(per_block, dtype=torch.int64, device=values.device) * bits
    # delta[j, k]: where value k starts relative to word j's first bit.
    delta = offsets.unsqueeze(0) - 32 * torch.arange(words, dtype=torch.int64, device=values.device).unsqueeze(1)
    left = torch.bitwise_left_shift(v, delta.clamp(min=0, max=32))
    right = torch.bitwise_right_shift(v, (-delta).clamp(min=0, max=32))
    overlaps = (delta > -bits) & (delta < 32)
    contributions = torch.where(overlaps, torch.where(delta >= 0, left, right), 0)
    # Fields of one word never overlap, so their sum is their bitwise or.
    packed = torch.bitwise_and(contributions.sum(dim=-1), _U32)
    return to_int32(packed.reshape(*lead, (n // per_block) * words))


def to_int32(unsigned: torch.Tensor) -> torch.Tensor:
    """Reinterpret unsigned 32-bit values held in int64 as int32 (two's complement wrap)."""
    return torch.where(unsigned >= 1 << 31, unsigned - (1 << 32), unsigned).to(torch.int32)
