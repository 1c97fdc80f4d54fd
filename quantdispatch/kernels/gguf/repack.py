"""GGML blocks repacked into groups of 16 interleaved rows, for the 8-bit decode kernels (``matvec.c``'s ``rx_*``).

The file's layout puts a row's blocks one after the other, so a kernel that reads one row at a
time converts one float16 scale per block and sums each row across its SIMD lanes at the end.
Repacked, rows ``0 .. 16 G - 1`` (``G = rows // 16``) are stored by group of ``ROWS_PER_GROUP``
rows: a group's block ``b`` holds block ``b`` of its 16 rows, region by region (``REGIONS``: the
float16 scale(s), the packed sub-scales, the codes), each region cut into chunks of 2 or 4 bytes
with chunk ``c`` of the 16 rows side by side. A chunk of 4 code bytes of 16 rows is then one
512-bit register of 16 int32 lanes (two 256-bit ones on AVX2) that ``dpbusd`` (or ``maddubs``)
multiplies against 4 broadcast activation codes, and the 16 rows' scales are one ``cvtph``: each
lane is one output row, with no horizontal sums. The bytes are the same at every SIMD level.

Rows past ``16 G`` keep the file's layout at their own offsets, so a repacked weight has exactly
the file's bytes, permuted: ``repack`` replaces the module's buffer (one copy of the weight in
memory) and ``unpack`` inverts it (the dequantizing paths and the prefill GEMM's panels read
it back). Pure torch (reshapes and one strided copy per region).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import torch

from quantdispatch.gguf.types import BLOCK, GgmlType

__all__ = ["ROWS_PER_GROUP", "REGIONS", "REPACK_TYPES", "repack", "unpack"]

ROWS_PER_GROUP: Final = 16
"""Rows interleaved per group: one 512-bit register of int32 lanes."""

REGIONS: Final[Mapping[GgmlType, tuple[tuple[int, int, int], ...]]] = {
    GgmlType.Q4_0: ((0, 2, 2), (2, 16, 4)),
    GgmlType.Q8_0: ((0, 2, 2), (2, 32, 4)),
    GgmlType.Q4_K: ((0, 2, 2), (2, 2, 2), (4, 12, 4), (16, 128, 4)),
    GgmlType.Q6_K: ((208, 2, 2), (192, 16, 4),
                    *((at, 4, 4) for h in range(2) for c in range(8) for at in (64 * h + 4 * c, 64 * h + 32 + 4 * c, 128 + 32 * h + 4 * c))),
}
"""Per type, the regions of a block in the order a group's block stores them: (offset in the
block, bytes, chunk bytes). Q4_0/Q8_0: ``d``, codes; Q4_K: ``d``, ``dmin``, the 12 bytes of 6-bit
scales and mins, codes; Q6_K: ``d``, the 16 scales, then for each half ``h`` and step ``c`` the
4 bytes of ``ql`` at ``64 h + 4 c`` and ``64 h + 32 + 4 c`` and of ``qh`` at ``32 h + 4 c``, the
order its kernel reads them. (``matvec.c`` has the same table.)"""

REPACK_TYPES: Final[frozenset[GgmlType]] = frozenset(REGIONS)
"""The block types with repacked kernels."""


def _views(blocks: torch.Tensor, ggml_type: GgmlType, rows: int, cols: int) -> tuple[torch.Tensor, int]:
    per_block, size = BLOCK[ggml_type]
    if ggml_type not in REGIONS or cols % per_block or blocks.dtype != torch.uint8 \
            or blocks.numel() != rows * cols // per_block * size:
        raise ValueError(f"{ggml_type.name} blocks of {blocks.numel()} bytes ({blocks.dtype}) cannot be repacked as a "
                         f"[{rows}, {cols}] weight")
    return blocks.reshape(-1), rows // ROWS_PER_GROUP * ROWS_PER_GROUP * (cols // per_block) * size


def _pairs(file_rows: torch.Tensor, grouped: torch.Tensor, ggml_type: GgmlType, groups: int,
           blocks_per_row: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(file-layout view, repacked view) of each region, same shape ``[G, B, chunks, 16, chunk]``."""
    size = BLOCK[ggml_type][1]
    src = file_rows.view(groups, ROWS_PER_GROUP, blocks_per_row, size)
    dst = grouped.view(groups, blocks_per_row, ROWS_PER_GROUP * size)
    out, start = [], 0
    for at, length, chunk in REGIONS[ggml_type]:
        chunks = length // chunk
        region = src[..., at:at + length].view(groups, ROWS_PER_GROUP, blocks_per_row, chunks, chunk).permute(0, 2, 3, 1, 4)
        packed = dst[..., start:start + ROWS_PER_GROUP * length].view(groups, blocks_per_row, chunks, ROWS_PER_GROUP, chunk)
        out.append((region, packed))
        start += ROWS_PER_GROUP * length
    return out


def repack(blocks: torch.Tensor, ggml_type: GgmlType, rows: int, cols: int) -> torch.Tensor:
    """``blocks`` (the file's layout of a ``[rows, cols]`` weight, uint8) repacked: a new flat
    uint8 tensor of the same size.

    Raises:
        ValueError: the type has no repacked layout, or the sizes do not agree.
    """
    flat, head = _views(blocks, ggml_type, rows, cols)
    out = torch.empty_like(flat, memory_format=torch.contiguous_format)
    per_block = BLOCK[ggml_type][0]
    if head:
        for region, packed in _pairs(flat[:head], out[:head], ggml_type, rows // ROWS_PER_GROUP, cols // per_block):
            packed.copy_(region)
    out[head:] = flat[head:]
    return out


def unpack(repacked: torch.Tensor, ggml_type: GgmlType, rows: int, cols: int) -> torch.Tensor:
    """The file's layout back from ``repack``'s: a new flat uint8 tensor.

    Raises:
        ValueError: the type has no repacked layout, or the sizes do not agree.
    """
    flat, head = _views(repacked, ggml_type, rows, cols)
    out = torch.empty_like(flat, memory_format=torch.contiguous_format)
    per_block = BLOCK[ggml_type][0]
    if head:
        for region, packed in _pairs(out[:head], flat[:head], ggml_type, rows // ROWS_PER_GROUP, cols // per_block):
            region.copy_(packed)
    out[head:] = flat[head:]
    return out
