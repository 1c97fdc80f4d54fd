/* The fused int4 matmul (see int4_native.py): 4-bit codes, float32 scale and offset per group,
 * float32 activations and sums. Built once per SIMD level: AVX-512 (16 floats a vector) where the
 * compiler defines __AVX512F__, else AVX2 + F16C + FMA (8 floats a vector); the same bytes either way.
 *
 * Code layout: each run of 64 input columns is 32 bytes, read as 16 little-endian 16-bit words;
 * word i holds columns i, 16 + i, 32 + i and 48 + i in its four nibbles (bits 0-3, 4-7, 8-11, 12-15):
 *
 *     word:        0       1       ...  15
 *     bits 0-3:    k=0     k=1     ...  k=15
 *     bits 4-7:    k=16    k=17    ...  k=31
 *     bits 8-11:   k=32    k=33    ...  k=47
 *     bits 12-15:  k=48    k=49    ...  k=63
 *
 * A last run of 32 columns (K % 64 == 32) is 8 words, word i holding columns i, 8 + i, 16 + i, 24 + i.
 * A nibble masked into a 16-bit lane is the half-precision subnormal q * 2^-24, which F16C converts
 * to float32 exactly: the codes of 16 columns become 16 floats with one shift, one and and one
 * conversion, and each group's sum is scaled back by 2^24 (a power of two: exact) with its scale.
 *
 * Threads: output rows are split in static chunks over `nt` OpenMP threads; each output is computed
 * by one thread in a fixed order, so results do not depend on the thread count.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define UP 16777216.0f   /* 2^24: the codes are read as q * 2^-24 */
#define PAR_MIN (1 << 16) /* weights below which a call stays on one thread */

#if defined(__AVX512F__)
typedef __m512 vf;
#define VL 16
#define vzero _mm512_setzero_ps
#define vload _mm512_loadu_ps
#define vstore _mm512_storeu_ps
#define vfma _mm512_fmadd_ps
#define vmul _mm512_mul_ps
#define vadd _mm512_add_ps
#define vset1 _mm512_set1_ps
static inline float vsum(vf v) { return _mm512_reduce_add_ps(v); }
/* 64 codes -> 4 vectors of 16 floats, vector j holding columns 16 j .. 16 j + 15. */
static inline void expand64(const uint8_t *p, vf w[4]) {
    const __m256i b = _mm256_loadu_si256((const __m256i *)p), m = _mm256_set1_epi16(0xF);
    w[0] = _mm512_cvtph_ps(_mm256_and_si256(b, m));
    w[1] = _mm512_cvtph_ps(_mm256_and_si256(_mm256_srli_epi16(b, 4), m));
    w[2] = _mm512_cvtph_ps(_mm256_and_si256(_mm256_srli_epi16(b, 8), m));
    w[3] = _mm512_cvtph_ps(_mm256_srli_epi16(b, 12));
}
#else
typedef __m256 vf;
#define VL 8
#define vzero _mm256_setzero_ps
#define vload _mm256_loadu_ps
#define vstore _mm256_storeu_ps
#define vfma _mm256_fmadd_ps
#define vmul _mm256_mul_ps
#define vadd _mm256_add_ps
#define vset1 _mm256_set1_ps
static inline float vsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* 64 codes -> 8 vectors of 8 floats, vector j holding columns 8 j .. 8 j + 7. */
static inline void expand64(const uint8_t *p, vf w[8]) {
    const __m256i b = _mm256_loadu_si256((const __m256i *)p), m = _mm256_set1_epi16(0xF);
    const __m256i n0 = _mm256_and_si256(b, m), n1 = _mm256_and_si256(_mm256_srli_epi16(b, 4), m);
    const __m256i n2 = _mm256_and_si256(_mm256_srli_epi16(b, 8), m), n3 = _mm256_srli_epi16(b, 12);
    w[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(n0)); w[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(n0, 1));
    w[2] = _mm256_cvtph_ps(_mm256_castsi256_si128(n1)); w[3] = _mm256_cvtph_ps(_mm256_extracti128_si256(n1, 1));
    w[4] = _mm256_cvtph_ps(_mm256_castsi256_si128(n2)); w[5] = _mm256_cvtph_ps(_mm256_extracti128_si256(n2, 1));
    w[6] = _mm256_cvtph_ps(_mm256_castsi256_si128(n3)); w[7] = _mm256_cvtph_ps(_mm256_extracti128_si256(n3, 1));
}
#endif
#define NV (64 / VL)

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* sum_g c[g] * xs[g]: the offsets' share of one output (vector sums: a scalar chain of G dependent
 * adds would cost about as much as the row's codes at G = 64). */
