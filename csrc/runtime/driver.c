/*
 * runtime/driver.c: the parallel driver.  fo_step derives each block's per-step
 * constants once, then splits the concatenated element range of all tensors
 * evenly across one OpenMP team, at multiples of the kernel's block.  fo_stats
 * is a deterministic blocked reduction over one operand of every tensor.
 */
#include <stdlib.h>
#include <string.h>
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
int fo_team_size(int64_t total, int n_threads)
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

/* ------------------------------------------------------------------------- */
/* Blocked reductions                                                         */
/* ------------------------------------------------------------------------- */

/* A reduction cuts each tensor into blocks of FO_REDUCE_BLOCK elements from its
 * start; a block accumulates n_values sums over FO_STAT_LANES fixed lanes, which
 * are added pairwise into its partial sums; a tensor's result (and the total) is
 * the pairwise sum of its blocks' partials.  The order depends on the sizes only:
 * the same bits for any thread count and ISA. */
#define FO_REDUCE_BLOCK 4096
#define FO_MAX_REDUCED 4

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

/* Accumulate elements [begin, begin + count) of tensor i into acc[n_values][FO_STAT_LANES]. */
typedef void (*block_fn)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t count,
                         const void *context, double *acc);

typedef struct {
    const fo_tensor_list *t;
    block_fn fn;
    const void *context;
    int n_values;
    int64_t n_blocks;
    int64_t *first_block;   /* n_tensors + 1: blocks before tensor i */
    double *partial;        /* n_values x n_blocks */
} reduction;

/* first_block and partial for t; -1 if out of memory. */
static int reduction_init(reduction *r, const fo_tensor_list *t, block_fn fn, const void *context,
                          int n_values)
{
    int64_t i;
    r->t = t;
    r->fn = fn;
    r->context = context;
    r->n_values = n_values;
    r->partial = NULL;
    r->first_block = (int64_t *)malloc((size_t)(t->n_tensors + 1) * sizeof(int64_t));
    if (r->first_block == NULL) return -1;
    r->first_block[0] = 0;
    for (i = 0; i < t->n_tensors; i++)
        r->first_block[i + 1] = r->first_block[i] + (t->size[i] + FO_REDUCE_BLOCK - 1) / FO_REDUCE_BLOCK;
    r->n_blocks = r->first_block[t->n_tensors];
    r->partial = (double *)malloc((size_t)(n_values * r->n_blocks + 1) * sizeof(double));
    if (r->partial == NULL) {
        free(r->first_block);
        return -1;
    }
    return 0;
}

static void reduction_free(reduction *r)
{
    free(r->partial);
    free(r->first_block);
}

/* Reduce block b: its tensor is the last i with first_block[i] <= b. */
static void reduce_block(const reduction *r, int64_t b)
{
    const fo_tensor_list *t = r->t;
    int64_t lo = 0, hi = t->n_tensors, begin, count;
    double acc[FO_MAX_REDUCED * FO_STAT_LANES] = {0};
    int j;
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (r->first_block[mid] <= b) lo = mid;
        else hi = mid;
    }
    begin = (b - r->first_block[lo]) * FO_REDUCE_BLOCK;
    count = t->size[lo] - begin < FO_REDUCE_BLOCK ? t->size[lo] - begin : FO_REDUCE_BLOCK;
    r->fn(t, lo, begin, count, r->context, acc);
    for (j = 0; j < r->n_values; j++)
        r->partial[j * r->n_blocks + b] = pairwise_sum(acc + j * FO_STAT_LANES, FO_STAT_LANES);
}

/* out[i * n_values + j]: value j of tensor i (out may be NULL); totals[j] over all. */
static void reduction_finish(const reduction *r, double *out, double *totals)
{
    int64_t i;
    int j;
    for (j = 0; j < r->n_values; j++) {
        const double *values = r->partial + j * r->n_blocks;
        if (out != NULL)
            for (i = 0; i < r->t->n_tensors; i++)
                out[i * r->n_values + j] = pairwise_sum(values + r->first_block[i],
                                                        r->first_block[i + 1] - r->first_block[i]);
        if (totals != NULL) totals[j] = pairwise_sum(values, r->n_blocks);
    }
}

