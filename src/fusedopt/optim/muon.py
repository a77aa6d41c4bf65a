"""Muon: the spec and the class of csrc/algorithms/muon.h, with the Newton-Schulz
orthogonalisation that runs between its kernel and the parameter update."""
import math
import numbers
import threading

import numpy as np

from .. import _core
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
    elementwise = False   # its update orthogonalizes each matrix

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=NS_COEFFICIENTS, eps=EPS, ns_steps=NS_STEPS, adjust_lr_fn=None, *,
                 skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0):
        self._muon_guard = threading.Lock()   # held for a test-and-set only, never across a step
        self._muon_owner = None                # (thread, fork generation) of the step running
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale)

    def _build_plan(self, *args, **kwargs):
        self._settings()   # every array 2-D, every group's settings valid
        super()._build_plan(*args, **kwargs)

    def step(self, grads, *, grad_scale=None):
        """One step (see :meth:`Optimizer.step`): the fused momentum pass, then the
        orthogonalisation and the update of each parameter.  Everything that can be
        refused is checked before the momentum pass; a step that finds this
        optimizer stepping (in another thread, or from its own schedule) raises
        RuntimeError and changes nothing."""
        with self._muon_guard:
            owner = self._muon_owner
            if owner is not None and owner[1] == _core.fork_generation():
                raise RuntimeError("this Muon optimizer is already stepping (in another thread, or this "
                                   "step's schedule called step); step one optimizer from one thread at a time")
            self._muon_owner = (threading.get_ident(), _core.fork_generation())
        try:
            with self._stepper.lock:
                settings = self._settings()
                applied = super().step(grads, grad_scale=grad_scale)
                if applied:
                    self._orthogonal_updates(settings)
                return applied
        finally:
            self._muon_owner = None

    def __setstate__(self, pickled):
        self._muon_guard = threading.Lock()
        self._muon_owner = None
        super().__setstate__(pickled)

    def _settings(self):
        """{id(array): its group's orthogonalisation settings}, every group and every
        array checked (2-D) before anything changes."""
        self._complete_groups()
        groups = list(self.param_groups)
        settings, position = {}, 0
        for g, group in enumerate(groups):
            values = _orthogonalization(group, g, len(groups))
            for p in group["params"]:
                if isinstance(p, np.ndarray):
                    if p.ndim != 2:
                        raise ValueError(f"params[{position}] has shape {p.shape}: Muon steps 2-D parameters "
                                         f"only (optimize the others with AdamW; or was it reshaped in place?)")
                    settings[id(p)] = values
                position += 1
        return settings

    def _orthogonal_updates(self, settings):
        """After the momentum pass: each array's update, at the rate its kernel block
        used this step (a schedule is evaluated once, by the step)."""
        inputs = self._reader.inputs
        lr_at, decay_at = inputs.index("lr"), inputs.index("weight_decay")
        for state, blocks, block in self._members:
            p = state.array
            if p.size == 0 or id(p) not in settings:   # not in the groups checked (edited meanwhile)
                continue
            values = blocks.inputs(block)
            lr, weight_decay = values[lr_at], values[decay_at]
            coefficients, steps, eps, adjust = settings[id(p)]
            t = p.dtype.type
            # the update slot is a view in p's current shape (p may have been reshaped in place)
            ortho = orthogonalize(state.slots["update"].reshape(p.shape), coefficients, steps, eps)
            p *= t(1.0 - lr * weight_decay)
            ortho *= t(-adjusted_lr(lr, adjust, p.shape))
            p += ortho
