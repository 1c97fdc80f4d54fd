/* Fused GGUF matrix-vector products on the blocks in place (see matvec.py). Block sizes come from
   quantdispatch's block table as -D defines (half.h): T_WEIGHTS and T_BYTES for each type T. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "half.h"

/* Threads: every entry point takes nt and splits the output rows N into static chunks (each
   output is computed by one thread with the same code, so the result does not depend on nt);
   tiny problems stay on one thread, where the fork/join costs more than the work. */
static inline int team(int64_t nt, int64_t N, int64_t work) {
    if (nt < 1 || work < ((int64_t)1 << 18)) return 1;
    return (int)(nt < N ? nt : N);
}
#define PARALLEL_ROWS(nt, N, work) const int team_ = team(nt, N, work); (void)team_;                 \
    _Pragma("omp parallel for num_threads(team_) schedule(static)")

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
void NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K, int64_t nt) { \
    const int64_t blocks = K / T##_WEIGHTS, row_bytes = blocks * T##_BYTES;                    \
    PARALLEL_ROWS(nt, N, M * N * K)                                                            \
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
void NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K, int64_t nt) { \
    PARALLEL_ROWS(nt, N, M * N * K)                                                            \
    for (int64_t n = 0; n < N; n++)                                                            \
        for (int64_t mi = 0; mi < M; mi++) y[mi * N + n] = ROW(w + n * (K / T##_WEIGHTS) * T##_BYTES, x + mi * K, K / T##_WEIGHTS); \
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

/* ---- 8-bit activations: llama.cpp's arithmetic (its Q8_0 dot products) ----
   quant_x: each run of 32 activations as int8 codes xq with scale xd = max|x| / 127 (round to
   nearest), xs = xd * sum(xq) (the offset term of types with a min), and xc: for each run, 8 int32,
   -z * (the sum of the 4 codes of each 4-byte lane), z the type's code offset (a weight is its
   unsigned code less z): the AVX-512 paths start their unsigned x signed dot products from it.

   Every path (AVX2, AVX-512BW, AVX-512 VNNI) computes, for each run of 32 and each of its 8
   lanes of 4 bytes, the exact int32 sum of (weight code) x (activation code) over the lane (no
   int16 saturation: |weight| <= 128, |code| <= 127, two products per int16); converts it to float
   and multiplies it into the run's accumulator (even runs in a0, odd runs in a1; a 512-bit
   register holds a0 in its low half, a1 in its high half) with the same float scale, in the same
   order; then sums a0 + a1 the same way. So the levels agree bit for bit. */
static inline __m256i dot_us(__m256i u, __m256i s) {   /* unsigned x signed bytes: 8 x int32 partial sums */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

static void quant_x(const float *x, int8_t *xq, float *xd, float *xs, int32_t *xc, int64_t M, int64_t K, int z, int64_t nt) {
    const int64_t runs = M * K / 32;
    PARALLEL_ROWS(nt, runs, runs * 32 * 4)       /* one thread for a decode row: M K < 2^16 */
    for (int64_t r = 0; r < runs; r++) {
        const float *v = x + 32 * r;
        /* The common case in AVX2 at every level (the same exact operations as the scalar loop
           below: |v| by clearing the sign, the max, one multiply, +-0.5 and truncation, integer
           sums); runs with a NaN or an infinity take the scalar loop. */
        __m256 a[4], mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        const __m256 sign = _mm256_set1_ps(-0.0f);
        for (int i = 0; i < 4; i++) {
            a[i] = _mm256_loadu_ps(v + 8 * i);
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, a[i]));
            const __m256 zero = _mm256_mul_ps(a[i], _mm256_setzero_ps());
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(zero, zero, _CMP_UNORD_Q));
        }
        if (!_mm256_movemask_ps(bad)) {
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            const float amax = _mm_cvtss_f32(m4), d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            const __m256 idv = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f);
            __m256i q[4];
            for (int i = 0; i < 4; i++) {
                const __m256 f = _mm256_mul_ps(a[i], idv);
                const __m256 h = _mm256_blendv_ps(half, _mm256_xor_ps(half, sign), _mm256_cmp_ps(f, _mm256_setzero_ps(), _CMP_LT_OQ));
                q[i] = _mm256_cvttps_epi32(_mm256_add_ps(f, h));
            }
            const __m256i packed = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])),
                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(xq + 32 * r), packed);
            const __m256i lanes = dot_us(_mm256_set1_epi8(1), packed);     /* the 8 sums of 4 codes */
            _mm256_storeu_si256((__m256i *)(xc + 8 * r), _mm256_mullo_epi32(lanes, _mm256_set1_epi32(-z)));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
            s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
            xd[r] = d; xs[r] = d * (float)_mm_cvtsi128_si32(s4);
            continue;
        }
        float amax = 0.0f, probe = 0.0f;
        for (int i = 0; i < 32; i++) {
            const float a = v[i] < 0.0f ? -v[i] : v[i];
            amax = a > amax ? a : amax;
            probe += v[i] * 0.0f;                          /* NaN iff some v is NaN or infinite */
        }
        if (probe != 0.0f) {                               /* no codes for it: the outputs it feeds become NaN */
            for (int i = 0; i < 32; i++) xq[32 * r + i] = 0;
            for (int i = 0; i < 8; i++) xc[8 * r + i] = 0;
            xd[r] = probe; xs[r] = probe;
            continue;
        }
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0, lane = 0;
        for (int i = 0; i < 32; i++) {
            const float f = v[i] * id;
            const int q = (int)(f + (f < 0.0f ? -0.5f : 0.5f));
            xq[32 * r + i] = (int8_t)q; sum += q; lane += q;
            if ((i & 3) == 3) { xc[8 * r + i / 4] = -z * lane; lane = 0; }
        }
        xd[r] = d; xs[r] = d * (float)sum;
    }
}

static inline __m256i dot_ss(__m256i a, __m256i b) {   /* signed x signed, by moving a's sign onto b */
    return dot_us(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}
static inline __m256i nib32(const uint8_t *p) {        /* 16 bytes: low nibbles 0..15, high nibbles 16..31 */
    const __m128i v = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}
#define XQ(p) _mm256_loadu_si256((const __m256i *)(p))
#define CV(v) _mm256_cvtepi32_ps(v)

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#define QD_AVX512 1
#define XQ512(p) _mm512_loadu_si512((const void *)(p))
/* corr + the 16 lane sums of unsigned u x signed s (VNNI: one instruction; else BW's maddubs,
   exact while two products fit int16, i.e. u <= 128). */
static inline __m512i dot512(__m512i corr, __m512i u, __m512i s) {
#if defined(__AVX512VNNI__)
    return _mm512_dpbusd_epi32(corr, u, s);
#else
    return _mm512_add_epi32(corr, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}
static inline __m512 scale2(float lo, float hi) {     /* lo in the low 8 lanes (even run), hi in the high 8 */
    return _mm512_insertf32x8(_mm512_set1_ps(lo), _mm256_set1_ps(hi), 1);
}
static inline float hsum512(__m512 a) { return hsum(_mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1))); }
#endif

