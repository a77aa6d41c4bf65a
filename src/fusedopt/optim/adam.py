"""Adam and AdamW: the spec and the classes of csrc/algorithms/adam.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["Adam", "AdamW", "ADAM_SPEC", "ADAMW_SPEC"]

_ADAM_HYPERS = (
    Hyper("lr", "lr"),
    Hyper("betas", "betas"),
    Hyper("eps", "positive"),
    Hyper("weight_decay", "rate"),
    Hyper("amsgrad", "bool"),
    Hyper("maximize", "bool"),
)
ADAM_SPEC = Spec("adam", _ADAM_HYPERS, constants={"decoupled": 0.0})
ADAMW_SPEC = Spec("adam", _ADAM_HYPERS, constants={"decoupled": 1.0})


class Adam(Optimizer):
    r"""Adam with bias correction, fused over all parameters.

    .. math::

        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        \theta_t = \theta_{t-1} - \eta_t \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    ``t`` counts each array's own steps (a parameter added later starts at 1).

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
        Learning rate, or a schedule ``f(k)`` evaluated at the k-th step (k = 0, 1, ...).
    betas : (float, float)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float
        Added to the denominator, > 0 (and not 0 once rounded to float32 for
        float32 parameters).
    weight_decay : float
        L2 penalty added to the gradient (``g += weight_decay * p``).
    amsgrad : bool
        Use the running maximum of the second moment (AMSGrad).
    maximize : bool
        Ascend the objective instead of descending.
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = ADAM_SPEC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False, *, skip_nonfinite=False, max_grad_norm=None,
                 grad_scale=1.0, state_dtype=None, master_weights=None, stochastic_rounding=False, seed=0,
                 min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale,
                         state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)


class AdamW(Adam):
    r"""Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam update.

    Parameters are as for :class:`Adam`, with ``weight_decay`` defaulting to 1e-2.
    """

    spec = ADAMW_SPEC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False, *, skip_nonfinite=False, max_grad_norm=None,
                 grad_scale=1.0, state_dtype=None, master_weights=None, stochastic_rounding=False, seed=0,
                 min_8bit_size=4096):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, skip_nonfinite=skip_nonfinite,
                         max_grad_norm=max_grad_norm, grad_scale=grad_scale,
                         state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
