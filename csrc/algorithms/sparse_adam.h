/*
 * algorithms/sparse_adam.h: lazy Adam for row-sparse gradients, as
 * torch.optim.SparseAdam computes it on the rows a gradient holds (fo_step_rows
 * runs it on those rows only: the others keep their moments and parameters).
 *
 *   g = s*g (negated if maximize)
 *   dm = (g - m)*(1-b1);  dv = (g*g - v)*(1-b2);  m = m + dm;  v = v + dv
 *   p = p + (-step_size) * (m / (sqrt(v) + eps)),   step_size = lr*sqrt(bc2)/bc1
 *
 * The step count advances at every step, with or without rows, so the bias
 * corrections follow the global step.
 */
#ifndef FUSEDOPT_ALGORITHM_SPARSE_ADAM_TYPES
#define FUSEDOPT_ALGORITHM_SPARSE_ADAM_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_sparse_adam(X) X(lr) X(beta1) X(beta2) X(eps) X(maximize)
#define FO_COUNTERS_sparse_adam(X) X(step)
#define FO_DERIVED_sparse_adam(X) X(step_size)
#define FO_SLOTS_sparse_adam(X) X(exp_avg) X(exp_avg_sq)
#define FO_N_REDUCED_sparse_adam 0
enum { FO_SPARSE_ADAM_EXP_AVG, FO_SPARSE_ADAM_EXP_AVG_SQ };

FO_ALGORITHM_TYPES(sparse_adam);

static unsigned fo_sparse_adam_slots_needed(const fo_sparse_adam_hyper *h)
{
    (void)h;
    return (1u << FO_SPARSE_ADAM_EXP_AVG) | (1u << FO_SPARSE_ADAM_EXP_AVG_SQ);
}

/* t = step + 1; step_size = lr * sqrt(1 - b2^t) / (1 - b1^t), in torch's order */
static void fo_sparse_adam_prepare(fo_sparse_adam_hyper *h)
{
    const double t = h->step + 1.0;
    h->step = t;
    h->step_size = h->lr * sqrt(1.0 - pow(h->beta2, t)) / (1.0 - pow(h->beta1, t));
}

FO_ALGORITHM_WRAPPERS(sparse_adam);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(m), FO_SLOT_ARG(v), int64_t first, int64_t n,
    const fo_sparse_adam_hyper *h, uint32_t key, const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C one_minus_beta1 = (FO_C)(1.0 - h->beta1), one_minus_beta2 = (FO_C)(1.0 - h->beta2);
    const FO_C minus_step_size = (FO_C)(-h->step_size);
    const FO_C eps = (FO_C)h->eps;
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(m, FO_SPARSE_ADAM_EXP_AVG, signed, 1, c0);
        FO_SLOT_OPEN(v, FO_SPARSE_ADAM_EXP_AVG_SQ, unsigned, 1, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            const FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            const FO_C param = FO_LOAD_P(p, k);
            const FO_C exp_avg = FO_LOAD_S(m, k) + (grad - FO_LOAD_S(m, k)) * one_minus_beta1;
            const FO_C exp_avg_sq = FO_LOAD_S(v, k) + (grad * grad - FO_LOAD_S(v, k)) * one_minus_beta2;
            FO_ELEMENT_RANDOM(r, first + k);
            FO_STORE_S(m, k, exp_avg);
            FO_STORE_S(v, k, exp_avg_sq);
            FO_STORE_P(p, k, param + minus_step_size * (exp_avg / (FO_SQRT(exp_avg_sq) + eps)));
        }
        FO_SLOT_CLOSE(m, signed, 1, c0, len);
        FO_SLOT_CLOSE(v, unsigned, 1, c0, len);
    }
}

#define FO_SPARSE_ADAM_OPTIONS(master, sr) \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(m), FO_SLOT_PASS(v), begin, end - begin, h, key, master, sr)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_sparse_adam_hyper *h = (const fo_sparse_adam_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(m, FO_SPARSE_ADAM_EXP_AVG);
    FO_SLOT_GET(v, FO_SPARSE_ADAM_EXP_AVG_SQ);
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_SPARSE_ADAM_OPTIONS);
}
#undef FO_SPARSE_ADAM_OPTIONS
#endif
