"""Row-sparse steps of embedding tables: fusedopt against torch's sparse optimizers and dense steps.

    PYTHONPATH=src python bench/sparse.py                       # 1e6x64 and 1e5x300, 4096 lookups, 7 rounds
    PYTHONPATH=src python bench/sparse.py --tables 1e6x64 --lookups 4096 16384 --repeats 5

Each workload is one float32 table of R x C (a row per token) and batches of
``--lookups`` row numbers drawn from a Zipf law (exponent 1.1, over the rows in a
random order), so that frequent rows repeat within a batch as in real text;
a gradient holds one row per lookup, duplicates included, as an embedding's
backward gives it.  Timed side by side, round-robin (bench/harness.py), on
``--threads`` threads, every implementation stepping its own copy of the table;
successive calls cycle through ``BATCHES`` different batches, so that a step
finds in cache only the rows that are frequent (as in training, where the next
batch looks up other rows), and every implementation has taken one untimed step
(its state allocated) before timing starts:

- ``fusedopt.SparseAdam`` / ``Adagrad`` / ``SGD`` on a ``fusedopt.RowSparseGrad``
  (the step merges the duplicates, then updates the touched rows);
- ``torch.optim.SparseAdam`` / ``Adagrad`` / ``SGD`` on the uncoalesced
  ``torch.sparse_coo_tensor`` of the same rows (torch coalesces inside the step);
- the NumPy twin (``fusedopt.slow.sparse``: merge, then fancy-indexed update);
- dense steps over the whole table (the gradient zero outside the rows):
  ``torch.optim.Adam(fused=True)`` and ``fusedopt.Adam`` for SparseAdam,
  ``torch.optim.Adagrad(fused=True)`` for Adagrad.

Effective bandwidth of the touched rows: bytes an ideal lazy step moves (the
merge reads the lookups' rows and writes the distinct ones; the update reads the
merged row and reads and writes the parameter and state rows: float32 SparseAdam
4 + 4 + 24 bytes per element of a distinct row, Adagrad 4 + 4 + 16, SGD 4 + 4 + 8)
over the median step, against STREAM update measured in the same run.  The rows
are scattered over the table, 256 B (64 floats) or 1.2 KB apiece, so the roof of
a gather is below STREAM's; the figure says how much of the step is memory.

Targets (the issue): 1e6 x 64, 4096 lookups, SparseAdam at least 5x faster than
torch.optim.SparseAdam and at least 50x faster than torch's dense fused Adam.
Printed as markdown and written to ``--out`` (bench/results/sparse-<date>-<time>.md, .json).
"""
import argparse
import datetime
import os
import sys
from functools import partial
from types import SimpleNamespace

import numpy as np

try:
    import fusedopt
except ImportError as error:  # not installed: run from the source tree with the extension built in place
    sys.exit(f"cannot import fusedopt ({error}); from the repository root run: "
             "PYTHONPATH=src python bench/sparse.py")

from fusedopt.slow import sparse as twin
from harness import Variant, measure
from report import format_seconds, markdown_table, stream_table
from run import (Progress, add_sampling_arguments, command_line, describe_machine, measure_stream,
                 thread_setter, write_json)
from stream import KERNEL_TRANSFERS

ZIPF_EXPONENT = 1.1
BATCHES = 8
#: float32 bytes per element of a distinct row: merged gradient read + (param, state) read and written
ROW_BYTES = {"SparseAdam": 4 + 24, "Adagrad": 4 + 16, "SGD": 4 + 8}
NEED_VS_SPARSE, NEED_VS_DENSE = 5.0, 50.0


def parse_table(text):
    rows, cols = text.lower().split("x")
    return int(float(rows)), int(float(cols))


def zipf_lookups(n_rows, n, seed):
    """n row numbers, Zipf(ZIPF_EXPONENT) over the ranks; the ranks are mapped to rows by
    one fixed random permutation (the same frequent rows in every batch)."""
    ranks = np.arange(1, n_rows + 1, dtype=np.float64)
    weights = ranks ** -ZIPF_EXPONENT
    drawn = np.random.default_rng(seed).choice(n_rows, size=n, p=weights / weights.sum())
    return np.random.default_rng(0).permutation(n_rows)[drawn].astype(np.int64)


