/*
 * kernels_loops.h: the element loops, written once.
 *
 * Included by kernels_isa.h once per dtype with
 *   FO_T          element type (float or double)
 *   FO_SQRT       its square root
 *   FO_NAME(x)    x with the dtype and ISA suffix pasted on
 * Each algorithm is one always-inline loop whose option flags are compile-time
 * constants at its call sites, so the compiler emits one branch-free vector loop
 * per option set.  All arithmetic is in FO_T; hyperparameters are rounded to FO_T
 * once per call.  Built with -ffp-contract=off, every ISA gives the same bits.
 */

/* g = s*g; [g += wd*p | p *= 1 - lr*wd]; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
 * [vmax = max(vmax, v); v = vmax]; p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps) */
FO_ALWAYS_INLINE void FO_NAME(adam_loop)(
    FO_T *FO_RESTRICT p, const FO_T *FO_RESTRICT g, FO_T *FO_RESTRICT m, FO_T *FO_RESTRICT v,
    FO_T *FO_RESTRICT vmax, int64_t n, const fo_adam_group *h,
    const int l2_decay, const int decoupled_decay, const int amsgrad)
{
    const FO_T grad_multiplier = (FO_T)(h->maximize ? -h->grad_multiplier : h->grad_multiplier);
    const FO_T beta1 = (FO_T)h->beta1, one_minus_beta1 = (FO_T)(1.0 - h->beta1);
    const FO_T beta2 = (FO_T)h->beta2, one_minus_beta2 = (FO_T)(1.0 - h->beta2);
    const FO_T weight_decay = (FO_T)h->weight_decay;
    const FO_T param_decay = (FO_T)(1.0 - h->lr * h->weight_decay);
    const FO_T step_size = (FO_T)h->step_size;
    const FO_T inv_bias_correction2_sqrt = (FO_T)h->inv_bias_correction2_sqrt;
    const FO_T eps = (FO_T)h->eps;
    int64_t k;
    FO_PRAGMA_SIMD
    for (k = 0; k < n; k++) {
        FO_T grad = g[k] * grad_multiplier;
        FO_T param = p[k];
        FO_T exp_avg, exp_avg_sq, denom;
        if (decoupled_decay) param = param * param_decay;
        if (l2_decay) grad = grad + weight_decay * param;
        exp_avg = beta1 * m[k] + one_minus_beta1 * grad;
        exp_avg_sq = beta2 * v[k] + one_minus_beta2 * (grad * grad);
        m[k] = exp_avg;
        v[k] = exp_avg_sq;
        if (amsgrad) {
            exp_avg_sq = vmax[k] > exp_avg_sq ? vmax[k] : exp_avg_sq;
            vmax[k] = exp_avg_sq;
        }
        denom = FO_SQRT(exp_avg_sq) * inv_bias_correction2_sqrt + eps;
        p[k] = param - step_size * exp_avg / denom;
    }
}

static void FO_NAME(adam_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                                const void *groups)
{
    const fo_adam_group *h = (const fo_adam_group *)groups + t->group[i];
    FO_T *p = (FO_T *)t->param[i] + begin;
    const FO_T *g = (const FO_T *)t->grad[i] + begin;
    FO_T *m = (FO_T *)t->state[FO_ADAM_EXP_AVG][i] + begin;
    FO_T *v = (FO_T *)t->state[FO_ADAM_EXP_AVG_SQ][i] + begin;
    FO_T *vmax = h->amsgrad ? (FO_T *)t->state[FO_ADAM_MAX_EXP_AVG_SQ][i] + begin : NULL;
    const int64_t n = end - begin;
    const int l2 = h->weight_decay != 0.0 && !h->decoupled;
    const int decoupled = h->weight_decay != 0.0 && h->decoupled;
    /* one specialised loop per option set (l2, decoupled, amsgrad) */
    if (h->amsgrad) {
        if (l2) FO_NAME(adam_loop)(p, g, m, v, vmax, n, h, 1, 0, 1);
        else if (decoupled) FO_NAME(adam_loop)(p, g, m, v, vmax, n, h, 0, 1, 1);
        else FO_NAME(adam_loop)(p, g, m, v, vmax, n, h, 0, 0, 1);
    } else {
        if (l2) FO_NAME(adam_loop)(p, g, m, v, vmax, n, h, 1, 0, 0);
        else if (decoupled) FO_NAME(adam_loop)(p, g, m, v, vmax, n, h, 0, 1, 0);
        else FO_NAME(adam_loop)(p, g, m, v, vmax, n, h, 0, 0, 0);
    }
}

/* g = s*g; [g += wd*p];
 *   no momentum:      p -= lr*g
 *   PyTorch's form:   b = mu*b + (1-dampening)*g (b = g at the first step);
 *                     p -= lr*b, or with Nesterov p -= lr*(g + mu*b)
 *   velocity form:    v = mu*v + lr*(1-dampening)*g;  p -= v, or with Nesterov p -= mu*v + lr*g */
