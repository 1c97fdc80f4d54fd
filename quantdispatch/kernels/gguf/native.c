/* Fused GGUF block dequantization (see native.py): one float32 pass per block, bit-exact against
   gguf-py. Block sizes come from quantdispatch's block table as -D defines (half.h). */
#include <stdint.h>
#include <string.h>

#include "half.h"

/* Threads: each entry point takes nt and splits the n blocks into one contiguous range per thread
   (each block is written by one thread with the same code, so the output does not depend on nt);
   small tensors stay on one thread, where the fork/join costs more than the work. */
#define SPLIT(T, CALL)                                                                         \
    const int64_t team = (nt > 1 && n * T##_WEIGHTS >= ((int64_t)1 << 18)) ? (nt < n ? nt : n) : 1; \
    const int64_t per = (n + team - 1) / team;                                                 \
    _Pragma("omp parallel for num_threads((int)team) schedule(static)")                        \
    for (int64_t c = 0; c < team; c++) {                                                       \
        const int64_t lo = c * per, count = n - lo < per ? n - lo : per;                       \
        if (count > 0) CALL;                                                                   \
    }

static void q4_0_run(const uint8_t *restrict b, float *restrict o, int64_t n) {
    for (int64_t i = 0; i < n; i++, b += Q4_0_BYTES, o += Q4_0_WEIGHTS) {
        const float d = h2f(b);
        for (int j = 0; j < 16; j++) o[j] = d * (float)((int)(b[2 + j] & 15) - 8);
        for (int j = 0; j < 16; j++) o[16 + j] = d * (float)((int)(b[2 + j] >> 4) - 8);
    }
}

static void q8_0_run(const uint8_t *restrict b, float *restrict o, int64_t n) {
    for (int64_t i = 0; i < n; i++, b += Q8_0_BYTES, o += Q8_0_WEIGHTS) {
        const float d = h2f(b);
        for (int j = 0; j < 32; j++) o[j] = (float)(int8_t)b[2 + j] * d;
    }
}

static void scale_min_k4(const uint8_t *s, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;     mn[j] = s[4 + j] & 63;
        sc[4 + j] = (s[8 + j] & 15) | ((s[j] >> 2) & 48);
        mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 48);
    }
}

static void q4_k_run(const uint8_t *restrict b, float *restrict o, int64_t n) {
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n; i++, b += Q4_K_BYTES, o += Q4_K_WEIGHTS) {
        const float d = h2f(b), dmin = h2f(b + 2);
        scale_min_k4(b + 4, sc, mn);
        for (int g = 0; g < 4; g++) {
            const uint8_t *q = b + 16 + 32 * g;
            const float d0 = d * (float)sc[2 * g], m0 = dmin * (float)mn[2 * g];
            const float d1 = d * (float)sc[2 * g + 1], m1 = dmin * (float)mn[2 * g + 1];
            float *w = o + 64 * g;
            for (int j = 0; j < 32; j++) w[j] = d0 * (float)(q[j] & 15) - m0;
            for (int j = 0; j < 32; j++) w[32 + j] = d1 * (float)(q[j] >> 4) - m1;
        }
    }
}

static void q5_k_run(const uint8_t *restrict b, float *restrict o, int64_t n) {
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n; i++, b += Q5_K_BYTES, o += Q5_K_WEIGHTS) {
        const float d = h2f(b), dmin = h2f(b + 2);
        const uint8_t *qh = b + 16;
        scale_min_k4(b + 4, sc, mn);
        for (int g = 0; g < 4; g++) {
            const uint8_t *q = b + 48 + 32 * g;
            const int s0 = 2 * g, s1 = 2 * g + 1;
            const float d0 = d * (float)sc[s0], m0 = dmin * (float)mn[s0];
            const float d1 = d * (float)sc[s1], m1 = dmin * (float)mn[s1];
            float *w = o + 64 * g;
            for (int j = 0; j < 32; j++) w[j] = d0 * (float)((q[j] & 15) | (((qh[j] >> s0) & 1) << 4)) - m0;
            for (int j = 0; j < 32; j++) w[32 + j] = d1 * (float)((q[j] >> 4) | (((qh[j] >> s1) & 1) << 4)) - m1;
        }
    }
}

