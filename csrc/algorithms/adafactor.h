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

/* -- unfactored tensors: the reduction pass and the element-wise update ------ */

static void FO_INSTANCE(fo_reduce)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                   const void *hyper, double *acc)
{
    const fo_adafactor_hyper *h = (const fo_adafactor_hyper *)hyper + t->hyper[i];
    const FO_P *p = (const FO_P *)t->param[i];
    const FO_G *g = (const FO_G *)t->grad[i];
    const FO_S *v = (const FO_S *)t->slot[FO_ADAFACTOR_VARIANCE][i];
    FO_INSTANCE(fo_constants) c;
    int64_t k;
    int j;
    if (t->rows[i] > 0) return;   /* factored: SUMS and NORM */
    FO_INSTANCE(fo_constants_of)(h, &c);
    /* element k goes to lane (k - begin) mod FO_STAT_LANES: a fixed order */
    for (k = begin; k < end; k += FO_STAT_LANES) {
        for (j = 0; j < FO_STAT_LANES && k + j < end; j++) {
            const FO_C param = FO_LOAD_P(p, k + j), grad = FO_LOAD_G(g, k + j) * c.grad_multiplier;
            const FO_C variance = FO_LERP(FO_LOAD_S(v, k + j), grad * grad, c.w, c.one_minus_w, c.w_small);
            const FO_C u = FO_INSTANCE(fo_direction)(&c, grad, variance);
            acc[j] += (double)param * (double)param;
            acc[FO_STAT_LANES + j] += (double)u * (double)u;
        }
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

/* row sums of g*g into row_out[r], column sums into col_out[j] (added), p*p into
 * *p_out, over rows [r0, r1) of one matrix */
FO_ALWAYS_INLINE void FO_INSTANCE(fo_matrix_sums)(const FO_P *p, const FO_G *g, int64_t r0, int64_t r1,
                                                  int64_t cols, FO_C grad_multiplier, double *row_out,
                                                  double *col_out, double *p_out)
{
    double param_lanes[FO_STAT_LANES] = {0};
    int64_t r, j;
    int l;
    for (r = r0; r < r1; r++) {
        const FO_P *prow = p + r * cols;
        const FO_G *grow = g + r * cols;
        double lanes[FO_STAT_LANES] = {0};
        for (j = 0; j + FO_STAT_LANES <= cols; j += FO_STAT_LANES)
            for (l = 0; l < FO_STAT_LANES; l++) {
                const double grad = (double)(FO_LOAD_G(grow, j + l) * grad_multiplier);
                const double param = (double)FO_LOAD_P(prow, j + l);
                lanes[l] += grad * grad;
                col_out[j + l] += grad * grad;
                param_lanes[l] += param * param;
            }
        for (l = 0; j + l < cols; l++) {
            const double grad = (double)(FO_LOAD_G(grow, j + l) * grad_multiplier);
            const double param = (double)FO_LOAD_P(prow, j + l);
            lanes[l] += grad * grad;
            col_out[j + l] += grad * grad;
            param_lanes[l] += param * param;
        }
        row_out[r - r0] = fo_lane_sum(lanes);
    }
    *p_out += fo_lane_sum(param_lanes);
}

/* u of element j of a row: v = (row * col_j) / row_mean */
#define FO_ADAFACTOR_U(grad, j) \
    FO_INSTANCE(fo_direction)(&c, (grad), (row_value * (FO_C)FO_LOAD_S(col, j)) / row_mean)

static void FO_INSTANCE(fo_factor)(fo_factor_phase phase, const fo_tensor_list *t, const fo_factor_unit *unit,
                                   const void *hyper, const fo_factor_work *work, double *col_out,
                                   double *unit_out)
{
    const int64_t i = unit->tensor, rows = t->rows[i], cols = t->cols[i];
    const fo_adafactor_hyper *h = (const fo_adafactor_hyper *)hyper + t->hyper[i];
    FO_S *row_var = (FO_S *)t->slot[FO_ADAFACTOR_ROW_VAR][i];
    FO_S *col_var = (FO_S *)t->slot[FO_ADAFACTOR_COL_VAR][i];
    FO_INSTANCE(fo_constants) c;
    FO_C step_size = 0;
    double total = 0.0;
    int64_t b, r, j;
    FO_INSTANCE(fo_constants_of)(h, &c);
    if (phase == FO_FACTOR_APPLY) step_size = FO_INSTANCE(fo_step_size)(t, i, h);
    if (phase == FO_FACTOR_SUMS)
        for (b = 0; b < unit->n_matrices * cols; b++) col_out[b] = 0.0;
    for (b = unit->matrix; b < unit->matrix + unit->n_matrices; b++) {
        const int64_t first = b * rows * cols;
        FO_P *p = (FO_P *)t->param[i] + first;
        const FO_G *g = (const FO_G *)t->grad[i] + first;
        FO_S *row = row_var + b * rows;
        FO_S *col = col_var + b * cols;
        double *row_sum = work->row_sum + work->row_at[i] + b * rows;
        double *col_sum = work->col_sum + work->col_at[i] + b * cols;
        double *row_mean_out = work->matrix_value + work->matrix_at[i] + b;
        if (phase == FO_FACTOR_SUMS) {
            FO_INSTANCE(fo_matrix_sums)(p, g, unit->row_begin, unit->row_end, cols, c.grad_multiplier,
                                        row_sum + unit->row_begin, col_out + (b - unit->matrix) * cols, &total);
        } else if (phase == FO_FACTOR_STATE) {
            /* torch: row.lerp_(sum_j g*g / C, w); col.lerp_(sum_i g*g / R, w);
             * row_mean = max(mean_i row, eps1), in the compute type */
            double mean = 0.0;
            for (r = 0; r < rows; r++) {
                const FO_C value = FO_LERP((FO_C)FO_LOAD_S(row, r), (FO_C)(row_sum[r] / (double)cols), c.w,
                                           c.one_minus_w, c.w_small);
                FO_STORE_S(row, r, value);
                mean += (double)value;
            }
            for (j = 0; j < cols; j++)
                FO_STORE_S(col, j, FO_LERP((FO_C)FO_LOAD_S(col, j), (FO_C)(col_sum[j] / (double)rows), c.w,
                                           c.one_minus_w, c.w_small));
            *row_mean_out = (double)FO_MAX_NAN((FO_C)(mean / (double)rows), c.eps1);
        } else {
            const FO_C row_mean = (FO_C)*row_mean_out;
            for (r = unit->row_begin; r < unit->row_end; r++) {
                const FO_C row_value = (FO_C)FO_LOAD_S(row, r);
                FO_P *FO_RESTRICT prow = p + r * cols;
                const FO_G *FO_RESTRICT grow = g + r * cols;
                if (phase == FO_FACTOR_NORM) {
                    double lanes[FO_STAT_LANES] = {0};
                    int l;
                    for (j = 0; j + FO_STAT_LANES <= cols; j += FO_STAT_LANES)
                        for (l = 0; l < FO_STAT_LANES; l++) {
                            const FO_C u = FO_ADAFACTOR_U(FO_LOAD_G(grow, j + l) * c.grad_multiplier, j + l);
                            lanes[l] += (double)u * (double)u;
                        }
                    for (l = 0; j + l < cols; l++) {
                        const FO_C u = FO_ADAFACTOR_U(FO_LOAD_G(grow, j + l) * c.grad_multiplier, j + l);
                        lanes[l] += (double)u * (double)u;
                    }
                    total += fo_lane_sum(lanes);
                } else {
                    FO_PRAGMA_SIMD
                    for (j = 0; j < cols; j++) {
                        const FO_C u = FO_ADAFACTOR_U(FO_LOAD_G(grow, j) * c.grad_multiplier, j);
                        FO_C param = FO_LOAD_P(prow, j);
                        if (c.decayed) param = param * c.decay;
                        FO_STORE_P(prow, j, param + step_size * u);
                    }
                }
            }
        }
    }
    if (phase == FO_FACTOR_SUMS || phase == FO_FACTOR_NORM) *unit_out = total;
}
#undef FO_ADAFACTOR_U
#endif
