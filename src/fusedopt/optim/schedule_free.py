"""Schedule-free AdamW and SGD: the specs and the classes of csrc/algorithms/schedule_free.h."""
import numbers

import numpy as np

from .. import slow
from ._base import Optimizer
from ._spec import Hyper, Spec

__all__ = ["AdamWScheduleFree", "SGDScheduleFree", "ADAMW_SCHEDULE_FREE_SPEC", "SGD_SCHEDULE_FREE_SPEC"]


def _first_beta(group, prefix=""):
    """The group's beta1 (AdamW) or momentum (SGD), in (0, 1): eval() moves the
    parameter by 1 - 1/beta1, so 0 has no x."""
    adaptive = "betas" in group
    name = prefix + ("betas[0]" if adaptive else "momentum")
    try:
        beta1 = group["betas"][0] if adaptive else group["momentum"]
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"{name} is missing or not a pair") from None
    if isinstance(beta1, (bool, np.bool_)) or not isinstance(beta1, numbers.Real) or not 0.0 < beta1 < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1) for a schedule-free optimizer, got {beta1!r}")
    return float(beta1)


def _check_first_beta(group):
    _first_beta(group)


_SHARED = dict(check=_check_first_beta, real_counters=("weight_sum", "lr_max"),
               group_counters=("k", "weight_sum", "lr_max"))
_SCHEDULE = (Hyper("weight_decay", "rate"), Hyper("warmup_steps", "rate"), Hyper("r", "rate"),
             Hyper("weight_lr_power", "rate"))
ADAMW_SCHEDULE_FREE_SPEC = Spec("schedule_free", (
    Hyper("lr", "lr"), Hyper("betas", "betas"), Hyper("eps", "positive")) + _SCHEDULE,
    constants={"adaptive": 1.0}, **_SHARED)
SGD_SCHEDULE_FREE_SPEC = Spec("schedule_free", (
    Hyper("lr", "lr"), Hyper("momentum", "unit", fields=("beta1",))) + _SCHEDULE,
    constants={"adaptive": 0.0, "beta2": 0.0, "eps": 1.0}, **_SHARED)


