"""RMSprop in NumPy: the twin of csrc/algorithms/rmsprop.h and :func:`fusedopt.functional.rmsprop_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def _lerp(a, b, w):
    # torch's CPU lerp with a scalar weight w (already in the arrays' dtype)
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (type(w)(1.0) - w)


def rmsprop_(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, lr, alpha, eps,
             weight_decay=0.0, momentum=0.0, centered=False, maximize=False, grad_scale=1.0):
    r"""One RMSprop step in place, in NumPy (``torch.optim.RMSprop``).

    ``g = g/s (negated if maximize); [g += wd*p]; v = alpha*v + (1-alpha)*g*g;
    avg = sqrt(v) + eps`` or (centered) ``ga = lerp(ga, g, 1-alpha), avg = sqrt(v - ga*ga) + eps``;
    ``p += -lr * g / avg`` or (momentum > 0) ``b = momentum*b + g/avg, p += -lr * b``.
    ``momentum_buffer`` is needed when ``momentum > 0``, ``grad_avg`` when ``centered``.
    Arguments as :func:`fusedopt.functional.rmsprop_`.
    """
    params, grads, square_avgs = _as_list(param), _as_list(grad), _as_list(square_avg)
    buffers = _as_list(momentum_buffer) if momentum_buffer is not None else [None] * len(params)
    grad_avgs = _as_list(grad_avg) if grad_avg is not None else [None] * len(params)
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    for p, g, v, b, ga in zip(params, grads, square_avgs, buffers, grad_avgs):
        t = p.dtype.type
        g = g * t(multiplier)
        if weight_decay != 0:
            g = g + t(weight_decay) * p
        v[...] = v * t(alpha) + (t(1.0 - alpha) * g) * g
        if centered:
            ga[...] = _lerp(ga, g, t(1.0 - alpha))
            avg = np.sqrt(v - ga * ga) + t(eps)
        else:
            avg = np.sqrt(v) + t(eps)
        if momentum > 0:
            b[...] = b * t(momentum) + g / avg
            p += t(-lr) * b
        else:
            p += (t(-lr) * g) / avg
