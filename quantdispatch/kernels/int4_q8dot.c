/* The int8-activation int4 matmul (see int4_q8dot.py): 4-bit codes in row groups of 16, activations
 * rounded to int8 per block of 32 columns, exact integer dot products, float32 scale application.
 * Built once per SIMD level on the same bytes: AVX512-VNNI (vpdpbusd) where the compiler defines
 * __AVX512VNNI__, AVX-512 BW (vpmaddubsw + vpmaddwd) where it defines __AVX512BW__, else AVX2
 * (the same two instructions on 8 rows at a time). Every level computes the same int32 sums and
 * the same float32 operations in the same order, so results are bit-identical across levels.
 *
 * Code layout: rows in groups of 16 (the last group padded with zero rows); per row group and per
 * block of 32 columns, 256 bytes: 4 chunks of 64 bytes, chunk c holding for row r (0..15) the
 * 4 bytes at 64 c + 4 r + j (j < 4), whose low nibble is column 4 c + j of the block and high
 * nibble column 16 + 4 c + j. A 64-byte chunk is then one vector of 16 int32 lanes, lane r row r:
 * the low nibbles dotted with the 4 activations 4 c .. 4 c + 3 broadcast to every lane, the high
 * nibbles with 16 + 4 c .. 16 + 4 c + 3. Scales and offsets: float32 [row group][group][16].
 *
 * Per input row m, per block b of 32 columns: d_b = absmax / 127, xq = roundf(x / d_b) (int8, away
 * from zero at halves; llama.cpp's q8_0), u_b = sum of xq. Per output row n and group g:
 *     A_g = sum_b fma order: A = fma(d_b, (float) isum_b, A)      isum_b = sum_k q[n, k] xq[k]  (exact)
 *     y  = fma(offset[n, g], B_g, fma(scale[n, g], A_g, y))        B_g = sum_b d_b * u_b   (per row m)
 * i.e. y = W . dequant(xq) with W = q * scale + offset, up to float32 rounding.
 *
 * Many input rows (prefill) use the same loop: a chunk of rows whose int8 activations stay in L2
 * per pass over the weights, 4 rows at a time per row group (the codes decoded once for the 4).
 *
 * Threads: row groups in static chunks over `nt` OpenMP threads (the activations' rounding split
 * by rows); each output is one thread's fixed-order sum, so results do not depend on the thread count.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RG 16              /* rows per row group */
#define BLOCK_BYTES 256    /* one row group's codes for 32 columns */
#define PAR_MIN (1 << 16)  /* weights below which a call stays on one thread */

/* ------------------------------------------------------------------ activations */
/* Element k of a row of float32, or of bfloat16 bits (widened exactly). */
static inline float element(const void *x, int64_t k, int bf16) {
    if (!bf16) return ((const float *)x)[k];
    const uint32_t bits = (uint32_t)((const uint16_t *)x)[k] << 16;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static void quantize_row(const void *x, int bf16, int8_t *xq, float *d, float *bsum, int64_t K, int64_t gs) {
    const int64_t per = gs / 32;
    for (int64_t b = 0; b < K / 32; b++) {
        float xb[32];
        for (int j = 0; j < 32; j++) xb[j] = element(x, 32 * b + j, bf16);
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int u = 0;
        for (int j = 0; j < 32; j++) {
            float v = roundf(xb[j] * id);
            v = fminf(127.0f, fmaxf(-127.0f, v));
            const int q = (int)v; /* fmaxf/fminf return the number when v is NaN: q is in -127..127 */
            xq[32 * b + j] = (int8_t)q;
            u += q;
        }
        d[b] = db;
        if (b % per == 0) bsum[b / per] = 0.0f;
        bsum[b / per] = fmaf(db, (float)u, bsum[b / per]);
    }
}

/* ------------------------------------------------------------------ the dot product of one block */
#if defined(__AVX512F__) && defined(__AVX512BW__)
typedef __m512 vf;
#define NH 1 /* vectors per row group */
#define vf_zero _mm512_setzero_ps
#define vf_fma _mm512_fmadd_ps
#define vf_set1 _mm512_set1_ps
#define vf_load _mm512_loadu_ps
/* isum[0] for the 16 rows of one block: codes p (256 bytes), activations xb (32 bytes). */
static inline void block_dot(const uint8_t *p, const int8_t *xb, __m512i isum[NH]) {
    const __m512i m = _mm512_set1_epi8(0x0F);
#if defined(__AVX512VNNI__)
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        const __m512i w = _mm512_loadu_si512((const void *)(p + 64 * c));
        int32_t a, b;
        memcpy(&a, xb + 4 * c, 4);
        memcpy(&b, xb + 16 + 4 * c, 4);
        lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(w, m), _mm512_set1_epi32(a));
        hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(_mm512_srli_epi16(w, 4), m), _mm512_set1_epi32(b));
    }
    isum[0] = _mm512_add_epi32(lo, hi);
