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
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------- */
/* Sorting the rows                                                           */
/* ------------------------------------------------------------------------- */

/* The duplicates of one row are added in an order fixed by their bits, so that
 * the sum does not depend on the order they arrived in.  A radix sort orders the
 * gradient rows by row number; the duplicates of a row are then ordered by the
 * bits of their element 0 (read as an unsigned integer), those that tie on it by
 * a hash of their bits (row_hash: rows alike in their first elements, such as
 * mostly-zero rows, are not compared whole), and those that tie on both by all
 * their bits, element after element (identical rows need no order).  This order
 * adds positive values before negative ones, so the sums are compensated: see
 * row_sum. */
#define RADIX_BITS 11
#define RADIX_SIZE (1 << RADIX_BITS)

typedef struct {
    uint64_t key;     /* the row number */
    uint64_t first;   /* the bits of element 0 of the gradient row */
    uint64_t hash;    /* row_hash of the gradient row (duplicates that tie on first only) */
    int64_t position; /* the gradient row */
} sort_item;

/* Stable LSD radix sort of items[0..n) by key bits [0, bits); scratch holds n items,
 * counts RADIX_SIZE entries. */
static void radix_sort(sort_item *items, sort_item *scratch, int64_t n, int bits, int64_t *counts)
{
    sort_item *from = items, *to = scratch, *swap;
    int shift;
    int64_t k;
    for (shift = 0; shift < bits; shift += RADIX_BITS) {
        int64_t total = 0;
        memset(counts, 0, RADIX_SIZE * sizeof(int64_t));
        for (k = 0; k < n; k++) counts[(from[k].key >> shift) & (RADIX_SIZE - 1)]++;
        if (counts[(from[0].key >> shift) & (RADIX_SIZE - 1)] == n) continue;   /* one digit: no move */
        for (k = 0; k < RADIX_SIZE; k++) {
            const int64_t c = counts[k];
            counts[k] = total;
            total += c;
        }
        for (k = 0; k < n; k++) to[counts[(from[k].key >> shift) & (RADIX_SIZE - 1)]++] = from[k];
        swap = from;
        from = to;
        to = swap;
    }
    if (from != items) memcpy(items, from, (size_t)n * sizeof(sort_item));
}

/* Element k of gradient row `position`, as an unsigned integer of the storage's width. */
static inline uint64_t element_bits(const unsigned char *values, size_t itemsize, int64_t width, int64_t position,
                                    int64_t k)
{
    const unsigned char *at = values + ((size_t)position * (size_t)width + (size_t)k) * itemsize;
    switch (itemsize) {
    case 2: { uint16_t x; memcpy(&x, at, 2); return x; }
    case 4: { uint32_t x; memcpy(&x, at, 4); return x; }
    default: { uint64_t x; memcpy(&x, at, 8); return x; }
    }
}


typedef struct {
    const unsigned char *values;
    size_t itemsize;
    int64_t width;
} row_bits;

/* Rows x and y by their bits, element after element. */
static int compare_rows(const row_bits *b, int64_t x, int64_t y)
{
    int64_t k;
    for (k = 0; k < b->width; k++) {
        const uint64_t u = element_bits(b->values, b->itemsize, b->width, x, k);
        const uint64_t v = element_bits(b->values, b->itemsize, b->width, y, k);
        if (u != v) return u < v ? -1 : 1;
    }
    return 0;
}

/* Merge sort of items[0..n) by their rows' bits (scratch: n items). */
static void sort_by_bits(const row_bits *b, sort_item *items, sort_item *scratch, int64_t n)
{
    int64_t half, i, j, k;
    if (n < 2) return;
    if (n <= 8) {   /* insertion sort */
        for (i = 1; i < n; i++) {
            const sort_item x = items[i];
            for (j = i; j > 0 && compare_rows(b, items[j - 1].position, x.position) > 0; j--) items[j] = items[j - 1];
            items[j] = x;
        }
        return;
    }
    half = n / 2;
    sort_by_bits(b, items, scratch, half);
    sort_by_bits(b, items + half, scratch, n - half);
    for (i = 0, j = half, k = 0; i < half && j < n; k++)
        scratch[k] = compare_rows(b, items[j].position, items[i].position) < 0 ? items[j++] : items[i++];
    while (i < half) scratch[k++] = items[i++];
    while (j < n) scratch[k++] = items[j++];
    memcpy(items, scratch, (size_t)n * sizeof(sort_item));
}


