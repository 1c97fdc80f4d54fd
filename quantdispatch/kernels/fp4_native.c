/* NVFP4 weights in place: E2M1 codes two per byte (low nibble first, column 2j; high nibble,
 * column 2j+1), one E4M3 scale byte per block of 16 input columns (as stored), and one float32
 * per-tensor scale g, multiplied in (ModelOpt's weight_scale_2) or divided by (compressed-tensors'
 * global scale): the block's float32 scale is computed as the layouts' block_scales compute it,
 * through a 256-entry table made once per call (tab[b] = e4m3[b] / g or e4m3[b] * g).
 *
 *   scale[n, b] = tab[byte(n, b)]
 *   W[n, k] = E2M1[code(n, k)] * scale[n, k / 16]
 *
 * nvfp4_matvec: y[i, n] = sum_k W[n, k] * x[i, k] for up to NVFP4_ROWS input rows (decode), each
 * weight computed as that one float32 product, sums in float32; each row of codes is read once for
 * every input row. nvfp4_dequant: rows n0..n1 of W as float32, for a GEMM on cache-sized blocks
 * (prefill). Both split output rows over `nt` OpenMP threads in static chunks (one thread on small
 * problems); each output is one thread's fixed-order sum, so results do not depend on `nt`.
 *
 * Vector paths (chosen by the compiler's macros, one build per SIMD level):
 * - AVX-512: 16 bytes (two blocks, 32 columns) widen to 16 int32; the low nibbles index the
 *   16-entry table directly (_mm512_permutexvar_ps reads the low 4 bits), the high nibbles after a
 *   shift. The low nibbles are the even columns, the high ones the odd columns, so the activations
 *   are first split once per call into that order (nvfp4_split_x).
 * - AVX2: 8 bytes (one block) widen to 8 int32; _mm256_permutevar8x32_ps looks up the magnitude
 *   (the low 3 bits), and bit 3 of the nibble becomes the float's sign bit.
 * Without AVX2 (or FMA), the portable loops below run.
 */
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NVFP4_VECTOR 1
#endif

#define NVFP4_BLOCK 16
#define NVFP4_ROWS 8
#define NVFP4_PAR_MIN (1 << 16) /* weights below which a call stays on one thread */
#define SC(i) tab[s8[i]]        /* block i's float32 scale: the call's table at its E4M3 byte */

static const float E2M1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

static void block_values(const uint8_t *bytes, float *w) {
    for (int j = 0; j < NVFP4_BLOCK / 2; j++) {
        w[2 * j] = E2M1[bytes[j] & 15];
        w[2 * j + 1] = E2M1[bytes[j] >> 4];
    }
}

#ifdef NVFP4_VECTOR
/* The activations' order for the vector loops: per 32 columns [even columns of block 0, of block 1,
 * odd columns of block 0, of block 1] (8 each); a last block of 16: [8 even, 8 odd]. */
static void nvfp4_split_x(const float *x, float *xp, int64_t k) {
    for (int64_t c0 = 0; c0 < k; c0 += 32) {
        const int64_t half = (k - c0 >= 32 ? 32 : 16) / 2;
        for (int64_t j = 0; j < half; j++) {
            xp[c0 + j] = x[c0 + 2 * j];
            xp[c0 + half + j] = x[c0 + 2 * j + 1];
        }
    }
}

/* One block of 8 bytes: the weights of its even columns (lo) and odd columns (hi), scaled. */
static inline void nvfp4_block8(const uint8_t *bytes, float scale, __m256 *lo, __m256 *hi) {
    const __m256 magnitude = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)bytes));
    const __m256i hb = _mm256_srli_epi32(b, 4);
    const __m256 s = _mm256_set1_ps(scale);
    __m256 l = _mm256_permutevar8x32_ps(magnitude, b), h = _mm256_permutevar8x32_ps(magnitude, hb);
    l = _mm256_xor_ps(l, _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(b, 28), sign)));
    h = _mm256_xor_ps(h, _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(hb, 28), sign)));
    *lo = _mm256_mul_ps(l, s);
    *hi = _mm256_mul_ps(h, s);
}

