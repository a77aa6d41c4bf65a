/* storage/f16.h: IEEE float16 storage (numpy.float16), computed in float32.
 * Software conversions (integer and float32 arithmetic only, so every ISA gives
 * the same bits; no F16C needed): exact widening, and narrowing by round to
 * nearest even as NumPy casts (overflow to Inf, NaN to a quiet NaN). */
#include "bits.h"

#define FO_STORAGE_f16_TYPE uint16_t
#define FO_STORAGE_f16_COMPUTE float
#define FO_STORAGE_f16_NAME "float16"
#define FO_STORAGE_f16_BLOCK 1
#define FO_STORAGE_f16_KIND NARROW
#define FO_STORAGE_f16_NARROW 1
#define FO_STORAGE_f16_SQRT sqrtf
#define FO_STORAGE_f16_ABS fabsf
#define FO_STORAGE_f16_LOAD(ptr, k) fo_f16_to_f32((ptr)[k])
#define FO_STORAGE_f16_STORE(ptr, k, x) ((ptr)[k] = fo_f32_to_f16(x))
#define FO_STORAGE_f16_STORE_SR(ptr, k, x, r) ((ptr)[k] = fo_f32_to_f16_sr(x, r))

#ifndef FUSEDOPT_STORAGE_F16_H
#define FUSEDOPT_STORAGE_F16_H
static inline float fo_f16_to_f32(uint16_t h)
{
    const uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    const uint32_t exponent = ((uint32_t)h >> 10) & 0x1fu;
    const uint32_t mantissa = (uint32_t)h & 0x3ffu;
    /* subnormals: mantissa * 2^-24, exact in float32 */
    const float subnormal = (float)(int32_t)mantissa * 5.9604644775390625e-08f;
    const uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);
    const uint32_t special = 0x7f800000u | (mantissa << 13);
    const uint32_t magnitude = exponent == 0 ? fo_bits_of(subnormal) : (exponent == 31 ? special : normal);
    return fo_float_of(sign | magnitude);
}

/* Normal results: rebias the exponent, add the rounding increment below the 13
 * dropped bits, drop them (a carry out of the mantissa bumps the exponent, up to Inf). */
static inline uint32_t fo_f16_normal(uint32_t a, uint32_t increment)
{
    return (a - (112u << 23) + increment) >> 13;
}

static inline uint32_t fo_f16_special(uint32_t a)
{
    return a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x3ffu)) : 0x7c00u;   /* NaN : Inf */
}

static inline uint16_t fo_f32_to_f16(float x)
{
    const uint32_t u = fo_bits_of(x);
    const uint32_t a = u & 0x7fffffffu;
    /* below 2^-14, a float16 subnormal: adding 0.5 leaves the value's multiple of
     * 2^-24 in the low bits, rounded to nearest even by the float32 addition */
    const uint32_t subnormal = fo_bits_of(fo_float_of(a) + 0.5f) - 0x3f000000u;
    const uint32_t h = a >= 0x47800000u ? fo_f16_special(a)          /* >= 65536, Inf, NaN */
                       : a < 0x38800000u ? subnormal
                       : fo_f16_normal(a, 0xfffu + ((a >> 13) & 1u));
    return (uint16_t)(((u >> 16) & 0x8000u) | h);
}

/* Stochastic rounding: round up with probability equal to the dropped fraction. */
static inline uint16_t fo_f32_to_f16_sr(float x, uint32_t r)
{
    const uint32_t u = fo_bits_of(x);
    const uint32_t a = u & 0x7fffffffu;
    /* subnormal: the value in units of 2^-24 (exact), its floor, a random carry */
    const float units = fo_float_of(a < 0x38800000u ? a : 0u) * 16777216.0f;
    /* the floor of units (in [0, 1024)): adding 2^23 rounds it to an integer, to nearest */
    const float nearest = (units + 8388608.0f) - 8388608.0f;
    const float whole = nearest > units ? nearest - 1.0f : nearest;
    const uint32_t subnormal = (fo_bits_of(whole + 8388608.0f) - 0x4b000000u)
                               + ((float)(int32_t)(r >> 8) * 5.9604644775390625e-08f < units - whole);
    const uint32_t h = a >= 0x47800000u ? fo_f16_special(a)
                       : a < 0x38800000u ? subnormal
                       : fo_f16_normal(a, r & 0x1fffu);
    return (uint16_t)(((u >> 16) & 0x8000u) | h);
}
#endif