/* FNV-1a over the row's elements, each as an unsigned integer of its width
 * (src/fusedopt/slow/sparse.py: row_hash). */
#define FO_ROW_HASH_SEED 0xcbf29ce484222325ull
#define FO_ROW_HASH_PRIME 0x100000001b3ull

static uint64_t row_hash(const row_bits *b, int64_t position)
{
    uint64_t h = FO_ROW_HASH_SEED;
    int64_t k;
    for (k = 0; k < b->width; k++) h = (h ^ element_bits(b->values, b->itemsize, b->width, position, k)) * FO_ROW_HASH_PRIME;
    return h;
}

/* Merge sort of items[0..n) by one of their keys (first or hash). */
#define FO_DEFINE_SORT_BY(field)                                                                 \
    static void sort_by_##field(sort_item *items, sort_item *scratch, int64_t n)                \
    {                                                                                           \
        int64_t half, i, j, k;                                                                  \
        if (n <= 16) { /* insertion sort */                                                     \
            for (i = 1; i < n; i++) {                                                           \
                const sort_item x = items[i];                                                   \
                for (j = i; j > 0 && items[j - 1].field > x.field; j--) items[j] = items[j - 1]; \
                items[j] = x;                                                                   \
            }                                                                                   \
            return;                                                                             \
        }                                                                                       \
        half = n / 2;                                                                           \
        sort_by_##field(items, scratch, half);                                                  \
        sort_by_##field(items + half, scratch, n - half);                                       \
        for (i = 0, j = half, k = 0; i < half && j < n; k++)                                    \
            scratch[k] = items[j].field < items[i].field ? items[j++] : items[i++];             \
        while (i < half) scratch[k++] = items[i++];                                             \
        while (j < n) scratch[k++] = items[j++];                                                \
        memcpy(items, scratch, (size_t)n * sizeof(sort_item));                                  \
    }
FO_DEFINE_SORT_BY(first)
FO_DEFINE_SORT_BY(hash)
#undef FO_DEFINE_SORT_BY

/* Order a run of duplicates with equal element 0 by their hashes, then by all their
 * bits (identical rows need no order). */
/* True if the rows of items[0..n) are bitwise identical (one pass, stopping at the
 * first difference). */
static int all_identical(const row_bits *b, const sort_item *items, int64_t n)
{
    int64_t j;
    for (j = 1; j < n; j++)
        if (compare_rows(b, items[0].position, items[j].position) != 0) return 0;
    return 1;
}

static void order_tie(const row_bits *b, sort_item *items, sort_item *scratch, int64_t n)
{
    int64_t begin, k;
    if (all_identical(b, items, n)) return;
    for (k = 0; k < n; k++) items[k].hash = row_hash(b, items[k].position);
    sort_by_hash(items, scratch, n);
    for (begin = 0; begin < n; begin = k) {   /* equal hashes: nearly always identical rows */
        for (k = begin + 1; k < n && items[k].hash == items[begin].hash; k++) {}
        if (k - begin > 1 && !all_identical(b, items + begin, k - begin))
            sort_by_bits(b, items + begin, scratch, k - begin);
    }
}

/* The canonical order of the duplicates items[0..n) of one row (see above). */
static void order_duplicates(const row_bits *b, sort_item *items, sort_item *scratch, int64_t n)
{
    int64_t begin, k;
    sort_by_first(items, scratch, n);
    for (begin = 0; begin < n; begin = k) {
        for (k = begin + 1; k < n && items[k].first == items[begin].first; k++) {}
        if (k - begin > 1) order_tie(b, items + begin, scratch, k - begin);
    }
}

/* ------------------------------------------------------------------------- */
/* Summing duplicates                                                         */
/* ------------------------------------------------------------------------- */

