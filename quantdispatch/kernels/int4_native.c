/* The fused int4 matmul (see int4_native.py): 4-bit codes in ggml's Q4_0 nibble order, float32 scale
   and offset per group, float32 activations and sums. AVX2 + FMA. */
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
