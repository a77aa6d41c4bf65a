/* storage/bf16.h: bfloat16 storage (ml_dtypes.bfloat16), computed in float32.
 * Round to nearest even as ml_dtypes (and Eigen) cast: NaN to a quiet NaN of the
 * same sign.  Plain integer code, so every ISA gives the same bits. */
#include "bits.h"

#define FO_STORAGE_bf16_TYPE uint16_t
#define FO_STORAGE_bf16_COMPUTE float
#define FO_STORAGE_bf16_NAME "bfloat16"
#define FO_STORAGE_bf16_BLOCK 1
#define FO_STORAGE_bf16_KIND NARROW
#define FO_STORAGE_bf16_NARROW 1
#define FO_STORAGE_bf16_SQRT sqrtf
#define FO_STORAGE_bf16_ABS fabsf
#define FO_STORAGE_bf16_LOAD(ptr, k) fo_bf16_to_f32((ptr)[k])
#define FO_STORAGE_bf16_STORE(ptr, k, x) ((ptr)[k] = fo_f32_to_bf16(x))
#define FO_STORAGE_bf16_STORE_SR(ptr, k, x, r) ((ptr)[k] = fo_f32_to_bf16_sr(x, r))

#ifndef FUSEDOPT_STORAGE_BF16_H
#define FUSEDOPT_STORAGE_BF16_H
static inline float fo_bf16_to_f32(uint16_t h)
{
    return fo_float_of((uint32_t)h << 16);
}

static inline uint16_t fo_f32_to_bf16(float x)
{
    const uint32_t u = fo_bits_of(x);
    const uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(nan ? ((u >> 16) | 0x0040u) & 0xffc0u : rounded);
}

/* Round up with probability equal to the dropped fraction: add 16 random bits
 * below the kept ones and truncate.  Unbiased; NaN stays a quiet NaN. */
static inline uint16_t fo_f32_to_bf16_sr(float x, uint32_t r)
{
    const uint32_t u = fo_bits_of(x);
    const uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + (r & 0xffffu)) >> 16;
    return (uint16_t)(nan ? ((u >> 16) | 0x0040u) & 0xffc0u : rounded);
}
#endif
