/* storage/bits.h: float32 <-> bit pattern, and the counter-based hash that drives
 * stochastic rounding.  Plain integer arithmetic: the same bits on every ISA. */
#ifndef FUSEDOPT_STORAGE_BITS_H
#define FUSEDOPT_STORAGE_BITS_H
#include <stdint.h>
#include <string.h>

/* type punning through a union: defined in C99, and what vectorizers handle best */
typedef union {
    float f;
    uint32_t u;
} fo_float_bits;

static inline uint32_t fo_bits_of(float x)
{
    fo_float_bits b;
    b.f = x;
    return b.u;
}

static inline float fo_float_of(uint32_t u)
{
    fo_float_bits b;
    b.u = u;
    return b.f;
}

/* A 32-bit integer hash with low bias (C. Wellons' "lowbias32"). */
static inline uint32_t fo_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* The random bits of element k of a tensor whose key (seed, step, tensor) is
 * `key`: they depend on nothing else, so not on the thread count or the ISA. */
static inline uint32_t fo_element_random(uint32_t key, int64_t k)
{
    return fo_hash32(fo_hash32((uint32_t)k ^ key) + (uint32_t)((uint64_t)k >> 32));
}

/* The random bits of state slot s at an element whose parameter draws r. */
static inline uint32_t fo_slot_random(uint32_t r, int s)
{
    return fo_hash32(r ^ (0x9e3779b9u * (uint32_t)(s + 1)));
}
#endif
