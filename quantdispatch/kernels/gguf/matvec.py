"""Fused GGUF matrix-vector products on the blocks as the file stores them (C, AVX2 + FMA + F16C).

A kept-packed weight (``GgufLinear``) dequantizes its whole matrix at every forward, then calls
``F.linear``: for one token that writes and reads four bytes per weight to use each once. This
kernel is the int4 path of ``kernels/int4_native.py`` applied to GGML blocks without repacking
them: it reads a row's blocks once, expands each run of 32 weights in registers as
``q * scale + offset`` and multiplies it into the activations (Q4_0, Q4_1, Q8_0: four rows per
expansion; Q4_K, Q6_K: runs that share bytes expanded from one load), accumulating in float32.
Nothing is copied at load, so memory stays at the file's size.

How each type maps onto ``W = q * scale + offset`` per run of 32 (a run is what one AVX2 pass of
the int4 kernel covers; the nibble order of Q4_0/Q4_1 is the int4 kernel's own):

=====  ============================================  ==========================================
type   run                                           scale, offset
=====  ============================================  ==========================================
Q4_0   one block: 16 bytes, low nibbles 0-15,        ``d``, ``-8 d``
       high nibbles 16-31
Q4_1   one block, as Q4_0                            ``d``, ``m``
Q4_K   sub-block j of a super-block: the low         ``d * sc[j]``, ``-dmin * m[j]`` (6-bit
       (j even) or high (j odd) nibbles of 32 bytes  scales and mins unpacked as ggml does)
Q8_0   one block: 32 signed bytes                    ``d``, 0
Q6_K   a quarter of half a super-block: 4 low bits   ``d * sc[i]`` per 16 weights, ``-32 d sc[i]``
       from ``ql``, 2 high bits from ``qh``
=====  ============================================  ==========================================

Q4_0, Q4_1 and Q4_K are the types the issue names for the int4 path; Q8_0 and Q6_K (the other
half of a ``Q4_K_M`` file: its output layer and half of its ``attn_v``/``ffn_down``) take the
same loop with a different unpack. Each weight is formed with one fused multiply-add from the
same float32 scale gguf-py computes (exact for Q4_0, Q4_1, Q8_0 and Q6_K, within one rounding of
gguf-py's two for Q4_K); only the order of the sums differs from ``F.linear`` on the dequantized
matrix.

Above ``FUSED_ROWS`` input rows (prefill) the kernel would read the blocks once per four rows,
so ``GgufLinear``'s dequantize-then-GEMM path is used instead. Single-threaded, like the int4
kernel and for the same reason (no second OpenMP runtime beside torch's). ``matvec_kernels()``
is ``None`` without a C compiler, off x86-64 Linux, without AVX2/FMA/F16C, or when
``QUANTDISPATCH_NATIVE=0``; then every type keeps ``GgufLinear``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from collections.abc import Callable, Mapping
from typing import Final, Literal

import attrs
import torch

from quantdispatch.gguf.types import BLOCK, GgmlType

from .._native import build_library, cpu_flags
from .modules import GgufLinear, PackedLinearFactory

__all__ = ["MATVEC_TYPES", "FUSED_ROWS", "Activations", "MatvecKernels", "GgufMatvecLinear", "matvec_kernels", "gguf_matvec",
           "matvec_linears"]

FUSED_ROWS: Final = 8
"""Up to this many input rows a forward runs the fused kernel; above it, dequantize + GEMM."""

_SOURCE: Final = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float h2f(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return _cvtsh_ss(h); }

/* Eight codes (bytes) of a 128-bit lane half as floats. */
#define F8(v) _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
#define S8(v) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))

/* Each type: PREP decodes a block's scales once into ctx; RUN expands run j of the block into
   w[0..3] (weights 8i..8i+7 of the run in w[i]). */
typedef struct { float s[16], c[8]; } ctx_t;

static inline void prep_q4_0(const uint8_t *b, ctx_t *t) { t->s[0] = h2f(b); t->c[0] = -8.0f * t->s[0]; }
static inline void prep_q4_1(const uint8_t *b, ctx_t *t) { t->s[0] = h2f(b); t->c[0] = h2f(b + 2); }

static inline void nibbles16(const uint8_t *p, float s, float c, __m256 w[4]) {
    const __m128i m = _mm_set1_epi8(0x0F), v = _mm_loadu_si128((const __m128i *)p);
    const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    const __m256 sv = _mm256_set1_ps(s), cv = _mm256_set1_ps(c);
    w[0] = _mm256_fmadd_ps(F8(lo), sv, cv); w[1] = _mm256_fmadd_ps(F8(_mm_srli_si128(lo, 8)), sv, cv);
    w[2] = _mm256_fmadd_ps(F8(hi), sv, cv); w[3] = _mm256_fmadd_ps(F8(_mm_srli_si128(hi, 8)), sv, cv);
}
static inline void run_q4_0(const uint8_t *b, const ctx_t *t, int j, __m256 w[4]) { (void)j; nibbles16(b + 2, t->s[0], t->c[0], w); }
static inline void run_q4_1(const uint8_t *b, const ctx_t *t, int j, __m256 w[4]) { (void)j; nibbles16(b + 4, t->s[0], t->c[0], w); }

static inline void prep_q4_k(const uint8_t *b, ctx_t *t) {
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *q = b + 4;
    for (int j = 0; j < 4; j++) {
        t->s[j] = d * (float)(q[j] & 63); t->c[j] = -(dmin * (float)(q[4 + j] & 63));
        t->s[4 + j] = d * (float)((q[8 + j] & 15) | ((q[j] >> 6) << 4));
        t->c[4 + j] = -(dmin * (float)((q[8 + j] >> 4) | ((q[4 + j] >> 6) << 4)));
    }
}

static inline void prep_q8_0(const uint8_t *b, ctx_t *t) { t->s[0] = h2f(b); t->c[0] = 0.0f; }
static inline void run_q8_0(const uint8_t *b, const ctx_t *t, int j, __m256 w[4]) {
    (void)j;
    const __m256 s = _mm256_set1_ps(t->s[0]);
    const __m128i a = _mm_loadu_si128((const __m128i *)(b + 2)), c = _mm_loadu_si128((const __m128i *)(b + 18));
    w[0] = _mm256_mul_ps(S8(a), s); w[1] = _mm256_mul_ps(S8(_mm_srli_si128(a, 8)), s);
    w[2] = _mm256_mul_ps(S8(c), s); w[3] = _mm256_mul_ps(S8(_mm_srli_si128(c, 8)), s);
}

/* Q6_K: run j covers weights 32r..32r+31 of half h (r = j % 4, h = j / 4): low 4 bits from
   ql[64h + 32(r&1) + l] (low nibble for r < 2, high for r >= 2), high 2 bits from qh[32h + l] >> 2r,
   code - 32; scales sc[8h + 2r] for l = 0..15 and sc[8h + 2r + 1] for l = 16..31. */
static inline void prep_q6_k(const uint8_t *b, ctx_t *t) {
    const float d = h2f(b + 208);
    const int8_t *sc = (const int8_t *)(b + 192);
    for (int i = 0; i < 16; i++) t->s[i] = d * (float)sc[i];
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* y[m, n] = sum_k W[n, k] x[m, k]: w holds N rows of row_bytes; x is [M, K], y is [M, N].
   Four input rows share each expanded run; one input row keeps four accumulators. (Q4_0, Q4_1,
   Q8_0; the super-block types have their own loops below.) */
#define KERNEL(NAME, PREP, RUN, RUNS, BYTES)                                                   \
void NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K) {      \
    const int64_t blocks = K / (32 * RUNS), row_bytes = blocks * BYTES;                        \
    for (int64_t n = 0; n < N; n++) {                                                          \
        const uint8_t *wr = w + n * row_bytes;                                                 \
        int64_t mi = 0;                                                                        \
        for (; mi + 4 <= M; mi += 4) {                                                         \
            const float *x0 = x + mi * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;            \
            __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0; \
            for (int64_t bi = 0; bi < blocks; bi++) {                                          \
              const uint8_t *bp = wr + bi * BYTES; ctx_t t; PREP(bp, &t);                      \
              for (int j = 0; j < RUNS; j++) {                                                 \
                __m256 v[4]; RUN(bp, &t, j, v);                                                \
                const int64_t k = (bi * RUNS + j) * 32;                                        \
                a0 = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(x0 + k), a0); b0 = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x0 + k + 8), b0); \
                a0 = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x0 + k + 16), a0); b0 = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x0 + k + 24), b0); \
                a1 = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(x1 + k), a1); b1 = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x1 + k + 8), b1); \
                a1 = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x1 + k + 16), a1); b1 = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x1 + k + 24), b1); \
                a2 = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(x2 + k), a2); b2 = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x2 + k + 8), b2); \
                a2 = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x2 + k + 16), a2); b2 = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x2 + k + 24), b2); \
                a3 = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(x3 + k), a3); b3 = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x3 + k + 8), b3); \
                a3 = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x3 + k + 16), a3); b3 = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x3 + k + 24), b3); \
            } }                                                                                \
            y[mi * N + n] = hsum(_mm256_add_ps(a0, b0)); y[(mi + 1) * N + n] = hsum(_mm256_add_ps(a1, b1)); \
            y[(mi + 2) * N + n] = hsum(_mm256_add_ps(a2, b2)); y[(mi + 3) * N + n] = hsum(_mm256_add_ps(a3, b3)); \
        }                                                                                      \
        for (; mi < M; mi++) {                                                                 \
            const float *x0 = x + mi * K;                                                      \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                        \
            for (int64_t bi = 0; bi < blocks; bi++) {                                          \
              const uint8_t *bp = wr + bi * BYTES; ctx_t t; PREP(bp, &t);                      \
              for (int j = 0; j < RUNS; j++) {                                                 \
                __m256 v[4]; RUN(bp, &t, j, v);                                                \
                const int64_t k = (bi * RUNS + j) * 32;                                        \
                a0 = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(x0 + k), a0);                       \
                a1 = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x0 + k + 8), a1);                   \
                a2 = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x0 + k + 16), a2);                  \
                a3 = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x0 + k + 24), a3);                  \
            } }                                                                                \
            y[mi * N + n] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); \
        }                                                                                      \
    }                                                                                          \
}

KERNEL(mv_q4_0, prep_q4_0, run_q4_0, 1, 18)
KERNEL(mv_q4_1, prep_q4_1, run_q4_1, 1, 20)

/* The super-block types (Q4_K, Q6_K) have a loop per row over a row's super-blocks, and one
   driver per arithmetic for the output and input rows; within a super-block, runs that share
   bytes are expanded from one load (Q4_K's runs 2p and 2p+1 are the low and high nibbles of the
   same 32 bytes; a Q6_K half's four runs share its ql and qh). */
#define FDRIVER(NAME, ROW, BYTES)                                                              \
void NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K) {      \
    for (int64_t n = 0; n < N; n++)                                                            \
        for (int64_t mi = 0; mi < M; mi++) y[mi * N + n] = ROW(w + n * (K / 256) * BYTES, x + mi * K, K / 256); \
}
#define QDRIVER(NAME, ROW, BYTES)                                                              \
void NAME(const uint8_t *w, const int8_t *xq, const float *xd, const float *xs, float *y,      \
          int64_t M, int64_t N, int64_t K) {                                                   \
    for (int64_t n = 0; n < N; n++)                                                            \
        for (int64_t mi = 0; mi < M; mi++)                                                     \
            y[mi * N + n] = ROW(w + n * (K / 256) * BYTES, xq + mi * K, xd + mi * (K / 32), xs + mi * (K / 32), K / 256); \
}

static inline float frow_q4_k(const uint8_t *wr, const float *xm, int64_t blocks) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * 144; ctx_t t; prep_q4_k(b, &t);
        for (int p = 0; p < 4; p++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * p));
            const __m256i nib[2] = {_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)};
            for (int e = 0; e < 2; e++) {
                const int j = 2 * p + e;
                const __m128i lo = _mm256_castsi256_si128(nib[e]), hi = _mm256_extracti128_si256(nib[e], 1);
                const __m256 sv = _mm256_set1_ps(t.s[j]), cv = _mm256_set1_ps(t.c[j]);
                const float *xk = xm + (bi * 8 + j) * 32;
                a0 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(lo), sv, cv), _mm256_loadu_ps(xk), a0);
                a1 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(_mm_srli_si128(lo, 8)), sv, cv), _mm256_loadu_ps(xk + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(hi), sv, cv), _mm256_loadu_ps(xk + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(_mm_srli_si128(hi, 8)), sv, cv), _mm256_loadu_ps(xk + 24), a3);
            }
        }
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}
FDRIVER(mv_q4_k, frow_q4_k, 144)
KERNEL(mv_q8_0, prep_q8_0, run_q8_0, 1, 34)

/* Q6_K: the four runs of half h of block b as codes 0..63 (ql low/high nibbles, qh bit pairs). */
static inline void q6_codes(const uint8_t *b, int h, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
#define HIGH(k) _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, k), m2), 4)
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), HIGH(0));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), HIGH(2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), HIGH(4));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), HIGH(6));
#undef HIGH
}

static inline float frow_q6_k(const uint8_t *wr, const float *xm, int64_t blocks) {
    const __m256i o32 = _mm256_set1_epi8(32);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * 210; ctx_t t; prep_q6_k(b, &t);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_codes(b, h, q);
            for (int r = 0; r < 4; r++) {
                const __m256i c = _mm256_sub_epi8(q[r], o32);
                const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
                const __m256 s0 = _mm256_set1_ps(t.s[8 * h + 2 * r]), s1 = _mm256_set1_ps(t.s[8 * h + 2 * r + 1]);
                const float *xk = xm + (bi * 8 + 4 * h + r) * 32;
                a0 = _mm256_fmadd_ps(_mm256_mul_ps(S8(lo), s0), _mm256_loadu_ps(xk), a0);
                a1 = _mm256_fmadd_ps(_mm256_mul_ps(S8(_mm_srli_si128(lo, 8)), s0), _mm256_loadu_ps(xk + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_mul_ps(S8(hi), s1), _mm256_loadu_ps(xk + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_mul_ps(S8(_mm_srli_si128(hi, 8)), s1), _mm256_loadu_ps(xk + 24), a3);
            }
        }
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}
FDRIVER(mv_q6_k, frow_q6_k, 210)

/* ---- 8-bit activations: llama.cpp's arithmetic (its Q8_0/Q8_K dot products) ----
   quant_x: each run of 32 activations as int8 codes xq with scale xd = max|x| / 127 (round to
   nearest), and xs = xd * sum(xq), which carries the offset term of types with a min. */
static void quant_x(const float *x, int8_t *xq, float *xd, float *xs, int64_t M, int64_t K) {
    const int64_t runs = M * K / 32;
    for (int64_t r = 0; r < runs; r++) {
        const float *v = x + 32 * r;
        float amax = 0.0f, probe = 0.0f;
        for (int i = 0; i < 32; i++) {
            const float a = v[i] < 0.0f ? -v[i] : v[i];
            amax = a > amax ? a : amax;
            probe += v[i] * 0.0f;                          /* NaN iff some v is NaN or infinite */
        }
        if (probe != 0.0f) {                               /* no codes for it: the outputs it feeds become NaN */
            for (int i = 0; i < 32; i++) xq[32 * r + i] = 0;
            xd[r] = probe; xs[r] = probe;
            continue;
        }
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            const float f = v[i] * id;
            const int q = (int)(f + (f < 0.0f ? -0.5f : 0.5f));
            xq[32 * r + i] = (int8_t)q; sum += q;
        }
        xd[r] = d; xs[r] = d * (float)sum;
    }
}

static inline __m256i dot_us(__m256i u, __m256i s) {   /* unsigned x signed bytes: 8 x int32 partial sums */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
static inline __m256i dot_ss(__m256i a, __m256i b) {   /* signed x signed, by moving a's sign onto b */
    return dot_us(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}
static inline __m256i nib32(const uint8_t *p) {        /* 16 bytes: low nibbles 0..15, high nibbles 16..31 */
    const __m128i v = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}
#define XQ(p) _mm256_loadu_si256((const __m256i *)(p))

static inline __m256i qrun_q4_0(const uint8_t *b, const ctx_t *t, int j, const int8_t *x, float d, __m256 *s) {
    (void)j; *s = _mm256_set1_ps(t->s[0] * d); return dot_us(nib32(b + 2), XQ(x));
}
static inline __m256i qrun_q4_1(const uint8_t *b, const ctx_t *t, int j, const int8_t *x, float d, __m256 *s) {
    (void)j; *s = _mm256_set1_ps(t->s[0] * d); return dot_us(nib32(b + 4), XQ(x));
}
static inline __m256i qrun_q8_0(const uint8_t *b, const ctx_t *t, int j, const int8_t *x, float d, __m256 *s) {
    (void)j; *s = _mm256_set1_ps(t->s[0] * d); return dot_ss(XQ(b + 2), XQ(x));
}

/* y[m, n] = sum over runs u of scale_u * xd[m, u] * <codes, xq[m, run u]> + offset_u * xs[m, u]. */
#define QKERNEL(NAME, PREP, QRUN, RUNS, BYTES)                                                 \
void NAME(const uint8_t *w, const int8_t *xq, const float *xd, const float *xs, float *y,      \
          int64_t M, int64_t N, int64_t K) {                                                   \
    const int64_t blocks = K / (32 * RUNS), row_bytes = blocks * BYTES, R = K / 32;            \
    for (int64_t n = 0; n < N; n++) {                                                          \
        const uint8_t *wr = w + n * row_bytes;                                                 \
        for (int64_t mi = 0; mi < M; mi++) {                                                   \
            const int8_t *xm = xq + mi * K;                                                    \
            const float *dm = xd + mi * R, *sm = xs + mi * R;                                  \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;                                          \
            float off = 0.0f;                                                                  \
            for (int64_t bi = 0; bi < blocks; bi++) {                                          \
                const uint8_t *bp = wr + bi * BYTES; ctx_t t; PREP(bp, &t);                    \
                for (int j = 0; j < RUNS; j++) {                                               \
                    const int64_t u = bi * RUNS + j; __m256 sc;                                \
                    const __m256 p = _mm256_cvtepi32_ps(QRUN(bp, &t, j, xm + 32 * u, dm[u], &sc)); \
                    if (u & 1) a1 = _mm256_fmadd_ps(p, sc, a1); else a0 = _mm256_fmadd_ps(p, sc, a0); \
                    off += t.c[j] * sm[u];                                                     \
                }                                                                              \
            }                                                                                  \
            y[mi * N + n] = hsum(_mm256_add_ps(a0, a1)) + off;                                 \
        }                                                                                      \
    }                                                                                          \
}

QKERNEL(qv_q4_0, prep_q4_0, qrun_q4_0, 1, 18)
QKERNEL(qv_q4_1, prep_q4_1, qrun_q4_1, 1, 20)
QKERNEL(qv_q8_0, prep_q8_0, qrun_q8_0, 1, 34)

static inline float qrow_q4_k(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, int64_t blocks) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    float off = 0.0f;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * 144; ctx_t t; prep_q4_k(b, &t);
        for (int p = 0; p < 4; p++) {
            const int64_t u = bi * 8 + 2 * p;
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * p));
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(lo, XQ(xm + 32 * u))), _mm256_set1_ps(t.s[2 * p] * dm[u]), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(hi, XQ(xm + 32 * u + 32))), _mm256_set1_ps(t.s[2 * p + 1] * dm[u + 1]), a1);
            off += t.c[2 * p] * sm[u] + t.c[2 * p + 1] * sm[u + 1];
        }
    }
    return hsum(_mm256_add_ps(a0, a1)) + off;
}
QDRIVER(qv_q4_k, qrow_q4_k, 144)

static inline float qrow_q6_k(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, int64_t blocks) {
    (void)sm;
    const __m256i o32 = _mm256_set1_epi8(32);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * 210; ctx_t t; prep_q6_k(b, &t);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_codes(b, h, q);
            for (int r = 0; r < 4; r++) {
                const int64_t u = bi * 8 + 4 * h + r;
                const __m256 p = _mm256_cvtepi32_ps(dot_ss(_mm256_sub_epi8(q[r], o32), XQ(xm + 32 * u)));
                const __m256 sc = _mm256_set_m128(_mm_set1_ps(t.s[8 * h + 2 * r + 1] * dm[u]), _mm_set1_ps(t.s[8 * h + 2 * r] * dm[u]));
                if (r & 1) a1 = _mm256_fmadd_ps(p, sc, a1); else a0 = _mm256_fmadd_ps(p, sc, a0);
            }
        }
    }
    return hsum(_mm256_add_ps(a0, a1));
}
QDRIVER(qv_q6_k, qrow_q6_k, 210)

/* The 8-bit entry points take float32 activations like the float32 ones: they quantize them
   (quant_x) into a buffer of their own, then run the integer kernel. One call from Python. */
#define QENTRY(NAME, KERNEL)                                                                   \
int NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K) {       \
    const int64_t R = M * K / 32;                                                              \
    int8_t *xq = (int8_t *)malloc((size_t)(M * K));                                           \
    float *xf = (float *)malloc((size_t)(2 * R) * sizeof(float));                              \
    if (xq == NULL || xf == NULL) { free(xq); free(xf); return -1; }                           \
    quant_x(x, xq, xf, xf + R, M, K);                                                          \
    KERNEL(w, xq, xf, xf + R, y, M, N, K);                                                     \
    free(xq); free(xf);                                                                        \
    return 0;                                                                                  \
}
QENTRY(qx_q4_0, qv_q4_0)
QENTRY(qx_q4_1, qv_q4_1)
QENTRY(qx_q4_k, qv_q4_k)
QENTRY(qx_q8_0, qv_q8_0)
QENTRY(qx_q6_k, qv_q6_k)
"""

