"""The shared checks of the optimizer zoo (Adagrad, RMSprop, Adamax, NAdam, RAdam,
Adadelta, Lion), each driven by a small :class:`Case`.

References:
- the NumPy twins of :mod:`fusedopt.slow`, run on float64 copies of the inputs
  (tolerance: conftest.trajectory_tolerance);
- torch.optim's single-tensor path (foreach=False), where torch is installed;
- the float32 twins wrapped in :func:`fusedopt.slow.storage.step` for
  low-precision storage (bitwise, as tests/test_low_precision.py does for Adam).

A test file declares its case and subclasses :class:`StandardChecks` (every
check, parametrized for the case), then adds the algorithm's own tests.
"""
import contextlib
import inspect
import itertools
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np
import pytest

import fusedopt
from fusedopt import _core, _qmap, slow
from fusedopt.slow import storage
from conftest import DTYPES, trajectory_tolerance
from test_low_precision import BF16, assert_bitwise, run_everywhere, use

__all__ = ["Case", "DTYPES", "DTYPE_IDS", "LOW_PRECISION", "seed_of"]

DTYPE_IDS = ["float32", "float64"]
N_STEPS = 50
CUTOFF = 1024                     # the threading cutoff of the trajectory tests
#: two param groups: sizes 0 and 1, a 0-d array, odd sizes, around the cutoff and above it
GROUP_SHAPES = ([(0,), (1,), (3, 5), ()],
                [(17,), (CUTOFF - 1,), (CUTOFF,), (CUTOFF + 1,), (4 * CUTOFF + 3,)])
TORCH_SHAPES = ([(0,), (1,), (3, 5), ()], [(17,), (301,)])
THREAD_SHAPES = ([(0,), (1,), (3, 5), ()], [(1003,), (5 * 4096 + 7,)])

#: low-precision configurations: (parameter dtype, optimizer options)
LOW_PRECISION = {
    "f32_state_bf16": (np.float32, dict(state_dtype="bfloat16")),
    "f32_state_bf16_sr": (np.float32, dict(state_dtype="bfloat16", stochastic_rounding=True, seed=5)),
    "f32_state_8bit": (np.float32, dict(state_dtype="8bit")),
    "bf16_master": (BF16, dict(master_weights=True)),
}


def seed_of(*parts):
    return zlib.crc32(repr(parts).encode())


def log_uniform(rng, low, high):
    return float(10 ** rng.uniform(low, high))