/* y[m, n] = sum over runs u of scale_u * xd[m, u] * <codes, xq[m, run u]> (+ offset_u * xs[m, u]). */
#define QDRIVER(NAME, ROW, T)                                                                  \
void NAME(const uint8_t *w, const int8_t *xq, const float *xd, const float *xs, const int32_t *xc, float *y, \
          int64_t M, int64_t N, int64_t K, int64_t nt) {                                       \
    const int64_t R = K / 32, blocks = K / T##_WEIGHTS, row_bytes = blocks * T##_BYTES;        \
    PARALLEL_ROWS(nt, N, M * N * K)                                                            \
    for (int64_t n = 0; n < N; n++)                                                            \
        for (int64_t mi = 0; mi < M; mi++)                                                     \
            y[mi * N + n] = ROW(w + n * row_bytes, xq + mi * K, xd + mi * R, xs + mi * R, xc + mi * R * 8, blocks); \
}

/* Q4_0: weight q - 8 (q a nibble); z = 8. */
static inline __m256 q4_0_run(const uint8_t *b, const int8_t *x) {
    return CV(dot_ss(_mm256_sub_epi8(nib32(b + 2), _mm256_set1_epi8(8)), XQ(x)));
}
static inline float qrow_q4_0(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, const int32_t *cm, int64_t blocks) {
    (void)sm; (void)cm;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t u = 0;
#if defined(QD_AVX512)
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    for (; u + 2 <= blocks; u += 2) {
        const uint8_t *b0 = wr + u * Q4_0_BYTES, *b1 = b0 + Q4_0_BYTES;
        const __m256i c0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + 2)));
        const __m256i c1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b1 + 2)));
        __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(c0), c1, 1);          /* [q0 q0 q1 q1] */
        q = _mm512_and_si512(_mm512_mask_srli_epi16(q, (__mmask32)0xFF00FF00u, q, 4), m4); /* [lo0 hi0 lo1 hi1] */
        const __m512i p = dot512(XQ512(cm + 8 * u), q, XQ512(xm + 32 * u));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale2(h2f(b0) * dm[u], h2f(b1) * dm[u + 1]), acc);
    }
    a0 = _mm512_castps512_ps256(acc); a1 = _mm512_extractf32x8_ps(acc, 1);
#else
    for (; u + 2 <= blocks; u += 2) {
        const uint8_t *b0 = wr + u * Q4_0_BYTES, *b1 = b0 + Q4_0_BYTES;
        a0 = _mm256_fmadd_ps(q4_0_run(b0, xm + 32 * u), _mm256_set1_ps(h2f(b0) * dm[u]), a0);
        a1 = _mm256_fmadd_ps(q4_0_run(b1, xm + 32 * u + 32), _mm256_set1_ps(h2f(b1) * dm[u + 1]), a1);
    }
#endif
    if (u < blocks) {
        const uint8_t *b0 = wr + u * Q4_0_BYTES;
        a0 = _mm256_fmadd_ps(q4_0_run(b0, xm + 32 * u), _mm256_set1_ps(h2f(b0) * dm[u]), a0);
    }
    return hsum(_mm256_add_ps(a0, a1));
}
QDRIVER(qv_q4_0, qrow_q4_0, Q4_0)

/* Q8_0: weight the signed byte; z = 128 (VNNI reads it as the unsigned byte ^ 0x80). */
static inline __m256 q8_0_run(const uint8_t *b, const int8_t *x) { return CV(dot_ss(XQ(b + 2), XQ(x))); }
static inline float qrow_q8_0(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, const int32_t *cm, int64_t blocks) {
    (void)sm; (void)cm;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t u = 0;
#if defined(QD_AVX512)
    __m512 acc = _mm512_setzero_ps();
    for (; u + 2 <= blocks; u += 2) {
        const uint8_t *b0 = wr + u * Q8_0_BYTES, *b1 = b0 + Q8_0_BYTES;
        const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(XQ(b0 + 2)), XQ(b1 + 2), 1);
#if defined(__AVX512VNNI__)
        const __m512i p = _mm512_dpbusd_epi32(XQ512(cm + 8 * u), _mm512_xor_si512(q, _mm512_set1_epi8((char)0x80)), XQ512(xm + 32 * u));
#else
        const __m512i xs = _mm512_mask_sub_epi8(XQ512(xm + 32 * u), _mm512_movepi8_mask(q), _mm512_setzero_si512(), XQ512(xm + 32 * u));
        const __m512i p = dot512(_mm512_setzero_si512(), _mm512_abs_epi8(q), xs);
#endif
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale2(h2f(b0) * dm[u], h2f(b1) * dm[u + 1]), acc);
    }
    a0 = _mm512_castps512_ps256(acc); a1 = _mm512_extractf32x8_ps(acc, 1);
#else
    for (; u + 2 <= blocks; u += 2) {
        const uint8_t *b0 = wr + u * Q8_0_BYTES, *b1 = b0 + Q8_0_BYTES;
        a0 = _mm256_fmadd_ps(q8_0_run(b0, xm + 32 * u), _mm256_set1_ps(h2f(b0) * dm[u]), a0);
        a1 = _mm256_fmadd_ps(q8_0_run(b1, xm + 32 * u + 32), _mm256_set1_ps(h2f(b1) * dm[u + 1]), a1);
    }
#endif
    if (u < blocks) {
        const uint8_t *b0 = wr + u * Q8_0_BYTES;
        a0 = _mm256_fmadd_ps(q8_0_run(b0, xm + 32 * u), _mm256_set1_ps(h2f(b0) * dm[u]), a0);
    }
    return hsum(_mm256_add_ps(a0, a1));
}
QDRIVER(qv_q8_0, qrow_q8_0, Q8_0)

/* Q4_1: weight d q + m (q a nibble): AVX2 at every level. */
static inline float qrow_q4_1(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, const int32_t *cm, int64_t blocks) {
    (void)cm;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    float off = 0.0f;
    for (int64_t u = 0; u < blocks; u++) {
        const uint8_t *b = wr + u * Q4_1_BYTES;
        const __m256 p = CV(dot_us(nib32(b + 4), XQ(xm + 32 * u))), sc = _mm256_set1_ps(h2f(b) * dm[u]);
        if (u & 1) a1 = _mm256_fmadd_ps(p, sc, a1); else a0 = _mm256_fmadd_ps(p, sc, a0);
        off += h2f(b + 2) * sm[u];
    }
    return hsum(_mm256_add_ps(a0, a1)) + off;
}
QDRIVER(qv_q4_1, qrow_q4_1, Q4_1)

/* Q4_K: sub-block j's weight d sc[j] q - dmin m[j]; the mins ride on xs; z = 0. */
static inline float qrow_q4_k(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, const int32_t *cm, int64_t blocks) {
    (void)cm;
    float off = 0.0f;
#if defined(QD_AVX512)
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
#else
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
#endif
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * Q4_K_BYTES; ctx_t t; prep_q4_k(b, &t);
        for (int p = 0; p < 4; p++) {
            const int64_t u = bi * RUNS(Q4_K) + 2 * p;
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * p));
#if defined(QD_AVX512)
            const __m512i q = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), m4);
            const __m512i d = dot512(_mm512_setzero_si512(), q, XQ512(xm + 32 * u));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale2(t.s[2 * p] * dm[u], t.s[2 * p + 1] * dm[u + 1]), acc);
#else
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            a0 = _mm256_fmadd_ps(CV(dot_us(lo, XQ(xm + 32 * u))), _mm256_set1_ps(t.s[2 * p] * dm[u]), a0);
            a1 = _mm256_fmadd_ps(CV(dot_us(hi, XQ(xm + 32 * u + 32))), _mm256_set1_ps(t.s[2 * p + 1] * dm[u + 1]), a1);
#endif
            off += t.c[2 * p] * sm[u] + t.c[2 * p + 1] * sm[u + 1];
        }
    }
#if defined(QD_AVX512)
    return hsum512(acc) + off;
