"""Adadelta in NumPy: the twin of csrc/algorithms/adadelta.h and :func:`fusedopt.functional.adadelta_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def adadelta_(param, grad, square_avg, acc_delta, *, lr, rho, eps, weight_decay=0.0,
              maximize=False, grad_scale=1.0):
    r"""One Adadelta step in place, in NumPy (``torch.optim.Adadelta``).

    ``g = g/s (negated if maximize); [g += wd*p]; v = rho*v + (1-rho)*g*g;
    delta = (sqrt(u + eps) / sqrt(v + eps)) * g; u = rho*u + (1-rho)*delta*delta;
    p += -lr * delta``.
    Arguments as :func:`fusedopt.functional.adadelta_`.
    """
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, v, u in zip(_as_list(param), _as_list(grad), _as_list(square_avg), _as_list(acc_delta)):
        t = p.dtype.type
        g = g * t(multiplier)
        if weight_decay != 0:
            g = g + t(weight_decay) * p
        v[...] = v * t(rho) + (t(1.0 - rho) * g) * g
        std = np.sqrt(v + t(eps))
        delta = (np.sqrt(u + t(eps)) / std) * g
        u[...] = u * t(rho) + (t(1.0 - rho) * delta) * delta
        p += t(-lr) * delta
