/* FP8 (E4M3) weights with float32 block scales: a fused matrix-vector product and a row dequantizer.
 *
 * w      uint8  [N, K]        e4m3 bytes (no NaN byte: the loader refuses them)
 * scale  float  [GN, GK]      GN = ceil(N / bn), GK = ceil(K / bk); row n, column k uses scale[n / bn][k / bk]
 * lut    float  [256]         the value of each byte (the scalar path; the vector path computes it)
 *
 * y[m, n] = sum_j scale[n / bn][j] * (sum over k in column block j of value(w[n, k]) * x[m, k]), in float32.
 *
 * rounding: 0, or 1: each weight value(w) * scale is rounded to bfloat16 (nearest even) before it is
 * multiplied, as compressed-tensors computes weights whose scales are stored in bfloat16
 * (value(w) * scale is exact in float32: 4 significant bits times 8); the scale then multiplies
 * each weight rather than each block's sum.
 *
 * The vector paths turn bytes into halves by moving sign, exponent and mantissa into place: an
 * e4m3 value v has the half bits ((b & 0x80) << 8) | ((b & 0x7f) << 7), whose value is v * 2^-8
 * for normal and subnormal bytes alike; the hardware converts halves to float32 exactly, and each
 * block's sum is multiplied back by 2^8 (exact). AVX-512 (one build per SIMD level, __AVX512F__)
 * converts 16 bytes a step, AVX2 + F16C + FMA 8, a table the rest.
 *
 * Threads: both functions split output rows over `nt` OpenMP threads in static chunks (one thread on
 * small problems); each output is one thread's fixed-order sum, so results do not depend on `nt`.
 */
#include <stdint.h>
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define FP8_VECTOR 1
#endif
#define FP8_PAR_MIN (1 << 16) /* weights below which a call stays on one thread */

#ifdef FP8_VECTOR
static inline __m128i fp8_halves8(const uint8_t *p) {
    const __m128i low7 = _mm_set1_epi16(0x7f), sign = _mm_set1_epi16(0x80);
    const __m128i bytes = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p));
    return _mm_or_si128(_mm_slli_epi16(_mm_and_si128(bytes, low7), 7), _mm_slli_epi16(_mm_and_si128(bytes, sign), 8));
}
#if defined(__AVX512F__)
/* 16 bytes -> 16 floats, each v * 2^-8: the byte in the high half of a 16-bit lane, shifted right
 * arithmetically by one, puts the mantissa and exponent in place and copies the sign into bit 14,
 * which the and clears. */
static inline __m512 fp8_values16(const uint8_t *p) {
    const __m256i bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
    return _mm512_cvtph_ps(_mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(bytes, 8), 1), _mm256_set1_epi16((short)0xBFFF)));
}

/* One output of one input row when blocks and K are whole runs of 16 columns: each block's vector
 * sum times its scale is added to a vector total, reduced once at the end (not once per block). */
static float fp8_row16(const uint8_t *row, const float *x, const float *s, int64_t k, int64_t bk) {
    __m512 total = _mm512_setzero_ps();
    for (int64_t j = 0, k0 = 0; k0 < k; j++, k0 += bk) {
        const int64_t k1 = k0 + bk < k ? k0 + bk : k;
        __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        int64_t c = k0;
        for (; c + 32 <= k1; c += 32) {
            a = _mm512_fmadd_ps(fp8_values16(row + c), _mm512_loadu_ps(x + c), a);
            b = _mm512_fmadd_ps(fp8_values16(row + c + 16), _mm512_loadu_ps(x + c + 16), b);
        }
        if (c < k1) a = _mm512_fmadd_ps(fp8_values16(row + c), _mm512_loadu_ps(x + c), a);
        total = _mm512_fmadd_ps(_mm512_add_ps(a, b), _mm512_set1_ps(s[j]), total);
    }
    return _mm512_reduce_add_ps(total) * 256.0f;
}
#endif
#endif

static inline float round_bf16(float v) {  /* nearest even; values are finite or infinite, never NaN */
    union { float f; uint32_t u; } bits = {v};
    bits.u = (bits.u + 0x7fffu + ((bits.u >> 16) & 1u)) & 0xffff0000u;
    return bits.f;
}

static float block_dot_bf16(const uint8_t *row, const float *x, const float *lut, int64_t k0, int64_t k1, float s) {
    float tail = 0.0f;
    int64_t c = k0;
#ifdef FP8_VECTOR
    __m256 acc = _mm256_setzero_ps();
    const __m256 scaled = _mm256_set1_ps(s * 256.0f);
    const __m128i low7 = _mm_set1_epi16(0x7f), sign = _mm_set1_epi16(0x80);
    const __m256i one = _mm256_set1_epi32(1), half_ulp = _mm256_set1_epi32(0x7fff), high = _mm256_set1_epi32((int)0xffff0000u);
    for (; c + 8 <= k1; c += 8) {
        __m128i bytes = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(row + c)));
        __m128i half = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(bytes, low7), 7), _mm_slli_epi16(_mm_and_si128(bytes, sign), 8));
        /* value * 2^-8 * (s * 2^8): exact (s * 2^8 too, short of overflow), then rounded to bfloat16 */
        __m256i b = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtph_ps(half), scaled));
        b = _mm256_and_si256(_mm256_add_epi32(b, _mm256_add_epi32(half_ulp, _mm256_and_si256(_mm256_srli_epi32(b, 16), one))), high);
        acc = _mm256_fmadd_ps(_mm256_castsi256_ps(b), _mm256_loadu_ps(x + c), acc);
    }
    __m128 four = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    four = _mm_add_ps(four, _mm_movehl_ps(four, four));
    four = _mm_add_ss(four, _mm_movehdup_ps(four));
    tail = _mm_cvtss_f32(four);
