"""Scenarios of tests/test_distributed.py, run under ``mpiexec -n N``.

    mpiexec -n 2 python tests/mpi_scenarios.py <scenario> [folder]

Each scenario asserts on every rank and prints ``OK <scenario> rank <r>`` at the
end; an assertion error or an uncaught exception ends the process with a
non-zero status, which mpiexec passes on.

Reference: one process stepping the same optimizer class over copies of the
same parameters with the gradients summed over the ranks in rank order and
``grad_scale=N`` (what the ranks' mean is inside the kernels).  With two ranks
every sum has one rounding whatever MPI's order, so the runs agree bit for bit;
with three, MPI may add in another order: the project's trajectory tolerance
(float32: 2 ulps of the scale per step; float64: 1e-12 relative).
"""
import math
import os
import sys
import warnings

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fusedopt  # noqa: E402
from fusedopt import schedules  # noqa: E402
from fusedopt.distributed import DistributedOptimizer, ZeroRedundancyOptimizer, partition  # noqa: E402
from conftest import trajectory_tolerance  # noqa: E402

COMM = MPI.COMM_WORLD
RANK, N = COMM.Get_rank(), COMM.Get_size()
N_STEPS = 50
#: sizes 0 and 1, a 0-d array, odd sizes, arrays larger than a shard
SHAPES = [(300, 7), (5,), (), (1000,), (0,), (2000,), (3, 5)]


def arrays(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def gradients(shapes, dtype, step):
    """Every rank's gradients of a step (each rank takes its own)."""
    return [arrays(shapes, dtype, 1000 * step + r + 1) for r in range(N)]


def summed(per_rank):
    """The ranks' gradients summed in rank order, in their dtype."""
    out = []
    for i in range(len(per_rank[0])):
        total = per_rank[0][i].copy()
        for r in range(1, N):
            total = np.asarray(total + per_rank[r][i], dtype=total.dtype)
        out.append(total)
    return out


def assert_matches(got, expected, dtype, steps, what):
    if N == 2:
        for i, (a, b) in enumerate(zip(got, expected)):
            assert np.array_equal(a, b), f"{what}: array {i} differs from the single process (2 ranks: bitwise)"
        return
    for i, (a, b) in enumerate(zip(got, expected)):
        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))
        tol = trajectory_tolerance(np.dtype(dtype).type, steps, scale)
        assert err <= tol, f"{what}: array {i} off by {err:.3g} > {tol:.3g}"


def assert_same_on_every_rank(params, what):
    for i, p in enumerate(params):
        mine = p.reshape(-1).view(np.uint8)
        root = mine.copy()
        COMM.Bcast(root, root=0)
        assert np.array_equal(root, mine), f"{what}: array {i} differs from rank 0's"


def grouped(params, kwargs):
    """Two param groups: the first three arrays with the constructor's values, the rest
    with a smaller rate (and a schedule where `scheduled`)."""
    second = dict(kwargs.pop("second", {}))
    return [{"params": params[:3]}, dict(second, params=params[3:])]


# -- the scenarios --------------------------------------------------------------------

def data_parallel(folder=None):
    """DistributedOptimizer equals the single process, with and without clipping and
    the non-finite skip (a NaN on one rank skips the step on every rank)."""
    for dtype in (np.float32, np.float64):
        for name, kwargs in (("AdamW", dict(lr=1e-2, weight_decay=0.1)),
                             ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True)),
                             ("Adam", dict(lr=1e-2, max_grad_norm=1.0, skip_nonfinite=True))):
            init = arrays(SHAPES, dtype, 0)
            mine, ref_params = [a.copy() for a in init], [a.copy() for a in init]
            if RANK:
                for p in mine:   # rank 0's parameters are broadcast at construction
                    p += 1.0
            cls = getattr(fusedopt, name)
            opt = DistributedOptimizer(cls(grouped(mine, {}), **kwargs))
            ref = cls(grouped(ref_params, {}), **kwargs)
            for step in range(N_STEPS):
                per_rank = gradients(SHAPES, dtype, step)
                if step == 7 and "skip_nonfinite" in kwargs:
                    per_rank[N - 1][3][4] = np.nan
                applied = opt.step(per_rank[RANK])
                expected = ref.step(summed(per_rank), grad_scale=N)
                assert applied == expected == (step != 7 or "skip_nonfinite" not in kwargs)
            assert_matches(mine, ref_params, dtype, N_STEPS, f"DP {name} {np.dtype(dtype)}")
            assert_same_on_every_rank(mine, f"DP {name}")
            if "max_grad_norm" in kwargs:
                assert opt.skipped_steps == 1
                assert abs(opt.last_grad_norm - ref.last_grad_norm) <= 1e-6 * ref.last_grad_norm


