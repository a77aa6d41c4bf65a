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
/* 8-bit decode without gathers (slow on some CPUs) or a table in registers: a
 * code's u = |code - 127| (signed) or code + 1 (unsigned) is 2^e + j, so
 * float32(u) gives the decade by its exponent and j by clearing it; the value is
 * first + j * step, the float32 operations that made the map (src/fusedopt/_qmap.py),
 * so the same bits as fo_q8_load_block's table. */
static inline void fo_q8_load_block_avx512(const uint8_t *FO_RESTRICT codes, int64_t n, float absmax,
                                           float *FO_RESTRICT out, const fo_q8_map *q)
{
    const __m512 first = _mm512_loadu_ps(q->decode_first), step = _mm512_loadu_ps(q->decode_step);
    const __m512 scale = _mm512_set1_ps(absmax);
    const __m512i exponent_field = _mm512_set1_epi32(0x7f800000);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m512i code = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + j)));
        const __m512i u = q->is_signed ? _mm512_abs_epi32(_mm512_sub_epi32(code, _mm512_set1_epi32(127)))
                                       : _mm512_add_epi32(code, _mm512_set1_epi32(1));
        const __m512 wide = _mm512_cvtepi32_ps(u);
        const __m512i row = _mm512_srli_epi32(_mm512_castps_si512(wide), 23);   /* permutes read its low 4 bits */
        const __m512 offset = _mm512_sub_ps(wide, _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(wide),
                                                                                        exponent_field)));
        __m512 value = _mm512_add_ps(_mm512_permutexvar_ps(row, first),
                                     _mm512_mul_ps(offset, _mm512_permutexvar_ps(row, step)));
        if (q->is_signed) {   /* codes below 127 are the negated values; 127 is 0 (times absmax, as the table's) */
            value = _mm512_mask_xor_ps(value, _mm512_cmplt_epi32_mask(code, _mm512_set1_epi32(127)), value,
                                       _mm512_set1_ps(-0.0f));
            value = _mm512_maskz_mov_ps(_mm512_test_epi32_mask(u, u), value);
        }
        _mm512_storeu_ps(out + j, _mm512_mul_ps(value, scale));
    }
    for (; j < n; j++) out[j] = q->value[codes[j]] * absmax;
}

/* fo_q8_store_block with the decade found from the value's binade (one permute
 * and one compare instead of a compare chain) and its constants by one permute
 * each: the same float32 operations in the same order (no FMA), the same NaN
 * rules (max/min keep the second operand), so the same codes. */
