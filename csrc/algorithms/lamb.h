/*
 * algorithms/lamb.h: LAMB (You et al. 2020), as optax.lamb computes it: Adam's
 * direction plus decoupled weight decay, scaled per tensor by the trust ratio.
 *
 *   g = s*g;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
 *   r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p,   bck = 1 - bk^t
 *   trust = ||p|| / ||r|| per tensor (1 where either norm is 0);  p -= lr * (r * trust)
 *
 * The norms are a reduction pass over each tensor before the update (fo_reduce):
 * it computes r as the update will, without storing anything.
 */
#ifndef FUSEDOPT_ALGORITHM_LAMB_TYPES
#define FUSEDOPT_ALGORITHM_LAMB_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_lamb(X) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay)
#define FO_COUNTERS_lamb(X) X(step)
#define FO_DERIVED_lamb(X) X(bias_correction1) X(bias_correction2)
#define FO_SLOTS_lamb(X) X(exp_avg) X(exp_avg_sq)
#define FO_N_REDUCED_lamb 2   /* ||p||^2 and ||r||^2 of each tensor */
enum { FO_LAMB_EXP_AVG, FO_LAMB_EXP_AVG_SQ };

FO_ALGORITHM_TYPES(lamb);

static unsigned fo_lamb_slots_needed(const fo_lamb_hyper *h)
{
    (void)h;
    return (1u << FO_LAMB_EXP_AVG) | (1u << FO_LAMB_EXP_AVG_SQ);
}

static void fo_lamb_prepare(fo_lamb_hyper *h)
{
    const double t = h->step + 1.0;
    h->step = t;
    h->bias_correction1 = 1.0 - pow(h->beta1, t);
    h->bias_correction2 = 1.0 - pow(h->beta2, t);
}

FO_ALGORITHM_WRAPPERS(lamb);
#endif

#ifdef FO_INSTANTIATING
/* The per-step constants in the compute type, shared by both passes so that the
 * reduction sees exactly the r the update applies. */
typedef struct {
    FO_C grad_multiplier, beta1, one_minus_beta1, beta2, one_minus_beta2;
    FO_C bias_correction1, bias_correction2, eps, weight_decay;
} FO_INSTANCE(fo_constants);

FO_ALWAYS_INLINE void FO_INSTANCE(fo_constants_of)(const fo_lamb_hyper *h, FO_INSTANCE(fo_constants) *c)
{
    c->grad_multiplier = (FO_C)h->grad_multiplier;
    c->beta1 = (FO_C)h->beta1;
    c->one_minus_beta1 = (FO_C)(1.0 - h->beta1);
    c->beta2 = (FO_C)h->beta2;
    c->one_minus_beta2 = (FO_C)(1.0 - h->beta2);
    c->bias_correction1 = (FO_C)h->bias_correction1;
    c->bias_correction2 = (FO_C)h->bias_correction2;
    c->eps = (FO_C)h->eps;
    c->weight_decay = (FO_C)h->weight_decay;
}

/* r of one element, and the new moments */
FO_ALWAYS_INLINE FO_C FO_INSTANCE(fo_direction)(const FO_INSTANCE(fo_constants) *c, FO_C param, FO_C grad,
                                                FO_C exp_avg_old, FO_C exp_avg_sq_old, FO_C *exp_avg,
                                                FO_C *exp_avg_sq)
{
    const FO_C g = grad * c->grad_multiplier;
    const FO_C m = c->beta1 * exp_avg_old + c->one_minus_beta1 * g;
    const FO_C v = c->beta2 * exp_avg_sq_old + c->one_minus_beta2 * (g * g);
    *exp_avg = m;
    *exp_avg_sq = v;
    return (m / c->bias_correction1) / (FO_SQRT(v / c->bias_correction2) + c->eps) + c->weight_decay * param;
}

static void FO_INSTANCE(fo_reduce)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                   const void *hyper, double *acc)
{
    const fo_lamb_hyper *h = (const fo_lamb_hyper *)hyper + t->hyper[i];
    const FO_P *p = (const FO_P *)t->param[i];
    const FO_G *g = (const FO_G *)t->grad[i];
    const FO_S *m = (const FO_S *)t->slot[FO_LAMB_EXP_AVG][i];
    const FO_S *v = (const FO_S *)t->slot[FO_LAMB_EXP_AVG_SQ][i];
    FO_INSTANCE(fo_constants) c;
    int64_t k = begin;
    int j;
    FO_INSTANCE(fo_constants_of)(h, &c);
    /* element k goes to lane (k - begin) mod FO_STAT_LANES: a fixed order */
    for (; k < end; k += FO_STAT_LANES) {
        for (j = 0; j < FO_STAT_LANES && k + j < end; j++) {
            FO_C new_m, new_v;
            const FO_C param = FO_LOAD_P(p, k + j);
            const FO_C r = FO_INSTANCE(fo_direction)(&c, param, FO_LOAD_G(g, k + j), FO_LOAD_S(m, k + j),
                                                     FO_LOAD_S(v, k + j), &new_m, &new_v);
            acc[j] += (double)param * (double)param;
            acc[FO_STAT_LANES + j] += (double)r * (double)r;
        }
    }
}

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_lamb_hyper *h = (const fo_lamb_hyper *)hyper + t->hyper[i];
    FO_P *FO_RESTRICT p = (FO_P *)t->param[i] + begin;
    const FO_G *FO_RESTRICT g = (const FO_G *)t->grad[i] + begin;
    FO_S *FO_RESTRICT m = (FO_S *)t->slot[FO_LAMB_EXP_AVG][i] + begin;
    FO_S *FO_RESTRICT v = (FO_S *)t->slot[FO_LAMB_EXP_AVG_SQ][i] + begin;
    const double param_norm = sqrt(t->reduced[2 * i]), direction_norm = sqrt(t->reduced[2 * i + 1]);
    const FO_C trust = (FO_C)(param_norm == 0.0 || direction_norm == 0.0 ? 1.0 : param_norm / direction_norm);
    const FO_C lr = (FO_C)h->lr;
    const int64_t n = end - begin;
    FO_INSTANCE(fo_constants) c;
    int64_t k;
    FO_INSTANCE(fo_constants_of)(h, &c);
    FO_PRAGMA_SIMD
    for (k = 0; k < n; k++) {
        FO_C new_m, new_v;
        const FO_C param = FO_LOAD_P(p, k);
        const FO_C r = FO_INSTANCE(fo_direction)(&c, param, FO_LOAD_G(g, k), FO_LOAD_S(m, k), FO_LOAD_S(v, k),
                                                 &new_m, &new_v);
        FO_STORE_S(m, k, new_m);
        FO_STORE_S(v, k, new_v);
        FO_STORE_P(p, k, param - lr * (r * trust));
    }
}
#endif
