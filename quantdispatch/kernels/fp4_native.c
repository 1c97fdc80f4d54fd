/* NVFP4 weights in place: E2M1 codes two per byte (low nibble first, column 2j; high nibble,
 * column 2j+1), one E4M3 scale byte per block of 16 input columns (as stored), and one float32
 * per-tensor scale g, multiplied in (ModelOpt's weight_scale_2) or divided by (compressed-tensors'
 * global scale): the block's float32 scale is computed as the layouts' block_scales compute it.
 *
 *   scale[n, b] = divide ? E4M3[byte(n, b)] / g : E4M3[byte(n, b)] * g
 *   W[n, k] = E2M1[code(n, k)] * scale[n, k / 16]
 *
 * nvfp4_matvec: y[i, n] = sum_b scale[n, b] * sum_{j < 16} W'[n, 16 b + j] * x[i, 16 b + j] for up to
 * NVFP4_ROWS input rows (decode): each row of codes is read once for every input row, in float32.
 * nvfp4_dequant: rows n0..n1 of W as float32, for a GEMM on cache-sized blocks (prefill).
 */
#include <stdint.h>

#define NVFP4_BLOCK 16
#define NVFP4_ROWS 8

static const float E2M1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

static void block_values(const uint8_t *bytes, float *w) {
    for (int j = 0; j < NVFP4_BLOCK / 2; j++) {
        w[2 * j] = E2M1[bytes[j] & 15];
        w[2 * j + 1] = E2M1[bytes[j] >> 4];
    }
}

static inline float block_scale(const uint8_t *scale8, const float *e4m3, float g, int64_t divide, int64_t i) {
    return divide ? e4m3[scale8[i]] / g : e4m3[scale8[i]] * g;
}

/* g_ptr: the float32 per-tensor scale; e4m3: the 256 float32 values of the E4M3 bytes. */
void nvfp4_matvec(const uint8_t *packed, const uint8_t *scale8, const float *e4m3, const float *g_ptr, const float *x, float *y,
                  int64_t divide, int64_t m, int64_t n, int64_t k) {
    const int64_t blocks = k / NVFP4_BLOCK;
    const float g = *g_ptr;
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *row = packed + r * (k / 2);
        float acc[NVFP4_ROWS] = {0.0f};
        for (int64_t b = 0; b < blocks; b++) {
            float w[NVFP4_BLOCK];
            const float s = block_scale(scale8, e4m3, g, divide, r * blocks + b);
            block_values(row + b * (NVFP4_BLOCK / 2), w);
            for (int64_t i = 0; i < m; i++) {
                const float *xi = x + i * k + b * NVFP4_BLOCK;
                float part = 0.0f;
                for (int j = 0; j < NVFP4_BLOCK; j++) {
                    part += w[j] * xi[j];
                }
                acc[i] += s * part;
            }
        }
        for (int64_t i = 0; i < m; i++) {
            y[i * n + r] = acc[i];
        }
    }
}

void nvfp4_dequant(const uint8_t *packed, const uint8_t *scale8, const float *e4m3, const float *g_ptr, float *out, int64_t divide,
                   int64_t n0, int64_t n1, int64_t k) {
    const int64_t blocks = k / NVFP4_BLOCK;
    const float g = *g_ptr;
    for (int64_t r = n0; r < n1; r++) {
        float *o = out + (r - n0) * k;
        for (int64_t b = 0; b < blocks; b++) {
            float w[NVFP4_BLOCK];
            const float s = block_scale(scale8, e4m3, g, divide, r * blocks + b);
            block_values(packed + r * (k / 2) + b * (NVFP4_BLOCK / 2), w);
            for (int j = 0; j < NVFP4_BLOCK; j++) {
                o[b * NVFP4_BLOCK + j] = w[j] * s;
            }
        }
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
