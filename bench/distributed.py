"""Data-parallel and ZeRO-1 steps over MPI: step time split into communication and update.

    mpiexec -n 1 python bench/distributed.py --out bench/results   # one rank (the baseline)
    mpiexec -n 2 python bench/distributed.py --out bench/results   # two ranks
    (from the source tree: PYTHONPATH=src before mpiexec)

One float32 AdamW over ``--elements`` parameters (default 3.2e7) in one
``fusedopt.FlatParams`` buffer, ``--threads`` OpenMP threads per rank (default 1:
the ranks share the machine's cores).  Each phase of a step is timed on its own,
``--repeats`` times after one untimed step, with a barrier before each phase so
that a phase's time is the slowest rank's:

- DistributedOptimizer: pack the gradients into the flat buffer, ``Allreduce``
  (in place, sum), the fused step (mean inside the kernel);
- ZeroRedundancyOptimizer: ``Reduce_scatter`` of the gradient buffer (no packing:
  FlatParams), the fused step of the shard, ``Allgatherv`` of the parameters
  in place.

Medians, in ms; optimizer state bytes per rank (measured: ``state_nbytes``).
Rank 0 prints markdown and, with ``--out``, writes distributed-<ranks>-<stamp>.md.
"""
import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

try:
    import fusedopt
    from fusedopt.distributed import MPI, DistributedOptimizer, ZeroRedundancyOptimizer
except ImportError as error:
    sys.exit(f"cannot import fusedopt.distributed ({error}); run from the repository root with "
             "PYTHONPATH=src, and pip install mpi4py mpich")

COMM = MPI.COMM_WORLD
RANK, N = COMM.Get_rank(), COMM.Get_size()


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        COMM.Barrier()
        start = time.perf_counter()
        fn()
        COMM.Barrier()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=float, default=3.2e7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    n = int(args.elements)
    fusedopt.set_num_threads(args.threads)
    rng = np.random.default_rng(RANK)
    rows = {}

    # data parallel
    flat = fusedopt.FlatParams([(n,)], np.float32)
    flat.param[:] = np.random.default_rng(0).standard_normal(flat.param.size, dtype=np.float32)
    grad = 1e-3 * rng.standard_normal(n, dtype=np.float32)
    dp = DistributedOptimizer(fusedopt.AdamW([flat.param], lr=1e-3))
    grads = [flat.grad]
    flat.grad[:n] = grad
    dp.step(grads)
    buffer = dp._flat(np.dtype(np.float32), flat.grad.size)
    # one rank: the step neither packs nor communicates
    pack = timed(lambda: np.copyto(buffer, flat.grad), args.repeats) if N > 1 else 0.0
    allreduce = timed(lambda: COMM.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), args.repeats) if N > 1 else 0.0
    update = timed(lambda: dp.optimizer.step([buffer], grad_scale=N), args.repeats)
    total = timed(lambda: dp.step(grads), args.repeats)
    rows["DistributedOptimizer"] = dict(pack=pack, communication=allreduce, update=update, total=total,
                                        state=dp.optimizer.state_nbytes())
    del dp, buffer

    # ZeRO-1
    zero = ZeroRedundancyOptimizer(flat, fusedopt.AdamW, lr=1e-3)
    zero.step([flat.grad])
    shard = zero._grad_shard
    counts = zero._counts.tolist()
    reduce_scatter = (timed(lambda: COMM.Reduce_scatter(flat.grad, shard, counts, op=MPI.SUM), args.repeats)
                      if N > 1 else 0.0)
    shard_grads = zero._shard_grads(shard)
    update = timed(lambda: zero.optimizer.step(shard_grads, grad_scale=N), args.repeats)
    allgather = timed(zero._gather_params, args.repeats) if N > 1 else 0.0
    total = timed(lambda: zero.step([flat.grad]), args.repeats)
    state = np.empty(N, dtype=np.int64)
    COMM.Allgather(np.array([zero.state_nbytes()], dtype=np.int64), state)
    rows["ZeroRedundancyOptimizer"] = dict(pack=0.0, communication=reduce_scatter + allgather,
                                           reduce_scatter=reduce_scatter, allgather=allgather, update=update,
                                           total=total, state=int(state.max()))
    if RANK:
        return
    ms = lambda s: f"{1e3 * s:.1f}"  # noqa: E731
    lines = [f"## {N} rank{'s' if N > 1 else ''}, AdamW float32, {n:.3g} elements, {args.threads} thread(s) "
             f"per rank\n", f"`mpiexec -n {N} python {' '.join(sys.argv)}`; {MPI.Get_library_version().split(chr(10))[0]}; "
             f"medians of {args.repeats}\n",
             "| optimizer | total ms | pack ms | communication ms | update ms | state bytes / rank | "
             "state bytes / element / rank |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        comm = ms(r["communication"])
        if "reduce_scatter" in r:
            comm += f" (Reduce_scatter {ms(r['reduce_scatter'])} + Allgatherv {ms(r['allgather'])})"
        else:
            comm += " (Allreduce)"
        lines.append(f"| {name} | {ms(r['total'])} | {ms(r['pack'])} | {comm} | {ms(r['update'])} | "
                     f"{r['state']:,} | {r['state'] / n:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"distributed-{N}-{stamp}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
