"""One definition per GGML block type: its layout, drawn, and its dequantization in torch.

Every kernel takes ``blocks``, a ``(B, type_size)`` uint8 tensor of whole blocks, and writes
their weights into ``out``, a ``(B, block_size)`` float32 tensor. Each follows the float32
arithmetic of gguf-py 0.19's ``quants.py`` operation by operation (the same products, in the same
order, never fused), so that the results are bit-identical; the integer work (unpacking bits,
codebook indices, sign patterns) is free to differ. Small per-block quantities (scales) are
computed first; the per-weight work is an integer unpack, one conversion and one or two float ops.

Byte offsets below are within a block; ``f16`` is an IEEE half, little-endian like the host.
This module: plain floats, legacy, K-, ternary, FP4 and non-linear 4-bit quants; ``lattice.py``:
the IQ1/IQ2/IQ3 codebook quants.
"""

from __future__ import annotations

from typing import Final

import torch

from quantdispatch.gguf.types import GgmlType

from ._common import BIT, CRUMB, NIB, bit_fields, f16_at, int32_words, nibbles_into, register, split_fields, u8_const
from .tables import e2m1_table, e8m0_table, iq4nl_table, ue4m3_table

__all__: list[str] = []


# ---------------------------------------------------------------- plain floats (1 weight a block)