#else
    /* |q * x| <= 15 * 127: a pair is <= 3810 and 8 pairs <= 30480, so the int16 sums are exact. */
    __m512i s = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        const __m512i w = _mm512_loadu_si512((const void *)(p + 64 * c));
        int32_t a, b;
        memcpy(&a, xb + 4 * c, 4);
        memcpy(&b, xb + 16 + 4 * c, 4);
        s = _mm512_add_epi16(s, _mm512_maddubs_epi16(_mm512_and_si512(w, m), _mm512_set1_epi32(a)));
        s = _mm512_add_epi16(s, _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(w, 4), m), _mm512_set1_epi32(b)));
    }
    isum[0] = _mm512_madd_epi16(s, _mm512_set1_epi16(1));
#endif
}
static inline vf cvt(__m512i v) { return _mm512_cvtepi32_ps(v); }
static inline void store16(float *y, const vf v[NH]) { _mm512_storeu_ps(y, v[0]); }
typedef __m512i vi;
#else
typedef __m256 vf;
#define NH 2
#define vf_zero _mm256_setzero_ps
#define vf_fma _mm256_fmadd_ps
#define vf_set1 _mm256_set1_ps
#define vf_load _mm256_loadu_ps
static inline void block_dot(const uint8_t *p, const int8_t *xb, __m256i isum[NH]) {
    const __m256i m = _mm256_set1_epi8(0x0F);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(p + 64 * c));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(p + 64 * c + 32));
        int32_t a, b;
        memcpy(&a, xb + 4 * c, 4);
        memcpy(&b, xb + 16 + 4 * c, 4);
        const __m256i va = _mm256_set1_epi32(a), vb = _mm256_set1_epi32(b);
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(w0, m), va));
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w0, 4), m), vb));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(w1, m), va));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w1, 4), m), vb));
    }
    const __m256i one = _mm256_set1_epi16(1);
    isum[0] = _mm256_madd_epi16(s0, one);
    isum[1] = _mm256_madd_epi16(s1, one);
}
static inline vf cvt(__m256i v) { return _mm256_cvtepi32_ps(v); }
static inline void store16(float *y, const vf v[NH]) {
    _mm256_storeu_ps(y, v[0]);
    _mm256_storeu_ps(y + 8, v[1]);
}
typedef __m256i vi;
#endif
#define VW (RG / NH) /* floats per vector */