ZERO_CASES = {
    "adamw": ("AdamW", dict(lr=1e-2, weight_decay=0.1, second=dict(lr=3e-3))),
    "adam-amsgrad-schedule": ("Adam", dict(lr=schedules.CosineAnnealing(1e-2, T_max=N_STEPS), amsgrad=True)),
    "sgd-nesterov": ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True, second=dict(momentum=0.5))),
    "adagrad": ("Adagrad", dict(lr=1e-2, initial_accumulator_value=0.1)),
    "rmsprop": ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True)),
    "nadam": ("NAdam", dict(lr=1e-2)),
    "lion": ("Lion", dict(lr=1e-3, weight_decay=0.1)),
    "adamw-bf16-state": ("AdamW", dict(lr=1e-2, state_dtype="bfloat16")),
    "adamw-8bit": ("AdamW", dict(lr=1e-2, state_dtype="8bit", min_8bit_size=256)),
    "lamb": ("LAMB", dict(lr=1e-2, weight_decay=1e-2)),
    "adafactor": ("Adafactor", dict(lr=1e-2)),
    "adamw-schedulefree": ("AdamWScheduleFree", dict(lr=1e-2, warmup_steps=5)),
}


def zero_matches_single_process(folder=None):
    """ZeroRedundancyOptimizer equals the single process for every kind of optimizer:
    element-wise ones split arrays (at 256-element boundaries), LAMB and Adafactor keep
    them whole; float32 and float64; lists and FlatParams; two param groups."""
    for case, (name, kwargs) in ZERO_CASES.items():
        for dtype in ((np.float32,) if "state" in case or "8bit" in case else (np.float32, np.float64)):
            for layout in ("list", "flat"):
                kw = dict(kwargs)
                options = {k: v for k, v in kw.items() if k != "second"}
                init = arrays(SHAPES, dtype, 0)
                cls = getattr(fusedopt, name)
                if layout == "flat":
                    # one FlatParams buffer, one group; the reference steps the same buffer alone
                    flat, ref_flat = fusedopt.FlatParams(SHAPES, dtype), fusedopt.FlatParams(SHAPES, dtype)
                    for view, ref_view, a in zip(flat.params, ref_flat.params, init):
                        view[...] = a
                        ref_view[...] = a
                    mine, ref_params = [flat.param], [ref_flat.param]
                    ref = cls([ref_flat.param], **options)
                    zero = ZeroRedundancyOptimizer(flat, cls, **options)
                else:
                    mine, ref_params = [a.copy() for a in init], [a.copy() for a in init]
                    ref = cls(grouped(ref_params, dict(kw)), **options)
                    zero = ZeroRedundancyOptimizer(grouped(mine, dict(kw)), cls, **options)
                if hasattr(ref, "train"):
                    ref.train()
                    zero.train()
                for step in range(20):
                    per_rank = gradients(SHAPES, dtype, step)
                    if layout == "flat":
                        for view, ref_view, g, total in zip(flat.grads, ref_flat.grads, per_rank[RANK],
                                                            summed(per_rank)):
                            view[...] = g
                            ref_view[...] = total
                        zero.step([flat.grad])
                        ref.step([ref_flat.grad], grad_scale=N)
                    else:
                        zero.step(per_rank[RANK])
                        ref.step(summed(per_rank), grad_scale=N)
                what = f"ZeRO {case} {np.dtype(dtype)} {layout}"
                assert_matches(mine, ref_params, dtype, 20, what)
                assert_same_on_every_rank(mine, what)
                # the consolidated state is the single process's
                whole = zero.consolidate_state_dict()
                if RANK == 0 and layout == "list":
                    expected = ref.state_dict()
                    for i, entry in expected["state"].items():
                        for key, value in entry.items():
                            got = whole["state"][i][key]
                            if isinstance(value, np.ndarray):
                                assert got.shape == value.shape and got.dtype == value.dtype, (what, i, key)
                                if N == 2:
                                    assert np.array_equal(got.reshape(-1).view(np.uint8), value.reshape(-1).view(np.uint8)), (what, i, key)
                            else:
                                assert got == value, (what, i, key, got, value)


