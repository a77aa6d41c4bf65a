/*
 * fusedopt.h: the C API of fusedopt's kernels.
 *
 * A kernel is one row of kernels.def: an algorithm (algorithms/<name>.h) over a
 * parameter storage and a state storage (storage/<type>.h).  fo_step runs a
 * kernel over a list of tensors in place, in one pass over memory, inside one
 * OpenMP parallel region for the whole list.  C does arithmetic only: the
 * binding validates every buffer and every hyperparameter before calling it, and
 * checks (fo_kernel_slots_needed) that every state buffer the kernel will touch
 * exists.
 */
#ifndef FUSEDOPT_H
#define FUSEDOPT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* Kernels: the enum is generated from kernels.def                            */
/* ------------------------------------------------------------------------- */

#define FO_KERNEL_ENUM(algorithm, param_storage, grad_storage, state_storage) \
    FO_KERNEL_##algorithm##_##param_storage##_##grad_storage##_##state_storage,
typedef enum {
#define KERNEL FO_KERNEL_ENUM
#include "kernels.def"
#undef KERNEL
    FO_N_KERNELS
} fo_kernel_id;
#undef FO_KERNEL_ENUM

/* ------------------------------------------------------------------------- */
/* Tensor lists                                                               */
/* ------------------------------------------------------------------------- */

/* At most this many state slots per algorithm (exp_avg, exp_avg_sq, ...). */
#define FO_MAX_SLOTS 4

/* Elements per absmax block of 8-bit state (src/fusedopt/_qmap.py BLOCK). */
#define FO_QUANTIZATION_BLOCK 256

/* Tensors of one kernel (param, grad and state storage) and their optimizer state.
 * Tensor i has size[i] elements and occupies [offset[i], offset[i] + size[i]) of
 * the concatenated element range; offset[i+1] - offset[i] is size[i] rounded up
 * to the kernel's block (fo_kernel_block), so that every split of the range at a
 * multiple of the block is a multiple of the block inside each tensor too.
 * slot[k][i] is state slot k of tensor i (NULL where unused); with 8-bit state
 * it holds the codes and scale[k][i] the float32 absmax of each block of 256
 * elements (scale is unused otherwise).  master[i] is the float32 master copy of
 * a 16-bit parameter (NULL: the kernel updates the 16-bit values themselves;
 * master itself may be NULL when no tensor has one).  index[i] is the tensor's
 * position in the optimizer, which keys its stochastic rounding.  hyper[i]
 * indexes the hyperparameter block of tensor i (a param group, or a group's
 * cohort of tensors with the same counters). */
typedef struct {
    int64_t n_tensors;
    void **param;
    const void **grad;
    void **slot[FO_MAX_SLOTS];
    float **scale[FO_MAX_SLOTS];
    float **master;
    const int64_t *index;
    const int64_t *size;
    const int64_t *offset;      /* n_tensors + 1 entries */
    const int32_t *hyper;
    double *reduced;            /* n_tensors x fo_kernel_n_reduced(): per-tensor reduction results */
    /* Factored kernels (a slot of shape "rows" or "cols"): tensor i is size[i] /
     * (rows[i] * cols[i]) matrices of rows[i] x cols[i] (its last two dimensions);
     * rows[i] == 0 for a tensor of fewer than two dimensions, which is not factored
     * (and for one whose last-but-one dimension is 0: it has no elements, so no
     * pass touches it).  NULL for other kernels. */
    const int64_t *rows;
    const int64_t *cols;
    /* Row-sparse steps (fo_step_rows) hand each row to the range functions as a
     * tensor of its own: first[i] is the number, in its array, of tensor i's element
     * 0, which keys its stochastic rounding with index[i].  NULL: 0 for every tensor. */
    const int64_t *first;
} fo_tensor_list;