class _ScheduleFree(Optimizer):
    """train() / eval() and the mode in the state_dict, for both schedule-free optimizers."""

    def __init__(self, params, defaults, **options):
        self._train_mode = False   # as the schedulefree package: call train() before stepping
        super().__init__(params, defaults, **options)

    @property
    def train_mode(self):
        """True after :meth:`train` (the parameters hold y), False after :meth:`eval` (x)."""
        return self._train_mode

    def train(self):
        """Set the parameters to y, where gradients are taken (``p = lerp(p, z, 1 - beta1)``)."""
        self._switch(True, slow.schedule_free.to_train_)

    def eval(self):
        """Set the parameters to x, the point to evaluate and save (``p = lerp(p, z, 1 - 1/beta1)``)."""
        self._switch(False, slow.schedule_free.to_eval_)

    def _switch(self, train, move):
        with self._stepper.lock:
            self._not_inside_a_step("train()" if train else "eval()")
            if self._train_mode == train:
                return
            self._build_plan()      # checks every array, and reshapes z with a reshaped parameter
            step = self.spec.counters.index("step")
            n_groups = len(self._param_groups)
            moves = []              # everything checked before the first array moves
            for g, group in enumerate(self._param_groups):
                beta1 = _first_beta(group, f"param_groups[{g}]: " if n_groups > 1 else "")
                for p in group["params"]:
                    state = self._states.get(id(p))
                    if state is not None and state.array is p and state.counters[step] > 0:
                        moves.append((p, state.slots["z"].reshape(p.shape), beta1))
            for p, z, beta1 in moves:   # arrays whose z exists (they have stepped)
                move(p, z, beta1)
            self._train_mode = train
            self._stepper.plan = None   # a step being prepared in another thread re-checks the mode

    def _build_plan(self, states=None, keep_removed=False, grads=None):
        if grads is not None and not self._train_mode:   # a step's rebuild, after eval() in another thread
            raise self._eval_mode_error()
        super()._build_plan(states, keep_removed, grads)

    def _eval_mode_error(self):
        return RuntimeError(f"{type(self).__name__} is in eval mode: call train() before step() "
                            "(and eval() before evaluating or saving the model)")

    def step(self, grads, *, grad_scale=None):
        if not self._train_mode:
            raise self._eval_mode_error()
        return super().step(grads, grad_scale=grad_scale)

    def state_dict(self):
        state_dict = super().state_dict()
        state_dict["train_mode"] = self._train_mode
        return state_dict

    def load_state_dict(self, state_dict):
        """As :meth:`Optimizer.load_state_dict`; the mode is restored too (the
        parameters are not moved: they are whatever the caller loaded)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mode = state_dict.get("train_mode", False)
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"state_dict['train_mode'] must be True or False, got {mode!r}")
        with self._stepper.lock:
            super().load_state_dict(state_dict)
            self._train_mode = bool(mode)
            self._stepper.plan = None


class AdamWScheduleFree(_ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al., "The Road Less Scheduled", NeurIPS 2024),
    exact to the ``schedulefree`` package's ``AdamWScheduleFree``.

    No learning-rate schedule is needed: the parameter holds y, an interpolation
    between the averaged iterate x and the base sequence z (a state slot).

    .. math::

        c_{t} = \frac{w_t}{\sum_{i\le t} w_i},\ w_t = t^r \max_{i\le t}\eta_i^{p}, \quad
        \hat g = \frac{g}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} + \lambda y, \\
        y \leftarrow \operatorname{lerp}(y, z, c_t) + \eta_t(\beta_1(1-c_t) - 1)\hat g, \quad
        z \leftarrow z - \eta_t \hat g

    Call :meth:`train` before stepping (the optimizer starts in eval mode, as the
    package does) and :meth:`eval` before evaluating or saving the model; ``step``
    in eval mode raises RuntimeError.  ``k``, ``weight_sum`` and ``lr_max`` are
    counters of the param group (an array added to a group takes them on); the
    state_dict records the mode.

    Parameters
    ----------
    params : list of ndarray or list of dict
        See :class:`Optimizer`: float32 or float64 (z is a parameter sequence,
        kept at the parameter's precision).
    lr : float or schedule
        Peak rate; ``warmup_steps`` ramps it linearly from ``lr / warmup_steps``.
    betas : (float, float)
        Interpolation (in (0, 1)) and second-moment decay.
    eps : float
        > 0.
    weight_decay : float
        Added to the normalised gradient at y.
    warmup_steps : int
    r : float
        Polynomial weighting of the average (0: uniform).
    weight_lr_power : float
        The average weights each step by ``lr_max ** weight_lr_power``.
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    """

    spec = ADAMW_SCHEDULE_FREE_SPEC

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0,
                 weight_lr_power=2.0, *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm, grad_scale=grad_scale)


class SGDScheduleFree(_ScheduleFree):
    r"""Schedule-free SGD (Defazio et al., NeurIPS 2024), exact to the ``schedulefree``
    package's ``SGDScheduleFree``: :class:`AdamWScheduleFree` without the second
    moment (``momentum`` in (0, 1) plays beta1's part).

    Parameters
    ----------
    params : list of ndarray or list of dict
        float32 or float64 arrays, see :class:`Optimizer`.
    lr : float or schedule
    momentum : float
        In (0, 1).
    weight_decay, warmup_steps, r, weight_lr_power
        As :class:`AdamWScheduleFree`.
    skip_nonfinite, max_grad_norm, grad_scale
        Gradient safety, see :class:`Optimizer`.
    """

    spec = SGD_SCHEDULE_FREE_SPEC

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0,
                 *, skip_nonfinite=False, max_grad_norm=None, grad_scale=1.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power),
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm, grad_scale=grad_scale)