_FLAGS: Final = ("-O3", "-march=native", "-mavx2", "-mfma", "-mf16c", "-shared", "-fPIC", "-std=c99")

_SYMBOLS: Final[Mapping[GgmlType, str]] = {
    GgmlType.Q4_0: "q4_0",
    GgmlType.Q4_1: "q4_1",
    GgmlType.Q4_K: "q4_k",
    GgmlType.Q8_0: "q8_0",
    GgmlType.Q6_K: "q6_k",
}

MATVEC_TYPES: Final[frozenset[GgmlType]] = frozenset(_SYMBOLS)
"""The block types with fused matrix-vector kernels (both arithmetics)."""

Activations = Literal["float32", "int8"]
"""How a kernel reads the activations: as float32 (exact weights, float32 sums), or quantized to
8 bits per run of 32 with integer dot products (llama.cpp's arithmetic)."""

_Fn = Callable[..., object]
"""A bound C function (``ctypes`` releases the GIL while it runs)."""


@attrs.frozen
class MatvecKernels:
    """The compiled kernels by type: ``float32[type]`` (``mv_*``) and ``int8[type]`` (``qx_*``:
    quantize the float32 activations, then ``qv_*``). Both are called as
    ``kernel(blocks, x, y, M, N, K)``; the 8-bit ones return nonzero when out of memory."""

    float32: Mapping[GgmlType, _Fn]
    int8: Mapping[GgmlType, _Fn]


