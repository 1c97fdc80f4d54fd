"""A 4-bit GPTQ/AWQ matmul on int8 activations and integer dot products (``cpu-q4-q8dot``), in C.

``cpu-q4`` (``int4_native``) turns every code into a float and sums in float32: exact, but bound by
arithmetic (about half the memory bandwidth at decode). This kernel does what llama.cpp does for
its 4-bit formats: each input row is rounded to int8 per block of 32 columns (scale ``d = absmax /
127``, ``round`` away from zero at halves), and the codes are dotted with it in exact integer
arithmetic (AVX512-VNNI ``vpdpbusd``; ``vpmaddubsw`` + ``vpmaddwd`` on AVX-512 BW and AVX2), 16
output rows a vector, so no per-row horizontal sum is needed. The scales are applied in float32::

    W[n, k] = q[n, k] * scale[n, g] + offset[n, g]          g = k // group_size
    A[n, g] = sum_b d_b * isum_b        isum_b = sum_{k in b} q[n, k] * xq[k]   (int32, exact)
    B[g]    = sum_b d_b * usum_b        usum_b = sum_{k in b} xq[k]
    y[n]    = sum_g scale[n, g] * A[n, g] + offset[n, g] * B[g]     (fma, in this order)

so ``y = W @ dequant(xq)``: the weights are exact, the activations carry an int8 rounding (at most
half a step, ``d / 2``, per activation: about 0.5 % of a layer's output for Gaussian activations,
5-7 % of a 4-bit model's quantization error on its logits in the loading tests). ``cpu-q4`` stays
the float32-exact choice (``backend="cpu-q4"``).

Layout (``pack_q4q8``, once at load; the checkpoint's packing is not kept): rows in groups of 16
(the last padded with zero rows), per row group and block of 32 columns 256 bytes: 4 chunks of 64
bytes, chunk ``c`` holding for row ``r`` the 4 bytes at ``64 c + 4 r + j``, whose low nibble is
column ``4 c + j`` of the block and high nibble column ``16 + 4 c + j``; ``scale``/``offset`` float32
``[row groups, groups, 16]``. One 64-byte chunk is then 16 int32 lanes, one per row, each the dot
of 4 codes with 4 broadcast activations. The bytes are the same at every SIMD level, the integer
sums and the float32 operations too: results are bit-identical across levels and thread counts.

The op ``quantdispatch::q4q8_matmul`` (``Q4Q8_MATMUL``) splits the row groups over torch's
intra-op threads with OpenMP. Activations of any float dtype are read as float32 (bf16 widened
exactly) before rounding to int8, so bf16 runs at the float32 speed. Prefill (many rows) is the
same integer loop, as in llama.cpp: chunks of rows whose int8 activations stay in L2, 4 rows per
decoded run of codes. With 64 int8 products per VNNI instruction against 16 float32 ones per FMA it
measured 3.3-5.5x a float32 dense GEMM at 32 rows and 2.0-2.6x at 512 (4096x4096, 1 and 2 threads,
``benchmarks/bench_layer_kernels.py``), where ``cpu-q4``'s dequantize-then-GEMM prefill was 0.4-2.8x.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Final

import torch
from torch import nn

from ._native import Isa, custom_op, threads
from ._simd import level_library, simd_level
from .int4 import Int4Weights
from .int4_native import kernel_scales, q4_unfit

__all__ = ["native_q4q8", "native_q4q8_at", "pack_q4q8", "unpack_q4q8", "q4q8_matmul", "q4q8_unfit", "Q4Q8Linear", "ROW_GROUP",
           "Q4Q8_MATMUL", "prepare_q4q8"]

ROW_GROUP: Final = 16
"""Output rows interleaved in one run of bytes (one 64-byte vector of 16 int32 lanes)."""

_FUNCTIONS: Final = {"q4q8_matmul": (5, 6)}


@functools.cache
def native_q4q8_at(level: Isa) -> ctypes.CDLL | None:
    """The kernel built for ``level`` (once per process, cached on disk), or ``None`` where it cannot be built."""
    return level_library(__package__ or "", "int4_q8dot", _FUNCTIONS, level)


def native_q4q8() -> ctypes.CDLL | None:
    """The kernel for this process's SIMD level (``_simd.simd_level``), or ``None`` where it cannot run."""
    level = simd_level()
    return None if level is None else native_q4q8_at(level)


