/*
 * algorithms/rmsprop.h: RMSprop (Hinton 2012; centered: Graves 2013), as
 * torch.optim.RMSprop computes it.
 *
 *   g = s*g (negated if maximize); [g += wd*p]
 *   v = v*alpha + ((1-alpha)*g)*g
 *   centered: ga = lerp(ga, g, 1-alpha); avg = sqrt(v - ga*ga) + eps;  else avg = sqrt(v) + eps
 *   momentum: b = b*mu + g/avg; p += -lr*b;   else p += (-lr*g) / avg
 */
#ifndef FUSEDOPT_ALGORITHM_RMSPROP_TYPES
#define FUSEDOPT_ALGORITHM_RMSPROP_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_rmsprop(X) X(lr) X(alpha) X(eps) X(weight_decay) X(momentum) X(centered) X(maximize)
#define FO_COUNTERS_rmsprop(X) X(step)
#define FO_DERIVED_rmsprop(X)
#define FO_SLOTS_rmsprop(X) X(square_avg) X(momentum_buffer) X(grad_avg)
#define FO_N_REDUCED_rmsprop 0
enum { FO_RMSPROP_SQUARE_AVG, FO_RMSPROP_MOMENTUM_BUFFER, FO_RMSPROP_GRAD_AVG };

FO_ALGORITHM_TYPES(rmsprop);

static unsigned fo_rmsprop_slots_needed(const fo_rmsprop_hyper *h)
{
    return (1u << FO_RMSPROP_SQUARE_AVG) | (h->momentum > 0.0 ? 1u << FO_RMSPROP_MOMENTUM_BUFFER : 0u)
           | (h->centered != 0.0 ? 1u << FO_RMSPROP_GRAD_AVG : 0u);
}

static void fo_rmsprop_prepare(fo_rmsprop_hyper *h)
{
    h->step += 1.0;
}

FO_ALGORITHM_WRAPPERS(rmsprop);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(v), FO_SLOT_ARG(buf), FO_SLOT_ARG(ga),
    int64_t first, int64_t n, const fo_rmsprop_hyper *h, uint32_t key, const int l2_decay,
    const int centered, const int momentum_on, const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C alpha = (FO_C)h->alpha, one_minus_alpha = (FO_C)(1.0 - h->alpha);
    const FO_C one_minus_w = (FO_C)1 - one_minus_alpha;   /* lerp's 1 - w */
    const int w_small = fabs((double)one_minus_alpha) < 0.5;
    const FO_C eps = (FO_C)h->eps, momentum = (FO_C)h->momentum, minus_lr = (FO_C)(-h->lr);
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(v, FO_RMSPROP_SQUARE_AVG, unsigned, 1, c0);
        FO_SLOT_OPEN(buf, FO_RMSPROP_MOMENTUM_BUFFER, signed, momentum_on, c0);
        FO_SLOT_OPEN(ga, FO_RMSPROP_GRAD_AVG, signed, centered, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            const FO_C param = FO_LOAD_P(p, k);
            FO_C square_avg, avg;
            FO_ELEMENT_RANDOM(r, first + k);
            if (l2_decay) grad = grad + weight_decay * param;
            square_avg = FO_LOAD_S(v, k) * alpha + (one_minus_alpha * grad) * grad;
            FO_STORE_S(v, k, square_avg);
            if (centered) {
                const FO_C old = FO_LOAD_S(ga, k);
                const FO_C grad_avg = FO_LERP(old, grad, one_minus_alpha, one_minus_w, w_small);
                FO_STORE_S(ga, k, grad_avg);
                avg = FO_SQRT(square_avg - grad_avg * grad_avg) + eps;
            } else {
                avg = FO_SQRT(square_avg) + eps;
            }
            if (momentum_on) {
                const FO_C b = FO_LOAD_S(buf, k) * momentum + grad / avg;
                FO_STORE_S(buf, k, b);
                FO_STORE_P(p, k, param + minus_lr * b);
            } else {
                FO_STORE_P(p, k, param + (minus_lr * grad) / avg);
            }
        }
        FO_SLOT_CLOSE(v, unsigned, 1, c0, len);
        FO_SLOT_CLOSE(buf, signed, momentum_on, c0, len);
        FO_SLOT_CLOSE(ga, signed, centered, c0, len);
    }
}

#define FO_RMSPROP_LOOP(l2, centered, momentum, master, sr)                                 \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(v), FO_SLOT_PASS(buf), FO_SLOT_PASS(ga), \
                         begin, end - begin, h, key, l2, centered, momentum, master, sr)
#define FO_RMSPROP_DECAY(centered, momentum, master, sr)                                    \
    do {                                                                                   \
        if (l2) FO_RMSPROP_LOOP(1, centered, momentum, master, sr);                        \
        else FO_RMSPROP_LOOP(0, centered, momentum, master, sr);                           \
    } while (0)
#define FO_RMSPROP_OPTIONS(master, sr)                                                      \
    do {                                                                                   \
        if (centered && momentum) FO_RMSPROP_DECAY(1, 1, master, sr);                      \
        else if (centered) FO_RMSPROP_DECAY(1, 0, master, sr);                             \
        else if (momentum) FO_RMSPROP_DECAY(0, 1, master, sr);                             \
        else FO_RMSPROP_DECAY(0, 0, master, sr);                                           \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_rmsprop_hyper *h = (const fo_rmsprop_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(v, FO_RMSPROP_SQUARE_AVG);
    FO_SLOT_GET(buf, FO_RMSPROP_MOMENTUM_BUFFER);
    FO_SLOT_GET(ga, FO_RMSPROP_GRAD_AVG);
    const int l2 = h->weight_decay != 0.0;
    const int centered = h->centered != 0.0;
    const int momentum = h->momentum > 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_RMSPROP_OPTIONS);
}
#undef FO_RMSPROP_LOOP
#undef FO_RMSPROP_DECAY
#undef FO_RMSPROP_OPTIONS
#endif
