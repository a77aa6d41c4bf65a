/* storage/q8.h: 8-bit block-wise dynamic quantization of optimizer state
 * (Dettmers et al., ICLR 2022): per block of FO_Q8_BLOCK elements, one float32
 * absmax, and one uint8 code per element naming a value of a 256-value map
 * (signed for first moments and momentum, unsigned for second moments).  The
 * maps and the code search are defined in src/fusedopt/_qmap.py, whose constants
 * csrc/generate.py writes into fusedopt_qmaps.h: a code reads back through the
 * map's 256 values; a value's code is float32 arithmetic (no search, so it
 * vectorises), the same operations as the NumPy twin.  The AVX2 and AVX-512
 * coders (isa/isa.h) compute the same bits with register permutes of the
 * tables at the end of fo_q8_map (a code's value as first + j * step, a value's
 * decade from its binade).  A kernel decodes a block
 * into a float32 staging block, updates it, then encodes it with the block's new
 * absmax: one read and one write of every code and scale per step. */
#define FO_STORAGE_q8_TYPE uint8_t
#define FO_STORAGE_q8_COMPUTE float
#define FO_STORAGE_q8_NAME "8bit"
#define FO_STORAGE_q8_BLOCK FO_Q8_BLOCK
#define FO_STORAGE_q8_KIND Q8
#define FO_STORAGE_q8_NARROW 0
#define FO_STORAGE_q8_SQRT sqrtf
#define FO_STORAGE_q8_ABS fabsf

#ifndef FUSEDOPT_STORAGE_Q8_H
#define FUSEDOPT_STORAGE_Q8_H
#include <float.h>
#include <math.h>
#include "bits.h"

typedef struct {
    int is_signed, zero;               /* zero: the code of 0.0 (1.0 is code 255) */
    int32_t count[7], base[7];         /* per decade: values, code of the first positive one */
    float first[7], step[7], inverse[7];
    float bound[8];                    /* decade boundaries: below bound[0] is 0, from bound[7] is 1 */
    float value[256];                  /* the map: code -> value (computed as first + j * step) */
    /* the same constants laid out for the SIMD coders' register permutes (isa/isa.h);
     * csrc/generate.py says how each is indexed */
    float decode_first[16], decode_step[16];
    int32_t binade_decade[32];
    float binade_next_bound[32];
    float decade_first[16], decade_inverse[16], decade_last[16];
    int32_t decade_base[16];
} fo_q8_map;
#include "fusedopt_qmaps.h"
#if FO_Q8_BLOCK != FO_QUANTIZATION_BLOCK
#error "src/fusedopt/_qmap.py BLOCK differs from FO_QUANTIZATION_BLOCK in fusedopt.h"
#endif

/* The code of x = value / absmax (nearest map value; any x, NaN included, gives a
 * code in [0, 255]).  Decade d holds count[0] * 2^d values; the positive side's
 * codes of decade d start at 127 + count (signed) or count - 1 (unsigned). */
static inline int32_t fo_q8_encode(float x, const fo_q8_map *q)
{
    const float a = q->is_signed ? fabsf(x) : x;
    float first = q->first[0], inverse = q->inverse[0], count, t;
    int32_t decade = 0, code, d;
    for (d = 1; d < FO_Q8_DECADES; d++) {
        const int above = a >= q->bound[d];
        first = above ? q->first[d] : first;
        inverse = above ? q->inverse[d] : inverse;
        decade += above;
    }
    count = (float)q->count[0] * fo_float_of((uint32_t)(decade + 127) << 23);   /* exact: times 2^decade */
    t = (a - first) * inverse + 0.5f;
    t = t < count - 1.0f ? t : count - 1.0f;   /* NaN -> the last value */
    t = t > 0.0f ? t : 0.0f;
    code = (int32_t)(q->is_signed ? 127.0f + count : count - 1.0f) + (int32_t)t;
    /* unsigned: a positive value never becomes 0 (a second moment of 0 turns the
     * next Adam update into m / eps); see src/fusedopt/_qmap.py */
    code = a < q->bound[0] ? (q->is_signed || !(a > 0.0f) ? q->zero : 1)
                           : (a >= q->bound[FO_Q8_DECADES] ? 255 : code);
    if (q->is_signed && x < 0.0f) code = 254 - code < 0 ? 0 : 254 - code;
    return code;
}

/* Block [0, n) (n <= FO_Q8_BLOCK) of codes to values, times the block's absmax. */
static inline void fo_q8_load_block(const uint8_t *FO_RESTRICT codes, int64_t n, float absmax,
                                    float *FO_RESTRICT out, const fo_q8_map *q)
{
    int64_t j;
    FO_PRAGMA_SIMD
    for (j = 0; j < n; j++) out[j] = q->value[codes[j]] * absmax;
}

/* Quantize x[0..n) (n <= FO_Q8_BLOCK) into codes with one new absmax. */
static inline void fo_q8_store_block(const float *FO_RESTRICT x, int64_t n, uint8_t *FO_RESTRICT codes,
                                     float *FO_RESTRICT absmax_out, const fo_q8_map *q)
{
    float absmax = 0.0f, inverse;
    int64_t j;
    /* NaN never wins (a > absmax is false): the same max in any order */
    FO_PRAGMA_SIMD_MAX(absmax)
    for (j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        absmax = a > absmax ? a : absmax;
    }
    /* an Inf (or a square that overflowed) saturates the scale at the largest float:
     * 1/Inf = 0 would make every code of the block 0 and read back as 0 * Inf = NaN */
    absmax = absmax > FLT_MAX ? FLT_MAX : absmax;
    inverse = absmax > 0.0f ? 1.0f / absmax : 0.0f;
    *absmax_out = absmax;
    FO_PRAGMA_SIMD
    for (j = 0; j < n; j++) codes[j] = (uint8_t)fo_q8_encode(x[j] * inverse, q);
}
#endif
