/*
 * isa/isa.h: compiles every kernels.def row and the statistics loops for one ISA
 * and exports them as the table fo_kernels_<FO_ISA>.  The including file defines
 * FO_ISA and sets the compiler's target first.  Built with -ffp-contract=off,
 * every ISA gives the same bits.
 */
#include <math.h>
#include "../runtime/internal.h"

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
    {FO_STATS_STORAGES(FO_STATS_ENTRY)},
};
#undef KERNEL
#undef FO_REDUCE_ROW
#undef FO_STATS_ENTRY
