"""RAdam in NumPy: the twin of csrc/algorithms/radam.h and :func:`fusedopt.functional.radam_`."""
import math

import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def _lerp(a, b, w):
    # torch's CPU lerp with a scalar weight w (already in the arrays' dtype)
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (type(w)(1.0) - w)


def radam_(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
           decoupled_weight_decay=False, maximize=False, grad_scale=1.0):
    r"""One RAdam step in place, in NumPy (``torch.optim.RAdam``).

    ``g = g/s (negated if maximize); [g += wd*p | p *= 1 - lr*wd]; m = lerp(m, g, 1-b1);
    v = b2*v + (1-b2)*g*g``; with ``bck = 1 - bk^step``, ``rho_inf = 2/(1-b2) - 1`` and
    ``rho_t = rho_inf - 2*step*b2^step / bc2``: if ``rho_t > 5``,
    ``p -= (((m/bc1) * lr) * (sqrt(bc2) / (sqrt(v) + eps))) * rect`` with
    ``rect = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))``,
    else ``p -= (m/bc1) * lr``.
    Arguments as :func:`fusedopt.functional.radam_`.
    """
    bias_correction1, bias_correction2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2 ** step) / bias_correction2
    rectified = rho_t > 5.0
    if rectified:
        # math.sqrt (correctly rounded, as the kernel's sqrt) where torch writes ** 0.5 (pow,
        # which differs by an ulp for about 0.1% of doubles)
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                         / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, m, v in zip(_as_list(param), _as_list(grad), _as_list(exp_avg), _as_list(exp_avg_sq)):
        t = p.dtype.type
        g = g * t(multiplier)
        if weight_decay != 0 and decoupled_weight_decay:
            p *= t(1.0 - lr * weight_decay)
        elif weight_decay != 0:
            g = g + t(weight_decay) * p
        m[...] = _lerp(m, g, t(1.0 - beta1))
        v[...] = v * t(beta2) + (t(1.0 - beta2) * g) * g
        if rectified:
            adaptive = t(math.sqrt(bias_correction2)) / (np.sqrt(v) + t(eps))
            p -= (((m / t(bias_correction1)) * t(lr)) * adaptive) * t(rect)
        else:
            p -= (m / t(bias_correction1)) * t(lr)
