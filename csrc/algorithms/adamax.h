/*
 * algorithms/adamax.h: Adamax (Kingma & Ba 2015, section 7.1), as torch.optim.Adamax
 * computes it.
 *
 *   g = s*g (negated if maximize); [g += wd*p]
 *   m = lerp(m, g, 1-b1);  u = max(u*b2, |g| + eps)  (NaN propagates)
 *   p += (-clr*m) / u,   clr = lr / (1 - b1^t)
 */
#ifndef FUSEDOPT_ALGORITHM_ADAMAX_TYPES
#define FUSEDOPT_ALGORITHM_ADAMAX_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_adamax(X) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay) X(maximize)
#define FO_COUNTERS_adamax(X) X(step)
#define FO_DERIVED_adamax(X) X(clr)
#define FO_SLOTS_adamax(X) X(exp_avg) X(exp_inf)
#define FO_N_REDUCED_adamax 0
enum { FO_ADAMAX_EXP_AVG, FO_ADAMAX_EXP_INF };

FO_ALGORITHM_TYPES(adamax);

static unsigned fo_adamax_slots_needed(const fo_adamax_hyper *h)
{
    (void)h;
    return (1u << FO_ADAMAX_EXP_AVG) | (1u << FO_ADAMAX_EXP_INF);
}

static void fo_adamax_prepare(fo_adamax_hyper *h)
{
    h->step += 1.0;
    h->clr = h->lr / (1.0 - pow(h->beta1, h->step));
}

FO_ALGORITHM_WRAPPERS(adamax);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(m), FO_SLOT_ARG(u), int64_t first, int64_t n,
    const fo_adamax_hyper *h, uint32_t key, const int l2_decay, const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C w = (FO_C)(1.0 - h->beta1), one_minus_w = (FO_C)1 - w;   /* lerp weight */
    const int w_small = fabs((double)w) < 0.5;
    const FO_C beta2 = (FO_C)h->beta2, eps = (FO_C)h->eps, minus_clr = (FO_C)(-h->clr);
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(m, FO_ADAMAX_EXP_AVG, signed, 1, c0);
        FO_SLOT_OPEN(u, FO_ADAMAX_EXP_INF, unsigned, 1, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            const FO_C param = FO_LOAD_P(p, k);
            FO_C exp_avg, exp_inf, decayed, bound;
            FO_ELEMENT_RANDOM(r, first + k);
            if (l2_decay) grad = grad + weight_decay * param;
            exp_avg = FO_LOAD_S(m, k);
            exp_avg = FO_LERP(exp_avg, grad, w, one_minus_w, w_small);
            decayed = FO_LOAD_S(u, k) * beta2;
            bound = FO_ABS(grad) + eps;
            exp_inf = FO_MAX_NAN(decayed, bound);
            FO_STORE_S(m, k, exp_avg);
            FO_STORE_S(u, k, exp_inf);
            FO_STORE_P(p, k, param + (minus_clr * exp_avg) / exp_inf);
        }
        FO_SLOT_CLOSE(m, signed, 1, c0, len);
        FO_SLOT_CLOSE(u, unsigned, 1, c0, len);
    }
}

#define FO_ADAMAX_LOOP(l2, master, sr)                                                      \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(m), FO_SLOT_PASS(u), begin, end - begin, h, \
                         key, l2, master, sr)
#define FO_ADAMAX_OPTIONS(master, sr)                                                       \
    do {                                                                                   \
        if (l2) FO_ADAMAX_LOOP(1, master, sr);                                             \
        else FO_ADAMAX_LOOP(0, master, sr);                                                \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_adamax_hyper *h = (const fo_adamax_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(m, FO_ADAMAX_EXP_AVG);
    FO_SLOT_GET(u, FO_ADAMAX_EXP_INF);
    const int l2 = h->weight_decay != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_ADAMAX_OPTIONS);
}
#undef FO_ADAMAX_LOOP
#undef FO_ADAMAX_OPTIONS
#endif
