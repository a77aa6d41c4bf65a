"""ReduceLROnPlateau: the one stateful scheduler, driven by a monitored metric.

Private layout of :mod:`fusedopt.schedules`: import the public names from there.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ._base import Schedule, _choice, _integer, _rate, _real, group_rate
from .closed_form import Lambda, Scaled

__all__ = ["ReduceLROnPlateau"]


def _split(lr: Any) -> tuple[Schedule, float]:
    """A schedule-valued ``lr`` as (unscaled schedule, factor): a :class:`Scaled`
    unwrapped, any other schedule with factor 1 (a plain callable ``f`` as the
    schedule ``Lambda(1.0, f)``, which gives the same values)."""
    if isinstance(lr, Scaled):
        return lr.schedule, lr.factor
    if isinstance(lr, Schedule):
        return lr, 1.0
    return Lambda(1.0, lr), 1.0


class ReduceLROnPlateau:
    r"""Lower the rate when a monitored metric stops improving.

    Makes the same decisions as PyTorch's
    ``torch.optim.lr_scheduler.ReduceLROnPlateau`` for the same metrics and
    arguments, and composes with schedules.  Call :meth:`step` with the
    metric once per evaluation (usually once per epoch).  A metric ``m``
    improves on the best value ``b`` so far when

    ====  =====  ==============================
    mode  thr.   improvement
    ====  =====  ==============================
    min   rel    ``m < b * (1 - threshold)``
    min   abs    ``m < b - threshold``
    max   rel    ``m > b * (1 + threshold)``
    max   abs    ``m > b + threshold``
    ====  =====  ==============================

    Otherwise the epoch is bad.  Bad epochs during a cooldown do not count.
    When more than ``patience`` bad epochs have been counted, the rate of
    every param group is lowered, then the cooldown starts and the bad-epoch
    count resets.  How depends on what the group's ``"lr"`` holds:

    * a number: it is rewritten exactly as PyTorch rewrites it,
      ``group["lr"] = new`` with

      .. math:: \mathrm{new} = \max(\mathrm{old} \cdot \mathrm{factor},\ \mathrm{min\_lr}_i)

      applied only if :math:`\mathrm{old} - \mathrm{new} > \mathrm{eps}`;
    * a schedule: it is replaced by ``Scaled(base, f')``, where ``base`` is
      the unscaled schedule (the schedule inside a :class:`Scaled`, whose
      factor is ``f``; ``f = 1`` for any other schedule) and

      .. math:: f' = \max(f \cdot \mathrm{factor},\ \mathrm{min\_lr}_i / \mathrm{base}(k))

      (the second term only when ``base(k) > 0``; ``k`` is the optimizer's
      ``step_count``, so ``base(k)`` is the base rate of its next step),
      applied only if :math:`\mathrm{base}(k)\,(f - f') > \mathrm{eps}`.
      The rate stays at or above ``min_lr`` and the schedule keeps its shape.

    No other key of the param groups is read or written.  A NaN metric counts
    as no improvement (a bad epoch); it never makes the rate NaN.

    Parameters
    ----------
    optimizer : fusedopt optimizer
        Anything with ``param_groups`` (dicts with ``"lr"``, a number or a
        schedule) and ``step_count``.  If it has a method
        ``attach_scheduler``, that is called with this object (last in the
        constructor): the optimizer then includes this scheduler's
        :meth:`state_dict` in its own ``state_dict()`` and restores it with
        :meth:`load_state_dict` when it is loaded.
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
        How far each group's rate has been lowered, see :attr:`factors`.
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
        # the numeric lr of each group when we started (None: a schedule), for `factors`
        self._initial_lrs = [None if callable(g["lr"]) else float(g["lr"]) for g in groups]
        # Last, so that an optimizer restoring a saved state into us on attach
        # finds every attribute in place.
        attach = getattr(optimizer, "attach_scheduler", None)
        if attach is not None:
            attach(self)

    @property
    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    @property
    def factors(self) -> list[float]:
        """How far each param group's rate has been lowered, one float per group.

        For a group whose ``"lr"`` is a schedule: the factor of its
        :class:`Scaled` schedule (1.0 for an unscaled schedule).  For a group
        whose ``"lr"`` is a number: the ratio of the current ``"lr"`` to the
        one the group had when this object was created (for a group added
        later: just before its first reduction; 1.0 before that, and 1.0
        when that rate was 0).  The ratio also reflects rates the user set.
        """
        out = []
        for i, group in enumerate(self.optimizer.param_groups):
            lr = group["lr"]
            if callable(lr):
                out.append(float(lr.factor) if isinstance(lr, Scaled) else 1.0)
                continue
            initial = self._initial_lrs[i] if i < len(self._initial_lrs) else None
            out.append(float(lr) / initial if initial else 1.0)
        return out

    @property
    def in_cooldown(self) -> bool:
        """Whether bad epochs are currently ignored."""
        return self.cooldown_counter > 0

    def effective_lrs(self) -> list[float]:
        """Rates the optimizer's next step will use, one per param group
        (:func:`~fusedopt.schedules.group_rate` at the optimizer's ``step_count``)."""
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
        if len(self._initial_lrs) < len(groups):
            self._initial_lrs.extend([None] * (len(groups) - len(self._initial_lrs)))
        step = int(self.optimizer.step_count)
        for i, (group, min_lr) in enumerate(zip(groups, self.min_lrs)):
            lr = group["lr"]
            if not callable(lr):  # a number: exactly what PyTorch writes
                old = float(lr)
                if self._initial_lrs[i] is None:  # a group added (or switched) later
                    self._initial_lrs[i] = old
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
                continue
            base, old = _split(lr)  # a schedule: lower its factor, keep its shape
            rate = float(base(step))
            new = old * self.factor
            if rate > 0:
                new = max(new, min_lr / rate)
            if rate * (old - new) > self.eps:
                group["lr"] = Scaled(base, new)

    def state_dict(self) -> dict[str, Any]:
        """State as plain numbers, strings, lists and None.

        Besides the counters and arguments it holds ``"factors"``: the
        :class:`Scaled` factor of each group whose ``"lr"`` is a schedule
        (None for a numeric ``"lr"``), because an optimizer restores numeric
        rates from its own state_dict but keeps the schedules it was built
        with; :meth:`load_state_dict` puts the factors back.
        """
        factors = self.factors
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
            "factors": [f if callable(g["lr"]) else None
                        for f, g in zip(factors, self.optimizer.param_groups)],
            "initial_lrs": list(self._initial_lrs),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`.

        A group whose ``"lr"`` is a schedule gets the saved factor back:
        ``group["lr"]`` becomes ``Scaled(base, factor)`` (``base`` alone for a
        factor of 1), ``base`` being its unscaled schedule.  Numeric rates are
        left alone: the optimizer's own ``load_state_dict`` restores them.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        required = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
                    "min_lr", "eps", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")
        missing = [key for key in required if key not in state]
        if missing:
            raise ValueError(f"state is missing {missing}")
        # every value checked as the constructor checks it, before anything changes
        groups = self.optimizer.param_groups
        mode = _choice("mode", state["mode"], ("min", "max"))
        threshold_mode = _choice("threshold_mode", state["threshold_mode"], ("rel", "abs"))
        factor = _real("factor", state["factor"])
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        patience = _integer("patience", state["patience"], 0)
        threshold = _real("threshold", state["threshold"])
        cooldown = _integer("cooldown", state["cooldown"], 0)
        min_lr = state["min_lr"]
        if isinstance(min_lr, (list, tuple)):
            default_min_lr, min_lrs = None, [_rate("min_lr", m) for m in min_lr]
        else:
            default_min_lr = _rate("min_lr", min_lr)
            min_lrs = [default_min_lr] * len(groups)
        eps = _real("eps", state["eps"])
        best = _real("best", state["best"])
        num_bad_epochs = _integer("num_bad_epochs", state["num_bad_epochs"], 0)
        cooldown_counter = _integer("cooldown_counter", state["cooldown_counter"], 0)
        last_epoch = _integer("last_epoch", state["last_epoch"], 0)
        initial_lrs = state.get("initial_lrs")
        if initial_lrs is not None:
            if not isinstance(initial_lrs, (list, tuple)):
                raise TypeError(f"initial_lrs must be a list, got {type(initial_lrs).__name__}")
            initial_lrs = [None if v is None else _rate("initial_lrs", v) for v in initial_lrs]
        factors = state.get("factors")  # absent in states saved before fusedopt had it
        new_lrs = {}
        if factors is not None:
            if not isinstance(factors, (list, tuple)) or len(factors) != len(groups):
                raise ValueError(f"factors must hold one value for each of the {len(groups)} "
                                 f"param groups, got {factors!r}")
            for i, (group, f) in enumerate(zip(groups, factors)):
                lr = group["lr"]
                if f is None or not callable(lr):
                    continue
                base, current = _split(lr)
                if _rate("factor", f) != current:
                    new_lrs[i] = base if f == 1.0 else Scaled(base, f)
        # commit
        self.mode, self.threshold_mode, self.factor = mode, threshold_mode, factor
        self.patience, self.threshold, self.cooldown = patience, threshold, cooldown
        self._default_min_lr, self.min_lrs = default_min_lr, min_lrs
        self.eps, self.best = eps, best
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = \
            num_bad_epochs, cooldown_counter, last_epoch
        if initial_lrs is not None:
            self._initial_lrs = initial_lrs
        for i, lr in new_lrs.items():
            groups[i]["lr"] = lr

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor!r}, "
                f"patience={self.patience!r}, threshold={self.threshold!r}, "
                f"threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown!r}, "
                f"min_lr={self.min_lrs!r}, eps={self.eps!r})")