/* ------------------------------------------------------------------------- */
/* The step                                                                   */
/* ------------------------------------------------------------------------- */

/* The update of this thread's share of the concatenated range: even shares cut at
 * multiples of the chunk alignment and of the kernel's block. */
static void update_share(const fo_tensor_list *t, fo_range_fn fn, const void *hyper, int64_t block,
                         int64_t me, int64_t team)
{
    const int64_t total = t->offset[t->n_tensors];
    const int64_t align = block % FO_CHUNK_ALIGN == 0 ? block : block * FO_CHUNK_ALIGN;
    int64_t begin = (total / team) * me;
    int64_t end = (total / team) * (me + 1);
    begin -= begin % align;
    end -= end % align;
    if (me == team - 1) end = total;
    run_span(t, fn, hyper, begin, end);
}

/* The kernel's per-tensor reduction pass, as a block function. */
typedef struct {
    fo_reduce_fn fn;
    const void *hyper;
} kernel_reduce_context;

static void kernel_reduce_block(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t count,
                                const void *context, double *acc)
{
    const kernel_reduce_context *c = (const kernel_reduce_context *)context;
    c->fn(t, i, begin, begin + count, c->hyper, acc);
}

/* ------------------------------------------------------------------------- */
/* Factored tensors                                                           */
/* ------------------------------------------------------------------------- */

/* A unit of factored work holds about this many elements: whole matrices while
 * they are smaller, else FO_FACTOR_MIN_ROWS or more rows of one matrix, whose
 * column sums are then partial (a unit's C doubles, added in unit order). */
#define FO_FACTOR_UNIT 32768
#define FO_FACTOR_MIN_ROWS 32

typedef struct {
    fo_factor_fn fn;
    fo_factor_unit *units;
    int64_t n_units, n_matrices;
    int64_t *unit_first;      /* n_tensors + 1: units before tensor i */
    int64_t *split;           /* per tensor: units per matrix (1: whole matrices) */
    int64_t *at;              /* row_at, col_at, matrix_at: 3 x n_tensors */
    double *unit_value;       /* 2 x n_units: the SUMS, then the NORM partials */
    double *partial;          /* column sums of split units, C per unit */
    int64_t *partial_at;      /* per unit: offset in partial, or -1 */
    double *sums;             /* row sums, column sums, matrix values */
    fo_factor_work work;
} factored;

/* How a tensor's rows x cols matrices are cut into units: *split units per matrix
 * of *span rows each (a large matrix), or, when *split is 1, *span whole matrices
 * per unit. */
static void factor_layout(int64_t rows, int64_t cols, int64_t *split, int64_t *span)
{
    int64_t h = (FO_FACTOR_UNIT + cols - 1) / cols;
    if (h < FO_FACTOR_MIN_ROWS) h = FO_FACTOR_MIN_ROWS;
    if (h > rows) h = rows;
    *split = rows * cols > FO_FACTOR_UNIT ? (rows + h - 1) / h : 1;
    *span = *split > 1 ? h : (rows * cols > FO_FACTOR_UNIT ? 1 : FO_FACTOR_UNIT / (rows * cols));
}

static void factored_free(factored *f)
{
    free(f->unit_first);
    free(f->split);
    free(f->at);
    free(f->units);
    free(f->unit_value);
    free(f->partial_at);
    free(f->partial);
    free(f->sums);
}

