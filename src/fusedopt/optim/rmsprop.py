"""RMSprop: the spec and the class of csrc/algorithms/rmsprop.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["RMSprop", "RMSPROP_SPEC"]

RMSPROP_SPEC = Spec("rmsprop", (
    Hyper("lr", "lr"),
    Hyper("alpha", "rate"),
    Hyper("eps", "positive"),
    Hyper("weight_decay", "rate"),
    Hyper("momentum", "rate"),
    Hyper("centered", "bool"),
    Hyper("maximize", "bool"),
))


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, 2012; centered as Graves, 2013), as ``torch.optim.RMSprop``.

    .. math::

        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \quad
        d_t = \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{v_t} + \epsilon, \\
        b_t = \mu b_{t-1} + g_t / d_t, \quad \theta_t = \theta_{t-1} - \eta\, b_t
        \quad (\text{without momentum: } \theta_t = \theta_{t-1} - \eta\, g_t / d_t)

    with :math:`\bar g_t = \operatorname{lerp}(\bar g_{t-1}, g_t, 1-\alpha)` when centered.

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
    alpha : float
        >= 0, smoothing constant of the averages.
    eps : float
        > 0, added to the denominator.
    weight_decay : float
        L2 penalty added to the gradient.
    momentum : float
        >= 0; a momentum buffer is kept when > 0.
    centered : bool
        Normalise by the variance estimate (keeps an average of the gradients).
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = RMSPROP_SPEC

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None,
                 stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
