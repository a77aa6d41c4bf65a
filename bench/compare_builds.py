"""Time one optimizer step of two or more fusedopt builds side by side, in one run.

    python bench/compare_builds.py --tree old=/tmp/fusedopt-old/src --tree new=/tmp/fusedopt-new/src

Each tree is a ``src`` directory holding a built ``fusedopt`` package (e.g.
``git archive <commit> | tar -x`` then ``python setup.py build_ext --inplace``).
For each of ``--rounds`` rounds the trees are run in turn, the order reversed
every other round so that slow drifts of a shared machine hit every build
alike; each turn is a fresh child Python with ``PYTHONPATH`` set to that tree.
The child times one step of ``fusedopt.Adam``, ``fusedopt.AdamW`` and
``fusedopt.SGD`` (momentum, both forms) through the public API both builds
share, on the workloads of bench/run.py (bench/workloads.py's shapes, one
array per tensor), and prints JSON.  A sample is the median per-call time of a
batch of back-to-back calls after a warm-up; the table reports, per build, the
median of the per-round samples, the ratio to the first tree, the range of the
per-round paired ratios and the rounds in which the other build was slower.

``--overhead`` times only the per-step overhead (1e3 float32 Adam and SGD,
1 thread, long batches) and also reports the fastest call.
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT_DIR = HERE / "results"

ALGORITHMS = ["adam", "adamw", "sgd", "sgd-velocity"]
DTYPES = ["float32", "float64"]
THREADS = [1, 2]
ALL_WORKLOADS = ["1e3", "1e4", "1e5", "1e6", "3.2e7", "resnet18", "mlp200"]
# the default: float32 adam/adamw/sgd/sgd-velocity at 1 and 2 threads and float64 at
# 1 and 2 threads on every workload of the list above (see --subset for a shorter run)
SUBSET = dict(workloads=["1e3", "1e5", "1e6", "3.2e7", "resnet18", "mlp200"],
              configs=[("float32", a) for a in ("adam", "adamw", "sgd")] + [("float64", "adam")])

STATS = {"median": "median per-call wall time", "min": "fastest call's wall time",
         "thread_cpu_median": "median per-call CPU time of the calling thread",
         "process_cpu_median": "median per-call CPU time of the process (all threads)"}

# bench/implementations.py's hyperparameters
ADAM_LR = 1e-3
ADAMW_WEIGHT_DECAY = 1e-2
SGD_LR = 1e-2
SGD_MOMENTUM = 0.9


# -- the child: runs inside one tree -------------------------------------------------------

def _make_optimizer(fusedopt, algorithm, params):
    if algorithm == "adam":
        return fusedopt.Adam(params, lr=ADAM_LR)
    if algorithm == "adamw":
        return fusedopt.AdamW(params, lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY)
    if algorithm == "sgd":
        return fusedopt.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM)
    if algorithm == "sgd-velocity":
        return fusedopt.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM, lr_in_velocity=True)
    raise ValueError(algorithm)


def _random_normal(shapes, dtype, seed, scale):
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = [math.prod(s) for s in shapes]
    flat = rng.standard_normal(sum(sizes), dtype=np.dtype(dtype))
    flat *= scale
    if len(shapes) == 1:
        return [flat.reshape(shapes[0])]
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[start:start + size].reshape(shape).copy())
        start += size
    return out


def _median_of(times):
    times = sorted(times)
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])


def _time_step(step, min_time, min_calls, max_calls, warmup_calls, warmup_time, cpu_threshold):
    """Per-call times of one batch after a warm-up: dict of median and min wall time
    (perf_counter), and, for calls of at least `cpu_threshold` seconds, the CPU time
    of the calling thread (thread_time) and of the process (process_time), which a
    preemption by another process does not inflate."""
    import gc

    clock = time.perf_counter
    start = clock()
    n = 0
    while n < warmup_calls or (clock() - start < warmup_time and n < max_calls):
        step()
        n += 1
    # calls in the batch: enough for min_time, from the warm-up's mean call time
    per_call = (clock() - start) / n
    calls = int(min(max_calls, max(min_calls, math.ceil(min_time / max(per_call, 1e-9)))))
    with_cpu = per_call >= cpu_threshold
    wall = [0.0] * calls
    thread_cpu, process_cpu = ([0.0] * calls, [0.0] * calls) if with_cpu else (None, None)
    thread_time, process_time = time.thread_time, time.process_time
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if with_cpu:
            for i in range(calls):
                p0 = process_time()
                c0 = thread_time()
                t0 = clock()
                step()
                t1 = clock()
                c1 = thread_time()
                p1 = process_time()
                wall[i], thread_cpu[i], process_cpu[i] = t1 - t0, c1 - c0, p1 - p0
        else:
            for i in range(calls):
                t0 = clock()
                step()
                wall[i] = clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    out = dict(median=_median_of(wall), min=min(wall), calls=calls)
    if with_cpu:
        out.update(thread_cpu_median=_median_of(thread_cpu), thread_cpu_min=min(thread_cpu),
                   process_cpu_median=_median_of(process_cpu), process_cpu_min=min(process_cpu))
    return out


def child_main(spec):
    """Run every (workload, dtype, algorithm, threads) of `spec` and print one JSON object."""
    import numpy as np

    import fusedopt

    tree = spec["tree"]
    where = os.path.realpath(fusedopt.__file__)
    if not where.startswith(os.path.realpath(tree) + os.sep):
        raise SystemExit(f"imported fusedopt from {where}, not from {tree}")
    timing = spec["timing"]
    results = []
    t_start = time.perf_counter()
    for workload in spec["workloads"]:
        shapes = [tuple(s) for s in workload["shapes"]]
        dtypes = sorted({dtype for dtype, _ in spec["configs"]}, key=DTYPES.index)
        for dtype in dtypes:
            algorithms = [a for d, a in spec["configs"] if d == dtype]
            params = _random_normal(shapes, dtype, seed=1, scale=1.0)
            grads = _random_normal(shapes, dtype, seed=2, scale=1e-2)
            for algorithm in algorithms:
                for threads in spec["threads"]:
                    fusedopt.set_num_threads(threads)
                    actual_threads = fusedopt.get_num_threads()
                    optimizer = _make_optimizer(fusedopt, algorithm, [p.copy() for p in params])
                    step = lambda: optimizer.step(grads)  # noqa: E731
                    measured = _time_step(step, **timing)
                    last = [p for group in optimizer.param_groups for p in group["params"]]
                    finite = bool(all(np.isfinite(p).all() for p in last))
                    results.append(dict(workload=workload["name"], dtype=dtype, algorithm=algorithm,
                                        threads=threads, actual_threads=actual_threads,
                                        finite=finite, **measured))
                    del optimizer, step, last
            del params, grads
    info = fusedopt.info()
    print(json.dumps(dict(fusedopt_file=where, info=info, results=results,
                          seconds=time.perf_counter() - t_start,
                          loadavg=os.getloadavg() if hasattr(os, "getloadavg") else None)))


# -- the parent ----------------------------------------------------------------------------

def _workload_shapes(name):
    sys.path.insert(0, str(HERE))
    try:
        from workloads import parse_workload
    finally:
        sys.path.pop(0)
    workload = parse_workload(name)
    return dict(name=workload.name, shapes=[list(s) for s in workload.shapes],
                n_elements=workload.n_elements)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=SRC",
                        help="a label and a src/ directory holding a built fusedopt (two or more; "
                             "the first is the baseline of the ratios)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--workloads", nargs="+", help=f"default: {' '.join(ALL_WORKLOADS)}")
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS)
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES)
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts (default 1 2)")
    parser.add_argument("--subset", action="store_true",
                        help="a shorter run: 1e3 1e5 1e6 3.2e7 resnet18 mlp200; float32 adam, adamw, sgd; "
                             "float64 adam")
    parser.add_argument("--overhead", action="store_true",
                        help="per-step overhead only: 1e3 float32 adam and sgd at 1 thread, long batches")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds per sample batch (default 0.15; --overhead 1.0)")
    parser.add_argument("--min-calls", type=int, default=5, help="fewest timed calls per sample (default 5)")
    parser.add_argument("--cpu-threshold", type=float, default=60e-6,
                        help="also take CPU times of calls at least this long (seconds, default 6e-5)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/compare-<timestamp>.json)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the children")
    args = parser.parse_args(argv)
    trees = []
    for item in args.tree:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--tree wants NAME=SRC, got {item!r}")
        path = os.path.abspath(path)
        if not os.path.isfile(os.path.join(path, "fusedopt", "__init__.py")):
            parser.error(f"{path} holds no fusedopt package")
        trees.append((name, path))
    if len(trees) < 2 or len({n for n, _ in trees}) != len(trees):
        parser.error("give two or more --tree with distinct names")
    args.trees = trees

    if args.overhead:
        workloads, dtypes, algorithms, threads = ["1e3"], ["float32"], ["adam", "sgd"], [1]
        min_time = 1.0
        configs = [(d, a) for d in dtypes for a in algorithms]
    elif args.subset:
        workloads = SUBSET["workloads"]
        configs = SUBSET["configs"]
        threads, min_time = THREADS, 0.15
    else:
        workloads, threads, min_time = ALL_WORKLOADS, THREADS, 0.15
        configs = [(d, a) for d in DTYPES for a in ALGORITHMS]
    if args.workloads:
        workloads = args.workloads
    if args.dtypes or args.algorithms:
        configs = [(d, a) for d in (args.dtypes or DTYPES) for a in (args.algorithms or ALGORITHMS)]
    args.configs = configs
    args.workload_names = workloads
    args.threads = args.threads or threads
    args.min_time = args.min_time if args.min_time is not None else min_time
    return args


def run_child(python, tree, spec):
    env = dict(os.environ)
    env["PYTHONPATH"] = tree  # only this tree: no other fusedopt can shadow it
    env.pop("FUSEDOPT_SIMD", None)
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--child"], input=json.dumps(spec),
                          capture_output=True, text=True, env=env, cwd="/")
    if proc.returncode != 0:
        raise SystemExit(f"child for {tree} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def _fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.3f} s"


def summarize(trees, rounds_data, keys, stat="median"):
    """Per config: each tree's median over rounds of `stat`, paired ratios to the first tree."""
    base = trees[0][0]
    rows = []
    keys = [k for k in keys if all(stat in r[name][k] for r in rounds_data for name, _ in trees)]
    for key in keys:
        row = dict(config=key, trees={})
        per_tree = {}
        for name, _ in trees:
            samples = [r[name][key][stat] for r in rounds_data]
            per_tree[name] = samples
            row["trees"][name] = dict(median=_median(samples), min=min(samples), max=max(samples),
                                      rounds=samples,
                                      spread=(max(samples) - min(samples)) / _median(samples))
        row["ratios"] = {}
        for name, _ in trees[1:]:
            paired = [n / b for n, b in zip(per_tree[name], per_tree[base])]
            row["ratios"][name] = dict(
                ratio_of_medians=row["trees"][name]["median"] / row["trees"][base]["median"],
                paired=paired, paired_median=_median(paired), paired_min=min(paired), paired_max=max(paired),
                rounds_slower=sum(p > 1 for p in paired))
        rows.append(row)
    return rows


