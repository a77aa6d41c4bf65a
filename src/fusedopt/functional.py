"""Functional optimizer steps, for users who hold their own state.

Each function updates its arguments in place with one call into the C kernels
and returns None.  Every argument may be one array or a list of arrays (all
lists of the same length), so a whole model takes one call.  All checks happen
before any buffer is written: a call that raises has changed nothing.
"""
import numbers

import numpy as np

from . import _core
from .optim._base import _grad_scale
from .optim.adadelta import ADADELTA_SPEC
from .optim.adagrad import ADAGRAD_SPEC
from .optim.adam import ADAM_SPEC
from .optim.adamax import ADAMAX_SPEC
from .optim.lamb import LAMB_SPEC
from .optim.lion import LION_SPEC
from .optim.nadam import NADAM_SPEC
from .optim.radam import RADAM_SPEC
from .optim.rmsprop import RMSPROP_SPEC
from .optim.sgd import SGD_SPEC

__all__ = ["adadelta_", "adagrad_", "adam_", "adamax_", "lamb_", "lion_", "nadam_", "radam_", "rmsprop_", "sgd_",
           "grad_norm", "clip_grad_norm_"]

def tensor_lists(arrays, name="params", writeable=False):
    """TensorLists (one per dtype) of `arrays`, for norms; checks each array, and with
    `writeable` (they will be written) that no two share memory."""
    by_dtype = {}
    for position, a in enumerate(arrays):
        _core.check_array(a, f"{name}[{position}]", writeable)
        by_dtype.setdefault(a.dtype.num, []).append(position)
    lists = tuple(_core.TensorList(-1, [arrays[i] for i in positions], positions,
                                   [0] * len(positions), [], [], writeable)
                  for _, positions in sorted(by_dtype.items()))
    if writeable and len(lists) > 1:
        _core.check_disjoint(lists)
    return lists


def _real_arg(name, value, strictly_positive=True):
    """A keyword argument that must be a finite real number (> 0, or >= 0)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (strictly_positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if strictly_positive else '>='} 0, "
                         f"got {value!r}")
    return value


def _step_number(step):
    """The step number t of a functional call: an int in [1, 2**53]."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int >= 1, got {step!r}")
    if not 1 <= step <= 2 ** 53:
        raise ValueError(f"step must be an int in [1, 2**53], got {step!r}")
    return int(step)


def _functional_step(spec, params, grads, slots, counters, group, constants=None, grad_scale=1.0):
    """One step of `spec`'s kernels over explicit state, as the optimizers would run it.

    slots maps slot names to lists aligned with `params` (None where not given);
    counters are the counters before the step (the same for every parameter)."""
    n = len(params)
    for position, p in enumerate(params):
        _core.check_array(p, f"param[{position}]", True)
    by_kernel = {}
    for position, p in enumerate(params):
        given = [(slots.get(name) or [None] * n)[position] for name in spec.slots]
        g = grads[position] if isinstance(grads, (list, tuple)) and len(grads) == n else None
        by_kernel.setdefault(_kernel_of(spec, p, g, given), []).append(position)
    reader = spec.reader(constants)
    has_f32 = [any(p.dtype != np.float64 for p in params)]
    built = []
    for kernel, positions in sorted(by_kernel.items()):
        needed = _core.slots_needed(kernel, reader, [group], 0, has_f32)[0]
        lists = [[(slots.get(name) or [None] * n)[i] for i in positions] for name in spec.slots]
        for k in needed:
            missing = [positions[j] for j, buffer in enumerate(lists[k]) if buffer is None]
            if missing:
                raise ValueError(f"{spec.slots[k]} is required with these options "
                                 f"(missing for param[{missing[0]}])")
        tensors = _core.TensorList(kernel, [params[i] for i in positions], positions,
                                   [0] * len(positions), lists, list(spec.slots))
        built.append(_core.ListBlocks(tensors, [0], [tuple(counters)]))
    if len(built) > 1:
        _core.check_disjoint(tuple(b.tensors for b in built))
    plan = _core.Plan(reader, tuple(built), n, [group], [list(params)], [list(params)], has_f32)
    _core.step_plan(plan, [group], grads, 0, _grad_scale(grad_scale))


