/* Fused GGUF matrix-vector products on the blocks in place (see matvec.py). Block sizes come from
   quantdispatch's block table as -D defines (half.h): T_WEIGHTS and T_BYTES for each type T. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "half.h"

#define RUNS(T) (T##_WEIGHTS / 32)                    /* runs of 32 weights per block */

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
#define KERNEL(NAME, PREP, RUN, T)                                                             \
void NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K) {      \
    const int64_t blocks = K / T##_WEIGHTS, row_bytes = blocks * T##_BYTES;                    \
    for (int64_t n = 0; n < N; n++) {                                                          \
        const uint8_t *wr = w + n * row_bytes;                                                 \
        int64_t mi = 0;                                                                        \
        for (; mi + 4 <= M; mi += 4) {                                                         \
            const float *x0 = x + mi * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;            \
            __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0; \
            for (int64_t bi = 0; bi < blocks; bi++) {                                          \
              const uint8_t *bp = wr + bi * T##_BYTES; ctx_t t; PREP(bp, &t);                  \
              for (int j = 0; j < RUNS(T); j++) {                                              \
                __m256 v[4]; RUN(bp, &t, j, v);                                                \
                const int64_t k = (bi * RUNS(T) + j) * 32;                                     \
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
              const uint8_t *bp = wr + bi * T##_BYTES; ctx_t t; PREP(bp, &t);                  \
              for (int j = 0; j < RUNS(T); j++) {                                              \
                __m256 v[4]; RUN(bp, &t, j, v);                                                \
                const int64_t k = (bi * RUNS(T) + j) * 32;                                     \
                a0 = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(x0 + k), a0);                       \
                a1 = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x0 + k + 8), a1);                   \
                a2 = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x0 + k + 16), a2);                  \
                a3 = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x0 + k + 24), a3);                  \
            } }                                                                                \
            y[mi * N + n] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); \
        }                                                                                      \
    }                                                                                          \
}

KERNEL(mv_q4_0, prep_q4_0, run_q4_0, Q4_0)
KERNEL(mv_q4_1, prep_q4_1, run_q4_1, Q4_1)

/* The super-block types (Q4_K, Q6_K) have a loop per row over a row's super-blocks, and one
   driver per arithmetic for the output and input rows; within a super-block, runs that share
   bytes are expanded from one load (Q4_K's runs 2p and 2p+1 are the low and high nibbles of the
   same 32 bytes; a Q6_K half's four runs share its ql and qh). */