def zero_state_is_sharded(folder=None):
    """Each rank holds 1/N of the state bytes (the split rounds to 256 elements)."""
    big = [np.zeros(100_000, np.float32), np.zeros(3000, np.float32)]
    single = fusedopt.AdamW([a.copy() for a in big]).state_nbytes()
    zero = ZeroRedundancyOptimizer(big, fusedopt.AdamW)
    mine = zero.state_nbytes()
    share = np.empty(N, dtype=np.int64)
    COMM.Allgather(np.array([mine], dtype=np.int64), share)
    assert share.sum() == single, (share, single)
    assert abs(mine - single / N) <= 8 * 256, (mine, single / N)
    eight = ZeroRedundancyOptimizer([a.copy() for a in big], fusedopt.AdamW, state_dtype="8bit")
    single8 = fusedopt.AdamW([a.copy() for a in big], state_dtype="8bit").state_nbytes()
    COMM.Allgather(np.array([eight.state_nbytes()], dtype=np.int64), share)
    assert share.sum() == single8, (share, single8)


def zero_clipping_and_nonfinite(folder=None):
    """max_grad_norm clips by the global norm (one 16-byte Allreduce); a NaN on one rank
    skips the step on every rank, leaving parameters and state as they were."""
    dtype = np.float64
    init = arrays(SHAPES, dtype, 0)
    mine, ref_params = [a.copy() for a in init], [a.copy() for a in init]
    zero = ZeroRedundancyOptimizer(mine, fusedopt.Adam, lr=1e-2, max_grad_norm=0.5, skip_nonfinite=True)
    ref = fusedopt.Adam(ref_params, lr=1e-2, max_grad_norm=0.5, skip_nonfinite=True)
    for step in range(10):
        per_rank = gradients(SHAPES, dtype, step)
        if step == 4:
            per_rank[N - 1][5][17] = np.inf
        before = [p.copy() for p in mine]
        applied = zero.step(per_rank[RANK])
        assert applied == ref.step(summed(per_rank), grad_scale=N) == (step != 4)
        if step == 4:
            assert all(np.array_equal(a, b) for a, b in zip(before, mine))
        else:
            assert abs(zero.last_grad_norm - ref.last_grad_norm) <= 1e-12 * ref.last_grad_norm
    assert zero.skipped_steps == 1
    for a, b in zip(mine, ref_params):   # the norm is summed in another order: 1e-12 relative
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def options_set_later(folder=None):
    """Gradient safety options set after construction are checked when set and used by
    the next step: on DistributedOptimizer (they are the wrapped optimizer's) and on
    ZeRO; norms whose squares overflow float64 still clip; masked gradients are refused."""
    dtype = np.float64
    init = arrays(SHAPES, dtype, 0)
    dp = DistributedOptimizer(fusedopt.SGD([a.copy() for a in init], lr=1.0))
    zero = ZeroRedundancyOptimizer([a.copy() for a in init], fusedopt.SGD, lr=1.0)
    ref = fusedopt.SGD([a.copy() for a in init], lr=1.0, max_grad_norm=1.0, skip_nonfinite=True)
    for opt in (dp, zero):
        opt.max_grad_norm = 1.0
        opt.skip_nonfinite = True
        for name, value, error in (("max_grad_norm", math.nan, ValueError), ("max_grad_norm", 0.0, ValueError),
                                   ("grad_scale", math.nan, ValueError), ("grad_scale", 1e-40, ValueError),
                                   ("grad_scale", "1.0", TypeError), ("skip_nonfinite", 1, TypeError)):
            try:
                setattr(opt, name, value)
            except error as exc:
                assert name in str(exc), exc
            else:
                raise AssertionError(f"{type(opt).__name__}.{name} = {value!r} was accepted")
        assert opt.max_grad_norm == 1.0 and opt.skip_nonfinite is True and opt.grad_scale == 1.0
    assert dp.optimizer.max_grad_norm == 1.0   # set on the optimizer that steps
    calls = []
    unwrapped = dp.step
    dp.step = lambda grads, **kwargs: calls.append(1) or unwrapped(grads, **kwargs)   # anything else: the wrapper's
    assert "step" not in vars(dp.optimizer)
    # a scale whose product with the number of ranks overflows: refused before any collective
    before = [p.copy() for p in zero._params]
    for opt in (dp, zero):
        try:
            opt.step(gradients(SHAPES, dtype, 0)[RANK], grad_scale=1e308)
        except ValueError as exc:
            assert "overflows" in str(exc) or N == 1, exc
        else:
            assert N == 1, "grad_scale=1e308 times the ranks was accepted"
    assert N == 1 or all(np.array_equal(a, b) for a, b in zip(before, zero._params))
    # finite gradients of 1e200: their squares overflow, the norm does not (and no rank
    # may raise on the overflow warning while the others wait in a collective)
    per_rank = [[np.asarray(g * 1e200) for g in grads] for grads in gradients(SHAPES, dtype, 0)]
    assert ref.step(summed(per_rank), grad_scale=N)
    for opt in (dp, zero):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert opt.step(per_rank[RANK])
        params = [p for group in opt.param_groups for p in group["params"]] if opt is dp else opt._params
        for a, b in zip(params, (p for group in ref.param_groups for p in group["params"])):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert abs(opt.last_grad_norm - ref.last_grad_norm) <= 1e-12 * ref.last_grad_norm
    assert len(calls) == 2   # the refused grad_scale and the step above went through the wrapper
    # a norm beyond float64: ZeRO cannot clip it and says so on every rank, stepping nothing
    before = [p.copy() for p in zero._params]
    try:
        zero.step([np.full(p.shape, 1.7e308 / N) for p in zero._params])   # summed: finite
    except ValueError as exc:
        assert "too large to clip" in str(exc), exc
    else:
        raise AssertionError("a norm beyond float64 was clipped")
    assert all(np.array_equal(a, b) for a, b in zip(before, zero._params))
    # a NaN now skips the step on every rank
    per_rank = gradients(SHAPES, dtype, 1)
    per_rank[0][0][0, 0] = math.nan
    for opt in (dp, zero):
        assert opt.step(per_rank[RANK]) is False
    # masked gradients: refused (the kernels would ignore the mask), on every rank
    masked = [np.ma.masked_array(g, mask=True) if i == 0 else g for i, g in enumerate(per_rank[RANK])]
    try:
        zero.step(masked)
    except (TypeError, RuntimeError) as exc:
        assert "masked" in str(exc) or "rank" in str(exc), exc
    else:
        raise AssertionError("a masked gradient was stepped")


