"""Adamax: the spec and the class of csrc/algorithms/adamax.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["Adamax", "ADAMAX_SPEC"]

ADAMAX_SPEC = Spec("adamax", (
    Hyper("lr", "lr"),
    Hyper("betas", "betas"),
    Hyper("eps", "positive"),
    Hyper("weight_decay", "rate"),
    Hyper("maximize", "bool"),
))


class Adamax(Optimizer):
    r"""Adamax, Adam under the infinity norm (Kingma & Ba, ICLR 2015, section 7.1), as
    ``torch.optim.Adamax``.

    .. math::

        m_t = \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
        u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
        \theta_t = \theta_{t-1} - \frac{\eta}{1-\beta_1^t} \frac{m_t}{u_t}

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
    betas : (float, float)
        Each in [0, 1).
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

    spec = ADAMAX_SPEC

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None,
                 master_weights=None, stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