def cycling(steps):
    """One call: the next of `steps` (each a callable taking nothing), round and round."""
    position = [0]

    def call():
        position[0] = (position[0] + 1) % len(steps)
        return steps[position[0]]()
    return call


def variants_for(algorithm, table, batches, torch, set_threads, threads):
    """The harness variants of one (algorithm, table): every implementation, each
    stepping through `batches` ((indices, values) pairs) in turn."""
    setup = lambda: set_threads(threads)  # noqa: E731
    out, hyper = [], {"SparseAdam": dict(lr=1e-3), "Adagrad": dict(lr=1e-2), "SGD": dict(lr=1e-2)}[algorithm]
    p = table.copy()
    opt = getattr(fusedopt, algorithm)([p], **hyper)
    grads = [fusedopt.RowSparseGrad(indices, values) for indices, values in batches]
    out.append(Variant(("fusedopt", algorithm), cycling([partial(opt.step, [g]) for g in grads]), setup))

    q, state = table.copy(), {k: np.zeros_like(table) for k in ("m", "v", "sum")}
    counter = [0]

    def numpy_step(indices, values):
        counter[0] += 1
        rows, merged = twin.merge_rows(indices, values)
        if algorithm == "SparseAdam":
            twin.sparse_adam_(q, rows, merged, state["m"], state["v"], step=counter[0], **hyper)
        elif algorithm == "Adagrad":
            twin.sparse_adagrad_(q, rows, merged, state["sum"], step=counter[0], **hyper)
        else:
            twin.sparse_sgd_(q, rows, merged, **hyper)
    out.append(Variant(("numpy twin", algorithm), cycling([partial(numpy_step, *b) for b in batches]), setup))

    # a dense step costs the same whatever rows the gradient holds: one gradient serves
    indices, values = batches[0]
    if algorithm == "SparseAdam":
        d = table.copy()
        dense_grad = np.zeros_like(table)
        np.add.at(dense_grad, indices, values)
        dense_opt = fusedopt.Adam([d], **hyper)
        out.append(Variant(("fusedopt dense Adam", algorithm), partial(dense_opt.step, [dense_grad]), setup))
    if torch is not None:
        t = torch.nn.Parameter(torch.from_numpy(table.copy()))
        topt = getattr(torch.optim, algorithm)([t], **hyper)
        sparse_grads = [torch.sparse_coo_tensor(torch.from_numpy(i)[None], torch.from_numpy(v), t.shape)
                        for i, v in batches]

        def torch_step(grad):
            t.grad = grad
            topt.step()
        out.append(Variant(("torch sparse", algorithm), cycling([partial(torch_step, g) for g in sparse_grads]),
                           setup))
        dense_cls = {"SparseAdam": "Adam", "Adagrad": "Adagrad"}.get(algorithm)
        if dense_cls is not None:
            u = torch.nn.Parameter(torch.from_numpy(table.copy()))
            u.grad = sparse_grads[0].to_dense()
            uopt = getattr(torch.optim, dense_cls)([u], fused=True, **hyper)
            out.append(Variant(("torch dense fused", algorithm), uopt.step, setup))
    for variant in out:   # allocate every state before timing (the harness calibrates on a first call)
        variant.setup()
        variant.step()
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", default=["1e6x64", "1e5x300"])
    parser.add_argument("--lookups", nargs="+", type=int, default=[4096])
    parser.add_argument("--algorithms", nargs="+", default=["SparseAdam", "Adagrad", "SGD"],
                        choices=["SparseAdam", "Adagrad", "SGD"])
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    args.threads = [args.threads]
    return args