#else
    return hsum(_mm256_add_ps(a0, a1)) + off;
#endif
}
QDRIVER(qv_q4_k, qrow_q4_k, Q4_K)

/* Q6_K: weight d sc[i] (q - 32), q 6 bits; z = 32. */
static inline float qrow_q6_k(const uint8_t *wr, const int8_t *xm, const float *dm, const float *sm, const int32_t *cm, int64_t blocks) {
    (void)sm; (void)cm;
#if defined(QD_AVX512)
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    const __m512i c01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i c23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    const __m512i quad = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * Q6_K_BYTES; ctx_t t; prep_q6_k(b, &t);
        for (int h = 0; h < 2; h++) {
            const int64_t u = bi * RUNS(Q6_K) + 4 * h;
            const __m512i l = XQ512(b + 64 * h);
            const __m512i qh = _mm512_broadcast_i64x4(XQ(b + 128 + 32 * h));
            const __m512i q01 = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, c01), m2), 4));
            const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                                _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, c23), m2), 4));
            const __m512i p01 = dot512(XQ512(cm + 8 * u), q01, XQ512(xm + 32 * u));
            const __m512i p23 = dot512(XQ512(cm + 8 * u + 16), q23, XQ512(xm + 32 * u + 64));
            const float *s = t.s + 8 * h;
            const __m512 s01 = _mm512_permutexvar_ps(quad, _mm512_castps128_ps512(_mm_setr_ps(s[0] * dm[u], s[1] * dm[u], s[2] * dm[u + 1], s[3] * dm[u + 1])));
            const __m512 s23 = _mm512_permutexvar_ps(quad, _mm512_castps128_ps512(_mm_setr_ps(s[4] * dm[u + 2], s[5] * dm[u + 2], s[6] * dm[u + 3], s[7] * dm[u + 3])));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p01), s01, acc);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p23), s23, acc);
        }
    }
    return hsum512(acc);
#else
    const __m256i o32 = _mm256_set1_epi8(32);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (int64_t bi = 0; bi < blocks; bi++) {
        const uint8_t *b = wr + bi * Q6_K_BYTES; ctx_t t; prep_q6_k(b, &t);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_codes(b, h, q);
            for (int r = 0; r < 4; r++) {
                const int64_t u = bi * RUNS(Q6_K) + 4 * h + r;
                const __m256 p = CV(dot_ss(_mm256_sub_epi8(q[r], o32), XQ(xm + 32 * u)));
                const __m256 sc = _mm256_set_m128(_mm_set1_ps(t.s[8 * h + 2 * r + 1] * dm[u]), _mm_set1_ps(t.s[8 * h + 2 * r] * dm[u]));
                if (r & 1) a1 = _mm256_fmadd_ps(p, sc, a1); else a0 = _mm256_fmadd_ps(p, sc, a0);
            }
        }
    }
    return hsum(_mm256_add_ps(a0, a1));
#endif
}
QDRIVER(qv_q6_k, qrow_q6_k, Q6_K)

/* The 8-bit entry points take float32 activations like the float32 ones: they quantize them once
   (quant_x, before the parallel region of the rows) into buffers of their own, then run the
   integer kernel. One call from Python; nonzero when out of memory. */
#define QENTRY(NAME, KERNEL, Z)                                                                \
int NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K, int64_t nt) { \
    const int64_t R = M * K / 32;                                                              \
    int8_t *xq = (int8_t *)malloc((size_t)(M * K) + 64);                                       \
    float *xf = (float *)malloc((size_t)(2 * R) * sizeof(float));                              \
    int32_t *xc = (int32_t *)malloc((size_t)(8 * R) * sizeof(int32_t) + 64);                   \
    if (xq == NULL || xf == NULL || xc == NULL) { free(xq); free(xf); free(xc); return -1; }   \
    quant_x(x, xq, xf, xf + R, xc, M, K, Z, nt);                                               \
    KERNEL(w, xq, xf, xf + R, xc, y, M, N, K, nt);                                             \
    free(xq); free(xf); free(xc);                                                              \
    return 0;                                                                                  \
}
QENTRY(qx_q4_0, qv_q4_0, 8)
QENTRY(qx_q4_1, qv_q4_1, 0)
QENTRY(qx_q4_k, qv_q4_k, 0)
QENTRY(qx_q8_0, qv_q8_0, 128)
QENTRY(qx_q6_k, qv_q6_k, 32)

/* ---- Repacked rows: groups of RG = 16 rows interleaved at load (repack.py) ----
   Rows 0..16G-1 (G = N / 16) are stored by group of 16 rows: a group's block (super-block) b
   holds its rows' block b region by region (a float16 scale, packed scales, codes: the table
   REGIONS below and in repack.py), each region as chunks of 2 or 4 bytes with chunk c of the 16
   rows side by side (16 x 2 or 16 x 4 bytes). Rows past 16G keep the file's layout at their own
   offsets, so the buffer has the file's size. The bytes do not depend on the SIMD level: a chunk
   of 4 code bytes per row is one int32 lane, 16 rows one 512-bit register (two 256-bit ones on
   AVX2), and a row's scale is one float lane (one cvtph for the 16).

   Arithmetic (every level): per row and unit (32 weights; Q6_K: 16), the exact int32 sum of
   (weight code) x (activation code), as unsigned codes plus the unit's correction (-z x the sum
   of its activation codes; Q8_0 below VNNI: signed codes, no correction), converted to float and multiplied into one float accumulator per row with the same
   scale as the row kernel above (block scale x activation scale), units in order; Q4_K's mins
   go to a second accumulator added at the end. Lane-wise operations only, so the AVX2 and AVX-512
   levels give the same bits; the rows past 16G take the row kernel (qrow_*). */
#define RG 16

