"""AWQ weights in the three packings AutoAWQ (and GPTQModel's ports of it) write, in torch.

For in_features K, out_features N, group size S, G = K // S groups, 4-bit codes q and zero points z:

GEMM (``version: "gemm"``)::

    qweight  int32 [K, N // 8]  eight codes of one input row, output columns 8c … 8c+7 stored in
                                field order 0, 2, 4, 6, 1, 3, 5, 7 (field i holds column 8c + ORDER[i])
    qzeros   int32 [G, N // 8]  the same interleave
    scales   fp16  [G, N]
    W[n, k] = (q - z) * s       (AutoAWQ's and GPTQModel's ``dequantize_gemm``)

GEMV (``version: "gemv"``)::

    qweight  int32 [N, K // 8]      codes of one output row along the input dimension, natural order
    qzeros   int32 [N, Z]           zero points of one output row along the groups, natural order
    scales   fp16  [N, 8 * Z]       first G columns used, the rest zero padding
    W[n, k] = (q - z) * s

GEMV_FAST (``version: "gemv_fast"``)::

    qweight  int16 [N // 4, K]      4 codes per int16 from 4 interleaved output rows, after a
                                    shuffle of each run of 32 input columns (see _gemv_fast_forward)
    scales   fp16  [8 * Z, N]       first G rows used
    qzeros   fp16  [8 * Z, N]       *scaled* zeros ``fp16(-(s * z))``, first G rows used
    W[n, k] = q * s + qzeros        (the fused multiply-add the CUDA kernel does)

with Z = ``awq_zeros_width(K, S)`` (AutoAWQ's ``calculate_zeros_width``). All of it follows AutoAWQ
0.2.9 (``awq/modules/linear/gemm.py``, ``gemv.py``, ``gemv_fast.py``, ``awq/utils/packing_utils.py``).

The dequantized weight is computed without rounding error (in float32; GEMV_FAST's multiply-add
with float32 scales in float64) and rounded once to the requested dtype, so an fp16 result has
the bits of the tools' fp16 arithmetic.
"""

from __future__ import annotations

import functools
from typing import Final

import torch

from ..configs.awq import AbstractAwq
from ..layouts.awq import AwqPacked, awq_layout
from ..layouts.awq import awq_zeros_width as _zeros_width
from ..layouts.base import Unpackable
from ._bits import pack_last, unpack_last
from ._common import TensorSpec, specs_of

__all__ = [
    "AWQ_ORDER", "awq_zeros_width", "awq_expected_tensors",
    "unpack_awq_gemm", "pack_awq_gemm", "dequantize_awq_gemm",
    "unpack_awq_gemv", "pack_awq_gemv", "dequantize_awq_gemv",
    "unpack_awq_gemv_fast", "pack_awq_gemv_fast", "dequantize_awq_gemv_fast",
]

AWQ_ORDER: Final = (0, 2, 4, 6, 1, 3, 5, 7)
"""Field i of a GEMM word holds output column ``8c + AWQ_ORDER[i]``."""
_AWQ_REVERSE: Final = (0, 4, 1, 5, 2, 6, 3, 7)
"""Column j of a run of eight lives in field ``_AWQ_REVERSE[j]``."""
_BITS: Final = 4
_INTERLEAVE: Final = 4
_KSTRIDE: Final = 64


def awq_zeros_width(in_features: int, group_size: int) -> int:
    """AutoAWQ's ``calculate_zeros_width`` (``layouts.awq.awq_zeros_width``), raising on a group size GEMV cannot take.

    >>> awq_zeros_width(4096, 128), awq_zeros_width(256, 64)
    (4, 2)
    """
    width = _zeros_width(in_features, group_size)
    if isinstance(width, Unpackable):
        raise ValueError(width.message)
    return width


def awq_expected_tensors(config: AbstractAwq | AwqPacked, in_features: int, out_features: int, bias: bool) -> dict[str, TensorSpec]:
    """The tensors one AWQ linear layer's checkpoint holds, by name suffix (GEMM, GEMV, GEMV_FAST; the layout's declaration).

    Raises:
        ValueError: Another packing (Marlin, llm-awq), or dimensions the packing cannot hold.

    >>> from quantdispatch.configs import AwqGemm
    >>> awq_expected_tensors(AwqGemm(group_size=128), 256, 64, bias=False)["qzeros"]
    TensorSpec(shape=(2, 8), dtype=torch.int32, accepted=())
    """
    layout = config if isinstance(config, AwqPacked) else awq_layout(config)
    if layout is None:
        raise ValueError(f"{type(config).__name__} is not a packing the portable AWQ kernels read")
    return specs_of(layout.tensors(in_features, out_features, bias))