def _row_groups(n: int) -> int:
    return -(-n // ROW_GROUP)


def pack_q4q8(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes ``[N, K]`` (0..15, K a multiple of 32) and float32 ``scale``/``offset`` ``[N, G]`` as the
    kernel's ``packed`` (uint8 ``[P, K/32, 256]``), ``scale`` and ``offset`` (``[P, G, 16]``), ``P = ceil(N / 16)``."""
    n, k = codes.shape
    p = _row_groups(n)
    pad = p * ROW_GROUP - n
    c = codes.to(torch.uint8).contiguous()  # AWQ GEMM's codes arrive transposed
    s, o = scale.to(torch.float32).contiguous(), offset.to(torch.float32).contiguous()
    if pad:
        c = torch.cat((c, c.new_zeros(pad, k)))
        s, o = torch.cat((s, s.new_zeros(pad, s.shape[1]))), torch.cat((o, o.new_zeros(pad, o.shape[1])))
    # [P, r, block, half, chunk, j] -> [P, block, chunk, r, j], low nibble half 0 and high half 1.
    v = c.view(p, ROW_GROUP, k // 32, 2, 4, 4)
    packed = (v[:, :, :, 0] | (v[:, :, :, 1] << 4)).permute(0, 2, 3, 1, 4).contiguous().view(p, k // 32, 256)
    groups = s.shape[1]
    return (packed, s.view(p, ROW_GROUP, groups).transpose(1, 2).contiguous(), o.view(p, ROW_GROUP, groups).transpose(1, 2).contiguous())


def unpack_q4q8(packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pack_q4q8``'s inverse: codes ``[N, K]`` (uint8), ``scale`` and ``offset`` ``[N, G]``."""
    p, blocks, _ = packed.shape
    v = packed.view(p, blocks, 4, ROW_GROUP, 4).permute(0, 3, 1, 2, 4)        # [P, r, block, chunk, j]
    codes = torch.stack((v & 15, v >> 4), dim=3).reshape(p * ROW_GROUP, blocks * 32)
    groups = scale.shape[1]
    s = scale.transpose(1, 2).reshape(p * ROW_GROUP, groups)
    o = offset.transpose(1, 2).reshape(p * ROW_GROUP, groups)
    return codes[:n].contiguous(), s[:n].contiguous(), o[:n].contiguous()


def _lib() -> ctypes.CDLL:
    lib = native_q4q8()
    if lib is None:
        raise RuntimeError("the native int8-activation int4 kernel is not available here; check native_q4q8() first")
    return lib


def _check(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, n: int, group_size: int) -> None:
    """Refuse what the C loop would read out of bounds (it indexes flat buffers by ``M, N, K`` and the group size)."""
    k = x.shape[-1] if x.dim() else 0
    p = _row_groups(n) if n > 0 else 0
    groups = k // group_size if group_size > 0 else 0
    if (x.dim() != 2 or not x.dtype.is_floating_point or n <= 0 or k <= 0 or k % 32 or group_size <= 0 or group_size % 32
            or groups * group_size != k or packed.dtype is not torch.uint8 or packed.numel() != p * k * 8
            or scale.dtype is not torch.float32 or offset.dtype is not torch.float32
            or scale.numel() != p * groups * ROW_GROUP or offset.numel() != p * groups * ROW_GROUP):
        raise ValueError(f"q4q8_matmul needs float x [M, K], uint8 packed [ceil(N/16), K/32, 256], float32 scale and offset "
                         f"[ceil(N/16), K/group, 16] with K a positive multiple of the group size, itself a multiple of 32; got "
                         f"x {x.dtype} {list(x.shape)}, packed {packed.dtype} {list(packed.shape)}, scale {scale.dtype} "
                         f"{list(scale.shape)}, offset {offset.dtype} {list(offset.shape)}, N {n}, group_size {group_size}")


def _q4q8_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, n: int, group_size: int) -> torch.Tensor:
    """``quantdispatch::q4q8_matmul``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float dtype."""
    lib = _lib()
    _check(x, packed, scale, offset, n, group_size)
    if not (packed.is_contiguous() and scale.is_contiguous() and offset.is_contiguous()):
        packed, scale, offset = packed.contiguous(), scale.contiguous(), offset.contiguous()
    m, k = x.shape
    y = torch.empty(m, n, dtype=torch.float32)
    if m == 0:
        return y
    bf16 = x.dtype is torch.bfloat16
    if not bf16 and x.dtype is not torch.float32:
        x = x.to(torch.float32)
    x = x.contiguous()
    lib.q4q8_matmul(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), x.data_ptr(), y.data_ptr(), m, n, k, group_size, threads(),
                    int(bf16))
    return y


def _q4q8_matmul_fake(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, n: int,
                      group_size: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], n), dtype=torch.float32)


Q4Q8_MATMUL: Final = custom_op("q4q8_matmul", "(Tensor x, Tensor packed, Tensor scale, Tensor offset, int n, int group_size) -> Tensor",
                               _q4q8_matmul, _q4q8_matmul_fake)
"""``torch.ops.quantdispatch.q4q8_matmul(x, packed, scale, offset, n, group_size)``: the kernel as one op."""


def q4q8_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, n: int, group_size: int) -> torch.Tensor:
    """``x @ W.T`` in float32 (``x`` ``[M, K]`` rounded to int8 per 32 columns) for the
    ``pack_q4q8`` form of ``W = q * scale + offset`` with ``n`` output rows. Needs ``native_q4q8()``.

    Raises:
        ValueError: the shapes or dtypes do not agree.
    """
    out: torch.Tensor = Q4Q8_MATMUL(x, packed, scale, offset, n, group_size)
    return out


