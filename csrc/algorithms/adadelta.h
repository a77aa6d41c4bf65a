/*
 * algorithms/adadelta.h: Adadelta (Zeiler 2012), as torch.optim.Adadelta computes it.
 *
 *   g = s*g (negated if maximize); [g += wd*p]
 *   v = v*rho + ((1-rho)*g)*g;  delta = (sqrt(u + eps) / sqrt(v + eps)) * g
 *   u = u*rho + ((1-rho)*delta)*delta;  p += -lr*delta
 */
#ifndef FUSEDOPT_ALGORITHM_ADADELTA_TYPES
#define FUSEDOPT_ALGORITHM_ADADELTA_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_adadelta(X) X(lr) X(rho) X(eps) X(weight_decay) X(maximize)
#define FO_COUNTERS_adadelta(X) X(step)
#define FO_DERIVED_adadelta(X)
#define FO_SLOTS_adadelta(X) X(square_avg) X(acc_delta)
#define FO_N_REDUCED_adadelta 0
enum { FO_ADADELTA_SQUARE_AVG, FO_ADADELTA_ACC_DELTA };

FO_ALGORITHM_TYPES(adadelta);

static unsigned fo_adadelta_slots_needed(const fo_adadelta_hyper *h)
{
    (void)h;
    return (1u << FO_ADADELTA_SQUARE_AVG) | (1u << FO_ADADELTA_ACC_DELTA);
}

static void fo_adadelta_prepare(fo_adadelta_hyper *h)
{
    h->step += 1.0;
}

FO_ALGORITHM_WRAPPERS(adadelta);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(v), FO_SLOT_ARG(u), int64_t first, int64_t n,
    const fo_adadelta_hyper *h, uint32_t key, const int l2_decay, const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C rho = (FO_C)h->rho, one_minus_rho = (FO_C)(1.0 - h->rho);
    const FO_C eps = (FO_C)h->eps, minus_lr = (FO_C)(-h->lr);
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(v, FO_ADADELTA_SQUARE_AVG, unsigned, 1, c0);
        FO_SLOT_OPEN(u, FO_ADADELTA_ACC_DELTA, unsigned, 1, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            const FO_C param = FO_LOAD_P(p, k);
            FO_C square_avg, acc_delta, delta;
            FO_ELEMENT_RANDOM(r, first + k);
            if (l2_decay) grad = grad + weight_decay * param;
            square_avg = FO_LOAD_S(v, k) * rho + (one_minus_rho * grad) * grad;
            acc_delta = FO_LOAD_S(u, k);
            delta = (FO_SQRT(acc_delta + eps) / FO_SQRT(square_avg + eps)) * grad;
            acc_delta = acc_delta * rho + (one_minus_rho * delta) * delta;
            FO_STORE_S(v, k, square_avg);
            FO_STORE_S(u, k, acc_delta);
            FO_STORE_P(p, k, param + minus_lr * delta);
        }
        FO_SLOT_CLOSE(v, unsigned, 1, c0, len);
        FO_SLOT_CLOSE(u, unsigned, 1, c0, len);
    }
}

#define FO_ADADELTA_LOOP(l2, master, sr)                                                    \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(v), FO_SLOT_PASS(u), begin, end - begin, h, \
                         key, l2, master, sr)
#define FO_ADADELTA_OPTIONS(master, sr)                                                     \
    do {                                                                                   \
        if (l2) FO_ADADELTA_LOOP(1, master, sr);                                           \
        else FO_ADADELTA_LOOP(0, master, sr);                                              \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_adadelta_hyper *h = (const fo_adadelta_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(v, FO_ADADELTA_SQUARE_AVG);
    FO_SLOT_GET(u, FO_ADADELTA_ACC_DELTA);
    const int l2 = h->weight_decay != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_ADADELTA_OPTIONS);
}
#undef FO_ADADELTA_LOOP
#undef FO_ADADELTA_OPTIONS
#endif