def zero_checkpoints(folder):
    """Per-rank checkpoints resume bitwise (same world size); the consolidated state dict
    resumes a single-process optimizer bitwise, and a ZeRO optimizer on fewer ranks."""
    dtype = np.float32
    init = arrays(SHAPES, dtype, 0)
    mine = [a.copy() for a in init]
    kwargs = dict(lr=1e-2, weight_decay=0.1)
    zero = ZeroRedundancyOptimizer(mine, fusedopt.AdamW, **kwargs)
    for step in range(5):
        zero.step(gradients(SHAPES, dtype, step)[RANK])
    path = os.path.join(folder, f"rank{RANK}.npz")
    fusedopt.save(zero, path)
    whole = zero.consolidate_state_dict()
    saved_params = [p.copy() for p in mine]
    for step in range(5, 10):
        zero.step(gradients(SHAPES, dtype, step)[RANK])
    # 1. per-rank checkpoints
    again = [p.copy() for p in saved_params]
    zero2 = ZeroRedundancyOptimizer(again, fusedopt.AdamW, **kwargs)
    fusedopt.load(zero2, path)
    for step in range(5, 10):
        zero2.step(gradients(SHAPES, dtype, step)[RANK])
    assert all(np.array_equal(a, b) for a, b in zip(again, mine))
    # a rank's file on another rank: every rank raises
    other = os.path.join(folder, f"rank{(RANK + 1) % N}.npz")
    zero3 = ZeroRedundancyOptimizer([p.copy() for p in saved_params], fusedopt.AdamW, **kwargs)
    try:
        fusedopt.load(zero3, other)
    except (ValueError, RuntimeError) as exc:
        assert "rank" in str(exc) or "failed" in str(exc), exc
    else:
        raise AssertionError("loading another rank's checkpoint did not raise")
    # 2. the consolidated state dict in a single process
    single_params = [p.copy() for p in saved_params]
    single = fusedopt.AdamW(single_params, **kwargs)
    whole = COMM.bcast(whole, root=0)   # (the test ships it to every rank; the library never pickles)
    single.load_state_dict(whole)
    for step in range(5, 10):
        single.step(summed(gradients(SHAPES, dtype, step)), grad_scale=N)
    assert_matches(single_params, mine, dtype, 5, "consolidated, single process")
    # 3. ... and on a smaller world
    color = 0 if RANK < max(1, N - 1) else MPI.UNDEFINED
    sub = COMM.Split(color, RANK)
    if sub != MPI.COMM_NULL:
        small = [p.copy() for p in saved_params]
        zero4 = ZeroRedundancyOptimizer(small, fusedopt.AdamW, comm=sub, **kwargs)
        zero4.load_state_dict(whole)
        for step in range(5, 10):
            per_rank = gradients(SHAPES, dtype, step)
            # the smaller world's ranks give the same sum: rank 0 all of it, the others zeros
            mine_grads = summed(per_rank) if sub.Get_rank() == 0 else [np.zeros_like(g) for g in per_rank[0]]
            zero4.step(mine_grads, grad_scale=N / sub.Get_size())
        assert_matches(small, mine, dtype, 5, f"consolidated, on {sub.Get_size()} ranks")
        sub.Free()


