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

import math
from typing import Final

import torch

from ..configs.gptq import AbstractGptq, Gptq
from ..layouts.gptq import GptqPacked, gptq_groups, gptq_layout
from ._bits import pack_last, to_int32, unpack_last, values_per_block, words_per_block
from ._common import TensorSpec, specs_of

__all__ = [
    "gptq_expected_tensors", "gptq_groups", "unpack_gptq_qweight", "unpack_gptq_qzeros", "pack_gptq_qweight",
    "pack_gptq_qzeros", "gptq_v2_qzeros", "dequantize_gptq", "dequantize_gptq_kn", "gptq_linear", "gptq_trivial_g_idx",
    "gptq_v1_zeros",
]

_V1_WORD_OFFSET: Final = {2: 0x55555555, 4: 0x11111111, 8: 0x01010101}
"""One added to every field of an int32 word, for the widths whose fields never straddle words."""
_U32: Final = (1 << 32) - 1


def gptq_expected_tensors(config: AbstractGptq | GptqPacked, in_features: int, out_features: int, bias: bool) -> dict[str, TensorSpec]:
    """The tensors one GPTQ linear layer's checkpoint holds, by name suffix (the layout's declaration).

    Raises:
        ValueError: The layer's dimensions cannot be packed at this width.

    >>> gptq_expected_tensors(Gptq(bits=4, group_size=128), 256, 64, bias=False)["qweight"]
    TensorSpec(shape=(32, 64), dtype=torch.int32, accepted=())
    """
    layout = config if isinstance(config, GptqPacked) else gptq_layout(config)
    return specs_of(layout.tensors(in_features, out_features, bias))


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


def gptq_v2_qzeros(qzeros: torch.Tensor, bits: int) -> torch.Tensor:
    """v2 ``qzeros`` (zero points as they are) from v1 ones, as GPTQModel's loader converts them
    for its kernels that require v2 (``convert_gptq_v1_to_v2_format_module``): whole-word offsets,
    carries included, for 2/4/8 bits; one added modulo 8 to each field for 3 bits.

    >>> v1 = pack_gptq_qzeros(torch.tensor([[0, 7, 15, 1, 2, 3, 4, 5]]), 4, v1=True)
    >>> unpack_gptq_qzeros(gptq_v2_qzeros(v1, 4), 4, v1=False).tolist()
    [[0, 7, 15, 1, 2, 3, 4, 5]]
    """
    return pack_last(unpack_gptq_qzeros(qzeros, bits, v1=True), bits)


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
    kn = dequantize_gptq_kn(qweight, qzeros, scales, g_idx, bits=bits, v1=v1, group_size=group_size)
    # .to() with an unchanged dtype returns the transposed view as is; F.linear wants [N, K] rows.
    return kn.t().to(dtype, memory_format=torch.contiguous_format).contiguous()


def dequantize_gptq_kn(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor, *,
    bits: int, v1: bool, group_size: int | None,
) -> torch.Tensor:
    """The float32 weight in checkpoint orientation ``[K, N]``; no Python loop over groups."""
    zeros, scale = _group_params(qzeros, scales, bits, v1)
    size = _trivial_size(g_idx, group_size)
    return _rows_kn(qweight, zeros, scale, g_idx, bits, size)