@register(GgmlType.F32)
def f32(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| f32 |"""
    out.copy_(blocks.contiguous().view(torch.float32))


@register(GgmlType.F16)
def f16(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| f16 |"""
    out.copy_(blocks.contiguous().view(torch.float16))


@register(GgmlType.BF16)
def bf16(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| bf16 |: the top half of a float32."""
    bits = out.view(torch.int32)
    bits.copy_(blocks.contiguous().view(torch.int16))
    bits.bitwise_left_shift_(16)


# ---------------------------------------------------------------- legacy 32-weight blocks
# Weight j < 16 is the low nibble of qs[j]; weight j + 16 its high nibble.


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """``(B, 16)`` uint8 → ``(B, 32)`` codes 0-15 in weight order."""
    return bit_fields(qs, 4).reshape(-1, 32)


def _fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """``(B, 4)`` uint8 (a u32 of 32 bits, bit j for weight j) → ``(B, 32)`` of 0 or 16."""
    return split_fields(qh.reshape(-1, 4, 1, 1), BIT.reshape(1, 1, 8, 1), 1).reshape(-1, 32).mul_(16)


@register(GgmlType.Q4_0)
def q4_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 16 B |; w = d * (q - 8)."""
    nibbles_into(out, blocks[:, 2:].reshape(-1, 1, 16), minus=8)
    out.mul_(f16_at(blocks, 0))


@register(GgmlType.Q4_1)
def q4_1(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | m: f16 | qs: 16 B |; w = d * q + m."""
    nibbles_into(out, blocks[:, 4:].reshape(-1, 1, 16))
    out.mul_(f16_at(blocks, 0)).add_(f16_at(blocks, 2))


@register(GgmlType.Q5_0)
def q5_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qh: u32 | qs: 16 B |; w = d * (q - 16), q = nibble | bit << 4."""
    q = _nibbles(blocks[:, 6:]).bitwise_or_(_fifth_bits(blocks[:, 2:6])).sub_(16).view(torch.int8)
    out.copy_(q).mul_(f16_at(blocks, 0))


@register(GgmlType.Q5_1)
def q5_1(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | m: f16 | qh: u32 | qs: 16 B |; w = d * q + m."""
    q = _nibbles(blocks[:, 8:]).bitwise_or_(_fifth_bits(blocks[:, 4:8]))
    out.copy_(q).mul_(f16_at(blocks, 0)).add_(f16_at(blocks, 2))


@register(GgmlType.Q8_0)
def q8_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 x i8 |; w = q * d."""
    out.copy_(blocks[:, 2:].view(torch.int8)).mul_(f16_at(blocks, 0))


# ---------------------------------------------------------------- K-quants (256 weights)


@register(GgmlType.Q2_K)
def q2_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| scales: 16 B (lo 4 bit scale, hi 4 bit min) | qs: 64 B | d: f16 | dmin: f16 |.

    Sub-block s (16 weights) of 128-weight half h: byte ``qs[32h + i]`` holds, in bits 2k..2k+1,
    the code of weight ``128h + 32k + i``. w = d * scale_s * q - dmin * min_s.
    """
    scales = blocks[:, :16]
    dl = (f16_at(blocks, 80) * (scales & 0x0F)).unsqueeze(-1)
    ml = (f16_at(blocks, 82) * (scales >> 4)).unsqueeze(-1)
    q = bit_fields(blocks[:, 16:80].reshape(-1, 2, 32), 2)
    out.view(-1, 16, 16).copy_(q.reshape(-1, 16, 16)).mul_(dl).sub_(ml)


@register(GgmlType.Q3_K)
def q3_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| hmask: 32 B | qs: 64 B | scales: 12 B (16 x 6 bit) | d: f16 |.

    Code = 2 low bits from qs (laid out as Q2_K) minus 4 where the hmask bit is 0; the 6-bit
    scales have their low 4 bits in bytes 0-7 (all low nibbles, then all high nibbles) and their
    top 2 bits in bytes 8-11. w = d * (scale - 32) * code.
    """
    sc = blocks[:, 96:108]
    low = split_fields(sc[:, :8].reshape(-1, 1, 1, 8), NIB, 0x0F)
    high = split_fields(sc[:, 8:].reshape(-1, 1, 1, 4), CRUMB, 3)
    scale = low.reshape(-1, 16).bitwise_or_(high.reshape(-1, 16).bitwise_left_shift_(4))
    dl = (f16_at(blocks, 108) * scale.sub_(32).view(torch.int8)).unsqueeze(-1)
    ql = bit_fields(blocks[:, 32:96].reshape(-1, 2, 32), 2).reshape(-1, 16, 16)
    qh = bit_fields(blocks[:, :32], 1).reshape(-1, 16, 16)
    q = ql.sub_(qh.bitwise_xor_(1).bitwise_left_shift_(2)).view(torch.int8)
    out.view(-1, 16, 16).copy_(q).mul_(dl)


def _scale_min_k4(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 3)`` int32 words (12 bytes) → 8 six-bit scales and 8 six-bit mins (Q4_K, Q5_K), ``(B, 8)`` uint8 each.

    Bytes 0-3: scales 0-3 (bits 0-5), top bits of scales 4-7 (bits 6-7); bytes 4-7 likewise for
    the mins; bytes 8-11: low nibble = scale 4-7 bits 0-3, high nibble = min 4-7 bits 0-3.
    """
    # Four 6-bit fields at a time: each block's 12 bytes as three int32 words (d, m, md above).
    d, m, md = packed.unbind(1)
    words = torch.stack(
        [
            d & 0x3F3F3F3F,
            (md & 0x0F0F0F0F) | ((d >> 2) & 0x30303030),
            m & 0x3F3F3F3F,
            ((md >> 4) & 0x0F0F0F0F) | ((m >> 2) & 0x30303030),
        ],
        dim=1,
    )
    fields = words.view(torch.uint8)  # (B, 16): 8 scales, then 8 mins
    return fields[:, :8], fields[:, 8:]


def _k4(blocks: torch.Tensor, out: torch.Tensor, q: torch.Tensor | None) -> None:
    """w = d * scale_s * q - dmin * min_s over 8 sub-blocks of 32 (Q4_K, Q5_K); ``q`` is
    already in ``out`` when ``None``."""
    sc, mn = _scale_min_k4(int32_words(blocks, 4, 12))
    ds = (f16_at(blocks, 0) * sc).unsqueeze(-1)
    dm = (f16_at(blocks, 2) * mn).unsqueeze(-1)
    o = out.view(-1, 8, 32)
    if q is not None:
        o.copy_(q)
    o.mul_(ds).sub_(dm)


@register(GgmlType.Q4_K)
def q4_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | dmin: f16 | scales: 12 B | qs: 128 B |.

    Sub-blocks 2i and 2i+1 are the low and high nibbles of ``qs[32i:32i+32]``.
    """
    nibbles_into(out, blocks[:, 16:].reshape(-1, 4, 32))
    _k4(blocks, out, None)


@register(GgmlType.Q5_K)
def q5_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | dmin: f16 | scales: 12 B | qh: 32 B | qs: 128 B |; bit s of qh[i] tops sub-block s."""
    ql = bit_fields(blocks[:, 48:].reshape(-1, 4, 32), 4).reshape(-1, 8, 32)
    qh = bit_fields(blocks[:, 16:48], 1).reshape(-1, 8, 32)
    _k4(blocks, out, ql.bitwise_or_(qh.bitwise_left_shift_(4)))


@register(GgmlType.Q6_K)
def q6_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| ql: 128 B | qh: 64 B | scales: 16 x i8 | d: f16 |.

    In each 128-weight half h: ql[64h:64h+64] gives low nibbles (weights 0-63) then high
    nibbles (64-127); qh[32h:32h+32] gives bits 4-5 in its four 2-bit fields. w = d * scale * (q - 32).
    """
    d = (f16_at(blocks, 208) * blocks[:, 192:208].view(torch.int8)).unsqueeze(-1)
    ql = bit_fields(blocks[:, :128].reshape(-1, 2, 64), 4).reshape(-1, 8, 32)
    qh = bit_fields(blocks[:, 128:192].reshape(-1, 2, 32), 2).reshape(-1, 8, 32)
    q = ql.bitwise_or_(qh.bitwise_left_shift_(4)).sub_(32).view(torch.int8)
    out.view(-1, 16, 16).copy_(q.reshape(-1, 16, 16)).mul_(d)


# ---------------------------------------------------------------- ternary


_POW3: Final = u8_const((1, 3, 9, 27, 81), 1, 1, 5, 1)


@register(GgmlType.TQ1_0)
def tq1_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| qs: 48 B (5 trits a byte) | qh: 4 B (4 trits a byte) | d: f16 |.

    A byte holds trits as a fixed-point fraction: trit k = ((byte * 3^k mod 256) * 3) >> 8.
    Weights: qs[0:32] x 5 powers, then qs[32:48] x 5, then qh x 4. w = d * (trit - 1).
    """
    parts = (
        (blocks[:, :32].reshape(-1, 1, 1, 32) * _POW3).reshape(-1, 160),
        (blocks[:, 32:48].reshape(-1, 1, 1, 16) * _POW3).reshape(-1, 80),
        (blocks[:, 48:52].reshape(-1, 1, 1, 4) * _POW3[:, :, :4]).reshape(-1, 16),
    )
    q = torch.cat(parts, dim=1).to(torch.int16).mul_(3).bitwise_right_shift_(8).sub_(1)
    out.copy_(q).mul_(f16_at(blocks, 52))


@register(GgmlType.TQ2_0)
def tq2_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| qs: 64 B (2 bits a weight, as Q2_K) | d: f16 |; w = d * (q - 1)."""
    q = bit_fields(blocks[:, :64].reshape(-1, 2, 32), 2).reshape(-1, 256)
    out.copy_(q.sub_(1).view(torch.int8)).mul_(f16_at(blocks, 64))


# ---------------------------------------------------------------- FP4 microscaling


@register(GgmlType.MXFP4)
def mxfp4(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| e: E8M0 | qs: 16 B of E2M1 pairs (as Q4_0's nibbles) |; w = 2^(e-128) * kvalue[q]."""
    d = e8m0_table()[blocks[:, 0].to(torch.int64)].unsqueeze(-1)
    codes = _nibbles(blocks[:, 1:]).to(torch.int32)
    torch.index_select(e2m1_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.mul_(d)


@register(GgmlType.NVFP4)
def nvfp4(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: 4 x UE4M3 (one per 16 weights) | qs: 32 B |.

    Group g holds the low nibbles of ``qs[8g:8g+8]``, then their high nibbles. w = d_g/2 * kvalue[q].
    """
    d = ue4m3_table()[blocks[:, :4].to(torch.int64)].unsqueeze(-1)
    codes = bit_fields(blocks[:, 4:].reshape(-1, 4, 8), 4).to(torch.int32)
    torch.index_select(e2m1_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.view(-1, 4, 16).mul_(d)


# ---------------------------------------------------------------- non-linear 4-bit


@register(GgmlType.IQ4_NL)
def iq4_nl(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 16 B (as Q4_0) |; w = d * kvalues_iq4nl[q]."""
    codes = _nibbles(blocks[:, 2:]).to(torch.int32)
    torch.index_select(iq4nl_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.mul_(f16_at(blocks, 0))


@register(GgmlType.IQ4_XS)
def iq4_xs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | scales_h: u16 (8 x 2 bit) | scales_l: 4 B (8 x 4 bit) | qs: 128 B |.

    Sub-block s (32 weights): low nibbles of ``qs[16s:16s+16]``, then the high nibbles.
    w = d * (scale_s - 32) * kvalues_iq4nl[q].
    """
    low = split_fields(blocks[:, 4:8].reshape(-1, 4, 1, 1), NIB, 0x0F).reshape(-1, 8)
    high = split_fields(blocks[:, 2:4].reshape(-1, 2, 1, 1), CRUMB, 3).reshape(-1, 8)
    scale = low.bitwise_or_(high.bitwise_left_shift_(4)).sub_(32).view(torch.int8)
    dl = (f16_at(blocks, 0) * scale).unsqueeze(-1)
    codes = bit_fields(blocks[:, 8:].reshape(-1, 8, 16), 4).to(torch.int32)
    torch.index_select(iq4nl_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.view(-1, 8, 32).mul_(dl)