/* The units of t's factored tensors; -1 if out of memory (nothing allocated). */
static int factored_init(factored *f, const fo_tensor_list *t, fo_factor_fn fn)
{
    const int64_t n = t->n_tensors;
    int64_t i, rows = 0, cols = 0, partials = 0, u = 0;
    memset(f, 0, sizeof(*f));
    f->fn = fn;
    f->unit_first = (int64_t *)calloc((size_t)(n + 1), sizeof(int64_t));
    f->split = (int64_t *)calloc((size_t)(n + 1), sizeof(int64_t));
    f->at = (int64_t *)calloc((size_t)(3 * n + 1), sizeof(int64_t));
    if (f->unit_first == NULL || f->split == NULL || f->at == NULL) goto fail;
    for (i = 0; i < n; i++) {
        const int64_t r = t->rows[i], c = t->cols[i];
        int64_t units = 0;
        f->at[i] = rows;
        f->at[n + i] = cols;
        f->at[2 * n + i] = f->n_matrices;
        if (r > 0 && c > 0 && t->size[i] > 0) {
            const int64_t matrices = t->size[i] / (r * c);
            int64_t span;
            factor_layout(r, c, &f->split[i], &span);
            if (f->split[i] > 1) {
                units = matrices * f->split[i];
                partials += units * c;
            } else {
                units = (matrices + span - 1) / span;
            }
            rows += matrices * r;
            cols += matrices * c;
            f->n_matrices += matrices;
        }
        f->unit_first[i + 1] = f->unit_first[i] + units;
    }
    f->n_units = f->unit_first[n];
    f->units = (fo_factor_unit *)malloc((size_t)(f->n_units + 1) * sizeof(fo_factor_unit));
    f->unit_value = (double *)calloc((size_t)(2 * f->n_units + 1), sizeof(double));
    f->partial_at = (int64_t *)malloc((size_t)(f->n_units + 1) * sizeof(int64_t));
    f->partial = (double *)malloc((size_t)(partials + 1) * sizeof(double));
    f->sums = (double *)malloc((size_t)(rows + cols + f->n_matrices + 1) * sizeof(double));
    if (f->units == NULL || f->unit_value == NULL || f->partial_at == NULL || f->partial == NULL
        || f->sums == NULL)
        goto fail;
    partials = 0;
    for (i = 0; i < n; i++) {
        const int64_t r = t->rows[i], c = t->cols[i];
        int64_t b, q, matrices, split, span;
        if (f->unit_first[i + 1] == f->unit_first[i]) continue;
        matrices = t->size[i] / (r * c);
        factor_layout(r, c, &split, &span);
        if (split > 1) {
            for (b = 0; b < matrices; b++)
                for (q = 0; q < split; q++, u++) {
                    fo_factor_unit *unit = &f->units[u];
                    unit->tensor = i;
                    unit->matrix = b;
                    unit->n_matrices = 1;
                    unit->row_begin = q * span;
                    unit->row_end = (q + 1) * span < r ? (q + 1) * span : r;
                    f->partial_at[u] = partials;
                    partials += c;
                }
        } else {
            for (b = 0; b < matrices; b += span, u++) {
                fo_factor_unit *unit = &f->units[u];
                unit->tensor = i;
                unit->matrix = b;
                unit->n_matrices = matrices - b < span ? matrices - b : span;
                unit->row_begin = 0;
                unit->row_end = r;
                f->partial_at[u] = -1;
            }
        }
    }
    f->work.row_sum = f->sums;
    f->work.col_sum = f->sums + rows;
    f->work.matrix_value = f->sums + rows + cols;
    f->work.row_at = f->at;
    f->work.col_at = f->at + n;
    f->work.matrix_at = f->at + 2 * n;
    return 0;
fail:
    factored_free(f);   /* the memset left every pointer not yet allocated NULL */
    return -1;
}

static void factor_sums(const factored *f, const fo_tensor_list *t, const void *hyper, int64_t u)
{
    const fo_factor_unit *unit = &f->units[u];
    const int64_t i = unit->tensor;
    double *col_out = f->partial_at[u] >= 0
                          ? f->partial + f->partial_at[u]
                          : f->work.col_sum + f->work.col_at[i] + unit->matrix * t->cols[i];
    f->fn(FO_FACTOR_SUMS, t, unit, hyper, &f->work, col_out, f->unit_value + u);
}

/* The state of unit u's matrices, from their complete column sums (a split
 * matrix: by its first unit, which adds the units' partial column sums first). */
