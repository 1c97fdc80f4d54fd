"""GPTQ weights as AutoGPTQ, GPTQModel and Optimum store them, unpacked and dequantized in torch.

One linear layer with ``in_features`` K, ``out_features`` N, ``bits`` b and G groups holds::

    qweight  int32  [K // 32 * b, N]   codes packed along the input dimension (dim 0)
    qzeros   int32  [G, N // 32 * b]   zero points packed along the output dimension (dim 1)
    scales   fp16   [G, N]
    g_idx    int32  [K]                group of each input column (non-monotonic under act-order)
    bias     fp16   [N]                optional

Packing is a little-endian bit stream (see :mod:`._bits`; 3-bit values straddle words). The weight
is ``W[n, k] = scales[g, n] * (q[k, n] - z[g, n])`` with ``g = g_idx[k]``. ``gptq`` (v1) stores
every zero point minus one; ``gptq_v2`` stores it as is. GPTQModel moves between the two by adding
or subtracting ``0x11111111`` (4-bit; ``0x55555555`` 2-bit, ``0x01010101`` 8-bit) to each whole
int32 word, with carries across fields, and, for 3 bits, by decoding the fields and adding one
modulo 8 each; we do exactly the same, so a v1 zero point of 0 (stored as -1) survives the round
trip the way GPTQModel writes and reads it.

The product of a code difference (at most 9 bits) and an fp16 scale is exact in float32, so the
float32 weight here is exact, and casting it to fp16 gives the same bits as GPTQModel's fp16
``scales * (q - z)``.
"""

from __future__ import annotations

from typing import Final

import torch

from ..configs.gptq import AbstractGptq, Gptq
from ._bits import pack_last, to_int32, unpack_last, values_per_block, words_per_block
from ._common import FLOATS, TensorSpec, ceil_div

__all__ = [
    "gptq_expected_tensors", "gptq_groups", "unpack_gptq_qweight", "unpack_gptq_qzeros", "pack_gptq_qweight",
    "pack_gptq_qzeros", "dequantize_gptq", "dequantize_gptq_kn", "gptq_trivial_g_idx", "gptq_v1_zeros",
]

_V1_WORD_OFFSET: Final = {2: 0x55555555, 4: 0x11111111, 8: 0x01010101}
"""One added to every field of an int32 word, for the widths whose fields never straddle words."""
_U32: Final = (1 << 32) - 1


def gptq_groups(in_features: int, group_size: int) -> int:
    """Number of groups (rows of ``scales``): ``ceil(K / group_size)``, or 1 for ``group_size == -1``."""
    return 1 if group_size == -1 else ceil_div(in_features, group_size)


