"""Optimizer objects: Adam, AdamW and SGD over lists of NumPy arrays.

The classes hold hyperparameters (``param_groups``) and state, and step all
their parameters with one call into the C kernels (one per dtype).  What the
kernels need (pointer arrays, sizes, overlap checks) is built once, on the
first step, and rebuilt only when the parameter lists or the state layout
change; each later step does O(1) Python work per parameter group.
"""
import copy
import numbers

import numpy as np

from . import _core
from ._memory import aligned_zeros
from .functional import ADAM_STATE_NAMES, SGD_STATE_NAMES, tensor_lists

__all__ = ["Optimizer", "Adam", "AdamW", "SGD"]

#: state_dict layout version, checked on load
STATE_DICT_VERSION = 1


def _normalize_param_groups(params):
    """`params` (arrays or group dicts) as a list of group dicts with list-valued "params"."""
    if isinstance(params, np.ndarray) or isinstance(params, dict):
        raise TypeError("params must be a list of arrays or a list of param-group dicts, "
                        f"got a single {type(params).__name__}")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"params must be a list of arrays or of dicts, got {type(params).__name__}") from None
    if not params:
        raise ValueError("params is empty: the optimizer needs at least one parameter")
    n_dicts = sum(isinstance(p, dict) for p in params)
    if n_dicts == 0:
        return [{"params": params}]
    if n_dicts != len(params):
        raise TypeError("params must be all arrays or all param-group dicts, not a mix")
    return [dict(group) for group in params]


