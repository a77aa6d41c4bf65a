"""Lion: the spec and the class of csrc/algorithms/lion.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["Lion", "LION_SPEC"]

LION_SPEC = Spec("lion", (
    Hyper("lr", "lr"),
    Hyper("betas", "betas"),
    Hyper("weight_decay", "rate"),
    Hyper("maximize", "bool"),
))


class Lion(Optimizer):
    r"""Lion, "EvoLved Sign Momentum" (Chen et al., "Symbolic Discovery of
    Optimization Algorithms", NeurIPS 2023), as ``optax.lion``.

    .. math::

        c_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        \theta_t = \theta_{t-1} - \eta\,(\operatorname{sign}(c_t) + \lambda \theta_{t-1}), \quad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    The step has the same size in every coordinate, so Lion wants a learning
    rate 3-10x smaller than AdamW's and a weight decay 3-10x larger.

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
    betas : (float, float)
        Each in [0, 1): interpolation for the direction, then decay of the momentum.
    weight_decay : float
        Decoupled, inside the step as in the paper (scaled by ``lr``).
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = LION_SPEC

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None,
                 stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
