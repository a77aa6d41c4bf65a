/* storage/q8.h: 8-bit block-wise dynamic quantization of optimizer state
 * (Dettmers et al., ICLR 2022): per block of FO_Q8_BLOCK elements, one float32
 * absmax, and one uint8 code per element indexing a 256-value map (signed for
 * first moments and momentum, unsigned for second moments).  The maps, their
 * midpoints and the code search tables come from src/fusedopt/_qmap.py (via
 * csrc/generate.py).  A kernel reads a block's codes, updates in float32 into a
 * staging block, then quantizes it with the block's new absmax: one read and one
 * write of every code and scale per step. */
#define FO_STORAGE_q8_TYPE uint8_t
#define FO_STORAGE_q8_COMPUTE float
#define FO_STORAGE_q8_NAME "8bit"
#define FO_STORAGE_q8_BLOCK FO_Q8_BLOCK
#define FO_STORAGE_q8_KIND Q8
#define FO_STORAGE_q8_NARROW 0
#define FO_STORAGE_q8_SQRT sqrtf

#ifndef FUSEDOPT_STORAGE_Q8_H
#define FUSEDOPT_STORAGE_Q8_H
#include "bits.h"
#include "fusedopt_qmaps.h"

/* The code of x (x = value / absmax, in [-1, 1]): the number of midpoints below x.
 * The table gives the code at the bottom of x's bucket; a bucket holds at most two
 * midpoints (checked when the table is built).  Any x (NaN included) gives a code
 * in [0, 255]: every index stays in its table. */
static inline int32_t fo_q8_encode(float x, const float *mid, const int32_t *start)
{
    const uint32_t u = fo_bits_of(x);
    const int32_t magnitude = (int32_t)(u & 0x7fffffffu);
    const int32_t exponent = magnitude >> 23;
    const int32_t mantissa = exponent < FO_Q8_EXP_MIN ? 0 : (magnitude >> 15) & 0xff;
    const int32_t clamped = exponent < FO_Q8_EXP_MIN ? FO_Q8_EXP_MIN : (exponent > 127 ? 127 : exponent);
    int32_t code = start[(int32_t)(u >> 31) * FO_Q8_BUCKETS + (clamped - FO_Q8_EXP_MIN) * 256 + mantissa];
    code += x > mid[code];
    code += x > mid[code];
    return code;
}

/* Quantize x[0..n) (n <= FO_Q8_BLOCK) into codes with one new absmax. */
static inline void fo_q8_store_block(const float *FO_RESTRICT x, int64_t n, uint8_t *FO_RESTRICT codes,
                                     float *FO_RESTRICT absmax_out, const float *mid, const int32_t *start)
{
    float absmax = 0.0f, inverse;
    int64_t j;
    /* NaN never wins (a > absmax is false): the same max in any order */
    FO_PRAGMA_SIMD_MAX(absmax)
    for (j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        absmax = a > absmax ? a : absmax;
    }
    inverse = absmax > 0.0f ? 1.0f / absmax : 0.0f;
    *absmax_out = absmax;
    FO_PRAGMA_SIMD
    for (j = 0; j < n; j++) codes[j] = (uint8_t)fo_q8_encode(x[j] * inverse, mid, start);
}
#endif
