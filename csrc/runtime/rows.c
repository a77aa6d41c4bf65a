/*
 * runtime/rows.c: row-sparse gradients (an embedding table's step touches only
 * the rows a batch looked up).
 *
 * fo_merge_rows sorts a gradient's row numbers (a stable radix sort on private
 * copies) and sums duplicate rows, in an order fixed by their bits.  fo_step_rows
 * then hands each touched row to the kernel's own range function as a tensor of
 * its own, so every algorithm, storage and SIMD path of the dense step serves the
 * row-sparse one: no pass over untouched rows, no allocation proportional to the
 * table.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------- */
/* Sorting the row numbers                                                    */
/* ------------------------------------------------------------------------- */

#define RADIX_BITS 11
#define RADIX_SIZE (1 << RADIX_BITS)

/* Sort positions 0..n-1 by row[position], stably (equal rows keep position order):
 * least significant digit first, as many 11-bit digits as the largest row needs.
 * order and scratch hold n positions each; counts RADIX_SIZE entries. */
static void sort_by_row(const int64_t *row, int64_t n, int64_t largest, int64_t *order, int64_t *scratch,
                        int64_t *counts)
{
    int64_t *from = order, *to = scratch, *swap, k;
    int shift;
    for (k = 0; k < n; k++) order[k] = k;
    for (shift = 0; shift < 63 && (largest >> shift) != 0; shift += RADIX_BITS) {
        int64_t total = 0;
        memset(counts, 0, RADIX_SIZE * sizeof(int64_t));
        for (k = 0; k < n; k++) counts[(row[from[k]] >> shift) & (RADIX_SIZE - 1)]++;
        for (k = 0; k < RADIX_SIZE; k++) {
            const int64_t c = counts[k];
            counts[k] = total;
            total += c;
        }
        for (k = 0; k < n; k++) to[counts[(row[from[k]] >> shift) & (RADIX_SIZE - 1)]++] = from[k];
        swap = from;
        from = to;
        to = swap;
    }
    if (from != order) memcpy(order, from, (size_t)n * sizeof(int64_t));
}

/* The duplicates of one row are added in the order of their bits (element after
 * element, each compared as an unsigned integer of the storage's width), so that
 * the sum does not depend on the order they arrived in. */
typedef struct {
    const unsigned char *values;
    size_t row_bytes, itemsize;
} row_bits;

static int compare_row_bits(const row_bits *b, int64_t x, int64_t y)
{
    const unsigned char *a = b->values + (size_t)x * b->row_bytes, *c = b->values + (size_t)y * b->row_bytes;
    size_t k;
    for (k = 0; k < b->row_bytes; k += b->itemsize) {
        uint64_t u = 0, v = 0;
        memcpy(&u, a + k, b->itemsize);   /* little- or big-endian: a fixed order either way */
        memcpy(&v, c + k, b->itemsize);
        if (u != v) return u < v ? -1 : 1;
    }
    return x < y ? -1 : (x > y ? 1 : 0);  /* identical rows: either order gives the same sum */
}

/* Merge sort of positions[0..n) by their rows' bits (scratch: n entries). */
static void sort_by_bits(const row_bits *b, int64_t *positions, int64_t *scratch, int64_t n)
{
    int64_t half, i, j, k;
    if (n < 2) return;
    if (n <= 8) {   /* insertion sort */
        for (i = 1; i < n; i++) {
            const int64_t x = positions[i];
            for (j = i; j > 0 && compare_row_bits(b, positions[j - 1], x) > 0; j--) positions[j] = positions[j - 1];
            positions[j] = x;
        }
        return;
    }
    half = n / 2;
    sort_by_bits(b, positions, scratch, half);
    sort_by_bits(b, positions + half, scratch, n - half);
    for (i = 0, j = half, k = 0; i < half && j < n; k++)
        scratch[k] = compare_row_bits(b, positions[j], positions[i]) < 0 ? positions[j++] : positions[i++];
    while (i < half) scratch[k++] = positions[i++];
    while (j < n) scratch[k++] = positions[j++];
    memcpy(positions, scratch, (size_t)n * sizeof(int64_t));
}

/* ------------------------------------------------------------------------- */
/* Summing duplicates                                                         */
/* ------------------------------------------------------------------------- */

/* out = the sum of the rows at order[0..count), in that order. */
#define FO_DEFINE_ROW_SUM(s, ACC, LOAD, STORE)                                                   \
    static void row_sum_##s(const void *values, const int64_t *order, int64_t count, int64_t width, \
                            void *out)                                                         \
    {                                                                                          \
        const FO_STORAGE_##s##_TYPE *v = (const FO_STORAGE_##s##_TYPE *)values;                \
        FO_STORAGE_##s##_TYPE *o = (FO_STORAGE_##s##_TYPE *)out;                               \
        int64_t j, k;                                                                          \
        if (count == 1) {                                                                      \
            memcpy(o, v + order[0] * width, (size_t)width * sizeof(*o));                       \
            return;                                                                            \
        }                                                                                      \
        for (k = 0; k < width; k++) {                                                          \
            ACC sum = LOAD(v + order[0] * width, k);                                           \
            for (j = 1; j < count; j++) sum = sum + LOAD(v + order[j] * width, k);             \
            STORE(o, k, sum);                                                                  \
        }                                                                                      \
    }
