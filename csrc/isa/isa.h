/*
 * isa/isa.h: compiles every kernels.def row and the statistics loops for one ISA
 * and exports them as the table fo_kernels_<FO_ISA>.  The including file defines
 * FO_ISA and sets the compiler's target first.  Built with -ffp-contract=off,
 * every ISA gives the same bits.
 */
#include <math.h>
#include "../runtime/internal.h"

#if defined(FO_ISA_AVX512)
#include <immintrin.h>
/* 8-bit decode without gathers (slow on some CPUs): the map's 256 values sit in
 * 16 registers; a 2-register permute picks among 32 by the code's low 5 bits,
 * and three blends by its high bits.  The same values as the table, so the same
 * bits as fo_q8_load_block. */
static inline void fo_q8_load_block_avx512(const uint8_t *FO_RESTRICT codes, int64_t n, float absmax,
                                           float *FO_RESTRICT out, const fo_q8_map *q)
{
    __m512 table[16], pair[8];
    const __m512 scale = _mm512_set1_ps(absmax);
    int64_t j = 0;
    int k;
    for (k = 0; k < 16; k++) table[k] = _mm512_loadu_ps(q->value + 16 * k);
    for (; j + 16 <= n; j += 16) {
        const __m512i code = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + j)));
        const __mmask16 bit5 = _mm512_test_epi32_mask(code, _mm512_set1_epi32(32));
        const __mmask16 bit6 = _mm512_test_epi32_mask(code, _mm512_set1_epi32(64));
        const __mmask16 bit7 = _mm512_test_epi32_mask(code, _mm512_set1_epi32(128));
        __m512 low, high;
        for (k = 0; k < 8; k++) pair[k] = _mm512_permutex2var_ps(table[2 * k], code, table[2 * k + 1]);
        low = _mm512_mask_blend_ps(bit6, _mm512_mask_blend_ps(bit5, pair[0], pair[1]),
                                   _mm512_mask_blend_ps(bit5, pair[2], pair[3]));
        high = _mm512_mask_blend_ps(bit6, _mm512_mask_blend_ps(bit5, pair[4], pair[5]),
                                    _mm512_mask_blend_ps(bit5, pair[6], pair[7]));
        _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_mask_blend_ps(bit7, low, high), scale));
    }
    for (; j < n; j++) out[j] = q->value[codes[j]] * absmax;
}

/* fo_q8_store_block with the decade's constants taken by one permute each instead
 * of select chains: the same float32 operations in the same order (no FMA), the
 * same NaN rules (max/min keep the second operand), so the same codes. */