static inline float offsets_dot(const float *c, const float *xs, int64_t G) {
    vf acc = vzero();
    int64_t g = 0;
    for (; g + VL <= G; g += VL) acc = vfma(vload(c + g), vload(xs + g), acc);
    float total = vsum(acc);
    for (; g < G; g++) total += c[g] * xs[g];
    return total;
}

/* A last run of 32 codes -> 4 vectors of 8 floats, vector j holding columns 8 j .. 8 j + 7. */
static inline void expand32(const uint8_t *p, __m256 w[4]) {
    const __m128i b = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi16(0xF);
    w[0] = _mm256_cvtph_ps(_mm_and_si128(b, m));
    w[1] = _mm256_cvtph_ps(_mm_and_si128(_mm_srli_epi16(b, 4), m));
    w[2] = _mm256_cvtph_ps(_mm_and_si128(_mm_srli_epi16(b, 8), m));
    w[3] = _mm256_cvtph_ps(_mm_srli_epi16(b, 12));
}

/* One output row against R input rows (x rows K apart, xs rows G apart, y rows N apart). The codes
 * of each run are expanded once for all R rows; R is a constant at each call, so the loops over r
 * unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) void rows(const uint8_t *qn, const float *sn, const float *cn, const float *x,
                                                       const float *xs, float *y, int64_t K, int64_t gs, int64_t G, int64_t N,
                                                       const int R) {
    vf tot[4], tot2[4];
    float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int r = 0; r < R; r++) tot[r] = tot2[r] = vzero();
    const int64_t K64 = K / 64 * 64;
    if (gs == 32) { /* each run of 64 columns is two groups */
        for (int64_t k0 = 0; k0 < K64; k0 += 64) {
            vf w[NV];
            expand64(qn + k0 / 2, w);
            const vf sa = vset1(sn[k0 / 32] * UP), sb = vset1(sn[k0 / 32 + 1] * UP);
            for (int r = 0; r < R; r++) {
                const float *xr = x + r * K + k0;
                vf a = vmul(w[0], vload(xr)), b = vmul(w[NV / 2], vload(xr + 32));
                for (int j = 1; j < NV / 2; j++) {
                    a = vfma(w[j], vload(xr + j * VL), a);
                    b = vfma(w[NV / 2 + j], vload(xr + 32 + j * VL), b);
                }
                tot[r] = vfma(a, sa, tot[r]);
                tot2[r] = vfma(b, sb, tot2[r]);
            }
        }
        if (K64 < K) { /* the last group: a run of 32 */
            __m256 w[4];
            expand32(qn + K64 / 2, w);
            for (int r = 0; r < R; r++) {
                const float *xr = x + r * K + K64;
                __m256 a = _mm256_mul_ps(w[0], _mm256_loadu_ps(xr));
                for (int j = 1; j < 4; j++) a = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(xr + 8 * j), a);
                tail[r] = hsum8(a) * (sn[G - 1] * UP);
            }
        }
    } else { /* groups of 64, 128 or 256: whole runs; NA independent sums per row hide the FMA latency */
        const int NA = (R <= 2 || VL == 16) ? 4 : 2;
        for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += gs) {
            vf a[4][4];
            for (int r = 0; r < R; r++)
                for (int i = 0; i < NA; i++) a[r][i] = vzero();
            for (int64_t k = k0; k < k0 + gs; k += 64) {
                vf w[NV];
                expand64(qn + k / 2, w);
                for (int r = 0; r < R; r++) {
                    const float *xr = x + r * K + k;
                    for (int j = 0; j < NV; j++) a[r][j % NA] = vfma(w[j], vload(xr + j * VL), a[r][j % NA]);
                }
            }
            const vf s = vset1(sn[g] * UP);
            for (int r = 0; r < R; r++) {
                vf sum = a[r][0];
                for (int i = 1; i < NA; i++) sum = vadd(sum, a[r][i]);
                tot[r] = vfma(sum, s, tot[r]);
            }
        }
    }
    for (int r = 0; r < R; r++) tot[r] = vadd(tot[r], tot2[r]);
    for (int r = 0; r < R; r++) y[r * N] = vsum(tot[r]) + tail[r] + offsets_dot(cn, xs + r * G, G);
}

