/*
 * algorithms/adafactor.h: Adafactor (Shazeer & Stern 2018), as torch.optim.Adafactor
 * computes it: the second moment factored over the last two dimensions, no first
 * moment, an update clipped by its RMS and scaled by the parameter's.
 *
 *   g = s*g (negated if maximize);  w = t^beta2_decay;  rho = min(lr, 1/sqrt(t))
 *   alpha = max(eps2, ||p|| / sqrt(n)) * rho                 (p before this step)
 *   [p = p * (1 - lr*wd)]
 *   matrix (..., R, C):  row = lerp(row, mean_j g*g, w);  col = lerp(col, mean_i g*g, w)
 *                        v = (row_i * col_j) / max(mean_i row, eps1)
 *   otherwise:           v = variance = lerp(variance, g*g, w)
 *   u = g / sqrt(max(v, eps1^2));  p += (-alpha / max(1, ||u|| / (sqrt(n) * d))) * u
 *
 * eps1 < 0 stands for None: the machine epsilon of the parameter's dtype.  The
 * norms are per tensor.  Unfactored tensors (fewer than two dimensions) take the
 * reduction pass (||p||^2 and ||u||^2, u recomputed from the old variance without
 * storing it) and the element-wise update.  Factored tensors run the driver's
 * phases over units of their matrices: SUMS (the row and column sums of g*g, and
 * ||p||^2), STATE (row and col, and each matrix's row mean), NORM (||u||^2) and
 * APPLY.  Sums are in double, in an order fixed by the shapes.
 */
#ifndef FUSEDOPT_ALGORITHM_ADAFACTOR_TYPES
#define FUSEDOPT_ALGORITHM_ADAFACTOR_TYPES
#include <float.h>
#include "../runtime/algorithm.h"

#define FO_INPUTS_adafactor(X) X(lr) X(beta2_decay) X(eps1) X(eps2) X(d) X(weight_decay) X(maximize)
#define FO_COUNTERS_adafactor(X) X(step)
#define FO_DERIVED_adafactor(X) X(one_minus_beta2) X(rho) X(decay)
#define FO_SLOTS_adafactor(X) X(row_var) X(col_var) X(variance)
#define FO_N_REDUCED_adafactor 2   /* ||p||^2 and ||u||^2 of each tensor */
enum { FO_ADAFACTOR_ROW_VAR, FO_ADAFACTOR_COL_VAR, FO_ADAFACTOR_VARIANCE };

FO_ALGORITHM_TYPES(adafactor);

static unsigned fo_adafactor_slots_needed(const fo_adafactor_hyper *h)
{
    (void)h;
    return (1u << FO_ADAFACTOR_ROW_VAR) | (1u << FO_ADAFACTOR_COL_VAR) | (1u << FO_ADAFACTOR_VARIANCE);
}

static void fo_adafactor_prepare(fo_adafactor_hyper *h)
{
    const double t = h->step + 1.0;
    const double inverse_root = 1.0 / pow(t, 0.5);
    h->step = t;
    h->one_minus_beta2 = pow(t, h->beta2_decay);
    h->rho = h->lr < inverse_root ? h->lr : inverse_root;
    h->decay = 1.0 - h->lr * h->weight_decay;
}

FO_ALGORITHM_WRAPPERS_SHAPED(adafactor, "rows cols vector");
#endif

#ifdef FO_INSTANTIATING
#define FO_FACTOR_DEFINED 1

/* Elements per chunk of the vector loops: their operands are staged in arrays of
 * this many values on the stack.  A multiple of FO_STAT_LANES, so that lanes are
 * assigned by (element - start) mod FO_STAT_LANES across chunks. */
#define FO_ADAFACTOR_CHUNK 256

/* The per-step constants in the compute type, shared by every pass. */
typedef struct {
    FO_C grad_multiplier, w, one_minus_w, eps1, eps1_squared, decay;
    int w_small, decayed;
} FO_INSTANCE(fo_constants);