static inline void fo_q8_store_block_avx512(const float *FO_RESTRICT x, int64_t n, uint8_t *FO_RESTRICT codes,
                                            float *FO_RESTRICT absmax_out, const fo_q8_map *q)
{
    const __m512 magnitude_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    __m512 biggest = _mm512_setzero_ps(), first_table, inverse_table;
    float absmax, inverse, tail_max = 0.0f;
    int64_t j = 0;
    int d;
    for (; j + 16 <= n; j += 16)   /* a > m ? a : m, lane by lane: NaN never wins */
        biggest = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + j), magnitude_mask), biggest);
    for (; j < n; j++) {
        const float a = fabsf(x[j]);
        tail_max = a > tail_max ? a : tail_max;
    }
    absmax = _mm512_reduce_max_ps(biggest);
    absmax = tail_max > absmax ? tail_max : absmax;
    absmax = absmax > FLT_MAX ? FLT_MAX : absmax;     /* as fo_q8_store_block */
    inverse = absmax > 0.0f ? 1.0f / absmax : 0.0f;
    *absmax_out = absmax;
    {
        float first[16] = {0}, inverses[16] = {0};
        for (d = 0; d < FO_Q8_DECADES; d++) {
            first[d] = q->first[d];
            inverses[d] = q->inverse[d];
        }
        first_table = _mm512_loadu_ps(first);
        inverse_table = _mm512_loadu_ps(inverses);
    }
    for (j = 0; j + 16 <= n; j += 16) {
        const __m512 value = _mm512_mul_ps(_mm512_loadu_ps(x + j), _mm512_set1_ps(inverse));
        const __m512 a = q->is_signed ? _mm512_and_ps(value, magnitude_mask) : value;
        __m512i decade = _mm512_setzero_si512(), code;
        __m512 count, t, base;
        __mmask16 small, large;
        for (d = 1; d < FO_Q8_DECADES; d++)
            decade = _mm512_mask_add_epi32(decade, _mm512_cmp_ps_mask(a, _mm512_set1_ps(q->bound[d]), _CMP_GE_OQ),
                                           decade, _mm512_set1_epi32(1));
        count = _mm512_mul_ps(_mm512_set1_ps((float)q->count[0]),
                              _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(decade, _mm512_set1_epi32(127)), 23)));
        t = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(a, _mm512_permutexvar_ps(decade, first_table)),
                                        _mm512_permutexvar_ps(decade, inverse_table)),
                          _mm512_set1_ps(0.5f));
        t = _mm512_min_ps(t, _mm512_sub_ps(count, _mm512_set1_ps(1.0f)));    /* NaN -> the last value */
        t = _mm512_max_ps(t, _mm512_setzero_ps());
        base = q->is_signed ? _mm512_add_ps(_mm512_set1_ps(127.0f), count) : _mm512_sub_ps(count, _mm512_set1_ps(1.0f));
        code = _mm512_add_epi32(_mm512_cvttps_epi32(base), _mm512_cvttps_epi32(t));
        small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(q->bound[0]), _CMP_LT_OQ);
        large = _mm512_cmp_ps_mask(a, _mm512_set1_ps(q->bound[FO_Q8_DECADES]), _CMP_GE_OQ);
        code = _mm512_mask_mov_epi32(code, large, _mm512_set1_epi32(255));
        if (q->is_signed) {
            code = _mm512_mask_mov_epi32(code, small, _mm512_set1_epi32(q->zero));
            code = _mm512_mask_mov_epi32(code, _mm512_cmp_ps_mask(value, _mm512_setzero_ps(), _CMP_LT_OQ),
                                         _mm512_max_epi32(_mm512_sub_epi32(_mm512_set1_epi32(254), code),
                                                          _mm512_setzero_si512()));
        } else {   /* a positive value never becomes 0 (see storage/q8.h) */
            const __mmask16 positive = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
            code = _mm512_mask_mov_epi32(code, small, _mm512_set1_epi32(q->zero));
            code = _mm512_mask_mov_epi32(code, small & positive, _mm512_set1_epi32(1));
        }
        _mm_storeu_si128((__m128i *)(codes + j), _mm512_cvtepi32_epi8(code));
    }
    for (; j < n; j++) codes[j] = (uint8_t)fo_q8_encode(x[j] * inverse, q);
}
#define FO_Q8_LOAD_BLOCK fo_q8_load_block_avx512
#define FO_Q8_STORE_BLOCK fo_q8_store_block_avx512
#else
#define FO_Q8_STORE_BLOCK fo_q8_store_block
#define FO_Q8_LOAD_BLOCK fo_q8_load_block
#endif

/* One out-of-line copy of each block coder per map and ISA, called once per block
 * of FO_Q8_BLOCK elements: inlined into every loop variant of every 8-bit row,
 * they made those rows most of the build time, for no measurable speed. */
