"""The optimizer zoo: every fusedopt optimizer against torch's fastest CPU path for it, in one run.

    PYTHONPATH=src python bench/zoo.py                  # 1e3 1e5 1e6 3.2e7 resnet18, 7 rounds, 2 threads
    PYTHONPATH=src python bench/zoo.py --quick          # no 3.2e7, 3 rounds, 5 ms samples: a smoke run
    PYTHONPATH=src python bench/zoo.py --only adagrad,lion --sizes 1e5 1e6

For each optimizer of the zoo (Adagrad, RMSprop, Adamax, NAdam, RAdam, Adadelta, Adafactor,
Lion; ``--only adam`` adds Adam as a reference, ``--only muon`` Muon, on matrix
workloads such as ``--sizes 256x256 1024x4096``) and each workload (one 1-D
float32 parameter of 1e3, 1e5, 1e6, 3.2e7 elements, and the 62 tensors of
ResNet-18, bench/workloads.py), one step of ``fusedopt.<Name>`` (the list API)
is timed against ``torch.optim.<Name>`` on tensors of the same values, round-robin
with bench/harness.py (median over rounds of per-round samples), both on
``--threads`` threads (default 2).  The torch peer is its fastest CPU path:
``fused=True`` where torch accepts it on CPU (found by constructing and
stepping it at start-up: Adagrad in torch 2.13), ``foreach=True`` otherwise
(torch.optim.Muon has neither: its single-tensor path); the output says which.
A workload "RxC" is one R x C matrix (Adafactor factors it; Muon needs it).  Lion has no torch peer.  Both sides get the same
hyperparameters (torch's defaults, weight decay 0: ``ZOO`` below).

STREAM copy / triad / update (bench/stream.py) are measured in the same run on
the same threads; the roof is update, as in bench/run.py: % roof = (bytes an
ideal one-pass step moves / median step time) / STREAM update GB/s, i.e. the
roof time (bytes / roof bandwidth) over the step time.  It is shown from 1e6
elements up (over 100%: the arrays fit in cache).

Bytes moved per element (float32, every array read and/or written once):
    Adagrad   p r+w 8 + g 4 + sum r+w 8                          = 20
    RMSprop   p r+w 8 + g 4 + square_avg r+w 8                   = 20   (no momentum, not centered)
    Adamax    p r+w 8 + g 4 + exp_avg r+w 8 + exp_inf r+w 8      = 28
    NAdam     p r+w 8 + g 4 + exp_avg r+w 8 + exp_avg_sq r+w 8   = 28
    RAdam     p r+w 8 + g 4 + exp_avg r+w 8 + exp_avg_sq r+w 8   = 28
    Adadelta  p r+w 8 + g 4 + square_avg r+w 8 + acc_delta r+w 8 = 28
    Lion      p r+w 8 + g 4 + exp_avg r+w 8                      = 20
    Adafactor matrix: (p, g) + g + (p r+w, g) = 24, three passes: the step size needs
              ||p|| and ||u||, u needs the row and column sums; vector: (p, g, variance)
              + (p r+w, g, variance r+w) = 32, two passes
    Muon      bound by the Newton-Schulz matmuls (~ 5 x (4 A B^2 + 2 A^3) flops for
              an A x B matrix, A <= B), not by memory; % roof means nothing for it
    (Adam     p r+w 8 + g 4 + exp_avg r+w 8 + exp_avg_sq r+w 8   = 28)

The targets (of the issue), checked per optimizer: at least as fast as the torch
peer at every size; at least 3x at 1e5; at DRAM sizes (single buffers of
>= 1.6e7 elements, as in bench/run.py) >= 90% of STREAM update.  As a check that
both sides run the same algorithm, the parameters after their first step are
compared (max |fusedopt - torch| / max |update|).

Printed as markdown and written to ``--out`` (default bench/results/) as
zoo-<date>-<time>.md and .json (every sample, the machine).  See bench/README.md.
"""
import argparse
import datetime
import gc
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

try:
    import fusedopt
except ImportError as error:  # not installed: run from the source tree with the extension built in place
    sys.exit(f"cannot import fusedopt ({error}); from the repository root run: "
             "PYTHONPATH=src python bench/zoo.py")

from harness import Variant, measure, timer_overhead
from report import BIG, format_seconds, markdown_table, stream_table
from run import (Progress, add_sampling_arguments, command_line, describe_machine, import_torch,
                 measure_stream, problem_arrays, thread_setter, write_json)
