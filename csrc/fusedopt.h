/*
 * fusedopt.h: the C kernels of fusedopt and the types they share.
 *
 * Every kernel updates a list of tensors of one dtype in place, in one pass over
 * memory, inside one OpenMP parallel region for the whole list.  The C code does
 * arithmetic only: the Cython binding validates every buffer before calling it.
 */
#ifndef FUSEDOPT_H
#define FUSEDOPT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A list of same-dtype tensors and their optimizer state, as flat buffers.
 * Tensor i has size[i] elements and occupies [offset[i], offset[i+1]) of the
 * concatenated element range; state[k][i] is the k-th state buffer of tensor i
 * (NULL where the algorithm does not use it).  group[i] selects the
 * hyperparameters of tensor i. */
#define FO_MAX_STATE 3
typedef struct {
    int64_t n_tensors;
    void **param;
    const void **grad;
    void **state[FO_MAX_STATE];
    const int64_t *size;
    const int64_t *offset;      /* n_tensors + 1 prefix sums of size */
    const int32_t *group;
} fo_tensor_list;

/* Adam / AdamW hyperparameters of one parameter group for one step.
 * The caller fills the first block; the kernel derives the rest once per call. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    double grad_multiplier;     /* gradients are multiplied by this first (1/loss scale x clip) */
    int64_t step;               /* t >= 1, after this step's increment */
    int decoupled;              /* AdamW: p *= 1 - lr*wd instead of g += wd*p */
    int amsgrad;
    int maximize;
    /* derived by the kernel, once per call */
    double step_size;           /* lr / (1 - beta1^t) */
    double inv_bias_correction2_sqrt;  /* 1 / sqrt(1 - beta2^t) */
} fo_adam_group;

/* SGD hyperparameters of one parameter group for one step. */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    double grad_multiplier;
    int nesterov;
    int maximize;
    int lr_in_velocity;         /* v = mu*v + lr*g; p -= v (instead of PyTorch's form) */
    int first_step;             /* PyTorch's form starts the buffer at g */
} fo_sgd_group;

/* State slots used by each algorithm. */
enum { FO_ADAM_EXP_AVG = 0, FO_ADAM_EXP_AVG_SQ = 1, FO_ADAM_MAX_EXP_AVG_SQ = 2 };
enum { FO_SGD_MOMENTUM_BUFFER = 0 };

void fo_adam_f32(const fo_tensor_list *tensors, fo_adam_group *groups, int64_t n_groups, int n_threads);
void fo_adam_f64(const fo_tensor_list *tensors, fo_adam_group *groups, int64_t n_groups, int n_threads);
void fo_sgd_f32(const fo_tensor_list *tensors, const fo_sgd_group *groups, int n_threads);
void fo_sgd_f64(const fo_tensor_list *tensors, const fo_sgd_group *groups, int n_threads);

/* Sum of squares of all gradients of the list, in double, by a blocked reduction
 * whose order depends only on the tensor sizes (same bits for any thread count or
 * ISA), and whether any gradient element is NaN or +-Inf.  Reads the gradients once. */
typedef struct {
    double sum_sq;
    int non_finite;
} fo_grad_stats;

void fo_grad_stats_f32(const fo_tensor_list *tensors, int n_threads, fo_grad_stats *out);
void fo_grad_stats_f64(const fo_tensor_list *tensors, int n_threads, fo_grad_stats *out);

/* Below this many elements in a call, the kernels stay on the calling thread:
 * waking the thread team costs more than the update (measured with bench/run.py). */
int64_t fo_parallel_min_elements(void);
void fo_set_parallel_min_elements(int64_t n);

/* Threads: n <= 0 means "follow omp_get_max_threads()" (and so threadpoolctl). */
void fo_set_num_threads(int n);
int fo_get_num_threads(void);
int fo_openmp_enabled(void);

/* Run-time SIMD dispatch (x86-64: baseline, avx2, avx512). */
const char *fo_simd_path(void);
const char *fo_simd_supported(void);            /* space-separated list */
int fo_set_simd_path(const char *name);          /* 0 on success */

#ifdef __cplusplus
}
#endif
#endif