@dataclass(frozen=True)
class Case:
    """One algorithm as the shared checks see it.

    name : its module in fusedopt.slow (twin ``fusedopt.slow.<name>_``)
    class_name : its class in fusedopt (and, with torch_name, in torch.optim)
    defaults : the constructor's hyperparameters and defaults (torch's)
    slots : state slot -> whether its 8-bit map is signed
    flags : the options the checks combine: "weight_decay" (drawn > 0 when on),
        "maximize" and the algorithm's own (booleans, or numbers drawn when on)
    draw : draw(rng, flags) -> constructor keywords (random hyperparameters;
        the flags' values)
    counters : what the twin takes besides the state: "step" (1 at the first
        step), "mu_product" (1.0 at the first step; the twin returns the next)
    twin_args : slot -> the twin's keyword, where they differ
    not_twin : constructor keywords the twin does not take (they set the initial state)
    constructor_only : keywords read from the constructor only, not from the
        groups (torch's Adagrad fills every sum with the constructor's
        initial_accumulator_value): the tests give them to the constructor
    initial : initial(kwargs) -> {slot: value the slot starts at} (default 0)
    needed : needed(kwargs) -> the slots allocated for these options (default all)
    sign_update : the update is lr * sign(...) (Lion): in float32 a sign flipped
        by rounding near 0 moves an element by 2 lr
    bad : extra (kwargs, name) rejected with ValueError, besides the generated ones
    """

    name: str
    class_name: str
    defaults: Mapping[str, object]
    slots: Mapping[str, bool]
    flags: tuple
    draw: Callable
    counters: tuple = ("step",)
    torch_name: Optional[str] = None
    twin_args: Mapping[str, str] = field(default_factory=dict)
    not_twin: tuple = ()
    constructor_only: tuple = ()
    initial: Optional[Callable] = None
    needed: Optional[Callable] = None
    sign_update: bool = False
    bad: tuple = ()

    # looked up when used, so that the files collect before the class or twin exists
    @property
    def cls(self):
        return getattr(fusedopt, self.class_name)

    @property
    def twin(self):
        return getattr(slow, self.name + "_")

    def combinations(self):
        """Every combination of the flags, as tuples of the flags turned on."""
        return [tuple(f for f, on in zip(self.flags, bits) if on)
                for bits in itertools.product((False, True), repeat=len(self.flags))]

    def combination_id(self, combination):
        return "+".join(combination) or "plain"

    def draw_kwargs(self, rng, combination):
        return self.draw(rng, {f: f in combination for f in self.flags})

    def twin_keywords(self, kwargs):
        """The twin's hyperparameter keywords for constructor keywords `kwargs`."""
        out = {}
        for key, value in dict(self.defaults, **kwargs).items():
            if key in self.not_twin:
                continue
            if key == "betas":
                out["beta1"], out["beta2"] = value
            else:
                out[key] = value
        return out

    def initial_values(self, kwargs):
        values = {slot: 0.0 for slot in self.slots}
        if self.initial is not None:
            values.update(self.initial(dict(self.defaults, **kwargs)))
        return values

    def needed_slots(self, kwargs):
        return tuple(self.needed(dict(self.defaults, **kwargs)) if self.needed else self.slots)

    def twin_call(self, param, grad, slots, hyper, counters, grad_scale=1.0):
        """One twin step over one array; returns what the twin returns."""
        arrays = {self.twin_args.get(name, name): value for name, value in slots.items()}
        extra = {name: counters[name] for name in self.counters}
        return self.twin(param, grad, **arrays, **hyper, **extra, grad_scale=grad_scale)

    def bad_hyperparameters(self):
        """(kwargs, name): what torch rejects (a negative value, a beta outside
        [0, 1); rho > 1 comes in `bad`) plus NaN and Inf, for every hyperparameter."""
        out = []
        for key, default in self.defaults.items():
            if isinstance(default, bool):
                continue
            if key == "betas":
                for pair in ((-0.1, 0.9), (1.0, 0.9), (0.9, 1.0), (0.9, -0.5), (float("nan"), 0.9),
                             (0.9, float("nan"))):
                    out.append(({"betas": pair}, "betas"))
                continue
            out.append(({key: -1e-3}, key))
            out.append(({key: float("nan")}, key))
            out.append(({key: float("inf")}, key))
        return out + list(self.bad)


@dataclass
class Problem:
    """Two param groups with their own drawn hyperparameters, and the gradients."""

    kwargs: list                 # per group
    params: list                 # per group, the starting arrays
    grads: list                  # per step, one flat list (groups in order)
    options: dict                # constructor keywords (case.constructor_only)

    @property
    def flat(self):
        return [p for group in self.params for p in group]

    def scale(self):
        return max(1.0, *(float(np.abs(p.astype(np.float64)).max(initial=0)) for p in self.flat))


def make_problem(case, combination, dtype, seed, shapes=GROUP_SHAPES, n_steps=N_STEPS):
    rng = np.random.default_rng(seed)
    kwargs = [case.draw_kwargs(rng, combination) for _ in shapes]
    options = {key: kwargs[0][key] for key in case.constructor_only if key in kwargs[0]}
    kwargs = [{k: v for k, v in kw.items() if k not in case.constructor_only} for kw in kwargs]
    params = [[rng.standard_normal(s).astype(dtype) for s in group] for group in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for group in shapes for s in group]
             for _ in range(n_steps)]
    return Problem(kwargs, params, grads, options)


def build(case, problem, **options):
    """(optimizer, its parameters): copies of the problem's, in its two groups."""
    groups = [dict(kw, params=[p.copy() for p in ps]) for kw, ps in zip(problem.kwargs, problem.params)]
    opt = case.cls(groups, **problem.options, **options)
    return opt, [p for group in opt.param_groups for p in group["params"]]


def run_fused(case, problem, **options):
    opt, params = build(case, problem, **options)
    for grads in problem.grads:
        assert opt.step(grads) is True
    return params, opt


