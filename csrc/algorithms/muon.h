/*
 * algorithms/muon.h: the element-wise part of Muon (Jordan et al. 2024), as
 * torch.optim.Muon computes it: the momentum, and the matrix the Newton-Schulz
 * iteration orthogonalises (optim/muon.py runs that iteration with NumPy's
 * matmul, then updates the parameter).
 *
 *   g = s*g;  buf = lerp(buf, g, 1 - mu);  update = nesterov ? lerp(g, buf, mu) : buf
 *
 * lr and weight_decay are read (and checked) with the other inputs but used by
 * the Python half of the step.
 */
#ifndef FUSEDOPT_ALGORITHM_MUON_TYPES
#define FUSEDOPT_ALGORITHM_MUON_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_muon(X) X(lr) X(weight_decay) X(momentum) X(nesterov)
#define FO_COUNTERS_muon(X) X(step)
#define FO_DERIVED_muon(X)
#define FO_SLOTS_muon(X) X(momentum_buffer) X(update)
#define FO_N_REDUCED_muon 0
enum { FO_MUON_MOMENTUM_BUFFER, FO_MUON_UPDATE };

FO_ALGORITHM_TYPES(muon);

static unsigned fo_muon_slots_needed(const fo_muon_hyper *h)
{
    (void)h;
    return (1u << FO_MUON_MOMENTUM_BUFFER) | (1u << FO_MUON_UPDATE);
}

static void fo_muon_prepare(fo_muon_hyper *h)
{
    h->step += 1.0;
}

FO_ALGORITHM_WRAPPERS(muon);
#endif

#ifdef FO_INSTANTIATING
static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_muon_hyper *h = (const fo_muon_hyper *)hyper + t->hyper[i];
    const FO_G *FO_RESTRICT g = (const FO_G *)t->grad[i] + begin;
    FO_S *FO_RESTRICT buf = (FO_S *)t->slot[FO_MUON_MOMENTUM_BUFFER][i] + begin;
    FO_S *FO_RESTRICT update = (FO_S *)t->slot[FO_MUON_UPDATE][i] + begin;
    const FO_C grad_multiplier = (FO_C)h->grad_multiplier;
    const FO_C keep = (FO_C)(1.0 - h->momentum), one_minus_keep = (FO_C)1 - keep;   /* lerp toward g */
    const FO_C mu = (FO_C)h->momentum, one_minus_mu = (FO_C)1 - mu;                 /* nesterov lerp */
    const int keep_small = fabs((double)keep) < 0.5, mu_small = fabs((double)mu) < 0.5;
    const int nesterov = h->nesterov != 0.0;
    const int64_t n = end - begin;
    int64_t k;
    FO_PRAGMA_SIMD
    for (k = 0; k < n; k++) {
        const FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
        const FO_C momentum = FO_LERP(FO_LOAD_S(buf, k), grad, keep, one_minus_keep, keep_small);
        FO_STORE_S(buf, k, momentum);
        FO_STORE_S(update, k, nesterov ? FO_LERP(grad, momentum, mu, one_minus_mu, mu_small) : momentum);
    }
}
#endif