static void factor_state(const factored *f, const fo_tensor_list *t, const void *hyper, int64_t u)
{
    const fo_factor_unit *unit = &f->units[u];
    const int64_t i = unit->tensor;
    fo_factor_unit whole = *unit;
    int64_t j, q;
    if (f->split[i] > 1) {
        const int64_t c = t->cols[i], first = u;
        double *col = f->work.col_sum + f->work.col_at[i] + unit->matrix * c;
        if (unit->row_begin != 0) return;
        for (j = 0; j < c; j++) {
            double sum = 0.0;
            for (q = 0; q < f->split[i]; q++) sum += f->partial[f->partial_at[first + q] + j];
            col[j] = sum;
        }
    }
    whole.row_begin = 0;
    whole.row_end = t->rows[i];
    f->fn(FO_FACTOR_STATE, t, &whole, hyper, &f->work, NULL, NULL);
}

/* reduced[i * n_reduced + value] of each factored tensor: its units' partials, pairwise */
static void factor_totals(const factored *f, const fo_tensor_list *t, int n_reduced, int value)
{
    int64_t i;
    for (i = 0; i < t->n_tensors; i++)
        if (f->unit_first[i + 1] > f->unit_first[i])
            t->reduced[i * n_reduced + value] = pairwise_sum(f->unit_value + value * f->n_units + f->unit_first[i],
                                                             f->unit_first[i + 1] - f->unit_first[i]);
}

static void factor_norm(const factored *f, const fo_tensor_list *t, const void *hyper, int64_t u)
{
    f->fn(FO_FACTOR_NORM, t, &f->units[u], hyper, &f->work, NULL, f->unit_value + f->n_units + u);
}

int fo_step(int kernel, const fo_tensor_list *t, double *hyper, int64_t n_hyper, int n_threads)
{
    int64_t k;
    if (kernel < 0 || kernel >= FO_N_KERNELS) return -1;
    for (k = 0; k < n_hyper; k++) fo_kernel_table[kernel].prepare(hyper + k * fo_kernel_table[kernel].hyper_doubles);
    return fo_step_prepared(kernel, t, hyper, n_hyper, n_threads);
}