FO_DEFINE_ROW_SUM(f32, float, FO_STORAGE_f32_LOAD, FO_STORAGE_f32_STORE)
FO_DEFINE_ROW_SUM(f64, double, FO_STORAGE_f64_LOAD, FO_STORAGE_f64_STORE)
FO_DEFINE_ROW_SUM(bf16, float, FO_STORAGE_bf16_LOAD, FO_STORAGE_bf16_STORE)
FO_DEFINE_ROW_SUM(f16, float, FO_STORAGE_f16_LOAD, FO_STORAGE_f16_STORE)
#undef FO_DEFINE_ROW_SUM

typedef void (*row_sum_fn)(const void *values, const int64_t *order, int64_t count, int64_t width, void *out);
#define FO_ROW_SUM_ENTRY(s) row_sum_##s,
static const row_sum_fn row_sums[FO_N_STATS_STORAGES] = {FO_STATS_STORAGES(FO_ROW_SUM_ENTRY)};
#undef FO_ROW_SUM_ENTRY
#define FO_STORAGE_SIZE(s) sizeof(FO_STORAGE_##s##_TYPE),
static const size_t row_itemsize[FO_N_STATS_STORAGES] = {FO_STATS_STORAGES(FO_STORAGE_SIZE)};
#undef FO_STORAGE_SIZE

/* Below this many gradient elements the merge stays on the calling thread. */
#define FO_MERGE_PARALLEL_MIN 65536

int64_t fo_merge_rows(int storage, const void *indices, int index_bytes, int64_t n, const void *values,
                      int64_t width, int64_t n_table_rows, int64_t *out_rows, void *out_values,
                      int64_t *bad_row, int n_threads)
{
    int64_t *row, *order, *scratch, *counts, *first, k, u, n_unique = 0, largest = 0;
    row_bits bits;
    int team;
    if (storage < 0 || storage >= FO_N_STATS_STORAGES || (index_bytes != 4 && index_bytes != 8) || n < 0
        || width < 0)
        return -1;
    if (n == 0) return 0;
    row = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    order = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    scratch = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    first = (int64_t *)malloc((size_t)(n + 1) * sizeof(int64_t));
    counts = (int64_t *)malloc(RADIX_SIZE * sizeof(int64_t));
    if (row == NULL || order == NULL || scratch == NULL || first == NULL || counts == NULL) {
        n_unique = -1;
        goto done;
    }
    /* each row number is read once, here; checked on this copy, which nothing else can change */
    for (k = 0; k < n; k++) {
        row[k] = index_bytes == 4 ? (int64_t)((const int32_t *)indices)[k] : ((const int64_t *)indices)[k];
        if (row[k] < 0 || row[k] >= n_table_rows) {
            *bad_row = row[k];
            n_unique = -2;
            goto done;
        }
        if (row[k] > largest) largest = row[k];
    }
    sort_by_row(row, n, largest, order, scratch, counts);
    /* runs of equal rows: first[u] is where distinct row u starts in order */
    for (k = 0; k < n; k++) {
        if (k == 0 || row[order[k]] != row[order[k - 1]]) {
            first[n_unique] = k;
            out_rows[n_unique++] = row[order[k]];
        }
    }
    first[n_unique] = n;
    bits.values = (const unsigned char *)values;
    bits.itemsize = row_itemsize[storage];
    bits.row_bytes = (size_t)width * bits.itemsize;
    for (u = 0; u < n_unique; u++)
        if (first[u + 1] - first[u] > 1) sort_by_bits(&bits, order + first[u], scratch, first[u + 1] - first[u]);
    team = n * width >= FO_MERGE_PARALLEL_MIN ? fo_effective_threads(n_threads) : 1;
    if (team > 1) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team)
#endif
        for (u = 0; u < n_unique; u++)
            row_sums[storage](values, order + first[u], first[u + 1] - first[u], width,
                              (char *)out_values + (size_t)u * bits.row_bytes);
    } else {
        for (u = 0; u < n_unique; u++)
            row_sums[storage](values, order + first[u], first[u + 1] - first[u], width,
                              (char *)out_values + (size_t)u * bits.row_bytes);
    }
done:
    free(row);
    free(order);
    free(scratch);
    free(first);
    free(counts);
    return n_unique;
}

/* ------------------------------------------------------------------------- */
/* The step of the touched rows                                               */
/* ------------------------------------------------------------------------- */

