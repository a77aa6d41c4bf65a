"""LAMB in NumPy: the twin of csrc/algorithms/lamb.h and :func:`fusedopt.functional.lamb_`."""
import numpy as np


def _as_list(value):
    return [value] if isinstance(value, np.ndarray) else list(value)


def lamb_(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
          grad_scale=1.0):
    r"""One LAMB step in place, in NumPy.

    ``g = g/s; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p; p -= lr * (r * trust)`` with
    ``trust = ||p|| / ||r||`` per array (1 where either is 0), the norms in float64.
    Arguments as :func:`fusedopt.functional.lamb_`.
    """
    bias_correction1, bias_correction2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    for p, g, m, v in zip(_as_list(param), _as_list(grad), _as_list(exp_avg), _as_list(exp_avg_sq)):
        t = p.dtype.type
        g = g * t(1.0 / grad_scale)
        m[...] = t(beta1) * m + t(1.0 - beta1) * g
        v[...] = t(beta2) * v + t(1.0 - beta2) * (g * g)
        r = (m / t(bias_correction1)) / (np.sqrt(v / t(bias_correction2)) + t(eps)) + t(weight_decay) * p
        param_norm = np.sqrt(np.sum(np.square(p, dtype=np.float64)))
        direction_norm = np.sqrt(np.sum(np.square(r, dtype=np.float64)))
        trust = 1.0 if param_norm == 0.0 or direction_norm == 0.0 else param_norm / direction_norm
        p -= t(lr) * (r * t(trust))
