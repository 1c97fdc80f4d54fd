"""A fused int4 matmul in C (AVX-512 or AVX2, FMA, OpenMP threads), compiled at first use: reads 4-bit codes once, computes in float32.

torch's ``_weight_int4pack_mm_for_cpu`` is fast only with bfloat16 activations on CPUs with native
bf16 (AVX512-BF16); on an AVX2-only CPU it runs at about the speed of a float32 dense layer, eight
times the bytes it needs to read. This kernel streams the packed codes and per-group float32
``scale``/``offset`` and accumulates in float32::

    W[n, k] = q[n, k] * scale[n, g] + offset[n, g]          g = k // group_size
    y[m, n] = sum_g scale[n, g] * (sum_{k in g} q[n, k] x[m, k]) + offset[n, g] * xsum[m, g]

with ``offset = -z * s`` for GPTQ/AWQ and the stored scaled zero for AWQ GEMV_FAST. Each weight
is exact in float32 (a 4-bit code times an fp16 scale); only summation order differs from
``F.linear`` of the float32 weight, so it is more precise than the bf16 kernel, not less.

Code layout (``pack_q4``): each run of 64 input columns is 32 bytes read as 16 little-endian 16-bit
words, word i holding columns i, 16 + i, 32 + i, 48 + i in its four nibbles (a last run of 32
columns: 8 words, columns i, 8 + i, 16 + i, 24 + i). A nibble masked into a 16-bit lane is the
half-precision subnormal ``q * 2^-24``, which F16C converts to float32 exactly, so 16 codes become 16
floats with a shift, an and and one conversion (``int4_native.c`` draws it)::

    word:        0       1       ...  15
    bits 0-3:    k=0     k=1     ...  k=15
    bits 4-7:    k=16    k=17    ...  k=31
    bits 8-11:   k=32    k=33    ...  k=47
    bits 12-15:  k=48    k=49    ...  k=63

Built per SIMD level (``_native.isa_level``: AVX-512 paths where the build has ``__AVX512F__``,
AVX2 + F16C + FMA otherwise) with ``_native.isa_flags``, cached per user and level, loaded through
``ctypes`` (which releases the GIL during the call) inside the op ``quantdispatch::q4_matmul``
(``Q4_MATMUL``), which ``Q4Linear.forward`` calls so that ``torch.compile`` sees one node. Each call
splits the output rows over torch's intra-op thread count (``_native.threads()``, read inside the op,
so its schema carries no thread argument) with OpenMP on torch's own libgomp; every output is one
thread's fixed-order sum, so results are bit-identical for any thread count. (Prefill dequantizes on one thread and
leaves the threads to torch's GEMM: ``_prefill`` says why.)

Prefill (more than ``FUSED_ROWS`` rows): blocks of output rows are dequantized in cache and
multiplied by torch's GEMM; in float32 for float32 activations (each weight exact), in bfloat16 for
bfloat16 activations on a CPU that computes bf16 natively (each weight rounded once to bf16, as a
bf16 model's portable module rounds it; sums in float32 inside the GEMM). ``native_int4()`` is
``None`` without a compiler, off x86-64 Linux, on a CPU without AVX2 and FMA, or when
``QUANTDISPATCH_NATIVE=0``; callers then use the aten kernel.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Final

import torch
from torch import nn

from ._native import Isa, custom_op, scratch, threads
from ._simd import level_library, native_bf16, simd_level
from .int4 import Int4Weights, int4_unfit, kernel_group

__all__ = ["native_int4", "native_int4_at", "pack_q4", "q4_matmul", "q4_unfit", "kernel_scales", "Q4Linear", "NATIVE_UNIT", "FUSED_ROWS", "Q4_MATMUL"]

NATIVE_UNIT: Final = 32
"""Input columns per packed run: ``in_features`` and the group size must be multiples of it."""

_FUNCTIONS: Final = {"q4_matmul": (6, 5), "q4_matmul_bf16": (6, 5), "q4_dequant": (4, 5), "q4_dequant_bf16": (4, 5)}


@functools.cache
def native_int4_at(level: Isa) -> ctypes.CDLL | None:
    """The kernel built for ``level`` (once per process, cached on disk), or ``None`` where it cannot be built."""
    return level_library(__package__ or "", "int4_native", _FUNCTIONS, level)


def native_int4() -> ctypes.CDLL | None:
    """The kernel for this process's SIMD level (``_simd.simd_level``), or ``None`` where it cannot run."""
    level = simd_level()
    return None if level is None else native_int4_at(level)


