"""Lion in NumPy: the twin of csrc/algorithms/lion.h and :func:`fusedopt.functional.lion_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def lion_(param, grad, exp_avg, *, lr, beta1, beta2, weight_decay=0.0, maximize=False,
          grad_scale=1.0):
    r"""One Lion step in place, in NumPy.

    ``g = g/s (negated if maximize); c = b1*m + (1-b1)*g; p -= lr * (sign(c) + wd*p);
    m = b2*m + (1-b2)*g`` (``sign`` keeps NaN; the decay is decoupled, as AdamW's).
    Lion is from Chen et al., "Symbolic Discovery of Optimization Algorithms" (2023,
    arXiv:2302.06675), as optax's ``lion``.
    Arguments as :func:`fusedopt.functional.lion_`.
    """
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, m in zip(_as_list(param), _as_list(grad), _as_list(exp_avg)):
        t = p.dtype.type
        g = g * t(multiplier)
        c = t(beta1) * m + t(1.0 - beta1) * g
        if weight_decay != 0:
            p -= t(lr) * (np.sign(c) + t(weight_decay) * p)
        else:
            p -= t(lr) * np.sign(c)
        m[...] = t(beta2) * m + t(1.0 - beta2) * g
