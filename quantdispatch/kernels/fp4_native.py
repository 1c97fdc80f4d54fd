"""quantdispatch's native NVFP4 kernel: the E2M1 codes and block scales used in place, in C.

The loaded bytes stay as stored: the codes (``[N, K/2]``, low nibble first) and the E4M3 block
scales (``[N, K/16]``, one byte per 16 inputs); the per-tensor scale is one float32, multiplied in
(ModelOpt) or divided by (compressed-tensors) through a 256-entry table the C code makes once per
call, exactly as the layout's own ``block_scales`` computes it. Nothing is expanded at load, so
memory stays at the checkpoint's size (a float32 copy of the block scales would add half the codes'
bytes). Up to ``FUSED_ROWS`` input rows (decode) the C loop reads each row of codes once, expands the
codes through a 16-entry table held in a vector register (AVX-512 ``permutexvar``, AVX2
``permutevar8x32`` with the sign bit set apart; a portable loop elsewhere), multiplies each by its
block's scale and sums in float32, output rows split over torch's intra-op threads (OpenMP,
bit-identical for any count); more rows (prefill) dequantize blocks of output rows
to float32 in cache (exactly the portable module's weights) and multiply with torch's GEMM.

The op is ``torch.ops.quantdispatch.nvfp4_matmul`` with a fake implementation, so ``torch.compile``
sees one node. Where no C compiler is found (or ``QUANTDISPATCH_NATIVE=0``) ``prepare_fp4`` keeps
the portable module.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Final, NamedTuple

import torch
from torch import nn

from ..layouts.base import AbstractLayout
from ._native import Isa, custom_op, fused_or_blocked, threads
from ._simd import level_library, simd_level

__all__ = ["Nvfp4Blocks", "native_fp4", "native_fp4_at", "nvfp4_matmul", "Fp4Linear", "prepare_fp4", "NVFP4_MATMUL", "FUSED_ROWS"]

_FUNCTIONS: Final = {"nvfp4_matvec": (6, 5), "nvfp4_dequant": (5, 5), "mxfp4_matvec": (4, 3), "mxfp4_dequant": (3, 3)}
"""The C entry points (NVFP4's, and MXFP4's for ``kernels.mxfp4``): pointer and int64 argument counts."""
FUSED_ROWS: Final = 8
"""Input rows up to which the fused loop runs (``NVFP4_ROWS`` in the C file)."""
_BLOCK: Final = 16
E4M3_TABLE: Final = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
"""The float32 value of each E4M3 byte, as torch converts it (the C loop's table for the block scales)."""
_BLOCK_WEIGHTS: Final = 1 << 20
"""Weights dequantized per block on the prefill path (4 MiB of float32)."""



class Nvfp4Blocks(NamedTuple):
    """The kernel's input, as stored: codes uint8 ``[N, K/2]``, E4M3 block scales as uint8 ``[N, K/16]``,
    the float32 per-tensor scale ``[1]``, and whether block scales are divided by it (compressed-tensors'
    global scale) or multiplied by it (ModelOpt's ``weight_scale_2``)."""

    packed: torch.Tensor
    scale: torch.Tensor
    tensor_scale: torch.Tensor
    divide: bool


@functools.cache
def native_fp4_at(level: Isa | None) -> ctypes.CDLL | None:
    """The kernel built for ``level`` (``None``: the portable C loops), once per process and cached on
    disk per level, or ``None`` where it cannot be built."""
    return level_library(__package__ or "", "fp4_native", _FUNCTIONS, level)


def native_fp4() -> ctypes.CDLL | None:
    """The kernel for this process's SIMD level (``_simd.simd_level``), or ``None`` where it cannot be built."""
    return native_fp4_at(simd_level())


def _check(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, tensor_scale: torch.Tensor) -> None:
    """Refuse what the C loops would read out of bounds (they index flat buffers by ``M, N, K``)."""
    k, n = x.shape[-1], packed.shape[0]
    if (x.dim() != 2 or k % _BLOCK or packed.dtype is not torch.uint8 or packed.numel() != n * (k // 2)
            or scale.dtype is not torch.uint8 or scale.numel() != n * (k // _BLOCK) or not x.dtype.is_floating_point
            or tensor_scale.dtype is not torch.float32 or tensor_scale.numel() != 1):
        raise ValueError(f"nvfp4_matmul needs float x [M, K], uint8 packed [N, K/2], E4M3 block scales as uint8 [N, K/16] and a float32 "
                         f"tensor scale [1], K a multiple of {_BLOCK}; got x {x.dtype} {list(x.shape)}, packed {packed.dtype} "
                         f"{list(packed.shape)}, scale {scale.dtype} {list(scale.shape)}, tensor scale {tensor_scale.dtype} "
                         f"{list(tensor_scale.shape)}")


def _nvfp4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, tensor_scale: torch.Tensor, divide: bool) -> torch.Tensor:
    """``quantdispatch::nvfp4_matmul``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float dtype."""
    lib = native_fp4()
    if lib is None:
        raise RuntimeError("the native FP4 kernel is not available here; check native_fp4() first")
    _check(x, packed, scale, tensor_scale)
    x = x.to(torch.float32).contiguous()
    packed, scale, g = packed.contiguous(), scale.contiguous(), tensor_scale.contiguous()
    table = E4M3_TABLE.data_ptr()
    m, k = x.shape

    def fused(y: torch.Tensor) -> None:
        lib.nvfp4_matvec(packed.data_ptr(), scale.data_ptr(), table, g.data_ptr(), x.data_ptr(), y.data_ptr(), int(divide), m, y.shape[1], k,
                         threads())

    def dequant(block: torch.Tensor, n0: int, n1: int) -> None:
        lib.nvfp4_dequant(packed.data_ptr(), scale.data_ptr(), table, g.data_ptr(), block.data_ptr(), int(divide), n0, n1, k, threads())

    return fused_or_blocked(x, packed.shape[0], FUSED_ROWS, _BLOCK_WEIGHTS, fused, dequant)


def _nvfp4_matmul_fake(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, tensor_scale: torch.Tensor, divide: bool) -> torch.Tensor:
    return x.new_empty((x.shape[0], packed.shape[0]), dtype=torch.float32)


NVFP4_MATMUL: Final = custom_op("nvfp4_matmul", "(Tensor x, Tensor packed, Tensor scale, Tensor tensor_scale, bool divide) -> Tensor",
                                _nvfp4_matmul, _nvfp4_matmul_fake)
"""``torch.ops.quantdispatch.nvfp4_matmul(x, packed, scale, tensor_scale, divide)``: the kernel as one op."""


def nvfp4_matmul(x: torch.Tensor, weights: Nvfp4Blocks) -> torch.Tensor:
    """``x @ W.T`` in float32, ``W[n, k] = e2m1(code) * scale[n, k // 16]`` with each block's scale
    ``e4m3 / tensor_scale`` (``divide``) or ``e4m3 * tensor_scale``. Needs ``native_fp4()``.

    Raises:
        ValueError: the shapes or dtypes do not agree.
    """
    out: torch.Tensor = NVFP4_MATMUL(x, weights.packed, weights.scale, weights.tensor_scale, weights.divide)
    return out


class Fp4Linear(nn.Module):
    """A linear layer on the native FP4 kernel: the stored ``packed`` codes (uint8 ``[N, K/2]``) and
    E4M3 block ``scale`` bytes (uint8 ``[N, K/16]``), the float32 ``tensor_scale`` and ``bias`` (in
    the model's dtype)."""

    packed: torch.Tensor
    scale: torch.Tensor
    tensor_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weights: Nvfp4Blocks, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.out_features, self.in_features = weights.packed.shape[0], weights.packed.shape[1] * 2
        self.divide = weights.divide
        self.register_buffer("packed", weights.packed.contiguous())
        self.register_buffer("scale", weights.scale.contiguous())
        self.register_buffer("tensor_scale", weights.tensor_scale.to(torch.float32).reshape(1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` through the native kernel (float32 sums, the output cast back)."""
        out = NVFP4_MATMUL(x.reshape(-1, self.in_features), self.packed, self.scale, self.tensor_scale, self.divide)
        if x.dtype is not torch.float32:
            out = out.to(x.dtype)
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"tensor_scale={'divides' if self.divide else 'multiplies'}, bias={self.bias is not None}")


def prepare_fp4(module: Any, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """An ``Fp4Linear`` for one loaded portable layer (its ``"nvfp4"`` form), or ``None`` to keep
    the portable module where the kernel cannot be built."""
    if native_fp4() is None:
        return None
    weights: Nvfp4Blocks = type(layout).forms["nvfp4"].resolve()(module)
    bias: object = getattr(module, "bias", None)
    return Fp4Linear(weights, bias if isinstance(bias, torch.Tensor) else None, dtype)
