/*
 * runtime/driver.c: the parallel driver.  fo_step derives each block's per-step
 * constants once, then splits the concatenated element range of all tensors
 * evenly across one OpenMP team, at multiples of the kernel's block.  fo_stats
 * is a deterministic blocked reduction over one operand of every tensor.
 */
#include <stdlib.h>
#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Measured on a 2-core Zen 3 with bench/run.py --threshold (float32 Adam): with
 * the team awake (steps back to back) 2 threads win from ~6.6k elements; in a
 * training loop the workers fall asleep during forward/backward and waking them
 * costs ~10-20 us, which moves the crossover to ~20-30k.  32k serves the
 * training loop; back-to-back stepping of 7k-32k tensors gives up <= 1.5x. */
static int64_t parallel_min_elements = 32768;

int64_t fo_parallel_min_elements(void) { return parallel_min_elements; }
void fo_set_parallel_min_elements(int64_t n) { parallel_min_elements = n < 0 ? 0 : n; }

/* Chunk boundaries are multiples of this many elements (a 64-byte line of float32)
 * and of the kernel's block. */
#define FO_CHUNK_ALIGN 16

/* The threads worth waking for `total` elements: never less than half the
 * cutoff each, never more than fo_effective_threads allows. */
static int team_size(int64_t total, int n_threads)
{
    int64_t useful;
    if (n_threads <= 1 || total < parallel_min_elements) return 1;
    useful = total / (parallel_min_elements / 2 > 0 ? parallel_min_elements / 2 : 1);
    if (useful < 2) useful = 2;
    if (useful < n_threads) n_threads = (int)useful;
    return fo_effective_threads(n_threads);
}

/* Index of the tensor holding element `pos` of the concatenated range:
 * the last i with offset[i] <= pos. */
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
 * tensor piece (the padding after each tensor is skipped). */
static void run_span(const fo_tensor_list *t, fo_range_fn fn, const void *hyper, int64_t begin,
                     int64_t end)
{
    int64_t i;
    if (begin >= end) return;
    for (i = tensor_at(t, begin); i < t->n_tensors && t->offset[i] < end; i++) {
        int64_t lo = begin > t->offset[i] ? begin - t->offset[i] : 0;
        int64_t hi = (end < t->offset[i + 1] ? end : t->offset[i + 1]) - t->offset[i];
        if (hi > t->size[i]) hi = t->size[i];
        if (hi > lo) fn(t, i, lo, hi, hyper);
    }
}

static void run_parallel(const fo_tensor_list *t, fo_range_fn fn, const void *hyper, int64_t block,
                         int n_threads)
{
    const int64_t total = t->offset[t->n_tensors];
    const int team = team_size(total, n_threads);
    if (total == 0) return;
#ifdef _OPENMP
    if (team > 1) {
        const int64_t align = block % FO_CHUNK_ALIGN == 0 ? block : block * FO_CHUNK_ALIGN;
#pragma omp parallel num_threads(team)
        {
            const int64_t size = omp_get_num_threads();
            const int64_t me = omp_get_thread_num();
            int64_t begin = (total / size) * me;
            int64_t end = (total / size) * (me + 1);
            begin -= begin % align;
            end -= end % align;
            if (me == size - 1) end = total;
            run_span(t, fn, hyper, begin, end);
        }
        return;
    }
#else
    (void)block;
    (void)team;
#endif
    run_span(t, fn, hyper, 0, total);
}

void fo_step(int kernel, const fo_tensor_list *t, double *hyper, int64_t n_hyper, int n_threads)
{
    const fo_kernel_meta *m;
    int64_t k;
    if (kernel < 0 || kernel >= FO_N_KERNELS) return;
    m = &fo_kernel_table[kernel];
    for (k = 0; k < n_hyper; k++) m->prepare(hyper + k * m->hyper_doubles);
    run_parallel(t, fo_active_kernels()->range[kernel], hyper, m->block, n_threads);
}

/* ------------------------------------------------------------------------- */
/* Statistics: a deterministic blocked reduction                              */
/* ------------------------------------------------------------------------- */

/* Each tensor is cut into blocks of FO_STATS_BLOCK elements from its start; each
 * block is reduced over FO_STAT_LANES fixed lanes; blocks are summed pairwise, per
 * tensor and over all.  The order depends on the sizes only. */
#define FO_STATS_BLOCK 4096

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

/* Reduce block b of the list: the tensor holding it is the last i with first_block[i] <= b. */
static void stats_block(const fo_tensor_list *t, fo_stats_fn fn, size_t itemsize, fo_operand operand,
                        const int64_t *first_block, int64_t b, double *sum, double *probe)
{
    int64_t lo = 0, hi = t->n_tensors, begin, count;
    double acc[FO_STAT_LANES] = {0}, probes[FO_STAT_LANES] = {0};
    const char *data;
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (first_block[mid] <= b) lo = mid;
        else hi = mid;
    }
    begin = (b - first_block[lo]) * FO_STATS_BLOCK;
    count = t->size[lo] - begin < FO_STATS_BLOCK ? t->size[lo] - begin : FO_STATS_BLOCK;
    data = (const char *)(operand == FO_OPERAND_GRAD ? t->grad[lo] : (const void *)t->param[lo]);
    fn(data + (size_t)begin * itemsize, count, acc, probes);
    *sum = pairwise_sum(acc, FO_STAT_LANES);
    *probe = pairwise_sum(probes, FO_STAT_LANES);
}

int fo_stats(int storage, const fo_tensor_list *t, fo_operand operand, int n_threads,
             fo_grad_stats *out, double *per_tensor_sum_sq)
{
    const int64_t n = t->n_tensors;
    const fo_stats_fn fn = storage >= 0 && storage < FO_N_STATS_STORAGES
                               ? fo_active_kernels()->stats[storage] : NULL;
    const size_t itemsize = storage == FO_STORAGE_ID_f32 ? sizeof(float) : sizeof(double);
    int64_t *first_block, n_blocks, b, i;
    double *sums, *probes, probe_sum;
    int team;
    out->sum_sq = 0.0;
    out->non_finite = 0;
    if (fn == NULL) return -1;
    first_block = (int64_t *)malloc((size_t)(n + 1) * sizeof(int64_t));
    if (first_block == NULL) return -1;
    first_block[0] = 0;
    for (i = 0; i < n; i++)
        first_block[i + 1] = first_block[i] + (t->size[i] + FO_STATS_BLOCK - 1) / FO_STATS_BLOCK;
    n_blocks = first_block[n];
    sums = (double *)malloc((size_t)(2 * n_blocks + 1) * sizeof(double));
    if (sums == NULL) {
        free(first_block);
        return -1;
    }
    probes = sums + n_blocks;
    team = team_size(t->offset[n], n_threads);
    if (team > 1) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team)
#endif
        for (b = 0; b < n_blocks; b++)
            stats_block(t, fn, itemsize, operand, first_block, b, &sums[b], &probes[b]);
    } else {
        for (b = 0; b < n_blocks; b++)
            stats_block(t, fn, itemsize, operand, first_block, b, &sums[b], &probes[b]);
    }
    if (per_tensor_sum_sq != NULL)
        for (i = 0; i < n; i++)
            per_tensor_sum_sq[i] = pairwise_sum(sums + first_block[i], first_block[i + 1] - first_block[i]);
    out->sum_sq = pairwise_sum(sums, n_blocks);
    probe_sum = pairwise_sum(probes, n_blocks);
    out->non_finite = probe_sum != probe_sum;
    free(sums);
    free(first_block);
    return 0;
}