def gptq_linear(
    x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor, *,
    bits: int, v1: bool, group_size: int | None, bias: torch.Tensor | None = None, chunk: int = 256,
    trivial: bool | None = None,
) -> torch.Tensor:
    """``F.linear(x, W, bias)`` for a GPTQ layer without materializing W.

    Dequantizes ``chunk`` input rows at a time into two reused buffers, so the temporaries stay in
    cache (a fresh dense temporary costs more in page faults than the arithmetic), and accumulates
    ``x[:, rows] @ W[rows]``. The float32 result equals ``F.linear`` up to summation order. For
    other input dtypes the weight is rounded to that dtype, the products are accumulated in
    float32 and the result is rounded once, as a bf16/fp16 GEMM with float32 accumulation does.

    ``trivial`` says whether ``g_idx`` is ``k // group_size`` when the caller knows already
    (``None``: checked here, which reads ``g_idx``: a data-dependent branch ``torch.compile``
    cannot trace). ``False`` is always correct (the gather path), only slower.
    """
    k, n = g_idx.shape[0], scales.shape[1]
    zeros, scale = _group_params(qzeros, scales, bits, v1)
    if trivial is None:
        size = _trivial_size(g_idx, group_size)
    else:
        size = (k if group_size == -1 else group_size) if trivial and group_size is not None else None
    rows = x.reshape(-1, k).to(torch.float32)
    out = torch.zeros(rows.shape[0], n, dtype=torch.float32, device=x.device) if bias is None else \
        bias.to(torch.float32).expand(rows.shape[0], n).contiguous()
    # Chunks hold whole words (32 rows) and, for broadcasting, whole groups.
    unit = math.lcm(32, size) if size is not None and size < k else 32
    step = max(unit, chunk // unit * unit)
    words = words_per_block(bits) * step // values_per_block(bits)
    buffers = _Buffers(step, n, x.device)
    for i, k0 in enumerate(range(0, k, step)):
        k1 = min(k, k0 + step)
        weight = _rows_kn(qweight[i * words:(i + 1) * words], zeros, scale, g_idx[k0:k1], bits, size, first_group=k0,
                          buffers=buffers, exact_fma=scales.dtype in (torch.float16, torch.bfloat16))
        if x.dtype != torch.float32:
            weight = weight.to(x.dtype).to(torch.float32)
        out.addmm_(rows[:, k0:k1], weight)
    return out.to(x.dtype).reshape(*x.shape[:-1], n)


class _Buffers:
    """Scratch for one chunk of rows, reused across chunks: int32 codes and float32 weights."""

    def __init__(self, rows: int, n: int, device: torch.device) -> None:
        self.codes = torch.empty(rows * n, dtype=torch.int32, device=device)
        self.weight = torch.empty(rows * n, dtype=torch.float32, device=device)


def _group_params(qzeros: torch.Tensor, scales: torch.Tensor, bits: int, v1: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero points and scales ``[G, N]`` as float32."""
    n = scales.shape[1]
    return unpack_gptq_qzeros(qzeros, bits, v1)[:, :n].to(torch.float32), scales.to(torch.float32)


def _trivial_size(g_idx: torch.Tensor, group_size: int | None) -> int | None:
    """The group size when ``g_idx`` is ``k // group_size`` (so groups are runs of rows), else ``None``."""
    if group_size is None:
        return None
    size = g_idx.shape[0] if group_size == -1 else group_size
    return size if gptq_trivial_g_idx(g_idx, size) else None


def _rows_kn(
    qweight: torch.Tensor, zeros: torch.Tensor, scale: torch.Tensor, g_idx: torch.Tensor, bits: int,
    size: int | None, first_group: int = 0, buffers: _Buffers | None = None, exact_fma: bool = False,
) -> torch.Tensor:
    """Float32 weight rows ``[k, N]`` from the qweight rows that hold them (``g_idx``: their groups).

    ``size`` set means groups are runs of ``size`` rows starting at row ``first_group`` (a multiple
    of ``size``), so scales and zeros broadcast over a view instead of being gathered per row.
    ``exact_fma``: scales are fp16/bf16, so ``q * s - z * s`` is exact and one fused pass suffices.
    """
    k, n = g_idx.shape[0], scale.shape[1]
    if bits in (2, 4, 8):
        # Unpack straight into [K, N] order: row r*pf + j of the codes is field j of word row r.
        shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=qweight.device).view(1, -1, 1)
        shape = (qweight.shape[0], 32 // bits, n)
        if buffers is None:
            codes = torch.bitwise_right_shift(qweight.unsqueeze(1), shifts)
        else:
            codes = torch.bitwise_right_shift(qweight.unsqueeze(1), shifts, out=buffers.codes[:math.prod(shape)].view(shape))
        codes.bitwise_and_((1 << bits) - 1)
        flat = codes.view(-1, n)[:k]
    else:
        flat = unpack_gptq_qweight(qweight, bits)[:k]
    if buffers is None:
        weight = flat.to(torch.float32, memory_format=torch.contiguous_format)
    else:
        weight = buffers.weight[:k * n].view(k, n)
        weight.copy_(flat)
    if size is not None and (k % size == 0 or zeros.shape[0] == 1):
        g0, groups = first_group // size, max(1, k // size)
        grouped, z, s = weight.view(groups, -1, n), zeros[g0:g0 + groups].unsqueeze(1), scale[g0:g0 + groups].unsqueeze(1)
    else:
        index = g_idx.to(torch.int64)
        grouped, z, s = weight, zeros[index], scale[index]
    if exact_fma:
        torch.addcmul(-(z * s), grouped, s, out=grouped)
    else:
        grouped.sub_(z).mul_(s)
    return weight


def gptq_v1_zeros(config: AbstractGptq) -> bool:
    """Whether the config's checkpoint stores v1 (minus-one) zero points: ``Gptq`` yes, ``GptqV2`` no."""
    return isinstance(config, Gptq)
