"""One definition per GGML block type: its layout, drawn, and its dequantization in torch.

Every kernel takes ``blocks``, a ``(B, type_size)`` uint8 tensor of whole blocks, and writes
their weights into ``out``, a ``(B, block_size)`` float32 tensor. Each follows the float32
arithmetic of gguf-py 0.19's ``quants.py`` operation by operation (the same products, in the same
order, never fused), so that the results are bit-identical; the integer work (unpacking bits,
codebook indices, sign patterns) is free to differ. Small per-block quantities (scales) are
computed first; the per-weight work is an integer unpack, one conversion and one or two float ops.

Byte offsets below are within a block; ``f16`` is an IEEE half, little-endian like the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

import torch

from quantdispatch.gguf.types import QK_K, GgmlType

from .tables import e2m1_table, e8m0_table, grid_table, iq4nl_table, sign_mask_table, ue4m3_table

__all__ = ["Kernel", "KERNELS"]

Kernel: TypeAlias = Callable[[torch.Tensor, torch.Tensor], None]
"""``kernel(blocks, out)``: dequantize ``(B, type_size)`` uint8 blocks into ``(B, block_size)`` float32."""

_KERNELS: dict[GgmlType, Kernel] = {}


def _block(t: GgmlType) -> Callable[[Kernel], Kernel]:
    def register(kernel: Kernel) -> Kernel:
        if t in _KERNELS:
            msg = f"two kernels for {t.name}: {_KERNELS[t].__name__} and {kernel.__name__}"
            raise RuntimeError(msg)
        _KERNELS[t] = kernel
        return kernel

    return register


def _u8(values: tuple[int, ...], *shape: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).reshape(shape)


_NIB: Final = _u8((0, 4), 1, 1, 2, 1)  # low nibble first, then high
_CRUMB: Final = _u8((0, 2, 4, 6), 1, 1, 4, 1)  # four 2-bit fields of a byte, lowest first
_BIT: Final = _u8(tuple(range(8)), 1, 1, 8, 1)  # eight bits of a byte, lowest first


def _f16(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The f16 at byte ``at`` of each block, as float32 ``(B, 1)``.

    Every GGML block has an even size and its f16 fields even offsets, so the blocks viewed as
    halves give the field as one strided column (copying 2-byte slices first is 3x slower).
    """
    if blocks.is_contiguous() and blocks.storage_offset() % 2 == 0 and not at % 2:
        return blocks.view(torch.float16)[:, at // 2 : at // 2 + 1].to(torch.float32)
    return blocks[:, at : at + 2].contiguous().view(torch.float16).to(torch.float32)


def _int32(blocks: torch.Tensor, at: int, n: int) -> torch.Tensor:
    """``n`` bytes from ``at`` of each block as int32 words ``(B, n // 4)``, without a copy when aligned."""
    if blocks.is_contiguous() and blocks.storage_offset() % 4 == 0 and not (at % 4 or blocks.shape[1] % 4):
        return blocks.view(torch.int32)[:, at // 4 : (at + n) // 4]
    return blocks[:, at : at + n].contiguous().view(torch.int32)


def _uint(blocks: torch.Tensor, at: int, n: int, width: int) -> torch.Tensor:
    """``n`` bytes from ``at`` of each block as little-endian unsigned words of ``width`` bytes.

    Returns int64 ``(B, n // width)``: assembled from bytes, so unsigned and unaligned-safe.
    """
    raw = blocks[:, at : at + n].reshape(blocks.shape[0], n // width, width).to(torch.int64)
    word = raw[..., 0].clone()
    for k in range(1, width):
        word.bitwise_or_(raw[..., k] << (8 * k))
    return word


def _split(packed: torch.Tensor, shifts: torch.Tensor, mask: int) -> torch.Tensor:
    """``(B, g, 1, w)`` uint8 → ``(B, g, k, w)``: the ``k`` fields at ``shifts``, each ``& mask``.

    For the small per-block fields; the per-weight codes go through ``_fields``.
    """
    return torch.bitwise_right_shift(packed, shifts).bitwise_and_(mask)


def _fields(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """``(..., w)`` uint8 → ``(..., 8 // bits, w)``: field k holds bits ``k*bits`` up of each byte.

    ``bits`` is 1, 2 or 4.

    Shifts run on contiguous data and the interleaving is a plain copy: uint8 ops on strided
    views are several times slower in torch than copies.
    """
    count = 8 // bits
    q = torch.empty((*packed.shape[:-1], count, packed.shape[-1]), dtype=torch.uint8)
    q.select(-2, 0).copy_(packed)
    for k in range(1, count):
        q.select(-2, k).copy_(torch.bitwise_right_shift(packed, k * bits))
    q.bitwise_and_((1 << bits) - 1)
    return q


def _nibbles_into(out: torch.Tensor, qs: torch.Tensor, minus: int = 0) -> None:
    """Write the 4-bit codes of ``(B, g, w)`` bytes, less ``minus``, as floats into ``out`` viewed
    ``(B, g, 2, w)``: the low nibbles of each group, then its high nibbles.

    Converting straight into the two strided halves beats interleaving bytes first (1.3x, measured).
    """
    b, g, w = qs.shape
    halves = out.view(b, g, 2, w)
    for k, codes in enumerate((qs & 0x0F, qs >> 4)):
        halves.select(2, k).copy_(codes.sub_(minus).view(torch.int8) if minus else codes)


# ---------------------------------------------------------------- plain floats (1 weight a block)


@_block(GgmlType.F32)
def f32(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| f32 |"""
    out.copy_(blocks.contiguous().view(torch.float32))


@_block(GgmlType.F16)
def f16(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| f16 |"""
    out.copy_(blocks.contiguous().view(torch.float16))


@_block(GgmlType.BF16)
def bf16(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| bf16 |: the top half of a float32."""
    bits = out.view(torch.int32)
    bits.copy_(blocks.contiguous().view(torch.int16))
    bits.bitwise_left_shift_(16)


# ---------------------------------------------------------------- legacy 32-weight blocks
# Weight j < 16 is the low nibble of qs[j]; weight j + 16 its high nibble.


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """``(B, 16)`` uint8 → ``(B, 32)`` codes 0-15 in weight order."""
    return _fields(qs, 4).reshape(-1, 32)


def _fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """``(B, 4)`` uint8 (a u32 of 32 bits, bit j for weight j) → ``(B, 32)`` of 0 or 16."""
    return _split(qh.reshape(-1, 4, 1, 1), _BIT.reshape(1, 1, 8, 1), 1).reshape(-1, 32).mul_(16)


@_block(GgmlType.Q4_0)
def q4_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 16 B |; w = d * (q - 8)."""
    _nibbles_into(out, blocks[:, 2:].reshape(-1, 1, 16), minus=8)
    out.mul_(_f16(blocks, 0))


@_block(GgmlType.Q4_1)
def q4_1(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | m: f16 | qs: 16 B |; w = d * q + m."""
    _nibbles_into(out, blocks[:, 4:].reshape(-1, 1, 16))
    out.mul_(_f16(blocks, 0)).add_(_f16(blocks, 2))


@_block(GgmlType.Q5_0)
def q5_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qh: u32 | qs: 16 B |; w = d * (q - 16), q = nibble | bit << 4."""
    q = _nibbles(blocks[:, 6:]).bitwise_or_(_fifth_bits(blocks[:, 2:6])).sub_(16).view(torch.int8)
    out.copy_(q).mul_(_f16(blocks, 0))


@_block(GgmlType.Q5_1)
def q5_1(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | m: f16 | qh: u32 | qs: 16 B |; w = d * q + m."""
    q = _nibbles(blocks[:, 8:]).bitwise_or_(_fifth_bits(blocks[:, 4:8]))
    out.copy_(q).mul_(_f16(blocks, 0)).add_(_f16(blocks, 2))


@_block(GgmlType.Q8_0)
def q8_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 x i8 |; w = q * d."""
    out.copy_(blocks[:, 2:].view(torch.int8)).mul_(_f16(blocks, 0))


# ---------------------------------------------------------------- K-quants (256 weights)


@_block(GgmlType.Q2_K)
def q2_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| scales: 16 B (lo 4 bit scale, hi 4 bit min) | qs: 64 B | d: f16 | dmin: f16 |.

    Sub-block s (16 weights) of 128-weight half h: byte ``qs[32h + i]`` holds, in bits 2k..2k+1,
    the code of weight ``128h + 32k + i``. w = d * scale_s * q - dmin * min_s.
    """
    scales = blocks[:, :16]
    dl = (_f16(blocks, 80) * (scales & 0x0F)).unsqueeze(-1)
    ml = (_f16(blocks, 82) * (scales >> 4)).unsqueeze(-1)
    q = _fields(blocks[:, 16:80].reshape(-1, 2, 32), 2)
    out.view(-1, 16, 16).copy_(q.reshape(-1, 16, 16)).mul_(dl).sub_(ml)


@_block(GgmlType.Q3_K)
def q3_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| hmask: 32 B | qs: 64 B | scales: 12 B (16 x 6 bit) | d: f16 |.

    Code = 2 low bits from qs (laid out as Q2_K) minus 4 where the hmask bit is 0; the 6-bit
    scales have their low 4 bits in bytes 0-7 (all low nibbles, then all high nibbles) and their
    top 2 bits in bytes 8-11. w = d * (scale - 32) * code.
    """
    sc = blocks[:, 96:108]
    low = _split(sc[:, :8].reshape(-1, 1, 1, 8), _NIB, 0x0F)
    high = _split(sc[:, 8:].reshape(-1, 1, 1, 4), _CRUMB, 3)
    scale = low.reshape(-1, 16).bitwise_or_(high.reshape(-1, 16).bitwise_left_shift_(4))
    dl = (_f16(blocks, 108) * scale.sub_(32).view(torch.int8)).unsqueeze(-1)
    ql = _fields(blocks[:, 32:96].reshape(-1, 2, 32), 2).reshape(-1, 16, 16)
    qh = _fields(blocks[:, :32], 1).reshape(-1, 16, 16)
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
    sc, mn = _scale_min_k4(_int32(blocks, 4, 12))
    ds = (_f16(blocks, 0) * sc).unsqueeze(-1)
    dm = (_f16(blocks, 2) * mn).unsqueeze(-1)
    o = out.view(-1, 8, 32)
    if q is not None:
        o.copy_(q)
    o.mul_(ds).sub_(dm)


@_block(GgmlType.Q4_K)
def q4_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | dmin: f16 | scales: 12 B | qs: 128 B |.

    Sub-blocks 2i and 2i+1 are the low and high nibbles of ``qs[32i:32i+32]``.
    """
    _nibbles_into(out, blocks[:, 16:].reshape(-1, 4, 32))
    _k4(blocks, out, None)


@_block(GgmlType.Q5_K)
def q5_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | dmin: f16 | scales: 12 B | qh: 32 B | qs: 128 B |; bit s of qh[i] tops sub-block s."""
    ql = _fields(blocks[:, 48:].reshape(-1, 4, 32), 4).reshape(-1, 8, 32)
    qh = _fields(blocks[:, 16:48], 1).reshape(-1, 8, 32)
    _k4(blocks, out, ql.bitwise_or_(qh.bitwise_left_shift_(4)))


@_block(GgmlType.Q6_K)
def q6_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| ql: 128 B | qh: 64 B | scales: 16 x i8 | d: f16 |.

    In each 128-weight half h: ql[64h:64h+64] gives low nibbles (weights 0-63) then high
    nibbles (64-127); qh[32h:32h+32] gives bits 4-5 in its four 2-bit fields. w = d * scale * (q - 32).
    """
    d = (_f16(blocks, 208) * blocks[:, 192:208].view(torch.int8)).unsqueeze(-1)
    ql = _fields(blocks[:, :128].reshape(-1, 2, 64), 4).reshape(-1, 8, 32)
    qh = _fields(blocks[:, 128:192].reshape(-1, 2, 32), 2).reshape(-1, 8, 32)
    q = ql.bitwise_or_(qh.bitwise_left_shift_(4)).sub_(32).view(torch.int8)
    out.view(-1, 16, 16).copy_(q.reshape(-1, 16, 16)).mul_(d)


# ---------------------------------------------------------------- ternary


_POW3: Final = _u8((1, 3, 9, 27, 81), 1, 1, 5, 1)


@_block(GgmlType.TQ1_0)
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
    out.copy_(q).mul_(_f16(blocks, 52))


@_block(GgmlType.TQ2_0)
def tq2_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| qs: 64 B (2 bits a weight, as Q2_K) | d: f16 |; w = d * (q - 1)."""
    q = _fields(blocks[:, :64].reshape(-1, 2, 32), 2).reshape(-1, 256)
    out.copy_(q.sub_(1).view(torch.int8)).mul_(_f16(blocks, 64))


# ---------------------------------------------------------------- FP4 microscaling


@_block(GgmlType.MXFP4)
def mxfp4(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| e: E8M0 | qs: 16 B of E2M1 pairs (as Q4_0's nibbles) |; w = 2^(e-128) * kvalue[q]."""
    d = e8m0_table()[blocks[:, 0].to(torch.int64)].unsqueeze(-1)
    codes = _nibbles(blocks[:, 1:]).to(torch.int32)
    torch.index_select(e2m1_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.mul_(d)


@_block(GgmlType.NVFP4)
def nvfp4(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: 4 x UE4M3 (one per 16 weights) | qs: 32 B |.

    Group g holds the low nibbles of ``qs[8g:8g+8]``, then their high nibbles. w = d_g/2 * kvalue[q].
    """
    d = ue4m3_table()[blocks[:, :4].to(torch.int64)].unsqueeze(-1)
    codes = _fields(blocks[:, 4:].reshape(-1, 4, 8), 4).to(torch.int32)
    torch.index_select(e2m1_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.view(-1, 4, 16).mul_(d)


# ---------------------------------------------------------------- non-linear 4-bit


@_block(GgmlType.IQ4_NL)
def iq4_nl(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 16 B (as Q4_0) |; w = d * kvalues_iq4nl[q]."""
    codes = _nibbles(blocks[:, 2:]).to(torch.int32)
    torch.index_select(iq4nl_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.mul_(_f16(blocks, 0))


@_block(GgmlType.IQ4_XS)
def iq4_xs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | scales_h: u16 (8 x 2 bit) | scales_l: 4 B (8 x 4 bit) | qs: 128 B |.

    Sub-block s (32 weights): low nibbles of ``qs[16s:16s+16]``, then the high nibbles.
    w = d * (scale_s - 32) * kvalues_iq4nl[q].
    """
    low = _split(blocks[:, 4:8].reshape(-1, 4, 1, 1), _NIB, 0x0F).reshape(-1, 8)
    high = _split(blocks[:, 2:4].reshape(-1, 2, 1, 1), _CRUMB, 3).reshape(-1, 8)
    scale = low.bitwise_or_(high.bitwise_left_shift_(4)).sub_(32).view(torch.int8)
    dl = (_f16(blocks, 0) * scale).unsqueeze(-1)
    codes = _fields(blocks[:, 8:].reshape(-1, 8, 16), 4).to(torch.int32)
    torch.index_select(iq4nl_table(), 0, codes.reshape(-1), out=out.view(-1))
    out.view(-1, 8, 32).mul_(dl)


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


@_block(GgmlType.IQ2_XXS)
def iq2_xxs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | 8 x (4 grid indices: u8 | aux: u32) |, 32 weights a group.

    aux bits 7k..7k+6: the sign index of grid row k; bits 28-31: the scale s.
    w = d * (0.5 + s) * 0.25 * grid * sign.
    """
    groups = blocks[:, 2:].reshape(-1, 8, 8)
    aux = _uint(blocks, 2, 64, 4)[:, 1::2]  # (B, 8)
    _grid("iq2xxs", groups[:, :, :4], out)
    db = _half_steps(_f16(blocks, 0), aux >> 28, 0.25)
    out.view(-1, 8, 32).mul_(db.unsqueeze(-1))
    _flip(out, (aux.unsqueeze(-1) >> _SHIFT7) & 0x7F, packed7=True)


_SHIFT7: Final = torch.tensor((0, 7, 14, 21), dtype=torch.int64).reshape(1, 1, 4)


def _nibble_scales(packed: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` uint8 → ``(B, 2n)``: low then high nibble of each byte."""
    return _split(packed.reshape(packed.shape[0], -1, 1, 1), _NIB, 0x0F).reshape(packed.shape[0], -1)


@_block(GgmlType.IQ2_XS)
def iq2_xs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 x u16 (grid index: 9 bit, sign index: 7 bit) | scales: 8 B (16 x 4 bit) |.

    w = d * (0.5 + scale) * 0.25 * grid * sign, 16 weights a scale.
    """
    qs = _uint(blocks, 2, 64, 2)
    _grid("iq2xs", qs & 511, out)
    db = _half_steps(_f16(blocks, 0), _nibble_scales(blocks[:, 66:74]), 0.25)
    out.view(-1, 16, 16).mul_(db.unsqueeze(-1))
    _flip(out, qs >> 9, packed7=True)


_QH2: Final = torch.tensor((0, 2, 4, 6), dtype=torch.int64).reshape(1, 1, 4)


@_block(GgmlType.IQ2_S)
def iq2_s(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 B | signs: 32 B | qh: 8 B (4 x 2 bit) | scales: 8 B (16 x 4 bit) |.

    Grid index of row r = qs[r] | (2-bit field r % 4 of qh[r // 4]) << 8 (1024 rows).
    """
    qh = (blocks[:, 66:74].to(torch.int64).unsqueeze(-1) >> _QH2) & 3
    _grid("iq2s", blocks[:, 2:34].to(torch.int64) | (qh.reshape(-1, 32) << 8), out)
    db = _half_steps(_f16(blocks, 0), _nibble_scales(blocks[:, 74:82]), 0.25)
    out.view(-1, 16, 16).mul_(db.unsqueeze(-1))
    _flip(out, blocks[:, 34:66], packed7=False)


@_block(GgmlType.IQ3_XXS)
def iq3_xxs(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 64 B (grid indices, 4 weights each) | aux: 8 x u32 (as IQ2_XXS) |.

    w = d * (0.5 + s) * 0.5 * grid * sign, 32 weights an aux word.
    """
    _grid("iq3xxs", blocks[:, 2:66], out)
    aux = _uint(blocks, 66, 32, 4)
    db = _half_steps(_f16(blocks, 0), aux >> 28, 0.5)
    out.view(-1, 8, 32).mul_(db.unsqueeze(-1))
    _flip(out, (aux.unsqueeze(-1) >> _SHIFT7) & 0x7F, packed7=True)


_BITS64: Final = torch.arange(8, dtype=torch.int64).reshape(1, 1, 8)


@_block(GgmlType.IQ3_S)
def iq3_s(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 64 B | qh: 8 B (bit 8 of each index) | signs: 32 B | scales: 4 B (8 x 4 bit) |.

    w = d * (1 + 2 * scale) * grid * sign, 32 weights a scale (512 grid rows of 4).
    """
    qh = (blocks[:, 66:74].to(torch.int64).unsqueeze(-1) >> _BITS64) & 1
    _grid("iq3s", blocks[:, 2:66].to(torch.int64) | (qh.reshape(-1, 64) << 8), out)
    scale = _nibble_scales(blocks[:, 106:110]).mul_(2).add_(1)
    out.view(-1, 8, 32).mul_((_f16(blocks, 0) * scale).unsqueeze(-1))
    _flip(out, blocks[:, 74:106], packed7=False)


_QH3: Final = torch.tensor((0, 3, 6, 9), dtype=torch.int64).reshape(1, 1, 4)
_IQ1_DELTA: Final = 0.125


@_block(GgmlType.IQ1_S)
def iq1_s(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| d: f16 | qs: 32 B | qh: 8 x u16 |: 8 groups of 4 rows of the 2048 x 8 grid of -1, 0, 1.

    qh of group g: bits 3k..3k+2 top the index of row k, bits 12-14 the scale s, bit 15 the
    sign of delta. w = d * (2s + 1) * (grid + delta), delta = ±0.125.
    """
    qh = _uint(blocks, 34, 16, 2)  # (B, 8)
    high = (qh.unsqueeze(-1) >> _QH3) & 7
    _grid("iq1s", blocks[:, 2:34].to(torch.int64) | (high.reshape(-1, 32) << 8), out)
    dl = _f16(blocks, 0) * (((qh >> 12) & 7) * 2 + 1)
    delta = torch.where((qh & 0x8000) == 0, _IQ1_DELTA, -_IQ1_DELTA).to(torch.float32)
    o = out.view(-1, 8, 32)
    o.add_(delta.unsqueeze(-1)).mul_(dl.unsqueeze(-1))


_NIB64: Final = torch.tensor((0, 4), dtype=torch.int64).reshape(1, 1, 2)
_SC3: Final = torch.tensor((0, 3, 6, 9), dtype=torch.int64).reshape(1, 1, 4)


@_block(GgmlType.IQ1_M)
def iq1_m(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """| qs: 32 B | qh: 16 B (two 4-bit fields a byte) | scales: 4 x u16 |; no separate d.

    d is an f16 assembled from the top 4 bits of the four scale words (word 0 lowest). Each scale
    word gives four 3-bit scales (bits 0-11), one per 16 weights; each qh nibble gives bits 8-10
    of a grid index (bits 0-2) and the sign of delta (bit 3). w = d * (2s + 1) * (grid + delta).
    """
    sc = _uint(blocks, 48, 8, 2)  # (B, 4)
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


KERNELS: Final[Mapping[GgmlType, Kernel]] = MappingProxyType(_KERNELS)
"""The kernel of every block type we dequantize, by type."""
