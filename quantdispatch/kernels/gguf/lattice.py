"""The IQ1, IQ2 and IQ3 block types: weights from lattice codebooks (``grids.py``).

The kernel contract is ``blocks.py``'s: ``(B, type_size)`` uint8 blocks into ``(B, 256)`` float32,
bit-equal to gguf-py 0.19.
"""

from __future__ import annotations

from typing import Final

import torch

from quantdispatch.gguf.types import GgmlType

from ._common import NIB, f16_at, register, split_fields, uint_words
from .tables import grid_table, sign_mask_table

__all__: list[str] = []


# ---------------------------------------------------------------- IQ lattice codebooks
# A grid row holds 8 (IQ1, IQ2) or 4 (IQ3) weights. Signs are applied by flipping the float32
# sign bit, which is exact: it equals gguf-py's multiplication by -1.0.


def _grid(name: str, index: torch.Tensor, out: torch.Tensor) -> None:
    """Write codebook rows ``index`` (any int shape) into ``out`` in order."""
    table = grid_table(name)
    flat = index.reshape(-1).to(torch.int32)
    torch.index_select(table, 0, flat, out=out.view(-1, table.shape[1]))


def _flip(out: torch.Tensor, signs: torch.Tensor, *, packed7: bool) -> None:
    """Negate weight 8i + j of ``out`` where bit j of sign byte i is set.

    ``signs`` holds one index per 8 weights: a raw sign byte, or (``packed7``) a 7-bit index
    into ``ksigns_iq2xs``.
    """
    masks = sign_mask_table(packed7)
    bits = torch.index_select(masks, 0, signs.reshape(-1).to(torch.int32))
    out.view(torch.int32).view(-1, 8).bitwise_xor_(bits)


def _half_steps(d: torch.Tensor, s: torch.Tensor, factor: float) -> torch.Tensor:
    """``d * (0.5 + s) * factor``, in gguf-py's order: the IQ2/IQ3_XXS sub-block scale."""
    return d * s.to(torch.float32).add_(0.5) * factor


@register(GgmlType.IQ2_XXS)
def iq2_xxs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | 8 x (4 grid indices: u8 | aux: u32) |, 32 weights a group.

    aux bits 7k..7k+6: the sign index of grid row k; bits 28-31: the scale s.
    w = d * (0.5 + s) * 0.25 * grid * sign.
    """
    groups = blocks[:, 2:].reshape(-1, 8, 8)
    aux = uint_words(blocks, 2, 64, 4)[:, 1::2]  # (B, 8)
    _grid("iq2xxs", groups[:, :, :4], out)
    db = _half_steps(f16_at(blocks, 0), aux >> 28, 0.25)
    out.view(-1, 8, 32).mul_(db.unsqueeze(-1))
    _flip(out, (aux.unsqueeze(-1) >> _SHIFT7) & 0x7F, packed7=True)


_SHIFT7: Final = torch.tensor((0, 7, 14, 21), dtype=torch.int64).reshape(1, 1, 4)


def _nibble_scales(packed: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` uint8 → ``(B, 2n)``: low then high nibble of each byte."""
    return split_fields(packed.reshape(packed.shape[0], -1, 1, 1), NIB, 0x0F).reshape(packed.shape[0], -1)


@register(GgmlType.IQ2_XS)
def iq2_xs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 x u16 (grid index: 9 bit, sign index: 7 bit) | scales: 8 B (16 x 4 bit) |.

    w = d * (0.5 + scale) * 0.25 * grid * sign, 16 weights a scale.
    """
    qs = uint_words(blocks, 2, 64, 2)
    _grid("iq2xs", qs & 511, out)
    db = _half_steps(f16_at(blocks, 0), _nibble_scales(blocks[:, 66:74]), 0.25)
    out.view(-1, 16, 16).mul_(db.unsqueeze(-1))
    _flip(out, qs >> 9, packed7=True)


_QH2: Final = torch.tensor((0, 2, 4, 6), dtype=torch.int64).reshape(1, 1, 4)


@register(GgmlType.IQ2_S)
def iq2_s(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 B | signs: 32 B | qh: 8 B (4 x 2 bit) | scales: 8 B (16 x 4 bit) |.

    Grid index of row r = qs[r] | (2-bit field r % 4 of qh[r // 4]) << 8 (1024 rows).
    """
    qh = (blocks[:, 66:74].to(torch.int64).unsqueeze(-1) >> _QH2) & 3
    _grid("iq2s", blocks[:, 2:34].to(torch.int64) | (qh.reshape(-1, 32) << 8), out)
    db = _half_steps(f16_at(blocks, 0), _nibble_scales(blocks[:, 74:82]), 0.25)
    out.view(-1, 16, 16).mul_(db.unsqueeze(-1))
    _flip(out, blocks[:, 34:66], packed7=False)