/* What the binding needs to know about kernel k. */
const char *fo_kernel_name(int kernel);              /* "adam_f32_f32" */
const char *fo_kernel_algorithm(int kernel);         /* "adam" */
const char *fo_kernel_param_storage(int kernel);     /* "float32" */
const char *fo_kernel_grad_storage(int kernel);      /* "bfloat16" */
const char *fo_kernel_state_storage(int kernel);     /* "float32", "bfloat16", "8bit" */     /* "float32" */
/* Space-separated field names of the algorithm's hyperparameter block, in order:
 * inputs (read from the param group), then counters (read from the optimizer's
 * counters before the step, written back after it). */
const char *fo_kernel_inputs(int kernel);
const char *fo_kernel_counters(int kernel);
const char *fo_kernel_slots(int kernel);             /* space-separated slot names */
/* The shape rule of each slot, space-separated, in slot order:
 *   full    the parameter's shape;
 *   rows    (..., R, 1) of a parameter (..., R, C) of two or more dimensions;
 *   cols    (..., 1, C) of such a parameter;
 *   vector  the parameter's shape, for a parameter of fewer than two dimensions.
 * A slot whose rule does not apply to a parameter's shape does not exist for it. */
const char *fo_kernel_slot_shapes(int kernel);
int fo_kernel_n_fields(int kernel);                  /* inputs + counters */
int64_t fo_kernel_hyper_doubles(int kernel);         /* size of one block, in doubles */
int64_t fo_kernel_block(int kernel);                 /* span alignment in elements */
int fo_kernel_n_reduced(int kernel);                 /* per-tensor reduction values */
/* Bit k set: the block's options make the kernel read and write slot k. */
unsigned fo_kernel_slots_needed(int kernel, const double *hyper);
/* Advance one block's counters and compute its per-step values (what fo_step does
 * first); 1 if they are all finite, 0 if one overflowed.  The binding prepares a
 * copy of each block, checks it, and steps with fo_step_prepared. */
int fo_kernel_prepare(int kernel, double *hyper);

/* Every hyperparameter block starts with these fields, filled by the binding:
 * the gradient multiplier (loss scale and clipping), stochastic rounding (0 or 1),
 * its seed and the optimizer's step count (whole numbers below 2^53). */
#define FO_COMMON_FIELDS 4

/* One step of `kernel` over `tensors`.  hyper holds n_hyper blocks of
 * fo_kernel_hyper_doubles(kernel) doubles: the FO_COMMON_FIELDS fields, then the
 * kernel's inputs and counters
 * in fo_kernel_inputs/fo_kernel_counters order; the rest is scratch for the
 * kernel's per-step constants.  The kernel advances the counters in place.
 * An algorithm with per-tensor reduction values (fo_kernel_n_reduced > 0) first
 * reduces every tensor (LAMB's norms) into tensors->reduced, then updates, in the
 * same parallel region.  Returns 0, or -1 (nothing written) if the kernel id is
 * out of range or the reduction's scratch could not be allocated. */
int fo_step(int kernel, const fo_tensor_list *tensors, double *hyper, int64_t n_hyper,
            int n_threads);
/* fo_step over blocks already prepared (fo_kernel_prepare): the update only. */
int fo_step_prepared(int kernel, const fo_tensor_list *tensors, double *hyper, int64_t n_hyper,
                     int n_threads);

/* ------------------------------------------------------------------------- */
/* Row-sparse gradients                                                       */
/* ------------------------------------------------------------------------- */

/* Merge a row-sparse gradient: n row numbers (int32 or int64, index_bytes 4 or 8;
 * duplicates allowed, any order) and n rows of `width` elements of `storage`
 * (fo_storage_id).  Writes the distinct row numbers, ascending, to out_rows, and
 * where each one's gradient row is to grad_at (both sized for n): grad_at[u] >= 0,
 * row grad_at[u] of `values` itself (a row given once; only when copy_all is 0);
 * grad_at[u] < 0, row -1 - grad_at[u] of out_values (sized for n rows), the sum of
 * its duplicates, or with copy_all every distinct row in order (out_values then
 * holds all the merged rows, as a norm reads them).  Duplicates are added in an
 * order fixed by their bits, not by their position: the same result for any order
 * of the input rows and any thread count (float32 and float64 add in their own
 * precision; 16-bit rows in float32, rounded once).  Reads each row number once,
 * into its own buffer, and checks it there: returns the number of distinct rows;
 * -1 out of memory; -2 if a row number is outside [0, n_table_rows) (*bad_row: the
 * first such one); nothing is written to out_values then. */
