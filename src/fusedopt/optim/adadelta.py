"""Adadelta: the spec and the class of csrc/algorithms/adadelta.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["Adadelta", "ADADELTA_SPEC"]

ADADELTA_SPEC = Spec("adadelta", (
    Hyper("lr", "lr"),
    Hyper("rho", "unit"),
    Hyper("eps", "positive"),
    Hyper("weight_decay", "rate"),
    Hyper("maximize", "bool"),
))


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``.

    .. math::

        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t, \quad
        u_t = \rho u_{t-1} + (1-\rho) \Delta_t^2, \quad
        \theta_t = \theta_{t-1} - \eta \Delta_t

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
        Scales the step (1.0 in the paper).
    rho : float
        In [0, 1], decay of both averages.
    eps : float
        > 0.
    weight_decay : float
        L2 penalty added to the gradient.
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = ADADELTA_SPEC

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None,
                 stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