from stream import KERNEL_TRANSFERS
from workloads import parse_workload

DEFAULT_SIZES = ["1e3", "1e5", "1e6", "3.2e7", "resnet18"]
DEFAULT_REPEATS = 7
QUICK = dict(repeats=3, min_time=0.005, min_calls=1, sizes=["1e3", "1e5", "1e6", "resnet18"])
ITEMSIZE = 4                                            # float32
NEED_VS_TORCH, NEED_AT_1E5, NEED_ROOF_PCT = 1.0, 3.0, 90.0
DISAGREE = 0.1                                          # first-step difference / update flagged in the notes
ROOF_FROM = 1_000_000                                   # % roof shown from this many elements


@dataclass(frozen=True)
class Optimizer:
    """One optimizer of the zoo.

    Attributes
    ----------
    name : str
        Command-line name.
    cls : str
        Class name in fusedopt and in torch.optim.
    hyper : dict
        Keyword arguments given to both (torch's defaults, weight decay 0).
    slots : tuple of str
        Per-element state arrays, each read and written once per step.
    has_torch : bool
        torch.optim has it.
    default : bool
        Run unless ``--only`` says otherwise.
    """

    name: str
    cls: str
    hyper: dict
    slots: tuple
    has_torch: bool = True
    default: bool = True
    matrices_only: bool = False
    passes: Optional[Callable] = None
    passes_formula: str = ""

    @property
    def bytes_per_element(self):
        return ITEMSIZE * (3 + 2 * len(self.slots))  # p read + written, g read, each slot read + written

    def bytes_per_element_of(self, workload):
        """Bytes per element a step over `workload` moves: one pass, or what `passes`
        (bytes per element of a parameter shape) says, averaged over the elements."""
        if self.passes is None:
            return self.bytes_per_element
        return sum(self.passes(shape) * math.prod(shape) for shape in workload.shapes) / workload.n_elements

    @property
    def bytes_formula(self):
        if self.passes is not None:
            return self.passes_formula
        return " + ".join([f"p r+w {2 * ITEMSIZE}", f"g {ITEMSIZE}",
                           *(f"{s} r+w {2 * ITEMSIZE}" for s in self.slots)]) + f" = {self.bytes_per_element}"


def adafactor_passes(shape):
    """Adafactor's bytes per float32 element: a matrix (..., R, C) is read in three passes
    (p and g for the row/column sums and ||p||; g for ||u||; p, g and p written for the
    update; the row and column state is O(R + C)); a vector in two (p, g, variance for
    ||p|| and ||u||; then p, g, variance read and p, variance written)."""
    return ITEMSIZE * (6 if len(shape) >= 2 else 8)


BETAS = (0.9, 0.999)
ZOO = {o.name: o for o in [
    Optimizer("adagrad", "Adagrad", dict(lr=1e-2, lr_decay=0.0, eps=1e-10, weight_decay=0.0), ("sum",)),
    Optimizer("rmsprop", "RMSprop", dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                                         centered=False), ("square_avg",)),
    Optimizer("adamax", "Adamax", dict(lr=2e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), ("exp_avg", "exp_inf")),
    Optimizer("nadam", "NAdam", dict(lr=2e-3, betas=BETAS, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3),
              ("exp_avg", "exp_avg_sq")),
    Optimizer("radam", "RAdam", dict(lr=1e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), ("exp_avg", "exp_avg_sq")),
    Optimizer("adadelta", "Adadelta", dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0),
              ("square_avg", "acc_delta")),
    Optimizer("lion", "Lion", dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0), ("exp_avg",), has_torch=False),
    Optimizer("adafactor", "Adafactor", dict(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0),
              ("variance",), passes=adafactor_passes,
              passes_formula="matrix: (p, g) + g + (p r+w, g) = 24; vector: (p, g, variance) + "
                             "(p r+w, g, variance r+w) = 32 (the norms need a pass before the update)"),
    # 2-D only, and bound by the Newton-Schulz matmuls, not by memory: run it on matrix workloads
    Optimizer("muon", "Muon", dict(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True),
              ("momentum_buffer", "update"), matrices_only=True, default=False),
    # a reference already measured by bench/run.py (torch fused): not run unless named
    Optimizer("adam", "Adam", dict(lr=1e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), ("exp_avg", "exp_avg_sq"),
              default=False),
]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: no 3.2e7, 3 rounds, 5 ms samples (explicit options win)")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"optimizers to run, of {', '.join(ZOO)} (default: all but adam)")
    parser.add_argument("--sizes", nargs="+", metavar="SIZE",
                        help=f"workloads (default {' '.join(DEFAULT_SIZES)}): element counts such as 2e6, "
                             "resnet18, mlp200")
    add_sampling_arguments(parser, repeats=None, min_time=None, min_calls=None)
    parser.add_argument("--no-save", action="store_true", help="print only, write no files")
    args = parser.parse_args(argv)
    defaults = dict(repeats=DEFAULT_REPEATS, min_time=0.02, min_calls=3, sizes=DEFAULT_SIZES)
    if args.quick:
        defaults.update(QUICK)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    names = [n.strip().lower() for n in args.only.split(",") if n.strip()] if args.only else \
        [n for n, o in ZOO.items() if o.default]
    unknown = [n for n in names if n not in ZOO]
    if unknown or not names:
        parser.error(f"--only: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(ZOO)}")
    args.optimizers = [ZOO[n] for n in dict.fromkeys(names)]
    try:
        args.workloads = [parse_workload(name) for name in args.sizes]
    except ValueError as error:
        parser.error(str(error))
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be positive")
    args.threads = [args.threads]  # the form bench/run.py's measure_stream takes
    return args