FO_ALWAYS_INLINE void FO_INSTANCE(fo_constants_of)(const fo_adafactor_hyper *h, FO_INSTANCE(fo_constants) *c)
{
    const double eps1 = h->eps1 < 0.0 ? (sizeof(FO_C) == sizeof(float) ? FLT_EPSILON : DBL_EPSILON) : h->eps1;
    c->grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    c->w = (FO_C)h->one_minus_beta2;
    c->one_minus_w = (FO_C)1 - c->w;
    c->w_small = fabs((double)c->w) < 0.5;
    c->eps1 = (FO_C)eps1;
    c->eps1_squared = (FO_C)(eps1 * eps1);
    c->decay = (FO_C)h->decay;
    c->decayed = h->weight_decay != 0.0;
}

/* u = g * rsqrt(max(v, eps1^2)), max propagating NaN as torch.clamp does */
FO_ALWAYS_INLINE FO_C FO_INSTANCE(fo_direction)(const FO_INSTANCE(fo_constants) *c, FO_C grad, FO_C v)
{
    const FO_C clamped = FO_MAX_NAN(v, c->eps1_squared);
    return ((FO_C)1 / FO_SQRT(clamped)) * grad;
}

/* p's step of one tensor: -alpha / denom, from its reduced ||p||^2 and ||u||^2 */
FO_ALWAYS_INLINE FO_C FO_INSTANCE(fo_step_size)(const fo_tensor_list *t, int64_t i, const fo_adafactor_hyper *h)
{
    const double root_n = sqrt((double)t->size[i]);
    const double rms = sqrt(t->reduced[2 * i]) / root_n;
    const double alpha = (rms > h->eps2 ? rms : h->eps2) * h->rho;
    const double clip = sqrt(t->reduced[2 * i + 1]) / (root_n * h->d);
    return (FO_C)(-alpha / (clip > 1.0 ? clip : 1.0));
}

/* lanes[l] += x[k]^2 in double for k = l mod FO_STAT_LANES, k < n */
FO_ALWAYS_INLINE void FO_INSTANCE(fo_add_squares)(const FO_C *x, int64_t n, double *lanes)
{
    int64_t k = 0;
    int l;
    for (; k + FO_STAT_LANES <= n; k += FO_STAT_LANES)
        for (l = 0; l < FO_STAT_LANES; l++) lanes[l] += (double)x[k + l] * (double)x[k + l];
    for (l = 0; k + l < n; l++) lanes[l] += (double)x[k + l] * (double)x[k + l];
}

/* -- unfactored tensors: the reduction pass and the element-wise update ------ */

static void FO_INSTANCE(fo_reduce)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                   const void *hyper, double *acc)
{
    const fo_adafactor_hyper *h = (const fo_adafactor_hyper *)hyper + t->hyper[i];
    const FO_P *p = (const FO_P *)t->param[i];
    const FO_G *g = (const FO_G *)t->grad[i];
    const FO_S *v = (const FO_S *)t->slot[FO_ADAFACTOR_VARIANCE][i];
    FO_INSTANCE(fo_constants) c;
    FO_C param[FO_ADAFACTOR_CHUNK], u[FO_ADAFACTOR_CHUNK];
    int64_t c0, k;
    if (t->rows[i] > 0) return;   /* factored: SUMS and NORM */
    FO_INSTANCE(fo_constants_of)(h, &c);
    for (c0 = begin; c0 < end; c0 += FO_ADAFACTOR_CHUNK) {
        const int64_t n = end - c0 < FO_ADAFACTOR_CHUNK ? end - c0 : FO_ADAFACTOR_CHUNK;
        FO_PRAGMA_SIMD
        for (k = 0; k < n; k++) {
            const FO_C grad = FO_LOAD_G(g, c0 + k) * c.grad_multiplier;
            const FO_C variance = FO_LERP(FO_LOAD_S(v, c0 + k), grad * grad, c.w, c.one_minus_w, c.w_small);
            param[k] = FO_LOAD_P(p, c0 + k);
            u[k] = FO_INSTANCE(fo_direction)(&c, grad, variance);
        }
        FO_INSTANCE(fo_add_squares)(param, n, acc);
        FO_INSTANCE(fo_add_squares)(u, n, acc + FO_STAT_LANES);
    }
}

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_adafactor_hyper *h = (const fo_adafactor_hyper *)hyper + t->hyper[i];
    FO_P *FO_RESTRICT p = (FO_P *)t->param[i] + begin;
    const FO_G *FO_RESTRICT g = (const FO_G *)t->grad[i] + begin;
    FO_S *FO_RESTRICT v = (FO_S *)t->slot[FO_ADAFACTOR_VARIANCE][i] + begin;
    const int64_t n = end - begin;
    FO_INSTANCE(fo_constants) c;
    FO_C step_size;
    int64_t k;
    if (t->rows[i] > 0) return;   /* factored: APPLY */
    FO_INSTANCE(fo_constants_of)(h, &c);
    step_size = FO_INSTANCE(fo_step_size)(t, i, h);
    FO_PRAGMA_SIMD
    for (k = 0; k < n; k++) {
        const FO_C grad = FO_LOAD_G(g, k) * c.grad_multiplier;
        const FO_C variance = FO_LERP(FO_LOAD_S(v, k), grad * grad, c.w, c.one_minus_w, c.w_small);
        const FO_C u = FO_INSTANCE(fo_direction)(&c, grad, variance);
        FO_C param = FO_LOAD_P(p, k);
        FO_STORE_S(v, k, variance);
        if (c.decayed) param = param * c.decay;
        FO_STORE_P(p, k, param + step_size * u);
    }
}