def save_then_die(folder):
    """Save once; then rank N-1 dies inside the second save, before its rename."""
    from fusedopt import checkpoint

    zero = ZeroRedundancyOptimizer(arrays(SHAPES, np.float32, 0), fusedopt.AdamW, lr=1e-2)
    zero.step(gradients(SHAPES, np.float32, 0)[RANK])
    path = os.path.join(folder, f"rank{RANK}.npz")
    fusedopt.save(zero, path)
    np.save(os.path.join(folder, f"expected{RANK}.npy"), zero.optimizer.state_dict()["state"][0]["exp_avg"])
    zero.step(gradients(SHAPES, np.float32, 1)[RANK])
    COMM.Barrier()
    if RANK == N - 1:
        checkpoint.os.replace = lambda *args: os._exit(17)   # dies with the new file written, not renamed
    fusedopt.save(zero, path)
    COMM.Barrier()


def load_after_death(folder):
    """The dead rank's checkpoint is the first save's, whole (its second save never
    replaced it); the other ranks' hold the second save.  Loaded together they are
    two steps apart: every rank refuses them."""
    from fusedopt import checkpoint

    zero = ZeroRedundancyOptimizer(arrays(SHAPES, np.float32, 0), fusedopt.AdamW, lr=1e-2)
    path = os.path.join(folder, f"rank{RANK}.npz")
    state = checkpoint.read(zero, path)["state"]["0"]
    if RANK == N - 1:
        assert state["step"] == 1
        assert np.array_equal(state["exp_avg"], np.load(os.path.join(folder, f"expected{RANK}.npy")))
    else:
        assert state["step"] == 2
    leftovers = [f for f in os.listdir(folder) if f.startswith(".fusedopt-")]
    assert len(leftovers) <= 1, leftovers   # the dead rank's temporary file, at most
    try:
        fusedopt.load(zero, path)
    except (ValueError, RuntimeError) as exc:
        assert "disagree" in str(exc), exc
    else:
        raise AssertionError("checkpoints of different steps loaded")
    assert zero.optimizer.state_dict()["state"][0]["step"] == 0   # nothing loaded anywhere


