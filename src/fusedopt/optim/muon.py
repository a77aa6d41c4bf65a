"""Muon: the spec and the class of csrc/algorithms/muon.h, with the Newton-Schulz
orthogonalisation that runs between its kernel and the parameter update."""
import math
import numbers

import numpy as np

from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["Muon", "MUON_SPEC"]

#: torch.optim.Muon's defaults: the quintic's coefficients, its steps, eps
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")

MUON_SPEC = Spec("muon", (
    Hyper("lr", "lr"),
    Hyper("weight_decay", "rate"),
    Hyper("momentum", "rate"),
    Hyper("nesterov", "bool"),
))


def _orthogonalization(group, g, n_groups):
    """(coefficients, steps, eps, adjust_lr_fn) of a group, checked (the kernel does
    not read them, so they are checked here, at every step)."""
    where = f"param_groups[{g}]: " if n_groups > 1 else ""
    coefficients = group["ns_coefficients"]
    if (not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3
            or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
                       for x in coefficients)):
        raise ValueError(f"{where}ns_coefficients must be three finite numbers (a, b, c), got {coefficients!r}")
    steps = group["ns_steps"]
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 0 <= steps < 100:
        raise ValueError(f"{where}ns_steps must be an int in [0, 100), got {steps!r}")
    eps = group["eps"]
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{where}eps must be a finite number >= 0, got {eps!r}")
    adjust = group["adjust_lr_fn"]
    if adjust not in ADJUST_LR_FNS:
        raise ValueError(f"{where}adjust_lr_fn must be one of {ADJUST_LR_FNS}, got {adjust!r}")
    return tuple(float(x) for x in coefficients), int(steps), float(eps), adjust


def orthogonalize(matrix, coefficients=NS_COEFFICIENTS, steps=NS_STEPS, eps=EPS):
    """The quintic Newton-Schulz iteration of torch.optim.Muon, in `matrix`'s dtype
    with NumPy's matmul (BLAS): X = M / max(||M||, eps), on the wide orientation,
    then `steps` times X = a X + (b A + c A A) X with A = X X^T.  Returns a new
    array of `matrix`'s shape; `matrix` is not changed."""
    a, b, c = coefficients
    t = matrix.dtype.type
    tall = matrix.shape[0] > matrix.shape[1]
    x = np.array(matrix.T if tall else matrix, order="C")   # a copy: the iteration works in place
    x /= max(np.linalg.norm(x), t(eps))
    rows = x.shape[0]
    gram = np.empty((rows, rows), x.dtype)
    square = np.empty((rows, rows), x.dtype)
    product = np.empty_like(x)
    for _ in range(steps):
        np.matmul(x, x.T, out=gram)
        np.matmul(gram, gram, out=square)
        square *= t(c)
        gram *= t(b)
        gram += square                     # b A + c A A
        np.matmul(gram, x, out=product)
        x *= t(a)
        x += product
    return x.T if tall else x


def adjusted_lr(lr, adjust_lr_fn, shape):
    """torch.optim.Muon's rate for a parameter of `shape` (rows A, columns B):
    lr * sqrt(max(1, A/B)) ("original", the default) or lr * 0.2 * sqrt(max(A, B))."""
    rows, cols = shape
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols))


class Muon(Optimizer):
    r"""Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural
    networks"), as ``torch.optim.Muon``: for 2-D parameters.

    .. math::

        B_t = \mathrm{lerp}(B_{t-1}, g_t, 1-\mu), \quad
        U_t = \mathrm{lerp}(g_t, B_t, \mu) \text{ (nesterov) or } B_t, \quad
        O_t = \mathrm{NS}^{(a,b,c)}_k(U_t), \quad
        \theta_t = \theta_{t-1}(1 - \eta\lambda) - \eta' O_t

    The momentum and :math:`U_t` come from one fused pass (csrc/algorithms/muon.h,
    with the gradient safety options applied inside it); the Newton-Schulz
    iteration runs with NumPy's matmul (its BLAS threads, see threadpoolctl) in
    the parameter's dtype, where torch runs it in bfloat16: fusedopt's is the
    more accurate, and agrees with torch to bfloat16 precision.
    :math:`\eta' = \eta\sqrt{\max(1, A/B)}` ("original") or
    :math:`0.2\,\eta\sqrt{\max(A, B)}` ("match_rms_adamw") for an A x B parameter.

    Parameters
    ----------
    params : list of ndarray or list of dict
        2-D float32 or float64 arrays (optimize biases, embeddings and the other
        parameters with AdamW, as torch advises).
    lr : float or schedule
    weight_decay : float
        Decoupled: the parameter is multiplied by ``1 - lr * weight_decay``.
    momentum : float
        >= 0.
    nesterov : bool
    ns_coefficients : (float, float, float)
        (a, b, c) of the quintic iteration.
    eps : float
        >= 0, floors the norm the iteration starts by dividing by.
    ns_steps : int
        Iterations, in [0, 100).
    adjust_lr_fn : {None, "original", "match_rms_adamw"}
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    """

    spec = MUON_SPEC

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=NS_COEFFICIENTS, eps=EPS, ns_steps=NS_STEPS, adjust_lr_fn=None, *,
                 skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale)

    def _build_plan(self, *args, **kwargs):
        self._complete_groups()
        groups = self.param_groups
        for g, group in enumerate(groups):
            _orthogonalization(group, g, len(groups))
        for position, p in enumerate(self._all_params()):
            if isinstance(p, np.ndarray) and p.ndim != 2:
                raise ValueError(f"params[{position}] has shape {p.shape}: Muon steps 2-D parameters only "
                                 f"(optimize the others with AdamW)")
        super()._build_plan(*args, **kwargs)

    def step(self, grads, *, grad_scale=None):
        """One step (see :meth:`Optimizer.step`): the fused momentum pass, then the
        orthogonalisation and the update of each parameter."""
        with self._stepper.lock:
            self._complete_groups()
            groups = list(self.param_groups)
            rates = self.current_lrs()
            work = []
            for g, (group, lr) in enumerate(zip(groups, rates)):
                settings = _orthogonalization(group, g, len(groups))
                work.extend((p, lr, group["weight_decay"], settings) for p in group["params"])
            applied = super().step(grads, grad_scale=grad_scale)
            if applied:
                for p, lr, weight_decay, (coefficients, steps, eps, adjust) in work:
                    t = p.dtype.type
                    ortho = orthogonalize(self._states[id(p)].slots["update"], coefficients, steps, eps)
                    p *= t(1.0 - float(lr) * float(weight_decay))
                    ortho *= t(-adjusted_lr(float(lr), adjust, p.shape))
                    p += ortho
            return applied
