"""quantdispatch's native NVFP4 kernel: the E2M1 codes and block scales used in place, in C.

The loaded bytes stay as stored (``[N, K/2]``, low nibble first); the per-block scale becomes one
float32 per 16 inputs at load (the E4M3 scale with the per-tensor scale folded in, exactly as the
layout's own dequantization computes it), so memory stays near the checkpoint's size. Up to
``FUSED_ROWS`` input rows (decode) the C loop reads each row of codes once, expands the codes
through a 16-entry table held in a vector register (AVX-512 ``permutexvar``, AVX2 ``permutevar8x32``
with the sign bit set apart; a portable loop elsewhere), multiplies each by its block's scale and
sums in float32, output rows split over torch's intra-op threads (OpenMP, bit-identical for any
count); more rows (prefill) dequantize blocks of output rows
to float32 in cache (exactly the portable module's weights) and multiply with torch's GEMM.

The op is ``torch.ops.quantdispatch.nvfp4_matmul`` with a fake implementation, so ``torch.compile``
sees one node. Where no C compiler is found (or ``QUANTDISPATCH_NATIVE=0``) ``prepare_fp4`` keeps
the portable module.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Final

import torch
from torch import nn

from ..layouts.base import AbstractLayout
from ._native import Isa, custom_op, threads
from ._simd import level_library, simd_level

__all__ = ["native_fp4", "native_fp4_at", "nvfp4_matmul", "Fp4Linear", "prepare_fp4", "NVFP4_MATMUL", "FUSED_ROWS"]

_FUNCTIONS: Final = {"nvfp4_matvec": (4, 4), "nvfp4_dequant": (3, 4)}
FUSED_ROWS: Final = 8
"""Input rows up to which the fused loop runs (``NVFP4_ROWS`` in the C file)."""
_BLOCK: Final = 16
_BLOCK_WEIGHTS: Final = 1 << 20
"""Weights dequantized per block on the prefill path (4 MiB of float32)."""


@functools.cache
def native_fp4_at(level: Isa | None) -> ctypes.CDLL | None:
    """The kernel built for ``level`` (``None``: the portable C loops), once per process and cached on
    disk per level, or ``None`` where it cannot be built."""
    return level_library(__package__ or "", "fp4_native", _FUNCTIONS, level)


def native_fp4() -> ctypes.CDLL | None:
    """The kernel for this process's SIMD level (``_simd.simd_level``), or ``None`` where it cannot be built."""
    return native_fp4_at(simd_level())


def _check(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> None:
    """Refuse what the C loops would read out of bounds (they index flat buffers by ``M, N, K``)."""
    k, n = x.shape[-1], packed.shape[0]
    if (x.dim() != 2 or k % _BLOCK or packed.dtype is not torch.uint8 or packed.numel() != n * (k // 2)
            or scale.dtype is not torch.float32 or scale.numel() != n * (k // _BLOCK) or not x.dtype.is_floating_point):
        raise ValueError(f"nvfp4_matmul needs float x [M, K], uint8 packed [N, K/2] and float32 scale [N, K/16], K a multiple of "
                         f"{_BLOCK}; got x {x.dtype} {list(x.shape)}, packed {packed.dtype} {list(packed.shape)}, scale "
                         f"{scale.dtype} {list(scale.shape)}")


def _nvfp4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``quantdispatch::nvfp4_matmul``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float dtype."""
    lib = native_fp4()
    if lib is None:
        raise RuntimeError("the native FP4 kernel is not available here; check native_fp4() first")
    _check(x, packed, scale)
    x = x.to(torch.float32).contiguous()
    packed, scale = packed.contiguous(), scale.contiguous()
    m, k = x.shape
    n = packed.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    if m <= FUSED_ROWS:
        lib.nvfp4_matvec(packed.data_ptr(), scale.data_ptr(), x.data_ptr(), y.data_ptr(), m, n, k, threads())
        return y
    rows = max(1, _BLOCK_WEIGHTS // k)
    block = torch.empty(rows, k, dtype=torch.float32)
    for n0 in range(0, n, rows):
        n1 = min(n, n0 + rows)
        lib.nvfp4_dequant(packed.data_ptr(), scale.data_ptr(), block.data_ptr(), n0, n1, k, threads())
        torch.mm(x, block[:n1 - n0].t(), out=y[:, n0:n1])
    return y


def _nvfp4_matmul_fake(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], packed.shape[0]), dtype=torch.float32)


NVFP4_MATMUL: Final = custom_op("nvfp4_matmul", "(Tensor x, Tensor packed, Tensor scale) -> Tensor", _nvfp4_matmul, _nvfp4_matmul_fake)
"""``torch.ops.quantdispatch.nvfp4_matmul(x, packed, scale)``: the kernel as one op."""


def nvfp4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` in float32, ``W[n, k] = e2m1(code) * scale[n, k // 16]``. Needs ``native_fp4()``.

    Raises:
        ValueError: the shapes or dtypes do not agree.
    """
    out: torch.Tensor = NVFP4_MATMUL(x, packed, scale)
    return out


class Fp4Linear(nn.Module):
    """A linear layer on the native FP4 kernel: ``packed`` (uint8 ``[N, K/2]``, as stored),
    ``scale`` (float32 ``[N, K/16]``) and ``bias`` (in the model's dtype)."""

    packed: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, packed: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.out_features, self.in_features = packed.shape[0], packed.shape[1] * 2
        self.register_buffer("packed", packed.contiguous())
        self.register_buffer("scale", scale.to(torch.float32).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` through the native kernel (float32 sums, the output cast back)."""
        out = NVFP4_MATMUL(x.reshape(-1, self.in_features), self.packed, self.scale)
        if x.dtype is not torch.float32:
            out = out.to(x.dtype)
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def prepare_fp4(module: Any, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """An ``Fp4Linear`` for one loaded portable layer (its ``"nvfp4"`` form), or ``None`` to keep
    the portable module where the kernel cannot be built."""
    if native_fp4() is None:
        return None
    packed, scale = type(layout).forms["nvfp4"].resolve()(module)
    bias: object = getattr(module, "bias", None)
    return Fp4Linear(packed, scale, bias if isinstance(bias, torch.Tensor) else None, dtype)
