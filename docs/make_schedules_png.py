"""Regenerate docs/schedules.png (the schedules picture in the README).

Run from the repository root, with fusedopt importable::

    python docs/make_schedules_png.py
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

from fusedopt.schedules import (  # noqa: E402
    CosineAnnealing, LinearWarmup, OneCycle, PerEpoch, StepDecay, plot)

STEPS_PER_EPOCH = 100
EPOCHS = 90
TOTAL = STEPS_PER_EPOCH * EPOCHS
WARMUP = 5 * STEPS_PER_EPOCH

schedules = {
    "PerEpoch(StepDecay(0.1, step_size=30), steps_per_epoch=100)":
        PerEpoch(StepDecay(0.1, step_size=30), steps_per_epoch=STEPS_PER_EPOCH),
    f"CosineAnnealing(0.1, T_max={TOTAL})": CosineAnnealing(0.1, T_max=TOTAL),
    f"LinearWarmup(CosineAnnealing(0.1, T_max={TOTAL - WARMUP}), warmup_steps={WARMUP})":
        LinearWarmup(CosineAnnealing(0.1, T_max=TOTAL - WARMUP), warmup_steps=WARMUP),
    f"OneCycle(0.1, total_steps={TOTAL})": OneCycle(0.1, total_steps=TOTAL),
}

fig, (linear, log) = plt.subplots(1, 2, figsize=(13, 5.6))
plot(schedules, TOTAL, ax=linear)
plot(schedules, TOTAL, ax=log)
linear.set_title("learning rate per optimizer step (90 epochs of 100 steps)")
log.set_title("the same, log scale")
log.set_yscale("log")
log.set_ylim(1e-7, 0.3)  # the cosines end at exactly 0, off a log axis
for ax in (linear, log):
    ax.get_legend().remove()
    ax.set_xlim(0, TOTAL)
handles, labels = linear.get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
fig.tight_layout(rect=(0, 0.12, 1, 1))
fig.savefig(Path(__file__).with_name("schedules.png"), dpi=110)
