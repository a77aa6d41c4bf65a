"""Adagrad: the spec and the class of csrc/algorithms/adagrad.h."""
from ._base import Optimizer, _real
from ._spec import Hyper, Spec

__all__ = ["Adagrad", "ADAGRAD_SPEC"]


def _check_adagrad(group):
    _real("initial_accumulator_value", group["initial_accumulator_value"], 0.0)


ADAGRAD_SPEC = Spec("adagrad", (
    Hyper("lr", "lr"),
    Hyper("lr_decay", "rate"),
    Hyper("weight_decay", "rate"),
    Hyper("eps", "positive"),
    Hyper("maximize", "bool"),
), constants={"row_sparse": 0.0}, check=_check_adagrad, initial_state={"sum": "initial_accumulator_value"},
   row_sparse=("weight_decay",))


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer, JMLR 2011), as ``torch.optim.Adagrad``.

    .. math::

        s_t = s_{t-1} + g_t^2, \quad
        \theta_t = \theta_{t-1} - \frac{\eta}{1 + (t-1)\,\eta_{decay}} \frac{g_t}{\sqrt{s_t} + \epsilon}

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
    lr_decay : float
        >= 0; the rate is ``lr / (1 + (t-1) * lr_decay)`` at each array's step t.
    weight_decay : float
        L2 penalty added to the gradient.
    initial_accumulator_value : float
        >= 0, the value the sum of squares starts at (read when an array's state
        is created; 8-bit state holds it exactly).
    eps : float
        > 0, added to the denominator.
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = ADAGRAD_SPEC

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, maximize=False,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None,
                 stochastic_rounding=False, seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale, state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
