"""SGD with momentum in NumPy: the twin of csrc/algorithms/sgd.h and :func:`fusedopt.functional.sgd_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def sgd_(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
         weight_decay=0.0, maximize=False, lr_in_velocity=False, first_step=False, grad_scale=1.0):
    r"""One SGD step in place, in NumPy.

    ``g = g/s (negated if maximize); [g += wd*p]``; no momentum: ``p -= lr*g``;
    PyTorch's form: ``b = mu*b + (1-dampening)*g`` (``b = g`` at the first step),
    ``p -= lr*b`` or (Nesterov) ``p -= lr*(g + mu*b)``; velocity form:
    ``v = mu*v + lr*(1-dampening)*g``, ``p -= v`` or (Nesterov) ``p -= mu*v + lr*g``.
    Arguments as :func:`fusedopt.functional.sgd_`.
    """
    params, grads = _as_list(param), _as_list(grad)
    buffers = _as_list(momentum_buffer) if momentum_buffer is not None else [None] * len(params)
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, b in zip(params, grads, buffers):
        t = p.dtype.type
        g = g * t(multiplier)
        if weight_decay:
            g = g + t(weight_decay) * p
        if momentum == 0:
            p -= t(lr) * g
        elif lr_in_velocity:
            b[...] = t(momentum) * b + t(lr * (1.0 - dampening)) * g
            p -= (t(momentum) * b + t(lr) * g) if nesterov else b
        else:
            b[...] = g if first_step else t(momentum) * b + t(1.0 - dampening) * g
            p -= t(lr) * (g + t(momentum) * b) if nesterov else t(lr) * b
