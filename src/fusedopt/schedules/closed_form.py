"""Closed-form schedules: pure functions of the optimizer step count.

Private layout of :mod:`fusedopt.schedules`: import the public names from there.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ._base import (Schedule, _choice, _cos, _integer, _milestones, _positive, _rate,
                    _real)

__all__ = [
    "Constant",
    "StepDecay",
    "MultiStepDecay",
    "ExponentialDecay",
    "CosineAnnealing",
    "CosineAnnealingWarmRestarts",
    "Polynomial",
    "LinearWarmup",
    "OneCycle",
    "Lambda",
    "Sequential",
    "PerEpoch",
    "Scaled",
    "from_config",
]


def _as_schedule(name: str, value: Any) -> "Schedule":
    """Schedules pass through; a plain number becomes a :class:`Constant`."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return Constant(_rate(f"{name} (a constant lr)", value))
    raise TypeError(
        f"{name} must be a Schedule or a number, got {value!r} "
        "(wrap a plain function f as Lambda(lr, f))"
    )


# ---------------------------------------------------------------------------
# Elementary schedules
# ---------------------------------------------------------------------------


class Constant(Schedule):
    r"""Constant rate.

    .. math:: \eta_t = \mathrm{lr}

    Parameters
    ----------
    lr : float
        The rate, ``>= 0``.
    """

    __slots__ = ("lr",)
    _params = ("lr",)

    def __init__(self, lr: float) -> None:
        self._init(lr=_rate("lr", lr))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        return np.full(t.shape, self.lr, dtype=np.float64)


class StepDecay(Schedule):
    r"""Multiply the rate by ``gamma`` every ``step_size`` steps.

    .. math:: \eta_t = \mathrm{lr} \cdot \gamma^{\lfloor t / \mathrm{step\_size} \rfloor}

    Equals PyTorch's ``StepLR``.  Wrap it in :class:`PerEpoch` to decay every
    ``step_size`` epochs.

    Parameters
    ----------
    lr : float
        Initial rate, ``>= 0``.
    step_size : int
        Steps between two decays, ``> 0``.
    gamma : float, default 0.1
        Multiplicative decay, ``> 0``.
    """

    __slots__ = ("lr", "step_size", "gamma")
    _params = ("lr", "step_size", "gamma")

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self._init(lr=_rate("lr", lr), step_size=_integer("step_size", step_size, 1),
                   gamma=_positive("gamma", gamma))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        return self.lr * self.gamma ** (t // self.step_size)


class MultiStepDecay(Schedule):
    r"""Multiply the rate by ``gamma`` at each milestone.

    .. math:: \eta_t = \mathrm{lr} \cdot \gamma^{\#\{m \in \mathrm{milestones} : m \le t\}}

    Equals PyTorch's ``MultiStepLR`` (a milestone listed twice decays twice).

    Parameters
    ----------
    lr : float
        Initial rate, ``>= 0``.
    milestones : sequence of int
        Steps at which to decay, sorted, ``>= 0``.
    gamma : float, default 0.1
        Multiplicative decay, ``> 0``.
    """

    __slots__ = ("lr", "milestones", "gamma")
    _params = ("lr", "milestones", "gamma")

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float = 0.1) -> None:
        self._init(lr=_rate("lr", lr), milestones=_milestones("milestones", milestones),
                   gamma=_positive("gamma", gamma))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        passed = np.searchsorted(np.asarray(self.milestones, dtype=np.int64), t, side="right")
        return self.lr * self.gamma ** passed


class ExponentialDecay(Schedule):
    r"""Multiply the rate by ``gamma`` every step.

    .. math:: \eta_t = \mathrm{lr} \cdot \gamma^{t}

    Equals PyTorch's ``ExponentialLR``.

    Parameters
    ----------
    lr : float
        Initial rate, ``>= 0``.
    gamma : float
        Multiplicative decay per step, ``> 0``.
    """

    __slots__ = ("lr", "gamma")
    _params = ("lr", "gamma")

    def __init__(self, lr: float, gamma: float) -> None:
        self._init(lr=_rate("lr", lr), gamma=_positive("gamma", gamma))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        return self.lr * self.gamma ** t


