/* Shared by the GGUF kernels (native.c, matvec.c): the block sizes' guard and h2f.

   The block sizes (NAME_WEIGHTS, NAME_BYTES for each GGML type a kernel reads, e.g. Q4_K_WEIGHTS
   and Q4_K_BYTES) are not written here: quantdispatch passes them as -D defines made from its one
   block table (quantdispatch.gguf.types.BLOCK) when it builds a kernel. */
#ifndef QUANTDISPATCH_HALF_H
#define QUANTDISPATCH_HALF_H

#include <stdint.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#ifndef QUANTDISPATCH_BLOCK_SIZES
#error "build through quantdispatch.kernels._native: the block sizes come from quantdispatch.gguf.types.BLOCK as -D defines"
#endif

/* The IEEE half at p (little-endian) as a float, exactly: subnormals scaled exactly, infinities
   kept, NaN payloads kept (as numpy's conversion, and so gguf-py's). Where the compiler targets
   F16C, finite values take the hardware conversion (exact for every finite half, one instruction:
   the fused matrix-vector loops decode a scale per block with it); infinities and NaNs keep the
   integer path, which leaves a signalling NaN's payload as numpy does (F16C would quiet it). */
static inline float h2f(const uint8_t *p) {
    uint32_t h = (uint32_t)p[0] | ((uint32_t)p[1] << 8);
#if defined(__F16C__)
    if ((h & 0x7C00u) != 0x7C00u) return _cvtsh_ss((unsigned short)h);
#endif
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    float f;
    if (exp == 0x1Fu) bits = sign | 0x7F800000u | (man << 13);   /* inf, NaN */
    else if (exp == 0) {
        f = (float)man * 5.9604644775390625e-8f;                  /* man * 2^-24: exact */
        memcpy(&bits, &f, 4); bits |= sign;
    } else bits = sign | ((exp + 112u) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

#endif
