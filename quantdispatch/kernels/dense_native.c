/* A bf16 matrix-vector product for decode (see dense_native.py): y[m, n] = sum_k x[m, k] w[n, k]
 * with w and x bfloat16 and every product and sum in float32. A bf16 value widens to float32
 * exactly (its 16 bits are the float's high half), so each product is exact in float32; only the
 * summation order is the kernel's own.
 *
 * The order is fixed, the same at every SIMD level: the K columns are read in chunks of 32; each
 * of 16 lanes j keeps two float32 sums, e[j] over the columns 32 c + 2 j and o[j] over the columns
 * 32 c + 2 j + 1, one fused multiply-add per chunk c each, in chunk order. An AVX-512 build holds
 * the 16 lanes in one vector, an AVX2 build in two; both do the same operations per lane, so they
 * agree bit for bit. Then t[j] = e[j] + o[j], folded in halves (16 -> 8 -> 4 -> 2 -> 1), plus
 * the columns past the last whole chunk, summed one by one in order.
 *
 * Threads: output rows are split in static chunks over `nt` OpenMP threads (one thread below
 * PAR_MIN weights); each output is one thread's fixed-order sum, whatever nt is.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN ((int64_t)1 << 16)

static inline float widen(uint16_t b) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)b << 16;
    return v.f;
}

static inline float fold16(const float *t) {
    float a[8], b[4];
    for (int j = 0; j < 8; j++) a[j] = t[j] + t[j + 8];
    for (int j = 0; j < 4; j++) b[j] = a[j] + a[j + 4];
    return ((b[0] + b[2]) + (b[1] + b[3]));
}

#if defined(__AVX512F__)
typedef struct { __m512 e, o; } acc_t;
static inline void acc_zero(acc_t *a) { a->e = _mm512_setzero_ps(); a->o = _mm512_setzero_ps(); }
/* 32 bf16 weights (64 bytes) against x's chunk pre-split into even and odd float32 columns. */
static inline void acc_chunk(acc_t *a, const uint16_t *w, const float *xe, const float *xo) {
    const __m512i v = _mm512_loadu_si512((const void *)w);
    const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000u)));
    a->e = _mm512_fmadd_ps(we, _mm512_loadu_ps(xe), a->e);
    a->o = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xo), a->o);
}
static inline void acc_lanes(const acc_t *a, float t[16]) { _mm512_storeu_ps(t, _mm512_add_ps(a->e, a->o)); }
#else
typedef struct { __m256 e0, e1, o0, o1; } acc_t;
static inline void acc_zero(acc_t *a) { a->e0 = a->e1 = a->o0 = a->o1 = _mm256_setzero_ps(); }
static inline void acc_chunk(acc_t *a, const uint16_t *w, const float *xe, const float *xo) {
    const __m256i mask = _mm256_set1_epi32((int)0xFFFF0000u);
    const __m256i v0 = _mm256_loadu_si256((const __m256i *)w), v1 = _mm256_loadu_si256((const __m256i *)(w + 16));
    a->e0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), _mm256_loadu_ps(xe), a->e0);
    a->e1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), _mm256_loadu_ps(xe + 8), a->e1);
    a->o0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, mask)), _mm256_loadu_ps(xo), a->o0);
    a->o1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1, mask)), _mm256_loadu_ps(xo + 8), a->o1);
}
static inline void acc_lanes(const acc_t *a, float t[16]) {
    _mm256_storeu_ps(t, _mm256_add_ps(a->e0, a->o0));
    _mm256_storeu_ps(t + 8, _mm256_add_ps(a->e1, a->o1));
}
#endif

/* The columns past the whole chunks, in order. */
static inline float tail(const uint16_t *w, const uint16_t *x, int64_t k0, int64_t K) {
    float s = 0.0f;
    for (int64_t k = k0; k < K; k++) s += widen(w[k]) * widen(x[k]);
    return s;
}

#define ROWS 4 /* weight rows in flight for one input row: independent chains hide the FMA latency */

/* w [N, K] bf16, x [M, K] bf16, y [M, N] float32. Returns nonzero when out of memory. */
int bf16_gemv(const uint16_t *w, const uint16_t *x, float *y, int64_t M, int64_t N, int64_t K, int64_t nt) {
    const int64_t C = K / 32, whole = C * 32;
    /* x split once into even / odd float32 columns per chunk: xe[m][16 c + j] = x[m][32 c + 2 j]. */
    float *xs = (float *)malloc((size_t)(2 * M * (C * 16 + 1)) * sizeof(float));
    if (xs == NULL) return -1;
    float *xe = xs, *xo = xs + M * (C * 16 + 1);
    for (int64_t m = 0; m < M; m++)
        for (int64_t i = 0; i < C * 16; i++) {
            xe[m * (C * 16 + 1) + i] = widen(x[m * K + 2 * i]);
            xo[m * (C * 16 + 1) + i] = widen(x[m * K + 2 * i + 1]);
        }
    const int team = (nt > 1 && N * K >= PAR_MIN) ? (int)(nt < N ? nt : N) : 1;
    const int64_t stride = C * 16 + 1;
    _Pragma("omp parallel for num_threads(team) schedule(static)")
    for (int64_t g = 0; g < (N + ROWS - 1) / ROWS; g++) {
        const int64_t n0 = g * ROWS, rows = N - n0 < ROWS ? N - n0 : ROWS;
        for (int64_t m = 0; m < M; m++) {
            acc_t a[ROWS];
            for (int r = 0; r < ROWS; r++) acc_zero(&a[r]);
            const float *xem = xe + m * stride, *xom = xo + m * stride;
            if (rows == ROWS) {
                for (int64_t c = 0; c < C; c++)
                    for (int r = 0; r < ROWS; r++) acc_chunk(&a[r], w + (n0 + r) * K + 32 * c, xem + 16 * c, xom + 16 * c);
            } else {
                for (int64_t c = 0; c < C; c++)
                    for (int r = 0; r < rows; r++) acc_chunk(&a[r], w + (n0 + r) * K + 32 * c, xem + 16 * c, xom + 16 * c);
            }
            for (int r = 0; r < rows; r++) {
                float t[16];
                acc_lanes(&a[r], t);
                y[m * N + n0 + r] = fold16(t) + tail(w + (n0 + r) * K, x + m * K, whole, K);
            }
        }
    }
    free(xs);
    return 0;
}
