/*
 * algorithms/sgd.h: SGD with momentum (PyTorch's form or the velocity form),
 * dampening, Nesterov, L2 weight decay and maximize.
 *
 *   g = s*g (negated if maximize); [g += wd*p]
 *   no momentum:     p -= lr*g
 *   PyTorch's form:  b = mu*b + (1-dampening)*g (b = g at the buffer's first step);
 *                    p -= lr*b, or with Nesterov p -= lr*(g + mu*b)
 *   velocity form:   v = mu*v + lr*(1-dampening)*g;  p -= v, or with Nesterov p -= mu*v + lr*g
 */
#ifndef FUSEDOPT_ALGORITHM_SGD_TYPES
#define FUSEDOPT_ALGORITHM_SGD_TYPES
#include "../runtime/algorithm.h"

#define FO_INPUTS_sgd(X) X(lr) X(momentum) X(dampening) X(weight_decay) X(nesterov) X(maximize) X(lr_in_velocity)
/* momentum_started: the buffer has taken a step (PyTorch's form starts it at g) */
#define FO_COUNTERS_sgd(X) X(step) X(momentum_started)
#define FO_DERIVED_sgd(X) X(first_step)
#define FO_SLOTS_sgd(X) X(momentum_buffer)
#define FO_N_REDUCED_sgd 0
enum { FO_SGD_MOMENTUM_BUFFER };
enum { FO_SGD_PLAIN, FO_SGD_TORCH_FIRST, FO_SGD_TORCH, FO_SGD_VELOCITY };

FO_ALGORITHM_TYPES(sgd);

static unsigned fo_sgd_slots_needed(const fo_sgd_hyper *h)
{
    return h->momentum != 0.0 ? 1u << FO_SGD_MOMENTUM_BUFFER : 0u;
}

static void fo_sgd_prepare(fo_sgd_hyper *h)
{
    h->step += 1.0;
    h->first_step = h->momentum != 0.0 && h->momentum_started == 0.0;
    if (h->momentum != 0.0) h->momentum_started = 1.0;
}

FO_ALGORITHM_WRAPPERS(sgd);
#endif

#ifdef FO_INSTANTIATING
FO_ALWAYS_INLINE void FO_INSTANCE(fo_loop)(
    FO_PARAM_ARG(p), const FO_G *FO_RESTRICT g, FO_SLOT_ARG(buf), int64_t first, int64_t n,
    const fo_sgd_hyper *h, uint32_t key, const int l2_decay, const int form, const int nesterov,
    const int master, const int sr)
{
    const FO_C grad_multiplier = (FO_C)(h->maximize != 0.0 ? -h->grad_multiplier : h->grad_multiplier);
    const FO_C weight_decay = (FO_C)h->weight_decay;
    const FO_C lr = (FO_C)h->lr;
    const FO_C momentum = (FO_C)h->momentum;
    const FO_C one_minus_dampening = (FO_C)(1.0 - h->dampening);
    const FO_C lr_times_one_minus_dampening = (FO_C)(h->lr * (1.0 - h->dampening));
    const int uses_buffer = form != FO_SGD_PLAIN;
    int64_t c0, j;
    (void)key;
    (void)uses_buffer;
    for (c0 = 0; c0 < n; c0 += FO_STATE_CHUNK(n)) {
        const int64_t len = n - c0 < FO_STATE_CHUNK(n) ? n - c0 : FO_STATE_CHUNK(n);
        FO_SLOT_OPEN(buf, FO_SGD_MOMENTUM_BUFFER, signed, uses_buffer, c0);
        FO_PRAGMA_SIMD
        for (j = 0; j < len; j++) {
            const int64_t k = c0 + j;
            FO_C grad = FO_LOAD_G(g, k) * grad_multiplier;
            FO_C param = FO_LOAD_P(p, k);
            FO_C b;
            FO_ELEMENT_RANDOM(r, first + k);
            if (l2_decay) grad = grad + weight_decay * param;
            if (form == FO_SGD_PLAIN) {
                FO_STORE_P(p, k, param - lr * grad);
            } else if (form == FO_SGD_VELOCITY) {
                b = momentum * FO_LOAD_S(buf, k) + lr_times_one_minus_dampening * grad;
                FO_STORE_S(buf, k, b);
                FO_STORE_P(p, k, nesterov ? param - (momentum * b + lr * grad) : param - b);
            } else {
                b = (form == FO_SGD_TORCH_FIRST) ? grad : momentum * FO_LOAD_S(buf, k) + one_minus_dampening * grad;
                FO_STORE_S(buf, k, b);
                FO_STORE_P(p, k, nesterov ? param - lr * (grad + momentum * b) : param - lr * b);
            }
        }
        FO_SLOT_CLOSE(buf, signed, uses_buffer, c0, len);
    }
}

#define FO_SGD_LOOP(l2, form, nesterov, master, sr)                                         \
    FO_INSTANCE(fo_loop)(FO_PARAM_PASS(p), g, FO_SLOT_PASS(buf), begin, end - begin, h, key, \
                         l2, form, nesterov, master, sr)
/* the four (weight decay, Nesterov) specialisations of one momentum form */
#define FO_SGD_SPECIALISE(form, master, sr)                                                 \
    do {                                                                                   \
        if (l2 && nesterov) FO_SGD_LOOP(1, form, 1, master, sr);                           \
        else if (l2) FO_SGD_LOOP(1, form, 0, master, sr);                                  \
        else if (nesterov) FO_SGD_LOOP(0, form, 1, master, sr);                            \
        else FO_SGD_LOOP(0, form, 0, master, sr);                                          \
    } while (0)
#define FO_SGD_OPTIONS(master, sr)                                                          \
    do {                                                                                   \
        if (h->momentum == 0.0) {                                                          \
            if (l2) FO_SGD_LOOP(1, FO_SGD_PLAIN, 0, master, sr);                           \
            else FO_SGD_LOOP(0, FO_SGD_PLAIN, 0, master, sr);                              \
        } else if (h->lr_in_velocity != 0.0) {                                             \
            FO_SGD_SPECIALISE(FO_SGD_VELOCITY, master, sr);                                \
        } else if (h->first_step != 0.0) {                                                 \
            FO_SGD_SPECIALISE(FO_SGD_TORCH_FIRST, master, sr);                             \
        } else {                                                                           \
            FO_SGD_SPECIALISE(FO_SGD_TORCH, master, sr);                                   \
        }                                                                                  \
    } while (0)

static void FO_INSTANCE(fo_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                  const void *hyper)
{
    const fo_sgd_hyper *h = (const fo_sgd_hyper *)hyper + t->hyper[i];
    FO_PARAM_GET(p);
    const FO_G *g = (const FO_G *)t->grad[i] + begin;
    FO_SLOT_GET(buf, FO_SGD_MOMENTUM_BUFFER);
    const int l2 = h->weight_decay != 0.0;
    const int nesterov = h->nesterov != 0.0;
    FO_ROUNDING_SETUP(h);
    FO_ROUNDING_VARIANTS(FO_SGD_OPTIONS);
}
#undef FO_SGD_LOOP
#undef FO_SGD_SPECIALISE
#undef FO_SGD_OPTIONS
#endif