def gptq_expected_tensors(config: AbstractGptq, in_features: int, out_features: int, bias: bool) -> dict[str, TensorSpec]:
    """The tensors one GPTQ linear layer's checkpoint holds, by name suffix.

    Raises:
        ValueError: The layer's dimensions cannot be packed at this width.

    >>> gptq_expected_tensors(Gptq(bits=4, group_size=128), 256, 64, bias=False)["qweight"]
    TensorSpec(shape=(32, 64), dtype=torch.int32, accepted=())
    """
    bits = config.bits
    per_block, words = values_per_block(bits), words_per_block(bits)
    for name, size in (("in_features", in_features), ("out_features", out_features)):
        if size <= 0 or size % per_block:
            raise ValueError(f"GPTQ {bits}-bit packs {per_block} values per {words} int32 word(s); {name}={size} is not a multiple")
    if config.group_size != -1 and config.group_size <= 0:
        raise ValueError(f"group_size must be positive or -1, got {config.group_size}")
    groups = gptq_groups(in_features, config.group_size)
    specs = {
        "qweight": TensorSpec((in_features // per_block * words, out_features), torch.int32),
        "qzeros": TensorSpec((groups, out_features // per_block * words), torch.int32),
        "scales": TensorSpec((groups, out_features), torch.float16, FLOATS),
        "g_idx": TensorSpec((in_features,), torch.int32),
    }
    if bias:
        specs["bias"] = TensorSpec((out_features,), torch.float16, FLOATS)
    return specs


def unpack_gptq_qweight(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``q[k, n]`` (uint8, ``[K, N]``) from ``qweight`` (int32, ``[K // 32 * bits, N]``)."""
    return unpack_last(qweight.t(), bits).t()


def pack_gptq_qweight(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``qweight`` from codes ``[K, N]`` in ``[0, 2**bits)``; the inverse of :func:`unpack_gptq_qweight`."""
    return pack_last(codes.t(), bits).t().contiguous()


def unpack_gptq_qzeros(qzeros: torch.Tensor, bits: int, v1: bool) -> torch.Tensor:
    """Zero points ``z[g, n]`` (uint8, ``[G, N]``) as the dequantization uses them.

    Args:
        qzeros: int32 ``[G, N // 32 * bits]``.
        bits: 2, 3, 4 or 8.
        v1: The checkpoint is ``gptq`` (v1): undo its minus-one offset as GPTQModel does.
    """
    if not v1:
        return unpack_last(qzeros, bits)
    if bits in _V1_WORD_OFFSET:
        shifted = torch.bitwise_and(qzeros.to(torch.int64) + _V1_WORD_OFFSET[bits], _U32)
        return unpack_last(to_int32(shifted), bits)
    return torch.bitwise_and(unpack_last(qzeros, bits) + 1, (1 << bits) - 1)


def pack_gptq_qzeros(zeros: torch.Tensor, bits: int, v1: bool) -> torch.Tensor:
    """``qzeros`` from zero points ``[G, N]``; the inverse of :func:`unpack_gptq_qzeros`."""
    if not v1:
        return pack_last(zeros, bits)
    if bits in _V1_WORD_OFFSET:
        words = torch.bitwise_and(pack_last(zeros, bits).to(torch.int64) - _V1_WORD_OFFSET[bits], _U32)
        return to_int32(words)
    return pack_last(torch.bitwise_and(zeros.to(torch.int16) - 1, (1 << bits) - 1), bits)


def gptq_trivial_g_idx(g_idx: torch.Tensor, group_size: int) -> bool:
    """Whether ``g_idx[k] == k // group_size`` for every k (no act-order permutation)."""
    k = g_idx.shape[0]
    size = k if group_size == -1 else group_size
    expected = torch.arange(k, device=g_idx.device, dtype=torch.int64) // size
    return bool(torch.equal(g_idx.to(torch.int64), expected))


def dequantize_gptq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor, *,
    bits: int, v1: bool, dtype: torch.dtype = torch.float32, group_size: int | None = None,
) -> torch.Tensor:
    """The float weight ``[N, K]`` (the layout of ``nn.Linear.weight``) of one GPTQ layer.

    Computed exactly in float32, then cast to ``dtype``. Passing ``group_size`` lets a layer
    whose ``g_idx`` is the trivial ``k // group_size`` use a broadcast instead of a gather; the
    result is the same either way.
    """
    return dequantize_gptq_kn(qweight, qzeros, scales, g_idx, bits=bits, v1=v1, group_size=group_size).t().to(dtype)


def dequantize_gptq_kn(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor, *,
    bits: int, v1: bool, group_size: int | None,
) -> torch.Tensor:
    """The float32 weight in checkpoint orientation ``[K, N]``; no Python loop over groups."""
    k, n = g_idx.shape[0], scales.shape[1]
    zeros = unpack_gptq_qzeros(qzeros, bits, v1)[:, :n].to(torch.float32)
    scale = scales.to(torch.float32)
    if bits in (2, 4, 8):
        # Unpack straight into [K, N] order: row r*pf + j of the codes is field j of word row r.
        shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=qweight.device).view(1, -1, 1)
        codes = torch.bitwise_and(torch.bitwise_right_shift(qweight.unsqueeze(1), shifts), (1 << bits) - 1)
        weight = codes.to(torch.float32).reshape(-1, n)[:k]
    else:
        weight = unpack_gptq_qweight(qweight, bits)[:k].to(torch.float32).contiguous()
    size = k if group_size == -1 else group_size
    if size is not None and k % size == 0 and gptq_trivial_g_idx(g_idx, size):
        grouped = weight.view(k // size, size, n)
        grouped.sub_(zeros.unsqueeze(1)).mul_(scale.unsqueeze(1))
        return weight
    index = g_idx.to(torch.int64)
    return weight.sub_(zeros[index]).mul_(scale[index])


def gptq_v1_zeros(config: AbstractGptq) -> bool:
    """Whether the config's checkpoint stores v1 (minus-one) zero points: ``Gptq`` yes, ``GptqV2`` no."""
    return isinstance(config, Gptq)