class TwinRun:
    """The twin over the problem's arrays (copies in `dtype`), tensor by tensor."""

    def __init__(self, case, problem, dtype=np.float64):
        self.case, self.dtype = case, dtype
        self.hyper, self.params, self.slots, self.counters = [], [], [], []
        for kw, group in zip(problem.kwargs, problem.params):
            kw = dict(problem.options, **kw)
            init = case.initial_values(kw)
            for p in group:
                q = p.astype(dtype)
                self.hyper.append(case.twin_keywords(kw))
                self.params.append(q)
                self.slots.append({s: np.full(q.shape, init[s], dtype) for s in case.needed_slots(kw)})
                self.counters.append({"step": 0, "mu_product": 1.0})

    def step(self, grads, multiplier=1.0, grad_scale=1.0):
        for i, g in enumerate(grads):
            c = self.counters[i]
            c["step"] += 1
            g = g.astype(self.dtype) * multiplier if multiplier != 1.0 else g.astype(self.dtype)
            ret = self.case.twin_call(self.params[i], g, self.slots[i], self.hyper[i], c, grad_scale)
            if "mu_product" in self.case.counters:
                c["mu_product"] = ret

    def run(self, all_grads):
        for grads in all_grads:
            self.step(grads)
        return self


def flip_allowance(case, problem):
    """Per-element room for signs flipped by rounding (sign updates only): 2 lr each."""
    if not case.sign_update:
        return None
    return 2 * max(kw.get("lr", case.defaults["lr"]) for kw in problem.kwargs)