#define FDRIVER(NAME, ROW, T)                                                                  \
void NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K) {      \
    for (int64_t n = 0; n < N; n++)                                                            \
        for (int64_t mi = 0; mi < M; mi++) y[mi * N + n] = ROW(w + n * (K / T##_WEIGHTS) * T##_BYTES, x + mi * K, K / T##_WEIGHTS); \
}
#define QDRIVER(NAME, ROW, T)                                                                  \
void NAME(const uint8_t *w, const int8_t *xq, const float *xd, const float *xs, float *y,      \
          int64_t M, int64_t N, int64_t K) {                                                   \
    for (int64_t n = 0; n < N; n++)                                                            \
        for (int64_t mi = 0; mi < M; mi++)                                                     \
            y[mi * N + n] = ROW(w + n * (K / T##_WEIGHTS) * T##_BYTES, xq + mi * K, xd + mi * (K / 32), xs + mi * (K / 32), K / T##_WEIGHTS); \
}

static inline float frow_q4_k(const uint8_t *wr, const float *xm, int64_t blocks) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * Q4_K_BYTES; ctx_t t; prep_q4_k(b, &t);
        for (int p = 0; p < 4; p++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * p));
            const __m256i nib[2] = {_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)};
            for (int e = 0; e < 2; e++) {
                const int j = 2 * p + e;
                const __m128i lo = _mm256_castsi256_si128(nib[e]), hi = _mm256_extracti128_si256(nib[e], 1);
                const __m256 sv = _mm256_set1_ps(t.s[j]), cv = _mm256_set1_ps(t.c[j]);
                const float *xk = xm + (bi * RUNS(Q4_K) + j) * 32;
                a0 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(lo), sv, cv), _mm256_loadu_ps(xk), a0);
                a1 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(_mm_srli_si128(lo, 8)), sv, cv), _mm256_loadu_ps(xk + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(hi), sv, cv), _mm256_loadu_ps(xk + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_fmadd_ps(F8(_mm_srli_si128(hi, 8)), sv, cv), _mm256_loadu_ps(xk + 24), a3);
            }
        }
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}
FDRIVER(mv_q4_k, frow_q4_k, Q4_K)
KERNEL(mv_q8_0, prep_q8_0, run_q8_0, Q8_0)

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
        const uint8_t *b = wr + bi * Q6_K_BYTES; ctx_t t; prep_q6_k(b, &t);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_codes(b, h, q);
            for (int r = 0; r < 4; r++) {
                const __m256i c = _mm256_sub_epi8(q[r], o32);
                const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
                const __m256 s0 = _mm256_set1_ps(t.s[8 * h + 2 * r]), s1 = _mm256_set1_ps(t.s[8 * h + 2 * r + 1]);
                const float *xk = xm + (bi * RUNS(Q6_K) + 4 * h + r) * 32;
                a0 = _mm256_fmadd_ps(_mm256_mul_ps(S8(lo), s0), _mm256_loadu_ps(xk), a0);
                a1 = _mm256_fmadd_ps(_mm256_mul_ps(S8(_mm_srli_si128(lo, 8)), s0), _mm256_loadu_ps(xk + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_mul_ps(S8(hi), s1), _mm256_loadu_ps(xk + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_mul_ps(S8(_mm_srli_si128(hi, 8)), s1), _mm256_loadu_ps(xk + 24), a3);
            }
        }
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}
FDRIVER(mv_q6_k, frow_q6_k, Q6_K)

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
#define QKERNEL(NAME, PREP, QRUN, T)                                                           \
void NAME(const uint8_t *w, const int8_t *xq, const float *xd, const float *xs, float *y,      \
          int64_t M, int64_t N, int64_t K) {                                                   \
    const int64_t blocks = K / T##_WEIGHTS, row_bytes = blocks * T##_BYTES, R = K / 32;        \
    for (int64_t n = 0; n < N; n++) {                                                          \
        const uint8_t *wr = w + n * row_bytes;                                                 \
        for (int64_t mi = 0; mi < M; mi++) {                                                   \
            const int8_t *xm = xq + mi * K;                                                    \
            const float *dm = xd + mi * R, *sm = xs + mi * R;                                  \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;                                          \
            float off = 0.0f;                                                                  \
            for (int64_t bi = 0; bi < blocks; bi++) {                                          \
                const uint8_t *bp = wr + bi * T##_BYTES; ctx_t t; PREP(bp, &t);                \
                for (int j = 0; j < RUNS(T); j++) {                                            \
                    const int64_t u = bi * RUNS(T) + j; __m256 sc;                             \
                    const __m256 p = _mm256_cvtepi32_ps(QRUN(bp, &t, j, xm + 32 * u, dm[u], &sc)); \
                    if (u & 1) a1 = _mm256_fmadd_ps(p, sc, a1); else a0 = _mm256_fmadd_ps(p, sc, a0); \
                    off += t.c[j] * sm[u];                                                     \
                }                                                                              \
            }                                                                                  \
            y[mi * N + n] = hsum(_mm256_add_ps(a0, a1)) + off;                                 \
        }                                                                                      \
    }                                                                                          \
}

QKERNEL(qv_q4_0, prep_q4_0, qrun_q4_0, Q4_0)
QKERNEL(qv_q4_1, prep_q4_1, qrun_q4_1, Q4_1)
QKERNEL(qv_q8_0, prep_q8_0, qrun_q8_0, Q8_0)

static inline float qrow_q4_k(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, int64_t blocks) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    float off = 0.0f;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * Q4_K_BYTES; ctx_t t; prep_q4_k(b, &t);
        for (int p = 0; p < 4; p++) {
            const int64_t u = bi * RUNS(Q4_K) + 2 * p;
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * p));
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(lo, XQ(xm + 32 * u))), _mm256_set1_ps(t.s[2 * p] * dm[u]), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(hi, XQ(xm + 32 * u + 32))), _mm256_set1_ps(t.s[2 * p + 1] * dm[u + 1]), a1);
            off += t.c[2 * p] * sm[u] + t.c[2 * p + 1] * sm[u + 1];
        }
    }
    return hsum(_mm256_add_ps(a0, a1)) + off;
}
QDRIVER(qv_q4_k, qrow_q4_k, Q4_K)

static inline float qrow_q6_k(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, int64_t blocks) {
    (void)sm;
    const __m256i o32 = _mm256_set1_epi8(32);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * Q6_K_BYTES; ctx_t t; prep_q6_k(b, &t);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_codes(b, h, q);
            for (int r = 0; r < 4; r++) {
                const int64_t u = bi * RUNS(Q6_K) + 4 * h + r;
                const __m256 p = _mm256_cvtepi32_ps(dot_ss(_mm256_sub_epi8(q[r], o32), XQ(xm + 32 * u)));
                const __m256 sc = _mm256_set_m128(_mm_set1_ps(t.s[8 * h + 2 * r + 1] * dm[u]), _mm_set1_ps(t.s[8 * h + 2 * r] * dm[u]));
                if (r & 1) a1 = _mm256_fmadd_ps(p, sc, a1); else a0 = _mm256_fmadd_ps(p, sc, a0);
            }
        }
    }
    return hsum(_mm256_add_ps(a0, a1));
}
QDRIVER(qv_q6_k, qrow_q6_k, Q6_K)

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
