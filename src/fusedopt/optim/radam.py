"""RAdam: the spec and the class of csrc/algorithms/radam.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["RAdam", "RADAM_SPEC"]

RADAM_SPEC = Spec("radam", (
    Hyper("lr", "lr"),
    Hyper("betas", "betas"),
    Hyper("eps", "positive"),
    Hyper("weight_decay", "rate"),
    Hyper("decoupled_weight_decay", "bool", fields=("decoupled",)),
    Hyper("maximize", "bool"),
))


class RAdam(Optimizer):
    r"""Rectified Adam (Liu et al., ICLR 2020), as ``torch.optim.RAdam``.

    .. math::

        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \\
        \theta_t = \theta_{t-1} - \eta \frac{m_t}{1-\beta_1^t} \cdot
        \begin{cases} r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\ 1 & \text{else} \end{cases},
        \quad r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    with Adam's moments (the first as a lerp).

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
        L2 penalty, or decoupled (``p *= 1 - lr * weight_decay``) with
        ``decoupled_weight_decay``.
    decoupled_weight_decay : bool
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = RADAM_SPEC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None,
                 stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
