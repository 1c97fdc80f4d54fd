"""A fused C path for the most used block types, compiled at first use; the eager kernels are the fallback.

Eager torch makes several passes over the output (unpack, convert, scale, offset), and at
~0.5 ns a weight each they cap the speed-up over gguf-py near 5x. These loops make one pass.
torch.compile was measured first and did not help (14-25 s cold compile, then Q4_K no faster than
eager), so this is plain C99, built with the system C compiler into a per-user cache, called
through ``ctypes`` on raw pointers.

Bit-exactness holds by construction: each weight is the same float32 expression as in gguf-py
(``ds * q - dm`` as a product, then a difference), built with ``-ffp-contract=off`` (no fused
multiply-add) and without ``-ffast-math``; the differential tests run both paths. float16 and
bfloat16 outputs are cast from float32 chunks by torch, as on the eager path.

``native_kernels()`` returns ``None`` where there is no C compiler or the build fails (then the
eager path serves every type), and always when ``QUANTDISPATCH_NATIVE=0``.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Mapping
from typing import Final

import torch

from quantdispatch.gguf.types import GgmlType

from .._native import build_library
from .tables import IQ4NL_VALUES, grid_table, sign_mask_table

__all__ = ["NATIVE_TYPES", "NativeKernel", "native_kernels"]

NativeKernel = Callable[[torch.Tensor, torch.Tensor], None]
"""``kernel(blocks, out)``: like an eager kernel, but ``blocks`` and ``out`` must be contiguous."""

_SOURCE: Final = r"""
#include <stdint.h>
#include <string.h>

static inline float h2f(const uint8_t *p) {            /* IEEE half at p, little-endian, exactly */
    uint32_t h = (uint32_t)p[0] | ((uint32_t)p[1] << 8);
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    float f;
    if (exp == 0x1Fu) bits = sign | 0x7F800000u | (man << 13);   /* inf, NaN (payload kept, as numpy) */
    else if (exp == 0) {
        f = (float)man * 5.9604644775390625e-8f;         /* man * 2^-24: exact */
        memcpy(&bits, &f, 4); bits |= sign;
    } else bits = sign | ((exp + 112u) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

void q4_0(const uint8_t *restrict b, float *restrict o, int64_t n) {
    for (int64_t i = 0; i < n; i++, b += 18, o += 32) {
        const float d = h2f(b);
        for (int j = 0; j < 16; j++) o[j] = d * (float)((int)(b[2 + j] & 15) - 8);
        for (int j = 0; j < 16; j++) o[16 + j] = d * (float)((int)(b[2 + j] >> 4) - 8);
    }
}

void q8_0(const uint8_t *restrict b, float *restrict o, int64_t n) {
    for (int64_t i = 0; i < n; i++, b += 34, o += 32) {
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

void q4_k(const uint8_t *restrict b, float *restrict o, int64_t n) {
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n; i++, b += 144, o += 256) {
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

void q5_k(const uint8_t *restrict b, float *restrict o, int64_t n) {
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n; i++, b += 176, o += 256) {
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

void q6_k(const uint8_t *restrict b, float *restrict o, int64_t n) {
    for (int64_t i = 0; i < n; i++, b += 210, o += 256) {
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

void iq4_xs(const uint8_t *restrict b, float *restrict o, int64_t n, const float *restrict kv) {
    for (int64_t i = 0; i < n; i++, b += 136, o += 256) {
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
void iq2_xs(const uint8_t *restrict b, float *restrict o, int64_t n, const float *restrict grid,
            const uint32_t *restrict signs) {
    for (int64_t i = 0; i < n; i++, b += 74, o += 256) {
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
"""

_NAMES: Final = {
    GgmlType.Q4_0: "q4_0",
    GgmlType.Q8_0: "q8_0",
    GgmlType.Q4_K: "q4_k",
    GgmlType.Q5_K: "q5_k",
    GgmlType.Q6_K: "q6_k",
    GgmlType.IQ4_XS: "iq4_xs",
    GgmlType.IQ2_XS: "iq2_xs",
}
NATIVE_TYPES: Final = frozenset(_NAMES)
"""The block types with a fused C kernel (the ones the benchmark measures)."""

_FLAGS: Final = ("-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-std=c99", "-shared", "-fPIC")


def _build() -> ctypes.CDLL | None:
    return build_library("gguf_native", _SOURCE, tuple(_FLAGS))


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _bind(lib: ctypes.CDLL, t: GgmlType) -> NativeKernel:
    fn = getattr(lib, _NAMES[t])
    fn.restype = None
    extra: tuple[torch.Tensor, ...] = ()
    if t is GgmlType.IQ4_XS:
        extra = (torch.tensor(IQ4NL_VALUES, dtype=torch.float32),)
    elif t is GgmlType.IQ2_XS:
        extra = (grid_table("iq2xs").contiguous(), sign_mask_table(True).contiguous())

    def kernel(blocks: torch.Tensor, out: torch.Tensor) -> None:
        if not (blocks.is_contiguous() and out.is_contiguous()):
            raise ValueError("the native kernels need contiguous blocks and output")
        fn(_ptr(blocks), _ptr(out), ctypes.c_int64(blocks.shape[0]), *(_ptr(x) for x in extra))

    kernel.__name__ = kernel.__qualname__ = f"native_{_NAMES[t]}"
    return kernel


@functools.cache
def native_kernels() -> Mapping[GgmlType, NativeKernel] | None:
    """The fused kernels by type, built (once per user and source version) on first call, or
    ``None`` when they cannot be: no C compiler, not Linux, a failed build, ``QUANTDISPATCH_NATIVE=0``."""
    if os.environ.get("QUANTDISPATCH_NATIVE", "1") == "0":
        return None
    lib = _build()
    if lib is None:
        return None
    return {t: _bind(lib, t) for t in _NAMES}
