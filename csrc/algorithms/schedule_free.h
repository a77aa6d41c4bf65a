/*
 * algorithms/schedule_free.h: schedule-free AdamW and SGD (Defazio et al., "The Road
 * Less Scheduled", NeurIPS 2024), as the schedulefree package's AdamWScheduleFree and
 * SGDScheduleFree compute them (their single-tensor paths).  The parameter holds y;
 * z is a slot; x (the point to evaluate at) is a lerp of the two.
 *
 *   per step: lr_t = lr * min(1, (k+1)/warmup);  lr_max = max(lr_max, lr_t)
 *             w = (k+1)^r * lr_max^power;  W += w;  c = w / W (0 if W = 0)
 *   adaptive (AdamW):  v = v*b2 + ((1-b2)*g)*g;  g = g / (sqrt(v / (1 - b2^(k+1))) + eps)
 *   g = s*g; [g += wd*y]  (after the normalisation for AdamW, as the package)
 *   y = lerp(y, z, c);  y += lr_t*(b1*(1-c) - 1) * g;  z -= lr_t * g
 * z starts as the parameter at each array's first step.
 */
#ifndef FUSEDOPT_ALGORITHM_SCHEDULE_FREE_TYPES
#define FUSEDOPT_ALGORITHM_SCHEDULE_FREE_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_schedule_free(X) \
    X(lr) X(beta1) X(beta2) X(eps) X(weight_decay) X(warmup_steps) X(r) X(weight_lr_power) X(adaptive)
/* step counts this array's steps (z starts at its first); k, weight_sum and
 * lr_max are its group's, shared by every array of the group (optim/schedule_free.py) */
#define FO_COUNTERS_schedule_free(X) X(step) X(k) X(weight_sum) X(lr_max)
#define FO_DERIVED_schedule_free(X) X(first_step) X(scheduled_lr) X(bias_correction2) X(ckp1) X(y_coefficient)
#define FO_SLOTS_schedule_free(X) X(z) X(exp_avg_sq)
#define FO_N_REDUCED_schedule_free 0
enum { FO_SCHEDULE_FREE_Z, FO_SCHEDULE_FREE_EXP_AVG_SQ };

FO_ALGORITHM_TYPES(schedule_free);

static unsigned fo_schedule_free_slots_needed(const fo_schedule_free_hyper *h)
{
    return (1u << FO_SCHEDULE_FREE_Z) | (h->adaptive != 0.0 ? 1u << FO_SCHEDULE_FREE_EXP_AVG_SQ : 0u);
}

static void fo_schedule_free_prepare(fo_schedule_free_hyper *h)
{
    const double k1 = h->k + 1.0;
    double weight;
    h->first_step = h->step == 0.0;
    h->step += 1.0;
    h->scheduled_lr = h->lr * (h->k < h->warmup_steps ? k1 / h->warmup_steps : 1.0);
    h->bias_correction2 = 1.0 - pow(h->beta2, k1);
    h->lr_max = h->scheduled_lr > h->lr_max ? h->scheduled_lr : h->lr_max;
    weight = pow(k1, h->r) * pow(h->lr_max, h->weight_lr_power);
    h->weight_sum += weight;
    h->ckp1 = h->weight_sum != 0.0 ? weight / h->weight_sum : 0.0;
    h->y_coefficient = h->scheduled_lr * (h->beta1 * (1.0 - h->ckp1) - 1.0);
    h->k = k1;
}

FO_ALGORITHM_WRAPPERS(schedule_free);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(z), FO_SLOT_ARG(v), int64_t first, int64_t n,
    const fo_schedule_free_hyper *h, uint32_t key, const int adaptive, const int decay, const int first_step,
    const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)h->grad_multiplier;
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C beta2 = (FO_C)h->beta2, one_minus_beta2 = (FO_C)(1.0 - h->beta2);
    const FO_C bias_correction2 = (FO_C)h->bias_correction2, eps = (FO_C)h->eps;
    const FO_C ckp1 = (FO_C)h->ckp1, one_minus_ckp1 = (FO_C)1 - ckp1;   /* lerp weight */
    const int w_small = fabs((double)ckp1) < 0.5;
    const FO_C y_coefficient = (FO_C)h->y_coefficient, lr = (FO_C)h->scheduled_lr;
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(z, FO_SCHEDULE_FREE_Z, signed, 1, c0);
        FO_SLOT_OPEN(v, FO_SCHEDULE_FREE_EXP_AVG_SQ, unsigned, adaptive, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            FO_C y = FO_LOAD_P(p, k);
            const FO_C z_old = first_step ? y : FO_LOAD_S(z, k);
            FO_ELEMENT_RANDOM(r, first + k);
            if (adaptive) {
                const FO_C exp_avg_sq = FO_LOAD_S(v, k) * beta2 + (one_minus_beta2 * grad) * grad;
                FO_STORE_S(v, k, exp_avg_sq);
                grad = grad / (FO_SQRT(exp_avg_sq / bias_correction2) + eps);
            }
            if (decay) grad = grad + weight_decay * y;
            y = FO_LERP(y, z_old, ckp1, one_minus_ckp1, w_small);
            FO_STORE_P(p, k, y + y_coefficient * grad);
            FO_STORE_S(z, k, z_old - lr * grad);
        }
        FO_SLOT_CLOSE(z, signed, 1, c0, len);
        FO_SLOT_CLOSE(v, unsigned, adaptive, c0, len);
    }
}

#define FO_SCHEDULE_FREE_LOOP(adaptive, decay, first_step, master, sr)                      \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(z), FO_SLOT_PASS(v), begin, end - begin, h, \
                         key, adaptive, decay, first_step, master, sr)
#define FO_SCHEDULE_FREE_DECAY(adaptive, first_step, master, sr)                            \
    do {                                                                                   \
        if (decay) FO_SCHEDULE_FREE_LOOP(adaptive, 1, first_step, master, sr);             \
        else FO_SCHEDULE_FREE_LOOP(adaptive, 0, first_step, master, sr);                   \
    } while (0)
#define FO_SCHEDULE_FREE_OPTIONS(master, sr)                                                \
    do {                                                                                   \
        if (adaptive && first_step) FO_SCHEDULE_FREE_DECAY(1, 1, master, sr);              \
        else if (adaptive) FO_SCHEDULE_FREE_DECAY(1, 0, master, sr);                       \
        else if (first_step) FO_SCHEDULE_FREE_DECAY(0, 1, master, sr);                     \
        else FO_SCHEDULE_FREE_DECAY(0, 0, master, sr);                                     \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_schedule_free_hyper *h = (const fo_schedule_free_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(z, FO_SCHEDULE_FREE_Z);
    FO_SLOT_GET(v, FO_SCHEDULE_FREE_EXP_AVG_SQ);
    const int adaptive = h->adaptive != 0.0;
    const int decay = h->weight_decay != 0.0;
    const int first_step = h->first_step != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_SCHEDULE_FREE_OPTIONS);
}
#undef FO_SCHEDULE_FREE_LOOP
#undef FO_SCHEDULE_FREE_DECAY
#undef FO_SCHEDULE_FREE_OPTIONS
#endif