# -- the torch peer ---------------------------------------------------------------------------

def torch_path(torch, optimizer):
    """("fused", "foreach" or "single", why not fused): fused where torch's CPU optimizer
    takes it (constructed and stepped on a small matrix), else foreach where it takes
    that, else its single-tensor path (torch.optim.Muon has no other)."""
    cls = getattr(torch.optim, optimizer.cls)
    reason = None
    for path in ("fused", "foreach"):
        param = torch.nn.Parameter(torch.ones(8, 8))
        param.grad = torch.full((8, 8), 1e-3)
        try:
            cls([param], **optimizer.hyper, **{path: True}).step()
        except Exception as error:  # noqa: BLE001  TypeError (no such argument) or a CPU rejection at step
            text = str(error).splitlines()[0] if str(error) else ""
            why = (f"no `{path}` argument" if isinstance(error, TypeError) and path in text
                   else f"{path}=True fails on CPU: {type(error).__name__}: {text[:120]}")
            reason = why if reason is None else f"{reason}; {why}"
            continue
        return path, reason
    return "single", reason


def torch_peers(torch, optimizers):
    """name -> {"path": "fused" / "foreach" / None, "why": str or None}."""
    peers = {}
    for o in optimizers:
        if torch is None or not o.has_torch:
            peers[o.name] = {"path": None, "why": "torch not importable" if torch is None else "no torch peer"}
        else:
            path, why = torch_path(torch, o)
            peers[o.name] = {"path": path, "why": why}
    return peers


def fusedopt_missing(optimizers):
    """{name: reason} for the optimizers this fusedopt build cannot step (class or kernel missing)."""
    missing = {}
    for o in optimizers:
        try:
            getattr(fusedopt, o.cls)([np.ones((8, 8), np.float32)], **o.hyper).step([np.full((8, 8), 1e-3, np.float32)])
        except Exception as error:  # noqa: BLE001  AttributeError, or TypeError "no kernel ... is compiled"
            missing[o.name] = f"fusedopt.{o.cls} does not run in this build ({type(error).__name__}: {error})"
    return missing


# -- one case: an optimizer on a workload -------------------------------------------------------

