/*
 * kernels_internal.h: what the per-ISA kernel files share with dispatch.c.
 *
 * Each ISA file (kernels_baseline.c, kernels_avx2.c, kernels_avx512.c) compiles the
 * same loops of kernels_loops.h for float32 and float64 under its own target, and
 * exports one table of range functions.  dispatch.c picks a table at import and
 * splits the work across threads.
 */
#ifndef FUSEDOPT_KERNELS_INTERNAL_H
#define FUSEDOPT_KERNELS_INTERNAL_H

#include "fusedopt.h"

/* x86-64 with GCC or Clang: compile AVX2 and AVX-512 variants and pick one at run time. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(FUSEDOPT_NO_DISPATCH)
#define FO_X86_DISPATCH 1
#endif

#if defined(_MSC_VER)
#define FO_ALWAYS_INLINE static __forceinline
#define FO_RESTRICT __restrict
#else
#define FO_ALWAYS_INLINE static inline __attribute__((always_inline))
#define FO_RESTRICT restrict
#endif

#if defined(_OPENMP) || defined(FO_HAVE_OPENMP_SIMD)
#define FO_PRAGMA_SIMD _Pragma("omp simd")
#else
#define FO_PRAGMA_SIMD
#endif

/* The momentum forms of SGD (see sgd_loop in kernels_loops.h). */
enum { FO_SGD_PLAIN, FO_SGD_TORCH_FIRST, FO_SGD_TORCH, FO_SGD_VELOCITY };

/* Update elements [begin, end) of tensor i; groups points to the algorithm's group array. */
typedef void (*fo_range_fn)(const fo_tensor_list *tensors, int64_t i, int64_t begin, int64_t end,
                            const void *groups);

/* Accumulate squares and the finiteness probe of n gradient elements into lanes. */
#define FO_STAT_LANES 8
typedef void (*fo_stats_fn)(const void *data, int64_t n, double *acc, double *probe);

typedef struct {
    const char *name;
    fo_range_fn adam_f32, adam_f64, sgd_f32, sgd_f64;
    fo_stats_fn grad_stats_f32, grad_stats_f64;
} fo_isa_kernels;

extern const fo_isa_kernels fo_kernels_baseline;
#if defined(FO_X86_DISPATCH)
extern const fo_isa_kernels fo_kernels_avx2;
extern const fo_isa_kernels fo_kernels_avx512;
#endif

#endif
