"""A fused FP8 (E4M3) matmul in C, compiled at first use: reads the weight bytes once, computes in float32.

The portable module dequantizes the whole weight to float32 at every call (four bytes written and
read again per stored byte) before ``F.linear``. This kernel reads each e4m3 byte once per decode
step and accumulates ``value(w) * x`` in float32 per block of columns, then multiplies by the
block's scale::

    y[m, n] = sum_j s[n // bn, j] * sum_{k in block j} value(w[n, k]) * x[m, k]

The scale multiplies each block's sum rather than each weight, so the result differs from ``F.linear``
of the layout's float32 weight by float32 rounding only (the prefill path's weights are the
layout's, bit for bit). Per-tensor and per-row scales are blocks too (``bn = N, bk = K`` and ``bn = 1,
bk = K``). Above ``FUSED_ROWS`` input rows (prefill), blocks of output rows are dequantized into a
cache-sized float32 buffer and multiplied by torch's GEMM.

Built like the int4 kernel (``kernels/_native.py``): ``fp8_native.c`` beside this module, the
system C compiler, one build per SIMD level (``_native.isa_flags``: AVX-512 converts 16 bytes a
step, AVX2 + F16C + FMA 8; without a level, a portable build with the scalar table path), a
per-user cache, output rows split over torch's intra-op threads with OpenMP (``_native.threads()``,
read inside the op; bit-identical for any count), ``ctypes`` inside the op ``quantdispatch::fp8_matmul``
(``FP8_MATMUL``) with a fake implementation, so ``torch.compile`` sees one node. ``native_fp8()`` is
``None`` without a compiler, off Linux, or when ``QUANTDISPATCH_NATIVE=0``; the loader then keeps
the portable module.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Final, NamedTuple

import torch
from torch import nn

from ._native import Isa, custom_op, fused_or_blocked, threads
from ._simd import level_library, simd_level

__all__ = ["Fp8Blocks", "native_fp8", "native_fp8_at", "fp8_matmul", "Fp8Linear", "FUSED_ROWS", "FP8_MATMUL", "E4M3_VALUES"]

_FUNCTIONS: Final = {"fp8_matvec": (5, 7), "fp8_dequant": (4, 7)}
FUSED_ROWS: Final = 8
"""Up to this many input rows the fused loop reads the bytes once for all of them (decode)."""
_BLOCK_WEIGHTS: Final = 1 << 20
"""Weights dequantized at a time on the prefill path (4 MiB of float32)."""

E4M3_VALUES: Final = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
"""The float32 value of each e4m3 byte (the scalar path's table)."""


class Fp8Blocks(NamedTuple):
    """The kernel's input: e4m3 bytes ``[N, K]`` (uint8), float32 scales ``[ceil(N/rows), ceil(K/cols)]``
    and the block; a per-tensor or per-row scale is one block of the tensor or of a row."""

    weight: torch.Tensor
    scale: torch.Tensor
    rows: int
    cols: int
    round_bf16: bool = False
    """Each weight is ``value * scale`` rounded to bfloat16 (compressed-tensors' weights with
    bfloat16 scales), rather than exact in float32."""


@functools.cache
def native_fp8_at(level: Isa | None) -> ctypes.CDLL | None:
    """The kernel built for ``level`` (``None``: the table path), once per process and cached on disk
    per level, or ``None`` where it cannot be built."""
    return level_library(__package__ or "", "fp8_native", _FUNCTIONS, level)


def native_fp8() -> ctypes.CDLL | None:
    """The kernel for this process's SIMD level (``_simd.simd_level``), or ``None`` where it cannot be built."""
    return native_fp8_at(simd_level())


def _check(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, rows: int, cols: int) -> None:
    """Refuse what the C loops would read out of bounds (they index flat buffers by M, N, K and the block)."""
    n, k = weight.shape if weight.dim() == 2 else (0, 0)
    if (x.dim() != 2 or x.shape[1] != k or weight.dtype is not torch.uint8 or scale.dtype is not torch.float32 or rows <= 0 or cols <= 0
            or k <= 0 or scale.shape != (-(-n // rows), -(-k // cols)) or not x.dtype.is_floating_point):
        raise ValueError(f"fp8_matmul needs float x [M, K], uint8 weight [N, K] and float32 scale [ceil(N/rows), ceil(K/cols)]; got x "
                         f"{x.dtype} {list(x.shape)}, weight {weight.dtype} {list(weight.shape)}, scale {scale.dtype} {list(scale.shape)}, "
                         f"block {rows}x{cols}")


def _lib() -> ctypes.CDLL:
    lib = native_fp8()
    if lib is None:
        raise RuntimeError("the native FP8 kernel is not available here; check native_fp8() first")
    return lib


def _fp8_matmul(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, rows: int, cols: int, round_bf16: bool) -> torch.Tensor:
    """``quantdispatch::fp8_matmul``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float dtype (read as float32)."""
    lib = _lib()
    _check(x, weight, scale, rows, cols)
    x = x.to(torch.float32).contiguous()
    weight, scale = weight.contiguous(), scale.contiguous()
    m, k = x.shape
    cast = int(round_bf16)

    def fused(y: torch.Tensor) -> None:
        lib.fp8_matvec(weight.data_ptr(), scale.data_ptr(), E4M3_VALUES.data_ptr(), x.data_ptr(), y.data_ptr(), m, y.shape[1], k, rows, cols,
                       cast, threads())

    def dequant(block: torch.Tensor, n0: int, n1: int) -> None:
        lib.fp8_dequant(weight.data_ptr(), scale.data_ptr(), E4M3_VALUES.data_ptr(), block.data_ptr(), n0, n1, k, rows, cols, cast, threads())

    return fused_or_blocked(x, weight.shape[0], FUSED_ROWS, _BLOCK_WEIGHTS, fused, dequant)


def _fp8_matmul_fake(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, rows: int, cols: int, round_bf16: bool) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=torch.float32)


FP8_MATMUL: Final = custom_op("fp8_matmul", "(Tensor x, Tensor weight, Tensor scale, int rows, int cols, bool round_bf16) -> Tensor",
                              _fp8_matmul, _fp8_matmul_fake)
"""``torch.ops.quantdispatch.fp8_matmul(x, weight, scale, rows, cols, round_bf16)``: the kernel as one op."""


def fp8_matmul(x: torch.Tensor, weights: Fp8Blocks) -> torch.Tensor:
    """``x @ W.T`` in float32 for ``x`` ``[M, K]``. Needs ``native_fp8()``.

    Raises:
        ValueError: the shapes or dtypes do not agree.
    """
    out: torch.Tensor = FP8_MATMUL(x, weights.weight, weights.scale, weights.rows, weights.cols, weights.round_bf16)
    return out


class Fp8Linear(nn.Module):
    """A linear layer on the native FP8 kernel: the loaded layer's e4m3 bytes (the same storage,
    viewed as uint8), its scales in float32, its bias. Activations of any float dtype are read as
    float32; the output is cast back."""

    weight: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weights: Fp8Blocks, bias: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.out_features, self.in_features = weights.weight.shape
        self.rows, self.cols, self.round_bf16 = weights.rows, weights.cols, weights.round_bf16
        self.register_buffer("weight", weights.weight)
        self.register_buffer("scale", weights.scale)
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` through the native kernel."""
        out = FP8_MATMUL(x.reshape(-1, self.in_features), self.weight, self.scale, self.rows, self.cols, self.round_bf16)
        if x.dtype is not torch.float32:
            out = out.to(x.dtype)
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, block={self.rows}x{self.cols}, "
                f"round_bf16={self.round_bf16}, bias={self.bias is not None}")