def one_rank_goes_wrong(folder):
    """What only one rank does wrong raises on every rank, and nothing hangs: a missing
    checkpoint file, a malformed state dict, other clipping options; an array spanning
    three ranks keeps its 8-bit state in pieces of min_8bit_size or more."""
    params = arrays(SHAPES, np.float32, 0)
    zero = ZeroRedundancyOptimizer([p.copy() for p in params], fusedopt.AdamW, lr=1e-2)
    zero.step(gradients(SHAPES, np.float32, 0)[RANK])
    path = os.path.join(folder, f"r{RANK}.npz")
    fusedopt.save(zero, path)
    if RANK == N - 1:
        os.unlink(path)
    for attempt in ("missing file", "malformed"):
        try:
            if attempt == "missing file":
                fusedopt.load(zero, path)
            else:
                whole = COMM.bcast(zero.consolidate_state_dict(), root=0)
                if RANK == N - 1:
                    whole["state"] = [1, 2]
                zero.load_state_dict(whole)
        except (OSError, ValueError, RuntimeError, AttributeError, TypeError):
            pass
        else:
            raise AssertionError(f"{attempt} on one rank did not raise")
    try:
        ZeroRedundancyOptimizer([p.copy() for p in params], fusedopt.AdamW, max_grad_norm=1.0 if RANK else None)
    except ValueError as exc:
        assert "disagree" in str(exc)
    else:
        raise AssertionError("other clipping on one rank did not raise")
    zero.max_grad_norm = 1.0 if RANK == 0 else None
    try:
        zero.step(gradients(SHAPES, np.float32, 1)[RANK])
    except ValueError as exc:
        assert "disagree" in str(exc)
    else:
        raise AssertionError("other clipping on one rank did not raise at the step")
    big = [np.ones(9000, np.float32)]
    eight = ZeroRedundancyOptimizer([a.copy() for a in big], fusedopt.AdamW, state_dtype="8bit")
    sizes = np.diff(eight.bounds)
    assert all(size == 0 or size >= 4096 for size in sizes), eight.bounds
    ref = fusedopt.AdamW([a.copy() for a in big], state_dtype="8bit")
    for step in range(3):
        grads = [[np.random.default_rng(10 * step + r).standard_normal(9000).astype(np.float32)]
                 for r in range(N)]
        eight.step(grads[RANK])
        ref.step(summed(grads), grad_scale=N)
    whole = eight.consolidate_state_dict()
    if RANK == 0:
        expected = ref.state_dict()["state"][0]
        for key, value in expected.items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(whole["state"][0][key], value), key


