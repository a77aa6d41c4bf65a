"""NAdam: the spec and the class of csrc/algorithms/nadam.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["NAdam", "NADAM_SPEC"]

NADAM_SPEC = Spec("nadam", (
    Hyper("lr", "lr"),
    Hyper("betas", "betas"),
    Hyper("eps", "positive"),
    Hyper("weight_decay", "rate"),
    Hyper("momentum_decay", "rate"),
    Hyper("decoupled_weight_decay", "bool", fields=("decoupled",)),
    Hyper("maximize", "bool"),
), real_counters=("mu_product",))


class NAdam(Optimizer):
    r"""Adam with Nesterov momentum (Dozat, ICLR workshop 2016), as ``torch.optim.NAdam``.

    .. math::

        \mu_t = \beta_1 (1 - \tfrac12 0.96^{t\psi}), \quad
        m_t = \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \theta_t = \theta_{t-1} - \eta \left(\frac{1-\mu_t}{1-\prod_{i\le t}\mu_i} g_t
        + \frac{\mu_{t+1}}{1-\prod_{i\le t+1}\mu_i} m_t\right) \Big/ \left(\sqrt{v_t/(1-\beta_2^t)} + \epsilon\right)

    Each array keeps its step and the running product ``mu_product`` as counters
    (in float64; torch keeps the product in its default dtype, float32 unless changed).

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
        L2 penalty added to the gradient, or with ``decoupled_weight_decay``
        applied as ``p *= 1 - lr * weight_decay`` (NAdamW).
    momentum_decay : float
        >= 0, psi in the momentum schedule.
    decoupled_weight_decay : bool
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = NADAM_SPEC

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None,
                 stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