static inline void fo_q8_store_block_avx512(const float *FO_RESTRICT x, int64_t n, uint8_t *FO_RESTRICT codes,
                                            float *FO_RESTRICT absmax_out, const fo_q8_map *q)
{
    const __m512 magnitude_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512i binade_decade_low = _mm512_loadu_si512(q->binade_decade);
    const __m512i binade_decade_high = _mm512_loadu_si512(q->binade_decade + 16);
    const __m512 next_bound_low = _mm512_loadu_ps(q->binade_next_bound);
    const __m512 next_bound_high = _mm512_loadu_ps(q->binade_next_bound + 16);
    const __m512 first = _mm512_loadu_ps(q->decade_first), inverses = _mm512_loadu_ps(q->decade_inverse);
    const __m512 last = _mm512_loadu_ps(q->decade_last);
    const __m512i base = _mm512_loadu_si512(q->decade_base);
    __m512 biggest = _mm512_setzero_ps(), biggest2 = _mm512_setzero_ps(), scale;
    float absmax, inverse, tail_max = 0.0f;
    int64_t j = 0;
    /* a > m ? a : m, lane by lane: NaN never wins, so the order (two chains) does not matter */
    for (; j + 32 <= n; j += 32) {
        biggest = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + j), magnitude_mask), biggest);
        biggest2 = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + j + 16), magnitude_mask), biggest2);
    }
    for (; j + 16 <= n; j += 16)
        biggest = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + j), magnitude_mask), biggest);
    biggest = _mm512_max_ps(biggest2, biggest);
    for (; j < n; j++) {
        const float a = fabsf(x[j]);
        tail_max = a > tail_max ? a : tail_max;
    }
    absmax = _mm512_reduce_max_ps(biggest);
    absmax = tail_max > absmax ? tail_max : absmax;
    absmax = absmax > FLT_MAX ? FLT_MAX : absmax;     /* as fo_q8_store_block */
    inverse = absmax > 0.0f ? 1.0f / absmax : 0.0f;
    *absmax_out = absmax;
    scale = _mm512_set1_ps(inverse);
    for (j = 0; j + 16 <= n; j += 16) {
        const __m512 value = _mm512_mul_ps(_mm512_loadu_ps(x + j), scale);
        const __m512 a = q->is_signed ? _mm512_and_ps(value, magnitude_mask) : value;
        /* permutex2var reads the exponent field's low 5 bits (sign bit and all) */
        const __m512i binade = _mm512_srli_epi32(_mm512_castps_si512(a), 23);
        const __mmask16 upper = _mm512_cmp_ps_mask(
            a, _mm512_permutex2var_ps(next_bound_low, binade, next_bound_high), _CMP_GE_OQ);
        const __m512i binade_decade = _mm512_permutex2var_epi32(binade_decade_low, binade, binade_decade_high);
        const __m512i decade = _mm512_mask_add_epi32(binade_decade, upper, binade_decade, _mm512_set1_epi32(1));
        __m512i code;
        __m512 t;
        __mmask16 small, large;
        t = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(a, _mm512_permutexvar_ps(decade, first)),
                                        _mm512_permutexvar_ps(decade, inverses)),
                          _mm512_set1_ps(0.5f));
        t = _mm512_min_ps(t, _mm512_permutexvar_ps(decade, last));    /* NaN -> the last value */
        t = _mm512_max_ps(t, _mm512_setzero_ps());
        code = _mm512_add_epi32(_mm512_permutexvar_epi32(decade, base), _mm512_cvttps_epi32(t));
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
#elif defined(FO_ISA_AVX2)
#include <immintrin.h>
/* AVX2: the same decoder with 8-register permutes (rows mod 8: see csrc/generate.py) */
static inline void fo_q8_load_block_avx2(const uint8_t *FO_RESTRICT codes, int64_t n, float absmax,
                                         float *FO_RESTRICT out, const fo_q8_map *q)
{
    const __m256 first = _mm256_loadu_ps(q->decode_first), step = _mm256_loadu_ps(q->decode_step);
    const __m256 scale = _mm256_set1_ps(absmax);
    const __m256i exponent_field = _mm256_set1_epi32(0x7f800000);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256i code = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j)));
        const __m256i u = q->is_signed ? _mm256_abs_epi32(_mm256_sub_epi32(code, _mm256_set1_epi32(127)))
                                       : _mm256_add_epi32(code, _mm256_set1_epi32(1));
        const __m256 wide = _mm256_cvtepi32_ps(u);
        const __m256i row = _mm256_srli_epi32(_mm256_castps_si256(wide), 23);
        const __m256 offset = _mm256_sub_ps(wide, _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(wide),
                                                                                        exponent_field)));
        __m256 value = _mm256_add_ps(_mm256_permutevar8x32_ps(first, row),
                                     _mm256_mul_ps(offset, _mm256_permutevar8x32_ps(step, row)));
        /* zero: code 127 (signed) or 0 (unsigned) */
        const __m256 zero = _mm256_castsi256_ps(_mm256_cmpeq_epi32(code, _mm256_set1_epi32(q->zero)));
        if (q->is_signed)   /* codes below 127 are the negated values */
            value = _mm256_xor_ps(value, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(127), code)),
                                                       _mm256_set1_ps(-0.0f)));
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_andnot_ps(zero, value), scale));
    }
    for (; j < n; j++) out[j] = q->value[codes[j]] * absmax;
}

/* AVX2 encoder: the compare chain of fo_q8_encode for the decade, its constants
 * by 8-register permutes; the same operations, so the same codes. */
