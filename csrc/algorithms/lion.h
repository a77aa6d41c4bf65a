/*
 * algorithms/lion.h: Lion (Chen et al. 2023, "Symbolic Discovery of Optimization
 * Algorithms"), as optax.lion computes it.
 *
 *   g = s*g (negated if maximize)
 *   c = b1*m + (1-b1)*g;  p -= lr * (sign(c) [+ wd*p]);  m = b2*m + (1-b2)*g
 */
#ifndef FUSEDOPT_ALGORITHM_LION_TYPES
#define FUSEDOPT_ALGORITHM_LION_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_lion(X) X(lr) X(beta1) X(beta2) X(weight_decay) X(maximize)
#define FO_COUNTERS_lion(X) X(step)
#define FO_DERIVED_lion(X)
#define FO_SLOTS_lion(X) X(exp_avg)
#define FO_N_REDUCED_lion 0
enum { FO_LION_EXP_AVG };

FO_ALGORITHM_TYPES(lion);

static unsigned fo_lion_slots_needed(const fo_lion_hyper *h)
{
    (void)h;
    return 1u << FO_LION_EXP_AVG;
}

static void fo_lion_prepare(fo_lion_hyper *h)
{
    h->step += 1.0;
}

FO_ALGORITHM_WRAPPERS(lion);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(m), int64_t first, int64_t n,
    const fo_lion_hyper *h, uint32_t key, const int decay, const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay, lr = (FO_C)h->lr;
    const FO_C beta1 = (FO_C)h->beta1, one_minus_beta1 = (FO_C)(1.0 - h->beta1);
    const FO_C beta2 = (FO_C)h->beta2, one_minus_beta2 = (FO_C)(1.0 - h->beta2);
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(m, FO_LION_EXP_AVG, signed, 1, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            const FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            const FO_C param = FO_LOAD_P(p, k);
            const FO_C exp_avg = FO_LOAD_S(m, k);
            const FO_C c = beta1 * exp_avg + one_minus_beta1 * grad;
            const FO_C direction = (FO_C)FO_SIGN(c);
            FO_ELEMENT_RANDOM(r, first + k);
            FO_STORE_P(p, k, param - lr * (decay ? direction + weight_decay * param : direction));
            FO_STORE_S(m, k, beta2 * exp_avg + one_minus_beta2 * grad);
        }
        FO_SLOT_CLOSE(m, signed, 1, c0, len);
    }
}

#define FO_LION_LOOP(decay, master, sr) \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(m), begin, end - begin, h, key, decay, master, sr)
#define FO_LION_OPTIONS(master, sr)                                                         \
    do {                                                                                   \
        if (decay) FO_LION_LOOP(1, master, sr);                                            \
        else FO_LION_LOOP(0, master, sr);                                                  \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_lion_hyper *h = (const fo_lion_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(m, FO_LION_EXP_AVG);
    const int decay = h->weight_decay != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_LION_OPTIONS);
}
#undef FO_LION_LOOP
#undef FO_LION_OPTIONS
#endif
