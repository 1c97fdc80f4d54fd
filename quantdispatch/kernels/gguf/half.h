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

/* The IEEE half at p (little-endian) as a float. Exact for every finite half (subnormals
   included) and for infinities. NaNs: with QUANTDISPATCH_H2F_QUIET_NAN defined and F16C available
   (the matrix-vector kernels, where a NaN scale makes a NaN output whatever its payload), the
   hardware conversion alone, one instruction, which quiets a signalling NaN; otherwise (the
   dequantization kernels, bit-exact against gguf-py) the payload is kept as numpy keeps it, and
   finite values still take F16C where it is available. */
static inline float h2f(const uint8_t *p) {
    const uint32_t h = (uint32_t)p[0] | ((uint32_t)p[1] << 8);
#if defined(__F16C__) && defined(QUANTDISPATCH_H2F_QUIET_NAN)
    return _cvtsh_ss((unsigned short)h);
#else
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
#endif
}

#endif