def q4q8_unfit(in_features: int, out_features: int, group_size: int) -> str | None:
    """Why the kernel cannot take one layer of this shape (``None``: it can): ``cpu-q4``'s rule,
    ``in_features`` and the groups in whole blocks of 32 columns (any ``out_features``)."""
    return q4_unfit(in_features, out_features, group_size)


class Q4Q8Linear(nn.Module):
    """A linear layer on the int8-activation int4 kernel, built from a loaded portable layer's weights.

    Buffers: ``packed`` (uint8 ``[P, K/32, 256]``), ``scale`` and ``offset`` (float32 ``[P, K/G, 16]``),
    ``perm`` (int64 ``[K]``, only under act-order: the activations are gathered, as ``Q4Linear``
    does), ``bias`` (in the model's dtype). The output is cast back to the input's dtype.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    perm: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, weights: Int4Weights, bias: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        n, k, group, scale, offset = kernel_scales(weights, "Q4Q8Linear")  # q4q8_unfit is q4_unfit
        self.in_features, self.out_features, self.group = k, n, group
        packed, s, o = pack_q4q8(weights.codes, scale.t(), offset.t())
        self.register_buffer("packed", packed)
        self.register_buffer("scale", s)
        self.register_buffer("offset", o)
        self.register_buffer("perm", weights.perm)
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` through the kernel."""
        rows = x.reshape(-1, self.in_features)
        if self.perm is not None:
            rows = rows.index_select(1, self.perm)
        out = Q4Q8_MATMUL(rows, self.packed, self.scale, self.offset, self.out_features, self.group)
        if x.dtype is not torch.float32:
            out = out.to(x.dtype)
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, "
                f"act_order={self.perm is not None}, bias={self.bias is not None}")


def prepare_q4q8(module: nn.Module, layout: object, dtype: torch.dtype) -> nn.Module | None:
    """A ``Q4Q8Linear`` for one loaded 4-bit layer, or ``None`` (a layer it cannot take keeps the
    portable module); where the kernel cannot be built, ``cpu-q4``'s choice (``prepare_q4``)."""
    from ..backends.cpu_int4 import prepare_q4
    from ..kernels.modules import features
    from ..layouts.base import AbstractIntLayout

    if not isinstance(layout, AbstractIntLayout):
        return None
    if native_q4q8() is None:
        return prepare_q4(module, layout, dtype)
    convert = type(layout).forms.get("int4")
    if convert is None or layout.bits != 4:
        return None
    in_features, out_features = features(module)
    if q4q8_unfit(in_features, out_features, layout.group_size) is not None:
        return None
    with torch.no_grad():
        weights = convert.resolve()(module)
        if not isinstance(weights, Int4Weights):
            return None
        bias: object = getattr(module, "bias", None)
        return Q4Q8Linear(weights, bias if isinstance(bias, torch.Tensor) else None, dtype)