class Optimizer:
    """Base class: parameter groups, state, state_dict.  Subclasses set the algorithm.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Arrays updated in place (float32 or float64, C-contiguous, writeable,
        any shape), or param-group dicts ``{"params": [...], "lr": ..., ...}``
        whose keys override the defaults for that group.
    defaults : dict
        Default hyperparameters.
    skip_nonfinite : bool, default False
        When any gradient of a step holds NaN or Inf, skip the step: no
        parameter, state buffer or step count changes, ``step()`` returns False
        and ``skipped_steps`` counts it.  Off by default because it costs one
        extra read of the gradients (free when ``max_grad_norm`` is set, which
        reads them anyway) and because a NaN usually signals a bug that should
        show; turn it on for long runs and loss-scaled mixed precision.
    max_grad_norm : float, optional
        Clip the global L2 norm of all gradients of the step to this, inside the
        update kernels (the gradients are not rewritten).  The norm of each step
        is kept in ``last_grad_norm``.
    grad_scale : float, default 1.0
        Loss scale: gradients are divided by it inside the kernels (a step may
        override it: ``step(grads, grad_scale=...)``).
    """

    _algorithm = None
    _state_names = ()
    _decoupled = False

    def __init__(self, params, defaults, *, skip_nonfinite=False, max_grad_norm=None,
                 grad_scale=1.0):
        if max_grad_norm is not None and (not max_grad_norm > 0 or not np.isfinite(max_grad_norm)):
            raise ValueError(f"max_grad_norm must be a finite number > 0 or None, got {max_grad_norm!r}")
        if not grad_scale > 0 or not np.isfinite(grad_scale):
            raise ValueError(f"grad_scale must be a finite number > 0, got {grad_scale!r}")
        self.defaults = dict(defaults)
        self._param_groups = []
        #: per group: {"step": steps taken, "momentum_started": SGD buffer initialised}
        self._group_state = []
        # the hot path (plan check, hyperparameters, step count) runs in C speed there
        self._stepper = _core.Stepper(self._algorithm, self._decoupled, self.param_groups,
                                      self._group_state)
        #: skip (change nothing) when any gradient holds NaN or Inf
        self.skip_nonfinite = bool(skip_nonfinite)
        #: clip the global gradient norm to this inside the kernels (None: no clipping)
        self.max_grad_norm = max_grad_norm
        #: loss scale: gradients are divided by it inside the kernels
        self.grad_scale = grad_scale
        #: steps skipped because of non-finite gradients
        self.skipped_steps = 0
        #: global norm of the last step's unscaled gradients (when it was computed), else None
        self.last_grad_norm = None
        #: state[i] holds the buffers of the i-th parameter (groups in order)
        self.state = {}
        self._plateau = None
        self._pending_plateau_state = None
        for group in _normalize_param_groups(params):
            self.add_param_group(group)

    # -- groups -------------------------------------------------------------

    @property
    def param_groups(self):
        """The parameter groups: dicts of ``"params"`` and hyperparameters.  Edit the
        dicts (e.g. ``opt.param_groups[0]["lr"] = 0.01``; it applies at the next
        step) or call :meth:`add_param_group`; the list itself cannot be replaced."""
        return self._param_groups

    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyperparameters (defaults fill the rest)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("param_group must have a 'params' key")
        params = group["params"]
        if isinstance(params, np.ndarray):
            params = [params]
        group["params"] = list(params)
        for name, value in self.defaults.items():
            group.setdefault(name, value)
        group.setdefault("lr_factor", 1.0)
        self.param_groups.append(group)
        self._group_state.append({"step": 0, "momentum_started": False})
        try:
            # validate hyperparameters now, so a bad value fails at construction
            _core.validate(self._algorithm, [group], [self._group_state[-1]], self.step_count,
                           self._decoupled)
            self._build_plan()  # checks every array; rejects parameters that share memory
        except Exception:
            self.param_groups.pop()
            self._group_state.pop()
            n_params = len(self._all_params())
            for index in [i for i in self.state if i >= n_params]:
                del self.state[index]
            self._build_plan()
            raise

    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def _state_layout(self):
        """Which state buffers each group needs now (changes trigger a rebuild)."""
        raise NotImplementedError

    def _needed_state(self, group):
        """Names of the state buffers the group's parameters need now."""
        raise NotImplementedError

    # -- the plan: what the kernels need, built once --------------------------

    def _build_plan(self):
        params, groups, index = [], [], 0
        for g, group in enumerate(self.param_groups):
            for p in group["params"]:
                _core.check_array(p, f"params[{index}]", True)
                state = self.state.setdefault(index, {})
                for name in self._needed_state(group):
                    if name not in state:  # allocated once, zero, 64-byte aligned
                        state[name] = aligned_zeros(p.shape, p.dtype)
                params.append(p)
                groups.append(g)
                index += 1
        states = [[self.state[i].get(name) for i in range(len(params))] for name in self._state_names]
        stepper = self._stepper
        stepper.lists = tensor_lists(params, groups, states, self._state_names)
        stepper.n_params = len(params)
        stepper.plan_lists = [group["params"] for group in self.param_groups]
        stepper.plan_copies = [list(group["params"]) for group in self.param_groups]
        stepper.layout = self._state_layout()

    @property
    def step_count(self):
        """Number of steps applied; the next step uses ``schedule(step_count)``."""
        return self._stepper.step_count

    @step_count.setter
    def step_count(self, value):
        self._stepper.step_count = int(value)

    # -- stepping -------------------------------------------------------------

    def step(self, grads, *, grad_scale=None):
        """Update every parameter in place from `grads`, one array per parameter (groups in order).

        All gradients and hyperparameters are checked before any buffer is
        written: a step that raises has changed nothing.  One optimizer must be
        stepped from one thread at a time: a concurrent call raises RuntimeError.

        Parameters
        ----------
        grads : sequence of ndarray
        grad_scale : float, optional
            Loss scale of this step's gradients (default: the optimizer's
            ``grad_scale``); they are divided by it inside the kernels.

        Returns
        -------
        bool
            True if the step was applied; False if it was skipped because a
            gradient held NaN or Inf (only with ``skip_nonfinite=True``: then no
            parameter, state buffer or step count changed).
        """
        scale = self.grad_scale if grad_scale is None else grad_scale
        max_norm = self.max_grad_norm or 0.0
        result = self._stepper.run(grads, scale, max_norm, self.skip_nonfinite)
        if result is None:  # parameters or state layout changed (e.g. amsgrad switched on)
            self._build_plan()
            result = self._stepper.run(grads, scale, max_norm, self.skip_nonfinite)
        applied, self.last_grad_norm = result
        if not applied:
            self.skipped_steps += 1
        return applied

    def current_lrs(self):
        """The learning rate each group will use at the next step (schedule x plateau factor)."""
        from .schedules import group_rate

        return [group_rate(group, self.step_count) for group in self.param_groups]

    # -- plateau hook (see fusedopt.schedules.ReduceLROnPlateau) ----------------

    def _attach_plateau(self, plateau):
        self._plateau = plateau
        if self._pending_plateau_state is not None:
            plateau.load_state_dict(self._pending_plateau_state)
            self._pending_plateau_state = None

    # -- state_dict -------------------------------------------------------------

    def state_dict(self):
        """The optimizer's state as plain dicts, lists, numbers and NumPy arrays (copies).

        ``{"version", "algorithm", "step_count", "state": {i: {name: array, "step": int}},
        "param_groups": [{hyperparameters..., "params": [i, ...]}], "plateau": dict or None}``.
        A schedule-valued ``lr`` is saved as its ``config()`` (or repr); on load the
        optimizer keeps the schedule it was built with (schedules are rebuilt from code).
        """
        groups, index = [], 0
        for group in self.param_groups:
            saved = {}
            for name, value in group.items():
                if name == "params":
                    continue
                if name == "lr" and callable(value):
                    value = value.config() if hasattr(value, "config") else repr(value)
                saved[name] = copy.deepcopy(value)
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        state, group_of = {}, self._group_of_params()
        for i, buffers in self.state.items():
            entry = {name: np.array(buffer, copy=True) for name, buffer in buffers.items()}
            entry["step"] = self._group_state[group_of[i]]["step"]
            state[i] = entry
        return {
            "version": STATE_DICT_VERSION,
            "algorithm": type(self).__name__,
            "step_count": self.step_count,
            "skipped_steps": self.skipped_steps,
            "state": state,
            "param_groups": groups,
            "plateau": self._plateau.state_dict() if self._plateau is not None else None,
        }

    def _group_of_params(self):
        """group_of[i]: the group of the i-th parameter (groups in order)."""
        return [g for g, group in enumerate(self.param_groups) for _ in group["params"]]

    def load_state_dict(self, state_dict):
        """Restore a state_dict (from this class, same parameter shapes and dtypes).

        Everything is checked before anything changes.  Buffers are copied into
        the optimizer's own aligned state, so resuming gives bitwise the same
        parameters as never stopping.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key in ("state", "param_groups", "step_count"):
            if key not in state_dict:
                raise ValueError(f"state_dict is missing {key!r}")
        version = state_dict.get("version", STATE_DICT_VERSION)
        if version != STATE_DICT_VERSION:
            raise ValueError(f"state_dict has version {version}, this fusedopt reads {STATE_DICT_VERSION}")
        algorithm = state_dict.get("algorithm", type(self).__name__)
        if algorithm != type(self).__name__:
            raise ValueError(f"state_dict is from {algorithm}, not {type(self).__name__}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} param groups, "
                             f"the optimizer has {len(self.param_groups)}")
        params = self._all_params()
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"state_dict param_groups[{g}] has {len(saved['params'])} "
                                 f"parameters, the optimizer's has {len(group['params'])}")
        steps = [None] * len(self.param_groups)
        started = [False] * len(self.param_groups)
        group_of = self._group_of_params()
        for key, entry in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"state_dict state has an entry for parameter {i}, "
                                 f"the optimizer has {len(params)}")
            for name, value in entry.items():
                if name == "step":
                    steps[group_of[i]] = int(value)
                    continue
                if name not in self._state_names:
                    raise ValueError(f"state_dict state[{i}] has unknown buffer {name!r}")
                if name == "momentum_buffer":
                    started[group_of[i]] = True
                value = np.asarray(value)
                if value.shape != params[i].shape or value.dtype != params[i].dtype:
                    raise ValueError(f"state_dict state[{i}][{name!r}] is {value.dtype} "
                                     f"{value.shape}, params[{i}] is {params[i].dtype} "
                                     f"{params[i].shape}")
        # validate the restored hyperparameters before changing anything
        restored = []
        for saved, group in zip(saved_groups, self.param_groups):
            new = dict(group)
            for name, value in saved.items():
                if name == "params" or (name == "lr" and not isinstance(value, numbers.Real)):
                    continue
                new[name] = copy.deepcopy(value)
            restored.append(new)
        restored_state = [{"step": steps[g] if steps[g] is not None else int(state_dict["step_count"]),
                           "momentum_started": started[g]} for g in range(len(restored))]
        _core.validate(self._algorithm, restored, restored_state, int(state_dict["step_count"]),
                       self._decoupled)

        # commit
        for group, new in zip(self.param_groups, restored):
            params_list = group["params"]
            group.clear()
            group.update(new)
            group["params"] = params_list
        saved_state = {int(key): entry for key, entry in state_dict["state"].items()}
        for i, param in enumerate(params):
            buffers = self.state.setdefault(i, {})
            entry = saved_state.get(i, {})
            for name in self._state_names:
                if name in entry:
                    if name not in buffers:
                        buffers[name] = aligned_zeros(param.shape, param.dtype)
                    np.copyto(buffers[name], entry[name], casting="no")
                elif name in buffers:
                    buffers[name].fill(0)  # not saved: as fresh
        for state, new_state in zip(self._group_state, restored_state):
            state.update(new_state)
        self.step_count = int(state_dict["step_count"])
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        plateau_state = state_dict.get("plateau")
        if plateau_state is not None:
            if self._plateau is not None:
                self._plateau.load_state_dict(plateau_state)
            else:
                self._pending_plateau_state = plateau_state
        self._build_plan()

    def __getstate__(self):
        # the C-side plan is rebuilt, not pickled
        state = self.__dict__.copy()
        del state["_stepper"]
        state["step_count"] = self.step_count
        return state

    def __setstate__(self, state):
        step_count = state.pop("step_count")
        self.__dict__.update(state)
        self._stepper = _core.Stepper(self._algorithm, self._decoupled, self.param_groups,
                                      self._group_state)
        self.step_count = step_count
        self._build_plan()

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            for name in sorted(group):
                if name != "params":
                    lines.append(f"    {name}: {group[name]!r}")
        lines.append(")")
        return "\n".join(lines)


class Adam(Optimizer):
    r"""Adam with bias correction, fused over all parameters.

    .. math::

        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        \theta_t = \theta_{t-1} - \eta_t \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`.
    lr : float or schedule
        Learning rate, or a schedule ``f(k)`` evaluated at the k-th step (k = 0, 1, ...).
    betas : (float, float)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float
        Added to the denominator, > 0.
    weight_decay : float
        L2 penalty added to the gradient (``g += weight_decay * p``).
    amsgrad : bool
        Use the running maximum of the second moment (AMSGrad).
    maximize : bool
        Ascend the objective instead of descending.
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    """

    _algorithm = _core.ADAM
    _state_names = ADAM_STATE_NAMES
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False, *, skip_nonfinite=False, max_grad_norm=None,
                 grad_scale=1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale)

    def _state_layout(self):
        return tuple(bool(group["amsgrad"]) for group in self.param_groups)

    def _needed_state(self, group):
        return ADAM_STATE_NAMES if group["amsgrad"] else ADAM_STATE_NAMES[:2]


class AdamW(Adam):
    r"""Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam update.

    Parameters are as for :class:`Adam`, with ``weight_decay`` defaulting to 1e-2.
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False, *, skip_nonfinite=False, max_grad_norm=None,
                 grad_scale=1.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, skip_nonfinite=skip_nonfinite,
                         max_grad_norm=max_grad_norm, grad_scale=grad_scale)


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum (two forms) and Nesterov.

    PyTorch's form (default): ``b = momentum*b + (1-dampening)*g`` (``b = g`` at the
    first step), ``p -= lr*b`` (Nesterov: ``p -= lr*(g + momentum*b)``).

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
    """

    _algorithm = _core.SGD
    _state_names = SGD_STATE_NAMES

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False, lr_in_velocity=False, *, skip_nonfinite=False,
                 max_grad_norm=None, grad_scale=1.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay,
                                      maximize=maximize, lr_in_velocity=lr_in_velocity),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                         grad_scale=grad_scale)

    def _state_layout(self):
        return tuple(group["momentum"] != 0 for group in self.param_groups)

    def _needed_state(self, group):
        return SGD_STATE_NAMES if group["momentum"] != 0 else ()
