"""The schedule base class, the argument checkers and :func:`group_rate`.

Private to :mod:`fusedopt.schedules`: import the public names from there.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Callable, Iterable, Mapping

import numpy as np

__all__ = ["Schedule", "group_rate"]


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

    def __mul__(self, factor: Any) -> "Schedule":
        """``schedule * factor``: the :class:`Scaled` schedule ``factor * schedule(t)``.

        So ``group["lr"] *= 0.1`` works when ``group["lr"]`` is a schedule, as it
        does for a number.  ``factor`` must be a real number, finite and ``>= 0``.
        """
        if not isinstance(factor, numbers.Real):
            return NotImplemented
        from .closed_form import Scaled  # Scaled is a Schedule: imported on use

        return Scaled(self, factor)

    def __rmul__(self, factor: Any) -> "Schedule":
        """``factor * schedule``: the same as ``schedule * factor``."""
        return self.__mul__(factor)

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


def group_rate(group: Mapping[str, Any], step: int) -> float:
    """The learning rate a param group uses at optimizer step ``step``.

    Parameters
    ----------
    group : dict
        A param group: its ``"lr"`` is a number or a schedule (any callable
        of the step count).
    step : int
        The optimizer step count; ``opt.step_count`` gives the rate the next
        ``step()`` will use.

    Returns
    -------
    float
        ``group["lr"]`` itself when it is a number, else ``group["lr"](step)``.
    """
    lr = group["lr"]
    return float(lr(step)) if callable(lr) else float(lr)
