/*
 * runtime/internal.h: what the ISA files, the algorithm headers and the runtime share.
 *
 * Each ISA file (isa/baseline.c, isa/avx2.c, isa/avx512.c) compiles every
 * kernels.def row under its own target and exports one table of range functions,
 * named by kernel id.  runtime/dispatch.c picks a table at import;
 * runtime/driver.c splits the work across threads.
 */
#ifndef FUSEDOPT_INTERNAL_H
#define FUSEDOPT_INTERNAL_H

#include <stddef.h>
#include "../fusedopt.h"

/* x86-64 with GCC or Clang: compile AVX2 and AVX-512 variants and pick one at run time. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(FUSEDOPT_NO_DISPATCH)
#define FO_X86_DISPATCH 1
#endif

#if defined(_MSC_VER)
#define FO_ALWAYS_INLINE static __forceinline
#define FO_NOINLINE static __declspec(noinline)
#define FO_RESTRICT __restrict
#else
#define FO_ALWAYS_INLINE static inline __attribute__((always_inline))
#define FO_NOINLINE static __attribute__((noinline))
#define FO_RESTRICT restrict
#endif

#if defined(_OPENMP) || defined(FO_HAVE_OPENMP_SIMD)
#define FO_PRAGMA_SIMD _Pragma("omp simd")
#else
#define FO_PRAGMA_SIMD
#endif
#if defined(_OPENMP) || defined(FO_HAVE_OPENMP_SIMD)
#define FO_PRAGMA_SIMD_MAX(var) _Pragma(FO_PRAGMA_STRING(omp simd reduction(max : var)))
#else
#define FO_PRAGMA_SIMD_MAX(var)
#endif
#define FO_PRAGMA_STRING(x) #x

#include "../storage/all.h"

/* Update elements [begin, end) of tensor i; hyper points to the kernel's blocks. */
typedef void (*fo_range_fn)(const fo_tensor_list *tensors, int64_t i, int64_t begin, int64_t end,
                            const void *hyper);

/* Accumulate the kernel's per-tensor reduction values over elements [begin, end)
 * of tensor i into acc[value][FO_STAT_LANES] (element k into lane (k - begin) mod
 * FO_STAT_LANES; begin is a multiple of the lane count). */
typedef void (*fo_reduce_fn)(const fo_tensor_list *tensors, int64_t i, int64_t begin, int64_t end,
                             const void *hyper, double *acc);

/* Factored tensors (fusedopt.h: rows, cols) are stepped in units: a unit is
 * n_matrices whole matrices of one tensor from `matrix` on, or rows [row_begin,
 * row_end) of one matrix (a split matrix).  Units depend on the shapes only. */
typedef struct {
    int64_t tensor, matrix, n_matrices, row_begin, row_end;
} fo_factor_unit;

/* The driver's scratch for a factored step: each matrix's row sums (row_sum +
 * row_at[i], matrix after matrix), column sums (col_sum + col_at[i]), one value per
 * matrix (matrix_value + matrix_at[i]). */
typedef struct {
    double *row_sum, *col_sum, *matrix_value;
    const int64_t *row_at, *col_at, *matrix_at;
} fo_factor_work;

/* The phases of a factored algorithm, in order, each over every unit (STATE: over
 * each unit's matrices, whole, and each split matrix once):
 *   SUMS   row sums of the unit's rows into work; its column sums (over the unit's
 *          rows) into col_out[(matrix - unit->matrix) * C + j]; *unit_out, a partial
 *          of reduced value 0 (the driver adds the tensor's partials, in unit order)
 *   STATE  the matrix's state from its complete row and column sums; matrix_value
 *   NORM   *unit_out, a partial of reduced value 1
 *   APPLY  the update of the unit's elements, with the tensor's reduced values */
typedef enum { FO_FACTOR_SUMS, FO_FACTOR_STATE, FO_FACTOR_NORM, FO_FACTOR_APPLY } fo_factor_phase;
typedef void (*fo_factor_fn)(fo_factor_phase phase, const fo_tensor_list *tensors, const fo_factor_unit *unit,
                             const void *hyper, const fo_factor_work *work, double *col_out, double *unit_out);

/* Storages whose gradients the statistics pass reads (an index of fo_stats). */
#define FO_STATS_STORAGES(X) X(f32) X(f64) X(bf16) X(f16)
#define FO_STORAGE_ENUM(s) FO_STORAGE_ID_##s,
enum { FO_STATS_STORAGES(FO_STORAGE_ENUM) FO_N_STATS_STORAGES };
#undef FO_STORAGE_ENUM

/* Bytes per element of each of those storages (runtime/driver.c). */
extern const size_t fo_storage_itemsize[FO_N_STATS_STORAGES];

/* Accumulate squares and the finiteness probe of n elements into lanes. */
#define FO_STAT_LANES 8
typedef void (*fo_stats_fn)(const void *data, int64_t n, double *acc, double *probe);

typedef struct {
    const char *name;
    fo_range_fn range[FO_N_KERNELS];
    fo_reduce_fn reduce[FO_N_KERNELS];    /* NULL for element-wise algorithms */
    fo_factor_fn factor[FO_N_KERNELS];    /* a no-op for algorithms without factored slots */
    fo_stats_fn stats[FO_N_STATS_STORAGES];
} fo_isa_kernels;

extern const fo_isa_kernels fo_kernels_baseline;
#if defined(FO_X86_DISPATCH)
extern const fo_isa_kernels fo_kernels_avx2;
extern const fo_isa_kernels fo_kernels_avx512;
#endif

/* runtime/dispatch.c */
const fo_isa_kernels *fo_active_kernels(void);

/* runtime/kernels.c: the ISA-independent description of each kernel. */
typedef struct {
    const char *name, *algorithm, *param_storage, *grad_storage, *state_storage;
    const char *inputs, *counters, *slots, *slot_shapes;
    int n_fields, n_slots, n_reduced;
    int64_t hyper_doubles, block;
    void (*prepare)(double *hyper);
    unsigned (*slots_needed)(const double *hyper);
} fo_kernel_meta;
extern const fo_kernel_meta fo_kernel_table[FO_N_KERNELS];

/* runtime/driver.c: the threads worth waking for `total` elements (never fewer
 * than half the parallel cutoff each). */
int fo_team_size(int64_t total, int n_threads);

/* runtime/threads.c */
int fo_effective_threads(int requested);

#endif
