"""Schedule-free AdamW and SGD in NumPy: the twin of csrc/algorithms/schedule_free.h.

Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled"
(NeurIPS 2024), as the ``schedulefree`` package computes it.
"""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def lerp_(a, b, weight):
    """``a = lerp(a, b, weight)`` in place, as torch's CPU lerp rounds it (in a's dtype)."""
    t = a.dtype.type
    w = t(weight)
    if abs(w) < 0.5:
        a[...] = a + w * (b - a)
    else:
        a[...] = b - (b - a) * (t(1.0) - w)


def schedule_free_(param, grad, z, exp_avg_sq=None, *, k, weight_sum, lr_max, lr, beta1, beta2=0.999,
                   eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0, grad_scale=1.0,
                   first_step=False):
    r"""One schedule-free step in place: AdamW with ``exp_avg_sq``, SGD without it.

    ``k``, ``weight_sum`` and ``lr_max`` are the group's counters before the step
    (0, 0.0, 0.0 at first); returns their new values ``(k, weight_sum, lr_max)``.
    ``first_step``: z starts as the parameter (the arrays' first step).

    ``lr_t = lr * min(1, (k+1)/warmup); lr_max = max(lr_max, lr_t); w = (k+1)^r lr_max^power;
    W += w; c = w/W; [v = v*b2 + ((1-b2)*g)*g; g = g / (sqrt(v/(1 - b2^(k+1))) + eps)];
    [g += wd*y]; y = lerp(y, z, c); y += lr_t*(b1*(1-c) - 1)*g; z -= lr_t*g``.
    """
    k1 = k + 1.0
    scheduled_lr = lr * (k1 / warmup_steps if k < warmup_steps else 1.0)
    bias_correction2 = 1.0 - beta2 ** k1
    lr_max = max(scheduled_lr, lr_max)
    weight = k1 ** r * lr_max ** weight_lr_power
    weight_sum = weight_sum + weight
    ckp1 = weight / weight_sum if weight_sum != 0.0 else 0.0
    y_coefficient = scheduled_lr * (beta1 * (1.0 - ckp1) - 1.0)
    squares = _as_list(exp_avg_sq) if exp_avg_sq is not None else None
    for n, (y, g, zs) in enumerate(zip(_as_list(param), _as_list(grad), _as_list(z))):
        t = y.dtype.type
        g = g * t(1.0 / grad_scale)
        if first_step:
            zs[...] = y
        if squares is not None:
            v = squares[n]
            v[...] = v * t(beta2) + (t(1.0 - beta2) * g) * g
            g = g / (np.sqrt(v / t(bias_correction2)) + t(eps))
        if weight_decay != 0.0:
            g = g + t(weight_decay) * y
        lerp_(y, zs, ckp1)
        y[...] = y + t(y_coefficient) * g
        zs[...] = zs - t(scheduled_lr) * g
    return k1, weight_sum, lr_max


def to_eval_(param, z, beta1):
    """The parameter from y to x (``p = lerp(p, z, 1 - 1/beta1)``), in place."""
    lerp_(param, z, 1.0 - 1.0 / beta1)


def to_train_(param, z, beta1):
    """The parameter from x back to y (``p = lerp(p, z, 1 - beta1)``), in place."""
    lerp_(param, z, 1.0 - beta1)
