"""Adamax in NumPy: the twin of csrc/algorithms/adamax.h and :func:`fusedopt.functional.adamax_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def _lerp(a, b, w):
    # torch's CPU lerp with a scalar weight w (already in the arrays' dtype)
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (type(w)(1.0) - w)


def adamax_(param, grad, exp_avg, exp_inf, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
            maximize=False, grad_scale=1.0):
    r"""One Adamax step in place, in NumPy (``torch.optim.Adamax``).

    ``g = g/s (negated if maximize); [g += wd*p]; m = lerp(m, g, 1-b1);
    u = max(b2*u, |g| + eps)`` (NaN-propagating); ``p += (-lr/bc1) * m / u``
    with ``bc1 = 1 - b1^step``.
    Arguments as :func:`fusedopt.functional.adamax_`.
    """
    clr = lr / (1.0 - beta1 ** step)
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, m, u in zip(_as_list(param), _as_list(grad), _as_list(exp_avg), _as_list(exp_inf)):
        t = p.dtype.type
        g = g * t(multiplier)
        if weight_decay != 0:
            g = g + t(weight_decay) * p
        m[...] = _lerp(m, g, t(1.0 - beta1))
        np.maximum(u * t(beta2), np.abs(g) + t(eps), out=u)
        p += (t(-clr) * m) / u