static void q6_k_run(const uint8_t *restrict b, float *restrict o, int64_t n) {
    for (int64_t i = 0; i < n; i++, b += Q6_K_BYTES, o += Q6_K_WEIGHTS) {
        const float d = h2f(b + 208);
        float ds[16];
        for (int s = 0; s < 16; s++) ds[s] = d * (float)(int8_t)b[192 + s];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            for (int k = 0; k < 4; k++) {
                const int shift = (k / 2) * 4;
                const uint8_t *l = ql + 32 * (k % 2);
                float *w = o + 128 * h + 32 * k;
                const float s0 = ds[(128 * h + 32 * k) / 16], s1 = ds[(128 * h + 32 * k) / 16 + 1];
                for (int j = 0; j < 32; j++) {
                    const int q = (((l[j] >> shift) & 15) | (((qh[j] >> (2 * k)) & 3) << 4)) - 32;
                    w[j] = (j < 16 ? s0 : s1) * (float)q;
                }
            }
        }
    }
}

static void iq4_xs_run(const uint8_t *restrict b, float *restrict o, int64_t n, const float *restrict kv) {
    for (int64_t i = 0; i < n; i++, b += IQ4_XS_BYTES, o += IQ4_XS_WEIGHTS) {
        const float d = h2f(b);
        const uint32_t sh = (uint32_t)b[2] | ((uint32_t)b[3] << 8);
        for (int s = 0; s < 8; s++) {
            const int ls = ((b[4 + s / 2] >> (4 * (s % 2))) & 15) | (((sh >> (2 * s)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            const uint8_t *q = b + 8 + 16 * s;
            float *w = o + 32 * s;
            for (int j = 0; j < 16; j++) { w[j] = dl * kv[q[j] & 15]; w[16 + j] = dl * kv[q[j] >> 4]; }
        }
    }
}

/* signs: 128 x 8 words, the float sign bit (or 0) of each weight for a 7-bit sign index. */
static void iq2_xs_run(const uint8_t *restrict b, float *restrict o, int64_t n, const float *restrict grid,
            const uint32_t *restrict signs) {
    for (int64_t i = 0; i < n; i++, b += IQ2_XS_BYTES, o += IQ2_XS_WEIGHTS) {
        const float d = h2f(b);
        for (int r = 0; r < 32; r++) {
            const uint32_t v = (uint32_t)b[2 + 2 * r] | ((uint32_t)b[3 + 2 * r] << 8);
            const int s = r / 2;
            const float db = d * (0.5f + (float)((b[66 + s / 2] >> (4 * (s % 2))) & 15)) * 0.25f;
            const float *g = grid + 8 * (v & 511);
            const uint32_t *m = signs + 8 * (v >> 9);
            uint32_t w[8];
            for (int k = 0; k < 8; k++) { const float x = db * g[k]; memcpy(&w[k], &x, 4); w[k] ^= m[k]; }
            memcpy(o + 8 * r, w, sizeof w);                    /* x * -1 is x with its sign bit flipped */
        }
    }
}

/* The entry points: (blocks, out, n, threads, tables...). */
void q4_0(const uint8_t *restrict b, float *restrict o, int64_t n, int64_t nt) {
    SPLIT(Q4_0, q4_0_run(b + lo * Q4_0_BYTES, o + lo * Q4_0_WEIGHTS, count))
}
void q8_0(const uint8_t *restrict b, float *restrict o, int64_t n, int64_t nt) {
    SPLIT(Q8_0, q8_0_run(b + lo * Q8_0_BYTES, o + lo * Q8_0_WEIGHTS, count))
}
void q4_k(const uint8_t *restrict b, float *restrict o, int64_t n, int64_t nt) {
    SPLIT(Q4_K, q4_k_run(b + lo * Q4_K_BYTES, o + lo * Q4_K_WEIGHTS, count))
}
void q5_k(const uint8_t *restrict b, float *restrict o, int64_t n, int64_t nt) {
    SPLIT(Q5_K, q5_k_run(b + lo * Q5_K_BYTES, o + lo * Q5_K_WEIGHTS, count))
}
void q6_k(const uint8_t *restrict b, float *restrict o, int64_t n, int64_t nt) {
    SPLIT(Q6_K, q6_k_run(b + lo * Q6_K_BYTES, o + lo * Q6_K_WEIGHTS, count))
}
void iq4_xs(const uint8_t *restrict b, float *restrict o, int64_t n, int64_t nt, const float *restrict kv) {
    SPLIT(IQ4_XS, iq4_xs_run(b + lo * IQ4_XS_BYTES, o + lo * IQ4_XS_WEIGHTS, count, kv))
}
void iq2_xs(const uint8_t *restrict b, float *restrict o, int64_t n, int64_t nt, const float *restrict grid,
            const uint32_t *restrict signs) {
    SPLIT(IQ2_XS, iq2_xs_run(b + lo * IQ2_XS_BYTES, o + lo * IQ2_XS_WEIGHTS, count, grid, signs))
}