#endif
    for (; c < k1; c++) tail += round_bf16(lut[row[c]] * s) * x[c];
    return tail;
}

static float block_dot(const uint8_t *row, const float *x, const float *lut, int64_t k0, int64_t k1) {
    float tail = 0.0f;
    int64_t c = k0;
#ifdef FP8_VECTOR
    float sum = 0.0f;
#if defined(__AVX512F__)
    __m512 wide = _mm512_setzero_ps(), wide2 = _mm512_setzero_ps();
    for (; c + 32 <= k1; c += 32) {
        wide = _mm512_fmadd_ps(fp8_values16(row + c), _mm512_loadu_ps(x + c), wide);
        wide2 = _mm512_fmadd_ps(fp8_values16(row + c + 16), _mm512_loadu_ps(x + c + 16), wide2);
    }
    for (; c + 16 <= k1; c += 16) wide = _mm512_fmadd_ps(fp8_values16(row + c), _mm512_loadu_ps(x + c), wide);
    sum = _mm512_reduce_add_ps(_mm512_add_ps(wide, wide2));
#endif
    __m256 acc = _mm256_setzero_ps();
    for (; c + 8 <= k1; c += 8) acc = _mm256_fmadd_ps(_mm256_cvtph_ps(fp8_halves8(row + c)), _mm256_loadu_ps(x + c), acc);
    __m128 four = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    four = _mm_add_ps(four, _mm_movehl_ps(four, four));
    four = _mm_add_ss(four, _mm_movehdup_ps(four));
    tail = (sum + _mm_cvtss_f32(four)) * 256.0f;
#endif
    for (; c < k1; c++) tail += lut[row[c]] * x[c];
    return tail;
}

void fp8_matvec(const uint8_t *w, const float *scale, const float *lut, const float *x, float *y,
                int64_t m, int64_t n, int64_t k, int64_t bn, int64_t bk, int64_t rounding, int64_t nt) {
    const int64_t gk = (k + bk - 1) / bk;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && n * k >= FP8_PAR_MIN)
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *row = w + r * k;
        const float *s = scale + (r / bn) * gk;
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * k;
#if defined(FP8_VECTOR) && defined(__AVX512F__)
            if (!rounding && bk % 16 == 0 && k % 16 == 0) {
                y[i * n + r] = fp8_row16(row, xi, s, k, bk);
                continue;
            }
#endif
            float total = 0.0f;
            for (int64_t j = 0; j < gk; j++) {
                const int64_t k0 = j * bk, k1 = k0 + bk < k ? k0 + bk : k;
                total += rounding ? block_dot_bf16(row, xi, lut, k0, k1, s[j]) : block_dot(row, xi, lut, k0, k1) * s[j];
            }
            y[i * n + r] = total;
        }
    }
}

/* out[(n - n0) * K + k] = value(w[n, k]) * scale[n / bn][k / bk] for rows n0 <= n < n1: one float32
 * multiplication per weight, as the layout's dequantization computes it. */
void fp8_dequant(const uint8_t *w, const float *scale, const float *lut, float *out, int64_t n0, int64_t n1, int64_t k,
                 int64_t bn, int64_t bk, int64_t rounding, int64_t nt) {
    const int64_t gk = (k + bk - 1) / bk;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (n1 - n0) * k >= FP8_PAR_MIN)
    for (int64_t r = n0; r < n1; r++) {
        const uint8_t *row = w + r * k;
        const float *s = scale + (r / bn) * gk;
        float *o = out + (r - n0) * k;
        for (int64_t j = 0; j < gk; j++) {
            const int64_t k0 = j * bk, k1 = k0 + bk < k ? k0 + bk : k;
            const float sj = s[j];
            int64_t c = k0;
#ifdef FP8_VECTOR
#if defined(__AVX512F__)
            const __m512 up16 = _mm512_set1_ps(256.0f), scale16 = _mm512_set1_ps(sj);
            for (; c + 16 <= k1; c += 16) _mm512_storeu_ps(o + c, _mm512_mul_ps(_mm512_mul_ps(fp8_values16(row + c), up16), scale16));
#endif
            const __m256 up = _mm256_set1_ps(256.0f), scale_j = _mm256_set1_ps(sj);
            for (; c + 8 <= k1; c += 8) {  /* value = half * 2^8 (exact), then one rounding by the scale */
                _mm256_storeu_ps(o + c, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtph_ps(fp8_halves8(row + c)), up), scale_j));
            }
#endif
            for (; c < k1; c++) o[c] = lut[row[c]] * sj;
            if (rounding) {
                for (c = k0; c < k1; c++) o[c] = round_bf16(o[c]);
            }
        }
    }
}
