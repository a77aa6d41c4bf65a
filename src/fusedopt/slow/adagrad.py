"""Adagrad in NumPy: the twin of csrc/algorithms/adagrad.h and :func:`fusedopt.functional.adagrad_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def adagrad_(param, grad, state_sum, *, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
             maximize=False, grad_scale=1.0):
    r"""One Adagrad step in place, in NumPy (``torch.optim.Adagrad``, dense gradients).

    ``g = g/s (negated if maximize); [g += wd*p]; sum = sum + g*g;
    p += (-clr * g) / (sqrt(sum) + eps)`` with ``clr = lr / (1 + (step-1)*lr_decay)``.
    ``state_sum`` starts at ``initial_accumulator_value``.
    Arguments as :func:`fusedopt.functional.adagrad_`.
    """
    clr = lr / (1.0 + (step - 1) * lr_decay)
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, s in zip(_as_list(param), _as_list(grad), _as_list(state_sum)):
        t = p.dtype.type
        g = g * t(multiplier)
        if weight_decay != 0:
            g = g + t(weight_decay) * p
        s[...] = s + g * g
        std = np.sqrt(s) + t(eps)
        p += (t(-clr) * g) / std
