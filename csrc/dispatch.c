/*
 * dispatch.c: the kernels' entry points.  Picks the ISA table once, derives the
 * per-step constants once per parameter group, then splits the concatenated
 * element range of all tensors evenly across one OpenMP team.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kernels_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------- */
/* Threads                                                                    */
/* ------------------------------------------------------------------------- */

static int requested_threads = 0;   /* <= 0: follow omp_get_max_threads() */

/* Measured on a 2-core Zen 3 with bench/run.py --threshold (float32 Adam): with
 * the team awake (steps back to back) 2 threads win from ~6.6k elements; in a
 * training loop the workers fall asleep during forward/backward and waking them
 * costs ~10-20 us, which moves the crossover to ~20-30k.  32k serves the
 * training loop; back-to-back stepping of 7k-32k tensors gives up <= 1.5x. */
static int64_t parallel_min_elements = 32768;

void fo_set_num_threads(int n) { requested_threads = n; }

int fo_get_num_threads(void)
{
#ifdef _OPENMP
    return requested_threads > 0 ? requested_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

int fo_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int64_t fo_parallel_min_elements(void) { return parallel_min_elements; }
void fo_set_parallel_min_elements(int64_t n) { parallel_min_elements = n < 0 ? 0 : n; }

/* ------------------------------------------------------------------------- */
/* SIMD dispatch                                                              */
/* ------------------------------------------------------------------------- */

static int cpu_has(const char *isa)
{
#if defined(FO_X86_DISPATCH)
    __builtin_cpu_init();
    if (strcmp(isa, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#endif
    return strcmp(isa, "baseline") == 0;
}

/* Best first. */
static const fo_isa_kernels *const all_tables[] = {
#if defined(FO_X86_DISPATCH)
    &fo_kernels_avx512,
    &fo_kernels_avx2,
#endif
    &fo_kernels_baseline,
};
#define FO_N_TABLES (sizeof(all_tables) / sizeof(all_tables[0]))

static const fo_isa_kernels *active = NULL;

static const fo_isa_kernels *kernels(void)
{
    size_t k;
    if (active == NULL) {
        for (k = 0; k < FO_N_TABLES; k++) {
            if (cpu_has(all_tables[k]->name)) {
                active = all_tables[k];
                break;
            }
        }
    }
    return active;
}

const char *fo_simd_path(void) { return kernels()->name; }

const char *fo_simd_supported(void)
{
    static char names[64];
    size_t k;
    names[0] = '\0';
    for (k = 0; k < FO_N_TABLES; k++) {
        if (cpu_has(all_tables[k]->name)) {
            if (names[0] != '\0') strcat(names, " ");
            strcat(names, all_tables[k]->name);
        }
    }
    return names;
}

int fo_set_simd_path(const char *name)
{
    size_t k;
    for (k = 0; k < FO_N_TABLES; k++) {
        if (strcmp(all_tables[k]->name, name) == 0) {
            if (!cpu_has(name)) return -2;
            active = all_tables[k];
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------------- */
/* The parallel driver                                                        */
/* ------------------------------------------------------------------------- */

/* Chunk boundaries are rounded to this many elements (a 64-byte line of float32). */
#define FO_CHUNK_ALIGN 16

/* Index of the tensor holding element `pos` of the concatenated range:
 * the last i with offset[i] <= pos (empty tensors are skipped by the caller's loop). */
static int64_t tensor_at(const fo_tensor_list *t, int64_t pos)
{
    int64_t lo = 0, hi = t->n_tensors;    /* offset[lo] <= pos < offset[hi] */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (t->offset[mid] <= pos) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* Apply fn to elements [begin, end) of the concatenated range, one call per
 * tensor piece; context is passed through (the kernels' group array). */
static void run_span(const fo_tensor_list *t, fo_range_fn fn, const void *context, int64_t begin,
                     int64_t end)
{
    int64_t i;
    if (begin >= end) return;
    for (i = tensor_at(t, begin); i < t->n_tensors && t->offset[i] < end; i++) {
        int64_t lo = begin > t->offset[i] ? begin - t->offset[i] : 0;
        int64_t hi = (end < t->offset[i + 1] ? end : t->offset[i + 1]) - t->offset[i];
        if (hi > lo) fn(t, i, lo, hi, context);
    }
}

static void run_parallel(const fo_tensor_list *t, fo_range_fn fn, const void *groups, int n_threads)
{
    const int64_t total = t->offset[t->n_tensors];
    if (total == 0) return;
#ifdef _OPENMP
    if (n_threads > 1 && total >= parallel_min_elements) {
        /* never give a thread less than half the threshold */
        int64_t max_useful = total / (parallel_min_elements / 2 > 0 ? parallel_min_elements / 2 : 1);
        if (max_useful < n_threads) n_threads = max_useful < 2 ? 2 : (int)max_useful;
#pragma omp parallel num_threads(n_threads)
        {
            const int64_t team = omp_get_num_threads();
            const int64_t me = omp_get_thread_num();
            int64_t begin = (total / team) * me;
            int64_t end = (total / team) * (me + 1);
            begin -= begin % FO_CHUNK_ALIGN;
            end -= end % FO_CHUNK_ALIGN;
            if (me == team - 1) end = total;
            run_span(t, fn, groups, begin, end);
        }
        return;
    }
#else
    (void)n_threads;
#endif
    run_span(t, fn, groups, 0, total);
}

/* ------------------------------------------------------------------------- */
/* Gradient statistics: a deterministic blocked reduction                     */
/* ------------------------------------------------------------------------- */

/* At most this many blocks: the partial sums live on the stack (32 KiB), so a
 * step allocates nothing that grows with the model. */
#define FO_MAX_BLOCKS 2048
#define FO_MIN_BLOCK 4096

/* Pairwise sum of x[0..n): error O(log n * eps) and a fixed order. */
static double pairwise_sum(const double *x, int64_t n)
{
    if (n <= 8) {
        double s = 0.0;
        int64_t k;
        for (k = 0; k < n; k++) s += x[k];
        return s;
    }
    return pairwise_sum(x, n / 2) + pairwise_sum(x + n / 2, n - n / 2);
}

/* Sum of squares of elements [begin, end) of the concatenated gradients, and a
 * probe that is NaN if any of them is NaN or Inf. */
/* The lane accumulators of one block, filled piece by piece by run_span. */
typedef struct {
    fo_stats_fn fn;
    size_t itemsize;
    double acc[FO_STAT_LANES], probes[FO_STAT_LANES];
} block_accumulator;

static void accumulate_piece(const fo_tensor_list *t, int64_t i, int64_t lo, int64_t hi,
                             const void *context)
{
    /* run_span passes its context as const; this one is the caller's own, writable */
    block_accumulator *b = (block_accumulator *)context;
    b->fn((const char *)t->grad[i] + lo * b->itemsize, hi - lo, b->acc, b->probes);
}

static void block_stats(const fo_tensor_list *t, fo_stats_fn fn, size_t itemsize, int64_t begin,
                        int64_t end, double *sum_sq, double *probe)
{
    block_accumulator b = {fn, itemsize, {0}, {0}};
    run_span(t, accumulate_piece, &b, begin, end);
    *sum_sq = pairwise_sum(b.acc, FO_STAT_LANES);
    *probe = pairwise_sum(b.probes, FO_STAT_LANES);
}

static void grad_stats(const fo_tensor_list *t, fo_stats_fn fn, size_t itemsize, int n_threads,
                       fo_grad_stats *out)
{
    const int64_t total = t->offset[t->n_tensors];
    int64_t block = FO_MIN_BLOCK, n_blocks, b;
    double partial[FO_MAX_BLOCKS], probe[FO_MAX_BLOCKS], probe_sum;
    int parallel = 0;
    out->sum_sq = 0.0;
    out->non_finite = 0;
    if (total == 0) return;
    /* the block size depends on the total only, never on the thread count */
    if ((total + block - 1) / block > FO_MAX_BLOCKS) block = (total + FO_MAX_BLOCKS - 1) / FO_MAX_BLOCKS;
    block = (block + FO_CHUNK_ALIGN - 1) / FO_CHUNK_ALIGN * FO_CHUNK_ALIGN;
    n_blocks = (total + block - 1) / block;
#ifdef _OPENMP
    parallel = n_threads > 1 && total >= parallel_min_elements;
#pragma omp parallel for schedule(static) num_threads(n_threads) if (parallel)
#else
    (void)n_threads;
    (void)parallel;
#endif
    for (b = 0; b < n_blocks; b++) {
        const int64_t end = (b + 1) * block < total ? (b + 1) * block : total;
        block_stats(t, fn, itemsize, b * block, end, &partial[b], &probe[b]);
    }
    out->sum_sq = pairwise_sum(partial, n_blocks);
    probe_sum = pairwise_sum(probe, n_blocks);
    out->non_finite = probe_sum != probe_sum;
}

void fo_grad_stats_f32(const fo_tensor_list *t, int n_threads, fo_grad_stats *out)
{
    grad_stats(t, kernels()->grad_stats_f32, sizeof(float), n_threads, out);
}

void fo_grad_stats_f64(const fo_tensor_list *t, int n_threads, fo_grad_stats *out)
{
    grad_stats(t, kernels()->grad_stats_f64, sizeof(double), n_threads, out);
}

/* ------------------------------------------------------------------------- */
/* Entry points                                                               */
/* ------------------------------------------------------------------------- */

static void adam_prepare(fo_adam_group *groups, int64_t n_groups)
{
    int64_t k;
    for (k = 0; k < n_groups; k++) {
        fo_adam_group *h = &groups[k];
        const double bias_correction1 = 1.0 - pow(h->beta1, (double)h->step);
        const double bias_correction2 = 1.0 - pow(h->beta2, (double)h->step);
        h->step_size = h->lr / bias_correction1;
        h->inv_bias_correction2_sqrt = 1.0 / sqrt(bias_correction2);
    }
}

void fo_adam_f32(const fo_tensor_list *t, fo_adam_group *groups, int64_t n_groups, int n_threads)
{
    adam_prepare(groups, n_groups);
    run_parallel(t, kernels()->adam_f32, groups, n_threads);
}

void fo_adam_f64(const fo_tensor_list *t, fo_adam_group *groups, int64_t n_groups, int n_threads)
{
    adam_prepare(groups, n_groups);
    run_parallel(t, kernels()->adam_f64, groups, n_threads);
}

void fo_sgd_f32(const fo_tensor_list *t, const fo_sgd_group *groups, int n_threads)
{
    run_parallel(t, kernels()->sgd_f32, groups, n_threads);
}

void fo_sgd_f64(const fo_tensor_list *t, const fo_sgd_group *groups, int n_threads)
{
    run_parallel(t, kernels()->sgd_f64, groups, n_threads);
}