static inline float nvfp4_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One output row against R split activation rows (k apart): y[r * n] = the sums. R is a constant at
 * each call, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void nvfp4_rows(const uint8_t *row, const uint8_t *s8, const float *tab, const float *xp, float *y,
                                                             int64_t n, int64_t k, const int R) {
    const int64_t k32 = k / 32 * 32;
#if defined(__AVX512F__)
    const __m512 table = _mm512_loadu_ps(E2M1);
    __m512 a[4], b[4];
    for (int r = 0; r < R; r++) a[r] = b[r] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < k32; c0 += 32) {
        const __m512i codes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + c0 / 2)));
        const __m512 sv = _mm512_insertf32x8(_mm512_set1_ps(SC(c0 / 16)), _mm256_set1_ps(SC(c0 / 16 + 1)), 1);
        const __m512 lo = _mm512_mul_ps(_mm512_permutexvar_ps(codes, table), sv);
        const __m512 hi = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4), table), sv);
        for (int r = 0; r < R; r++) {
            a[r] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xp + r * k + c0), a[r]);
            b[r] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp + r * k + c0 + 16), b[r]);
        }
    }
    float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (k32 < k) {
        __m256 lo, hi;
        nvfp4_block8(row + k32 / 2, SC(k32 / 16), &lo, &hi);
        for (int r = 0; r < R; r++)
            tail[r] = nvfp4_hsum8(_mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + r * k + k32 + 8), _mm256_mul_ps(lo, _mm256_loadu_ps(xp + r * k + k32))));
    }
    for (int r = 0; r < R; r++) y[r * n] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r])) + tail[r];
#else
    __m256 a[4], b[4];
    for (int r = 0; r < R; r++) a[r] = b[r] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < k; c0 += 32) {
        const int64_t half = (k - c0 >= 32 ? 32 : 16) / 2;
        for (int64_t bi = 0; bi < half / 8; bi++) {
            __m256 lo, hi;
            nvfp4_block8(row + c0 / 2 + 8 * bi, SC(c0 / 16 + bi), &lo, &hi);
            for (int r = 0; r < R; r++) {
                a[r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp + r * k + c0 + 8 * bi), a[r]);
                b[r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + r * k + c0 + half + 8 * bi), b[r]);
            }
        }
    }
    (void)k32;
    for (int r = 0; r < R; r++) y[r * n] = nvfp4_hsum8(_mm256_add_ps(a[r], b[r]));
#endif
}
#endif

/* The block scales' table: the float32 value of each E4M3 byte (e4m3), times or over g. */
static void nvfp4_table(const float *e4m3, float g, int64_t divide, float *tab) {
    for (int i = 0; i < 256; i++) tab[i] = divide ? e4m3[i] / g : e4m3[i] * g;
}

void nvfp4_matvec(const uint8_t *packed, const uint8_t *scale8, const float *e4m3, const float *g_ptr, const float *x, float *y,
                  int64_t divide, int64_t m, int64_t n, int64_t k, int64_t nt) {
    const int64_t blocks = k / NVFP4_BLOCK;
    float tab[256];
    nvfp4_table(e4m3, *g_ptr, divide, tab);
#ifdef NVFP4_VECTOR
    float *xp = malloc(sizeof(float) * (size_t)(m * k));
    if (xp != NULL) {
        for (int64_t i = 0; i < m; i++) nvfp4_split_x(x + i * k, xp + i * k, k);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && n * k >= NVFP4_PAR_MIN)
        for (int64_t r = 0; r < n; r++) {
            const uint8_t *row = packed + r * (k / 2);
            const uint8_t *s8 = scale8 + r * blocks;
            int64_t i = 0;
            for (; i + 4 <= m; i += 4) nvfp4_rows(row, s8, tab, xp + i * k, y + i * n + r, n, k, 4);
            switch (m - i) {
            case 3: nvfp4_rows(row, s8, tab, xp + i * k, y + i * n + r, n, k, 3); break;
            case 2: nvfp4_rows(row, s8, tab, xp + i * k, y + i * n + r, n, k, 2); break;
            case 1: nvfp4_rows(row, s8, tab, xp + i * k, y + i * n + r, n, k, 1); break;
            default: break;
            }
        }
        free(xp);
        return;
    }
#endif
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && n * k >= NVFP4_PAR_MIN)
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *row = packed + r * (k / 2);
        const uint8_t *s8 = scale8 + r * blocks;
        float acc[NVFP4_ROWS] = {0.0f};
        for (int64_t b = 0; b < blocks; b++) {
            float w[NVFP4_BLOCK];
            block_values(row + b * (NVFP4_BLOCK / 2), w);
            for (int64_t i = 0; i < m; i++) {
                const float *xi = x + i * k + b * NVFP4_BLOCK;
                float part = 0.0f;
                for (int j = 0; j < NVFP4_BLOCK; j++) {
                    part += w[j] * xi[j];
                }
                acc[i] += SC(b) * part;
            }
        }
        for (int64_t i = 0; i < m; i++) {
            y[i * n + r] = acc[i];
        }
    }
}