/* Gradient, parameter and state rows are scattered over their arrays: each row's
 * lines come from DRAM, one latency each unless asked for ahead.  Rows this far
 * ahead are prefetched (their first FO_PREFETCH_LINES lines per array; the
 * hardware prefetcher follows a longer row by itself).  Measured on the 2-core
 * VM (bench/sparse.py, 1e6 x 64, 4096 Zipf lookups): about 15% off the step. */
#define FO_PREFETCH_ROWS 8
#define FO_PREFETCH_LINES 8

static void prefetch_span(const void *at, size_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    size_t b;
    if (bytes > FO_PREFETCH_LINES * 64) bytes = FO_PREFETCH_LINES * 64;
    for (b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)at + b, 1, 0);
#else
    (void)at;
    (void)bytes;
#endif
}


/* out = the sum of the rows at items[0..count), in that order, element-wise: row
 * after row over a chunk of elements (the adds of each element in the same order),
 * in double with Neumaier's compensation, so that the order (which adds positive
 * values before negative ones) costs no precision: 1e5 copies of one row land within
 * an ulp of the exact sum.  Infinities are counted, not added, so that the result is
 * what exact arithmetic gives whatever the order: NaN if a row has NaN or both
 * infinities meet, else +-Inf if one meets; the plain sum where finite rows overflow;
 * else the sum plus its compensation (the plain sum where that is 0, keeping -0).
 * float32 and 16-bit rows are then rounded once to float32 (16-bit ones from there to
 * their type).  src/fusedopt/slow/sparse.py: _compensated_sum. */
#define FO_SUM_CHUNK 256

FO_ALWAYS_INLINE double finish_sum(double sum, double comp, int pos_inf, int neg_inf)
{
    if (sum != sum) return sum;
    if (pos_inf && neg_inf) return NAN;
    if (pos_inf) return (double)INFINITY;
    if (neg_inf) return -(double)INFINITY;
    if (!isfinite(sum) || comp == 0.0) return sum;
    return sum + comp;
}

