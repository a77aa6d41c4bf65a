"""Pictures of schedules (matplotlib, imported only when :func:`plot` is called).

Private layout of :mod:`fusedopt.schedules`: import the public names from there.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ._base import Schedule

__all__ = ["plot"]


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