@register(GgmlType.IQ3_XXS)
def iq3_xxs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 64 B (grid indices, 4 weights each) | aux: 8 x u32 (as IQ2_XXS) |.

    w = d * (0.5 + s) * 0.5 * grid * sign, 32 weights an aux word.
    """
    _grid("iq3xxs", blocks[:, 2:66], out)
    aux = uint_words(blocks, 66, 32, 4)
    db = _half_steps(f16_at(blocks, 0), aux >> 28, 0.5)
    out.view(-1, 8, 32).mul_(db.unsqueeze(-1))
    _flip(out, (aux.unsqueeze(-1) >> _SHIFT7) & 0x7F, packed7=True)


_BITS64: Final = torch.arange(8, dtype=torch.int64).reshape(1, 1, 8)


@register(GgmlType.IQ3_S)
def iq3_s(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 64 B | qh: 8 B (bit 8 of each index) | signs: 32 B | scales: 4 B (8 x 4 bit) |.

    w = d * (1 + 2 * scale) * grid * sign, 32 weights a scale (512 grid rows of 4).
    """
    qh = (blocks[:, 66:74].to(torch.int64).unsqueeze(-1) >> _BITS64) & 1
    _grid("iq3s", blocks[:, 2:66].to(torch.int64) | (qh.reshape(-1, 64) << 8), out)
    scale = _nibble_scales(blocks[:, 106:110]).mul_(2).add_(1)
    out.view(-1, 8, 32).mul_((f16_at(blocks, 0) * scale).unsqueeze(-1))
    _flip(out, blocks[:, 74:106], packed7=False)


_QH3: Final = torch.tensor((0, 3, 6, 9), dtype=torch.int64).reshape(1, 1, 4)
_IQ1_DELTA: Final = 0.125


@register(GgmlType.IQ1_S)
def iq1_s(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 B | qh: 8 x u16 |: 8 groups of 4 rows of the 2048 x 8 grid of -1, 0, 1.

    qh of group g: bits 3k..3k+2 top the index of row k, bits 12-14 the scale s, bit 15 the
    sign of delta. w = d * (2s + 1) * (grid + delta), delta = ±0.125.
    """
    qh = uint_words(blocks, 34, 16, 2)  # (B, 8)
    high = (qh.unsqueeze(-1) >> _QH3) & 7
    _grid("iq1s", blocks[:, 2:34].to(torch.int64) | (high.reshape(-1, 32) << 8), out)
    dl = f16_at(blocks, 0) * (((qh >> 12) & 7) * 2 + 1)
    delta = torch.where((qh & 0x8000) == 0, _IQ1_DELTA, -_IQ1_DELTA).to(torch.float32)
    o = out.view(-1, 8, 32)
    o.add_(delta.unsqueeze(-1)).mul_(dl.unsqueeze(-1))


_NIB64: Final = torch.tensor((0, 4), dtype=torch.int64).reshape(1, 1, 2)
_SC3: Final = torch.tensor((0, 3, 6, 9), dtype=torch.int64).reshape(1, 1, 4)


@register(GgmlType.IQ1_M)
def iq1_m(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| qs: 32 B | qh: 16 B (two 4-bit fields a byte) | scales: 4 x u16 |; no separate d.

    d is an f16 assembled from the top 4 bits of the four scale words (word 0 lowest). Each scale
    word gives four 3-bit scales (bits 0-11), one per 16 weights; each qh nibble gives bits 8-10
    of a grid index (bits 0-2) and the sign of delta (bit 3). w = d * (2s + 1) * (grid + delta).
    """
    sc = uint_words(blocks, 48, 8, 2)  # (B, 4)
    top = sc & 0xF000
    bits = (top[:, 0] >> 12) | (top[:, 1] >> 8) | (top[:, 2] >> 4) | top[:, 3]
    signed = torch.where(bits >= 0x8000, bits - 0x10000, bits)  # the same 16 bits as an int16
    d = signed.to(torch.int16).view(torch.float16).to(torch.float32).unsqueeze(-1)
    s = ((sc.unsqueeze(-1) >> _SC3) & 7).reshape(-1, 16)
    dl = (d * (s * 2 + 1)).reshape(-1, 8, 2, 1, 1)
    qh = (blocks[:, 32:48].to(torch.int64).unsqueeze(-1) >> _NIB64).reshape(-1, 32)
    _grid("iq1s", blocks[:, :32].to(torch.int64) | ((qh & 7) << 8), out)
    delta = torch.where((qh & 8) == 0, _IQ1_DELTA, -_IQ1_DELTA).to(torch.float32)
    o = out.view(-1, 8, 2, 2, 8)
    o.add_(delta.reshape(-1, 8, 2, 2, 1)).mul_(dl)