#define FO_Q8_BLOCK_CODERS(map)                                                                \
    FO_NOINLINE void fo_q8_load_##map(const uint8_t *FO_RESTRICT codes, int64_t n, float absmax, \
                                      float *FO_RESTRICT out)                                  \
    {                                                                                          \
        FO_Q8_LOAD_BLOCK(codes, n, absmax, out, &fo_q8_##map);                                 \
    }                                                                                          \
    FO_NOINLINE void fo_q8_store_##map(const float *FO_RESTRICT x, int64_t n,                  \
                                       uint8_t *FO_RESTRICT codes, float *FO_RESTRICT absmax)   \
    {                                                                                          \
        FO_Q8_STORE_BLOCK(x, n, codes, absmax, &fo_q8_##map);                                  \
    }
FO_Q8_BLOCK_CODERS(signed)
FO_Q8_BLOCK_CODERS(unsigned)
#undef FO_Q8_BLOCK_CODERS

#include "fusedopt_instances.h"   /* one block per kernels.def row, written by setup.py */

#define FO_ISA_CAT_(a, b) a##b
#define FO_ISA_CAT(a, b) FO_ISA_CAT_(a, b)
#define FO_ISA_STRING_(x) #x
#define FO_ISA_STRING(x) FO_ISA_STRING_(x)

/* acc[j] += x*x and probe[j] += x*0 over lanes j = k mod FO_STAT_LANES, in double.
 * probe stays +-0 while every x is finite and becomes NaN at the first NaN or Inf,
 * so finiteness costs no branch.  Lane order is fixed: the result depends only on
 * the data, not on the ISA or on how blocks are shared among threads. */
#define FO_STATS_LOOP(s)                                                                       \
    static void FO_ISA_CAT(fo_stats_##s##_, FO_ISA)(const void *data, int64_t n,             \
                                                      double *FO_RESTRICT acc,                 \
                                                      double *FO_RESTRICT probe)               \
    {                                                                                          \
        const FO_STORAGE_##s##_TYPE *x = (const FO_STORAGE_##s##_TYPE *)data;                  \
        int64_t k = 0;                                                                         \
        int j;                                                                                 \
        for (; k + FO_STAT_LANES <= n; k += FO_STAT_LANES) {                                   \
            for (j = 0; j < FO_STAT_LANES; j++) {                                              \
                const double value = (double)FO_STORAGE_##s##_LOAD(x, k + j);                  \
                acc[j] += value * value;                                                       \
                probe[j] += value * 0.0;                                                       \
            }                                                                                  \
        }                                                                                      \
        for (j = 0; k + j < n; j++) {                                                          \
            const double value = (double)FO_STORAGE_##s##_LOAD(x, k + j);                      \
            acc[j] += value * value;                                                           \
            probe[j] += value * 0.0;                                                           \
        }                                                                                      \
    }
FO_STATS_STORAGES(FO_STATS_LOOP)
#undef FO_STATS_LOOP

/* the reduce pass of a row, or NULL where the algorithm has none (FO_N_REDUCED_<alg> 0) */
#define FO_REDUCE_ENTRY_0(alg, ps, gs, ss) NULL
#define FO_REDUCE_ENTRY_N(alg, ps, gs, ss) FO_ISA_CAT(fo_reduce_##alg##_##ps##_##gs##_##ss##_, FO_ISA)
#define FO_REDUCE_ENTRY_1 FO_REDUCE_ENTRY_N
#define FO_REDUCE_ENTRY_2 FO_REDUCE_ENTRY_N
#define FO_REDUCE_ENTRY_3 FO_REDUCE_ENTRY_N
#define FO_REDUCE_ENTRY_4 FO_REDUCE_ENTRY_N
#define FO_REDUCE_ENTRY(n) FO_ISA_CAT(FO_REDUCE_ENTRY_, n)

#define KERNEL(alg, ps, gs, ss) \
    [FO_KERNEL_##alg##_##ps##_##gs##_##ss] = FO_ISA_CAT(fo_range_##alg##_##ps##_##gs##_##ss##_, FO_ISA),
#define FO_REDUCE_ROW(alg, ps, gs, ss) \
    [FO_KERNEL_##alg##_##ps##_##gs##_##ss] = FO_REDUCE_ENTRY(FO_N_REDUCED_##alg)(alg, ps, gs, ss),
#define FO_FACTOR_ROW(alg, ps, gs, ss) \
    [FO_KERNEL_##alg##_##ps##_##gs##_##ss] = FO_ISA_CAT(fo_factor_##alg##_##ps##_##gs##_##ss##_, FO_ISA),
#define FO_STATS_ENTRY(s) [FO_STORAGE_ID_##s] = FO_ISA_CAT(fo_stats_##s##_, FO_ISA),
const fo_isa_kernels FO_ISA_CAT(fo_kernels_, FO_ISA) = {
    FO_ISA_STRING(FO_ISA),
    {
#include "../kernels.def"
    },
#undef KERNEL
#define KERNEL FO_REDUCE_ROW
    {
#include "../kernels.def"
    },
#undef KERNEL
#define KERNEL FO_FACTOR_ROW
    {
#include "../kernels.def"
    },
    {FO_STATS_STORAGES(FO_STATS_ENTRY)},
};
#undef KERNEL
#undef FO_REDUCE_ROW
#undef FO_FACTOR_ROW
#undef FO_STATS_ENTRY