static size_t storage_bytes(const char *name)
{
    if (strcmp(name, "float64") == 0) return 8;
    if (strcmp(name, "float32") == 0) return 4;
    if (strcmp(name, "8bit") == 0) return 1;
    return 2;   /* bfloat16, float16 */
}

typedef struct {
    fo_range_fn fn;
    size_t param_bytes, grad_bytes, state_bytes;
    int64_t block;
} row_kernel;

/* Update row number r (the u-th listed) of tensor i as a one-tensor list. */
static void step_row(const row_kernel *k, const fo_tensor_list *t, const fo_row_grads *rows, int64_t i,
                     int64_t u, const void *hyper)
{
    const int64_t w = rows->width[i], r = rows->row[i][u], at = r * w;
    void *param = (char *)t->param[i] + (size_t)at * k->param_bytes;
    const void *grad = (const char *)t->grad[i] + (size_t)(u * w) * k->grad_bytes;
    void *slot_ptr[FO_MAX_SLOTS], **slot[FO_MAX_SLOTS];
    float *scale_ptr[FO_MAX_SLOTS], **scale[FO_MAX_SLOTS];
    float *master = t->master != NULL && t->master[i] != NULL ? t->master[i] + at : NULL;
    const int64_t size = w, offset[2] = {0, (w + k->block - 1) / k->block * k->block};
    fo_tensor_list one;
    int s;
    for (s = 0; s < FO_MAX_SLOTS; s++) {
        slot_ptr[s] = t->slot[s][i] != NULL ? (char *)t->slot[s][i] + (size_t)at * k->state_bytes : NULL;
        scale_ptr[s] = t->scale[s][i] != NULL ? t->scale[s][i] + at / FO_QUANTIZATION_BLOCK : NULL;
        slot[s] = &slot_ptr[s];
        scale[s] = &scale_ptr[s];
    }
    memset(&one, 0, sizeof(one));
    one.n_tensors = 1;
    one.param = &param;
    one.grad = &grad;
    memcpy(one.slot, slot, sizeof(slot));
    memcpy(one.scale, scale, sizeof(scale));
    one.master = &master;
    one.index = &t->index[i];
    one.size = &size;
    one.offset = offset;
    one.hyper = &t->hyper[i];
    one.first = &at;
    k->fn(&one, 0, 0, w, hyper);
}

/* Rows of this thread's share of the elements: those whose first element falls in it. */
static void step_rows_share(const row_kernel *k, const fo_tensor_list *t, const fo_row_grads *rows,
                            const int64_t *before, const void *hyper, int64_t begin, int64_t end)
{
    int64_t i;
    for (i = 0; i < t->n_tensors; i++) {
        int64_t u, w = rows->width[i];
        if (rows->row[i] == NULL || w == 0 || before[i + 1] <= begin || before[i] >= end) continue;
        /* rows u with begin <= before[i] + u*w < end */
        u = begin > before[i] ? (begin - before[i] + w - 1) / w : 0;
        for (; u < rows->n_rows[i] && before[i] + u * w < end; u++) step_row(k, t, rows, i, u, hyper);
    }
}

int fo_step_rows(int kernel, const fo_tensor_list *t, const fo_row_grads *rows, double *hyper, int64_t n_hyper,
                 int n_threads)
{
    const fo_kernel_meta *m;
    row_kernel k;
    int64_t *before, i, total;
    int team;
    (void)n_hyper;
    if (kernel < 0 || kernel >= FO_N_KERNELS) return -1;
    m = &fo_kernel_table[kernel];
    if (m->n_reduced > 0 || strstr(m->slot_shapes, "rows") != NULL) return -1;
    k.fn = fo_active_kernels()->range[kernel];
    k.param_bytes = storage_bytes(m->param_storage);
    k.grad_bytes = storage_bytes(m->grad_storage);
    k.state_bytes = storage_bytes(m->state_storage);
    k.block = m->block;
    before = (int64_t *)malloc((size_t)(t->n_tensors + 1) * sizeof(int64_t));
    if (before == NULL) return -1;
    before[0] = 0;
    for (i = 0; i < t->n_tensors; i++) {
        const int64_t w = rows->width[i];
        if (rows->row[i] != NULL && w % m->block != 0) {   /* 8-bit state: whole blocks of 256 */
            free(before);
            return -1;
        }
        before[i + 1] = before[i] + (rows->row[i] != NULL ? rows->n_rows[i] * w : 0);
    }
    total = before[t->n_tensors];
    team = fo_team_size(total, n_threads);
    if (team > 1) {
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
        {
            const int64_t me = omp_get_thread_num(), size = omp_get_num_threads();
            step_rows_share(&k, t, rows, before, hyper, total / size * me,
                            me == size - 1 ? total : total / size * (me + 1));
        }
#endif
    } else {
        step_rows_share(&k, t, rows, before, hyper, 0, total);
    }
    free(before);
    return 0;
}