/* -- factored tensors: the driver's phases over units of matrices ------------ */

/* Matrices of at most this many elements are small (a convolution's 3x3, 1x1 or
 * 7x7 kernels): their loops run over whole matrices with per-element row and
 * column indices, in chunks of whole matrices.  Larger ones run row by row. */
#define FO_ADAFACTOR_SMALL FO_ADAFACTOR_CHUNK

/* SUMS of rows [r0, r1) of one large matrix: row sums of g*g in lanes into
 * row_out[r - r0], column sums into col_out[j] (added, in row order), p*p into lanes */
FO_ALWAYS_INLINE void FO_INSTANCE(fo_rows_sums)(const FO_P *p, const FO_G *g, int64_t r0, int64_t r1, int64_t cols,
                                                FO_C grad_multiplier, double *row_out, double *col_out,
                                                double *param_lanes)
{
    FO_C param[FO_ADAFACTOR_CHUNK];
    double square[FO_ADAFACTOR_CHUNK];
    int64_t r, j0, k;
    for (r = r0; r < r1; r++) {
        double lanes[FO_STAT_LANES] = {0};
        for (j0 = 0; j0 < cols; j0 += FO_ADAFACTOR_CHUNK) {
            const int64_t len = cols - j0 < FO_ADAFACTOR_CHUNK ? cols - j0 : FO_ADAFACTOR_CHUNK;
            const FO_P *prow = p + r * cols + j0;
            const FO_G *grow = g + r * cols + j0;
            double *col = col_out + j0;
            int l;
            FO_PRAGMA_SIMD
            for (k = 0; k < len; k++) {
                const double grad = (double)(FO_LOAD_G(grow, k) * grad_multiplier);
                square[k] = grad * grad;
                col[k] += square[k];
                param[k] = FO_LOAD_P(prow, k);
            }
            for (k = 0; k + FO_STAT_LANES <= len; k += FO_STAT_LANES)
                for (l = 0; l < FO_STAT_LANES; l++) lanes[l] += square[k + l];
            for (l = 0; k + l < len; l++) lanes[l] += square[k + l];
            FO_INSTANCE(fo_add_squares)(param, len, param_lanes);
        }
        row_out[r - r0] = fo_lane_sum(lanes);
    }
}

/* SUMS of whole small matrices: per matrix, the squares staged in double, then row
 * sums (in column order) and column sums (in row order) */
FO_ALWAYS_INLINE void FO_INSTANCE(fo_small_sums)(const FO_P *p, const FO_G *g, int64_t n_matrices, int64_t rows,
                                                 int64_t cols, FO_C grad_multiplier, double *row_out,
                                                 double *col_out, double *param_lanes)
{
    const int64_t m = rows * cols;
    FO_C param[FO_ADAFACTOR_SMALL];
    double square[FO_ADAFACTOR_SMALL];
    int64_t b, r, j, e;
    for (b = 0; b < n_matrices; b++, p += m, g += m, row_out += rows, col_out += cols) {
        FO_PRAGMA_SIMD
        for (e = 0; e < m; e++) {
            const double grad = (double)(FO_LOAD_G(g, e) * grad_multiplier);
            square[e] = grad * grad;
            param[e] = FO_LOAD_P(p, e);
        }
        for (r = 0; r < rows; r++) {
            double sum = 0.0;
            for (j = 0; j < cols; j++) sum += square[r * cols + j];
            row_out[r] = sum;
        }
        for (r = 0; r < rows; r++)
            for (j = 0; j < cols; j++) col_out[j] += square[r * cols + j];
        FO_INSTANCE(fo_add_squares)(param, m, param_lanes);
    }
}

