/*
 * algorithms/adagrad.h: Adagrad (Duchi, Hazan & Singer 2011), as torch.optim.Adagrad
 * computes it.
 *
 *   g = s*g (negated if maximize); [g += wd*p]
 *   sum = sum + g*g;  p += (-clr*g) / (sqrt(sum) + eps),   clr = lr / (1 + (t-1)*lr_decay)
 *
 * Row-sparse steps (row_sparse = 1, set by the binding; no weight decay) round as
 * torch's sparse path does: p += -clr * (g / (sqrt(sum) + eps)).
 */
#ifndef FUSEDOPT_ALGORITHM_ADAGRAD_TYPES
#define FUSEDOPT_ALGORITHM_ADAGRAD_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_adagrad(X) X(lr) X(lr_decay) X(weight_decay) X(eps) X(maximize) X(row_sparse)
#define FO_COUNTERS_adagrad(X) X(step)
#define FO_DERIVED_adagrad(X) X(clr)
#define FO_SLOTS_adagrad(X) X(sum)
#define FO_N_REDUCED_adagrad 0
enum { FO_ADAGRAD_SUM };

FO_ALGORITHM_TYPES(adagrad);

static unsigned fo_adagrad_slots_needed(const fo_adagrad_hyper *h)
{
    (void)h;
    return 1u << FO_ADAGRAD_SUM;
}

static void fo_adagrad_prepare(fo_adagrad_hyper *h)
{
    h->step += 1.0;
    h->clr = h->lr / (1.0 + (h->step - 1.0) * h->lr_decay);
}

FO_ALGORITHM_WRAPPERS(adagrad);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(sum), int64_t first, int64_t n,
    const fo_adagrad_hyper *h, uint32_t key, const int l2_decay, const int row_sparse, const int master,
    const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C minus_clr = (FO_C)(-h->clr);
    const FO_C eps = (FO_C)h->eps;
    int64_t c0, j;
    (void)key;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(sum, FO_ADAGRAD_SUM, unsigned, 1, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            const FO_C param = FO_LOAD_P(p, k);
            FO_C total;
            FO_ELEMENT_RANDOM(r, first + k);
            if (l2_decay) grad = grad + weight_decay * param;
            total = FO_LOAD_S(sum, k) + grad * grad;
            FO_STORE_S(sum, k, total);
            if (row_sparse) FO_STORE_P(p, k, param + minus_clr * (grad / (FO_SQRT(total) + eps)));
            else FO_STORE_P(p, k, param + (minus_clr * grad) / (FO_SQRT(total) + eps));
        }
        FO_SLOT_CLOSE(sum, unsigned, 1, c0, len);
    }
}

#define FO_ADAGRAD_LOOP(l2, row_sparse, master, sr)                                         \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(sum), begin, end - begin, h, key, l2, row_sparse, \
                         master, sr)
#define FO_ADAGRAD_OPTIONS(master, sr)                                                      \
    do {                                                                                   \
        if (h->row_sparse != 0.0) FO_ADAGRAD_LOOP(0, 1, master, sr);                       \
        else if (l2) FO_ADAGRAD_LOOP(1, 0, master, sr);                                    \
        else FO_ADAGRAD_LOOP(0, 0, master, sr);                                            \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_adagrad_hyper *h = (const fo_adagrad_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(sum, FO_ADAGRAD_SUM);
    const int l2 = h->weight_decay != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_ADAGRAD_OPTIONS);
}
#undef FO_ADAGRAD_LOOP
#undef FO_ADAGRAD_OPTIONS
#endif