def run_case(workload, optimizer, params, grads, torch, peer, args, set_threads, progress):
    """fusedopt and (if any) the torch peer on `workload`, round-robin; the record of the case."""
    threads = args.threads[0]
    setup = partial(set_threads, threads)
    record = {"workload": workload.name, "n_elements": workload.n_elements, "n_tensors": len(workload.shapes),
              "optimizer": optimizer.name, "torch_path": peer["path"],
              "bytes_per_element": optimizer.bytes_per_element_of(workload),
              "bytes_per_step": optimizer.bytes_per_element_of(workload) * workload.n_elements}
    setup()
    fo_params = [p.copy() for p in params]
    fo = getattr(fusedopt, optimizer.cls)(fo_params, **optimizer.hyper)
    fo.step(grads)                                    # state allocation, first touch
    fo_first = [p.copy() for p in fo_params] if peer["path"] else None
    variants = [Variant(("fusedopt", threads), partial(fo.step, grads), setup)]
    tensors = []
    if peer["path"]:
        try:
            tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
            for tensor, g in zip(tensors, grads):
                tensor.grad = torch.from_numpy(g)     # shares the NumPy gradient's memory
            flag = {} if peer["path"] == "single" else {peer["path"]: True}
            peer_opt = getattr(torch.optim, optimizer.cls)(tensors, **optimizer.hyper, **flag)
            peer_opt.step()
        except Exception as error:  # noqa: BLE001  a peer that cannot run a case must not end the run
            record["torch_error"] = f"{type(error).__name__}: {error}"
            progress.shrink(args.repeats)
        else:
            # same algorithm on both sides: the parameters after the first step, relative to the update
            diff = max(float(np.max(np.abs(f - t.detach().numpy()), initial=0)) for f, t in zip(fo_first, tensors))
            update = max(float(np.max(np.abs(f - p), initial=0)) for f, p in zip(fo_first, params))
            record["first_step_rel_diff"] = diff / update if update else diff
            variants.append(Variant(("torch", threads), peer_opt.step, setup))
        fo_first = None
    timing = {"workload": workload.name, "optimizer": optimizer.name}
    measure(variants, args.repeats, args.min_time, args.min_calls, progress.update, timing)
    record["timing"] = timing
    for v in variants:
        side = v.key[0]
        record[side] = {"median_s": v.median, "min_s": v.best, "samples": v.samples, "sample_min": v.sample_min,
                        "calls_per_sample": v.calls_per_sample,
                        "gbps": record["bytes_per_step"] / v.median / 1e9}
    record["finite_after"] = bool(all(np.isfinite(p).all() for p in fo_params))
    record["torch_finite_after"] = bool(all(torch.isfinite(t.detach()).all() for t in tensors))
    if "torch" in record:
        record["speedup"] = record["torch"]["median_s"] / record["fusedopt"]["median_s"]
    return record


def add_roof(records, roof):
    for r in records:
        for side in ("fusedopt", "torch"):
            if side in r:
                r[side]["roof_pct"] = 100 * r[side]["gbps"] / roof if roof else None


# -- the targets and the report -------------------------------------------------------------------

def check_targets(records, optimizers):
    """Per optimizer: the worst speed-up (where), the speed-up at 1e5, % roof at DRAM sizes; PASS / MISS / n/a."""
    out = []
    for o in optimizers:
        mine = [r for r in records if r["optimizer"] == o.name]
        timed = [r for r in mine if "speedup" in r]
        worst = min(timed, key=lambda r: r["speedup"], default=None)
        at_1e5 = next((r["speedup"] for r in timed if r["n_elements"] == 100_000 and r["n_tensors"] == 1), None)
        dram = [r for r in mine if r["workload"] in BIG or (r["n_tensors"] == 1 and r["n_elements"] >= 16_000_000)]
        roof = min((r["fusedopt"]["roof_pct"] for r in dram if r["fusedopt"].get("roof_pct") is not None),
                   default=None)
        diffs = [r["first_step_rel_diff"] for r in mine if "first_step_rel_diff" in r]

        def verdict(value, need):
            return "n/a" if value is None else "PASS" if value >= need else "MISS"
        out.append({"optimizer": o.name, "cls": o.cls,
                    "worst_speedup": worst and worst["speedup"], "worst_at": worst and worst["workload"],
                    "all_at_least_1x": verdict(worst and worst["speedup"], NEED_VS_TORCH),
                    "speedup_1e5": at_1e5, "at_1e5_3x": verdict(at_1e5, NEED_AT_1E5),
                    "dram_roof_pct": roof, "roof_90": verdict(roof, NEED_ROOF_PCT),
                    "first_step_rel_diff": max(diffs) if diffs else None,
                    "finite": all(r["finite_after"] for r in mine)})
    return out


def fmt(value, spec, suffix=""):
    return "—" if value is None else f"{value:{spec}}{suffix}"


