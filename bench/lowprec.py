"""Low-precision optimizer state and 16-bit parameters: speed, bytes and memory, in one run.

    PYTHONPATH=src python bench/lowprec.py            # 3.2e7 elements, 9 rounds (a few minutes)
    PYTHONPATH=src python bench/lowprec.py --quick    # 4e6 elements, 3 rounds: a smoke run

Four measurements, all in the same process and run:

1. **Memory-bound step** (``--n``, default 3.2e7 elements, ``--threads`` 2):
   AdamW step time of torch.optim.AdamW(fused=True) (float32 state, the
   baseline), fusedopt with float32 / bfloat16 / 8-bit state, fusedopt with
   bfloat16 parameters + float32 master weights + 8-bit or float32 state
   (bfloat16 gradients), and, when installed and working on CPU tensors, the
   8-bit AdamW of bitsandbytes and of torchao.  Timed round-robin with
   bench/harness.py together with STREAM copy / triad / update (bench/stream.py)
   on the same threads; the roof is STREAM update, as in bench/run.py.
   Samples last >= 0.1 s (--min-time): a step under 0.1 s is sampled as the
   median of >= 3 back-to-back steps, a longer one is a sample by itself.
   Per row: median and fastest step, speed-up vs torch fused, the bytes an
   ideal one-pass step must move per element (BYTES below), the achieved
   GB/s = bytes x n / median, and its share of the roof.
2. **State bytes per parameter element**, ``opt.state_nbytes(per_element=True)``
   after one step (for the peers, summed over their state tensors).
3. **Cache-resident loop cost** (``--cache-n``, default 65536 elements, 1
   thread): ns per element of each fusedopt storage configuration.
4. The peers that could not run are listed with the reason.

Bytes moved per element (BYTES): every array is read and/or written once.
    float32 AdamW        p r+w 8 + g 4 + m r+w 8 + v r+w 8                     = 28
    bfloat16 state       p r+w 8 + g 4 + m r+w 4 + v r+w 4                     = 20
    8-bit state          p r+w 8 + g 4 + m, v codes r+w 4 + absmax A           = 16 + A
    bf16 p + master + 8b p16 write 2 (not read: the master is) + master r+w 8
                         + g16 2 + codes 4 + absmax A                          = 16 + A
    bf16 p + master + f32 p16 write 2 + master r+w 8 + g16 2 + m, v r+w 16     = 28
where A = 2 states x 4-byte absmax x (read + write) / block (256) = 0.0625.
The 8-bit peers (bitsandbytes, torchao) store the same thing (8-bit codes,
blocks of 256 with one float32 absmax), so their rows use 16 + A; their
unfused eager code moves more than that, which shows as a low % roof.

Results are printed as markdown and written to ``--out`` (default
bench/results/) as lowprec-<date>-<time>.md and .json.  See bench/README.md.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np

try:
    import fusedopt
    from fusedopt import _core
except ImportError as error:  # not installed: run from the source tree with the extension built in place
    sys.exit(f"cannot import fusedopt ({error}); from the repository root run: "
             "PYTHONPATH=src python bench/lowprec.py")
try:
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # a dependency of fusedopt; without it there are no bfloat16 rows
    ml_dtypes, BFLOAT16 = None, None

from harness import Variant, measure
from implementations import ADAM_LR, ADAMW_WEIGHT_DECAY
from report import format_seconds, markdown_table
from run import _cpuinfo, add_sampling_arguments, command_line, import_torch
from stream import Stream
from workloads import parse_workload, random_tensors

DEFAULT_N = 32_000_000
DEFAULT_CACHE_N = 65_536
DEFAULT_REPEATS = 9
#: 0.1 s: every step under 0.1 s (fusedopt, torch at 3.2e7) is sampled as the median of >= 3
#: back-to-back steps, so a lone slow step of a shared machine does not decide a sample
DEFAULT_MIN_TIME = 0.1
QUICK = dict(n=4_000_000, repeats=3, min_time=0.005, min_calls=1)

BLOCK = _core.QUANTIZATION_BLOCK                       # elements per absmax of the 8-bit state
ABSMAX = 2 * 4 * 2 / BLOCK                             # m and v, float32 absmax, read + written
BYTES = {  # per element, see the module docstring
    "f32": (28.0, "p r+w 8 + g 4 + m r+w 8 + v r+w 8"),
    "bf16-state": (20.0, "p r+w 8 + g 4 + m r+w 4 + v r+w 4"),
    "8bit": (16.0 + ABSMAX, f"p r+w 8 + g 4 + codes r+w 4 + absmax {ABSMAX:g}"),
    "bf16p-master-8bit": (16.0 + ABSMAX, f"p16 w 2 + master r+w 8 + g16 2 + codes r+w 4 + absmax {ABSMAX:g}"),
    "bf16p-master-f32": (28.0, "p16 w 2 + master r+w 8 + g16 2 + m r+w 8 + v r+w 8"),
}
#: expected optimizer state bytes per parameter element
EXPECTED_STATE = {"f32": 8.0, "bf16-state": 4.0, "8bit": 2.0 + 8 / BLOCK,
                  "bf16p-master-8bit": 4.0 + 2.0 + 8 / BLOCK, "bf16p-master-f32": 12.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4e6 elements, 3 rounds, 5 ms samples (explicit options win)")
    parser.add_argument("--n", type=float, help=f"elements of the memory-bound case (default {DEFAULT_N:.2g})")
    parser.add_argument("--cache-n", type=float, default=DEFAULT_CACHE_N,
                        help=f"elements of the cache-resident case, 1 thread (default {DEFAULT_CACHE_N}; 0 skips it)")
    add_sampling_arguments(parser, repeats=None, min_time=None, min_calls=None)
    parser.add_argument("--no-peers", action="store_true", help="leave bitsandbytes and torchao out")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out torchao's default torch.compile'd step (its eager step still runs)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no files")
    args = parser.parse_args(argv)
    defaults = dict(n=DEFAULT_N, repeats=DEFAULT_REPEATS, min_time=DEFAULT_MIN_TIME, min_calls=3)
    if args.quick:
        defaults.update(QUICK)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.n, args.cache_n = int(args.n), int(args.cache_n)
    if args.n < 1 or args.cache_n < 0 or args.threads < 1 or args.repeats < 1:
        parser.error("--n, --threads and --repeats must be positive, --cache-n not negative")
    return args


# -- peers ------------------------------------------------------------------------------------

def import_peer(name):
    """The module, or None and the reason (any exception: a broken install must not end the run)."""
    try:
        if name == "bitsandbytes":
            import bitsandbytes as module
        else:
            import torchao.optim as _  # noqa: F401  (the optimizers live there)
            import torchao as module
    except Exception as error:  # noqa: BLE001
        return None, f"{type(error).__name__}: {error}"
    return module, None


def torch_state_nbytes(torch, optimizer):
    """Bytes of every tensor in a torch optimizer's state (torchao's 8-bit subclass: its
    codes, scales and map), the step counters left out."""
    total = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if key == "step" or not torch.is_tensor(value):
                continue
            inner = getattr(value, "tensor_attrs", None)  # torchao OptimState8bit / 4bit / fp8
            if inner:
                total += sum(getattr(value, name).nbytes for name in inner)
            else:
                total += value.nbytes
    return total


# -- the configurations -----------------------------------------------------------------------

@dataclass
class Config:
    """One optimizer configuration of the comparison.

    ``build(arrays)`` returns ``(step, state_bytes, check)``: a zero-argument step,
    a zero-argument state byte count, and a zero-argument "parameters all finite".
    """

    key: str
    label: str
    params: str
    state: str
    bytes_key: str
    build: Callable
    kind: str = "fusedopt"          # "baseline", "fusedopt" or "peer"
    cache: bool = True              # also timed in the cache-resident case
    note: Optional[str] = None
    # filled in
    step: Optional[Callable] = None
    state_bytes: Optional[float] = None
    check: Optional[Callable] = None
    variant: Optional[Variant] = field(default=None, repr=False)


def make_arrays(n):
    """float32 parameters (about +-0.1) and gradients (about +-1e-3), and their bfloat16 roundings."""
    workload = parse_workload(str(n))
    (p32,), (g32,) = (random_tensors(workload.shapes, np.float32, seed=1, scale=0.1),
                      random_tensors(workload.shapes, np.float32, seed=2, scale=1e-3))
    arrays = {"p32": p32, "g32": g32}
    if BFLOAT16 is not None:
        arrays.update(p16=p32.astype(BFLOAT16), g16=g32.astype(BFLOAT16))
    return arrays


def fusedopt_config(param, grad, **options):
    def build(arrays):
        p = arrays[param].copy()
        optimizer = fusedopt.AdamW([p], lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY, **options)
        grads = [arrays[grad]]
        return (lambda: optimizer.step(grads), lambda: optimizer.state_nbytes(),
                lambda: bool(np.isfinite(p.astype(np.float32)).all()))
    return build


def torch_config(torch, make_optimizer, around_step=None):
    def build(arrays):
        param = torch.nn.Parameter(torch.from_numpy(arrays["p32"].copy()))
        param.grad = torch.from_numpy(arrays["g32"])  # shares the NumPy gradient's memory
        optimizer = make_optimizer([param])
        if around_step is None:
            step = optimizer.step
        else:
            def step():
                with around_step():
                    optimizer.step()
        return (step, lambda: torch_state_nbytes(torch, optimizer),
                lambda: bool(torch.isfinite(param.detach()).all()))
    return build


def configurations(torch, args, skipped):
    """The configurations to run; what cannot run goes to `skipped` (name -> reason)."""
    configs = []
    if torch is not None:
        configs.append(Config("torch-fused", "torch AdamW(fused=True)", "f32", "float32", "f32",
                              torch_config(torch, lambda ps: torch.optim.AdamW(
                                  ps, lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY, fused=True)),
                              kind="baseline"))
    configs += [
        Config("fo-f32", "fusedopt float32", "f32", "float32", "f32", fusedopt_config("p32", "g32")),
        Config("fo-bf16-state", "fusedopt bf16 state", "f32", "bfloat16", "bf16-state",
               fusedopt_config("p32", "g32", state_dtype="bfloat16")),
        Config("fo-8bit", "fusedopt 8-bit state", "f32", "8bit", "8bit",
               fusedopt_config("p32", "g32", state_dtype="8bit")),
    ]
    if BFLOAT16 is not None:
        configs += [
            Config("fo-bf16p-master-8bit", "fusedopt bf16 params + master + 8-bit", "bf16 (+f32 master)",
                   "8bit", "bf16p-master-8bit",
                   fusedopt_config("p16", "g16", state_dtype="8bit", master_weights=True)),
            Config("fo-bf16p-master-f32", "fusedopt bf16 params + master + f32 state", "bf16 (+f32 master)",
                   "float32", "bf16p-master-f32",
                   fusedopt_config("p16", "g16", state_dtype="float32", master_weights=True)),
        ]
    else:
        skipped["bf16 params"] = "ml_dtypes not importable"
    if args.no_peers:
        skipped["bitsandbytes, torchao"] = "--no-peers"
        return configs
    for name in ("bitsandbytes", "torchao"):
        if torch is None:
            skipped[name] = "torch not importable"
            continue
        module, reason = import_peer(name)
        if module is None:
            skipped[name] = f"not importable: {reason}"
            continue
        version = getattr(module, "__version__", "?")
        if name == "bitsandbytes":
            # bitsandbytes keeps float32 state for tensors under 4096 elements
            state, key = ("8bit", "8bit") if args.n >= 4096 else ("float32 (n < 4096)", "f32")
            configs.append(Config("bnb-8bit", f"bitsandbytes {version} AdamW8bit", "f32", state, key,
                                  torch_config(torch, lambda ps, m=module: m.optim.AdamW8bit(
                                      ps, lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY)),
                                  kind="peer", cache=False))
        else:
            from unittest import mock

            def make(ps):
                from torchao.optim import AdamW8bit
                return AdamW8bit(ps, lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY)

            # torchao's step always calls torch.compile(single_param_adam, fullgraph=True);
            # eager = the same function run uncompiled (torch.compile patched to the identity)
            # torchao keeps float32 state unless the tensor has >= 4096 elements, a multiple of its block
            state, key = (("8bit", "8bit") if args.n >= 4096 and args.n % 256 == 0
                          else ("float32 (n < 4096 or not a multiple of 256)", "f32"))

            def eager():
                return mock.patch.object(torch, "compile", lambda fn, *a, **k: fn)
            configs.append(Config("torchao-8bit-eager", f"torchao {version} AdamW8bit eager", "f32", state,
                                  key, torch_config(torch, make, around_step=eager), kind="peer", cache=False,
                                  note="torch.compile replaced by the identity"))
            if args.no_compile:
                skipped["torchao AdamW8bit (torch.compile)"] = "--no-compile"
            else:
                configs.append(Config("torchao-8bit-compiled", f"torchao {version} AdamW8bit compiled", "f32",
                                      state, key, torch_config(torch, make), kind="peer", cache=False,
                                      note="its default: torch.compile (inductor, C++ on CPU)"))
    return configs


def build_all(configs, arrays, set_threads, threads, skipped):
    """Build each configuration and take its first step (state allocation, compilation);
    record the state bytes then.  A configuration that fails is skipped with its error."""
    built = []
    n = arrays["p32"].size
    for config in configs:
        set_threads(threads)
        try:
            step, state_bytes, check = config.build(arrays)
            step()
            config.state_bytes = state_bytes() / n
        except Exception as error:  # noqa: BLE001  a peer that cannot run must not end the run
            skipped[config.label] = f"failed: {type(error).__name__}: {error}"
            continue
        config.step, config.check = step, check
        config.variant = Variant((config.key, threads), step, partial(set_threads, threads))
        built.append(config)
    return built


# -- the run ------------------------------------------------------------------------------------

def thread_setter(torch):
    def set_threads(n):
        fusedopt.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)
    return set_threads


def describe_machine(torch, command, peers):
    model, physical_cores, simd = _cpuinfo()
    return {
        "cpu_model": model, "physical_cores": physical_cores, "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_simd_flags": simd, "load_average_start": os.getloadavg(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__,
        "ml_dtypes": getattr(ml_dtypes, "__version__", None),
        "torch": torch.__version__ if torch is not None else None,
        "fusedopt": fusedopt.__version__, "simd_path": _core.simd_path(), "peers": peers,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "command": command,
    }


def peer_versions():
    versions = {}
    for name in ("bitsandbytes", "torchao"):
        try:
            from importlib.metadata import version
            versions[name] = version(name)
        except Exception:  # noqa: BLE001
            versions[name] = None
    return versions


def run_memory_bound(args, torch, set_threads, skipped, progress):
    """Section 1 and 2: the configurations at args.n and STREAM, round-robin."""
    progress(f"arrays: {args.n:,} elements")
    arrays = make_arrays(args.n)
    configs = build_all(configurations(torch, args, skipped), arrays, set_threads, args.threads, skipped)
    variants = [c.variant for c in configs]
    stream = None
    try:
        stream = Stream(init_threads=args.threads)
        variants += stream.variants([args.threads])
    except RuntimeError as error:
        skipped["STREAM roof"] = str(error)
    progress(f"timing {len(variants)} variants x {args.repeats} rounds at {args.n:.3g} elements, "
             f"{args.threads} threads")
    timing = {}
    measure(variants, args.repeats, args.min_time, args.min_calls, None, timing)
    stream_records = {}
    if stream is not None:
        for v in variants[len(configs):]:
            kernel = v.key[1]
            nbytes = stream.bytes_per_pass(kernel)
            stream_records[kernel] = {"n_elements": stream.n, "samples": v.samples,
                                      "median_gbps": nbytes / v.median / 1e9, "best_gbps": nbytes / v.best / 1e9}
        stream.close()
    roof = stream_records.get("update", {}).get("median_gbps")
    baseline = next((c for c in configs if c.kind == "baseline"), None)
    records = []
    for c in configs:
        v = c.variant
        per_element, formula = BYTES[c.bytes_key]
        gbps = per_element * args.n / v.median / 1e9
        records.append({
            "key": c.key, "label": c.label, "params": c.params, "state": c.state, "kind": c.kind, "note": c.note,
            "median_s": v.median, "min_s": v.best, "samples": v.samples, "sample_min": v.sample_min,
            "calls_per_sample": v.calls_per_sample, "steps_timed": v.calls_per_sample * len(v.samples),
            "speedup_vs_torch_fused": baseline.variant.median / v.median if baseline else None,
            "bytes_per_element": per_element, "bytes_formula": formula, "gbps": gbps,
            "roof_pct": 100 * gbps / roof if roof else None,
            "state_bytes_per_element": c.state_bytes, "expected_state_bytes": EXPECTED_STATE.get(c.bytes_key)
            if c.kind != "baseline" else 8.0,
            "finite_after": c.check()})
    for c in configs:
        c.step = c.check = c.variant = None
    del configs, variants, arrays
    gc.collect()
    return records, stream_records, roof, timing


def run_cache_resident(args, torch, set_threads, skipped, progress):
    """Section 3: the fusedopt storage configurations (and torch fused) at args.cache_n, 1 thread."""
    progress(f"cache-resident: {args.cache_n:,} elements, 1 thread")
    arrays = make_arrays(args.cache_n)
    local_skipped = {}
    args_no_peers = argparse.Namespace(**{**vars(args), "no_peers": True})
    configs = [c for c in configurations(torch, args_no_peers, {}) if c.cache]
    configs = build_all(configs, arrays, set_threads, 1, local_skipped)
    for label, reason in local_skipped.items():
        skipped[f"{label} (cache-resident)"] = reason
    timing = {}
    measure([c.variant for c in configs], args.repeats, args.min_time, args.min_calls, None, timing)
    f32 = next((c for c in configs if c.key == "fo-f32"), None)
    records = [{"key": c.key, "label": c.label, "median_s": c.variant.median, "min_s": c.variant.best,
                "samples": c.variant.samples, "calls_per_sample": c.variant.calls_per_sample,
                "ns_per_element": c.variant.median / args.cache_n * 1e9,
                "vs_f32_loop": c.variant.median / f32.variant.median if f32 else None,
                "finite_after": c.check()} for c in configs]
    return records, timing


# -- the report -----------------------------------------------------------------------------------

def fmt(value, spec, suffix=""):
    return "—" if value is None else f"{value:{spec}}{suffix}"


def report(args, machine, records, stream_records, roof, cache_records, skipped):
    parts = [f"## fusedopt low-precision AdamW benchmark\n\n"
             f"- machine: {machine['cpu_model']}, {machine['physical_cores']} cores "
             f"({machine['usable_cpus']} usable cpus), SIMD flags {' '.join(machine['cpu_simd_flags'])}\n"
             f"- python {machine['python']}, numpy {machine['numpy']}, ml_dtypes {machine['ml_dtypes']}, "
             f"torch {machine['torch']}, fusedopt {machine['fusedopt']} (simd path {machine['simd_path']}), "
             f"bitsandbytes {machine['peers']['bitsandbytes']}, torchao {machine['peers']['torchao']}\n"
             f"- load average at start {' '.join(f'{x:.2f}' for x in machine['load_average_start'])}, "
             f"at end {' '.join(f'{x:.2f}' for x in machine['load_average_end'])}; {machine['date']}\n"
             f"- command: `{machine['command']}`\n"
             f"- AdamW lr {ADAM_LR:g}, weight decay {ADAMW_WEIGHT_DECAY:g}; {args.repeats} rounds round-robin, "
             f"a sample = median of >= {args.min_calls} back-to-back steps lasting >= {args.min_time * 1e3:g} ms "
             f"(a step of >= {args.min_time * 1e3:g} ms is a sample by itself); median = median over rounds"]

    rows = [[r["label"], r["params"], r["state"], format_seconds(r["median_s"]), format_seconds(r["min_s"]),
             r["steps_timed"], fmt(r["speedup_vs_torch_fused"], ".3g", "x"), f"{r['bytes_per_element']:.4g}",
             f"{r['gbps']:.1f}", fmt(r["roof_pct"], ".0f", "%")] for r in records]
    stream_line = ("STREAM at the same threads, same rounds: " + ", ".join(
        f"{k} {v['median_gbps']:.1f} GB/s" for k, v in stream_records.items())
        + f" ({next(iter(stream_records.values()))['n_elements']:.3g} float64, no write-allocate); "
          "roof = update") if stream_records else "no STREAM roof (see skipped)"
    parts.append(f"### 1. AdamW step, {args.n:,} elements, {args.threads} threads\n\n"
                 + markdown_table(["configuration", "params", "state", "median", "min", "steps timed",
                                   "vs torch fused", "B/elem", "GB/s", "% roof"], rows)
                 + f"\n\n{stream_line}.\n\nB/elem (bytes an ideal one-pass step moves per element):\n"
                 + "\n".join(f"- {r['label']}: {r['bytes_formula']} = {r['bytes_per_element']:.4g}"
                             for r in records))

    rows = [[r["label"], f"{r['state_bytes_per_element']:.4f}", fmt(r["expected_state_bytes"], ".4g"),
             "yes" if r["finite_after"] else "NO"] for r in records]
    parts.append("### 2. Optimizer state bytes per parameter element (after one step)\n\n"
                 + markdown_table(["configuration", "state B/elem", "expected", "params finite after run"], rows)
                 + "\n\nfusedopt: `opt.state_nbytes(per_element=True)` (slots, 8-bit absmax, master weights); "
                   "torch / peers: bytes of their state tensors (step counters left out; the peers' "
                   "256-entry float32 code maps included).")

    if cache_records:
        rows = [[r["label"], format_seconds(r["median_s"]), f"{r['ns_per_element']:.3f}",
                 fmt(r["vs_f32_loop"], ".2f", "x"), "yes" if r["finite_after"] else "NO"] for r in cache_records]
        parts.append(f"### 3. Cache-resident step, {args.cache_n:,} elements, 1 thread\n\n"
                     + markdown_table(["configuration", "median step", "ns/element", "time vs fusedopt float32",
                                       "finite"], rows))
    parts.append("### 4. Skipped\n\n" + ("\n".join(f"- {name}: skipped: {reason}" for name, reason in skipped.items())
                                         if skipped else "nothing"))
    return "\n\n".join(parts)


def main(argv=None):
    args = parse_args(argv)
    command = command_line(argv, __file__)
    started = time.perf_counter()

    def progress(text):
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    torch, torch_reason = import_torch()
    skipped = {} if torch is not None else {"torch AdamW(fused=True) (the baseline)": torch_reason}
    if torch is not None:
        try:  # torchao's compiled step: compile in this process, no pool of compile workers
            import torch._inductor.config as inductor_config
            inductor_config.compile_threads = 1
        except Exception:  # noqa: BLE001
            pass
    machine = describe_machine(torch, command, peer_versions())
    set_threads = thread_setter(torch)
    original_threads = fusedopt.get_num_threads()
    try:
        records, stream_records, roof, timing = run_memory_bound(args, torch, set_threads, skipped, progress)
        cache_records, cache_timing = (run_cache_resident(args, torch, set_threads, skipped, progress)
                                       if args.cache_n else ([], {}))
    finally:
        fusedopt.set_num_threads(original_threads)
    machine["load_average_end"] = os.getloadavg()
    text = report(args, machine, records, stream_records, roof, cache_records, skipped)
    elapsed = time.perf_counter() - started
    print(text)
    if not args.no_save:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"lowprec-{stamp}.md").write_text(text + "\n")
        (args.out / f"lowprec-{stamp}.json").write_text(json.dumps({
            "mode": "lowprec", "machine": machine, "elapsed_s": elapsed,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "bytes_per_element": {k: {"bytes": b, "formula": f} for k, (b, f) in BYTES.items()},
            "memory_bound": records, "stream": stream_records, "roof_gbps": roof, "timing": timing,
            "cache_resident": cache_records, "cache_timing": cache_timing, "skipped": skipped},
            indent=1, default=float))
        print(f"\nwrote lowprec-{stamp}.md, lowprec-{stamp}.json to {args.out}")
    print(f"took {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