/* q [N, K/2] codes; s, c [N, G] scale and offset; x [M, K]; xs [M, G] group sums of x; y [M, N]. */
void q4_matmul(const uint8_t *q, const float *s, const float *c, const float *x, const float *xs, float *y,
               int64_t M, int64_t N, int64_t K, int64_t gs, int64_t nt) {
    const int64_t G = K / gs;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && N * K >= PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *qn = q + n * (K / 2);
        const float *sn = s + n * G, *cn = c + n * G;
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) rows(qn, sn, cn, x + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 4);
        switch (M - m) {
        case 3: rows(qn, sn, cn, x + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 3); break;
        case 2: rows(qn, sn, cn, x + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 2); break;
        case 1: rows(qn, sn, cn, x + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 1); break;
        default: break;
        }
    }
}

#if defined(__AVX512BF16__)
/* bfloat16 activations with AVX512-BF16, groups of 128 or 256: each 128 columns are one 64-byte load
 * of codes (two runs); nibble j of every word, shifted down, indexes a 32-entry table of the codes
 * as bfloat16 (vpermw reads the low 5 bits, so the next nibble's bit is ignored by repeating the
 * table), and vdpbf16ps multiplies pairs exactly (8-bit by 8-bit significands) and sums in float32:
 * the same products as the float32 path, 32 per instruction. The activations are first put in the
 * codes' lane order, once per call: per 128 columns and nibble j, columns 16 j + l (l < 16) then
 * 64 + 16 j + l. */
static void bf16_split_x(const uint16_t *x, uint16_t *xp, int64_t K) {
    for (int64_t b = 0; b < K; b += 128)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) {
                xp[b + 32 * j + l] = x[b + 16 * j + l];
                xp[b + 32 * j + 16 + l] = x[b + 64 + 16 * j + l];
            }
}

static inline __attribute__((always_inline)) void rows_bf16(const uint8_t *qn, const float *sn, const float *cn, const uint16_t *xp,
                                                            const float *xs, float *y, int64_t K, int64_t gs, int64_t G, int64_t N,
                                                            const int R) {
    const __m512i table = _mm512_set_epi16(0x4170, 0x4160, 0x4150, 0x4140, 0x4130, 0x4120, 0x4110, 0x4100, 0x40E0, 0x40C0, 0x40A0,
                                           0x4080, 0x4040, 0x4000, 0x3F80, 0x0000, 0x4170, 0x4160, 0x4150, 0x4140, 0x4130, 0x4120,
                                           0x4110, 0x4100, 0x40E0, 0x40C0, 0x40A0, 0x4080, 0x4040, 0x4000, 0x3F80, 0x0000);
    __m512 tot[4];
    for (int r = 0; r < R; r++) tot[r] = _mm512_setzero_ps();
    for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += gs) {
        __m512 a[4][4];
        for (int r = 0; r < R; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm512_setzero_ps();
        for (int64_t k = k0; k < k0 + gs; k += 128) {
            const __m512i w = _mm512_loadu_si512((const void *)(qn + k / 2));
            __m512i v[4];
            v[0] = _mm512_permutexvar_epi16(w, table);
            v[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), table);
            v[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 8), table);
            v[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 12), table);
            for (int r = 0; r < R; r++) {
                const uint16_t *xr = xp + r * K + k;
                for (int j = 0; j < 4; j++)
                    a[r][j] = _mm512_dpbf16_ps(a[r][j], (__m512bh)v[j], (__m512bh)_mm512_loadu_si512((const void *)(xr + 32 * j)));
            }
        }
        const __m512 sv = _mm512_set1_ps(sn[g]);
        for (int r = 0; r < R; r++) tot[r] = _mm512_fmadd_ps(_mm512_add_ps(_mm512_add_ps(a[r][0], a[r][1]), _mm512_add_ps(a[r][2], a[r][3])), sv, tot[r]);
    }
    for (int r = 0; r < R; r++) y[r * N] = _mm512_reduce_add_ps(tot[r]) + offsets_dot(cn, xs + r * G, G);
}
#endif

/* q4_matmul for bfloat16 x [M, K] (bits as uint16): the AVX512-BF16 loop above where the build has
 * it and the groups are 128 or 256 columns; elsewhere x is widened to float32 (exact) for q4_matmul. */