class CosineAnnealing(Schedule):
    r"""Half a cosine from ``lr`` down to ``eta_min`` over ``T_max`` steps.

    .. math::

        \eta_t = \eta_{\min} + (\mathrm{lr} - \eta_{\min})
                 \frac{1 + \cos(\pi \min(t, T_{\max}) / T_{\max})}{2}

    so the rate stays at ``eta_min`` from ``T_max`` on.  Equals PyTorch's
    ``CosineAnnealingLR`` for ``t <= T_max`` (PyTorch's keeps following the
    cosine upwards after ``T_max``).

    Parameters
    ----------
    lr : float
        Initial rate, ``>= 0``.
    T_max : int
        Length of the annealing, in steps, ``> 0``.
    eta_min : float, default 0.0
        Final rate, ``>= 0``.
    """

    __slots__ = ("lr", "T_max", "eta_min")
    _params = ("lr", "T_max", "eta_min")

    def __init__(self, lr: float, T_max: int, eta_min: float = 0.0) -> None:
        self._init(lr=_rate("lr", lr), T_max=_integer("T_max", T_max, 1),
                   eta_min=_rate("eta_min", eta_min))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        progress = np.minimum(t, self.T_max)
        return self.eta_min + (self.lr - self.eta_min) * (
            1.0 + _cos(np.pi * progress / self.T_max)) / 2