# --- GEMM -------------------------------------------------------------------------------------


def unpack_awq_gemm(packed: torch.Tensor) -> torch.Tensor:
    """Codes (uint8, ``[rows, N]``) from a GEMM ``qweight`` or ``qzeros`` (int32, ``[rows, N // 8]``).

    Column ``8c + j`` sits in field ``_AWQ_REVERSE[j]``: shifting by those fields' offsets yields the
    columns in their natural order, without a gather.
    """
    rows, words = packed.shape
    shifts = torch.tensor([4 * f for f in _AWQ_REVERSE], dtype=torch.int32, device=packed.device)
    codes = torch.bitwise_right_shift(packed.unsqueeze(-1), shifts).bitwise_and_(15)
    return codes.to(torch.uint8).view(rows, words * 8)


def pack_awq_gemm(codes: torch.Tensor) -> torch.Tensor:
    """GEMM ``qweight``/``qzeros`` from codes ``[rows, N]``; the inverse of :func:`unpack_awq_gemm`."""
    rows, n = codes.shape
    return pack_last(codes.reshape(rows, n // 8, 8)[:, :, list(AWQ_ORDER)].reshape(rows, n), _BITS)


def dequantize_awq_gemm(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, *, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The float weight ``[N, K]`` of a GEMM layer; the group size is ``K // scales.shape[0]``."""
    k, n = qweight.shape[0], scales.shape[1]
    groups = scales.shape[0]
    codes = unpack_awq_gemm(qweight).to(torch.float32).view(groups, k // groups, n)
    zeros = unpack_awq_gemm(qzeros)[:, :n].to(torch.float32)
    codes.sub_(zeros.unsqueeze(1)).mul_(scales.to(torch.float32).unsqueeze(1))
    return codes.view(k, n).t().to(dtype, memory_format=torch.contiguous_format).contiguous()


# --- GEMV -------------------------------------------------------------------------------------


def unpack_awq_gemv(qweight: torch.Tensor, qzeros: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[N, K]`` and zero points ``[N, groups]`` (uint8) of a GEMV layer."""
    return unpack_last(qweight, _BITS), unpack_last(qzeros, _BITS)[:, :groups]


def pack_awq_gemv(codes: torch.Tensor, zeros: torch.Tensor, in_features: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GEMV ``qweight`` ``[N, K // 8]`` and padded ``qzeros`` ``[N, Z]`` from codes ``[N, K]`` and zeros ``[N, G]``."""
    n, groups = zeros.shape
    padded = torch.zeros((n, awq_zeros_width(in_features, group_size) * 8), dtype=zeros.dtype, device=zeros.device)
    padded[:, :groups] = zeros
    return pack_last(codes, _BITS), pack_last(padded, _BITS)


def dequantize_awq_gemv(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, *, group_size: int, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The float weight ``[N, K]`` of a GEMV layer (``group_size`` -1 means K)."""
    n, k = qweight.shape[0], qweight.shape[1] * 8
    size = k if group_size == -1 else group_size
    groups = k // size
    codes, zeros = unpack_awq_gemv(qweight, qzeros, groups)
    weight = codes.to(torch.float32).view(n, groups, size)
    weight.sub_(zeros.to(torch.float32).unsqueeze(2)).mul_(scales[:, :groups].to(torch.float32).unsqueeze(2))
    return weight.view(n, k).to(dtype)


# --- GEMV_FAST --------------------------------------------------------------------------------


# GEMV_FAST's packing (AutoAWQ's ``pack_intweight``, interleave 4, kstride 64) is three reshape +
# transpose steps from codes [N, K] to nibbles [N // 4, K // 64, 64, 4]; unpacking undoes them with
# one regrouping of whole words and one column gather.


def _gemv_fast_forward(codes: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, K]`` to the nibble order ``[N // 4, K // 64, 64, 4]``."""
    n, k = codes.shape
    # runs of 32 columns: [0, 1, 8, 9, 16, 17, 24, 25, 2, 3, 10, 11, …]
    x = codes.reshape(n, k // 32, 4, 4, 2).permute(0, 1, 3, 2, 4).reshape(n, k // 32, 32)
    # then each run of 8 in the order 0, 2, 4, 6, 1, 3, 5, 7
    x = x.reshape(n, k // 32, 4, 4, 2).permute(0, 1, 2, 4, 3).reshape(n, k)
    # four output rows interleaved over each run of 64 columns
    x = x.reshape(n // _INTERLEAVE, _INTERLEAVE, k // _KSTRIDE, _KSTRIDE).permute(0, 2, 1, 3)
    return x.reshape(n // _INTERLEAVE, k // _KSTRIDE, _KSTRIDE, _INTERLEAVE)


@functools.lru_cache(maxsize=16)
def _gemv_fast_columns(k: int) -> torch.Tensor:
    """For each input column, its position in a row as :func:`_gemv_fast_nibbles` reads it.

    Within each run of 64 words of a packed row ``a``, words ``16 i … 16 i + 15`` hold output row
    ``4 a + i``, four nibbles each; reading a row's words, then taking nibble j of every word, gives
    its codes with the input columns shuffled by a permutation that is the same for every row.
    Found by packing column numbers, so it is the packing's own order by construction.
    """
    columns = torch.arange(k, dtype=torch.int64).expand(_INTERLEAVE, k)
    nibbles = _gemv_fast_forward(columns).reshape(1, k // _KSTRIDE, _INTERLEAVE, _KSTRIDE // _INTERLEAVE, _INTERLEAVE)
    by_word = nibbles.permute(0, 2, 1, 3, 4).reshape(_INTERLEAVE, k // _INTERLEAVE, _INTERLEAVE)
    if not bool((by_word == by_word[0]).all()):
        raise RuntimeError("GEMV_FAST: the column order differs between interleaved rows")
    return torch.argsort(by_word[0].t().reshape(k))


def _gemv_fast_nibbles(qweight: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, K]`` (int32) in the shuffled column order of :func:`_gemv_fast_columns`: a row's words, nibble-major."""
    rows, k = qweight.shape
    words = qweight.view(rows, k // _KSTRIDE, _INTERLEAVE, _KSTRIDE // _INTERLEAVE).permute(0, 2, 1, 3)
    words = words.reshape(rows * _INTERLEAVE, 1, k // _INTERLEAVE).to(torch.int32)
    shifts = torch.arange(0, 16, _BITS, dtype=torch.int32, device=qweight.device).view(1, -1, 1)
    return torch.bitwise_right_shift(words, shifts).bitwise_and_(15).view(rows * _INTERLEAVE, k)


def unpack_awq_gemv_fast(qweight: torch.Tensor) -> torch.Tensor:
    """Codes (uint8, ``[N, K]``) of a GEMV_FAST ``qweight`` (int16, ``[N // 4, K]``).

    Regroups the words of each packed row by output row (runs of 16 words), splits the nibbles,
    and puts the columns back in order with one gather.
    """
    columns = _gemv_fast_columns(qweight.shape[1]).to(qweight.device)
    return _gemv_fast_nibbles(qweight).to(torch.uint8).index_select(1, columns)


def pack_awq_gemv_fast(codes: torch.Tensor) -> torch.Tensor:
    """GEMV_FAST ``qweight`` (int16, ``[N // 4, K]``) from codes ``[N, K]``; the inverse of :func:`unpack_awq_gemv_fast`."""
    n, k = codes.shape
    if n % _INTERLEAVE or k % _KSTRIDE:
        raise ValueError(f"GEMV_FAST needs out_features % {_INTERLEAVE} == 0 and in_features % {_KSTRIDE} == 0, got {n}, {k}")
    nibbles = _gemv_fast_forward(codes.to(torch.int32))
    shifts = torch.arange(0, 16, _BITS, dtype=torch.int32, device=codes.device)
    words = torch.bitwise_left_shift(nibbles, shifts).sum(dim=-1, dtype=torch.int32)
    # numpy's astype("int16") wraps; so does this.
    return torch.where(words >= 1 << 15, words - (1 << 16), words).to(torch.int16).reshape(n // _INTERLEAVE, k)


def dequantize_awq_gemv_fast(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, *, group_size: int, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The float weight ``[N, K]`` of a GEMV_FAST layer: ``q * s + qzeros``, rounded once to ``dtype``."""
    # q * s + z has at most 16 significant bits when s and z are fp16 or bf16 (z is the rounded
    # -s * zero), so float32 holds it exactly; float32 inputs need float64. One rounding follows.
    exact = torch.float32 if scales.dtype in (torch.float16, torch.bfloat16) and qzeros.dtype == scales.dtype else torch.float64
    columns = _gemv_fast_columns(qweight.shape[1]).to(qweight.device)
    codes = _gemv_fast_nibbles(qweight).to(exact).index_select(1, columns)  # a float gather is the fast one
    n, k = codes.shape
    size = k if group_size == -1 else group_size
    groups = k // size
    weight = codes.view(n, groups, size)
    torch.addcmul(qzeros[:groups].t().to(exact).unsqueeze(2), weight, scales[:groups].t().to(exact).unsqueeze(2), out=weight)
    return weight.view(n, k).to(dtype)