int fo_step_prepared(int kernel, const fo_tensor_list *t, double *hyper, int64_t n_hyper, int n_threads)
{
    const fo_kernel_meta *m;
    const fo_isa_kernels *isa = fo_active_kernels();
    fo_range_fn update;
    reduction r;
    kernel_reduce_context context;
    factored f;
    int64_t b, total;
    int team, reduce, factor;
    if (kernel < 0 || kernel >= FO_N_KERNELS) return -1;
    m = &fo_kernel_table[kernel];
    update = isa->range[kernel];
    reduce = m->n_reduced > 0;
    factor = strstr(m->slot_shapes, "rows") != NULL;
    total = t->offset[t->n_tensors];
    if (reduce) {
        if (isa->reduce[kernel] == NULL || t->reduced == NULL || m->n_reduced > FO_MAX_REDUCED) return -1;
        context.fn = isa->reduce[kernel];
        context.hyper = hyper;
        if (reduction_init(&r, t, kernel_reduce_block, &context, m->n_reduced) != 0) return -1;
    }
    if (factor) {
        /* the reduction pass's values 0 and 1 of factored tensors come from SUMS and NORM */
        if (!reduce || m->n_reduced < 2 || t->rows == NULL || t->cols == NULL
            || factored_init(&f, t, isa->factor[kernel]) != 0) {
            if (reduce) reduction_free(&r);
            return -1;
        }
    }
    (void)n_hyper;
    team = fo_team_size(total, n_threads);
    if (total == 0) {
        team = 1;
    }
    if (team > 1) {
#ifdef _OPENMP
        /* one region: the reduction's blocks, its per-tensor sums, the factored
         * phases (each unit and matrix is one thread's, whole), then the update */
#pragma omp parallel num_threads(team) private(b)
        {
            if (reduce) {
#pragma omp for schedule(static)
                for (b = 0; b < r.n_blocks; b++) reduce_block(&r, b);
#pragma omp single
                reduction_finish(&r, t->reduced, NULL);
            }
            if (factor) {
#pragma omp for schedule(dynamic, 1)
                for (b = 0; b < f.n_units; b++) factor_sums(&f, t, hyper, b);
#pragma omp for schedule(dynamic, 1)
                for (b = 0; b < f.n_units; b++) factor_state(&f, t, hyper, b);
#pragma omp for schedule(dynamic, 1)
                for (b = 0; b < f.n_units; b++) factor_norm(&f, t, hyper, b);
#pragma omp single
                {
                    factor_totals(&f, t, m->n_reduced, 0);
                    factor_totals(&f, t, m->n_reduced, 1);
                }
#pragma omp for schedule(dynamic, 1) nowait
                for (b = 0; b < f.n_units; b++)
                    f.fn(FO_FACTOR_APPLY, t, &f.units[b], hyper, &f.work, NULL, NULL);
            }
            update_share(t, update, hyper, m->block, omp_get_thread_num(), omp_get_num_threads());
        }
#endif
    } else {
        if (reduce) {
            for (b = 0; b < r.n_blocks; b++) reduce_block(&r, b);
            reduction_finish(&r, t->reduced, NULL);
        }
        if (factor) {
            for (b = 0; b < f.n_units; b++) factor_sums(&f, t, hyper, b);
            for (b = 0; b < f.n_units; b++) factor_state(&f, t, hyper, b);
            for (b = 0; b < f.n_units; b++) factor_norm(&f, t, hyper, b);
            factor_totals(&f, t, m->n_reduced, 0);
            factor_totals(&f, t, m->n_reduced, 1);
            for (b = 0; b < f.n_units; b++) f.fn(FO_FACTOR_APPLY, t, &f.units[b], hyper, &f.work, NULL, NULL);
        }
        if (total > 0) run_span(t, update, hyper, 0, total);
    }
    if (reduce) reduction_free(&r);
    if (factor) factored_free(&f);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Statistics of one operand                                                  */
/* ------------------------------------------------------------------------- */

#define FO_STORAGE_SIZE(s) sizeof(FO_STORAGE_##s##_TYPE),
const size_t fo_storage_itemsize[FO_N_STATS_STORAGES] = {FO_STATS_STORAGES(FO_STORAGE_SIZE)};
#undef FO_STORAGE_SIZE

typedef struct {
    fo_stats_fn fn;
    size_t itemsize;
    fo_operand operand;
} stats_context;

/* sum of squares into lanes 0..7 of acc, the finiteness probe into lanes 8..15 */
static void stats_block(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t count,
                        const void *context, double *acc)
{
    const stats_context *c = (const stats_context *)context;
    const char *data = (const char *)(c->operand == FO_OPERAND_GRAD ? t->grad[i] : (const void *)t->param[i]);
    c->fn(data + (size_t)begin * c->itemsize, count, acc, acc + FO_STAT_LANES);
}

int fo_stats(int storage, const fo_tensor_list *t, fo_operand operand, int n_threads,
             fo_grad_stats *out, double *per_tensor_sum_sq)
{
    stats_context context;
    reduction r;
    double totals[2], *per_tensor = NULL;
    int64_t b, i;
    int team;
    out->sum_sq = 0.0;
    out->non_finite = 0;
    if (storage < 0 || storage >= FO_N_STATS_STORAGES) return -1;
    context.fn = fo_active_kernels()->stats[storage];
    context.itemsize = fo_storage_itemsize[storage];
    context.operand = operand;
    if (reduction_init(&r, t, stats_block, &context, 2) != 0) return -1;
    if (per_tensor_sum_sq != NULL) {
        per_tensor = (double *)malloc((size_t)(2 * t->n_tensors + 1) * sizeof(double));
        if (per_tensor == NULL) {
            reduction_free(&r);
            return -1;
        }
    }
    team = fo_team_size(t->offset[t->n_tensors], n_threads);
    if (team > 1) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team)
#endif
        for (b = 0; b < r.n_blocks; b++) reduce_block(&r, b);
    } else {
        for (b = 0; b < r.n_blocks; b++) reduce_block(&r, b);
    }
    reduction_finish(&r, per_tensor, totals);
    if (per_tensor != NULL) {
        for (i = 0; i < t->n_tensors; i++) per_tensor_sum_sq[i] = per_tensor[2 * i];
        free(per_tensor);
    }
    out->sum_sq = totals[0];
    out->non_finite = totals[1] != totals[1];
    reduction_free(&r);
    return 0;
}