#define FO_DEFINE_ROW_SUM(s, LOAD, STORE)                                                       \
    static void row_sum_##s(const void *values, const sort_item *items, int64_t count, int64_t width, \
                            void *out)                                                         \
    {                                                                                          \
        const FO_STORAGE_##s##_TYPE *v = (const FO_STORAGE_##s##_TYPE *)values;                \
        FO_STORAGE_##s##_TYPE *o = (FO_STORAGE_##s##_TYPE *)out;                               \
        double sum[FO_SUM_CHUNK], comp[FO_SUM_CHUNK];                                          \
        unsigned char pos_inf[FO_SUM_CHUNK], neg_inf[FO_SUM_CHUNK];                            \
        int64_t c0, j, k;                                                                      \
        if (count == 1) {                                                                      \
            memcpy(o, v + items[0].position * width, (size_t)width * sizeof(*o));              \
            return;                                                                            \
        }                                                                                      \
        for (c0 = 0; c0 < width; c0 += FO_SUM_CHUNK) {                                         \
            const int64_t len = width - c0 < FO_SUM_CHUNK ? width - c0 : FO_SUM_CHUNK;         \
            for (k = 0; k < len; k++) {                                                        \
                sum[k] = 0.0;                                                                  \
                comp[k] = 0.0;                                                                 \
                pos_inf[k] = neg_inf[k] = 0;                                                   \
            }                                                                                  \
            for (j = 0; j < count; j++) {                                                      \
                const FO_STORAGE_##s##_TYPE *row = v + items[j].position * width + c0;         \
                if (j + 2 < count)                                                             \
                    prefetch_span(v + items[j + 2].position * width + c0, (size_t)len * sizeof(*v)); \
                FO_PRAGMA_SIMD                                                                 \
                for (k = 0; k < len; k++) {                                                    \
                    const double x = (double)LOAD(row, k), a = sum[k];                          \
                    const double t = j == 0 ? x : a + x;                                       \
                    const int infinite = x - x != 0.0 && x == x;                               \
                    pos_inf[k] |= infinite && x > 0.0;                                         \
                    neg_inf[k] |= infinite && x < 0.0;                                         \
                    if (!infinite && j > 0) comp[k] += fabs(a) >= fabs(x) ? (a - t) + x : (x - t) + a; \
                    if (!infinite) sum[k] = t;                                                 \
                }                                                                              \
            }                                                                                  \
            for (k = 0; k < len; k++)                                                          \
                STORE(o + c0, k, (FO_STORAGE_##s##_COMPUTE)finish_sum(sum[k], comp[k], pos_inf[k], neg_inf[k])); \
        }                                                                                      \
    }
FO_DEFINE_ROW_SUM(f32, FO_STORAGE_f32_LOAD, FO_STORAGE_f32_STORE)
FO_DEFINE_ROW_SUM(f64, FO_STORAGE_f64_LOAD, FO_STORAGE_f64_STORE)
FO_DEFINE_ROW_SUM(bf16, FO_STORAGE_bf16_LOAD, FO_STORAGE_bf16_STORE)
FO_DEFINE_ROW_SUM(f16, FO_STORAGE_f16_LOAD, FO_STORAGE_f16_STORE)
#undef FO_DEFINE_ROW_SUM

typedef void (*row_sum_fn)(const void *values, const sort_item *items, int64_t count, int64_t width, void *out);
#define FO_ROW_SUM_ENTRY(s) row_sum_##s,
static const row_sum_fn row_sums[FO_N_STATS_STORAGES] = {FO_STATS_STORAGES(FO_ROW_SUM_ENTRY)};
#undef FO_ROW_SUM_ENTRY

/* Below this many gradient elements the merge stays on the calling thread. */
#define FO_MERGE_PARALLEL_MIN 65536

/* Order distinct row u's duplicates and write its sum where grad_at says (a row given
 * once and not copy_all: nothing to do). */
static void merge_one(int storage, const row_bits *bits, sort_item *items, sort_item *scratch, int64_t count,
                      int64_t grad_at, void *out_values)
{
    if (grad_at >= 0) return;
    if (count > 1) order_duplicates(bits, items, scratch, count);
    row_sums[storage](bits->values, items, count, bits->width,
                      (char *)out_values + (size_t)(-1 - grad_at) * (size_t)bits->width * bits->itemsize);
}

int64_t fo_merge_rows(int storage, const void *indices, int index_bytes, int64_t n, const void *values,
                      int64_t width, int64_t n_table_rows, int copy_all, int64_t *out_rows, int64_t *grad_at,
                      void *out_values, int64_t *bad_row, int n_threads)
{
    sort_item *items, *scratch;
    int64_t *counts, *first, k, u, n_unique = 0, n_sums = 0, largest = 0;
    row_bits bits;
    int team, row_bits_needed = 0;
    if (storage < 0 || storage >= FO_N_STATS_STORAGES || (index_bytes != 4 && index_bytes != 8) || n < 0
        || width < 0)
        return -1;
    if (n == 0) return 0;
    bits.values = (const unsigned char *)values;
    bits.itemsize = fo_storage_itemsize[storage];
    bits.width = width;
    items = (sort_item *)malloc((size_t)n * sizeof(sort_item));
    scratch = (sort_item *)malloc((size_t)n * sizeof(sort_item));
    first = (int64_t *)malloc((size_t)(n + 1) * sizeof(int64_t));
    counts = (int64_t *)malloc(RADIX_SIZE * sizeof(int64_t));
    if (items == NULL || scratch == NULL || first == NULL || counts == NULL) {
        n_unique = -1;
        goto done;
    }
    /* each row number is read once, here; checked on this copy, which nothing else can change */
    for (k = 0; k < n; k++) {
        const int64_t row = index_bytes == 4 ? (int64_t)((const int32_t *)indices)[k] : ((const int64_t *)indices)[k];
        if (row < 0 || row >= n_table_rows) {
            *bad_row = row;
            n_unique = -2;
            goto done;
        }
        if (row > largest) largest = row;
        items[k].key = (uint64_t)row;
        items[k].first = width > 0 ? element_bits(bits.values, bits.itemsize, width, k, 0) : 0;
        items[k].hash = 0;
        items[k].position = k;
    }
    while (row_bits_needed < 63 && (largest >> row_bits_needed) != 0) row_bits_needed++;
    radix_sort(items, scratch, n, row_bits_needed, counts);
    /* runs of equal rows: first[u] is where distinct row u starts */
    for (k = 0; k < n; k++) {
        if (k == 0 || items[k].key != items[k - 1].key) {
            first[n_unique] = k;
            out_rows[n_unique++] = (int64_t)items[k].key;
        }
    }
    first[n_unique] = n;
    for (u = 0; u < n_unique; u++)
        grad_at[u] = !copy_all && first[u + 1] - first[u] == 1 ? items[first[u]].position : -1 - n_sums++;
    /* each distinct row's duplicates are ordered in its own stretch of items and scratch */
    team = n * width >= FO_MERGE_PARALLEL_MIN ? fo_effective_threads(n_threads) : 1;
    if (team > 1) {
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 64) num_threads(team)
#endif
        for (u = 0; u < n_unique; u++)
            merge_one(storage, &bits, items + first[u], scratch + first[u], first[u + 1] - first[u], grad_at[u],
                      out_values);
    } else {
        for (u = 0; u < n_unique; u++)
            merge_one(storage, &bits, items + first[u], scratch + first[u], first[u + 1] - first[u], grad_at[u],
                      out_values);
    }
done:
    free(items);
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
    const int64_t w = rows->width[i], r = rows->row[i][u], at = r * w, g = rows->grad_at[i][u];
    void *param = (char *)t->param[i] + (size_t)at * k->param_bytes;
    const void *grad = g >= 0 ? (const char *)rows->values[i] + (size_t)(g * w) * k->grad_bytes
                              : (const char *)t->grad[i] + (size_t)((-1 - g) * w) * k->grad_bytes;
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

static void prefetch_row(const row_kernel *k, const fo_tensor_list *t, const fo_row_grads *rows, int64_t i,
                         int64_t u)
{
    const int64_t w = rows->width[i], at = rows->row[i][u] * w, g = rows->grad_at[i][u];
    int s;
    prefetch_span(g >= 0 ? (const char *)rows->values[i] + (size_t)(g * w) * k->grad_bytes
                         : (const char *)t->grad[i] + (size_t)((-1 - g) * w) * k->grad_bytes,
                  (size_t)w * k->grad_bytes);
    prefetch_span((const char *)t->param[i] + (size_t)at * k->param_bytes, (size_t)w * k->param_bytes);
    for (s = 0; s < FO_MAX_SLOTS; s++)
        if (t->slot[s][i] != NULL)
            prefetch_span((const char *)t->slot[s][i] + (size_t)at * k->state_bytes, (size_t)w * k->state_bytes);
    if (t->master != NULL && t->master[i] != NULL) prefetch_span(t->master[i] + at, (size_t)w * sizeof(float));
}

/* Rows of this thread's share of the elements: those whose first element falls in it. */
static void step_rows_share(const row_kernel *k, const fo_tensor_list *t, const fo_row_grads *rows,
                            const int64_t *before, const void *hyper, int64_t begin, int64_t end)
{
    int64_t i;
    for (i = 0; i < t->n_tensors; i++) {
        int64_t u, last, ahead, w = rows->width[i];
        if (rows->row[i] == NULL || w == 0 || before[i + 1] <= begin || before[i] >= end) continue;
        /* rows u in [first, last) with begin <= before[i] + u*w < end */
        u = begin > before[i] ? (begin - before[i] + w - 1) / w : 0;
        last = end - before[i] >= rows->n_rows[i] * w ? rows->n_rows[i] : (end - before[i] + w - 1) / w;
        for (ahead = u; ahead < last && ahead < u + FO_PREFETCH_ROWS; ahead++) prefetch_row(k, t, rows, i, ahead);
        for (; u < last; u++) {
            if (u + FO_PREFETCH_ROWS < last) prefetch_row(k, t, rows, i, u + FO_PREFETCH_ROWS);
            step_row(k, t, rows, i, u, hyper);
        }
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