class CosineAnnealingWarmRestarts(Schedule):
    r"""Cosine annealing restarted periodically (SGDR).

    Cycle ``i`` lasts :math:`T_i = T_0 \cdot T_{\mathrm{mult}}^i` steps and
    starts at :math:`S_i = \sum_{j<i} T_j`.  With ``i`` the cycle holding
    ``t`` and :math:`T_{\mathrm{cur}} = t - S_i`,

    .. math::

        \eta_t = \eta_{\min} + (\mathrm{lr} - \eta_{\min})
                 \frac{1 + \cos(\pi T_{\mathrm{cur}} / T_i)}{2}

    Equals PyTorch's ``CosineAnnealingWarmRestarts`` stepped once per step.
    The cycle is found with exact integer arithmetic.

    Parameters
    ----------
    lr : float
        Rate at the start of every cycle, ``>= 0``.
    T_0 : int
        Length of the first cycle, ``> 0``.
    T_mult : int, default 1
        Growth factor of the cycle length, ``>= 1``.
    eta_min : float, default 0.0
        Rate approached at the end of every cycle, ``>= 0``.
    """

    __slots__ = ("lr", "T_0", "T_mult", "eta_min")
    _params = ("lr", "T_0", "T_mult", "eta_min")

    def __init__(self, lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:
        self._init(lr=_rate("lr", lr), T_0=_integer("T_0", T_0, 1),
                   T_mult=_integer("T_mult", T_mult, 1), eta_min=_rate("eta_min", eta_min))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        if self.T_mult == 1:
            t_cur = t % self.T_0
            t_i = np.full(t.shape, float(self.T_0))
        else:
            # Cycle starts grow geometrically: at most ~63 of them fit in int64.
            last = int(t.max()) if t.size else 0
            starts, lengths = [0], [self.T_0]
            while starts[-1] + lengths[-1] <= last:
                starts.append(starts[-1] + lengths[-1])
                lengths.append(lengths[-1] * self.T_mult)
            cycle = np.searchsorted(np.asarray(starts, dtype=np.int64), t, side="right") - 1
            t_cur = t - np.asarray(starts, dtype=np.int64)[cycle]
            t_i = np.asarray(lengths, dtype=np.float64)[cycle]
        return self.eta_min + (self.lr - self.eta_min) * (1.0 + _cos(np.pi * t_cur / t_i)) / 2


class Polynomial(Schedule):
    r"""Polynomial decay from ``lr`` to ``end_lr`` over ``total_steps`` steps.

    .. math::

        \eta_t = \mathrm{end\_lr} + (\mathrm{lr} - \mathrm{end\_lr})
                 \left(1 - \frac{\min(t, T)}{T}\right)^{p}

    with ``T = total_steps`` and ``p = power``; the rate stays at ``end_lr``
    from ``T`` on.  With ``end_lr = 0`` this equals PyTorch's ``PolynomialLR``
    with ``total_iters = total_steps``.

    Parameters
    ----------
    lr : float
        Initial rate, ``>= 0``.
    total_steps : int
        Length of the decay, ``> 0``.
    power : float, default 1.0
        Exponent, ``> 0`` (1 is linear decay).
    end_lr : float, default 0.0
        Final rate, ``>= 0``.
    """

    __slots__ = ("lr", "total_steps", "power", "end_lr")
    _params = ("lr", "total_steps", "power", "end_lr")

    def __init__(self, lr: float, total_steps: int, power: float = 1.0,
                 end_lr: float = 0.0) -> None:
        self._init(lr=_rate("lr", lr), total_steps=_integer("total_steps", total_steps, 1),
                   power=_positive("power", power), end_lr=_rate("end_lr", end_lr))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        remaining = 1.0 - np.minimum(t, self.total_steps) / self.total_steps
        return self.end_lr + (self.lr - self.end_lr) * remaining ** self.power


class OneCycle(Schedule):
    r"""The 1cycle policy: warm up to ``max_lr``, then anneal far below the start.

    With ``T = total_steps``, start rate :math:`a = \mathrm{max\_lr} / \mathrm{div\_factor}`,
    final rate :math:`z = a / \mathrm{final\_div\_factor}` and end of the
    warm-up :math:`e = \mathrm{pct\_start} \cdot T - 1`:

    .. math::

        \eta_t = \begin{cases}
            A(a, \mathrm{max\_lr}, t / e) & t \le e \\
            A(\mathrm{max\_lr}, z, \min(1, (t - e) / (T - 1 - e))) & t > e
        \end{cases}

    where :math:`A(u, v, p) = v + (u - v)(1 + \cos \pi p)/2` for
    ``anneal="cos"`` and :math:`A(u, v, p) = (v - u) p + u` for
    ``anneal="linear"``.  The rate stays at its final value after step
    ``T - 1``.  Equals PyTorch's ``OneCycleLR`` (two phases, no momentum
    cycling) for every step ``t < T``; where ``e = 0``, where PyTorch divides
    by zero, step 0 gets ``max_lr``.

    Parameters
    ----------
    max_lr : float
        Peak rate, ``>= 0``.
    total_steps : int
        Length of the cycle, ``> 0``.
    pct_start : float, default 0.3
        Fraction of the cycle spent warming up, in ``(0, 1)``.
    anneal : {"cos", "linear"}, default "cos"
        Shape of both phases.
    div_factor : float, default 25.0
        ``max_lr / div_factor`` is the starting rate, ``> 0``.
    final_div_factor : float, default 1e4
        The final rate is the starting rate divided by this, ``> 0``.
    """

    __slots__ = ("max_lr", "total_steps", "pct_start", "anneal", "div_factor",
                 "final_div_factor")
    _params = ("max_lr", "total_steps", "pct_start", "anneal", "div_factor", "final_div_factor")

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal: str = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> None:
        pct_start = _real("pct_start", pct_start)
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"pct_start must lie in (0, 1), got {pct_start!r}")
        self._init(max_lr=_rate("max_lr", max_lr),
                   total_steps=_integer("total_steps", total_steps, 1),
                   pct_start=pct_start, anneal=_choice("anneal", anneal, ("cos", "linear")),
                   div_factor=_positive("div_factor", div_factor),
                   final_div_factor=_positive("final_div_factor", final_div_factor))

    def _anneal(self, start: float, end: float, pct: np.ndarray) -> np.ndarray:
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (_cos(np.pi * pct) + 1)
        return (end - start) * pct + start

    def _rates(self, t: np.ndarray) -> np.ndarray:
        start_lr = self.max_lr / self.div_factor
        final_lr = start_lr / self.final_div_factor
        # Same expressions, in the same order, as PyTorch's OneCycleLR.
        warm_end = float(self.pct_start * self.total_steps) - 1
        last = self.total_steps - 1
        steps = t.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            warming = (steps <= warm_end) & (warm_end > 0)
            warm_pct = np.where(warming, steps / warm_end, 0.0)
            span = last - warm_end
            cool_pct = np.where(warming, 0.0, np.minimum((steps - warm_end) / span, 1.0))
        out = np.empty(t.shape, dtype=np.float64)
        out[warming] = self._anneal(start_lr, self.max_lr, warm_pct[warming])
        cooling = ~warming
        out[cooling] = self._anneal(self.max_lr, final_lr, cool_pct[cooling])
        return out


