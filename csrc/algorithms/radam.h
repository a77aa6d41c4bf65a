/*
 * algorithms/radam.h: RAdam (Liu et al., ICLR 2020), as torch.optim.RAdam computes it.
 *
 *   g = s*g (negated if maximize); [g += wd*p | p *= 1 - lr*wd]
 *   m = lerp(m, g, 1-b1);  v = v*b2 + ((1-b2)*g)*g
 *   rho_t > 5:  p -= (((m / bc1) * lr) * (sqrt(bc2) / (sqrt(v) + eps))) * rect
 *   else:       p -= (m / bc1) * lr
 *   rho_inf = 2/(1-b2) - 1,  rho_t = rho_inf - 2 t b2^t / bc2,
 *   rect = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t)),  bck = 1 - bk^t
 */
#ifndef FUSEDOPT_ALGORITHM_RADAM_TYPES
#define FUSEDOPT_ALGORITHM_RADAM_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_radam(X) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay) X(decoupled) X(maximize)
#define FO_COUNTERS_radam(X) X(step)
#define FO_DERIVED_radam(X) X(bias_correction1) X(bias_correction2_sqrt) X(rectification) X(rectified)
#define FO_SLOTS_radam(X) X(exp_avg) X(exp_avg_sq)
#define FO_N_REDUCED_radam 0
enum { FO_RADAM_EXP_AVG, FO_RADAM_EXP_AVG_SQ };

FO_ALGORITHM_TYPES(radam);

static unsigned fo_radam_slots_needed(const fo_radam_hyper *h)
{
    (void)h;
    return (1u << FO_RADAM_EXP_AVG) | (1u << FO_RADAM_EXP_AVG_SQ);
}

static void fo_radam_prepare(fo_radam_hyper *h)
{
    const double t = h->step + 1.0;
    const double bias_correction2 = 1.0 - pow(h->beta2, t);
    const double rho_inf = 2.0 / (1.0 - h->beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * pow(h->beta2, t) / bias_correction2;
    h->step = t;
    h->bias_correction1 = 1.0 - pow(h->beta1, t);
    h->bias_correction2_sqrt = sqrt(bias_correction2);
    h->rectified = rho_t > 5.0;
    h->rectification = h->rectified != 0.0
        ? sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) : 0.0;
}

FO_ALGORITHM_WRAPPERS(radam);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(m), FO_SLOT_ARG(v), int64_t first, int64_t n,
    const fo_radam_hyper *h, uint32_t key, const int l2_decay, const int decoupled_decay, const int rectified,
    const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C param_decay = (FO_C)(1.0 - h->lr * h->weight_decay);
    const FO_C w = (FO_C)(1.0 - h->beta1), one_minus_w = (FO_C)1 - w;   /* lerp weight */
    const int w_small = fabs((double)w) < 0.5;
    const FO_C beta2 = (FO_C)h->beta2, one_minus_beta2 = (FO_C)(1.0 - h->beta2);
    const FO_C bias_correction1 = (FO_C)h->bias_correction1, lr = (FO_C)h->lr, eps = (FO_C)h->eps;
    const FO_C bias_correction2_sqrt = (FO_C)h->bias_correction2_sqrt;
    const FO_C rectification = (FO_C)h->rectification;
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(m, FO_RADAM_EXP_AVG, signed, 1, c0);
        FO_SLOT_OPEN(v, FO_RADAM_EXP_AVG_SQ, unsigned, 1, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            FO_C param = FO_LOAD_P(p, k);
            FO_C exp_avg, exp_avg_sq, step;
            FO_ELEMENT_RANDOM(r, first + k);
            if (decoupled_decay) param = param * param_decay;
            if (l2_decay) grad = grad + weight_decay * param;
            exp_avg = FO_LOAD_S(m, k);
            exp_avg = FO_LERP(exp_avg, grad, w, one_minus_w, w_small);
            exp_avg_sq = FO_LOAD_S(v, k) * beta2 + (one_minus_beta2 * grad) * grad;
            FO_STORE_S(m, k, exp_avg);
            FO_STORE_S(v, k, exp_avg_sq);
            step = (exp_avg / bias_correction1) * lr;
            if (rectified) step = (step * (bias_correction2_sqrt / (FO_SQRT(exp_avg_sq) + eps))) * rectification;
            FO_STORE_P(p, k, param - step);
        }
        FO_SLOT_CLOSE(m, signed, 1, c0, len);
        FO_SLOT_CLOSE(v, unsigned, 1, c0, len);
    }
}

#define FO_RADAM_LOOP(l2, decoupled, rectified, master, sr)                                 \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(m), FO_SLOT_PASS(v), begin, end - begin, h, \
                         key, l2, decoupled, rectified, master, sr)
#define FO_RADAM_DECAY(rectified, master, sr)                                               \
    do {                                                                                   \
        if (l2) FO_RADAM_LOOP(1, 0, rectified, master, sr);                                \
        else if (decoupled) FO_RADAM_LOOP(0, 1, rectified, master, sr);                    \
        else FO_RADAM_LOOP(0, 0, rectified, master, sr);                                   \
    } while (0)
#define FO_RADAM_OPTIONS(master, sr)                                                        \
    do {                                                                                   \
        if (h->rectified != 0.0) FO_RADAM_DECAY(1, master, sr);                            \
        else FO_RADAM_DECAY(0, master, sr);                                                \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_radam_hyper *h = (const fo_radam_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(m, FO_RADAM_EXP_AVG);
    FO_SLOT_GET(v, FO_RADAM_EXP_AVG_SQ);
    const int l2 = h->weight_decay != 0.0 && h->decoupled == 0.0;
    const int decoupled = h->weight_decay != 0.0 && h->decoupled != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_RADAM_OPTIONS);
}
#undef FO_RADAM_LOOP
#undef FO_RADAM_DECAY
#undef FO_RADAM_OPTIONS
#endif
