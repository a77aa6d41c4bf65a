"""The one timing harness every measurement goes through (optimizers, STREAM, sweeps).

Variants are timed round-robin: each round takes one sample of every variant,
starting one place later each round, so slow drifts of a shared machine (other
jobs, clock changes) hit every variant alike and ratios of medians hold.
A sample is the median of the per-call times of a batch of back-to-back calls
that lasts at least ``min_time`` seconds and has at least ``min_calls`` calls;
a call that alone lasts ``min_time`` is a sample by itself.  The median inside
the batch drops the first, colder call after switching variants.
"""
import gc
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

#: upper bound on calls per sample (a 1 µs call at 20 ms is 20 000 calls)
MAX_CALLS = 1 << 16


@dataclass
class Variant:
    """One thing to time.

    Attributes
    ----------
    key : tuple
        Identifies the variant in the results, e.g. ("fusedopt", 2).
    step : callable
        One call = one unit of work (an optimizer step, a STREAM kernel pass).
    setup : callable
        Run before each sample: puts the process in this variant's configuration
        (thread counts, the parallel cutoff).
    samples, sample_min : list of float
        Filled by :func:`measure`: per round, the median and fastest call (seconds).
    calls_per_sample : int
        Chosen by calibration.
    """

    key: tuple
    step: Callable[[], object]
    setup: Callable[[], object] = lambda: None
    #: run before each call, outside the timed window (e.g. idling so thread teams fall asleep)
    before_call: Optional[Callable[[], object]] = None
    samples: list = field(default_factory=list)
    sample_min: list = field(default_factory=list)
    calls_per_sample: int = 0

    @property
    def median(self):
        """Median over rounds of the per-sample times (seconds per call)."""
        return float(np.median(self.samples))

    @property
    def best(self):
        """Fastest sample (seconds per call)."""
        return float(np.min(self.samples))


def _timed_calls(step, n_calls, before_call=None):
    """Per-call wall times (seconds) of `n_calls` calls, GC paused; `before_call`
    (if any) runs before each call, untimed."""
    clock, times = time.perf_counter, []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call is noise, not the step's cost
    try:
        for _ in range(n_calls):
            if before_call is not None:
                before_call()
            start = clock()
            step()
            times.append(clock() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def calibrate(variant, min_time, min_calls):
    """Set ``variant.calls_per_sample`` from a timed warm-up call and a doubling probe."""
    variant.setup()
    warm_up = _timed_calls(variant.step, 1, variant.before_call)[0]  # also pays first-step allocation, page faults
    if warm_up >= 2 * min_time:
        # a long call: one per sample; a probe would only double its cost
        variant.calls_per_sample = 1
        return
    n_calls = 1
    while True:
        per_call = sum(_timed_calls(variant.step, n_calls, variant.before_call)) / n_calls
        if per_call * n_calls >= min_time / 8 or n_calls >= MAX_CALLS:
            break
        n_calls *= 2
    if per_call >= min_time:
        variant.calls_per_sample = 1
    else:
        variant.calls_per_sample = min(MAX_CALLS, max(min_calls, math.ceil(min_time / per_call)))


def measure(variants, rounds, min_time=0.02, min_calls=3, progress=None, timing=None):
    """Time `variants` round-robin for `rounds` rounds; fills their samples.

    Parameters
    ----------
    variants : list of Variant
    rounds : int
    min_time : float
        Target duration of one sample (seconds).
    min_calls : int
        Fewest calls in a sample whose calls are shorter than `min_time`.
    progress : callable, optional
        Called once per sample taken (e.g. a tqdm bar's ``update``).
    timing : dict, optional
        Filled with the wall time of the calibration and of each round (seconds),
        from which the duration of a run with other settings is estimated.
    """
    timing = {} if timing is None else timing
    start = time.perf_counter()
    for variant in variants:
        calibrate(variant, min_time, min_calls)
    timing["calibration_s"] = time.perf_counter() - start
    timing["rounds_s"] = []
    for round_index in range(rounds):
        start = time.perf_counter()
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            variant.setup()
            times = _timed_calls(variant.step, variant.calls_per_sample, variant.before_call)
            variant.samples.append(float(np.median(times)))
            variant.sample_min.append(float(min(times)))
            if progress is not None:
                progress()
        timing["rounds_s"].append(time.perf_counter() - start)
    return variants


def timer_overhead(n=10_000):
    """Median cost of one timed empty call (seconds): the bias each per-call time carries."""
    return float(np.median(_timed_calls(lambda: None, n)))