@functools.cache
def matvec_kernels() -> MatvecKernels | None:
    """The compiled kernels (built once per process, cached on disk), or ``None`` where they
    cannot run here."""
    flags = cpu_flags().split()
    if os.environ.get("QUANTDISPATCH_NATIVE") == "0" or not sys.platform.startswith("linux"):
        return None
    if platform.machine() not in ("x86_64", "AMD64") or not {"avx2", "fma", "f16c"} <= set(flags):
        return None
    lib = build_library("gguf_matvec", _SOURCE, _FLAGS)
    if lib is None:
        return None

    def bind(symbol: str, restype: type[ctypes.c_int] | None) -> _Fn:
        fn = getattr(lib, symbol)
        fn.restype = restype
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3
        return fn  # type: ignore[no-any-return]

    return MatvecKernels(float32={t: bind(f"mv_{name}", None) for t, name in _SYMBOLS.items()},
                         int8={t: bind(f"qx_{name}", ctypes.c_int) for t, name in _SYMBOLS.items()})


def _kernels(ggml_type: GgmlType) -> MatvecKernels:
    kernels = matvec_kernels()
    if kernels is None or ggml_type not in MATVEC_TYPES:
        raise ValueError(f"no fused matrix-vector kernel for {ggml_type.name} here; check matvec_kernels() first")
    return kernels