class Lambda(Schedule):
    r"""Rate given by a user function of the step.

    .. math:: \eta_t = \mathrm{lr} \cdot f(t)

    Equals PyTorch's ``LambdaLR``.  ``f`` is called with a Python ``int``,
    once per requested step (also for array input), so it need not accept
    arrays.  It should be pure: the same ``t`` must always give the same
    value.

    :meth:`config` records only ``f``'s qualified name (``f.__qualname__``):
    functions are rebuilt from code, not serialised, so :func:`from_config`
    needs the function handed back in.  A ``Lambda`` pickles only if ``f``
    does (module-level functions do; lambdas and closures do not).

    Parameters
    ----------
    lr : float
        Base rate, ``>= 0``.
    f : callable
        ``f(t: int) -> float``, the multiplier at step ``t``.
    """

    __slots__ = ("lr", "f")
    _block_size = 1  # call the user's function only for the steps asked for
    _params = ("lr", "f")

    def __init__(self, lr: float, f: Callable[[int], float]) -> None:
        if not callable(f):
            raise TypeError(f"f must be callable, got {f!r}")
        self._init(lr=_rate("lr", lr), f=f)

    def _rates(self, t: np.ndarray) -> np.ndarray:
        factors = np.fromiter((self.f(k) for k in t.tolist()), dtype=np.float64, count=t.size)
        return self.lr * factors


# ---------------------------------------------------------------------------
# Combinators
# ---------------------------------------------------------------------------


class LinearWarmup(Schedule):
    r"""Linear warm-up that then hands over to another schedule.

    During the first ``w = warmup_steps`` steps the rate rises linearly from
    ``start_factor * s(0)`` towards ``s(0)``; afterwards the wrapped schedule
    ``s`` runs, starting its own count at 0 when the warm-up ends:

    .. math::

        \eta_t = \begin{cases}
            s(0) \left(f_0 + (1 - f_0) \, t / w\right) & t < w \\
            s(t - w) & t \ge w
        \end{cases}

    with :math:`f_0` = ``start_factor``.  So
    ``LinearWarmup(CosineAnnealing(lr, T_max=n), warmup_steps=w)`` warms up
    for ``w`` steps and then anneals over the following ``n`` steps.

    Parameters
    ----------
    schedule : Schedule or float
        The schedule to warm up into; a number means a constant rate.
    warmup_steps : int
        Length of the warm-up, ``>= 0`` (0 disables it).
    start_factor : float, default 0.0
        Fraction of ``s(0)`` used at step 0, in ``[0, 1]``.
    """

    __slots__ = ("schedule", "warmup_steps", "start_factor")
    _params = ("schedule", "warmup_steps", "start_factor")

    def __init__(self, schedule: Schedule | float, warmup_steps: int,
                 start_factor: float = 0.0) -> None:
        start_factor = _real("start_factor", start_factor)
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"start_factor must lie in [0, 1], got {start_factor!r}")
        self._init(schedule=_as_schedule("schedule", schedule),
                   warmup_steps=_integer("warmup_steps", warmup_steps, 0),
                   start_factor=start_factor)

    def _rates(self, t: np.ndarray) -> np.ndarray:
        w, f0 = self.warmup_steps, self.start_factor
        out = np.empty(t.shape, dtype=np.float64)
        warming = t < w
        if warming.any():
            target = self.schedule._rates(np.zeros(1, dtype=np.int64))[0]
            out[warming] = target * (f0 + (1.0 - f0) * t[warming] / w)
        rest = ~warming
        if rest.any():
            out[rest] = self.schedule._rates(t[rest] - w)
        return out


class Sequential(Schedule):
    r"""Run schedules one after another, switching at the milestones.

    With milestones :math:`m_1 \le \dots \le m_{n-1}` (and :math:`m_0 = 0`),
    schedule ``i`` runs for :math:`m_i \le t < m_{i+1}`, restarting its own
    count at 0:

    .. math:: \eta_t = s_i(t - m_i)

    Parameters
    ----------
    schedules : sequence of Schedule or float
        The ``n`` schedules (numbers mean constant rates).
    milestones : sequence of int
        The ``n - 1`` switching steps, sorted, ``>= 0``.
    """

    __slots__ = ("schedules", "milestones")
    _params = ("schedules", "milestones")

    def __init__(self, schedules: Sequence[Schedule | float], milestones: Sequence[int]) -> None:
        if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Iterable):
            raise TypeError(f"schedules must be a sequence of schedules, got {schedules!r}")
        parts = tuple(_as_schedule("schedules", s) for s in schedules)
        if not parts:
            raise ValueError("schedules must hold at least one schedule")
        steps = _milestones("milestones", milestones)
        if len(steps) != len(parts) - 1:
            raise ValueError(f"milestones must hold len(schedules) - 1 = {len(parts) - 1} "
                             f"steps, got {len(steps)}")
        self._init(schedules=parts, milestones=steps)

    def _rates(self, t: np.ndarray) -> np.ndarray:
        starts = (0,) + self.milestones
        which = np.searchsorted(np.asarray(self.milestones, dtype=np.int64), t, side="right")
        out = np.empty(t.shape, dtype=np.float64)
        for i, (schedule, start) in enumerate(zip(self.schedules, starts)):
            mine = which == i
            if mine.any():
                out[mine] = schedule._rates(t[mine] - start)
        return out


