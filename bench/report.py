"""Turning measurements into the markdown table, the targets check and the plot."""
import math
from dataclasses import dataclass
from typing import Callable

from implementations import ALGORITHMS, IMPLEMENTATIONS, PEERS

BIG = ["1.6e7", "3.2e7"]


def format_seconds(seconds):
    """A time with a readable unit: 812 ns, 3.41 µs, 12.0 ms, 1.20 s."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def markdown_table(header, rows):
    """Rows of cells as a markdown table, columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(row) for row in rows)])


class Results:
    """Optimizer records indexed for look-ups, plus the STREAM roof per thread count.

    Parameters
    ----------
    records : list of dict
        One per (workload, algorithm, dtype, implementation, threads), with
        ``median_s``, ``gbps`` and ``roof_pct`` (see ``run.py``).
    roof : dict
        threads -> STREAM update GB/s (median).
    """

    def __init__(self, records, roof):
        self.records, self.roof = records, roof
        self._index = {(r["workload"], r["algorithm"], r["dtype"], r["implementation"], r["threads"]): r
                       for r in records}

    def get(self, workload, algorithm, dtype, implementation, threads):
        """The record of `implementation` in the block run at `threads` (NumPy: its one-thread run)."""
        impl = IMPLEMENTATIONS[implementation]
        return self._index.get((workload, algorithm, dtype, implementation,
                                threads if impl.threaded else 1))

    def ratio(self, workload, algorithm, dtype, slow, slow_threads, fast, fast_threads):
        """median(slow) / median(fast): how many times `fast` is faster; None if either is missing."""
        a = self.get(workload, algorithm, dtype, slow, slow_threads)
        b = self.get(workload, algorithm, dtype, fast, fast_threads)
        return a["median_s"] / b["median_s"] if a and b else None

    def roof_pct(self, workload, algorithm, dtype, implementation, threads):
        record = self.get(workload, algorithm, dtype, implementation, threads)
        return record["roof_pct"] if record else None

    def axes(self):
        """The workloads, algorithms, dtypes and thread counts present, in run order."""
        def ordered(key):
            return list(dict.fromkeys(r[key] for r in self.records))
        return ordered("workload"), ordered("algorithm"), ordered("dtype"), sorted(set(
            r["threads"] for r in self.records if IMPLEMENTATIONS[r["implementation"]].threaded))


# -- the table ----------------------------------------------------------------------------

def results_table(results):
    """The markdown table of every measurement: one section per algorithm.

    Rows come in blocks of (workload, dtype, threads); NumPy's single-threaded
    rows repeat in every block so each block holds its own comparison.
    """
    workloads, algorithms, dtypes, threads_list = results.axes()
    header = ["workload", "dtype", "threads", "implementation", "median", "min", "GB/s", "% roof",
              "fusedopt speed-up"]
    sections = []
    for algorithm in algorithms:
        rows = []
        for workload in workloads:
            for dtype in dtypes:
                for threads in threads_list:
                    base = results.get(workload, algorithm, dtype, "fusedopt", threads)
                    for name in IMPLEMENTATIONS:
                        record = results.get(workload, algorithm, dtype, name, threads)
                        if record is None:
                            continue
                        speedup = (f"{record['median_s'] / base['median_s']:.2f}x"
                                   if base and name != "fusedopt" else "")
                        pct = record["roof_pct"]
                        rows.append([workload, dtype, f"{record['threads']}", name,
                                     format_seconds(record["median_s"]), format_seconds(record["min_s"]),
                                     f"{record['gbps']:.2f}", f"{pct:.0f}%" if pct is not None else "—",
                                     speedup])
        algo = ALGORITHMS[algorithm]
        sections.append(f"### {algorithm}: {algo.description}; {algo.transfers} transfers/element\n\n"
                        + markdown_table(header, rows))
    return "\n\n".join(sections)


