"""The float64 references of the tests: :mod:`fusedopt.slow` run on float64 copies.

The algorithms are written once, in ``fusedopt/slow``; these adapters give them
the functional form the tests use: the inputs are left untouched and new
float64 arrays are returned.  Keywords are those of ``fusedopt.slow.adam_`` /
``sgd_`` (``grad_scale`` divides the gradient, as a loss scale does).
"""
import numpy as np

from fusedopt import slow


def _copy(a):
    return None if a is None else np.array(a, dtype=np.float64, copy=True)


def adam_step(p, g, m, v, vmax, **hyper):
    """One Adam/AdamW step in float64; returns new (p, m, v, vmax)."""
    p, m, v, vmax = _copy(p), _copy(m), _copy(v), _copy(vmax)
    slow.adam_(p, _copy(g), m, v, amsgrad_max=vmax, **hyper)
    return p, m, v, vmax


def sgd_step(p, g, buf, **hyper):
    """One SGD step in float64; returns new (p, buf)."""
    p, buf = _copy(p), _copy(buf)
    slow.sgd_(p, _copy(g), buf, **hyper)
    return p, buf