def bad_input_raises_everywhere(folder=None):
    """A rank with bad gradients, or other hyperparameters, makes every rank raise before
    any collective that could wait forever; the next good step works."""
    for make in (lambda params: DistributedOptimizer(fusedopt.Adam([p.copy() for p in params], lr=1e-2)),
                 lambda params: ZeroRedundancyOptimizer([p.copy() for p in params], fusedopt.Adam, lr=1e-2)):
        params = arrays(SHAPES, np.float32, 0)
        opt = make(params)
        grads = gradients(SHAPES, np.float32, 0)[RANK]
        bad = list(grads)
        if RANK == N - 1:
            bad[1] = np.zeros(6, np.float32)
        try:
            opt.step(bad)
        except ValueError as exc:
            assert RANK == N - 1 and "shape" in str(exc), exc
        except RuntimeError as exc:
            assert RANK != N - 1 and f"rank {N - 1}" in str(exc), exc
        else:
            raise AssertionError("a bad gradient on one rank did not raise on every rank")
        groups = opt.param_groups
        groups[0]["lr"] = 0.5 if RANK == 0 else 1e-2
        try:
            opt.step(grads)
        except ValueError as exc:
            assert "disagree" in str(exc), exc
        else:
            raise AssertionError("different hyperparameters did not raise")
        groups[0]["lr"] = 1e-2
        before = [p.copy() for group in opt.param_groups for p in group["params"]]
        for scale in (math.inf, math.nan, 0.0, -1.0, "2"):
            try:
                opt.step(grads, grad_scale=scale)
            except (ValueError, TypeError) as exc:
                assert "grad_scale" in str(exc), exc
            else:
                raise AssertionError(f"grad_scale={scale!r} did not raise")
        after = [p for group in opt.param_groups for p in group["params"]]
        assert all(np.array_equal(a, b) for a, b in zip(before, after)), "a refused grad_scale stepped"
        opt.step(grads)
    # ZeRO: bad options refuse construction everywhere, naming the option
    for option, value in (("grad_scale", math.inf), ("grad_scale", 0.0), ("max_grad_norm", math.nan),
                          ("max_grad_norm", -1.0)):
        try:
            ZeroRedundancyOptimizer(arrays(SHAPES, np.float32, 0), fusedopt.Adam, **{option: value})
        except ValueError as exc:
            assert option in str(exc), exc
        else:
            raise AssertionError(f"{option}={value!r} did not raise")
    # ZeRO: parameters of another shape on one rank refuse construction everywhere
    shapes = list(SHAPES)
    if RANK == 0:
        shapes[0] = (7, 300)
    try:
        ZeroRedundancyOptimizer(arrays(shapes, np.float32, 0), fusedopt.Adam)
    except ValueError as exc:
        assert "disagree" in str(exc), exc
    else:
        raise AssertionError("different shapes did not raise")


def plateau_and_partition(folder=None):
    """fusedopt's ReduceLROnPlateau drives a ZeRO optimizer like any other; the
    partition is even and respects its rules."""
    zero = ZeroRedundancyOptimizer(arrays(SHAPES, np.float64, 0), fusedopt.SGD, lr=0.1, momentum=0.9)
    plateau = schedules.ReduceLROnPlateau(zero, factor=0.5, patience=0)
    for step in range(4):
        zero.step(gradients(SHAPES, np.float64, step)[RANK])
        plateau.step(1.0)
    assert zero.current_lrs()[0] == 0.1 * 0.5 ** 3, zero.current_lrs()
    bounds = partition([10_000, 5, 10_000], 3)
    # inside an array, a boundary is a multiple of 256 elements from the array's start
    assert bounds == [0, 26 * 256, 10_005 + 13 * 256, 20_005], bounds
    assert partition([100, 100, 100], 3, splittable=False) == [0, 100, 200, 300]
    assert partition([5000, 5000], 2, min_piece=4096) == [0, 5000, 10000]


SCENARIOS = {f.__name__: f for f in (data_parallel, zero_matches_single_process, zero_state_is_sharded,
                                     options_set_later,
                                     zero_clipping_and_nonfinite, zero_checkpoints, save_then_die,
                                     load_after_death, bad_input_raises_everywhere, plateau_and_partition,
                                     one_rank_goes_wrong)}

if __name__ == "__main__":
    name = sys.argv[1]
    fusedopt.set_num_threads(1)   # N processes on a small machine
    try:
        SCENARIOS[name](*sys.argv[2:])
    except BaseException:
        # a failed rank ends them all (the others may be waiting in a collective)
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        COMM.Abort(1)
    COMM.Barrier()
    print(f"OK {name} rank {RANK}", flush=True)
