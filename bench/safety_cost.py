"""Cost of the gradient-safety options on a large step: plain vs skip_nonfinite vs
max_grad_norm (fused clipping) vs both, float32 Adam, interleaved rounds.

    python bench/safety_cost.py [--elements 1.6e7] [--rounds 15] [--threads 2]
"""
import argparse
import platform
import time

import numpy as np

import fusedopt

VARIANTS = {
    "plain step": {},
    "skip_nonfinite=True": {"skip_nonfinite": True},
    "max_grad_norm=1.0": {"max_grad_norm": 1.0},
    "both": {"skip_nonfinite": True, "max_grad_norm": 1.0},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=float, default=1.6e7)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        fusedopt.set_num_threads(args.threads)
    n = int(args.elements)
    rng = np.random.default_rng(0)
    grads = [(rng.standard_normal(n) * 1e-3).astype(np.float32)]
    optimizers = {name: fusedopt.Adam([np.zeros(n, np.float32)], lr=1e-3, **kw)
                  for name, kw in VARIANTS.items()}
    samples = {name: [] for name in VARIANTS}
    for opt in optimizers.values():
        opt.step(grads)  # first touch of the state
    for r in range(args.rounds):
        names = list(VARIANTS)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate the order each round
        for name in names:
            start = time.perf_counter()
            optimizers[name].step(grads)
            samples[name].append(time.perf_counter() - start)
    base = np.median(samples["plain step"])
    print(f"float32 Adam, {n:.3g} elements, {fusedopt.get_num_threads()} threads, "
          f"median of {args.rounds} interleaved rounds ({platform.processor() or platform.machine()})\n")
    print("| variant | median | vs plain step |\n|---|---|---|")
    for name in VARIANTS:
        median = np.median(samples[name])
        print(f"| {name} | {median * 1e3:.2f} ms | {median / base:.3f}x |")


if __name__ == "__main__":
    main()
