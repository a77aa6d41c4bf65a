"""LAMB: the spec and the class of csrc/algorithms/lamb.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["LAMB", "LAMB_SPEC"]

LAMB_SPEC = Spec("lamb", (
    Hyper("lr", "lr"),
    Hyper("betas", "betas"),
    Hyper("eps", "positive"),
    Hyper("weight_decay", "rate"),
))


class LAMB(Optimizer):
    r"""LAMB (You et al., "Large Batch Optimization for Deep Learning", ICLR 2020), as ``optax.lamb``.

    .. math::

        m &= \beta_1 m + (1-\beta_1) g, \quad v = \beta_2 v + (1-\beta_2) g^2, \\
        r &= \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon} + \lambda p, \quad
        p \leftarrow p - \eta\, r\, \frac{\|p\|}{\|r\|}

    with the trust ratio ``||p|| / ||r||`` taken per parameter array (1 where
    either norm is 0).  The norms come from a reduction pass over each array
    before its update, in a fixed order: the same bits for any thread count.

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
    betas : (float, float)
        In [0, 1).
    eps : float
        > 0, added to the denominator.
    weight_decay : float
        Decoupled: ``weight_decay * p`` is added to the direction before the trust ratio.
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    """

    spec = LAMB_SPEC
    elementwise = False   # its trust ratio needs each array's norms

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, *,
                 skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale)
