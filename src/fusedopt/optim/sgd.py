"""SGD with momentum: the spec and the class of csrc/algorithms/sgd.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["SGD", "SGD_SPEC"]


def _check_sgd(group):
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError(f"nesterov requires momentum > 0 and dampening = 0, got "
                         f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")


SGD_SPEC = Spec("sgd", (
    Hyper("lr", "lr"),
    Hyper("momentum", "rate"),
    Hyper("dampening", "unit"),
    Hyper("weight_decay", "rate"),
    Hyper("nesterov", "bool"),
    Hyper("maximize", "bool"),
    Hyper("lr_in_velocity", "bool"),
), check=_check_sgd, row_sparse=("momentum", "weight_decay"))


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum (two forms) and Nesterov.

    PyTorch's form (default): ``b = momentum*b + (1-dampening)*g`` (``b = g`` at the
    buffer's first step), ``p -= lr*b`` (Nesterov: ``p -= lr*(g + momentum*b)``).

    Velocity form (``lr_in_velocity=True``, as in the classic notes):
    ``v = momentum*v + lr*(1-dampening)*g``, ``p -= v`` (Nesterov:
    ``p -= momentum*v + lr*g``).  Both agree while ``lr`` is constant; with a
    schedule they differ, since ``v`` carries the past rates.

    Parameters
    ----------
    params : list of ndarray or list of dict
    lr : float or schedule
    momentum : float
        Momentum factor (>= 0); 0 is plain SGD and keeps no buffer.
    dampening : float
        In [0, 1].
    nesterov : bool
        Nesterov momentum (requires momentum > 0 and dampening = 0).
    weight_decay : float
        L2 penalty added to the gradient.
    maximize : bool
    lr_in_velocity : bool
        Use the velocity form.
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size
        Storage of the state and of 16-bit parameters, see :class:`Optimizer`.
    """

    spec = SGD_SPEC

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False, lr_in_velocity=False, *, skip_nonfinite=False,
                 max_grad_norm=None, grad_scale=1.0, state_dtype=None, master_weights=None, stochastic_rounding=False, seed=0,
                 min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay,
                                      maximize=maximize, lr_in_velocity=lr_in_velocity),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale,
                         state_dtype=state_dtype, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, seed=seed, min_8bit_size=min_8bit_size)
