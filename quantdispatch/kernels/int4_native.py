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

Built like the GGUF native kernels (``kernels/gguf/native.py``): the system C compiler, ``-O3
-march=native``, a per-user cache keyed on the source, flags and CPU flags, loaded through
``ctypes`` (which releases the GIL during the call). Single-threaded on purpose: an OpenMP build
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

from ._native import build_library, cpu_flags
from .int4 import Int4Weights, int4_unfit, kernel_group

__all__ = ["native_int4", "pack_q4", "q4_matmul", "q4_unfit", "Q4Linear", "NATIVE_UNIT", "FUSED_ROWS"]

NATIVE_UNIT: Final = 32
"""Input columns per packed run: ``in_features`` and the group size must be multiples of it."""

_SOURCE: Final = r"""
#include <immintrin.h>
#include <stdint.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define UNPACK(ptr)                                                                   \
    __m128i b_ = _mm_loadu_si128((const __m128i *)(ptr));                             \
    __m128i lo_ = _mm_and_si128(b_, mask), hi_ = _mm_and_si128(_mm_srli_epi16(b_, 4), mask); \
    __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo_));                        \
    __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo_, 8)));     \
    __m256 w2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi_));                        \
    __m256 w3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi_, 8)));

/* One output row, one input row: four independent accumulators hide the FMA latency. */
static void row1(const uint8_t *qn, const float *sn, const float *cn, const float *x, const float *xs,
                 float *y, int64_t K, int64_t gs) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m256 total = _mm256_setzero_ps();
    float offsets = 0.0f;
    for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += gs) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t k = k0; k < k0 + gs; k += 32) {
            UNPACK(qn + k / 2)
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + k), a0);
            a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + k + 8), a1);
            a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + k + 16), a2);
            a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + k + 24), a3);
        }
        __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        total = _mm256_fmadd_ps(a, _mm256_set1_ps(sn[g]), total);
        offsets += cn[g] * xs[g];
    }
    *y = hsum(total) + offsets;
}

/* One output row, four input rows: the codes are unpacked once for all four. */
static void row4(const uint8_t *qn, const float *sn, const float *cn, const float *x, const float *xs,
                 float *y, int64_t K, int64_t gs, int64_t G, int64_t N) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps(), t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
    float o0 = 0.0f, o1 = 0.0f, o2 = 0.0f, o3 = 0.0f;
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K, *x3 = x + 3 * K;
    for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += gs) {
        __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        for (int64_t k = k0; k < k0 + gs; k += 32) {
            UNPACK(qn + k / 2)
#define ROW(a, b, xr)                                                               \
            a = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr + k), a);                    \
            b = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + k + 8), b);                \
            a = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xr + k + 16), a);               \
            b = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xr + k + 24), b);
            ROW(a0, b0, x0) ROW(a1, b1, x1) ROW(a2, b2, x2) ROW(a3, b3, x3)
#undef ROW
        }
        __m256 s = _mm256_set1_ps(sn[g]);
        t0 = _mm256_fmadd_ps(_mm256_add_ps(a0, b0), s, t0);
        t1 = _mm256_fmadd_ps(_mm256_add_ps(a1, b1), s, t1);
        t2 = _mm256_fmadd_ps(_mm256_add_ps(a2, b2), s, t2);
        t3 = _mm256_fmadd_ps(_mm256_add_ps(a3, b3), s, t3);
        o0 += cn[g] * xs[g]; o1 += cn[g] * xs[G + g]; o2 += cn[g] * xs[2 * G + g]; o3 += cn[g] * xs[3 * G + g];
    }
    y[0] = hsum(t0) + o0; y[N] = hsum(t1) + o1; y[2 * N] = hsum(t2) + o2; y[3 * N] = hsum(t3) + o3;
}

/* Rows n0..n1 of W = q * s + c as float32 [n1 - n0, K] into out: the prefill path's operand. */
void q4_dequant(const uint8_t *q, const float *s, const float *c, float *out, int64_t n0, int64_t n1, int64_t K, int64_t gs) {
    const int64_t G = K / gs;
    const __m128i mask = _mm_set1_epi8(0x0F);
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *qn = q + n * (K / 2);
        float *o = out + (n - n0) * K;
        for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += gs) {
            __m256 sv = _mm256_set1_ps(s[n * G + g]), cv = _mm256_set1_ps(c[n * G + g]);
            for (int64_t k = k0; k < k0 + gs; k += 32) {
                UNPACK(qn + k / 2)
                _mm256_storeu_ps(o + k, _mm256_fmadd_ps(w0, sv, cv));
                _mm256_storeu_ps(o + k + 8, _mm256_fmadd_ps(w1, sv, cv));
                _mm256_storeu_ps(o + k + 16, _mm256_fmadd_ps(w2, sv, cv));
                _mm256_storeu_ps(o + k + 24, _mm256_fmadd_ps(w3, sv, cv));
            }
        }
    }
}

/* q [N, K/2] codes; s, c [N, G] scale and offset; x [M, K]; xs [M, G] group sums of x; y [M, N]. */
void q4_matmul(const uint8_t *q, const float *s, const float *c, const float *x, const float *xs, float *y,
               int64_t M, int64_t N, int64_t K, int64_t gs) {
    const int64_t G = K / gs;
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *qn = q + n * (K / 2);
        const float *sn = s + n * G, *cn = c + n * G;
        int64_t m = 0;
        for (; m + 4 <= M; m += 4)
            row4(qn, sn, cn, x + m * K, xs + m * G, y + m * N + n, K, gs, G, N);
        for (; m < M; m++)
            row1(qn, sn, cn, x + m * K, xs + m * G, y + m * N + n, K, gs);
    }
}
"""

_FLAGS: Final = ("-O3", "-march=native", "-mavx2", "-mfma", "-shared", "-fPIC", "-std=c99")


@functools.cache
def native_int4() -> ctypes.CDLL | None:
    """The compiled kernel, built once per process (and cached on disk), or ``None`` where it cannot run."""
    flags = cpu_flags().split()
    if os.environ.get("QUANTDISPATCH_NATIVE") == "0" or not sys.platform.startswith("linux"):
        return None
    if platform.machine() not in ("x86_64", "AMD64") or "avx2" not in flags or "fma" not in flags:
        return None
    found = build_library("int4_native", _SOURCE, tuple(_FLAGS))
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


def q4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> torch.Tensor:
    """``x @ W.T`` in float32 for ``x`` float32 ``[M, K]`` (contiguous), ``W = q * scale + offset``
    with ``scale``/``offset`` float32 ``[N, G]``. Needs ``native_int4()``."""
    lib = _lib()
    m, k = x.shape
    n = packed.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    if m <= FUSED_ROWS:
        xsum = x.view(m, k // group_size, group_size).sum(dim=2)
        lib.q4_matmul(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), x.data_ptr(), xsum.data_ptr(), y.data_ptr(),
                      m, n, k, group_size)
        return y
    rows = max(1, _BLOCK_WEIGHTS // k)
    block = torch.empty(rows, k, dtype=torch.float32)
    for n0 in range(0, n, rows):
        n1 = min(n, n0 + rows)
        lib.q4_dequant(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), block.data_ptr(), n0, n1, k, group_size)
        torch.mm(x, block[:n1 - n0].t(), out=y[:, n0:n1])
    return y


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
        out = q4_matmul(rows.to(torch.float32).contiguous(), self.packed, self.scale, self.offset, self.group).to(x.dtype)
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, "
                f"act_order={self.perm is not None}, bias={self.bias is not None}")
