"""Learning-rate schedules for fusedopt optimizers.

A schedule is a pure, closed-form function of the optimizer step count
``t`` (an integer, ``t >= 0``)::

    >>> from fusedopt.schedules import CosineAnnealing, LinearWarmup
    >>> sched = LinearWarmup(CosineAnnealing(0.1, T_max=1000), warmup_steps=100)
    >>> sched(0), sched(100)
    (0.0, 0.1)

Calling it with a NumPy integer array returns the float64 array of rates in
one vectorised call (``sched(np.arange(1100))``); a scalar call returns a
Python ``float``.  Scalar and array evaluation run the same NumPy code, so
they agree bit for bit.  Schedules hold no mutable state: they are immutable
after construction, comparable with ``==``, picklable when their parts are,
and describe themselves with :meth:`Schedule.config` and ``repr``.

Pass a schedule as the learning rate of an optimizer
(``fusedopt.Adam(params, lr=sched)``); at its ``k``-th ``step()``
(``k = 0, 1, ...``) the optimizer uses ``sched(k)``, times the group's
``"lr_factor"`` (``1.0`` unless :class:`ReduceLROnPlateau` lowered it).

Per-epoch schedules
-------------------
Schedules count optimizer steps.  To change the rate once per epoch, wrap the
schedule in :class:`PerEpoch`; "divide the rate by 10 every 30 epochs" is::

    sched = PerEpoch(StepDecay(0.1, step_size=30), steps_per_epoch=len(loader))

Alternatively, drive the optimizer by epoch yourself: keep a schedule of the
epoch number and write its value, a plain float, into the param groups at the
start of each epoch::

    by_epoch = StepDecay(0.1, step_size=30)
    for epoch in range(n_epochs):
        for group in opt.param_groups:
            group["lr"] = by_epoch(epoch)
        for batch in loader:
            ...

The two agree whenever every epoch has ``steps_per_epoch`` steps.

Relation to PyTorch
-------------------
With the k-th optimizer step using ``sched(k)``, the values equal those of
``torch.optim.lr_scheduler`` (``StepLR``, ``MultiStepLR``, ``ExponentialLR``,
``CosineAnnealingLR`` for ``t <= T_max``, ``CosineAnnealingWarmRestarts``,
``PolynomialLR``, ``OneCycleLR`` and ``LambdaLR``) when PyTorch's scheduler is
stepped once per optimizer step.  PyTorch computes several of them
recursively, which accumulates rounding error; the values here are computed
in closed form every time.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Schedule",
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
    "ReduceLROnPlateau",
    "from_config",
    "plot",
]


# ---------------------------------------------------------------------------
# Argument checking.  Every error names the offending argument.
# ---------------------------------------------------------------------------


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def _rate(name: str, value: Any) -> float:
    """A learning rate: finite and >= 0."""
    value = _real(name, value)
    if not (0.0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _positive(name: str, value: Any) -> float:
    value = _real(name, value)
    if not (0.0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _integer(name: str, value: Any, minimum: int) -> int:
    """An integer >= minimum; integral floats such as ``100.0`` are accepted."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        value = operator.index(value)
    elif isinstance(value, numbers.Real):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    else:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        relation = "> 0" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {relation}, got {value!r}")
    return value