def assert_close(got, expected, dtype, n_steps, scale, allowance=None, what=""):
    """Within trajectory_tolerance; with `allowance` (sign updates in float32), a
    few elements (1 in 500, at least 3) may be off by up to two sign flips more."""
    tol = trajectory_tolerance(dtype, n_steps, scale)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == dtype and a.shape == b.shape, f"{what} tensor {i}"
        err = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if allowance is not None and dtype == np.float32:
            over = err > tol
            assert over.sum() <= max(3, a.size // 500), \
                f"{what} tensor {i}: {over.sum()} of {a.size} elements beyond {tol:.3g}"
            err = np.where(over, err - 2 * allowance, err)
        worst = np.max(err, initial=0.0)
        assert worst <= tol, f"{what} tensor {i}: max error {worst:.3g} > tolerance {tol:.3g}"


# -- the checks ------------------------------------------------------------------------

def _defaults(cls, kind):
    parameters = inspect.signature(cls).parameters
    return {k: p.default for k, p in parameters.items() if p.kind is kind and k != "params"}


def check_signature(case):
    """The constructor: torch's hyperparameters and defaults, in torch's order,
    then fusedopt's keyword-only options exactly as fusedopt.Adam has them."""
    positional = _defaults(case.cls, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    assert positional == dict(case.defaults)
    assert list(positional) == list(case.defaults)
    keyword_only = _defaults(case.cls, inspect.Parameter.KEYWORD_ONLY)
    assert keyword_only == _defaults(fusedopt.Adam, inspect.Parameter.KEYWORD_ONLY)
    assert list(keyword_only) == list(_defaults(fusedopt.Adam, inspect.Parameter.KEYWORD_ONLY))
    assert set(case.cls.spec.slots) == set(case.slots)


def check_signature_matches_torch(case):
    torch = pytest.importorskip("torch")
    parameters = inspect.signature(getattr(torch.optim, case.torch_name)).parameters
    for key, default in case.defaults.items():
        assert key in parameters, key
        assert parameters[key].default == default, key


def check_twin_trajectory(case, combination, dtype):
    """50 steps, two groups with their own random hyperparameters, sizes 0 and 1,
    a 0-d array, odd sizes, around the threading cutoff and above it.  Every
    option on: two threads (the cutoff lowered to CUTOFF); the other combinations
    run on one (a parallel step can cost milliseconds on a small shared machine;
    check_threads_and_simd shows threads change no bit)."""
    threaded = tuple(combination) == tuple(case.flags)
    _core.set_parallel_min_elements(CUTOFF)
    fusedopt.set_num_threads(2 if threaded and fusedopt.info()["openmp"] else 1)
    seed = seed_of(case.name, combination, np.dtype(dtype).name)
    problem = make_problem(case, combination, dtype, seed)
    got, opt = run_fused(case, problem)
    twin = TwinRun(case, problem).run(problem.grads)
    assert_close(got, twin.params, dtype, N_STEPS, problem.scale(), flip_allowance(case, problem))
    for i, (a, b) in enumerate(zip(got, problem.flat)):
        if a.size:
            assert not np.array_equal(a, b), f"tensor {i} did not move"
    for i, state in opt.state.items():
        assert state.get("step", N_STEPS) == N_STEPS
        assert sorted(k for k in state if k in case.slots) == sorted(twin.slots[i])


@contextlib.contextmanager
def torch_default_float64(torch):
    """Scalar state (step, NAdam's mu_product) in float64, as the kernels keep them."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def check_torch(case, combination, dtype):
    """torch.optim.<Name>(foreach=False) on the same groups: float64 within 1e-12
    relative, float32 within the ulp rule (both round in the parameter's dtype)."""
    torch = pytest.importorskip("torch")
    seed = seed_of("torch", case.name, combination, np.dtype(dtype).name)
    problem = make_problem(case, combination, dtype, seed, shapes=TORCH_SHAPES)
    got, _ = run_fused(case, problem)
    with torch_default_float64(torch):
        groups = [dict(kw, params=[torch.tensor(p.copy()) for p in ps])
                  for kw, ps in zip(problem.kwargs, problem.params)]
        tensors = [t for group in groups for t in group["params"]]
        topt = getattr(torch.optim, case.torch_name)(groups, foreach=False, **problem.options)
        for grads in problem.grads:
            for t, g in zip(tensors, grads):
                t.grad = torch.tensor(g)
            topt.step()
    expected = [t.detach().numpy() for t in tensors]
    assert_close(got, expected, dtype, N_STEPS, problem.scale(), what="vs torch")


def check_threads_and_simd(case, dtype, threads=(1, 2, 3)):
    """Every option on: the same bits (parameters and state) for 1, 2 and 3 threads
    (the cutoff at 0, so small tensors are split too) on every SIMD path."""
    if not fusedopt.info()["openmp"]:
        pytest.skip("built without OpenMP: one thread only")
    combination = case.flags
    problem = make_problem(case, combination, dtype, seed_of("threads", case.name, np.dtype(dtype).name),
                           shapes=THREAD_SHAPES, n_steps=6)
    results = {}
    for n, simd in run_everywhere(threads):
        use(n, simd)
        params, opt = run_fused(case, problem)
        results[n, simd] = params, opt.state
    (first_params, first_state) = results[1, "baseline"]
    for key, (params, state) in results.items():
        for i, (a, b) in enumerate(zip(first_params, params)):
            assert_bitwise(b, a, f"{key} params[{i}]")
        for i in first_state:
            for name, value in first_state[i].items():
                if isinstance(value, np.ndarray):
                    assert_bitwise(state[i][name], value, f"{key} state[{i}][{name}]")
                else:
                    assert state[i][name] == value, f"{key} state[{i}][{name}]"


def _initial_twin_state(case, kernel_state, kwargs):
    """The state the optimizer allocated (layout from the kernel's state after a
    step: storage dtype, 8-bit or not), filled with the initial values by hand:
    float32 or bfloat16 full of the value; 8-bit: code 255 (map value 1.0) and
    absmax = the value (zeros for 0)."""
    init = case.initial_values(kwargs)
    out = {}
    for name in case.needed_slots(kwargs):
        number = case.cls.spec.slots.index(name)
        buffer, value = kernel_state[name], np.float32(init[name])
        if name + "_absmax" in kernel_state:
            codes = np.full(buffer.shape, 255 if value else _qmap.ZERO[case.slots[name]], np.uint8)
            absmax = np.full(kernel_state[name + "_absmax"].shape, value, np.float32)
            out[name] = (number, (codes, absmax))
        else:
            out[name] = (number, np.full(buffer.shape, value, np.float32).astype(buffer.dtype))
    return out


def check_low_precision(case, config, combination, threads, simd, n_steps=4):
    """Bitwise equal to fusedopt.slow.storage.step around the float32 twin: 9000
    elements (8-bit, with a partial block) and 300 (float32 state: under
    min_8bit_size), every thread count and SIMD path."""
    use(threads, simd)
    param_dtype, options = LOW_PRECISION[config]
    rng = np.random.default_rng(seed_of("low", case.name, config, combination))
    kwargs = case.draw_kwargs(rng, combination)
    sizes = (9000, 300)
    params = [rng.standard_normal(n).astype(param_dtype) for n in sizes]
    twin_params = [p.copy() for p in params]
    opt = case.cls(params, **kwargs, **options)
    hyper = case.twin_keywords(kwargs)
    signed = dict(case.slots)
    twin_states, masters, counters = {}, {}, {}
    for step in range(n_steps):
        grads = [(rng.standard_normal(n) * 0.3).astype(param_dtype) for n in sizes]
        key_step = opt.step_count
        assert opt.step(grads)
        for i, (p, g) in enumerate(zip(twin_params, grads)):
            state = opt.state[i]
            if i not in twin_states:
                assert sorted(k for k in state if k in case.slots) == sorted(case.needed_slots(kwargs))
                twin_states[i] = _initial_twin_state(case, state, kwargs)
                masters[i] = p.astype(np.float32) if "master" in state else None
                counters[i] = {"step": 0, "mu_product": 1.0}
            c = counters[i]
            c["step"] += 1
            returned = {}

            def twin(work, grad, **keywords):
                slots = {name: keywords.pop(name) for name in list(keywords) if name in case.slots}
                returned["value"] = case.twin_call(work, grad, slots, keywords, c)

            storage.step(twin, p, g, twin_states[i], signed=signed, master=masters[i],
                         stochastic_rounding=options.get("stochastic_rounding", False),
                         key=storage.rounding_key(options.get("seed", 0), key_step, i), **hyper)
            if "mu_product" in case.counters:
                c["mu_product"] = returned["value"]
        for i, p in enumerate(params):
            assert_bitwise(p, twin_params[i], f"step {step} params[{i}]")
            for name, (_, stored) in twin_states[i].items():
                if isinstance(stored, tuple):
                    assert_bitwise(opt.state[i][name], stored[0], f"step {step} {name}[{i}] codes")
                    assert_bitwise(opt.state[i][name + "_absmax"], stored[1], f"step {step} {name}[{i}] absmax")
                else:
                    assert_bitwise(opt.state[i][name], stored, f"step {step} {name}[{i}]")
            if masters[i] is not None:
                assert_bitwise(opt.state[i]["master"], masters[i], f"step {step} master[{i}]")
    return opt


def low_precision_parameters(case, combinations=None):
    """pytest parameters (config, combination, threads, simd) of check_low_precision."""
    combinations = combinations or [case.flags]
    return [pytest.param(config, combination, threads, simd,
                         id=f"{config}-{case.combination_id(combination)}-{threads}t-{simd}")
            for config in LOW_PRECISION for combination in combinations
            for threads, simd in run_everywhere()]


STATE_DICT_CONFIGS = {"float64": (np.float64, {}), "float32": (np.float32, {}),
                      "float32_8bit": (np.float32, dict(state_dtype="8bit", min_8bit_size=0)),
                      "float32_bf16_sr": (np.float32, dict(state_dtype="bfloat16", stochastic_rounding=True))}


def check_state_dict_round_trip(case, config):
    """10 steps, state_dict, load into a fresh optimizer, 10 more: the bits of 20
    uninterrupted steps (parameters and state)."""
    dtype, options = STATE_DICT_CONFIGS[config]
    problem = make_problem(case, case.flags, dtype, seed_of("sd", case.name, config),
                           shapes=([(40,), (3, 3)], [(300,)]), n_steps=20)
    straight, straight_opt = run_fused(case, problem, **options)
    first, params = build(case, problem, **options)
    for grads in problem.grads[:10]:
        first.step(grads)
    sd = first.state_dict()
    needed = [case.needed_slots(kw) for kw, group in zip(problem.kwargs, problem.params) for _ in group]
    for i, entry in sd["state"].items():
        names = {k for k in entry if k in case.slots}
        assert names == set(needed[i]), f"state[{i}] slots"
        assert set(case.cls.spec.counters) <= set(entry)
        if "step" in entry:
            assert entry["step"] == 10
        if options.get("state_dtype") == "8bit":
            assert all(entry[name].dtype == np.uint8 for name in names)
    # a fresh optimizer over the arrays as they are after 10 steps
    fresh = case.cls([dict(problem.kwargs[0], params=params[:2]), dict(problem.kwargs[1], params=params[2:])],
                     **problem.options, **options)
    fresh.load_state_dict(sd)
    for grads in problem.grads[10:]:
        fresh.step(grads)
    for i, (a, b) in enumerate(zip(straight, params)):
        assert_bitwise(b, a, f"resumed params[{i}]")
    for i, entry in straight_opt.state.items():
        for name, value in entry.items():
            if isinstance(value, np.ndarray):
                assert_bitwise(fresh.state[i][name], value, f"resumed state[{i}][{name}]")
            else:
                assert fresh.state[i][name] == value, f"resumed state[{i}][{name}]"


def check_skip_nonfinite(case, dtype):
    """A NaN (or Inf) gradient: step returns False, nothing changes (parameters,
    state, counters), and the next steps are those of an optimizer that never saw it."""
    problem = make_problem(case, case.flags, dtype, seed_of("skip", case.name, np.dtype(dtype).name),
                           shapes=([(30,), (3, 3)], [(300,)]), n_steps=5)
    straight, _ = run_fused(case, problem)
    opt, params = build(case, problem, skip_nonfinite=True)
    for grads in problem.grads[:3]:
        assert opt.step(grads) is True
    before = [p.copy() for p in params]
    state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
             for i, e in opt.state.items()}
    for bad_value in (np.nan, np.inf):
        bad = [g.copy() for g in problem.grads[3]]
        bad[2][7] = bad_value
        assert opt.step(bad) is False
        for i, (a, b) in enumerate(zip(params, before)):
            assert_bitwise(a, b, f"params[{i}] after a skipped step")
        for i, entry in state.items():
            for name, value in entry.items():
                if isinstance(value, np.ndarray):
                    assert_bitwise(opt.state[i][name], value, f"state[{i}][{name}] after a skipped step")
                else:
                    assert opt.state[i][name] == value
    assert opt.skipped_steps == 2
    for grads in problem.grads[3:]:
        assert opt.step(grads) is True
    for i, (a, b) in enumerate(zip(params, straight)):
        assert_bitwise(a, b, f"params[{i}] after skipping")


def check_max_grad_norm(case):
    """Clipping the global norm equals the twin stepped with the clipped
    gradients (coefficient max_norm / (norm + 1e-6) when the norm exceeds it),
    float64 to 1e-12 relative; unclipped steps (small gradients) are plain."""
    problem = make_problem(case, case.flags, np.float64, seed_of("clip", case.name),
                           shapes=([(30,), (3, 3)], [(300,)]), n_steps=8)
    for t in (2, 5):                 # norms under the limit: no clipping at these steps
        problem.grads[t] = [g * 1e-3 for g in problem.grads[t]]
    max_norm = 2.0
    got, opt = run_fused(case, problem, max_grad_norm=max_norm)
    twin = TwinRun(case, problem)
    for grads in problem.grads:
        norm = np.sqrt(sum(np.sum(g * g) for g in grads))
        twin.step(grads, multiplier=min(1.0, max_norm / (norm + 1e-6)))
    assert np.isclose(opt.last_grad_norm, np.sqrt(sum(np.sum(g * g) for g in problem.grads[-1])), rtol=1e-12)
    assert_close(got, twin.params, np.float64, len(problem.grads), problem.scale(), what="clipped")


def check_grad_scale(case, dtype):
    """A loss scale divides the gradients inside the kernel: the twin with grad_scale."""
    problem = make_problem(case, case.flags, dtype, seed_of("scale", case.name, np.dtype(dtype).name),
                           shapes=([(30,), (3, 3)], [(300,)]), n_steps=10)
    scale = 1024.0
    scaled = [[(g.astype(np.float64) * scale).astype(dtype) for g in grads] for grads in problem.grads]
    opt, params = build(case, problem, grad_scale=scale)
    for grads in scaled:
        assert opt.step(grads)
    twin = TwinRun(case, problem)
    for grads in scaled:
        twin.step(grads, grad_scale=scale)
    assert_close(params, twin.params, dtype, len(scaled), problem.scale(), flip_allowance(case, problem),
                 what="grad_scale")


def check_bad_hyperparameter(case, kwargs, name, via):
    """ValueError naming the argument, from the constructor or from a group dict
    (then at construction too)."""
    p = np.zeros(3)
    with pytest.raises(ValueError, match=re.escape(name)):
        if via == "constructor":
            case.cls([p], **kwargs)
        else:
            case.cls([{"params": [np.zeros(2)]}, dict(kwargs, params=[p])])


def bad_parameters(case):
    return [pytest.param(kwargs, name, via, id=f"{via}-{kwargs!r}")
            for kwargs, name in case.bad_hyperparameters() for via in ("constructor", "group")
            if via == "constructor" or name not in case.constructor_only]



def check_functional(case, dtype, n_steps=5):
    """fusedopt.functional.<name>_ (same signature as the twin) equals the twin run
    in the same dtype bitwise, over a list of arrays, every option on."""
    rng = np.random.default_rng(seed_of(case.name, "functional", np.dtype(dtype).name))
    kwargs = case.draw_kwargs(rng, case.combinations()[-1])
    init = case.initial_values(kwargs)
    hyper = case.twin_keywords(kwargs)
    shapes = [(1,), (3, 5), (1100,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    slots = [{s: np.full(p.shape, init[s], dtype) for s in case.needed_slots(kwargs)} for p in params]
    twin_params, twin_slots = [p.copy() for p in params], [{k: v.copy() for k, v in s.items()} for s in slots]
    function = getattr(fusedopt.functional, case.name + "_")
    counters = {"step": 0, "mu_product": 1.0}
    for _ in range(n_steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        counters["step"] += 1
        lists = {case.twin_args.get(name, name): [s[name] for s in slots] for name in slots[0]}
        extra = {name: counters[name] for name in case.counters}
        got = function(params, grads, **lists, **hyper, **extra, grad_scale=2.0)
        expected = None
        for p, g, s in zip(twin_params, grads, twin_slots):
            expected = case.twin_call(p, g, s, hyper, counters, grad_scale=2.0)
        if "mu_product" in case.counters:
            assert got == expected
            counters["mu_product"] = got
        for i, (a, b) in enumerate(zip(params, twin_params)):
            assert_bitwise(a, b, f"{case.name}_ params[{i}]")
            for name in slots[i]:
                assert_bitwise(slots[i][name], twin_slots[i][name], f"{case.name}_ {name}[{i}]")


class StandardChecks:
    """The checks every zoo optimizer's test file runs: the file subclasses this
    with ``case = CASE`` (and sets a torch test to None where torch has no peer)."""

    case = None

    def pytest_generate_tests(self, metafunc):
        # the parameters that depend on the case (pytest calls this per test method)
        case = metafunc.cls.case
        if "via" in metafunc.fixturenames:
            metafunc.parametrize("kwargs,name,via", bad_parameters(case))
        elif "threads" in metafunc.fixturenames:
            metafunc.parametrize("config,combination,threads,simd", low_precision_parameters(case))
        elif "combination" in metafunc.fixturenames:
            metafunc.parametrize("combination", [pytest.param(c, id=case.combination_id(c))
                                                 for c in case.combinations()])

    def test_signature(self):
        check_signature(self.case)

    def test_signature_matches_torch(self):
        check_signature_matches_torch(self.case)

    @pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
    def test_matches_the_twin(self, combination, dtype):
        check_twin_trajectory(self.case, combination, dtype)

    @pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
    def test_matches_torch(self, combination, dtype):
        check_torch(self.case, combination, dtype)

    @pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
    def test_bitwise_identical_for_any_thread_count_and_simd_path(self, dtype):
        check_threads_and_simd(self.case, dtype)

    @pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
    def test_functional_form_equals_the_twin_bitwise(self, dtype):
        check_functional(self.case, dtype)

    def test_low_precision_equals_the_twin_bitwise(self, config, combination, threads, simd):
        check_low_precision(self.case, config, combination, threads, simd)

    @pytest.mark.parametrize("state_dict_config", list(STATE_DICT_CONFIGS))
    def test_state_dict_resumes_bitwise(self, state_dict_config):
        check_state_dict_round_trip(self.case, state_dict_config)

    @pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
    def test_nonfinite_gradients_skip_the_step(self, dtype):
        check_skip_nonfinite(self.case, dtype)

    def test_max_grad_norm_clips_as_the_twin(self):
        check_max_grad_norm(self.case)

    @pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
    def test_grad_scale_divides_the_gradients(self, dtype):
        check_grad_scale(self.case, dtype)

    def test_bad_hyperparameters_are_rejected_naming_them(self, kwargs, name, via):
        check_bad_hyperparameter(self.case, kwargs, name, via)