class PerEpoch(Schedule):
    r"""Evaluate a schedule on the epoch number instead of the step.

    .. math:: \eta_t = s(\lfloor t / \mathrm{steps\_per\_epoch} \rfloor)

    ``PerEpoch(StepDecay(0.1, step_size=30), steps_per_epoch=len(loader))``
    divides the rate by 10 every 30 epochs.

    Parameters
    ----------
    schedule : Schedule or float
        Schedule of the epoch number.
    steps_per_epoch : int
        Optimizer steps per epoch, ``> 0``.
    """

    __slots__ = ("schedule", "steps_per_epoch")
    _params = ("schedule", "steps_per_epoch")

    def __init__(self, schedule: Schedule | float, steps_per_epoch: int) -> None:
        self._init(schedule=_as_schedule("schedule", schedule),
                   steps_per_epoch=_integer("steps_per_epoch", steps_per_epoch, 1))

    def _rates(self, t: np.ndarray) -> np.ndarray:
        return self.schedule._rates(t // self.steps_per_epoch)


class Scaled(Schedule):
    r"""A schedule times a constant factor.

    .. math:: \eta_t = \mathrm{factor} \cdot s(t)

    ``schedule * factor`` and ``factor * schedule`` build it, so
    ``group["lr"] *= 0.1`` lowers a schedule-valued rate just as it lowers a
    number; :class:`ReduceLROnPlateau` lowers a schedule-driven rate the same
    way.  A ``Scaled`` of a ``Scaled`` collapses into one with the factors
    multiplied: ``Scaled(Scaled(s, a), b) == Scaled(s, a * b)``.

    Parameters
    ----------
    schedule : Schedule or float
        The schedule to scale; a number means a constant rate.
    factor : float
        The multiplier, finite and ``>= 0``.
    """

    __slots__ = ("schedule", "factor")
    _params = ("schedule", "factor")

    def __init__(self, schedule: Schedule | float, factor: float) -> None:
        schedule = _as_schedule("schedule", schedule)
        factor = _rate("factor", factor)
        if isinstance(schedule, Scaled):
            schedule, factor = schedule.schedule, _rate("factor", schedule.factor * factor)
        self._init(schedule=schedule, factor=factor)

    def _rates(self, t: np.ndarray) -> np.ndarray:
        return self.factor * self.schedule._rates(t)


_SCHEDULES = {cls.__name__: cls for cls in (
    Constant, StepDecay, MultiStepDecay, ExponentialDecay, CosineAnnealing,
    CosineAnnealingWarmRestarts, Polynomial, OneCycle, Lambda, LinearWarmup, Sequential,
    PerEpoch, Scaled)}


def from_config(config: Mapping[str, Any],
                functions: Mapping[str, Callable] | None = None) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.config`.

    Parameters
    ----------
    config : dict
        Output of ``schedule.config()`` (possibly after a JSON round trip).
    functions : dict, optional
        For :class:`Lambda` schedules: maps the recorded qualified name to the
        function, since functions are not stored in the config.

    Returns
    -------
    Schedule
    """
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind not in _SCHEDULES:
        raise ValueError(f"config type must be one of {sorted(_SCHEDULES)}, got {kind!r}")
    if kind == "Lambda":
        name = cfg["f"]
        if not functions or name not in functions:
            raise ValueError(f"Lambda config names function {name!r}; pass it in functions=")
        cfg["f"] = functions[name]
    for key in ("schedule",):
        if isinstance(cfg.get(key), Mapping):
            cfg[key] = from_config(cfg[key], functions)
    if kind == "Sequential":
        cfg["schedules"] = [from_config(c, functions) if isinstance(c, Mapping) else c
                            for c in cfg["schedules"]]
    return _SCHEDULES[kind](**cfg)