#if defined(QD_AVX512)
typedef __m512i vi;
typedef __m512 vf;
static inline vi vi_load(const uint8_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline vi vi_set1(int32_t v) { return _mm512_set1_epi32(v); }
static inline vi vi_bcast4(const int8_t *p) { int32_t v; memcpy(&v, p, 4); return _mm512_set1_epi32(v); }
static inline vi vi_and(vi a, vi b) { return _mm512_and_si512(a, b); }
static inline vi vi_or(vi a, vi b) { return _mm512_or_si512(a, b); }
static inline vi vi_add(vi a, vi b) { return _mm512_add_epi32(a, b); }
static inline vi vi_srlw(vi a, int k) { return _mm512_srl_epi16(a, _mm_cvtsi32_si128(k)); }
static inline vi vi_sllw(vi a, int k) { return _mm512_sll_epi16(a, _mm_cvtsi32_si128(k)); }
static inline vi vi_srld(vi a, int k) { return _mm512_srl_epi32(a, _mm_cvtsi32_si128(k)); }
static inline vi vi_slld(vi a, int k) { return _mm512_sll_epi32(a, _mm_cvtsi32_si128(k)); }
static inline vi vi_srad(vi a, int k) { return _mm512_sra_epi32(a, _mm_cvtsi32_si128(k)); }
static inline vi vi_dot_u(vi acc, vi u, vi s) { return dot512(acc, u, s); }     /* u <= 128 */
static inline vi vi_dot_s(vi acc, vi a, vi s) {  /* signed a: VNNI on a ^ 0x80 (the caller's correction is -128 sum s) */
#if defined(__AVX512VNNI__)
    return _mm512_dpbusd_epi32(acc, _mm512_xor_si512(a, _mm512_set1_epi8((char)0x80)), s);
#else
    return dot512(acc, _mm512_abs_epi8(a), _mm512_mask_sub_epi8(s, _mm512_movepi8_mask(a), _mm512_setzero_si512(), s));
#endif
}
static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf vf_set1(float v) { return _mm512_set1_ps(v); }
static inline vf vf_cvt(vi a) { return _mm512_cvtepi32_ps(a); }
static inline vf vf_half(const uint8_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline void vf_store(float *p, vf a) { _mm512_storeu_ps(p, a); }
#if defined(__AVX512VNNI__)
#define Q8_Z_VNNI 1
#else
#define Q8_Z_VNNI 0
#endif
#else
typedef struct { __m256i l, h; } vi;
typedef struct { __m256 l, h; } vf;
#define V2(T, OP, a, b) ((T){OP((a).l, (b).l), OP((a).h, (b).h)})
static inline vi vi_load(const uint8_t *p) { return (vi){XQ(p), XQ(p + 32)}; }
static inline vi vi_set1(int32_t v) { return (vi){_mm256_set1_epi32(v), _mm256_set1_epi32(v)}; }
static inline vi vi_bcast4(const int8_t *p) { int32_t v; memcpy(&v, p, 4); return vi_set1(v); }
static inline vi vi_and(vi a, vi b) { return V2(vi, _mm256_and_si256, a, b); }
static inline vi vi_or(vi a, vi b) { return V2(vi, _mm256_or_si256, a, b); }
static inline vi vi_add(vi a, vi b) { return V2(vi, _mm256_add_epi32, a, b); }
static inline vi vi_srlw(vi a, int k) { const __m128i c = _mm_cvtsi32_si128(k); return (vi){_mm256_srl_epi16(a.l, c), _mm256_srl_epi16(a.h, c)}; }
static inline vi vi_sllw(vi a, int k) { const __m128i c = _mm_cvtsi32_si128(k); return (vi){_mm256_sll_epi16(a.l, c), _mm256_sll_epi16(a.h, c)}; }
static inline vi vi_srld(vi a, int k) { const __m128i c = _mm_cvtsi32_si128(k); return (vi){_mm256_srl_epi32(a.l, c), _mm256_srl_epi32(a.h, c)}; }
static inline vi vi_slld(vi a, int k) { const __m128i c = _mm_cvtsi32_si128(k); return (vi){_mm256_sll_epi32(a.l, c), _mm256_sll_epi32(a.h, c)}; }
static inline vi vi_srad(vi a, int k) { const __m128i c = _mm_cvtsi32_si128(k); return (vi){_mm256_sra_epi32(a.l, c), _mm256_sra_epi32(a.h, c)}; }
static inline vi vi_dot_u(vi acc, vi u, vi s) {
    return (vi){_mm256_add_epi32(acc.l, dot_us(u.l, s.l)), _mm256_add_epi32(acc.h, dot_us(u.h, s.h))};
}
static inline vi vi_dot_s(vi acc, vi a, vi s) {
    return (vi){_mm256_add_epi32(acc.l, dot_ss(a.l, s.l)), _mm256_add_epi32(acc.h, dot_ss(a.h, s.h))};
}
static inline vf vf_zero(void) { return (vf){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
static inline vf vf_set1(float v) { return (vf){_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
static inline vf vf_cvt(vi a) { return (vf){_mm256_cvtepi32_ps(a.l), _mm256_cvtepi32_ps(a.h)}; }
static inline vf vf_half(const uint8_t *p) {
    return (vf){_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)))};
}
static inline vf vf_mul(vf a, vf b) { return V2(vf, _mm256_mul_ps, a, b); }
static inline vf vf_add(vf a, vf b) { return V2(vf, _mm256_add_ps, a, b); }
static inline vf vf_sub(vf a, vf b) { return V2(vf, _mm256_sub_ps, a, b); }
static inline vf vf_fma(vf a, vf b, vf c) { return (vf){_mm256_fmadd_ps(a.l, b.l, c.l), _mm256_fmadd_ps(a.h, b.h, c.h)}; }
static inline void vf_store(float *p, vf a) { _mm256_storeu_ps(p, a.l); _mm256_storeu_ps(p + 8, a.h); }
#define Q8_Z_VNNI 0
#endif

/* One group (16 rows) against one input row: xm its codes, dm/sm per run of 32, cz the
   corrections per unit; y the 16 outputs. */
static inline void rg_q4_0(const uint8_t *g, const int8_t *xm, const float *dm, const float *sm, const int32_t *cz, float *y, int64_t K) {
    (void)sm;
    const vi m4 = vi_set1(0x0F0F0F0F);
    vf acc = vf_zero();
    for (int64_t u = 0; u < K / 32; u++) {
        const uint8_t *b = g + u * RG * Q4_0_BYTES;
        const int8_t *xk = xm + 32 * u;
        vi a0 = vi_set1(cz[u]), a1 = vi_set1(0);
        _Pragma("GCC unroll 8")
        for (int c = 0; c < 4; c++) {
            const vi q = vi_load(b + 2 * RG + 64 * c);
            a0 = vi_dot_u(a0, vi_and(q, m4), vi_bcast4(xk + 4 * c));
            a1 = vi_dot_u(a1, vi_and(vi_srlw(q, 4), m4), vi_bcast4(xk + 16 + 4 * c));
        }
        acc = vf_fma(vf_cvt(vi_add(a0, a1)), vf_mul(vf_half(b), vf_set1(dm[u])), acc);
    }
    vf_store(y, acc);
}

static inline void rg_q8_0(const uint8_t *g, const int8_t *xm, const float *dm, const float *sm, const int32_t *cz, float *y, int64_t K) {
    (void)sm;
    vf acc = vf_zero();
    for (int64_t u = 0; u < K / 32; u++) {
        const uint8_t *b = g + u * RG * Q8_0_BYTES;
        const int8_t *xk = xm + 32 * u;
        vi a0 = vi_set1(cz[u]), a1 = vi_set1(0);
        _Pragma("GCC unroll 8")
        for (int c = 0; c < 8; c += 2) {
            a0 = vi_dot_s(a0, vi_load(b + 2 * RG + 64 * c), vi_bcast4(xk + 4 * c));
            a1 = vi_dot_s(a1, vi_load(b + 2 * RG + 64 * c + 64), vi_bcast4(xk + 4 * c + 4));
        }
        acc = vf_fma(vf_cvt(vi_add(a0, a1)), vf_mul(vf_half(b), vf_set1(dm[u])), acc);
    }
    vf_store(y, acc);
}

/* Q4_K group block: d (16 halves), dmin (16 halves), the 12 scale bytes as 3 planes of 4, the
   128 code bytes as 32 planes of 4. Sub-block j: scale d sc[j], min dmin m[j] (6 bits each,
   unpacked from the planes lane-wise as ggml does). */
static inline vi byte_of(vi v, int j) { return vi_and(vi_srld(v, 8 * j), vi_set1(0xFF)); }
static inline void rg_q4_k(const uint8_t *g, const int8_t *xm, const float *dm, const float *sm, const int32_t *cz, float *y, int64_t K) {
    (void)cz;
    const vi m4 = vi_set1(0x0F0F0F0F), k1 = vi_set1(0x3F3F3F3F), k3 = vi_set1(0x03030303);
    vf acc = vf_zero(), off = vf_zero();
    for (int64_t bi = 0; bi < K / Q4_K_WEIGHTS; bi++) {
        const uint8_t *b = g + bi * RG * Q4_K_BYTES;
        const vf d = vf_half(b), dmin = vf_half(b + 2 * RG);
        const vi s0 = vi_load(b + 4 * RG), s1 = vi_load(b + 8 * RG), s2 = vi_load(b + 12 * RG);
        const vi sc[2] = {vi_and(s0, k1), vi_or(vi_and(s2, m4), vi_slld(vi_and(vi_srld(s0, 6), k3), 4))};
        const vi mn[2] = {vi_and(s1, k1), vi_or(vi_and(vi_srld(s2, 4), m4), vi_slld(vi_and(vi_srld(s1, 6), k3), 4))};
        const uint8_t *qs = b + 16 * RG;
        _Pragma("GCC unroll 8")
        for (int p = 0; p < 4; p++) {
            const int8_t *xk = xm + bi * Q4_K_WEIGHTS + 64 * p;
            vi lo = vi_set1(0), hi = lo;
            _Pragma("GCC unroll 8")
            for (int c = 0; c < 8; c++) {
                const uint8_t *at = qs + 64 * (8 * p + c);
                const vi q = vi_load(at);
                lo = vi_dot_u(lo, vi_and(q, m4), vi_bcast4(xk + 4 * c));
                hi = vi_dot_u(hi, vi_and(vi_srlw(q, 4), m4), vi_bcast4(xk + 32 + 4 * c));
            }
            _Pragma("GCC unroll 8")
            for (int e = 0; e < 2; e++) {
                const int j = 2 * p + e;
                const int64_t u = bi * RUNS(Q4_K) + j;
                const vf s = vf_mul(d, vf_cvt(byte_of(sc[j / 4], j % 4)));
                acc = vf_fma(vf_cvt(e ? hi : lo), vf_mul(s, vf_set1(dm[u])), acc);
                off = vf_sub(off, vf_mul(vf_mul(dmin, vf_cvt(byte_of(mn[j / 4], j % 4))), vf_set1(sm[u])));
            }
        }
    }
    vf_store(y, vf_add(acc, off));
}

/* Q6_K group block: d (16 halves), the 16 scale bytes as 4 planes, then for each half h and step
   c the planes of ql[64h + 4c], ql[64h + 32 + 4c], qh[32h + 4c] (REGIONS_Q6_K: read in order). */
static inline void rg_q6_k(const uint8_t *g, const int8_t *xm, const float *dm, const float *sm, const int32_t *cz, float *y, int64_t K) {
    (void)sm;
    const vi m4 = vi_set1(0x0F0F0F0F), m30 = vi_set1(0x30303030);
    vf acc = vf_zero();
    for (int64_t bi = 0; bi < K / Q6_K_WEIGHTS; bi++) {
        const uint8_t *b = g + bi * RG * Q6_K_BYTES;
        const vf d = vf_half(b);
        const uint8_t *scp = b + 2 * RG, *codes = b + 18 * RG;
        for (int h = 0; h < 2; h++) {
            const int8_t *xk = xm + bi * Q6_K_WEIGHTS + 128 * h;
            const int32_t *zu = cz + bi * 16 + 8 * h;
            vi a[8];
            _Pragma("GCC unroll 8")
            for (int i = 0; i < 8; i++) a[i] = vi_set1(zu[i]);    /* a[2r + e]: run r, half e of it */
            _Pragma("GCC unroll 8")
            for (int c = 0; c < 8; c++) {
                const int e = c >= 4;
                const uint8_t *at = codes + 3 * 64 * (8 * h + c);
                const vi la = vi_load(at), lb = vi_load(at + 64), hb = vi_load(at + 128);
                const vi q0 = vi_or(vi_and(la, m4), vi_and(vi_sllw(hb, 4), m30));   /* qh bits 2i, 2i+1 to 4, 5 */
                const vi q1 = vi_or(vi_and(lb, m4), vi_and(vi_sllw(hb, 2), m30));
                const vi q2 = vi_or(vi_and(vi_srlw(la, 4), m4), vi_and(hb, m30));
                const vi q3 = vi_or(vi_and(vi_srlw(lb, 4), m4), vi_and(vi_srlw(hb, 2), m30));
                a[0 + e] = vi_dot_u(a[0 + e], q0, vi_bcast4(xk + 4 * c));
                a[2 + e] = vi_dot_u(a[2 + e], q1, vi_bcast4(xk + 32 + 4 * c));
                a[4 + e] = vi_dot_u(a[4 + e], q2, vi_bcast4(xk + 64 + 4 * c));
                a[6 + e] = vi_dot_u(a[6 + e], q3, vi_bcast4(xk + 96 + 4 * c));
            }
            _Pragma("GCC unroll 8")
            for (int i = 0; i < 8; i++) {            /* scale 8h + i: run 4h + i / 2 */
                const int si = 8 * h + i;
                const vi sv = vi_srad(vi_slld(vi_load(scp + 64 * (si / 4)), 24 - 8 * (si % 4)), 24);
                const vf s = vf_mul(d, vf_cvt(sv));
                acc = vf_fma(vf_cvt(a[i]), vf_mul(s, vf_set1(dm[bi * RUNS(Q6_K) + 4 * h + i / 2])), acc);
            }
        }
    }
    vf_store(y, acc);
}

/* y[M, N] = x W^T on repacked weights: quantize x (quant_x with the type's z), the corrections
   per unit (UNIT weights), then each group for every input row; rows past 16G the row kernel. */
#define RENTRY(NAME, GROUP, ROW, T, UNIT, Z)                                                   \
int NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K, int64_t nt) { \
    const int64_t R = M * K / 32, units = K / UNIT, blocks = K / T##_WEIGHTS, row_bytes = blocks * T##_BYTES; \
    const int64_t G = N / RG;                                                                  \
    int8_t *xq = (int8_t *)malloc((size_t)(M * K) + 64);                                       \
    float *xf = (float *)malloc((size_t)(2 * R) * sizeof(float));                              \
    int32_t *xc = (int32_t *)malloc((size_t)(8 * R) * sizeof(int32_t) + 64);                   \
    int32_t *cz = (int32_t *)malloc((size_t)(M * units) * sizeof(int32_t));                   \
    if (xq == NULL || xf == NULL || xc == NULL || cz == NULL) { free(xq); free(xf); free(xc); free(cz); return -1; } \
    quant_x(x, xq, xf, xf + R, xc, M, K, Z, nt);                                               \
    for (int64_t e = 0; e < M * units; e++) {                                                  \
        int32_t s = 0;                                                                         \
        for (int l = 0; l < UNIT / 4; l++) s += xc[e * (UNIT / 4) + l];                        \
        cz[e] = s;                                                                             \
    }                                                                                          \
    {                                                                                          \
        PARALLEL_ROWS(nt, G, M * N * K)                                                        \
        for (int64_t gi = 0; gi < G; gi++)                                                     \
            for (int64_t mi = 0; mi < M; mi++)                                                 \
                GROUP(w + gi * RG * row_bytes, xq + mi * K, xf + mi * (K / 32), xf + R + mi * (K / 32), cz + mi * units, \
                      y + mi * N + gi * RG, K);                                                \
    }                                                                                          \
    for (int64_t n = G * RG; n < N; n++)                                                       \
        for (int64_t mi = 0; mi < M; mi++)                                                     \
            y[mi * N + n] = ROW(w + n * row_bytes, xq + mi * K, xf + mi * (K / 32), xf + R + mi * (K / 32), \
                                xc + mi * (K / 32) * 8, blocks);                               \
    free(xq); free(xf); free(xc); free(cz);                                                    \
    return 0;                                                                                  \
}
RENTRY(rx_q4_0, rg_q4_0, qrow_q4_0, Q4_0, 32, 8)
RENTRY(rx_q8_0, rg_q8_0, qrow_q8_0, Q8_0, 32, 128 * Q8_Z_VNNI)
RENTRY(rx_q4_k, rg_q4_k, qrow_q4_k, Q4_K, 32, 0)
RENTRY(rx_q6_k, rg_q6_k, qrow_q6_k, Q6_K, 16, 32)

/* The regions of a block in a group block, in order: (offset in the block, bytes, chunk). */
typedef struct { int at, len, chunk; } region_t;
static const region_t REGIONS_Q4_0[] = {{0, 2, 2}, {2, 16, 4}};
static const region_t REGIONS_Q8_0[] = {{0, 2, 2}, {2, 32, 4}};
static const region_t REGIONS_Q4_K[] = {{0, 2, 2}, {2, 2, 2}, {4, 12, 4}, {16, 128, 4}};
/* Q6_K: the codes in the order the kernel reads them: for each half h and 4-byte step c, ql's
   chunk for runs 0 and 2, ql's for runs 1 and 3, qh's for all four. */
#define Q6C(h, c) {64 * (h) + 4 * (c), 4, 4}, {64 * (h) + 32 + 4 * (c), 4, 4}, {128 + 32 * (h) + 4 * (c), 4, 4}
#define Q6H(h) Q6C(h, 0), Q6C(h, 1), Q6C(h, 2), Q6C(h, 3), Q6C(h, 4), Q6C(h, 5), Q6C(h, 6), Q6C(h, 7)
static const region_t REGIONS_Q6_K[] = {{208, 2, 2}, {192, 16, 4}, Q6H(0), Q6H(1)};

/* Between one group (g) and its 16 rows in the file's layout (rows: 16 x row_bytes): pack = 1
   writes the group from the rows, 0 the rows from the group. */
static inline void move_chunk(uint8_t *to, const uint8_t *from, int unit) {
    if (unit == 4) memcpy(to, from, 4); else memcpy(to, from, 2);
}
static void group_layout(uint8_t *g, uint8_t *rows, int64_t blocks, int bytes, const region_t *reg, int nreg, int pack) {
    const int64_t row_bytes = blocks * bytes;
    for (int64_t b = 0; b < blocks; b++) {
        uint8_t *at = g + b * RG * bytes;
        for (int r = 0; r < nreg; r++) {
            const int unit = reg[r].chunk;
            for (int c = 0; c < reg[r].len / unit; c++)
                for (int i = 0; i < RG; i++) {
                    uint8_t *row = rows + i * row_bytes + b * bytes + reg[r].at + c * unit, *grp = at + (c * RG + i) * unit;
                    if (pack) move_chunk(grp, row, unit); else move_chunk(row, grp, unit);
                }
            at += RG * reg[r].len;
        }
    }
}

/* The whole weight [N, K] from src to dst (distinct buffers of the file's size): pack = 1 the
   file's layout to the repacked one (repack.py's repack), 0 back; rows past 16G copied. */
static void weight_layout(const uint8_t *src, uint8_t *dst, int64_t N, int64_t K, int per, int bytes, const region_t *reg,
                          int nreg, int pack, int64_t nt) {
    const int64_t row_bytes = K / per * bytes, G = N / RG;
    PARALLEL_ROWS(nt, G, G * RG * row_bytes)
    for (int64_t gi = 0; gi < G; gi++) {
        if (pack) group_layout(dst + gi * RG * row_bytes, (uint8_t *)(src + gi * RG * row_bytes), K / per, bytes, reg, nreg, 1);
        else group_layout((uint8_t *)(src + gi * RG * row_bytes), dst + gi * RG * row_bytes, K / per, bytes, reg, nreg, 0);
    }
    memcpy(dst + G * RG * row_bytes, src + G * RG * row_bytes, (size_t)((N - G * RG) * row_bytes));
}
#define LAYOUT(PACK, UNPACK, T, REGS)                                                          \
void PACK(const uint8_t *src, uint8_t *dst, int64_t N, int64_t K, int64_t nt) {                \
    weight_layout(src, dst, N, K, T##_WEIGHTS, T##_BYTES, REGS, (int)(sizeof(REGS) / sizeof(region_t)), 1, nt); } \
void UNPACK(const uint8_t *src, uint8_t *dst, int64_t N, int64_t K, int64_t nt) {              \
    weight_layout(src, dst, N, K, T##_WEIGHTS, T##_BYTES, REGS, (int)(sizeof(REGS) / sizeof(region_t)), 0, nt); }
LAYOUT(rp_q4_0, ru_q4_0, Q4_0, REGIONS_Q4_0)
LAYOUT(rp_q8_0, ru_q8_0, Q8_0, REGIONS_Q8_0)
LAYOUT(rp_q4_k, ru_q4_k, Q4_K, REGIONS_Q4_K)
LAYOUT(rp_q6_k, ru_q6_k, Q6_K, REGIONS_Q6_K)

/* ---- Prefill: a blocked int8 GEMM (AVX-512 VNNI) ----
   y[M, N] = x[M, K] W[N, K]^T for many input rows, with the q8dot arithmetic's inputs (the
   activations quantized per run of 32 as quant_x does). A thread unpacks GP panels of 16 weight
   rows into unsigned codes laid out for dpbusd (k-group g of 4 codes: 16 rows x 4 bytes = one
   512-bit register), a float scale per row and unit (32 weights; Q6_K: 16) and, for Q4_K, the
   min per row and run; then each block of up to 8 input rows runs over the panels with 8 int32
   accumulators (16 rows each) that a unit's 4 or 8 dpbusd fill, converted and scaled into 8 float
   accumulators at the end of each unit. Each output is one exact int32 per unit times the same
   float scales as the matrix-vector kernels, summed in another order (closeness, not bit
   equality, with the decode kernels). */
#define GR 16          /* weight rows per panel (one 512-bit register of int32 lanes) */
#define GP 4           /* panels a thread unpacks at once */
#define GN 8           /* input rows per register block */

#if defined(QD_AVX512) && defined(__AVX512VNNI__)
typedef struct { uint8_t *codes; float *ws, *wm; } panel_t;

static inline void put_codes(uint8_t *codes, int64_t g0, int i, __m256i q) {   /* 8 k-groups from g0 */
    uint32_t tmp[8];
    _mm256_storeu_si256((__m256i *)tmp, q);
    uint32_t *dst = (uint32_t *)codes + g0 * GR + i;
    for (int g = 0; g < 8; g++) dst[g * GR] = tmp[g];
}

static void unpack_q4_0(const uint8_t *wr, int64_t K, const panel_t *p, int i) {
    for (int64_t u = 0; u < K / 32; u++) {
        const uint8_t *b = wr + u * Q4_0_BYTES;
        put_codes(p->codes, 8 * u, i, nib32(b + 2)); p->ws[u * GR + i] = h2f(b);
    }
}
static void unpack_q8_0(const uint8_t *wr, int64_t K, const panel_t *p, int i) {
    for (int64_t u = 0; u < K / 32; u++) {
        const uint8_t *b = wr + u * Q8_0_BYTES;
        put_codes(p->codes, 8 * u, i, _mm256_xor_si256(XQ(b + 2), _mm256_set1_epi8((char)0x80))); p->ws[u * GR + i] = h2f(b);
    }
}
static void unpack_q4_k(const uint8_t *wr, int64_t K, const panel_t *p, int i) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t bi = 0; bi < K / Q4_K_WEIGHTS; bi++) {
        const uint8_t *b = wr + bi * Q4_K_BYTES; ctx_t t; prep_q4_k(b, &t);
        for (int q = 0; q < 4; q++) {
            const int64_t u = bi * RUNS(Q4_K) + 2 * q;
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * q));
            put_codes(p->codes, 8 * u, i, _mm256_and_si256(v, m4));
            put_codes(p->codes, 8 * u + 8, i, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
            p->ws[u * GR + i] = t.s[2 * q]; p->ws[(u + 1) * GR + i] = t.s[2 * q + 1];
            p->wm[u * GR + i] = t.c[2 * q]; p->wm[(u + 1) * GR + i] = t.c[2 * q + 1];
        }
    }
}
static void unpack_q6_k(const uint8_t *wr, int64_t K, const panel_t *p, int i) {   /* units of 16 */
    for (int64_t bi = 0; bi < K / Q6_K_WEIGHTS; bi++) {
        const uint8_t *b = wr + bi * Q6_K_BYTES; ctx_t t; prep_q6_k(b, &t);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_codes(b, h, q);
            for (int r = 0; r < 4; r++) {
                const int64_t u = bi * RUNS(Q6_K) + 4 * h + r;
                put_codes(p->codes, 8 * u, i, q[r]);
                p->ws[2 * u * GR + i] = t.s[8 * h + 2 * r]; p->ws[(2 * u + 1) * GR + i] = t.s[8 * h + 2 * r + 1];
            }
        }
    }
}

/* A whole repacked group straight into a panel: its 4-byte chunks of 16 rows are the panel's
   k-groups already (the nibbles split, Q8_0's bytes made unsigned), its 16 scales one cvtph; the
   same values as the row unpacks above (tests: the GEMMs on both layouts agree bit for bit). */
#define STORE(at, v) _mm512_storeu_si512((void *)(at), v)
static void group_q4_0(const uint8_t *g, int64_t K, const panel_t *p) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t u = 0; u < K / 32; u++) {
        const uint8_t *b = g + u * RG * Q4_0_BYTES;
        _mm512_storeu_ps(p->ws + u * GR, vf_half(b));
        for (int c = 0; c < 4; c++) {
            const __m512i v = XQ512(b + 2 * RG + 64 * c);
            STORE(p->codes + (8 * u + c) * 64, _mm512_and_si512(v, m4));
            STORE(p->codes + (8 * u + 4 + c) * 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
        }
    }
}
static void group_q8_0(const uint8_t *g, int64_t K, const panel_t *p) {
    for (int64_t u = 0; u < K / 32; u++) {
        const uint8_t *b = g + u * RG * Q8_0_BYTES;
        _mm512_storeu_ps(p->ws + u * GR, vf_half(b));
        for (int c = 0; c < 8; c++)
            STORE(p->codes + (8 * u + c) * 64, _mm512_xor_si512(XQ512(b + 2 * RG + 64 * c), _mm512_set1_epi8((char)0x80)));
    }
}
static void group_q4_k(const uint8_t *g, int64_t K, const panel_t *p) {
    const vi m4 = vi_set1(0x0F0F0F0F), k1 = vi_set1(0x3F3F3F3F), k3 = vi_set1(0x03030303);
    for (int64_t bi = 0; bi < K / Q4_K_WEIGHTS; bi++) {
        const uint8_t *b = g + bi * RG * Q4_K_BYTES;
        const vf d = vf_half(b), dmin = vf_half(b + 2 * RG);
        const vi s0 = vi_load(b + 4 * RG), s1 = vi_load(b + 8 * RG), s2 = vi_load(b + 12 * RG);
        const vi sc[2] = {vi_and(s0, k1), vi_or(vi_and(s2, m4), vi_slld(vi_and(vi_srld(s0, 6), k3), 4))};
        const vi mn[2] = {vi_and(s1, k1), vi_or(vi_and(vi_srld(s2, 4), m4), vi_slld(vi_and(vi_srld(s1, 6), k3), 4))};
        for (int j = 0; j < 8; j++) {
            const int64_t u = bi * RUNS(Q4_K) + j;
            _mm512_storeu_ps(p->ws + u * GR, vf_mul(d, vf_cvt(byte_of(sc[j / 4], j % 4))));
            _mm512_storeu_ps(p->wm + u * GR, _mm512_xor_ps(vf_mul(dmin, vf_cvt(byte_of(mn[j / 4], j % 4))), _mm512_set1_ps(-0.0f)));
        }
        for (int q = 0; q < 4; q++)
            for (int c = 0; c < 8; c++) {
                const int64_t u = bi * RUNS(Q4_K) + 2 * q;
                const __m512i v = XQ512(b + 16 * RG + 64 * (8 * q + c));
                STORE(p->codes + (8 * u + c) * 64, _mm512_and_si512(v, m4));
                STORE(p->codes + (8 * u + 8 + c) * 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            }
    }
}
static void group_q6_k(const uint8_t *g, int64_t K, const panel_t *p) {
    const vi m4 = vi_set1(0x0F0F0F0F), m30 = vi_set1(0x30303030);
    for (int64_t bi = 0; bi < K / Q6_K_WEIGHTS; bi++) {
        const uint8_t *b = g + bi * RG * Q6_K_BYTES;
        const vf d = vf_half(b);
        for (int si = 0; si < 16; si++) {
            const vi sv = vi_srad(vi_slld(vi_load(b + 2 * RG + 64 * (si / 4)), 24 - 8 * (si % 4)), 24);
            _mm512_storeu_ps(p->ws + (bi * 16 + si) * GR, vf_mul(d, vf_cvt(sv)));
        }
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 8; c++) {
                const uint8_t *at = b + 18 * RG + 3 * 64 * (8 * h + c);
                const vi la = vi_load(at), lb = vi_load(at + 64), hb = vi_load(at + 128);
                const int64_t u = bi * RUNS(Q6_K) + 4 * h;
                STORE(p->codes + (8 * u + c) * 64, vi_or(vi_and(la, m4), vi_and(vi_sllw(hb, 4), m30)));
                STORE(p->codes + (8 * (u + 1) + c) * 64, vi_or(vi_and(lb, m4), vi_and(vi_sllw(hb, 2), m30)));
                STORE(p->codes + (8 * (u + 2) + c) * 64, vi_or(vi_and(vi_srlw(la, 4), m4), vi_and(hb, m30)));
                STORE(p->codes + (8 * (u + 3) + c) * 64, vi_or(vi_and(vi_srlw(lb, 4), m4), vi_and(vi_srlw(hb, 2), m30)));
            }
    }
}
#undef STORE
typedef void (*group_fn)(const uint8_t *, int64_t, const panel_t *);
static const group_fn FILE_LAYOUT = NULL;

/* Rows n0.. of one panel against input rows j0..j0+nr-1 (nr <= GN). U: weights per unit. */
static inline __attribute__((always_inline)) void gtile(const panel_t *p, int U, int has_min, const int8_t *xq, const float *xd,
        const float *xs, const int32_t *cu, int64_t K, int nr, float *y, int64_t N, __mmask16 rows) {
    const int64_t units = K / U, R = K / 32;
    __m512 f[GN];
    for (int j = 0; j < nr; j++) f[j] = _mm512_setzero_ps();
    for (int64_t t = 0; t < units; t++) {
        __m512i a[GN];
        for (int j = 0; j < nr; j++) a[j] = _mm512_set1_epi32(cu[j * units + t]);
        const uint8_t *cw = p->codes + t * (U / 4) * 64;
        const int8_t *xk = xq + t * U;
        for (int g = 0; g < U / 4; g++) {
            const __m512i wv = _mm512_loadu_si512((const void *)(cw + 64 * g));
            for (int j = 0; j < nr; j++) {
                int32_t xv; memcpy(&xv, xk + j * K + 4 * g, 4);
                a[j] = _mm512_dpbusd_epi32(a[j], wv, _mm512_set1_epi32(xv));
            }
        }
        const __m512 ws = _mm512_loadu_ps(p->ws + t * GR);
        const int64_t run = t * U / 32;
        for (int j = 0; j < nr; j++)
            f[j] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[j]), _mm512_set1_ps(xd[j * R + run])), ws, f[j]);
        if (has_min) {
            const __m512 wm = _mm512_loadu_ps(p->wm + run * GR);
            for (int j = 0; j < nr; j++) f[j] = _mm512_fmadd_ps(wm, _mm512_set1_ps(xs[j * R + run]), f[j]);
        }
    }
    for (int j = 0; j < nr; j++) _mm512_mask_storeu_ps(y + j * N, rows, f[j]);
}