def _run(kernels: MatvecKernels, ggml_type: GgmlType, activations: Activations, blocks: torch.Tensor, x: torch.Tensor,
         y: torch.Tensor) -> None:
    """``y = x @ W.T`` on contiguous float32 ``x`` ``[M, K]`` and ``y`` ``[M, N]``."""
    m, k = x.shape
    table = kernels.float32 if activations == "float32" else kernels.int8
    if table[ggml_type](blocks.data_ptr(), x.data_ptr(), y.data_ptr(), m, y.shape[1], k):
        raise MemoryError(f"no memory for the 8-bit activations of a [{m}, {k}] input")


def gguf_matvec(x: torch.Tensor, blocks: torch.Tensor, ggml_type: GgmlType, out_features: int,
                activations: Activations = "float32") -> torch.Tensor:
    """``x @ W.T`` in float32, ``x`` ``[M, K]``, ``W`` the ``[out_features, K]`` weight whose GGML
    blocks ``blocks`` holds (uint8). Needs ``matvec_kernels()``.

    Raises:
        ValueError: the type has no kernel, or the shapes do not agree.
    """
    kernels = _kernels(ggml_type)
    per_block, size = BLOCK[ggml_type]
    m, k = x.shape
    if k % per_block or blocks.numel() != out_features * (k // per_block) * size or blocks.dtype != torch.uint8:
        raise ValueError(f"{ggml_type.name} blocks of {blocks.numel()} bytes do not make a [{out_features}, {k}] weight")
    y = torch.empty(m, out_features, dtype=torch.float32)
    _run(kernels, ggml_type, activations, blocks.contiguous(), x.to(torch.float32).contiguous(), y)
    return y


class GgufMatvecLinear(GgufLinear):
    """``GgufLinear`` whose few-row forwards (decode) run a fused kernel on the blocks in place;
    more rows (prefill), other devices and autograd keep ``GgufLinear``'s path.

    ``activations`` picks the arithmetic: ``"float32"`` (``cpu-gguf-matvec``) or ``"int8"``
    (``cpu-gguf-q8dot``).
    """

    def __init__(self, raw: torch.Tensor, ggml_type: GgmlType, out_features: int, in_features: int,
                 bias: torch.Tensor | None = None, activations: Activations = "float32") -> None:
        self._kernels = _kernels(ggml_type)
        if in_features % BLOCK[ggml_type][0]:
            raise ValueError(f"in_features {in_features} is not a whole number of {ggml_type.name} blocks "
                             f"({BLOCK[ggml_type][0]} weights each)")
        super().__init__(raw, ggml_type, out_features, in_features, bias)
        if not self.qweight.is_contiguous():
            self.qweight = self.qweight.contiguous()
        if self.bias is not None:
            self.bias = self.bias.to(torch.float32)
        self.activations: Activations = activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.numel() // self.in_features
        if m > FUSED_ROWS or x.device.type != "cpu" or not x.dtype.is_floating_point or x.requires_grad and torch.is_grad_enabled():
            return super().forward(x)
        xf = x.reshape(m, self.in_features)
        if xf.dtype != torch.float32 or not xf.is_contiguous():
            xf = xf.to(torch.float32).contiguous()
        y = torch.empty(m, self.out_features)
        _run(self._kernels, self.ggml_type, self.activations, self.qweight, xf, y)
        if self.bias is not None:
            y += self.bias  # in float32 (the module keeps it so), then one rounding to the activations' dtype
        result: torch.Tensor = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel=fused matvec, activations={self.activations}"


def matvec_linears(activations: Activations = "float32") -> Mapping[GgmlType, PackedLinearFactory]:
    """The packed module of every type with a kernel here (empty where they cannot be built): the
    table ``packed_linear`` takes as ``preferred`` on ``cpu-gguf-matvec`` / ``cpu-gguf-q8dot``."""
    if matvec_kernels() is None:
        return {}

    def make(raw: torch.Tensor, ggml_type: GgmlType, out_features: int, in_features: int,
             bias: torch.Tensor | None) -> GgufMatvecLinear:
        return GgufMatvecLinear(raw, ggml_type, out_features, in_features, bias, activations)

    return dict.fromkeys(MATVEC_TYPES, make)