def report(args, machine, peers, stream_records, roof, records, targets, notes):
    info = machine["fusedopt"]
    parts = [f"## fusedopt optimizer zoo vs torch\n\n"
             f"- machine: {machine['cpu_model']}, {machine['physical_cores']} cores "
             f"({machine['usable_cpus']} usable cpus), SIMD flags {' '.join(machine['cpu_simd_flags'])}, "
             f"L3 {machine['l3_cache_bytes'] >> 20} MiB\n"
             f"- python {machine['python']}, numpy {machine['numpy']}, torch {machine['torch']}, "
             f"fusedopt {info.get('version', fusedopt.__version__)} (simd path {info.get('simd_path')})\n"
             f"- load average at start {' '.join(f'{x:.2f}' for x in machine['load_average_start'])}, "
             f"at end {' '.join(f'{x:.2f}' for x in machine['load_average_end'])}; {machine['date']}\n"
             f"- command: `{machine['command']}`\n"
             f"- float32, {args.threads[0]} threads (fusedopt.set_num_threads, torch.set_num_threads, STREAM); "
             f"{args.repeats} rounds round-robin, a sample = median of >= {args.min_calls} back-to-back steps "
             f"lasting >= {args.min_time * 1e3:g} ms; median = median over rounds"]

    rows = [[o.cls, "—" if peers[o.name]["path"] is None else
             f"torch.optim.{o.cls}()" if peers[o.name]["path"] == "single" else
             f"torch.optim.{o.cls}({peers[o.name]['path']}=True)",
             peers[o.name]["why"] or "", ", ".join(f"{k}={v}" for k, v in o.hyper.items())]
            for o in args.optimizers]
    parts.append("### torch peers and hyperparameters (both sides)\n\n"
                 + markdown_table(["optimizer", "torch peer", "why not fused", "hyperparameters"], rows))
    parts.append(f"### STREAM, {args.threads[0]} threads (roof = update)\n\n"
                 + (stream_table(stream_records) if stream_records else "not measured (see notes)"))

    rows = []
    for r in records:
        fo, pt = r["fusedopt"], r.get("torch")
        show_roof = r["n_elements"] >= ROOF_FROM
        rows.append([ZOO[r["optimizer"]].cls, r["torch_path"] or "—", f"{r['bytes_per_element']:.3g}", r["workload"],
                     format_seconds(fo["median_s"]), format_seconds(pt["median_s"]) if pt else "—",
                     fmt(r.get("speedup"), ".2f", "x"), f"{fo['gbps']:.2f}",
                     fmt(fo.get("roof_pct") if show_roof else None, ".0f", "%"),
                     fmt(pt.get("roof_pct") if pt and show_roof else None, ".0f", "%")])
    parts.append("### one step: fusedopt vs torch\n\n"
                 + markdown_table(["optimizer", "torch", "B/elem", "workload", "fusedopt", "torch", "speed-up",
                                   "fusedopt GB/s", "fusedopt % roof", "torch % roof"], rows)
                 + f"\n\nspeed-up = torch median / fusedopt median.  GB/s = B/elem x elements / median.  "
                   f"% roof = GB/s / STREAM update GB/s ({fmt(roof, '.2f')}), shown from "
                   f"{ROOF_FROM:.0e} elements (over 100%: the arrays fit in cache).  resnet18: "
                   f"62 tensors, 11,689,512 elements.\n\nB/elem (bytes an ideal one-pass float32 step moves):\n"
                 + "\n".join(f"- {o.cls}: {o.bytes_formula}" for o in args.optimizers))

    rows = [[ZOO[t["optimizer"]].cls, t["all_at_least_1x"],
             fmt(t["worst_speedup"], ".2f", "x") + (f" ({t['worst_at']})" if t["worst_at"] else ""),
             t["at_1e5_3x"], fmt(t["speedup_1e5"], ".2f", "x"), t["roof_90"], fmt(t["dram_roof_pct"], ".0f", "%"),
             fmt(t["first_step_rel_diff"], ".1e"), "yes" if t["finite"] else "NO"] for t in targets]
    parts.append("### targets\n\n" + markdown_table(
        ["optimizer", ">= 1x torch everywhere", "slowest (where)", ">= 3x at 1e5", "at 1e5",
         f">= {NEED_ROOF_PCT:g}% roof at DRAM sizes", "% roof (>= 1.6e7)", "1st step Δp / update",
         "finite"], rows)
        + "\n\nDRAM sizes: single buffers of >= 1.6e7 elements (n/a without them, e.g. --quick).  "
          "1st step: max |fusedopt - torch| over the parameters after one step from the same values, "
          "over the largest |update|.  Its floor is float32 rounding of p: ulp(0.1) / update, ~1e-2 for "
          f"RAdam (first update lr x g, ~1e-6), ~1e-5 for the others; another algorithm gives ~1 (over "
          f"{DISAGREE:g}: listed in the notes).")
    parts.append("### notes\n\n" + ("\n".join(f"- {n}" for n in notes) if notes else "nothing skipped"))
    return "\n\n".join(parts)


