"""Adam / AdamW in NumPy: the twin of csrc/algorithms/adam.h and :func:`fusedopt.functional.adam_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def adam_(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
          decoupled=False, amsgrad_max=None, maximize=False, grad_scale=1.0):
    r"""One Adam (or AdamW) step in place, in NumPy.

    ``g = g/s (negated if maximize); [g += wd*p | p *= 1 - lr*wd];
    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; [vmax = max(vmax, v); v = vmax];
    p -= (lr/bc1) * m / (sqrt(v) * (1/sqrt(bc2)) + eps)`` with ``bck = 1 - bk^step``.
    Arguments as :func:`fusedopt.functional.adam_`.
    """
    params, grads = _as_list(param), _as_list(grad)
    exp_avgs, exp_avg_sqs = _as_list(exp_avg), _as_list(exp_avg_sq)
    maxes = _as_list(amsgrad_max) if amsgrad_max is not None else [None] * len(params)
    step_size = lr / (1.0 - beta1 ** step)
    inv_bias_correction2_sqrt = 1.0 / np.sqrt(1.0 - beta2 ** step)
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, m, v, vmax in zip(params, grads, exp_avgs, exp_avg_sqs, maxes):
        t = p.dtype.type   # every constant rounded to the array's dtype once, as the kernel does
        g = g * t(multiplier)
        if weight_decay and decoupled:
            p *= t(1.0 - lr * weight_decay)
        elif weight_decay:
            g = g + t(weight_decay) * p
        m[...] = t(beta1) * m + t(1.0 - beta1) * g
        v[...] = t(beta2) * v + t(1.0 - beta2) * (g * g)
        v_used = v
        if vmax is not None:
            np.maximum(vmax, v, out=vmax)
            v_used = vmax
        denom = np.sqrt(v_used) * t(inv_bias_correction2_sqrt) + t(eps)
        p -= t(step_size) * m / denom
