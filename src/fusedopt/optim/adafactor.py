"""Adafactor: the spec and the class of csrc/algorithms/adafactor.h."""
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["Adafactor", "ADAFACTOR_SPEC"]


def _check_adafactor(group):
    # the reader has checked that both are finite numbers; these are torch's bounds
    if not float(group["beta2_decay"]) <= 0.0:
        raise ValueError(f"beta2_decay must be <= 0, got {group['beta2_decay']!r}")
    if not float(group["d"]) >= 1.0:
        raise ValueError(f"d (the clipping threshold) must be >= 1, got {group['d']!r}")


ADAFACTOR_SPEC = Spec("adafactor", (
    Hyper("lr", "lr"),
    Hyper("beta2_decay", "real"),
    Hyper("eps", "eps_pair"),
    Hyper("d", "real"),
    Hyper("weight_decay", "rate"),
    Hyper("maximize", "bool"),
), check=_check_adafactor)


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear
    Memory Cost", ICML 2018), as ``torch.optim.Adafactor``.

    .. math::

        \hat\beta_{2,t} &= 1 - t^{\tau}, \quad \rho_t = \min(\eta, 1/\sqrt t), \quad
        \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t, \\
        R_t &= \mathrm{lerp}(R_{t-1}, \mathrm{mean}_j\, g^2, t^{\tau}), \quad
        C_t = \mathrm{lerp}(C_{t-1}, \mathrm{mean}_i\, g^2, t^{\tau}), \quad
        V_t = \frac{R_t C_t}{\max(\mathrm{mean}_i R_t, \epsilon_1)}, \\
        U_t &= \frac{g}{\sqrt{\max(V_t, \epsilon_1^2)}}, \quad
        \theta_t = \theta_{t-1}(1 - \eta\lambda) - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U_t)/d)} U_t

    The second moment of a parameter of two or more dimensions is factored over
    its last two: a row statistic ``row_var`` of shape ``(..., R, 1)`` and a
    column statistic ``col_var`` of shape ``(..., 1, C)`` instead of a full
    tensor; a vector or scalar keeps a full ``variance``.  RMS and the norms are
    per array, computed in a fixed order (the same bits for any thread count).
    An array that holds no elements is left as it is (torch divides by zero).

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.  float32 or float64.
    lr : float or schedule
        The relative step size's cap (:math:`\rho_t = \min(lr, 1/\sqrt t)`) and
        the weight decay's rate.
    beta2_decay : float
        <= 0: the second moment's weight at step t is ``t ** beta2_decay``.
    eps : (float or None, float)
        ``eps1`` (>= 0) floors the second moment (squared) and the row mean; None
        is the machine epsilon of each array's dtype (torch takes the first
        array's dtype for its whole group).  ``eps2`` (>= 0) floors the
        parameter's RMS in the step size.
    d : float
        >= 1, the clipping threshold of the update's RMS.
    weight_decay : float
        Decoupled: the parameter is multiplied by ``1 - lr * weight_decay``.
    maximize : bool
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    """

    spec = ADAFACTOR_SPEC
    elementwise = False   # its second moment is factored over each array's rows and columns

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                 maximize=False, *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0):
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                                      weight_decay=weight_decay, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale)
