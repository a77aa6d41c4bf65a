"""Adafactor in NumPy: the twin of csrc/algorithms/adafactor.h."""
import numpy as np

from .schedule_free import lerp_


def adafactor_(param, grad, row_var, col_var, variance, *, step, lr, beta2_decay=-0.8, eps=(None, 1e-3),
               d=1.0, weight_decay=0.0, maximize=False, grad_scale=1.0):
    r"""One Adafactor step of one array in place, in NumPy, as torch.optim.Adafactor.

    For ``param.ndim >= 2``, ``row_var`` (shape ``(..., R, 1)``) and ``col_var``
    (``(..., 1, C)``) hold the factored second moment and ``variance`` is None;
    otherwise ``variance`` (param's shape) holds it and the others are None.
    ``step`` is the array's step count including this one (1 at the first).
    Computed in param's dtype, the sums and norms in float64.  An empty array
    is left as it is.
    """
    t = param.dtype.type
    if param.size == 0:
        return
    eps1 = np.finfo(param.dtype).eps if eps[0] is None else eps[0]
    g = grad * t(1.0 / grad_scale)
    if maximize:
        g = -g
    one_minus_beta2 = float(step) ** beta2_decay
    rho = min(lr, 1.0 / float(step) ** 0.5)
    n = param.size
    alpha = max(eps[1], np.sqrt(np.sum(np.square(param, dtype=np.float64))) / n ** 0.5) * rho
    if weight_decay != 0.0:
        param *= t(1.0 - lr * weight_decay)
    if param.ndim >= 2:
        squares = np.square(g.astype(np.float64))
        lerp_(row_var, (np.sum(squares, axis=-1, keepdims=True) / g.shape[-1]).astype(param.dtype),
              one_minus_beta2)
        lerp_(col_var, (np.sum(squares, axis=-2, keepdims=True) / g.shape[-2]).astype(param.dtype),
              one_minus_beta2)
        row_mean = np.mean(row_var.astype(np.float64), axis=-2, keepdims=True).astype(param.dtype)
        estimate = (row_var * col_var) / np.maximum(row_mean, t(eps1))   # np.maximum keeps NaN
    else:
        lerp_(variance, g * g, one_minus_beta2)
        estimate = variance.copy()
    floor = t(eps1 * eps1)
    clamped = np.maximum(estimate, floor)
    update = (t(1.0) / np.sqrt(clamped)) * g
    denom = max(1.0, np.sqrt(np.sum(np.square(update, dtype=np.float64))) / (n ** 0.5 * d))
    param += t(-alpha / denom) * update