def _kernel_of(spec, p, g, state_buffers):
    """The kernel for parameter p, gradient g and the state buffers given: their
    dtypes where a kernel reads them (else the defaults, and the TensorList checks
    name what does not fit)."""
    grad_dtype = g.dtype if isinstance(g, np.ndarray) and _core.grad_dtype_allowed(p.dtype, g.dtype) else None
    state_dtype = next((b.dtype for b in state_buffers if isinstance(b, np.ndarray)), None)
    try:
        return spec.kernel(p.dtype, grad_dtype, state_dtype)["id"]
    except TypeError:
        return spec.kernel(p.dtype, grad_dtype)["id"]


def _as_list(value, name, n=None):
    """`value` as a list (one array -> [array]); checks the length against `n`."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        values = [value]
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        raise TypeError(f"{name} must be an ndarray or a list of ndarrays, got {type(value).__name__}")
    if n is not None and len(values) != n:
        raise ValueError(f"{name} has {len(values)} arrays but param has {n}")
    return values


def adam_(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
          decoupled=False, amsgrad_max=None, maximize=False, grad_scale=1.0):
    r"""One Adam (or AdamW) step, in place.

    .. math::

        g &\leftarrow s\,g \;(\text{negated if maximize}), \qquad
          g \leftarrow g + \lambda p \;\text{(L2)} \quad\text{or}\quad
          p \leftarrow (1 - \eta\lambda)\,p \;\text{(decoupled)} \\
        m &\leftarrow \beta_1 m + (1-\beta_1) g, \qquad
          v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\,
          \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    With `amsgrad_max` given, ``v_max = max(v_max, v)`` is kept there and used
    in place of `v` in the denominator.

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : ndarray or list of ndarray
        Parameters (updated), gradients (read only), first and second moment
        estimates (updated; start them at zero).  float32, float64, float16 or
        bfloat16, C-contiguous; each state buffer has its parameter's shape, and
        its dtype (float32, float64 or bfloat16 parameters) or float32/bfloat16
        (float16 parameters, and bfloat16 state for float32 ones); a float32
        parameter may take a bfloat16/float16 gradient.  (8-bit state, master
        weights and stochastic rounding are the optimizer classes'.)
    step : int
        The step number t >= 1 of this update (1 for the first), used for the
        bias corrections.
    lr, beta1, beta2, eps, weight_decay : float
        Hyperparameters as in :class:`fusedopt.Adam`.
    decoupled : bool
        True for AdamW's decoupled weight decay, False for L2 added to the gradient.
    amsgrad_max : ndarray or list of ndarray, optional
        The AMSGrad running maximum of `exp_avg_sq` (updated).
    maximize : bool
        Ascend instead of descend.
    grad_scale : float
        Loss scale: gradients are divided by it inside the kernel (never written back).
    """
    params = _as_list(param, "param")
    n = len(params)
    grads = _as_list(grad, "grad", n)
    step = _step_number(step)
    if not isinstance(decoupled, (bool, np.bool_)):
        raise TypeError(f"decoupled must be True or False, got {decoupled!r}")
    slots = {"exp_avg": _as_list(exp_avg, "exp_avg", n), "exp_avg_sq": _as_list(exp_avg_sq, "exp_avg_sq", n),
             "max_exp_avg_sq": _as_list(amsgrad_max, "amsgrad_max", n)}
    group = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                 amsgrad=amsgrad_max is not None, maximize=maximize)
    _functional_step(ADAM_SPEC, params, grads, slots, (int(step) - 1,), group,
                     {"decoupled": float(decoupled)}, grad_scale)


def lamb_(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
          grad_scale=1.0):
    r"""One LAMB step, in place (see :class:`fusedopt.LAMB`).

    ``r = (m/bc1) / (sqrt(v/bc2) + eps) + weight_decay*p``, then
    ``p -= lr * r * ||p||/||r||`` with the trust ratio per array (1 where either
    norm is 0), after ``m``, ``v`` are updated as in Adam.

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : ndarray or list of ndarray
        As in :func:`adam_`.
    step : int
        The step number t >= 1 of this update.
    lr, beta1, beta2, eps, weight_decay, grad_scale : float
    """
    params = _as_list(param, "param")
    n = len(params)
    grads = _as_list(grad, "grad", n)
    step = _step_number(step)
    slots = {"exp_avg": _as_list(exp_avg, "exp_avg", n), "exp_avg_sq": _as_list(exp_avg_sq, "exp_avg_sq", n)}
    group = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    _functional_step(LAMB_SPEC, params, grads, slots, (int(step) - 1,), group, None, grad_scale)


def sgd_(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
         weight_decay=0.0, maximize=False, lr_in_velocity=False, first_step=False, grad_scale=1.0):
    r"""One SGD step, in place.

    .. math::

        g &\leftarrow s\,g \;(\text{negated if maximize}), \qquad g \leftarrow g + \lambda p \\
        \text{no momentum:}\quad p &\leftarrow p - \eta g \\
        \text{PyTorch's form:}\quad b &\leftarrow \mu b + (1-\tau) g
            \;(b \leftarrow g \text{ at the first step}), \qquad
            p \leftarrow p - \eta b \;\text{ or (Nesterov) }\; p - \eta (g + \mu b) \\
        \text{velocity form:}\quad v &\leftarrow \mu v + \eta (1-\tau) g, \qquad
            p \leftarrow p - v \;\text{ or (Nesterov) }\; p - (\mu v + \eta g)

    The two momentum forms agree while the learning rate is constant; they
    differ once it changes (the velocity form carries past rates in `v`).

    Parameters
    ----------
    param, grad : ndarray or list of ndarray
    momentum_buffer : ndarray or list of ndarray, optional
        Required when `momentum` > 0 (updated; start it at zero).
    lr, momentum, dampening, weight_decay : float
    nesterov, maximize, lr_in_velocity : bool
        As in :class:`fusedopt.SGD`.
    first_step : bool
        PyTorch's form only: this is the buffer's first step, so it starts at
        ``b = g`` (ignoring `dampening`, as PyTorch does).
    grad_scale : float
        Loss scale: gradients are divided by it inside the kernel (never written back).
    """
    params = _as_list(param, "param")
    n = len(params)
    grads = _as_list(grad, "grad", n)
    if not isinstance(first_step, (bool, np.bool_)):
        raise TypeError(f"first_step must be True or False, got {first_step!r}")
    group = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                 nesterov=nesterov, maximize=maximize, lr_in_velocity=lr_in_velocity)
    _functional_step(SGD_SPEC, params, grads, {"momentum_buffer": _as_list(momentum_buffer, "momentum_buffer", n)},
                     (0, 0 if first_step else 1), group, None, grad_scale)


# -- the zoo: the same signatures as the twins of fusedopt.slow ----------------------

def _zoo_step(spec, param, grad, slots, step, group, grad_scale, counters=()):
    """Lists, checks and one kernel call for a zoo algorithm: `slots` maps each
    slot to (argument name, value); `step` is the step number (None: not used)."""
    params = _as_list(param, "param")
    n = len(params)
    grads = _as_list(grad, "grad", n)
    lists = {slot: _as_list(value, name, n) for slot, (name, value) in slots.items()}
    before = (_step_number(step) - 1 if step is not None else 0,) + tuple(counters)
    _functional_step(spec, params, grads, lists, before, group, None, grad_scale)


def adagrad_(param, grad, state_sum, *, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False,
             grad_scale=1.0):
    """One Adagrad step in place (see :class:`fusedopt.Adagrad`); `state_sum` is the
    sum of squares (start it at ``initial_accumulator_value``), `step` the step number t >= 1."""
    _zoo_step(ADAGRAD_SPEC, param, grad, {"sum": ("state_sum", state_sum)}, step,
              dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize,
                   initial_accumulator_value=0.0), grad_scale)


def rmsprop_(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, lr, alpha, eps, weight_decay=0.0,
             momentum=0.0, centered=False, maximize=False, grad_scale=1.0):
    """One RMSprop step in place (see :class:`fusedopt.RMSprop`); `momentum_buffer` is
    required when momentum > 0, `grad_avg` when centered."""
    _zoo_step(RMSPROP_SPEC, param, grad, {"square_avg": ("square_avg", square_avg),
                                          "momentum_buffer": ("momentum_buffer", momentum_buffer),
                                          "grad_avg": ("grad_avg", grad_avg)}, None,
              dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                   maximize=maximize), grad_scale)


def adamax_(param, grad, exp_avg, exp_inf, *, step, lr, beta1, beta2, eps, weight_decay=0.0, maximize=False,
            grad_scale=1.0):
    """One Adamax step in place (see :class:`fusedopt.Adamax`)."""
    _zoo_step(ADAMAX_SPEC, param, grad, {"exp_avg": ("exp_avg", exp_avg), "exp_inf": ("exp_inf", exp_inf)}, step,
              dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, maximize=maximize), grad_scale)


def nadam_(param, grad, exp_avg, exp_avg_sq, *, step, mu_product, lr, beta1, beta2, eps, weight_decay=0.0,
           momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False, grad_scale=1.0):
    """One NAdam step in place (see :class:`fusedopt.NAdam`).  `mu_product` is the
    product of the momentum schedule before this step (ignored at step 1, where it
    is 1); returns the product after it, to pass to the next call."""
    step = _step_number(step)
    mu_product = _real_arg("mu_product", mu_product, strictly_positive=False)
    _zoo_step(NADAM_SPEC, param, grad, {"exp_avg": ("exp_avg", exp_avg), "exp_avg_sq": ("exp_avg_sq", exp_avg_sq)},
              step, dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                         maximize=maximize), grad_scale, counters=(mu_product,))
    # as fo_nadam_prepare computes it
    return (1.0 if step == 1 else mu_product) * (beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay)))


def radam_(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
           decoupled_weight_decay=False, maximize=False, grad_scale=1.0):
    """One RAdam step in place (see :class:`fusedopt.RAdam`)."""
    _zoo_step(RADAM_SPEC, param, grad, {"exp_avg": ("exp_avg", exp_avg), "exp_avg_sq": ("exp_avg_sq", exp_avg_sq)},
              step, dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize), grad_scale)


def adadelta_(param, grad, square_avg, acc_delta, *, lr, rho, eps, weight_decay=0.0, maximize=False, grad_scale=1.0):
    """One Adadelta step in place (see :class:`fusedopt.Adadelta`)."""
    _zoo_step(ADADELTA_SPEC, param, grad, {"square_avg": ("square_avg", square_avg),
                                           "acc_delta": ("acc_delta", acc_delta)}, None,
              dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize), grad_scale)


def lion_(param, grad, exp_avg, *, lr, beta1, beta2, weight_decay=0.0, maximize=False, grad_scale=1.0):
    """One Lion step in place (see :class:`fusedopt.Lion`)."""
    _zoo_step(LION_SPEC, param, grad, {"exp_avg": ("exp_avg", exp_avg)}, None,
              dict(lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, maximize=maximize), grad_scale)


def grad_norm(grads):
    """Global L2 norm of `grads` (an array or a list of arrays), read once, not modified.

    The sum of squares is accumulated in float64 in a fixed blocked/pairwise
    order that depends only on the array sizes, so the result has the same bits
    for any thread count.  Error bound versus ``np.linalg.norm`` of the
    float64-converted concatenation: relative ``(L + log2(n)) * 2**-53`` with
    ``L = 8`` lanes per block (about 1e-14 for n = 1e9): far below float32
    rounding and within 1e-13 relative in the tests.  NaN if any element is NaN
    or Inf.
    """
    arrays = _as_list(grads, "grads")
    return _core.arrays_norm(tensor_lists(arrays, "grads"))


def clip_grad_norm_(grads, max_norm):
    """Scale `grads` in place so that their global L2 norm is at most `max_norm`.

    As ``torch.nn.utils.clip_grad_norm_``: every gradient is multiplied by
    ``min(1, max_norm / (norm + 1e-6))``.  Returns the norm before clipping
    (see :func:`grad_norm` for how it is computed).  The optimizers'
    ``max_grad_norm=`` does the same without rewriting the gradients: prefer it.
    """
    max_norm = _real_arg("max_norm", max_norm)
    arrays = _as_list(grads, "grads")
    tensor_lists(arrays, "grads", writeable=True)   # scaled in place: no two may share memory
    norm = grad_norm(arrays)
    coefficient = min(1.0, max_norm / (norm + 1e-6))
    if coefficient < 1.0:
        for a in arrays:
            a *= a.dtype.type(coefficient)
    return norm