FO_ALWAYS_INLINE void FO_NAME(sgd_loop)(
    FO_T *FO_RESTRICT p, const FO_T *FO_RESTRICT g, FO_T *FO_RESTRICT buf, int64_t n,
    const fo_sgd_group *h, const int l2_decay, const int form, const int nesterov)
{
    const FO_T grad_multiplier = (FO_T)(h->maximize ? -h->grad_multiplier : h->grad_multiplier);
    const FO_T weight_decay = (FO_T)h->weight_decay;
    const FO_T lr = (FO_T)h->lr;
    const FO_T momentum = (FO_T)h->momentum;
    const FO_T one_minus_dampening = (FO_T)(1.0 - h->dampening);
    const FO_T lr_times_one_minus_dampening = (FO_T)(h->lr * (1.0 - h->dampening));
    int64_t k;
    FO_PRAGMA_SIMD
    for (k = 0; k < n; k++) {
        FO_T grad = g[k] * grad_multiplier;
        FO_T param = p[k];
        FO_T b;
        if (l2_decay) grad = grad + weight_decay * param;
        if (form == FO_SGD_PLAIN) {
            p[k] = param - lr * grad;
        } else if (form == FO_SGD_VELOCITY) {
            b = momentum * buf[k] + lr_times_one_minus_dampening * grad;
            buf[k] = b;
            p[k] = nesterov ? param - (momentum * b + lr * grad) : param - b;
        } else {
            b = (form == FO_SGD_TORCH_FIRST) ? grad : momentum * buf[k] + one_minus_dampening * grad;
            buf[k] = b;
            p[k] = nesterov ? param - lr * (grad + momentum * b) : param - lr * b;
        }
    }
}

/* the four (weight decay, Nesterov) specialisations of one momentum form */
#define FO_SGD_SPECIALISE(form)                                                         \
    do {                                                                                \
        if (l2 && h->nesterov) FO_NAME(sgd_loop)(p, g, buf, n, h, 1, form, 1);          \
        else if (l2) FO_NAME(sgd_loop)(p, g, buf, n, h, 1, form, 0);                    \
        else if (h->nesterov) FO_NAME(sgd_loop)(p, g, buf, n, h, 0, form, 1);           \
        else FO_NAME(sgd_loop)(p, g, buf, n, h, 0, form, 0);                            \
    } while (0)

static void FO_NAME(sgd_range)(const fo_tensor_list *t, int64_t i, int64_t begin, int64_t end,
                               const void *groups)
{
    const fo_sgd_group *h = (const fo_sgd_group *)groups + t->group[i];
    FO_T *p = (FO_T *)t->param[i] + begin;
    const FO_T *g = (const FO_T *)t->grad[i] + begin;
    FO_T *buf = h->momentum != 0.0 ? (FO_T *)t->state[FO_SGD_MOMENTUM_BUFFER][i] + begin : NULL;
    const int64_t n = end - begin;
    const int l2 = h->weight_decay != 0.0;
    if (h->momentum == 0.0) {
        if (l2) FO_NAME(sgd_loop)(p, g, buf, n, h, 1, FO_SGD_PLAIN, 0);
        else FO_NAME(sgd_loop)(p, g, buf, n, h, 0, FO_SGD_PLAIN, 0);
    } else if (h->lr_in_velocity) {
        FO_SGD_SPECIALISE(FO_SGD_VELOCITY);
    } else if (h->first_step) {
        FO_SGD_SPECIALISE(FO_SGD_TORCH_FIRST);
    } else {
        FO_SGD_SPECIALISE(FO_SGD_TORCH);
    }
}
#undef FO_SGD_SPECIALISE

/* acc[j] += x*x and probe[j] += x*0 over lanes j = k mod FO_STAT_LANES, in double.
 * probe stays +-0 while every x is finite and becomes NaN at the first NaN or Inf,
 * so finiteness costs no branch.  Lane order is fixed: the result depends only on
 * the data, not on the ISA or on how blocks are shared among threads. */
static void FO_NAME(grad_stats_range)(const void *data, int64_t n, double *FO_RESTRICT acc,
                                      double *FO_RESTRICT probe)
{
    const FO_T *x = (const FO_T *)data;
    int64_t k = 0;
    int j;
    for (; k + FO_STAT_LANES <= n; k += FO_STAT_LANES) {
        for (j = 0; j < FO_STAT_LANES; j++) {
            const double value = (double)x[k + j];
            acc[j] += value * value;
            probe[j] += value * 0.0;
        }
    }
    for (j = 0; k + j < n; j++) {
        const double value = (double)x[k + j];
        acc[j] += value * value;
        probe[j] += value * 0.0;
    }
}