def main(argv=None):
    args = parse_args(argv)
    command = command_line(argv, __file__)
    try:
        import torch
    except ImportError:
        torch = None
    machine = describe_machine(torch, command)
    set_threads = thread_setter(torch)
    cases = [(parse_table(t), n, a) for t in args.tables for n in args.lookups for a in args.algorithms]
    progress = Progress(args.repeats * (len(KERNEL_TRANSFERS) + 5 * len(cases)))
    set_threads(args.threads[0])
    stream_records, roofs, _, _ = measure_stream(SimpleNamespace(threads=args.threads, repeats=args.repeats,
                                                                 min_time=args.min_time,
                                                                 min_calls=args.min_calls), progress)
    roof = roofs.get(args.threads[0])
    records = []
    for (n_rows, cols), n_lookups, algorithm in cases:
        progress.stage(f"{n_rows}x{cols} {n_lookups} {algorithm}")
        rng = np.random.default_rng(0)
        table = (0.1 * rng.standard_normal((n_rows, cols))).astype(np.float32)
        batches = [(zipf_lookups(n_rows, n_lookups, seed=1 + b),
                    (1e-3 * rng.standard_normal((n_lookups, cols))).astype(np.float32)) for b in range(BATCHES)]
        distinct = float(np.mean([len(np.unique(indices)) for indices, _ in batches]))
        variants = variants_for(algorithm, table, batches, torch, set_threads, args.threads[0])
        measure(variants, args.repeats, args.min_time, args.min_calls, progress.update)
        ideal_bytes = 4 * n_lookups * cols + ROW_BYTES[algorithm] * distinct * cols
        times = {v.key[0]: v.median for v in variants}
        records.append({"table": f"{n_rows:.0e}x{cols}", "rows": n_rows, "cols": cols, "lookups": n_lookups,
                        "distinct_rows": distinct, "algorithm": algorithm, "median_s": times,
                        "samples": {v.key[0]: v.samples for v in variants},
                        "touched_gbps": ideal_bytes / times["fusedopt"] / 1e9})
        del variants, table
    progress.close()
    machine["load_average_end"] = os.getloadavg()

    rows = []
    for r in records:
        t = r["median_s"]
        fo = t["fusedopt"]

        def ratio(key):
            return f"{t[key] / fo:.1f}x" if key in t else "—"
        rows.append([r["table"], r["lookups"], f"{r['distinct_rows']:.0f}", r["algorithm"], format_seconds(fo),
                     format_seconds(t.get("torch sparse")), ratio("torch sparse"),
                     format_seconds(t.get("torch dense fused")), ratio("torch dense fused"),
                     ratio("fusedopt dense Adam"), ratio("numpy twin"),
                     f"{r['touched_gbps']:.2f}", f"{100 * r['touched_gbps'] / roof:.0f}%" if roof else "—"])
    header = ["table", "lookups", "distinct", "optimizer", "fusedopt", "torch sparse", "speed-up",
              "torch dense fused", "speed-up", "vs fusedopt dense Adam", "vs numpy twin", "touched GB/s",
              "% STREAM update"]
    verdicts = []
    for r in records:
        if r["algorithm"] == "SparseAdam" and r["rows"] == 1_000_000 and r["cols"] == 64 and r["lookups"] == 4096:
            t = r["median_s"]
            for key, need in (("torch sparse", NEED_VS_SPARSE), ("torch dense fused", NEED_VS_DENSE)):
                if key in t:
                    got = t[key] / t["fusedopt"]
                    verdicts.append(f"- SparseAdam 1e6x64, 4096 lookups vs {key}: {got:.1f}x "
                                    f"(target >= {need:g}x): {'PASS' if got >= need else 'MISS'}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = "\n\n".join([
        f"## Row-sparse steps, {args.threads[0]} threads, float32\n\n`{command}`\n\n"
        f"{machine.get('cpu_model', machine.get('cpu', ''))}; torch {getattr(torch, '__version__', 'absent')}; "
        f"medians of {args.repeats} rounds (round-robin)",
        f"### STREAM (roof = update)\n\n{stream_table(stream_records)}",
        markdown_table(header, rows),
        "Speed-ups are the peer's median over fusedopt's, measured in the same run.  \"distinct\": the rows "
        f"a batch touched, on average over the {BATCHES} batches each side cycles through (lookups repeat: Zipf).  touched GB/s: the bytes an ideal lazy step moves "
        "(merge and update, see the docstring) over fusedopt's median.",
        "### Targets\n\n" + ("\n".join(verdicts) if verdicts else "(the 1e6x64, 4096-lookup SparseAdam case "
                                                                 "was not run)"),
    ])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"sparse-{stamp}.md").write_text(text + "\n")
    write_json(args.out / f"sparse-{stamp}.json", {"machine": machine, "stream": stream_records, "roof": roof,
                                                   "records": records, "started": stamp})
    return 0


if __name__ == "__main__":
    sys.exit(main())