def main(argv=None):
    args = parse_args(argv)
    command = command_line(argv, __file__)
    started = time.perf_counter()
    torch, torch_reason = import_torch()
    notes = [torch_reason] if torch_reason else []
    missing = fusedopt_missing(args.optimizers)
    notes += [f"{ZOO[name].cls}: skipped: {reason}" for name, reason in missing.items()]
    args.optimizers = [o for o in args.optimizers if o.name not in missing]
    if not args.optimizers:
        sys.exit("none of the optimizers asked for exists in this fusedopt build; try --only adam")
    machine = describe_machine(torch, command)
    set_threads = thread_setter(torch)
    original_threads = fusedopt.get_num_threads()
    peers = torch_peers(torch, args.optimizers)
    per_case = sum(1 + (peers[o.name]["path"] is not None) for o in args.optimizers)
    progress = Progress(args.repeats * (len(KERNEL_TRANSFERS) + per_case * len(args.workloads)))
    records, timings = [], []
    try:
        set_threads(args.threads[0])
        stream_records, roofs, stream_command, stream_timing = measure_stream(args, progress)
        timings.append(stream_timing)
        roof = roofs.get(args.threads[0])
        if roof is None:
            notes.append("no STREAM roof: % roof not measured")
        for workload in args.workloads:
            progress.stage(f"{workload.name}: arrays")
            params, grads = problem_arrays(workload, np.float32)
            for optimizer in args.optimizers:
                if optimizer.matrices_only and any(len(shape) != 2 for shape in workload.shapes):
                    notes.append(f"{optimizer.cls} {workload.name}: skipped (2-D parameters only)")
                    progress.shrink(args.repeats * (1 + (peers[optimizer.name]["path"] is not None)))
                    continue
                progress.stage(f"{workload.name} {optimizer.name}")
                record = run_case(workload, optimizer, params, grads, torch, peers[optimizer.name], args,
                                  set_threads, progress)
                if record.get("first_step_rel_diff", 0) > DISAGREE:
                    notes.append(f"{optimizer.cls} {workload.name}: fusedopt and torch disagree after the first "
                                 f"step (max difference {record['first_step_rel_diff']:.2g} x the update)")
                if not record["finite_after"] or not record["torch_finite_after"]:
                    sides = [side for side, key in (("fusedopt", "finite_after"), ("torch", "torch_finite_after"))
                             if not record[key]]
                    why = (": the same gradient at every step, and Adafactor's step is relative (about lr "
                           "times the parameters' RMS), so the parameters grow geometrically and overflow after "
                           "~1e4 steps (torch's, the same; a slower side takes fewer steps in the same time)"
                           if optimizer.name == "adafactor" else "")
                    notes.append(f"{optimizer.cls} {workload.name}: {' and '.join(sides)} ended the timed steps "
                                 f"with non-finite parameters{why}")
                if "torch_error" in record:
                    notes.append(f"{optimizer.cls} {workload.name}: torch peer failed: {record['torch_error']}")
                timings.append(record.pop("timing"))
                records.append(record)
                gc.collect()  # free this case's copies and state (GBs at 3.2e7) before the next
            params = grads = None
    finally:
        progress.close()
        fusedopt.set_num_threads(original_threads)
    add_roof(records, roof)
    targets = check_targets(records, args.optimizers)
    machine["load_average_end"] = os.getloadavg()
    text = report(args, machine, peers, stream_records, roof, records, targets, notes)
    elapsed = time.perf_counter() - started
    print(text)
    if not args.no_save:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"zoo-{stamp}.md").write_text(text + "\n")
        write_json(args.out / f"zoo-{stamp}.json", {
            "mode": "zoo", "machine": machine, "elapsed_s": elapsed, "timer_overhead_s": timer_overhead(),
            "settings": {"repeats": args.repeats, "min_time_s": args.min_time, "min_calls": args.min_calls,
                         "threads": args.threads[0], "dtype": "float32",
                         "workloads": [w.describe() for w in args.workloads]},
            "optimizers": {o.name: {"cls": o.cls, "hyper": o.hyper, "slots": o.slots,
                                    "bytes_per_element": o.bytes_per_element, "bytes_formula": o.bytes_formula,
                                    "torch_peer": peers[o.name]} for o in args.optimizers},
            "stream": {"command": stream_command, "results": stream_records, "roof_gbps": roof},
            "results": records, "targets": targets, "notes": notes, "timing": timings})
        print(f"\nwrote zoo-{stamp}.md, zoo-{stamp}.json to {args.out}")
    print(f"took {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
