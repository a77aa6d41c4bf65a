"""The fusedopt benchmark suite.

``python bench/run.py`` times one optimizer step of fusedopt and its peers
(NumPy, the twins of fusedopt.slow; torch foreach and fused) on every workload, at
1 and all threads, float32 and float64, Adam / AdamW / SGD with momentum
(both forms), next to STREAM copy / triad / update bandwidth measured in the
same run.  It prints a markdown table and the targets check, and writes
JSON (raw samples, machine), markdown and, with matplotlib, a PNG to ``--out``.

``--threshold`` measures the single-thread cutoff of the kernels;
``--scaling`` the 1 -> all threads speed-up.  See bench/README.md.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

try:
    import fusedopt
    from fusedopt import _core
except ImportError as error:  # not installed: run from the source tree with the extension built in place
    sys.exit(f"cannot import fusedopt ({error}); from the repository root run: "
             "PYTHONPATH=src python bench/run.py")
from harness import Variant, measure, timer_overhead
from implementations import ALGORITHMS, DEFAULT_ALGORITHMS, IMPLEMENTATIONS
from report import Results, check_targets, markdown_table, format_seconds, plot, results_table
from report import stream_table, targets_report
from stream import KERNEL_TRANSFERS, Stream
from workloads import DEFAULT_WORKLOADS, parse_workload, random_tensors

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEFAULT_REPEATS = 7
QUICK = dict(repeats=3, min_time=0.005, min_calls=1, dtypes=["float32"], algorithms=["adam", "sgd"],
             workloads=["1e3", "1e4", "1e5", "1e6", "1.6e7", "resnet18", "mlp200"])
THRESHOLD_SIZES = np.unique(np.round(np.geomspace(1e3, 2e5, 15), -1).astype(int))
SCALING_WORKLOADS = ["1e6", "1.6e7"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--threshold", action="store_true",
                      help="measure the 1-thread vs team crossover size of a step (float32 Adam)")
    mode.add_argument("--scaling", action="store_true", help="1 vs all threads at 1e6 and 1.6e7")
    parser.add_argument("--idle-ms", type=float, default=0.0,
                        help="--threshold: idle this long before each timed step, as a training loop "
                             "does during forward/backward, so the OpenMP team has gone to sleep")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: float32, adam and sgd, no 3.2e7, 3 repeats, 5 ms samples")
    parser.add_argument("--repeats", type=int,
                        help=f"rounds of samples (default {DEFAULT_REPEATS}; --threshold 15, --scaling 9)")
    parser.add_argument("--threads", type=int, nargs="+",
                        help="thread counts (default: 1 and all usable cores)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"])
    parser.add_argument("--algorithms", nargs="+", choices=list(ALGORITHMS))
    parser.add_argument("--workloads", nargs="+", metavar="NAME",
                        help=f"{' '.join(DEFAULT_WORKLOADS)}, or any element count such as 2e6")
    parser.add_argument("--min-time", type=float,
                        help="target seconds per sample (default 0.02)")
    parser.add_argument("--min-calls", type=int, help="fewest calls per sample of short calls (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default bench/results/)")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out even if importable")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")
    args = parser.parse_args(argv)

    # --quick fills in only what was not given explicitly
    mode_defaults = dict(repeats=DEFAULT_REPEATS, min_time=0.02, min_calls=3, dtypes=["float32", "float64"],
                         algorithms=DEFAULT_ALGORITHMS, workloads=DEFAULT_WORKLOADS)
    if args.threshold or args.scaling:
        # short steps: many rounds cost little and make "consistently faster" meaningful
        mode_defaults.update(dtypes=["float32"], algorithms=["adam"], repeats=15 if args.threshold else 9)
    if args.quick:
        mode_defaults.update({k: v for k, v in QUICK.items() if not (args.threshold or args.scaling)
                              or k in ("min_time", "min_calls")})
    for name, value in mode_defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    all_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    args.threads = sorted(set(args.threads or [1, all_cores]))
    if min(args.threads) < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be positive")
    try:
        args.workloads = [parse_workload(name) for name in args.workloads]
    except ValueError as error:
        parser.error(str(error))
    return args


# -- the run's environment ----------------------------------------------------------------

def import_torch(disabled=False):
    """(torch, None), or (None, why not) when disabled or not importable."""
    if disabled:
        return None, "left out"
    try:
        import torch
    except ImportError as error:
        return None, f"torch not importable ({error})"
    return torch, None


def add_sampling_arguments(parser, threads=2, repeats=7, min_time=0.05, min_calls=3):
    """--threads (one count), --repeats, --min-time, --min-calls and --out, as the benches
    that run at one thread count take them (a default of None: the caller fills it in)."""
    def text(what, default):
        return what if default is None else f"{what} (default {default})"
    parser.add_argument("--threads", type=int, default=threads, help=text("threads", threads))
    parser.add_argument("--repeats", type=int, default=repeats, help=text("rounds of samples", repeats))
    parser.add_argument("--min-time", type=float, default=min_time, help=text("target seconds per sample", min_time))
    parser.add_argument("--min-calls", type=int, default=min_calls,
                        help=text("fewest calls per sample of short calls", min_calls))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default bench/results/)")


def command_line(argv, script):
    """The command line a bench's report quotes: how it was started, or `script` with `argv`."""
    return shlex.join([sys.executable, *(sys.argv if argv is None else [script, *argv])])