/* out[(r - n0) * k + c] = E2M1[code] * scale: one float32 product per weight, on every path. */
void nvfp4_dequant(const uint8_t *packed, const uint8_t *scale8, const float *e4m3, const float *g_ptr, float *out, int64_t divide,
                   int64_t n0, int64_t n1, int64_t k, int64_t nt) {
    const int64_t blocks = k / NVFP4_BLOCK;
    float tab[256];
    nvfp4_table(e4m3, *g_ptr, divide, tab);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (n1 - n0) * k >= NVFP4_PAR_MIN)
    for (int64_t r = n0; r < n1; r++) {
        float *o = out + (r - n0) * k;
#ifdef NVFP4_VECTOR
        for (int64_t b = 0; b < blocks; b++) {
            __m256 lo, hi;
            nvfp4_block8(packed + r * (k / 2) + b * (NVFP4_BLOCK / 2), tab[scale8[r * blocks + b]], &lo, &hi);
            const __m256 first = _mm256_unpacklo_ps(lo, hi), second = _mm256_unpackhi_ps(lo, hi);
            _mm256_storeu_ps(o + b * NVFP4_BLOCK, _mm256_permute2f128_ps(first, second, 0x20));
            _mm256_storeu_ps(o + b * NVFP4_BLOCK + 8, _mm256_permute2f128_ps(first, second, 0x31));
        }
#else
        for (int64_t b = 0; b < blocks; b++) {
            float w[NVFP4_BLOCK];
            const float s = tab[scale8[r * blocks + b]];
            block_values(packed + r * (k / 2) + b * (NVFP4_BLOCK / 2), w);
            for (int j = 0; j < NVFP4_BLOCK; j++) {
                o[b * NVFP4_BLOCK + j] = w[j] * s;
            }
        }
#endif
    }
}

/* MXFP4 (gpt-oss experts): the same E2M1 codes, 32 per block with one E8M0 scale byte s, the
 * power of two 2^(s - 127) (s = 0: 2^-127, a float32 subnormal; 255, NaN in E8M0, is refused at
 * load and reads as infinity here, as Transformers' ldexp computes it). One expert's projection:
 *
 *   W[n, k] = E2M1[code(n, k)] * 2^(scale[n, k / 32] - 127)     codes [N, K/32, 16], scales [N, K/32]
 *
 * mxfp4_matvec and mxfp4_dequant are nvfp4_matvec and nvfp4_dequant with these blocks.
 */
#define MXFP4_BLOCK 32
#define MXFP4_LANES 8

static float e8m0(uint8_t s) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = s ? (uint32_t)s << 23 : 0x00400000u;
    return v.f;
}

void mxfp4_matvec(const uint8_t *packed, const uint8_t *scale, const float *x, float *y, int64_t m, int64_t n, int64_t k) {
    const int64_t blocks = k / MXFP4_BLOCK;
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *row = packed + r * (k / 2);
        const uint8_t *s = scale + r * blocks;
        float acc[NVFP4_ROWS] = {0.0f};
        for (int64_t b = 0; b < blocks; b++) {
            float w[MXFP4_BLOCK];
            block_values(row + b * (MXFP4_BLOCK / 2), w);
            block_values(row + b * (MXFP4_BLOCK / 2) + NVFP4_BLOCK / 2, w + NVFP4_BLOCK);
            const float sb = e8m0(s[b]);
            for (int64_t i = 0; i < m; i++) {
                const float *xi = x + i * k + b * MXFP4_BLOCK;
                /* Eight lanes (one AVX register), summed at the end of the block: a loop the
                 * compiler vectorizes, still in float32. */
                float lane[MXFP4_LANES] = {0.0f};
                for (int j = 0; j < MXFP4_BLOCK; j += MXFP4_LANES) {
                    for (int l = 0; l < MXFP4_LANES; l++) {
                        lane[l] += w[j + l] * xi[j + l];
                    }
                }
                float part = 0.0f;
                for (int l = 0; l < MXFP4_LANES; l++) {
                    part += lane[l];
                }
                acc[i] += sb * part;
            }
        }
        for (int64_t i = 0; i < m; i++) {
            y[i * n + r] = acc[i];
        }
    }
}

void mxfp4_dequant(const uint8_t *packed, const uint8_t *scale, float *out, int64_t n0, int64_t n1, int64_t k) {
    const int64_t blocks = k / MXFP4_BLOCK;
    for (int64_t r = n0; r < n1; r++) {
        float *o = out + (r - n0) * k;
        for (int64_t b = 0; b < blocks; b++) {
            float w[MXFP4_BLOCK];
            const float sb = e8m0(scale[r * blocks + b]);
            block_values(packed + r * (k / 2) + b * (MXFP4_BLOCK / 2), w);
            block_values(packed + r * (k / 2) + b * (MXFP4_BLOCK / 2) + NVFP4_BLOCK / 2, w + NVFP4_BLOCK);
            for (int j = 0; j < MXFP4_BLOCK; j++) {
                o[b * MXFP4_BLOCK + j] = w[j] * sb;
            }
        }
    }
}