def pack_q4(codes: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, K]`` in 0..15 (K a multiple of 32) as the kernel's bytes ``[N, K/2]`` (see the module docstring)."""
    n, k = codes.shape
    c = codes.to(torch.uint8)
    whole = k // 64 * 64
    runs = c[:, :whole].reshape(n, k // 64, 4, 16)          # [run, nibble j, word i]: column 16 j + i
    parts = [torch.stack((runs[:, :, 0] | (runs[:, :, 1] << 4), runs[:, :, 2] | (runs[:, :, 3] << 4)), dim=-1).reshape(n, whole // 2)]
    if whole < k:
        last = c[:, whole:].reshape(n, 4, 8)                # [nibble j, word i]: column 8 j + i
        parts.append(torch.stack((last[:, 0] | (last[:, 1] << 4), last[:, 2] | (last[:, 3] << 4)), dim=-1).reshape(n, 16))
    return torch.cat(parts, dim=1).contiguous()


FUSED_ROWS: Final = 8
"""Up to this many input rows the fused kernel reads the codes once for all of them (decode);
above it, blocks of output rows are dequantized in cache and multiplied by torch's GEMM
(prefill), which reuses each weight across rows far better than the fused loop."""

_BLOCK_WEIGHTS: Final = 1 << 20
"""Weights dequantized per block on the float32 prefill path (4 MiB of float32: stays in L2/L3)."""
_BF16_BLOCK_WEIGHTS: Final = 1 << 22
"""Weights dequantized per block on the bf16 prefill path (8 MiB of bf16, in L3): fewer, larger GEMM
calls, each of which is a parallel region of torch's (see ``_prefill``)."""


def _lib() -> ctypes.CDLL:
    lib = native_int4()
    if lib is None:
        raise RuntimeError("the native int4 kernel is not available here; check native_int4() first")
    return lib


def _check(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> None:
    """Refuse what the C loop would read out of bounds: it indexes flat buffers by ``M, N, K`` and
    the group size, so sizes and dtypes are what matter (cheap: a decode step calls this per layer).
    The C loops take groups of 32 or of a multiple of 64 columns (``kernel_group`` gives 32 to 256)."""
    k, n = x.shape[-1], packed.shape[0]
    groups = k // group_size if group_size > 0 else 0
    if (x.dim() != 2 or group_size % NATIVE_UNIT or (group_size != 32 and group_size % 64) or groups * group_size != k
            or packed.numel() != n * (k // 2) or scale.numel() != n * groups or offset.numel() != n * groups or packed.dtype is not torch.uint8
            or scale.dtype is not torch.float32 or offset.dtype is not torch.float32 or not x.dtype.is_floating_point):
        raise ValueError(f"q4_matmul needs float x [M, K], uint8 packed [N, K/2], float32 scale and offset [N, K/group] with K a "
                         f"positive multiple of {NATIVE_UNIT} and the group size 32 or a multiple of 64; got x {x.dtype} {list(x.shape)}, "
                         f"packed {packed.dtype} {list(packed.shape)}, scale {scale.dtype} {list(scale.shape)}, offset {offset.dtype} "
                         f"{list(offset.shape)}, group_size {group_size}")


def _prefill(lib: ctypes.CDLL, x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> torch.Tensor:
    """More than ``FUSED_ROWS`` rows: cache-sized blocks of W dequantized, then torch's GEMM on torch's threads.

    The blocks are dequantized on one thread: the dequantization is a few percent of a prefill,
    and on the shared 2-core machine where this was measured, OpenMP regions of ours alternating
    with the GEMM's own made 2-thread prefills 1.3-2x slower than dequantizing on one thread
    (4096x4096, 32 and 512 rows)."""
    m, k = x.shape
    n = packed.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    if x.dtype is torch.bfloat16 and native_bf16():
        x = x.contiguous()
        rows = max(1, _BF16_BLOCK_WEIGHTS // k)
        block = torch.empty(min(rows, n), k, dtype=torch.bfloat16)
        part = torch.empty(m, min(rows, n), dtype=torch.bfloat16)
        for n0 in range(0, n, rows):
            n1 = min(n, n0 + rows)
            lib.q4_dequant_bf16(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), block.data_ptr(), n0, n1, k, group_size, 1)
            torch.mm(x, block[:n1 - n0].t(), out=part[:, :n1 - n0])
            y[:, n0:n1] = part[:, :n1 - n0]
        return y
    x = x.to(torch.float32).contiguous()
    rows = max(1, _BLOCK_WEIGHTS // k)
    block = scratch(min(rows, n), k)  # one per thread, reused: a fresh block per call stays resident in glibc's heap
    for n0 in range(0, n, rows):
        n1 = min(n, n0 + rows)
        lib.q4_dequant(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), block.data_ptr(), n0, n1, k, group_size, 1)
        torch.mm(x, block[:n1 - n0].t(), out=y[:, n0:n1])
    return y


def _q4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> torch.Tensor:
    """``quantdispatch::q4_matmul``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float dtype (read as float32)."""
    lib = _lib()
    _check(x, packed, scale, offset, group_size)
    if not (packed.is_contiguous() and scale.is_contiguous() and offset.is_contiguous()):
        packed, scale, offset = packed.contiguous(), scale.contiguous(), offset.contiguous()
    m, k = x.shape
    if m > FUSED_ROWS:
        return _prefill(lib, x, packed, scale, offset, group_size)
    n = packed.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    if x.dtype is torch.bfloat16:  # read in place: AVX512-BF16 products where built, else widened in C
        x = x.contiguous()
        xsum = x.to(torch.float32).view(m, k // group_size, group_size).sum(dim=2)
        lib.q4_matmul_bf16(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), x.data_ptr(), xsum.data_ptr(), y.data_ptr(),
                           m, n, k, group_size, threads())
        return y
    if x.dtype is not torch.float32 or not x.is_contiguous():
        x = x.to(torch.float32).contiguous()
    xsum = x.view(m, k // group_size, group_size).sum(dim=2)
    lib.q4_matmul(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), x.data_ptr(), xsum.data_ptr(), y.data_ptr(),
                  m, n, k, group_size, threads())
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


def kernel_scales(weights: Int4Weights, module: str) -> tuple[int, int, int, torch.Tensor, torch.Tensor]:
    """What the native int4 kernels (``Q4Linear``, ``Q4Q8Linear``) read from ``weights``:
    ``(out_features, in_features, group, scale, offset)``, the checkpoint's groups split into the
    kernel's (``kernel_group``) and ``W = q * scale + offset`` (float32 ``[K/group, N]``) from the aten
    form ``(q - 8) * scale + zero`` that ``Int4Weights`` holds.

    Raises:
        ValueError: the kernels cannot take this layer (``q4_unfit`` says why); ``module`` names the caller.
    """
    n, k = weights.codes.shape
    group = kernel_group(weights.group_size, k)
    if group is None:
        raise ValueError(f"{module} cannot take this layer: {q4_unfit(k, n, weights.group_size)}; check q4_unfit first")
    owner = torch.arange(k // group, dtype=torch.int64) * group // weights.group_size
    scale = weights.scale[owner]
    return n, k, group, scale, weights.zero[owner] - 8 * scale


class Q4Linear(nn.Module):
    """A linear layer on the native int4 kernel, built from a loaded portable layer's weights.

    Buffers: ``packed`` (uint8 ``[N, K/2]``, the word layout above), ``scale`` and
    ``offset`` (float32 ``[N, K/G]``), ``perm`` (int64 ``[K]``, only under act-order), ``bias`` (in
    the model's dtype). Activations of any float dtype are read exactly (bf16 in place at decode, others as
    float32); bf16 prefill rounds each weight once to bf16 where the CPU has native bf16; the output is cast back.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    perm: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, weights: Int4Weights, bias: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        n, k, group, scale, offset = kernel_scales(weights, "Q4Linear")
        self.in_features, self.out_features, self.group = k, n, group
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