static inline void fo_q8_store_block_avx2(const float *FO_RESTRICT x, int64_t n, uint8_t *FO_RESTRICT codes,
                                          float *FO_RESTRICT absmax_out, const fo_q8_map *q)
{
    const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 first = _mm256_loadu_ps(q->decade_first), inverses = _mm256_loadu_ps(q->decade_inverse);
    const __m256 last = _mm256_loadu_ps(q->decade_last);
    const __m256i base = _mm256_loadu_si256((const __m256i *)q->decade_base);
    __m256 biggest = _mm256_setzero_ps(), scale;
    __m128 half;
    float absmax, inverse, tail_max = 0.0f;
    int64_t j = 0;
    int d;
    for (; j + 8 <= n; j += 8)   /* a > m ? a : m, lane by lane: NaN never wins */
        biggest = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), magnitude_mask), biggest);
    for (; j < n; j++) {
        const float a = fabsf(x[j]);
        tail_max = a > tail_max ? a : tail_max;
    }
    half = _mm_max_ps(_mm256_castps256_ps128(biggest), _mm256_extractf128_ps(biggest, 1));
    half = _mm_max_ps(half, _mm_movehl_ps(half, half));
    half = _mm_max_ss(half, _mm_shuffle_ps(half, half, 1));
    absmax = _mm_cvtss_f32(half);
    absmax = tail_max > absmax ? tail_max : absmax;
    absmax = absmax > FLT_MAX ? FLT_MAX : absmax;     /* as fo_q8_store_block */
    inverse = absmax > 0.0f ? 1.0f / absmax : 0.0f;
    *absmax_out = absmax;
    scale = _mm256_set1_ps(inverse);
    for (j = 0; j + 8 <= n; j += 8) {
        const __m256 value = _mm256_mul_ps(_mm256_loadu_ps(x + j), scale);
        const __m256 a = q->is_signed ? _mm256_and_ps(value, magnitude_mask) : value;
        __m256i decade = _mm256_setzero_si256(), code;
        __m256 t, small, large;
        __m128i packed;
        for (d = 1; d < FO_Q8_DECADES; d++)   /* a true compare is -1 */
            decade = _mm256_sub_epi32(decade, _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(q->bound[d]), _CMP_GE_OQ)));
        t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(a, _mm256_permutevar8x32_ps(first, decade)),
                                        _mm256_permutevar8x32_ps(inverses, decade)),
                          _mm256_set1_ps(0.5f));
        t = _mm256_min_ps(t, _mm256_permutevar8x32_ps(last, decade));    /* NaN -> the last value */
        t = _mm256_max_ps(t, _mm256_setzero_ps());
        code = _mm256_add_epi32(_mm256_permutevar8x32_epi32(base, decade), _mm256_cvttps_epi32(t));
        small = _mm256_cmp_ps(a, _mm256_set1_ps(q->bound[0]), _CMP_LT_OQ);
        large = _mm256_cmp_ps(a, _mm256_set1_ps(q->bound[FO_Q8_DECADES]), _CMP_GE_OQ);
        code = _mm256_blendv_epi8(code, _mm256_set1_epi32(255), _mm256_castps_si256(large));
        if (q->is_signed) {
            code = _mm256_blendv_epi8(code, _mm256_set1_epi32(q->zero), _mm256_castps_si256(small));
            code = _mm256_blendv_epi8(code, _mm256_max_epi32(_mm256_sub_epi32(_mm256_set1_epi32(254), code),
                                                             _mm256_setzero_si256()),
                                      _mm256_castps_si256(_mm256_cmp_ps(value, _mm256_setzero_ps(), _CMP_LT_OQ)));
        } else {   /* a positive value never becomes 0 (see storage/q8.h) */
            const __m256 positive = _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ);
            code = _mm256_blendv_epi8(code, _mm256_set1_epi32(q->zero), _mm256_castps_si256(small));
            code = _mm256_blendv_epi8(code, _mm256_set1_epi32(1), _mm256_castps_si256(_mm256_and_ps(small, positive)));
        }
        /* 8 codes (0..255) to bytes: pack within each 128-bit half, then join the halves */
        packed = _mm_packus_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
        _mm_storel_epi64((__m128i *)(codes + j), _mm_packus_epi16(packed, packed));
    }
    for (; j < n; j++) codes[j] = (uint8_t)fo_q8_encode(x[j] * inverse, q);
}
#define FO_Q8_LOAD_BLOCK fo_q8_load_block_avx2
#define FO_Q8_STORE_BLOCK fo_q8_store_block_avx2
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