#define GEMM(NAME, T, UNPACK, U, HAS_MIN, Z, GROUP)                                            \
static void NAME##_tile(const panel_t *p, const int8_t *xq, const float *xd, const float *xs, const int32_t *cu, \
                        int64_t K, int nr, float *y, int64_t N, __mmask16 rows) {              \
    switch (nr) {                                                                              \
    case 8: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 8, y, N, rows); break;                     \
    case 7: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 7, y, N, rows); break;                     \
    case 6: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 6, y, N, rows); break;                     \
    case 5: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 5, y, N, rows); break;                     \
    case 4: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 4, y, N, rows); break;                     \
    case 3: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 3, y, N, rows); break;                     \
    case 2: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 2, y, N, rows); break;                     \
    default: gtile(p, U, HAS_MIN, xq, xd, xs, cu, K, 1, y, N, rows); break;                    \
    }                                                                                          \
}                                                                                              \
int NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K, int64_t nt) { \
    const int64_t R = M * K / 32, units = K / U, row_bytes = K / T##_WEIGHTS * T##_BYTES;       \
    const int64_t groups = (N + GR * GP - 1) / (GR * GP);                                      \
    int8_t *xq = (int8_t *)malloc((size_t)(M * K) + 64);                                       \
    float *xf = (float *)malloc((size_t)(2 * R) * sizeof(float));                              \
    int32_t *xc = (int32_t *)malloc((size_t)(8 * R) * sizeof(int32_t) + 64);                   \
    int32_t *cu = (int32_t *)malloc((size_t)(M * units) * sizeof(int32_t));                   \
    int failed = xq == NULL || xf == NULL || xc == NULL || cu == NULL;                         \
    if (!failed) {                                                                             \
        quant_x(x, xq, xf, xf + R, xc, M, K, Z, nt);                                           \
        for (int64_t e = 0; e < M * units; e++) {      /* -Z x (sum of the unit's codes) */     \
            int32_t s = 0;                                                                     \
            for (int l = 0; l < U / 4; l++) s += xc[e * (U / 4) + l];                          \
            cu[e] = s;                                                                         \
        }                                                                                      \
        const int team_ = (int)(nt < groups ? nt : groups);                                    \
        _Pragma("omp parallel num_threads(team_ > 0 ? team_ : 1) reduction(|:failed)")         \
        {                                                                                      \
            uint8_t *codes = (uint8_t *)malloc((size_t)(GP * GR * K));                         \
            float *sc = (float *)malloc((size_t)(2 * GP * GR * (K / 16)) * sizeof(float));     \
            if (codes == NULL || sc == NULL) failed = 1;                                       \
            else {                                                                             \
                _Pragma("omp for schedule(static)")                                            \
                for (int64_t g = 0; g < groups; g++) {                                         \
                    panel_t p[GP];                                                             \
                    for (int q = 0; q < GP; q++) {                                             \
                        p[q].codes = codes + (int64_t)q * GR * K;                              \
                        p[q].ws = sc + (int64_t)q * GR * (K / 16);                             \
                        p[q].wm = sc + (int64_t)(GP + q) * GR * (K / 16);                      \
                        const int64_t n0 = (g * GP + q) * GR;                                  \
                        const uint8_t *rows = w + n0 * row_bytes;   /* file layout, or a whole group */ \
                        if (GROUP != NULL && n0 + GR <= N) { GROUP(rows, K, &p[q]); continue; } \
                        for (int i = 0; i < GR; i++) {                                         \
                            const int64_t n = n0 + i;                                          \
                            if (n < N) UNPACK(rows + i * row_bytes, K, &p[q], i);              \
                            else {                                                             \
                                for (int64_t k = 0; k < K / 4; k++) memset(p[q].codes + (k * GR + i) * 4, 0, 4); \
                                for (int64_t t = 0; t < K / 16; t++) { p[q].ws[t * GR + i] = 0.0f; p[q].wm[t * GR + i] = 0.0f; } \
                            }                                                                  \
                        }                                                                      \
                    }                                                                          \
                    for (int64_t j0 = 0; j0 < M; j0 += GN) {                                   \
                        const int nr = (int)(M - j0 < GN ? M - j0 : GN);                       \
                        for (int q = 0; q < GP; q++) {                                         \
                            const int64_t n0 = (g * GP + q) * GR;                              \
                            if (n0 >= N) break;                                                \
                            const __mmask16 rows = N - n0 >= GR ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - n0)) - 1); \
                            NAME##_tile(&p[q], xq + j0 * K, xf + j0 * (K / 32), xf + R + j0 * (K / 32), \
                                        cu + j0 * units, K, nr, y + j0 * N + n0, N, rows);     \
                        }                                                                      \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
            free(codes); free(sc);                                                             \
        }                                                                                      \
    }                                                                                          \
    free(xq); free(xf); free(xc); free(cu);                                                    \
    return failed ? -1 : 0;                                                                    \
}
GEMM(gx_q4_0, Q4_0, unpack_q4_0, 32, 0, 8, FILE_LAYOUT)
GEMM(gx_q8_0, Q8_0, unpack_q8_0, 32, 0, 128, FILE_LAYOUT)
GEMM(gx_q4_k, Q4_K, unpack_q4_k, 32, 1, 0, FILE_LAYOUT)
GEMM(gx_q6_k, Q6_K, unpack_q6_k, 16, 0, 32, FILE_LAYOUT)
/* The same GEMM on repacked rows: each whole group straight into its panel (group_*). */
GEMM(gr_q4_0, Q4_0, unpack_q4_0, 32, 0, 8, group_q4_0)
GEMM(gr_q8_0, Q8_0, unpack_q8_0, 32, 0, 128, group_q8_0)
GEMM(gr_q4_k, Q4_K, unpack_q4_k, 32, 1, 0, group_q4_k)
GEMM(gr_q6_k, Q6_K, unpack_q6_k, 16, 0, 32, group_q6_k)
#else
#define NOGEMM(NAME) int NAME(const uint8_t *w, const float *x, float *y, int64_t M, int64_t N, int64_t K, int64_t nt) { \
    (void)w; (void)x; (void)y; (void)M; (void)N; (void)K; (void)nt; return -2; }
NOGEMM(gx_q4_0)
NOGEMM(gx_q8_0)
NOGEMM(gx_q4_k)
NOGEMM(gx_q6_k)
NOGEMM(gr_q4_0)
NOGEMM(gr_q8_0)
NOGEMM(gr_q4_k)
NOGEMM(gr_q6_k)
#endif
