/*
 * algorithms/nadam.h: NAdam (Dozat 2016), with torch's momentum schedule
 * mu_t = b1*(1 - 0.5*0.96^(t*psi)), as torch.optim.NAdam computes it.
 *
 *   g = s*g (negated if maximize); [g += wd*p | p *= 1 - lr*wd]
 *   m = lerp(m, g, 1-b1);  v = v*b2 + ((1-b2)*g)*g;  d = sqrt(v / bc2) + eps
 *   p += (c1*g) / d;  p += (c2*m) / d   (two roundings, as torch's two addcdiv)
 *   c1 = -lr*(1 - mu_t) / (1 - prod mu),  c2 = -lr*mu_{t+1} / (1 - mu_{t+1} * prod mu)
 * mu_product (prod of mu_1..mu_t) is a per-tensor counter; 1 before the first step.
 */
#ifndef FUSEDOPT_ALGORITHM_NADAM_TYPES
#define FUSEDOPT_ALGORITHM_NADAM_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_nadam(X) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay) X(momentum_decay) X(decoupled) X(maximize)
#define FO_COUNTERS_nadam(X) X(step) X(mu_product)
#define FO_DERIVED_nadam(X) X(bias_correction2) X(grad_coefficient) X(exp_avg_coefficient)
#define FO_SLOTS_nadam(X) X(exp_avg) X(exp_avg_sq)
#define FO_N_REDUCED_nadam 0
enum { FO_NADAM_EXP_AVG, FO_NADAM_EXP_AVG_SQ };

FO_ALGORITHM_TYPES(nadam);

static unsigned fo_nadam_slots_needed(const fo_nadam_hyper *h)
{
    (void)h;
    return (1u << FO_NADAM_EXP_AVG) | (1u << FO_NADAM_EXP_AVG_SQ);
}

static void fo_nadam_prepare(fo_nadam_hyper *h)
{
    const double t = h->step + 1.0;
    const double mu = h->beta1 * (1.0 - 0.5 * pow(0.96, t * h->momentum_decay));
    const double mu_next = h->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * h->momentum_decay));
    h->step = t;
    h->mu_product = (t == 1.0 ? 1.0 : h->mu_product) * mu;
    h->bias_correction2 = 1.0 - pow(h->beta2, t);
    h->grad_coefficient = (-h->lr * (1.0 - mu)) / (1.0 - h->mu_product);
    h->exp_avg_coefficient = (-h->lr * mu_next) / (1.0 - h->mu_product * mu_next);
}

FO_ALGORITHM_WRAPPERS(nadam);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(m), FO_SLOT_ARG(v), int64_t first, int64_t n,
    const fo_nadam_hyper *h, uint32_t key, const int l2_decay, const int decoupled_decay, const int master,
    const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C param_decay = (FO_C)(1.0 - h->lr * h->weight_decay);
    const FO_C w = (FO_C)(1.0 - h->beta1), one_minus_w = (FO_C)1 - w;   /* lerp weight */
    const int w_small = fabs((double)w) < 0.5;
    const FO_C beta2 = (FO_C)h->beta2, one_minus_beta2 = (FO_C)(1.0 - h->beta2);
    const FO_C bias_correction2 = (FO_C)h->bias_correction2, eps = (FO_C)h->eps;
    const FO_C grad_coefficient = (FO_C)h->grad_coefficient;
    const FO_C exp_avg_coefficient = (FO_C)h->exp_avg_coefficient;
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(m, FO_NADAM_EXP_AVG, signed, 1, c0);
        FO_SLOT_OPEN(v, FO_NADAM_EXP_AVG_SQ, unsigned, 1, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            FO_C param = FO_LOAD_P(p, k);
            FO_C exp_avg, exp_avg_sq, denom;
            FO_ELEMENT_RANDOM(r, first + k);
            if (decoupled_decay) param = param * param_decay;
            if (l2_decay) grad = grad + weight_decay * param;
            exp_avg = FO_LOAD_S(m, k);
            exp_avg = FO_LERP(exp_avg, grad, w, one_minus_w, w_small);
            exp_avg_sq = FO_LOAD_S(v, k) * beta2 + (one_minus_beta2 * grad) * grad;
            FO_STORE_S(m, k, exp_avg);
            FO_STORE_S(v, k, exp_avg_sq);
            denom = FO_SQRT(exp_avg_sq / bias_correction2) + eps;
            param = param + (grad_coefficient * grad) / denom;
            FO_STORE_P(p, k, param + (exp_avg_coefficient * exp_avg) / denom);
        }
        FO_SLOT_CLOSE(m, signed, 1, c0, len);
        FO_SLOT_CLOSE(v, unsigned, 1, c0, len);
    }
}

#define FO_NADAM_LOOP(l2, decoupled, master, sr)                                            \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(m), FO_SLOT_PASS(v), begin, end - begin, h, \
                         key, l2, decoupled, master, sr)
#define FO_NADAM_OPTIONS(master, sr)                                                        \
    do {                                                                                   \
        if (l2) FO_NADAM_LOOP(1, 0, master, sr);                                           \
        else if (decoupled) FO_NADAM_LOOP(0, 1, master, sr);                               \
        else FO_NADAM_LOOP(0, 0, master, sr);                                              \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_nadam_hyper *h = (const fo_nadam_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(m, FO_NADAM_EXP_AVG);
    FO_SLOT_GET(v, FO_NADAM_EXP_AVG_SQ);
    const int l2 = h->weight_decay != 0.0 && h->decoupled == 0.0;
    const int decoupled = h->weight_decay != 0.0 && h->decoupled != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_NADAM_OPTIONS);
}
#undef FO_NADAM_LOOP
#undef FO_NADAM_OPTIONS
#endif
