"""A fused int4 matmul in C (AVX2 + FMA), compiled at first use: reads 4-bit codes once, computes in float32.

torch's ``_weight_int4pack_mm_for_cpu`` is fast only with bfloat16 activations on CPUs with native
bf16 (AVX512-BF16); on an AVX2-only CPU it runs at about the speed of a float32 dense layer, eight
times the bytes it needs to read. This kernel streams the packed codes and per-group float32
``scale``/``offset`` and accumulates in float32::

    W[n, k] = q[n, k] * scale[n, g] + offset[n, g]          g = k // group_size
    y[m, n] = sum_g scale[n, g] * (sum_{k in g} q[n, k] x[m, k]) + offset[n, g] * xsum[m, g]

with ``offset = -z * s`` for GPTQ/AWQ and the stored scaled zero for AWQ GEMV_FAST. Each weight
is exact in float32 (a 4-bit code times an fp16 scale); only summation order differs from
``F.linear`` of the float32 weight, so it is more precise than the bf16 kernel, not less.

Code layout (ggml's Q4_0 nibble order): each run of 32 input columns is 16 bytes, byte j holding
column j in its low nibble and column 16 + j in its high nibble::

    byte:   0        1        …  15
    low:    k=0      k=1      …  k=15
    high:   k=16     k=17     …  k=31

Built like the GGUF native kernels (``kernels/gguf/native.py``): ``int4_native.c`` beside this
module (package data), the system C compiler, ``-O3 -march=native``, a per-user cache keyed on the
source, flags and CPU flags, loaded through ``ctypes`` (which releases the GIL during the call)
inside the op ``quantdispatch::q4_matmul`` (``Q4_MATMUL``), which ``Q4Linear.forward`` calls so
that ``torch.compile`` sees one node. Single-threaded on purpose: an OpenMP build
brings a second OpenMP runtime beside torch's, and on the shared 2-core box the two thread pools
spinning against each other made 2-thread calls 4-20x *slower*; the prefill path's GEMM still
uses torch's threads. ``native_int4()`` is ``None`` without a compiler, off x86-64 Linux, on a CPU
without AVX2 and FMA, or when ``QUANTDISPATCH_NATIVE=0``; callers then use the aten kernel.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from typing import Final

import torch
from torch import nn

from ._native import build_library, cpu_flags, custom_op, read_source, scratch
from .int4 import Int4Weights, int4_unfit, kernel_group

__all__ = ["native_int4", "pack_q4", "q4_matmul", "q4_unfit", "Q4Linear", "NATIVE_UNIT", "FUSED_ROWS", "Q4_MATMUL"]

NATIVE_UNIT: Final = 32
"""Input columns per packed run: ``in_features`` and the group size must be multiples of it."""

_FLAGS: Final = ("-O3", "-march=native", "-mavx2", "-mfma", "-shared", "-fPIC", "-std=c99")


@functools.cache
def native_int4() -> ctypes.CDLL | None:
    """The compiled kernel, built once per process (and cached on disk), or ``None`` where it cannot run."""
    flags = cpu_flags().split()
    if os.environ.get("QUANTDISPATCH_NATIVE") == "0" or not sys.platform.startswith("linux"):
        return None
    if platform.machine() not in ("x86_64", "AMD64") or "avx2" not in flags or "fma" not in flags:
        return None
    found = build_library("int4_native", read_source(__package__ or "", "int4_native.c"), _FLAGS)
    if found is None:
        return None
    return _declare(found)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.q4_matmul.restype = None
    lib.q4_matmul.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 4
    lib.q4_dequant.restype = None
    lib.q4_dequant.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 4
    return lib


def pack_q4(codes: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, K]`` in 0..15 (K a multiple of 32) as the kernel's bytes ``[N, K/2]`` (see the module docstring)."""
    n, k = codes.shape
    runs = codes.to(torch.uint8).reshape(n, k // NATIVE_UNIT, 2, 16)
    return (runs[:, :, 0] | (runs[:, :, 1] << 4)).reshape(n, k // 2).contiguous()


FUSED_ROWS: Final = 8
"""Up to this many input rows the fused kernel reads the codes once for all of them (decode);
above it, blocks of output rows are dequantized to float32 in cache and multiplied by torch's
GEMM (prefill), which reuses each weight across rows far better than the fused loop."""

_BLOCK_WEIGHTS: Final = 1 << 20
"""Weights dequantized per block on the prefill path (4 MiB of float32: stays in L2/L3)."""


def _lib() -> ctypes.CDLL:
    lib = native_int4()
    if lib is None:
        raise RuntimeError("the native int4 kernel is not available here; check native_int4() first")
    return lib


def _check(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> None:
    """Refuse what the C loop would read out of bounds: it indexes flat buffers by ``M, N, K`` and
    the group size, so sizes and dtypes are what matter (cheap: a decode step calls this per layer)."""
    k, n = x.shape[-1], packed.shape[0]
    groups = k // group_size if group_size > 0 else 0
    if (x.dim() != 2 or group_size % NATIVE_UNIT or groups * group_size != k or packed.numel() != n * (k // 2)
            or scale.numel() != n * groups or offset.numel() != n * groups or packed.dtype is not torch.uint8
            or scale.dtype is not torch.float32 or offset.dtype is not torch.float32 or not x.dtype.is_floating_point):
        raise ValueError(f"q4_matmul needs float x [M, K], uint8 packed [N, K/2], float32 scale and offset [N, K/group] with K and "
                         f"the group size positive multiples of {NATIVE_UNIT}; got x {x.dtype} {list(x.shape)}, packed {packed.dtype} "
                         f"{list(packed.shape)}, scale {scale.dtype} {list(scale.shape)}, offset {offset.dtype} {list(offset.shape)}, "
                         f"group_size {group_size}")


def _q4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> torch.Tensor:
    """``quantdispatch::q4_matmul``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float dtype (read as float32)."""
    lib = _lib()
    _check(x, packed, scale, offset, group_size)
    if x.dtype is not torch.float32 or not x.is_contiguous():
        x = x.to(torch.float32).contiguous()
    if not (packed.is_contiguous() and scale.is_contiguous() and offset.is_contiguous()):
        packed, scale, offset = packed.contiguous(), scale.contiguous(), offset.contiguous()
    m, k = x.shape
    n = packed.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    if m <= FUSED_ROWS:
        xsum = x.view(m, k // group_size, group_size).sum(dim=2)
        lib.q4_matmul(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), x.data_ptr(), xsum.data_ptr(), y.data_ptr(),
                      m, n, k, group_size)
        return y
    rows = max(1, _BLOCK_WEIGHTS // k)
    block = scratch(rows, k)
    for n0 in range(0, n, rows):
        n1 = min(n, n0 + rows)
        lib.q4_dequant(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), block.data_ptr(), n0, n1, k, group_size)
        torch.mm(x, block[:n1 - n0].t(), out=y[:, n0:n1])
    return y


def _q4_matmul_fake(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], packed.shape[0]), dtype=torch.float32)


Q4_MATMUL: Final = custom_op("q4_matmul", "(Tensor x, Tensor packed, Tensor scale, Tensor offset, int group_size) -> Tensor",
                             _q4_matmul, _q4_matmul_fake)
"""``torch.ops.quantdispatch.q4_matmul(x, packed, scale, offset, group_size)``: the kernel as one op."""


def q4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> torch.Tensor:
    """``x @ W.T`` in float32 for ``x`` ``[M, K]`` (float32, or another float dtype read as float32),
    ``W = q * scale + offset`` with ``scale``/``offset`` float32 ``[N, G]``. Needs ``native_int4()``.

    Raises:
        ValueError: the shapes or dtypes do not agree.
    """
    out: torch.Tensor = Q4_MATMUL(x, packed, scale, offset, group_size)
    return out


def q4_unfit(in_features: int, out_features: int, group_size: int) -> str | None:
    """Why the native kernel cannot take one layer of this shape (``None``: it can): it needs
    ``in_features`` and the groups in whole runs of 32 columns (any ``out_features``)."""
    reason = int4_unfit(in_features, 16, group_size)  # the group rule is the aten kernel's; N is free here
    return reason


class Q4Linear(nn.Module):
    """A linear layer on the native int4 kernel, built from a loaded portable layer's weights.

    Buffers: ``packed`` (uint8 ``[N, K/2]``, the Q4_0 nibble order above), ``scale`` and
    ``offset`` (float32 ``[N, K/G]``), ``perm`` (int64 ``[K]``, only under act-order), ``bias`` (in
    the model's dtype). Activations of any float dtype are read as float32; the output is cast back.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    perm: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, weights: Int4Weights, bias: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        n, k = weights.codes.shape
        group = kernel_group(weights.group_size, k)
        if group is None:
            msg = f"Q4Linear cannot take this layer: {q4_unfit(k, n, weights.group_size)}; check q4_unfit first"
            raise ValueError(msg)
        self.in_features, self.out_features, self.group = k, n, group
        owner = torch.arange(k // group, dtype=torch.int64) * group // weights.group_size
        scale = weights.scale[owner]
        # The kernel's W = q * scale + offset; Int4Weights holds the aten form (q - 8) * scale + zero.
        offset = weights.zero[owner] - 8 * scale
        self.register_buffer("packed", pack_q4(weights.codes))
        self.register_buffer("scale", scale.t().contiguous())
        self.register_buffer("offset", offset.t().contiguous())
        self.register_buffer("perm", weights.perm)
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` through the native kernel."""
        rows = x.reshape(-1, self.in_features)
        if self.perm is not None:
            rows = rows.index_select(1, self.perm)
        out = Q4_MATMUL(rows, self.packed, self.scale, self.offset, self.group)
        if x.dtype is not torch.float32:  # the kernel's output is float32 (a no-op .to still costs ~1 us a call)
            out = out.to(x.dtype)
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, "
                f"act_order={self.perm is not None}, bias={self.bias is not None}")