int64_t fo_merge_rows(int storage, const void *indices, int index_bytes, int64_t n, const void *values,
                      int64_t width, int64_t n_table_rows, int copy_all, int64_t *out_rows, int64_t *grad_at,
                      void *out_values, int64_t *bad_row, int n_threads);

/* Which rows of each tensor a row-sparse step updates: row[i] (NULL: tensor i is
 * not stepped) holds n_rows[i] distinct row numbers of width[i] elements each;
 * their gradient rows are where grad_at[i] says (fo_merge_rows), in values[i] or in
 * tensors->grad[i]. */
typedef struct {
    const int64_t *const *row;
    const int64_t *const *grad_at;
    const void *const *values;
    const int64_t *n_rows;
    const int64_t *width;
} fo_row_grads;

/* One step of an element-wise kernel over the listed rows only, blocks prepared
 * (fo_kernel_prepare): each row is updated as a tensor of its own, rows split
 * across the threads; the same bits for any thread count.  An algorithm with an
 * input named row_sparse computes the row-sparse form of its update when the
 * binding sets it to 1.  Returns 0; -1 if the kernel has a reduction pass or
 * factored state (not element-wise), or a width is not a multiple of its block,
 * or out of memory. */
int fo_step_rows(int kernel, const fo_tensor_list *tensors, const fo_row_grads *rows, double *hyper,
                 int64_t n_hyper, int n_threads);

/* ------------------------------------------------------------------------- */
/* Gradient statistics                                                        */
/* ------------------------------------------------------------------------- */

/* Sum of squares (in double) and finiteness of one operand of every tensor of
 * the list, by a blocked reduction whose order depends only on the tensor sizes
 * (same bits for any thread count or ISA).  per_tensor_sum_sq (n_tensors values)
 * may be NULL.  Reads the operand once. */
typedef enum { FO_OPERAND_GRAD = 0, FO_OPERAND_PARAM = 1 } fo_operand;
typedef struct {
    double sum_sq;
    int non_finite;
} fo_grad_stats;

/* storage: "float32", "float64", "bfloat16" or "float16" (fo_storage_id). */
int fo_storage_id(const char *name);
int fo_stats(int storage, const fo_tensor_list *tensors, fo_operand operand, int n_threads,
              fo_grad_stats *out, double *per_tensor_sum_sq);

/* ------------------------------------------------------------------------- */
/* Runtime controls                                                           */
/* ------------------------------------------------------------------------- */

/* Below this many elements in a call, the kernels stay on the calling thread. */
int64_t fo_parallel_min_elements(void);
void fo_set_parallel_min_elements(int64_t n);

/* Threads: n <= 0 follows omp_get_max_threads() (and so OMP_NUM_THREADS and
 * threadpoolctl), capped at FO_MAX_THREADS; in a process forked from one that
 * has run a parallel region, always 1 (the OpenMP runtime cannot be used there). */
#define FO_MAX_THREADS 1024
void fo_set_num_threads(int n);
int fo_get_num_threads(void);
int fo_openmp_enabled(void);
int fo_forked_child(void);
/* Incremented in the child at each fork: locks and flags held by threads of the
 * parent (which do not exist in the child) are recognised by it. */
long fo_fork_generation(void);
void fo_runtime_init(void);

/* Run-time SIMD dispatch (x86-64: baseline, avx2, avx512). */
const char *fo_simd_path(void);
const char *fo_simd_supported(void);            /* space-separated list */
int fo_set_simd_path(const char *name);          /* 0 on success */

#ifdef __cplusplus
}
#endif
#endif
