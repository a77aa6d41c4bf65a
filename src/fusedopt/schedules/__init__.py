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
(``k = 0, 1, ...``) the optimizer uses ``sched(k)``.

What ``group["lr"]`` holds
--------------------------
The param group keeps the schedule object itself: ``opt.param_groups[0]["lr"]``
is ``sched``, not a number, and no other key is added to the group.  The rate
in force at the next step is ``opt.current_lrs()``, or
``group_rate(group, opt.step_count)`` for one group.  Multiplying works as
for a number: ``group["lr"] *= 0.1`` turns the schedule into
``Scaled(sched, 0.1)``, which gives ``0.1 * sched(t)``.  A plain number in
``group["lr"]`` is simply the rate, as in PyTorch.

:class:`ReduceLROnPlateau` rewrites a numeric ``group["lr"]`` exactly as
PyTorch's does, and lowers a schedule by wrapping it in :class:`Scaled`.

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

Layout
------
The closed-form schedules live in ``fusedopt.schedules.closed_form``,
:class:`ReduceLROnPlateau` in ``fusedopt.schedules.plateau`` and :func:`plot`
in ``fusedopt.schedules.plot`` (which imports matplotlib only when called;
``import fusedopt.schedules`` never does).  Import the names from
``fusedopt.schedules``.
"""

from ._base import Schedule, group_rate
from . import closed_form
from .closed_form import (
    Constant,
    CosineAnnealing,
    CosineAnnealingWarmRestarts,
    ExponentialDecay,
    Lambda,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PerEpoch,
    Polynomial,
    Scaled,
    Sequential,
    StepDecay,
    from_config,
)
from .plateau import ReduceLROnPlateau
from .plot import plot  # matplotlib itself is imported only when plot() is called

__all__ = ["Schedule", *closed_form.__all__, "ReduceLROnPlateau", "group_rate", "plot"]