static void FO_INSTANCE(fo_factor)(fo_factor_phase phase, const fo_tensor_list *t, const fo_factor_unit *unit,
                                   const void *hyper, const fo_factor_work *work, double *col_out,
                                   double *unit_out)
{
    const int64_t i = unit->tensor, rows = t->rows[i], cols = t->cols[i], m = rows * cols;
    const int64_t b0 = unit->matrix, b1 = unit->matrix + unit->n_matrices;
    const fo_adafactor_hyper *h = (const fo_adafactor_hyper *)hyper + t->hyper[i];
    FO_S *row_var = (FO_S *)t->slot[FO_ADAFACTOR_ROW_VAR][i];
    FO_S *col_var = (FO_S *)t->slot[FO_ADAFACTOR_COL_VAR][i];
    double *row_sum = work->row_sum + work->row_at[i];
    const double *row_mean = work->matrix_value + work->matrix_at[i];
    const int small = m <= FO_ADAFACTOR_SMALL;
    FO_P *FO_RESTRICT p = (FO_P *)t->param[i];
    const FO_G *FO_RESTRICT g = (const FO_G *)t->grad[i];
    double lanes[FO_STAT_LANES] = {0};
    FO_INSTANCE(fo_constants) c;
    int64_t b, r, k;
    FO_INSTANCE(fo_constants_of)(h, &c);

    if (phase == FO_FACTOR_SUMS) {
        for (k = 0; k < unit->n_matrices * cols; k++) col_out[k] = 0.0;
        if (small)
            FO_INSTANCE(fo_small_sums)(p + b0 * m, g + b0 * m, unit->n_matrices, rows, cols, c.grad_multiplier,
                                       row_sum + b0 * rows, col_out, lanes);
        else
            for (b = b0; b < b1; b++)
                FO_INSTANCE(fo_rows_sums)(p + b * m, g + b * m, unit->row_begin, unit->row_end, cols,
                                          c.grad_multiplier, row_sum + b * rows + unit->row_begin,
                                          col_out + (b - b0) * cols, lanes);
        *unit_out = fo_lane_sum(lanes);
        return;
    }

    if (phase == FO_FACTOR_STATE) {
        /* torch: row.lerp_(sum_j g*g / C, w); col.lerp_(sum_i g*g / R, w);
         * row_mean = max(mean_i row, eps1); the unit's rows (and columns) are
         * contiguous, matrix after matrix */
        FO_S *row = row_var + b0 * rows;
        FO_S *col = col_var + b0 * cols;
        const double *row_in = row_sum + b0 * rows;
        const double *col_in = work->col_sum + work->col_at[i] + b0 * cols;
        const int64_t n_rows = unit->n_matrices * rows, n_cols = unit->n_matrices * cols;
        FO_PRAGMA_SIMD
        for (k = 0; k < n_rows; k++)
            FO_STORE_S(row, k, FO_LERP((FO_C)FO_LOAD_S(row, k), (FO_C)(row_in[k] / (double)cols), c.w,
                                       c.one_minus_w, c.w_small));
        FO_PRAGMA_SIMD
        for (k = 0; k < n_cols; k++)
            FO_STORE_S(col, k, FO_LERP((FO_C)FO_LOAD_S(col, k), (FO_C)(col_in[k] / (double)rows), c.w,
                                       c.one_minus_w, c.w_small));
        for (b = b0; b < b1; b++) {
            double mean = 0.0;
            for (r = 0; r < rows; r++) mean += (double)FO_LOAD_S(row_var, b * rows + r);
            work->matrix_value[work->matrix_at[i] + b] = (double)FO_MAX_NAN((FO_C)(mean / (double)rows), c.eps1);
        }
        return;
    }

    /* NORM and APPLY: v = (row * col) / row_mean;  u = g * rsqrt(max(v, eps1^2)) */
    {
        const FO_C step_size = phase == FO_FACTOR_APPLY ? FO_INSTANCE(fo_step_size)(t, i, h) : (FO_C)0;
        FO_C u[FO_ADAFACTOR_CHUNK];
        if (small) {
            /* chunks of whole matrices; element e of a chunk is element e % m of its
             * matrix e / m: its row and column by index (read as plain values: the
             * rows of this algorithm keep float32/float64 state only) */
            const int64_t per_chunk = FO_ADAFACTOR_SMALL / m, chunk = per_chunk * m;
            int32_t row_of[FO_ADAFACTOR_SMALL], col_of[FO_ADAFACTOR_SMALL], matrix_of[FO_ADAFACTOR_SMALL];
            for (k = 0; k < chunk; k++) {
                matrix_of[k] = (int32_t)(k / m);
                row_of[k] = (int32_t)(matrix_of[k] * rows + (k % m) / cols);
                col_of[k] = (int32_t)(matrix_of[k] * cols + (k % m) % cols);
            }
            for (b = b0; b < b1; b += per_chunk) {
                const int64_t len = (b1 - b < per_chunk ? b1 - b : per_chunk) * m;
                const FO_S *row = row_var + b * rows;
                const FO_S *col = col_var + b * cols;
                const double *mean = row_mean + b;
                FO_P *pc = p + b * m;
                const FO_G *gc = g + b * m;
                if (phase == FO_FACTOR_NORM) {
                    FO_PRAGMA_SIMD
                    for (k = 0; k < len; k++)
                        u[k] = FO_INSTANCE(fo_direction)(&c, FO_LOAD_G(gc, k) * c.grad_multiplier,
                                                         ((FO_C)row[row_of[k]] * (FO_C)col[col_of[k]])
                                                             / (FO_C)mean[matrix_of[k]]);
                    FO_INSTANCE(fo_add_squares)(u, len, lanes);
                } else {
                    FO_PRAGMA_SIMD
                    for (k = 0; k < len; k++) {
                        const FO_C update = FO_INSTANCE(fo_direction)(
                            &c, FO_LOAD_G(gc, k) * c.grad_multiplier,
                            ((FO_C)row[row_of[k]] * (FO_C)col[col_of[k]]) / (FO_C)mean[matrix_of[k]]);
                        FO_C param = FO_LOAD_P(pc, k);
                        if (c.decayed) param = param * c.decay;
                        FO_STORE_P(pc, k, param + step_size * update);
                    }
                }
            }
        } else {
            for (b = b0; b < b1; b++) {
                const FO_S *col = col_var + b * cols;
                const FO_C mean = (FO_C)row_mean[b];
                for (r = unit->row_begin; r < unit->row_end; r++) {
                    const FO_C row = (FO_C)FO_LOAD_S(row_var, b * rows + r);
                    FO_P *pr = p + b * m + r * cols;
                    const FO_G *gr = g + b * m + r * cols;
                    int64_t j0;
                    for (j0 = 0; j0 < cols; j0 += FO_ADAFACTOR_CHUNK) {
                        const int64_t len = cols - j0 < FO_ADAFACTOR_CHUNK ? cols - j0 : FO_ADAFACTOR_CHUNK;
                        if (phase == FO_FACTOR_NORM) {
                            FO_PRAGMA_SIMD
                            for (k = 0; k < len; k++)
                                u[k] = FO_INSTANCE(fo_direction)(&c, FO_LOAD_G(gr, j0 + k) * c.grad_multiplier,
                                                                 (row * (FO_C)col[j0 + k]) / mean);
                            FO_INSTANCE(fo_add_squares)(u, len, lanes);
                        } else {
                            FO_PRAGMA_SIMD
                            for (k = 0; k < len; k++) {
                                const FO_C update = FO_INSTANCE(fo_direction)(
                                    &c, FO_LOAD_G(gr, j0 + k) * c.grad_multiplier, (row * (FO_C)col[j0 + k]) / mean);
                                FO_C param = FO_LOAD_P(pr, j0 + k);
                                if (c.decayed) param = param * c.decay;
                                FO_STORE_P(pr, j0 + k, param + step_size * update);
                            }
                        }
                    }
                }
            }
        }
        if (phase == FO_FACTOR_NORM) *unit_out = fo_lane_sum(lanes);
    }
}
#endif
