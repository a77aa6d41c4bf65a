"""``python -m fusedopt bench``: a short step-time comparison with a NumPy Adam.

The NumPy side is :func:`fusedopt.slow.adam_`, the pure-NumPy twin of the
kernel, on its own copy of the arrays.  The full benchmark (torch peers,
STREAM roof, thread scaling, plots) is ``python bench/run.py`` in the source tree.
"""
import time

import numpy as np

import fusedopt
from fusedopt import slow

LR = 1e-4


class _NumPyAdam:
    """Adam state for :func:`fusedopt.slow.adam_`, stepped like an optimizer."""

    def __init__(self, param, lr):
        self.param, self.lr = param, lr
        self.exp_avg, self.exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
        self.step_count = 0

    def step(self, grads):
        self.step_count += 1
        slow.adam_(self.param, grads[0], self.exp_avg, self.exp_avg_sq, step=self.step_count,
                   lr=self.lr, beta1=0.9, beta2=0.999, eps=1e-8)


def median_step_seconds(step, grads, repeats, min_seconds=0.02):
    """Median over `repeats` samples of the time of one step (each sample averages
    enough calls to last at least `min_seconds`)."""
    step(grads)  # warm up: first-step allocations, page faults
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            step(grads)
        if time.perf_counter() - start >= min_seconds or calls >= 1 << 20:
            break
        calls *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            step(grads)
        samples.append((time.perf_counter() - start) / calls)
    return float(np.median(samples))


def _format_seconds(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def main(args):
    dtype = np.dtype(args.dtype)
    info = fusedopt.info()
    print(f"fusedopt {info['version']}: {info['num_threads']} threads, SIMD {info['simd_path']}, "
          f"OpenMP {'on' if info['openmp'] else 'off'}; Adam step, {dtype.name}, "
          f"median of {args.repeats}\n")
    header = f"| {'elements':>10} | {'fusedopt':>10} | {'fusedopt.slow':>14} | {'speed-up':>8} | {'fusedopt GB/s':>13} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        n = int(size)
        fused_param = rng.standard_normal(n).astype(dtype)
        numpy_param = fused_param.copy()
        grads = [(rng.standard_normal(n) * 1e-3).astype(dtype)]
        fused = fusedopt.Adam([fused_param], lr=LR)  # defaults: betas (0.9, 0.999), eps 1e-8
        reference = _NumPyAdam(numpy_param, LR)
        t_fused = median_step_seconds(fused.step, grads, args.repeats)
        t_numpy = median_step_seconds(reference.step, grads, args.repeats)
        # Adam reads p, g, m, v and writes p, m, v: 7 element transfers
        gbps = 7 * n * dtype.itemsize / t_fused / 1e9
        print(f"| {n:>10.3g} | {_format_seconds(t_fused):>10} | {_format_seconds(t_numpy):>14} | "
              f"{t_numpy / t_fused:>7.1f}x | {gbps:>13.1f} |")
    return 0