def stream_table(stream_records):
    """Markdown table of the STREAM kernels: median and best GB/s per thread count."""
    rows = [[s["kernel"], s["threads"], f"{s['n_elements']:.3g}", f"{s['median_gbps']:.2f}",
             f"{s['best_gbps']:.2f}"] for s in stream_records]
    return markdown_table(["kernel", "threads", "elements", "median GB/s", "best GB/s"], rows)


# -- targets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A target of the issue, checked on every (workload, algorithm, dtype, threads) it covers.

    Attributes
    ----------
    label : str
    need : float
        Smallest passing value.
    workloads : list of str
    measure : callable
        ``measure(results, workload, algorithm, dtype, threads) -> float or None``
        (None: not applicable or not measured).
    unit : str
        "x" (a ratio) or "%".
    """

    label: str
    need: float
    workloads: list
    measure: Callable
    unit: str = "x"

    def format(self, value):
        return f"{value:.0f}%" if self.unit == "%" else f"{value:.2f}x"


def _speedup_vs(peer):
    return lambda r, w, a, d, t: r.ratio(w, a, d, peer, t, "fusedopt", t)


def _vs_fastest_peer(r, w, a, d, t):
    ratios = [x for x in (r.ratio(w, a, d, peer, t, "fusedopt", t) for peer in PEERS) if x is not None]
    return min(ratios) if ratios else None


def _float64_fraction(r, w, a, d, t):
    if d != "float64":
        return None
    pct32, pct64 = r.roof_pct(w, a, "float32", "fusedopt", t), r.roof_pct(w, a, "float64", "fusedopt", t)
    return pct64 / pct32 if pct32 and pct64 is not None else None


def _thread_scaling(r, w, a, d, t):
    return r.ratio(w, a, d, "fusedopt", 1, "fusedopt", t) if t > 1 else None


TARGETS = [
    Target("N=1e3 step latency vs torch fused", 20, ["1e3"], _speedup_vs("torch-fused")),
    Target("N=1e3 step latency vs NumPy in-place", 4, ["1e3"], _speedup_vs("numpy-inplace")),
    Target("N=1e4, 1e5 vs torch fused", 4, ["1e4", "1e5"], _speedup_vs("torch-fused")),
    Target("N=1e6 vs torch fused", 2, ["1e6"], _speedup_vs("torch-fused")),
    Target("N>=1.6e7 share of STREAM update", 90, BIG,
           lambda r, w, a, d, t: r.roof_pct(w, a, d, "fusedopt", t), unit="%"),
    Target("N>=1.6e7 vs fastest peer", 1.0, BIG, _vs_fastest_peer),
    Target("ResNet-18 list API vs torch fused", 1.2, ["resnet18"], _speedup_vs("torch-fused")),
    Target("MLP-200 list API vs torch fused", 1.5, ["mlp200"], _speedup_vs("torch-fused")),
    Target("FlatParams vs one buffer of the same size", 0.97, ["resnet18", "mlp200"],
           lambda r, w, a, d, t: r.ratio(w, a, d, "fusedopt-single", t, "fusedopt-flat", t)),
    Target("float64 roof share / float32 roof share, N>=1.6e7", 0.95, BIG, _float64_fraction),
    Target("thread scaling 1 -> N threads at 1e6", 1.8, ["1e6"], _thread_scaling),
]


def check_targets(results):
    """Evaluate every target on every configuration it covers.

    Returns
    -------
    list of dict
        Per target: label, need, unit, status ("PASS", "MISS" or "n/a") and the
        per-configuration values (``checks``).
    """
    workloads, algorithms, dtypes, threads_list = results.axes()
    outcome = []
    for target in TARGETS:
        checks = []
        for workload in (w for w in target.workloads if w in workloads):
            for algorithm in (a for a in algorithms if ALGORITHMS[a].has_targets):
                for dtype in dtypes:
                    for threads in threads_list:
                        value = target.measure(results, workload, algorithm, dtype, threads)
                        if value is not None:
                            checks.append({"workload": workload, "algorithm": algorithm, "dtype": dtype,
                                           "threads": threads, "value": value,
                                           "pass": bool(value >= target.need)})
        status = "n/a" if not checks else "PASS" if all(c["pass"] for c in checks) else "MISS"
        outcome.append({"target": target.label, "need": target.need, "unit": target.unit,
                        "status": status, "checks": checks})
    return outcome


def _where(check):
    return f"{check['workload']} {check['algorithm']} {check['dtype']} {check['threads']}t"


def targets_report(outcome):
    """The targets as a markdown table, then the failing configurations of each MISS."""
    rows, misses = [], []
    for item, target in zip(outcome, TARGETS):
        checks = item["checks"]
        if not checks:
            rows.append([item["status"], target.label, f">= {target.format(target.need)}", "not measured", ""])
            continue
        worst, best = min(checks, key=lambda c: c["value"]), max(checks, key=lambda c: c["value"])
        passed = sum(c["pass"] for c in checks)
        rows.append([item["status"], target.label, f">= {target.format(target.need)}",
                     f"{target.format(worst['value'])} ({_where(worst)}) .. {target.format(best['value'])}",
                     f"{passed}/{len(checks)}"])
        failing = [c for c in checks if not c["pass"]]
        if failing:
            shown = ", ".join(f"{_where(c)} {target.format(c['value'])}" for c in failing[:8])
            more = f" and {len(failing) - 8} more" if len(failing) > 8 else ""
            misses.append(f"- MISS {target.label}: {shown}{more}")
    table = markdown_table(["result", "target", "need", "measured: worst (where) .. best", "configs passing"],
                           rows)
    return table + ("\n\n" + "\n".join(misses) if misses else "")


# -- the plot ---------------------------------------------------------------------------

def plot(results, path):
    """Effective GB/s vs parameter count, one panel per (algorithm, dtype, threads).

    Lines: single-buffer workloads per implementation; markers: model-shaped
    workloads at their total size; dashed line: the STREAM update roof.

    Returns
    -------
    bool
        False when matplotlib is not installed (nothing written).
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads, algorithms, dtypes, threads_list = results.axes()
    columns = [(d, t) for d in dtypes for t in threads_list]
    fig, axes = plt.subplots(len(algorithms), len(columns), squeeze=False, sharex=True,
                             figsize=(4.2 * len(columns), 3.2 * len(algorithms)))
    colors = {name: f"C{i}" for i, name in enumerate(IMPLEMENTATIONS)}
    model_markers = {"resnet18": "s", "mlp200": "^"}
    for row, algorithm in enumerate(algorithms):
        for col, (dtype, threads) in enumerate(columns):
            ax = axes[row][col]
            for name in IMPLEMENTATIONS:
                records = [results.get(w, algorithm, dtype, name, threads) for w in workloads]
                records = [r for r in records if r]
                line = sorted((r["n_elements"], r["gbps"]) for r in records if r["workload"] not in model_markers)
                if line:
                    ax.plot(*zip(*line), "o-", color=colors[name], label=name, markersize=3)
                labelled = bool(line)
                for r in records:
                    if r["workload"] in model_markers:
                        ax.plot(r["n_elements"], r["gbps"], model_markers[r["workload"]], color=colors[name],
                                label=None if labelled else name, markerfacecolor="none")
                        labelled = True
            if threads in results.roof:
                ax.axhline(results.roof[threads], color="k", linestyle="--", linewidth=1,
                           label="STREAM update (roof)")
            ax.set_xscale("log")
            ax.set_title(f"{algorithm} {dtype} {threads} thread(s)", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if col == 0:
                ax.set_ylabel("effective GB/s")
            if row == len(algorithms) - 1:
                ax.set_xlabel("parameter elements")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for workload, marker in model_markers.items():
        handles.append(plt.Line2D([], [], marker=marker, color="gray", linestyle="", markerfacecolor="none"))
        labels.append(f"{workload} (list API; flat/single in their colours)")
    fig.legend(handles, labels, loc="upper center", ncol=min(5, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