void q4_matmul_bf16(const uint8_t *q, const float *s, const float *c, const uint16_t *x, const float *xs, float *y,
                    int64_t M, int64_t N, int64_t K, int64_t gs, int64_t nt) {
    const int64_t G = K / gs;
#if defined(__AVX512BF16__)
    if (gs % 128 == 0) {
        uint16_t *xp = malloc(sizeof(uint16_t) * (size_t)(M * K));
        if (xp != NULL) {
            for (int64_t m = 0; m < M; m++) bf16_split_x(x + m * K, xp + m * K, K);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && N * K >= PAR_MIN)
            for (int64_t n = 0; n < N; n++) {
                const uint8_t *qn = q + n * (K / 2);
                const float *sn = s + n * G, *cn = c + n * G;
                int64_t m = 0;
                for (; m + 4 <= M; m += 4) rows_bf16(qn, sn, cn, xp + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 4);
                switch (M - m) {
                case 3: rows_bf16(qn, sn, cn, xp + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 3); break;
                case 2: rows_bf16(qn, sn, cn, xp + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 2); break;
                case 1: rows_bf16(qn, sn, cn, xp + m * K, xs + m * G, y + m * N + n, K, gs, G, N, 1); break;
                default: break;
                }
            }
            free(xp);
            return;
        }
    }
#endif
    (void)G;
    float *xf = malloc(sizeof(float) * (size_t)(M * K));
    if (xf == NULL) return;
    for (int64_t i = 0; i < M * K; i++) {
        const uint32_t bits = (uint32_t)x[i] << 16;
        float v;
        __builtin_memcpy(&v, &bits, sizeof v);
        xf[i] = v;
    }
    q4_matmul(q, s, c, xf, xs, y, M, N, K, gs, nt);
    free(xf);
}

/* Row n of W = q * s + c (one rounding: fma of the exact q * s and c) as float32 into o [K]. */
static void dequant_row(const uint8_t *qn, const float *sn, const float *cn, float *o, int64_t K, int64_t gs) {
    const int64_t K64 = K / 64 * 64;
    for (int64_t k = 0; k < K64; k += 64) {
        vf w[NV];
        expand64(qn + k / 2, w);
        for (int j = 0; j < NV; j++) {
            const int64_t g = (k + j * VL) / gs;
            vstore(o + k + j * VL, vfma(w[j], vset1(sn[g] * UP), vset1(cn[g])));
        }
    }
    if (K64 < K) {
        __m256 w[4];
        expand32(qn + K64 / 2, w);
        const int64_t g = K64 / gs;
        for (int j = 0; j < 4; j++) _mm256_storeu_ps(o + K64 + 8 * j, _mm256_fmadd_ps(w[j], _mm256_set1_ps(sn[g] * UP), _mm256_set1_ps(cn[g])));
    }
}

/* Rows n0..n1 of W = q * s + c as float32 [n1 - n0, K] into out: the float32 prefill path's operand. */
void q4_dequant(const uint8_t *q, const float *s, const float *c, float *out, int64_t n0, int64_t n1, int64_t K, int64_t gs,
                int64_t nt) {
    const int64_t G = K / gs;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (n1 - n0) * K >= PAR_MIN)
    for (int64_t n = n0; n < n1; n++) dequant_row(q + n * (K / 2), s + n * G, c + n * G, out + (n - n0) * K, K, gs);
}

/* float32 -> bfloat16, rounded to nearest even (finite values: the weights are finite). */
static inline void store_bf16x8(uint16_t *o, __m256 v) {
    __m256i b = _mm256_castps_si256(v);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    b = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), odd), 16);
    __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storeu_si128((__m128i *)o, packed);
}

/* Rows n0..n1 of W as bfloat16 [n1 - n0, K] (each weight computed in float32, then rounded once to
 * bfloat16, as a bf16 model's portable module rounds it): the bf16 prefill path's operand. */
void q4_dequant_bf16(const uint8_t *q, const float *s, const float *c, uint16_t *out, int64_t n0, int64_t n1, int64_t K,
                     int64_t gs, int64_t nt) {
    const int64_t G = K / gs;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (n1 - n0) * K >= PAR_MIN)
    for (int64_t n = n0; n < n1; n++) {
        float row[256];
        uint16_t *o = out + (n - n0) * K;
        for (int64_t k0 = 0; k0 < K; k0 += 256) { /* 256 columns at a time through a float32 buffer in L1 */
            const int64_t width = K - k0 < 256 ? K - k0 : 256;
            dequant_row(q + n * (K / 2) + k0 / 2, s + n * G + k0 / gs, c + n * G + k0 / gs, row, width, gs);
            for (int64_t k = 0; k < width; k += 8) store_bf16x8(o + k0 + k, _mm256_loadu_ps(row + k));
        }
    }
}
