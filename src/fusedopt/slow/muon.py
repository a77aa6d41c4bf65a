"""Muon in NumPy: the twin of csrc/algorithms/muon.h with fusedopt.Muon's orthogonalisation."""
import math

import numpy as np

from .schedule_free import lerp_

#: torch.optim.Muon's quintic Newton-Schulz coefficients, steps and eps
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


def newton_schulz(matrix, coefficients=NS_COEFFICIENTS, steps=NS_STEPS, eps=EPS):
    """The quintic Newton-Schulz orthogonalisation of a 2-D array, in its dtype:
    X = M / max(||M||_F, eps) (transposed when M has more rows than columns), then
    `steps` times A = X X^T;  B = b A + c A A;  X = a X + B X."""
    a, b, c = coefficients
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if tall else matrix
    x = x / max(np.linalg.norm(x), x.dtype.type(eps))
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def adjusted_lr(lr, adjust_lr_fn, shape):
    """torch.optim.Muon's rate for a matrix of `shape` (rows A, columns B)."""
    rows, cols = shape
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


def muon_(param, grad, momentum_buffer, *, lr, weight_decay=0.1, momentum=0.95, nesterov=True,
          ns_coefficients=NS_COEFFICIENTS, eps=EPS, ns_steps=NS_STEPS, adjust_lr_fn=None, grad_scale=1.0):
    r"""One Muon step of one 2-D array in place, in NumPy.

    ``g = g/s; buf = lerp(buf, g, 1-mu); u = lerp(g, buf, mu) if nesterov else buf;
    O = NS(u); p = p*(1 - lr*wd); p -= adjusted_lr * O``, in param's dtype (torch runs
    the orthogonalisation in bfloat16).
    """
    t = param.dtype.type
    g = grad * t(1.0 / grad_scale)
    lerp_(momentum_buffer, g, 1.0 - momentum)
    update = g.copy() if nesterov else momentum_buffer.copy()
    if nesterov:
        lerp_(update, momentum_buffer, momentum)
    ortho = newton_schulz(update, ns_coefficients, ns_steps, eps)
    param *= t(1.0 - lr * weight_decay)
    param += t(-adjusted_lr(lr, adjust_lr_fn, param.shape)) * ortho