def thread_setter(torch):
    """``set_threads(n)``: fusedopt's and torch's thread counts (NumPy's ufuncs use one)."""
    def set_threads(n, parallel_min_elements=None):
        fusedopt.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)
        if parallel_min_elements is not None:
            _core.set_parallel_min_elements(parallel_min_elements)
    return set_threads


def _cpuinfo():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), platform.processor())
    cores = set()
    physical = core = None
    for line in text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip() and core is not None:
            cores.add((physical, core))
            physical = core = None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    return model, len(cores) or None, simd


def describe_machine(torch, command):
    """The machine and software the numbers were taken on, for the JSON."""
    from stream import l3_cache_bytes

    model, physical_cores, simd = _cpuinfo()
    memory = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), None) if Path("/proc/meminfo").exists() else None
    try:
        cc = subprocess.run([os.environ.get("CC", "cc"), "--version"], capture_output=True, text=True,
                            timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        cc = None
    machine = {
        "cpu_model": model, "physical_cores": physical_cores, "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_simd_flags": simd, "l3_cache_bytes": l3_cache_bytes(), "memory_bytes": memory,
        "load_average_start": os.getloadavg(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "torch_parallel_info": torch.__config__.parallel_info() if torch is not None else None,
        "fusedopt": fusedopt.info(), "cc": cc,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "environment": {k: v for k, v in os.environ.items()
                        if k.startswith(("OMP_", "GOMP_", "FUSEDOPT_", "MKL_")) or k in ("PYTHONPATH", "CC")},
    }
    try:
        from threadpoolctl import threadpool_info
        machine["threadpools"] = threadpool_info()  # shows duplicate OpenMP runtimes, if any
    except ImportError:
        pass
    return machine


class Progress:
    """A tqdm bar over samples when tqdm is installed, else one line per stage on stderr."""

    def __init__(self, total):
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="sample", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            self.bar = None

    def stage(self, text):
        if self.bar is not None:
            self.bar.set_description(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def update(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def shrink(self, n):
        """Samples that will not be taken (an implementation that cannot run a case)."""
        if self.bar is not None:
            self.bar.total -= n
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def write_json(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=float))


# -- measurements ---------------------------------------------------------------------------

def measure_stream(args, progress):
    """STREAM copy / triad / update at each thread count, round-robin; records and the roof."""
    try:
        stream = Stream(init_threads=max(args.threads))
    except RuntimeError as error:
        print(f"warning: no STREAM roof: {error}", file=sys.stderr)
        progress.shrink(len(KERNEL_TRANSFERS) * len(args.threads) * args.repeats)
        return [], {}, None, {}
    progress.stage(f"STREAM, {stream.n:.3g} float64")
    variants = stream.variants(args.threads)
    timing = {"workload": "STREAM"}
    measure(variants, args.repeats, args.min_time, args.min_calls, progress.update, timing)
    records = []
    for v in variants:
        _, kernel, threads = v.key
        nbytes = stream.bytes_per_pass(kernel)
        records.append({"kernel": kernel, "threads": threads, "n_elements": stream.n,
                        "bytes_per_pass": nbytes, "samples": v.samples, "sample_min": v.sample_min,
                        "median_gbps": nbytes / v.median / 1e9, "best_gbps": nbytes / v.best / 1e9})
    command = " ".join(stream.command)
    stream.close()
    roof = {r["threads"]: r["median_gbps"] for r in records if r["kernel"] == "update"}
    return records, roof, command, timing


def problem_arrays(workload, dtype):
    """Parameters (about +-0.1) and gradients (about +-1e-3) for `workload`: values that
    stay finite and normal for thousands of steps, so no step meets denormals."""
    return (random_tensors(workload.shapes, dtype, seed=1, scale=0.1),
            random_tensors(workload.shapes, dtype, seed=2, scale=1e-3))


def case_variants(workload, algorithm, dtype, params, grads, args, torch, set_threads):
    """Harness variants for one (workload, algorithm, dtype): every implementation x thread count.

    `params` are copied by each implementation; `grads` are shared and only read.

    Returns
    -------
    variants : list of Variant
        Keys are (implementation, threads).
    unavailable : list of dict
        Implementations that could not be built, with the reason.
    """
    variants, unavailable = [], []
    for impl in IMPLEMENTATIONS.values():
        if not impl.runs_on(workload, torch is not None):
            continue
        try:
            step = impl.build(algorithm, workload, params, grads)
            if impl.needs_torch:
                step()  # torch rejects some (dtype, fused) pairs only at the first step
        except Exception as error:  # an implementation missing a case must not end the run
            unavailable.append({"workload": workload.name, "algorithm": algorithm, "dtype": dtype,
                                "implementation": impl.name, "reason": f"{type(error).__name__}: {error}"})
            continue
        for threads in (args.threads if impl.threaded else [1]):
            variants.append(Variant((impl.name, threads), step, partial(set_threads, threads)))
    return variants, unavailable


def variants_per_case(workload, args, torch):
    """How many variants a case will have (for the progress bar's total)."""
    return sum(len(args.threads) if impl.threaded else 1 for impl in IMPLEMENTATIONS.values()
               if impl.runs_on(workload, torch is not None))


def run_full(args, torch, set_threads, command):
    started = time.perf_counter()
    machine = describe_machine(torch, command)
    cases = [(w, a, d) for w in args.workloads for d in args.dtypes for a in args.algorithms]  # a innermost
    progress = Progress(args.repeats * (len(KERNEL_TRANSFERS) * len(args.threads)
                                        + sum(variants_per_case(w, args, torch) for w, _, _ in cases)))
    stream_records, roof, stream_command, stream_timing = measure_stream(args, progress)
    records, unavailable, case_timings = [], [], [stream_timing]
    arrays_for = None
    for workload, algorithm, dtype in cases:
        progress.stage(f"{workload.name} {algorithm} {dtype}")
        setup_start = time.perf_counter()
        if arrays_for != (workload, dtype):  # one draw serves every algorithm of a workload
            params = grads = None
            params, grads = problem_arrays(workload, dtype)
            arrays_for = (workload, dtype)
        variants, missing = case_variants(workload, algorithm, dtype, params, grads, args, torch, set_threads)
        timing = {"workload": workload.name, "algorithm": algorithm, "dtype": dtype,
                  "setup_s": time.perf_counter() - setup_start}
        unavailable += missing
        progress.shrink(args.repeats * (variants_per_case(workload, args, torch) - len(variants)))
        measure(variants, args.repeats, args.min_time, args.min_calls, progress.update, timing)
        case_timings.append(timing)
        nbytes = ALGORITHMS[algorithm].transfers * np.dtype(dtype).itemsize * workload.n_elements
        for v in variants:
            name, threads = v.key
            gbps = nbytes / v.median / 1e9
            records.append({"workload": workload.name, "n_elements": workload.n_elements,
                            "n_tensors": len(workload.shapes), "algorithm": algorithm, "dtype": dtype,
                            "implementation": name, "threads": threads, "bytes_per_step": nbytes,
                            "calls_per_sample": v.calls_per_sample, "samples": v.samples,
                            "sample_min": v.sample_min, "median_s": v.median, "min_s": v.best,
                            "gbps": gbps, "roof_pct": 100 * gbps / roof[threads] if threads in roof else None})
        del variants
        gc.collect()  # free this case's buffers (up to ~6 GB at 3.2e7 float64) before the next
    progress.close()
    set_threads(max(args.threads))

    results = Results(records, roof)
    outcome = check_targets(results)
    header = (f"fusedopt {fusedopt.__version__} | {machine['cpu_model']} | {machine['usable_cpus']} cpus | "
              f"SIMD {fusedopt.info()['simd_path']} | numpy {np.__version__} | torch {machine['torch']} | "
              f"{args.repeats} rounds, samples >= {args.min_time * 1e3:g} ms | {machine['date']}")
    text = "\n\n".join([
        f"## fusedopt benchmark\n\n{header}",
        "### STREAM (roof = update)\n\n" + (stream_table(stream_records) if stream_records else "not measured"),
        results_table(results),
        "### targets\n\n" + targets_report(outcome),
    ])
    if unavailable:
        text += "\n\nnot measured:\n" + "\n".join(
            f"- {u['implementation']} {u['workload']} {u['algorithm']} {u['dtype']}: {u['reason']}"
            for u in unavailable)
    elapsed = time.perf_counter() - started
    print(text)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    machine["load_average_end"] = os.getloadavg()
    write_json(args.out / f"bench-{stamp}.json", {
        "mode": "full", "machine": machine, "elapsed_s": elapsed, "timer_overhead_s": timer_overhead(),
        "settings": {"repeats": args.repeats, "min_time_s": args.min_time, "min_calls": args.min_calls,
                     "threads": args.threads, "dtypes": args.dtypes, "algorithms": args.algorithms,
                     "workloads": [w.describe() for w in args.workloads]},
        "algorithms": {name: vars(ALGORITHMS[name]) for name in args.algorithms},
        "stream": {"command": stream_command, "results": stream_records, "roof_gbps": roof},
        "results": records, "unavailable": unavailable, "targets": outcome,
        "case_timings": case_timings})
    (args.out / f"bench-{stamp}.md").write_text(text + "\n")
    written = [f"bench-{stamp}.json", f"bench-{stamp}.md"]
    if not args.no_plot:
        if plot(results, args.out / f"bench-{stamp}.png"):
            written.append(f"bench-{stamp}.png")
        else:
            print("matplotlib is not installed: no PNG", file=sys.stderr)
    fixed = sum(t.get("setup_s", 0) + t.get("calibration_s", 0) for t in case_timings)
    per_round = sum(np.mean(t["rounds_s"]) for t in case_timings if t.get("rounds_s"))
    print(f"\nwrote {', '.join(written)} to {args.out}\n"
          f"took {elapsed:.0f} s: {fixed:.0f} s setup and calibration + {per_round:.0f} s per round")
    return 0


def _fusedopt_variants(workload, algorithm, dtype, configurations, before_call=None):
    """One fusedopt optimizer on `workload`, timed under several configurations.

    `configurations` maps a key to a setup callable; every variant steps the same
    optimizer, so they differ only in threads and cutoff, not in memory.
    """
    params, grads = problem_arrays(workload, dtype)
    step = IMPLEMENTATIONS["fusedopt"].build(algorithm, workload, params, grads)
    return [Variant(key, step, setup, before_call=before_call) for key, setup in configurations.items()]


def run_threshold(args, set_threads, command):
    """Time a step on 1 thread vs a forced team over 1e3..2e5 elements; print the crossover."""
    team = max(max(args.threads), 2)
    cutoff = _core.parallel_min_elements()
    if args.idle_ms > 0:  # each call idles first: a fixed number of calls per sample, not a duration
        args.min_time, args.min_calls = 0.0, 25
    configurations = {1: partial(set_threads, 1, cutoff), team: partial(set_threads, team, 0)}
    progress = Progress(len(args.algorithms) * len(args.dtypes) * len(THRESHOLD_SIZES) * 2 * args.repeats)
    sweeps, text = [], []
    try:
        for algorithm in args.algorithms:
            for dtype in args.dtypes:
                rows, points = [], []
                for size in THRESHOLD_SIZES:
                    progress.stage(f"threshold {algorithm} {dtype} {size}")
                    idle = (partial(time.sleep, args.idle_ms / 1000) if args.idle_ms > 0 else None)
                    one, many = measure(_fusedopt_variants(parse_workload(str(size)), algorithm, dtype,
                                                           configurations, idle),
                                        args.repeats, args.min_time, args.min_calls, progress.update)
                    won = sum(m < o for o, m in zip(one.samples, many.samples))
                    # "consistently faster": faster by the medians and in >= 2/3 of the paired rounds
                    faster = many.median < one.median and won >= 2 * args.repeats / 3
                    points.append({"size": int(size), "one_thread": one.samples, "team": many.samples,
                                   "speedup": one.median / many.median, "rounds_won": won, "faster": faster})
                    rows.append([f"{size:,}", format_seconds(one.median), format_seconds(many.median),
                                 f"{one.median / many.median:.2f}x", f"{won}/{args.repeats}",
                                 "yes" if faster else "no"])
                crossover = next((p["size"] for i, p in enumerate(points)
                                  if all(q["faster"] for q in points[i:])), None)
                sweeps.append({"algorithm": algorithm, "dtype": dtype, "team": team, "points": points,
                               "crossover": crossover})
                verdict = (f"crossover: {team} threads consistently faster from N = {crossover:,}"
                           if crossover else f"crossover: {team} threads never consistently faster up to "
                                             f"{THRESHOLD_SIZES[-1]:,}")
                text.append(f"### {algorithm} {dtype}: 1 thread vs {team} (team forced"
                            + (f", {args.idle_ms:g} ms idle before each step" if args.idle_ms else "")
                            + ")\n\n" + markdown_table(
                    ["elements", "1 thread", f"{team} threads", "speed-up", "rounds won", "consistently"], rows)
                    + f"\n\n{verdict} (csrc/dispatch.c cutoff now: parallel_min_elements = {cutoff:,})")
    finally:
        _core.set_parallel_min_elements(cutoff)
        progress.close()
    print("\n\n".join(text))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_json(args.out / f"threshold-{stamp}.json", {
        "mode": "threshold", "machine": describe_machine(None, command), "repeats": args.repeats,
        "idle_ms": args.idle_ms,
        "min_time_s": args.min_time, "parallel_min_elements": cutoff, "sweeps": sweeps})
    print(f"\nwrote threshold-{stamp}.json to {args.out}")
    return 0


def run_scaling(args, set_threads, command):
    """fusedopt and STREAM update at 1 vs all threads; print the speed-ups."""
    team = max(max(args.threads), 2)
    configurations = {1: partial(set_threads, 1), team: partial(set_threads, team)}
    n_cases = len(SCALING_WORKLOADS) * len(args.algorithms) * len(args.dtypes)
    progress = Progress((n_cases + 1) * 2 * args.repeats)
    rows, points = [], []
    try:
        stream = Stream(init_threads=team)
    except RuntimeError as error:
        print(f"warning: no STREAM: {error}", file=sys.stderr)
        progress.shrink(2 * args.repeats)
    else:
        progress.stage("STREAM update")
        one, many = measure(stream.variants([1, team], kernels=["update"]), args.repeats, args.min_time,
                            args.min_calls, progress.update)
        stream.close()
        points.append({"case": "STREAM update", "one_thread": one.samples, "team": many.samples})
        rows.append(["STREAM update", f"{stream.n:.3g}", format_seconds(one.median),
                     format_seconds(many.median), f"{one.median / many.median:.2f}x"])
    for name in SCALING_WORKLOADS:
        for algorithm in args.algorithms:
            for dtype in args.dtypes:
                progress.stage(f"scaling {name} {algorithm} {dtype}")
                one, many = measure(_fusedopt_variants(parse_workload(name), algorithm, dtype, configurations),
                                    args.repeats, args.min_time, args.min_calls, progress.update)
                points.append({"case": f"{algorithm} {dtype}", "workload": name,
                               "one_thread": one.samples, "team": many.samples})
                rows.append([f"fusedopt {algorithm} {dtype}", name, format_seconds(one.median),
                             format_seconds(many.median), f"{one.median / many.median:.2f}x"])
    progress.close()
    print(f"### thread scaling: 1 vs {team} threads\n\n"
          + markdown_table(["case", "elements", "1 thread", f"{team} threads", "speed-up"], rows))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_json(args.out / f"scaling-{stamp}.json", {
        "mode": "scaling", "machine": describe_machine(None, command), "repeats": args.repeats,
        "team": team, "points": points})
    print(f"\nwrote scaling-{stamp}.json to {args.out}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    command = command_line(argv, __file__)
    torch, _ = import_torch(args.no_torch or args.threshold or args.scaling)
    set_threads = thread_setter(torch)
    original_threads = fusedopt.get_num_threads()
    try:
        if args.threshold:
            return run_threshold(args, set_threads, command)
        if args.scaling:
            return run_scaling(args, set_threads, command)
        return run_full(args, torch, set_threads, command)
    finally:
        fusedopt.set_num_threads(original_threads)


if __name__ == "__main__":
    sys.exit(main())
