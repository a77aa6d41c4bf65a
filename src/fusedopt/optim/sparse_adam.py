"""SparseAdam: the spec and the class of csrc/algorithms/sparse_adam.h."""
import numbers

from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["SparseAdam", "SPARSE_ADAM_SPEC"]


def _check_sparse_adam(group):
    lr = group["lr"]
    if isinstance(lr, numbers.Real) and not lr > 0:   # a schedule's values are checked as any lr's
        raise ValueError(f"lr must be > 0 (as torch.optim.SparseAdam), got {lr!r}")


SPARSE_ADAM_SPEC = Spec("sparse_adam", (
    Hyper("lr", "lr"),
    Hyper("betas", "betas"),
    Hyper("eps", "positive"),
    Hyper("maximize", "bool"),
), check=_check_sparse_adam, row_sparse=(), dense=False)


class SparseAdam(Optimizer):
    r"""Lazy Adam for embedding tables, as ``torch.optim.SparseAdam``: each step
    updates the moments and the parameter of the rows its gradient holds, and
    leaves the other rows alone.

    Gradients are :class:`fusedopt.RowSparseGrad` (row numbers and their gradient
    rows; duplicate rows are summed).  For the rows given, with ``t`` the array's
    step count (which advances at every step, rows or none):

    .. math::

        m \leftarrow m + (g - m)(1-\beta_1), \quad
        v \leftarrow v + (g^2 - v)(1-\beta_2), \quad
        \theta \leftarrow \theta - \eta \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \frac{m}{\sqrt{v} + \epsilon}

    Parameters
    ----------
    params : list of ndarray or list of dict
        The tables (arrays of one or more dimensions: a row is the rest of the
        dimensions), see :class:`Optimizer`.
    lr : float or schedule
        > 0.
    betas : (float, float)
        In [0, 1).
    eps : float
        > 0, added to the denominator.
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`; the norm of a row-sparse gradient
        is that of its merged rows.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
        8-bit state needs rows of a multiple of 256 elements (its blocks).

    Dense gradients raise TypeError (use :class:`Adam`), as torch's SparseAdam.
    """

    spec = SPARSE_ADAM_SPEC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None,
                 stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
