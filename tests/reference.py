"""Plain float64 NumPy twins of the kernels: the independent references of the tests.

Written from the update rules in the docs, one step at a time, with no attempt
at speed.  Each takes and returns float64 arrays.
"""
import numpy as np


def adam_step(p, g, m, v, vmax, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
              decoupled=False, maximize=False, grad_scale=1.0):
    """One Adam/AdamW step; returns new (p, m, v, vmax)."""
    g = g * grad_scale
    if maximize:
        g = -g
    if weight_decay:
        if decoupled:
            p = p * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    if vmax is not None:
        vmax = np.maximum(vmax, v)
        v_used = vmax
    else:
        v_used = v
    m_hat = m / (1.0 - beta1 ** step)
    v_hat = v_used / (1.0 - beta2 ** step)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v, vmax


def sgd_step(p, g, buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
             maximize=False, lr_in_velocity=False, first_step=False, grad_scale=1.0):
    """One SGD step; returns new (p, buf)."""
    g = g * grad_scale
    if maximize:
        g = -g
    if weight_decay:
        g = g + weight_decay * p
    if momentum == 0:
        return p - lr * g, buf
    if lr_in_velocity:
        buf = momentum * buf + lr * (1.0 - dampening) * g
        step = momentum * buf + lr * g if nesterov else buf
        return p - step, buf
    buf = g.copy() if first_step else momentum * buf + (1.0 - dampening) * g
    direction = g + momentum * buf if nesterov else buf
    return p - lr * direction, buf