def markdown(trees, rows, rounds, stat="median"):
    base = trees[0][0]
    others = [n for n, _ in trees[1:]]
    head = ["config", *[n for n, _ in trees]]
    for name in others:
        head += [f"{name}/{base}", f"per-round {name}/{base} (min–max)", f"rounds {name} slower"]
    head += ["spread " + n for n, _ in trees]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = ["/".join(str(k) for k in row["config"])]
        cells += [_fmt_time(row["trees"][n]["median"]) for n, _ in trees]
        for name in others:
            r = row["ratios"][name]
            cells += [f"{r['ratio_of_medians']:.3f}", f"{r['paired_min']:.2f}–{r['paired_max']:.2f}",
                      f"{r['rounds_slower']}/{rounds}"]
        cells += [f"{row['trees'][n]['spread'] * 100:.0f}%" for n, _ in trees]
        lines.append("| " + " | ".join(cells) + " |")
    what = STATS[stat]
    note = (f"\nmedian over {rounds} rounds of each sample (a sample = the {what} of a batch); ratio = {'/'.join(others)} median / {base} median; "
            "spread = (max - min) / median of a build's per-round samples.")
    return "\n".join(lines) + note


def pivot_table(trees, rows, min_rows, threads):
    """One line per (workload, dtype, algorithm); per thread count the first two trees'
    medians, their ratio and the ratio of the fastest calls."""
    (base, _), (other, _) = trees[0], trees[1]
    by_key = {row["config"]: (row, m) for row, m in zip(rows, min_rows)}
    head = ["workload/dtype/algorithm"]
    for t in threads:
        head += [f"{t}T {base}", f"{t}T {other}", f"{t}T ratio", f"{t}T ratio (fastest)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen = []
    for key in by_key:
        if key[:3] not in seen:
            seen.append(key[:3])
    for base_key in seen:
        cells = ["/".join(base_key)]
        for t in threads:
            row, m = by_key[(*base_key, t)]
            cells += [_fmt_time(row["trees"][base]["median"]), _fmt_time(row["trees"][other]["median"]),
                      f"{row['ratios'][other]['ratio_of_medians']:.2f}",
                      f"{m['ratios'][other]['ratio_of_medians']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    if argv is None and sys.argv[1:] == ["--child"]:
        child_main(json.loads(sys.stdin.read()))
        return
    args = parse_args(argv)
    workloads = [_workload_shapes(name) for name in args.workload_names]
    timing = dict(min_time=args.min_time, min_calls=args.min_calls, max_calls=1 << 20,
                  warmup_calls=3, warmup_time=min(0.05, args.min_time / 3), cpu_threshold=args.cpu_threshold)
    t_start = time.perf_counter()
    rounds_data, children = [], []
    for r in range(args.rounds):
        order = args.trees if r % 2 == 0 else args.trees[::-1]
        this_round = {}
        for name, tree in order:
            spec = dict(tree=tree, workloads=workloads, configs=args.configs, threads=args.threads,
                        timing=timing)
            out = run_child(args.python, tree, spec)
            this_round[name] = {(x["workload"], x["dtype"], x["algorithm"], x["threads"]): x
                                for x in out["results"]}
            bad = [k for k, x in this_round[name].items() if not x["finite"] or x["actual_threads"] != x["threads"]]
            if bad:
                print(f"warning: {name}: non-finite parameters or thread count not applied: {bad}",
                      file=sys.stderr)
            children.append(dict(round=r, tree=name, seconds=out["seconds"], loadavg=out["loadavg"],
                                 fusedopt_file=out["fusedopt_file"], info=out["info"], results=out["results"]))
            print(f"round {r + 1}/{args.rounds} {name}: {out['seconds']:.1f} s, load {out['loadavg']}",
                  file=sys.stderr, flush=True)
        rounds_data.append(this_round)
    total = time.perf_counter() - t_start

    keys = list(rounds_data[0][args.trees[0][0]].keys())
    rows = summarize(args.trees, rounds_data, keys, "median")
    table = markdown(args.trees, rows, args.rounds, "median")
    print(table)
    # the fastest call of each batch: the step's cost when nothing else ran meanwhile
    min_rows = summarize(args.trees, rounds_data, keys, "min")
    min_table = markdown(args.trees, min_rows, args.rounds, "min")
    print("\nfastest call of each batch:\n" + min_table)
    pivot = pivot_table(args.trees, rows, min_rows, args.threads)
    print("\nby thread count:\n" + pivot)
    # 1 thread: the calling thread's CPU time, which a preemption by another process does not
    # inflate (steps of cpu_threshold and up).  With a team, the process's CPU time counts the
    # spin-waits for a preempted team member, so it is kept in the JSON only.
    cpu_rows = summarize(args.trees, rounds_data, [k for k in keys if k[3] == 1], "thread_cpu_median")
    cpu_table = markdown(args.trees, cpu_rows, args.rounds, "thread_cpu_median") if cpu_rows else ""
    if cpu_rows:
        print("\nCPU time per step of the calling thread, 1 thread:\n" + cpu_table)
    print(f"\ntotal {total:.0f} s")

    infos = {}
    for child in children:
        infos.setdefault(child["tree"], child["info"])
    machine = dict(platform=platform.platform(), machine=platform.machine(), processor=platform.processor(),
                   python=platform.python_version(), cpu_count=os.cpu_count(),
                   usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
    try:
        machine["cpu_model"] = next(line.split(":", 1)[1].strip() for line in
                                    Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    document = dict(
        command=[sys.executable, *sys.argv], date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=machine, trees=dict(args.trees), fusedopt_info=infos, rounds=args.rounds, timing=timing,
        threads=args.threads, configs=args.configs, workloads=workloads, total_seconds=total,
        summary=[dict(row, config=list(row["config"])) for row in rows],
        summary_min=[dict(row, config=list(row["config"])) for row in min_rows],
        summary_cpu=[dict(row, config=list(row["config"])) for row in cpu_rows],
        markdown=table, markdown_min=min_table, markdown_by_threads=pivot, markdown_cpu=cpu_table,
        children=children)
    out = args.out or DEFAULT_OUT_DIR / f"compare-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
