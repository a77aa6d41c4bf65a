/*
 * algorithms/adam.h: Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019),
 * with AMSGrad and maximize, as torch.optim.Adam/AdamW compute them.
 *
 *   g = s*g (negated if maximize); [g += wd*p | p *= 1 - lr*wd]
 *   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  [vmax = max(vmax, v); v = vmax]
 *   p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps),   bck = 1 - bk^t
 */
#ifndef FUSEDOPT_ALGORITHM_ADAM_TYPES
#define FUSEDOPT_ALGORITHM_ADAM_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_adam(X) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay) X(decoupled) X(amsgrad) X(maximize)
#define FO_COUNTERS_adam(X) X(step)
#define FO_DERIVED_adam(X) X(step_size) X(inv_bias_correction2_sqrt)
#define FO_SLOTS_adam(X) X(exp_avg) X(exp_avg_sq) X(max_exp_avg_sq)
#define FO_N_REDUCED_adam 0
enum { FO_ADAM_EXP_AVG, FO_ADAM_EXP_AVG_SQ, FO_ADAM_MAX_EXP_AVG_SQ };

FO_ALGORITHM_TYPES(adam);

static unsigned fo_adam_slots_needed(const fo_adam_hyper *h)
{
    return (1u << FO_ADAM_EXP_AVG) | (1u << FO_ADAM_EXP_AVG_SQ)
           | (h->amsgrad != 0.0 ? 1u << FO_ADAM_MAX_EXP_AVG_SQ : 0u);
}

/* t = step + 1; step_size = lr / (1 - b1^t); 1 / sqrt(1 - b2^t) */
static void fo_adam_prepare(fo_adam_hyper *h)
{
    const double t = h->step + 1.0;
    h->step = t;
    h->step_size = h->lr / (1.0 - pow(h->beta1, t));
    h->inv_bias_correction2_sqrt = 1.0 / sqrt(1.0 - pow(h->beta2, t));
}

FO_ALGORITHM_WRAPPERS(adam);
#endif

#ifdef FO_INSTANTIATING
/* Option flags are compile-time constants at each call site: one branch-free
 * vector loop per option set.  Constants are rounded to FO_C once per call.
 * The update uses the new moments as computed; 8-bit state stores them quantized. */
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(m), FO_SLOT_ARG(v), FO_SLOT_ARG(vmax),
    int64_t first, int64_t n, const fo_adam_hyper *h, uint32_t key,
    const int l2_decay, const int decoupled_decay, const int amsgrad, const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C beta1 = (FO_C)h->beta1, one_minus_beta1 = (FO_C)(1.0 - h->beta1);
    const FO_C beta2 = (FO_C)h->beta2, one_minus_beta2 = (FO_C)(1.0 - h->beta2);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C param_decay = (FO_C)(1.0 - h->lr * h->weight_decay);
    const FO_C step_size = (FO_C)h->step_size;
    const FO_C inv_bias_correction2_sqrt = (FO_C)h->inv_bias_correction2_sqrt;
    const FO_C eps = (FO_C)h->eps;
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(m, FO_ADAM_EXP_AVG, signed, 1, c0);
        FO_SLOT_OPEN(v, FO_ADAM_EXP_AVG_SQ, unsigned, 1, c0);
        FO_SLOT_OPEN(vmax, FO_ADAM_MAX_EXP_AVG_SQ, unsigned, amsgrad, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            FO_C param = FO_LOAD_P(p, k);
            FO_C exp_avg, exp_avg_sq, denom;
            FO_ELEMENT_RANDOM(r, first + k);
            if (decoupled_decay) param = param * param_decay;
            if (l2_decay) grad = grad + weight_decay * param;
            exp_avg = beta1 * FO_LOAD_S(m, k) + one_minus_beta1 * grad;
            exp_avg_sq = beta2 * FO_LOAD_S(v, k) + one_minus_beta2 * (grad * grad);
            FO_STORE_S(m, k, exp_avg);
            FO_STORE_S(v, k, exp_avg_sq);
            if (amsgrad) {
                const FO_C previous_max = FO_LOAD_S(vmax, k);
                exp_avg_sq = previous_max > exp_avg_sq ? previous_max : exp_avg_sq;
                FO_STORE_S(vmax, k, exp_avg_sq);
            }
            denom = FO_SQRT(exp_avg_sq) * inv_bias_correction2_sqrt + eps;
            FO_STORE_P(p, k, param - step_size * exp_avg / denom);
        }
        FO_SLOT_CLOSE(m, signed, 1, c0, len);
        FO_SLOT_CLOSE(v, unsigned, 1, c0, len);
        FO_SLOT_CLOSE(vmax, unsigned, amsgrad, c0, len);
    }
}

#define FO_ADAM_LOOP(l2, decoupled, amsgrad, master, sr)                                     \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(m), FO_SLOT_PASS(v), FO_SLOT_PASS(vmax), \
                         begin, end - begin, h, key, l2, decoupled, amsgrad, master, sr)
#define FO_ADAM_OPTIONS(master, sr)                                                          \
    do {                                                                                     \
        if (h->amsgrad != 0.0) {                                                             \
            if (l2) FO_ADAM_LOOP(1, 0, 1, master, sr);                                       \
            else if (decoupled) FO_ADAM_LOOP(0, 1, 1, master, sr);                           \
            else FO_ADAM_LOOP(0, 0, 1, master, sr);                                          \
        } else {                                                                             \
            if (l2) FO_ADAM_LOOP(1, 0, 0, master, sr);                                       \
            else if (decoupled) FO_ADAM_LOOP(0, 1, 0, master, sr);                           \
            else FO_ADAM_LOOP(0, 0, 0, master, sr);                                          \
        }                                                                                    \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_adam_hyper *h = (const fo_adam_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(m, FO_ADAM_EXP_AVG);
    FO_SLOT_GET(v, FO_ADAM_EXP_AVG_SQ);
    FO_SLOT_GET(vmax, FO_ADAM_MAX_EXP_AVG_SQ);
    const int l2 = h->weight_decay != 0.0 && h->decoupled == 0.0;
    const int decoupled = h->weight_decay != 0.0 && h->decoupled != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_ADAM_OPTIONS);
}
#undef FO_ADAM_LOOP
#undef FO_ADAM_OPTIONS
#endif