/* One row group against R input rows: y[r] receives 16 outputs (contiguous floats). */
static inline __attribute__((always_inline)) void rowgroup(const uint8_t *q, const float *s, const float *c, const int8_t *xq,
                                                           const float *d, const float *bsum, float *y[4], int64_t K, int64_t gs,
                                                           const int R) {
    const int64_t G = K / gs, per = gs / 32, NB = K / 32;
    vf acc[4][NH];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < NH; h++) acc[r][h] = vf_zero();
    for (int64_t g = 0; g < G; g++) {
        vf a[4][NH];
        for (int r = 0; r < R; r++)
            for (int h = 0; h < NH; h++) a[r][h] = vf_zero();
        for (int64_t b = g * per; b < (g + 1) * per; b++) {
            const uint8_t *p = q + b * BLOCK_BYTES;
            for (int r = 0; r < R; r++) {
                vi isum[NH];
                block_dot(p, xq + r * K + 32 * b, isum);
                const vf db = vf_set1(d[r * NB + b]);
                for (int h = 0; h < NH; h++) a[r][h] = vf_fma(db, cvt(isum[h]), a[r][h]);
            }
        }
        for (int r = 0; r < R; r++) {
            const vf bg = vf_set1(bsum[r * G + g]);
            for (int h = 0; h < NH; h++) {
                acc[r][h] = vf_fma(vf_load(s + g * RG + h * VW), a[r][h], acc[r][h]);
                acc[r][h] = vf_fma(vf_load(c + g * RG + h * VW), bg, acc[r][h]);
            }
        }
    }
    for (int r = 0; r < R; r++) store16(y[r], acc[r]);
}

#define CHUNK_BYTES (1 << 18) /* activation bytes (int8) per pass over the weights: stays in L2 */

/* q [P, K/32, 256] codes; s, c [P, G, 16] float32; x [M, K] float32 or bfloat16 bits (bf16 != 0);
 * y [M, N] float32 with N <= 16 P. Many rows (prefill) go in chunks of rows whose int8 activations
 * stay in L2, each chunk one pass over the weights; a chunk's rows 4 at a time per row group. */
void q4q8_matmul(const uint8_t *q, const float *s, const float *c, const void *x, float *y, int64_t M, int64_t N, int64_t K,
                 int64_t gs, int64_t nt, int64_t bf16) {
    const int64_t G = K / gs, NB = K / 32, P = (N + RG - 1) / RG;
    const size_t width = bf16 ? 2 : 4;
    int8_t *xq = malloc((size_t)(M * K));
    float *d = malloc(sizeof(float) * (size_t)(M * NB)), *bsum = malloc(sizeof(float) * (size_t)(M * G));
    if (xq == NULL || d == NULL || bsum == NULL) { /* out of memory: NaN outputs, never stale memory */
        for (int64_t i = 0; i < M * N; i++) y[i] = NAN;
        goto done;
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && M * K >= PAR_MIN)
    for (int64_t m = 0; m < M; m++)
        quantize_row((const char *)x + (size_t)(m * K) * width, (int)bf16, xq + m * K, d + m * NB, bsum + m * G, K, gs);
    int64_t chunk = CHUNK_BYTES / K / 4 * 4;
    if (chunk < 4) chunk = 4;
    for (int64_t m0 = 0; m0 < M; m0 += chunk) {
        const int64_t m1 = M - m0 < chunk ? M : m0 + chunk;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && N * K >= PAR_MIN)
        for (int64_t p = 0; p < P; p++) {
            const uint8_t *qp = q + p * NB * BLOCK_BYTES;
            const float *sp = s + p * G * RG, *cp = c + p * G * RG;
            const int full = (p + 1) * RG <= N;
            float tmp[4][RG];
            int64_t m = m0;
            while (m < m1) {
                const int R = m1 - m >= 4 ? 4 : (int)(m1 - m);
                float *out[4];
                for (int r = 0; r < R; r++) out[r] = full ? y + (m + r) * N + p * RG : tmp[r];
                switch (R) {
                case 4: rowgroup(qp, sp, cp, xq + m * K, d + m * NB, bsum + m * G, out, K, gs, 4); break;
                case 3: rowgroup(qp, sp, cp, xq + m * K, d + m * NB, bsum + m * G, out, K, gs, 3); break;
                case 2: rowgroup(qp, sp, cp, xq + m * K, d + m * NB, bsum + m * G, out, K, gs, 2); break;
                default: rowgroup(qp, sp, cp, xq + m * K, d + m * NB, bsum + m * G, out, K, gs, 1); break;
                }
                if (!full)
                    for (int r = 0; r < R; r++) memcpy(y + (m + r) * N + p * RG, tmp[r], sizeof(float) * (size_t)(N - p * RG));
                m += R;
            }
        }
    }
done:
    free(xq);
    free(d);
    free(bsum);
}