def _milestones(name: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of step counts, got {values!r}")
    steps = tuple(_integer(name, v, 0) for v in values)
    if any(b < a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{name} must be sorted in increasing order, got {list(steps)}")
    return steps


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


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


def _steps(t: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate step counts; return them flat (int64, contiguous) and their shape."""
    arr = np.asarray(t)
    if arr.dtype == object:  # Python ints beyond int64, or mixed junk
        try:
            arr = np.asarray(t, dtype=np.int64)
        except OverflowError:
            raise ValueError("t is too large for a step count") from None
        except (TypeError, ValueError):
            raise TypeError(f"t must be an integer step count or an integer array, got {t!r}") from None
    kind = arr.dtype.kind
    if kind == "f":
        # Tolerate whole-valued floats such as 3.0; a fractional step is a bug.
        if not np.all(np.isfinite(arr) & (arr == np.floor(arr))):
            raise ValueError(f"t must hold whole step counts, got {t!r}")
        if arr.size and np.any(arr >= 2.0**63):
            raise ValueError("t is too large for a step count")
    elif kind not in "iu":
        raise TypeError(f"t must be an integer step count or an integer array, got {t!r}")
    if arr.size and np.any(arr < 0):
        raise ValueError(f"t must be >= 0, got {t!r}" if arr.ndim == 0 else
                         "t must be >= 0, the array holds negative steps")
    if kind == "u" and arr.size and np.any(arr > np.iinfo(np.int64).max):
        raise ValueError("t is too large")
    flat = np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
    return flat, arr.shape


def _cos(x: np.ndarray) -> np.ndarray:
    # The C library's cosine, element by element, rather than np.cos: on
    # AVX-512 CPUs NumPy switches to a SIMD cosine that can differ by an ulp.
    # Near the end of an annealing phase 1 + cos(x) cancels and turns that
    # ulp into ~1e-11 relative error, which would break the step-for-step
    # agreement with PyTorch (which uses math.cos) on such machines.
    return np.fromiter(map(math.cos, x.tolist()), dtype=np.float64, count=x.size)


def _plain(value: Any) -> Any:
    """Convert a stored parameter to plain numbers / strings / lists / dicts."""
    if isinstance(value, Schedule):
        return value.config()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if callable(value):
        return _qualname(value)
    return value


def _qualname(f: Callable) -> str:
    return getattr(f, "__qualname__", None) or type(f).__qualname__


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if callable(value) and not isinstance(value, Schedule):
        return _qualname(value)
    return repr(value)


# ---------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------


class Schedule:
    """Base class of learning-rate schedules: ``rate = schedule(t)``.

    Subclasses list their constructor arguments in ``_params`` (stored under
    the same names, read-only) and implement ``_rates(t)`` for a flat int64
    array ``t`` of validated steps.  The base class supplies evaluation,
    immutability, equality, hashing, pickling, :meth:`config` and ``repr``.
    """

    # _memo caches a block of upcoming rates for the optimizer's one-step-at-a-time
    # calls: a schedule is a pure function of t, so this is invisible except in speed.
    __slots__ = ("_memo",)
    _params: tuple[str, ...] = ()
    #: rates computed ahead per scalar call (1: no look-ahead, e.g. for user functions)
    _block_size = 256

    def __call__(self, t):
        """Learning rate at step ``t``.

        Parameters
        ----------
        t : int or array_like of int
            Optimizer step count(s), ``t >= 0``: the ``t``-th ``step()`` call,
            counting from 0.

        Returns
        -------
        float or numpy.ndarray
            A Python ``float`` for a scalar ``t``; otherwise a float64 array of
            the shape of ``t``.

        Raises
        ------
        ValueError
            If ``t`` (or any element of it) is negative or not a whole number.
        """
        if type(t) is int and t >= 0:  # the optimizer's hot path: one step after another
            memo = getattr(self, "_memo", None)
            if memo is not None and 0 <= t - memo[0] < len(memo[1]):
                return memo[1][t - memo[0]]
            block = self._rates(np.arange(t, t + self._lookahead(), dtype=np.int64)).tolist()
            object.__setattr__(self, "_memo", (t, block))  # one tuple: safe across threads
            return block[0]
        steps, shape = _steps(t)
        rates = self._rates(steps)
        if shape == ():
            return float(rates[0])
        return rates.reshape(shape)

    def _lookahead(self) -> int:
        """Block size of the scalar memo: the smallest of this schedule's and its parts'."""
        size = self._block_size
        for name in self._params:
            value = getattr(self, name)
            for part in value if isinstance(value, tuple) else (value,):
                if isinstance(part, Schedule):
                    size = min(size, part._lookahead())
        return size

    def _rates(self, t: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _init(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new schedule instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _args(self) -> tuple:
        return tuple(getattr(self, name) for name in self._params)

    def __reduce__(self):
        # Rebuild through the constructor: validation runs again and the
        # immutability guard is never bypassed.
        args = tuple(list(a) if isinstance(a, tuple) else a for a in self._args())
        return (type(self), args)

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._args() == other._args()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._args()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={_show(getattr(self, name))}" for name in self._params)
        return f"{type(self).__name__}({inner})"

    def config(self) -> dict[str, Any]:
        """Plain description of the schedule.

        Returns
        -------
        dict
            ``{"type": <class name>, <argument>: <value>, ...}`` holding only
            numbers, strings, lists and (for nested schedules) nested config
            dicts; suitable for JSON and experiment logs.  :func:`from_config`
            rebuilds the schedule.
        """
        cfg: dict[str, Any] = {"type": type(self).__name__}
        for name in self._params:
            cfg[name] = _plain(getattr(self, name))
        return cfg


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


_SCHEDULES = {cls.__name__: cls for cls in (
    Constant, StepDecay, MultiStepDecay, ExponentialDecay, CosineAnnealing,
    CosineAnnealingWarmRestarts, Polynomial, OneCycle, Lambda, LinearWarmup, Sequential,
    PerEpoch)}


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


# ---------------------------------------------------------------------------
# Reduce on plateau
# ---------------------------------------------------------------------------


def _base_rate(lr: Any, step: int) -> float:
    return float(lr(step)) if callable(lr) else float(lr)


def group_rate(group: Mapping[str, Any], step: int) -> float:
    """The rate a param group uses at optimizer step ``step``: its ``"lr"`` (a number
    or a schedule of the step) times its ``"lr_factor"`` (lowered by
    :class:`ReduceLROnPlateau`; 1 when absent)."""
    return _base_rate(group["lr"], step) * float(group.get("lr_factor", 1.0))


class ReduceLROnPlateau:
    r"""Lower the rate when a monitored metric stops improving.

    Makes the same decisions as PyTorch's
    ``torch.optim.lr_scheduler.ReduceLROnPlateau`` for the same metrics and
    arguments, but composes with schedules: instead of overwriting the rate it
    lowers each param group's multiplicative ``"lr_factor"``, so the
    optimizer's rate at step ``k`` becomes ``base(k) * group["lr_factor"]``,
    where ``base`` is whatever the group's ``"lr"`` is (a number or a
    schedule).

    Call :meth:`step` with the metric once per evaluation (usually once per
    epoch).  A metric ``m`` improves on the best value ``b`` so far when

    ====  =====  ==============================
    mode  thr.   improvement
    ====  =====  ==============================
    min   rel    ``m < b * (1 - threshold)``
    min   abs    ``m < b - threshold``
    max   rel    ``m > b * (1 + threshold)``
    max   abs    ``m > b + threshold``
    ====  =====  ==============================

    Otherwise the epoch is bad.  Bad epochs during a cooldown do not count.
    When more than ``patience`` bad epochs have been counted, every group's
    factor ``f`` becomes

    .. math:: f' = \max(f \cdot \mathrm{factor},\ \mathrm{min\_lr}_i / \mathrm{base})

    (the second term only when ``base > 0``; ``base`` is the group's base
    rate at the optimizer's next step), which keeps the rate at or above
    ``min_lr``.  The change is applied only if it lowers the rate by more
    than ``eps``: :math:`\mathrm{base}\,(f - f') > \mathrm{eps}`.  Then the
    cooldown starts and the bad-epoch count resets.  With a constant base
    rate this is PyTorch's ``new_lr = max(old_lr * factor, min_lr)``.

    A NaN metric counts as no improvement (a bad epoch); it never makes the
    rate NaN.

    Parameters
    ----------
    optimizer : fusedopt optimizer
        Anything with ``param_groups`` (dicts with ``"lr"`` and
        ``"lr_factor"``) and ``step_count``.  If it has
        ``_attach_plateau``, that is called with this object, so that the
        optimizer's ``state_dict()`` includes this object's state.
    mode : {"min", "max"}, default "min"
        Whether the metric should decrease or increase.
    factor : float, default 0.1
        Multiplier applied on a plateau, in ``(0, 1)``.
    patience : int, default 10
        Bad epochs tolerated before reducing, ``>= 0``.
    threshold : float, default 1e-4
        Minimal change that counts as an improvement.
    threshold_mode : {"rel", "abs"}, default "rel"
        Whether ``threshold`` is relative to the best value or absolute.
    cooldown : int, default 0
        Epochs after a reduction during which bad epochs are ignored, ``>= 0``.
    min_lr : float or list of float, default 0.0
        Lower bound on the effective rate, one for all groups or one per group.
    eps : float, default 1e-8
        Reductions smaller than this are skipped.

    Attributes
    ----------
    best : float
        Best metric seen so far (``inf`` / ``-inf`` before the first).
    num_bad_epochs : int
        Bad epochs counted since the last improvement or reduction.
    cooldown_counter : int
        Epochs of cooldown left.
    factors : list of float
        Current ``"lr_factor"`` of each param group.
    last_epoch : int
        Number of :meth:`step` calls.
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8) -> None:
        self.mode = _choice("mode", mode, ("min", "max"))
        self.threshold_mode = _choice("threshold_mode", threshold_mode, ("rel", "abs"))
        factor = _real("factor", factor)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        self.factor = factor
        self.patience = _integer("patience", patience, 0)
        self.threshold = _real("threshold", threshold)
        self.cooldown = _integer("cooldown", cooldown, 0)
        self.eps = _real("eps", eps)
        self.optimizer = optimizer
        groups = optimizer.param_groups
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"min_lr must hold one value per param group "
                                 f"({len(groups)}), got {len(min_lr)}")
            self._default_min_lr = None
            self.min_lrs = [_rate("min_lr", m) for m in min_lr]
        else:
            self._default_min_lr = _rate("min_lr", min_lr)
            self.min_lrs = [self._default_min_lr] * len(groups)
        self.best = self._worst
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        for group in groups:
            group.setdefault("lr_factor", 1.0)
        # Last, so that an optimizer restoring a saved state into us on attach
        # finds every attribute in place.
        attach = getattr(optimizer, "_attach_plateau", None)
        if attach is not None:
            attach(self)

    @property
    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    @property
    def factors(self) -> list[float]:
        """Current multiplicative factor of each param group."""
        return [float(g.get("lr_factor", 1.0)) for g in self.optimizer.param_groups]

    @property
    def in_cooldown(self) -> bool:
        """Whether bad epochs are currently ignored."""
        return self.cooldown_counter > 0

    def effective_lrs(self) -> list[float]:
        """Rates the optimizer's next step will use, one per param group."""
        step = int(self.optimizer.step_count)
        return [group_rate(g, step) for g in self.optimizer.param_groups]

    def is_better(self, metric: float, best: float) -> bool:
        """Whether ``metric`` improves significantly on ``best`` (False for NaN)."""
        if self.mode == "min" and self.threshold_mode == "rel":
            return metric < best * (1.0 - self.threshold)
        if self.mode == "min":
            return metric < best - self.threshold
        if self.threshold_mode == "rel":
            return metric > best * (self.threshold + 1.0)
        return metric > best + self.threshold

    def step(self, metric: float) -> None:
        """Record one evaluation of the metric and reduce the rate if on a plateau.

        Parameters
        ----------
        metric : float
            The monitored value (anything ``float()`` accepts, e.g. a 0-d array).
        """
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):  # never true for NaN
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce(self) -> None:
        groups = self.optimizer.param_groups
        if len(self.min_lrs) != len(groups):
            if self._default_min_lr is None:
                raise RuntimeError(f"the optimizer has {len(groups)} param groups but min_lr "
                                   f"holds {len(self.min_lrs)} values")
            self.min_lrs = [self._default_min_lr] * len(groups)
        step = int(self.optimizer.step_count)
        for group, min_lr in zip(groups, self.min_lrs):
            base = _base_rate(group["lr"], step)
            old = float(group.get("lr_factor", 1.0))
            new = old * self.factor
            if base > 0:
                new = max(new, min_lr / base)
            if base * (old - new) > self.eps:
                group["lr_factor"] = new

    def state_dict(self) -> dict[str, Any]:
        """State as plain numbers, strings and lists.

        The factors themselves are not included: they live in the param groups,
        which the optimizer saves.
        """
        return {
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            # a float applies to every group (also ones added later); a list is per group
            "min_lr": list(self.min_lrs) if self._default_min_lr is None else self._default_min_lr,
            "eps": self.eps,
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        self.mode = _choice("mode", state["mode"], ("min", "max"))
        self.threshold_mode = _choice("threshold_mode", state["threshold_mode"], ("rel", "abs"))
        self.factor = float(state["factor"])
        self.patience = int(state["patience"])
        self.threshold = float(state["threshold"])
        self.cooldown = int(state["cooldown"])
        min_lr = state["min_lr"]
        if isinstance(min_lr, (list, tuple)):
            self._default_min_lr = None
            self.min_lrs = [float(m) for m in min_lr]
        else:
            self._default_min_lr = float(min_lr)
            self.min_lrs = [self._default_min_lr] * len(self.optimizer.param_groups)
        self.eps = float(state["eps"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.last_epoch = int(state["last_epoch"])

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor!r}, "
                f"patience={self.patience!r}, threshold={self.threshold!r}, "
                f"threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown!r}, "
                f"min_lr={self.min_lrs!r}, eps={self.eps!r})")


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------


def plot(schedule_or_list: Any, steps: int | Sequence[int], ax: Any = None, *,
         labels: Sequence[str] | None = None) -> Any:
    """Draw learning rate against step with matplotlib.

    Parameters
    ----------
    schedule_or_list : Schedule, list of Schedule, or dict
        What to draw.  A dict maps legend labels to schedules.  Plain
        callables ``f(t) -> float`` work too.
    steps : int or array_like of int
        ``n`` draws steps ``0 .. n-1``; an array gives the steps explicitly.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made if omitted.
    labels : list of str, optional
        Legend labels.  Default: a callable's ``label`` attribute if it has
        one, else its ``repr``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError('fusedopt.schedules.plot needs matplotlib; install it with '
                          'pip install "fusedopt[plot]"') from err

    if isinstance(schedule_or_list, Mapping):
        labels = list(schedule_or_list) if labels is None else labels
        schedules = list(schedule_or_list.values())
    elif callable(schedule_or_list):
        schedules = [schedule_or_list]
    else:
        schedules = list(schedule_or_list)
    if labels is not None and len(labels) != len(schedules):
        raise ValueError(f"labels must hold one label per schedule ({len(schedules)}), "
                         f"got {len(labels)}")
    xs = np.arange(steps) if np.ndim(steps) == 0 else np.asarray(steps)

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    for i, sched in enumerate(schedules):
        if isinstance(sched, Schedule):
            ys = sched(xs)
        else:
            ys = np.array([float(sched(int(x))) for x in xs])
        label = labels[i] if labels is not None else getattr(sched, "label", None) or repr(sched)
        ax.plot(xs, ys, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax.figure
