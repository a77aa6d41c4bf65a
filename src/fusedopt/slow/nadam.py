"""NAdam in NumPy: the twin of csrc/algorithms/nadam.h and :func:`fusedopt.functional.nadam_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def _lerp(a, b, w):
    # torch's CPU lerp with a scalar weight w (already in the arrays' dtype)
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (type(w)(1.0) - w)


def nadam_(param, grad, exp_avg, exp_avg_sq, *, step, mu_product, lr, beta1, beta2, eps,
           weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
           grad_scale=1.0):
    r"""One NAdam step in place, in NumPy (``torch.optim.NAdam``); returns the new ``mu_product``.

    ``mu_t = b1 * (1 - 0.5 * 0.96^(t*psi))`` (``psi = momentum_decay``),
    ``mu_product *= mu_step``; ``g = g/s (negated if maximize); [g += wd*p | p *= 1 - lr*wd];
    m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g; d = sqrt(v/bc2) + eps;
    p += c1 * g / d; p += c2 * m / d`` (two roundings of ``p``) with ``bc2 = 1 - b2^step``,
    ``c1 = -lr*(1-mu_step) / (1-mu_product)``,
    ``c2 = -lr*mu_{step+1} / (1 - mu_product*mu_{step+1})``.
    ``mu_product`` is the product before this step (1.0 before the first); the scalars are
    Python floats (double).  Arguments as :func:`fusedopt.functional.nadam_`.
    """
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = float(mu_product) * mu
    bias_correction2 = 1.0 - beta2 ** step
    c1 = (-lr * (1.0 - mu)) / (1.0 - mu_product)
    c2 = (-lr * mu_next) / (1.0 - mu_product * mu_next)
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
        denom = np.sqrt(v / t(bias_correction2)) + t(eps)
        p += (t(c1) * g) / denom
        p += (t(c2) * m) / denom
    return mu_product
