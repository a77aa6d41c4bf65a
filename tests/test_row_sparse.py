"""Row-sparse gradients (fusedopt.RowSparseGrad): SparseAdam, and the row-sparse
steps of Adagrad and SGD.

References:
- the NumPy twins of fusedopt.slow.sparse (merge, then the update of the merged
  rows), in the arrays' dtype and the kernel's order of operations.  Tolerance:
  none; the kernels run the same IEEE operations in the same order (no FMA), so
  the parameters and the state must be bitwise equal, float32 and float64;
- torch.optim.SparseAdam, Adagrad and SGD 2.13 on torch.sparse_coo_tensor
  gradients (skipped without torch).  float64: 1e-12 relative (the same
  operations; torch agrees to the bit in practice).  float32: the project's
  trajectory rule, 2 ulps of the scale per step (torch's vectorised float32 ops
  and its order of summing duplicates differ from ours by an ulp here and there).
"""
import math
import threading

import ml_dtypes
import numpy as np
import pytest
from conftest import trajectory_tolerance
from optimizer_cases import seed_of
from test_low_precision import assert_bitwise, bits, run_everywhere, use

import fusedopt
from fusedopt import RowSparseGrad
from fusedopt.slow import sparse

DTYPES = [np.float32, np.float64]
# (rows, row shape): tables of 1 to 1e6 rows, rows of 1, 3, 64 and 300 elements
TABLES = [(1, (1,)), (1, ()), (7, (3,)), (1000, (64,)), (50, (300,)), (1_000_000, ()), (40, (2, 3)), (5, (0,))]
N_STEPS = 12


def table_id(table):
    rows, row = table
    return f"{rows}x{'x'.join(map(str, row)) or 'scalar'}"


def zipf_indices(rng, n_rows, n, heavy=False):
    """n row numbers with duplicates: Zipf-distributed, or (heavy) from a handful of rows."""
    if heavy:
        return rng.integers(0, min(n_rows, 3), size=n)
    return (rng.zipf(1.3, size=n) - 1) % n_rows


def batches(rng, n_rows, row, dtype, n_steps=N_STEPS):
    """A sequence of row-sparse gradients: Zipf lookups, heavy duplication, an empty
    batch, every row, int32 and int64 row numbers, shuffled."""
    out = []
    for s in range(n_steps):
        kind = s % 6
        if kind == 0:
            idx = zipf_indices(rng, n_rows, rng.integers(1, 64))
        elif kind == 1:
            idx = zipf_indices(rng, n_rows, 40, heavy=True)
        elif kind == 2:
            idx = np.zeros(0, np.int64)
        elif kind == 3:
            idx = rng.permutation(min(n_rows, 5000))
        elif kind == 4:
            idx = rng.integers(0, n_rows, size=rng.integers(1, 30))
        else:
            idx = np.concatenate([rng.permutation(min(n_rows, 50)), zipf_indices(rng, n_rows, 20)])
        idx = idx.astype(np.int32 if s % 2 else np.int64)
        values = rng.standard_normal((len(idx),) + row).astype(dtype)
        out.append((idx, values))
    return out


def table(rng, n_rows, row, dtype):
    return rng.standard_normal((n_rows,) + row).astype(dtype)


# -- the algorithms, as (fusedopt class and kwargs, twin step, torch class and kwargs) --

class Algorithm:
    def __init__(self, name, cls, kwargs, slots, twin, torch_name, torch_kwargs):
        self.name, self.cls, self.kwargs, self.slots = name, cls, kwargs, slots
        self.twin, self.torch_name, self.torch_kwargs = twin, torch_name, torch_kwargs

    def __repr__(self):
        return self.name


def _adam_twin(p, rows, merged, state, step, kw):
    sparse.sparse_adam_(p, rows, merged, state["exp_avg"], state["exp_avg_sq"], step=step, lr=kw["lr"],
                        betas=kw["betas"], eps=kw["eps"], maximize=kw["maximize"])


def _adagrad_twin(p, rows, merged, state, step, kw):
    sparse.sparse_adagrad_(p, rows, merged, state["sum"], step=step, lr=kw["lr"], lr_decay=kw["lr_decay"],
                           eps=kw["eps"], maximize=kw["maximize"])


def _sgd_twin(p, rows, merged, state, step, kw):
    sparse.sparse_sgd_(p, rows, merged, lr=kw["lr"], maximize=kw["maximize"])


ALGORITHMS = [
    Algorithm("sparse_adam", fusedopt.SparseAdam,
              dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, maximize=False), ("exp_avg", "exp_avg_sq"),
              _adam_twin, "SparseAdam", lambda kw: dict(lr=kw["lr"], betas=kw["betas"], eps=kw["eps"],
                                                         maximize=kw["maximize"])),
    Algorithm("sparse_adam_maximize", fusedopt.SparseAdam,
              dict(lr=0.003, betas=(0.9, 0.999), eps=1e-8, maximize=True), ("exp_avg", "exp_avg_sq"),
              _adam_twin, "SparseAdam", lambda kw: dict(lr=kw["lr"], betas=kw["betas"], eps=kw["eps"],
                                                         maximize=kw["maximize"])),
    Algorithm("adagrad", fusedopt.Adagrad,
              dict(lr=0.05, lr_decay=0.01, eps=1e-10, maximize=False, initial_accumulator_value=0.1), ("sum",),
              _adagrad_twin, "Adagrad", lambda kw: dict(kw)),
    Algorithm("adagrad_maximize", fusedopt.Adagrad,
              dict(lr=0.02, lr_decay=0.0, eps=1e-6, maximize=True, initial_accumulator_value=0.0), ("sum",),
              _adagrad_twin, "Adagrad", lambda kw: dict(kw)),
    Algorithm("sgd", fusedopt.SGD, dict(lr=0.1, maximize=False), (), _sgd_twin, "SGD", lambda kw: dict(kw)),
    Algorithm("sgd_maximize", fusedopt.SGD, dict(lr=0.03, maximize=True), (), _sgd_twin, "SGD",
              lambda kw: dict(kw)),
]


def twin_state(algorithm, p):
    init = algorithm.kwargs.get("initial_accumulator_value", 0.0)
    return {name: np.full_like(p, init if name == "sum" else 0.0) for name in algorithm.slots}


def run_both(algorithm, n_rows, row, dtype, seed, **options):
    """The optimizer and the twin over the same batches: (param, state) of each."""
    rng = np.random.default_rng(seed)
    p = table(rng, n_rows, row, dtype)
    twin_p, state = p.copy(), twin_state(algorithm, p)
    opt = algorithm.cls([p], **algorithm.kwargs, **options)
    for step, (idx, values) in enumerate(batches(rng, n_rows, row, dtype), 1):
        assert opt.step([RowSparseGrad(idx, values)])
        rows, merged = sparse.merge_rows(idx, values)
        algorithm.twin(twin_p, rows, merged, state, step, algorithm.kwargs)
    return (p, opt), (twin_p, state)


@pytest.mark.parametrize("table_shape", TABLES, ids=table_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=repr)
def test_matches_the_twin_bitwise(algorithm, dtype, table_shape):
    n_rows, row = table_shape
    (p, opt), (twin_p, state) = run_both(algorithm, n_rows, row, dtype, seed_of(algorithm.name, dtype, n_rows))
    assert_bitwise(p, twin_p, "param")
    kernel_state = opt.state_dict()["state"][0] if algorithm.slots else {}
    for name in algorithm.slots:
        assert_bitwise(kernel_state[name], state[name], name)


def torch_sparse_grad(torch, rows, merged, shape):
    return torch.sparse_coo_tensor(torch.from_numpy(np.asarray(rows))[None], torch.from_numpy(merged), shape)


@pytest.mark.parametrize("table_shape", [(1, (1,)), (7, (3,)), (1000, (64,)), (50, (300,))], ids=table_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("duplicates", ["merged", "raw"])
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=repr)
def test_matches_torch(algorithm, dtype, duplicates, table_shape):
    """torch gets the same gradients, as COO tensors: already merged (the same sums),
    or raw with their duplicates (torch sums them in arrival order: within the
    float32 rule, and in float64 to 1e-12)."""
    torch = pytest.importorskip("torch")
    n_rows, row = table_shape
    rng = np.random.default_rng(seed_of("torch", algorithm.name, dtype, n_rows))
    p = table(rng, n_rows, row, dtype)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    opt = algorithm.cls([p], **algorithm.kwargs)
    topt = getattr(torch.optim, algorithm.torch_name)([tp], **algorithm.torch_kwargs(algorithm.kwargs))
    scale = max(1.0, float(np.abs(p).max()))
    for step, (idx, values) in enumerate(batches(rng, n_rows, row, dtype), 1):
        opt.step([RowSparseGrad(idx, values)])
        if duplicates == "merged":
            rows, merged = sparse.merge_rows(idx, values)
            tp.grad = torch_sparse_grad(torch, rows, merged, tp.shape)
        else:
            tp.grad = torch_sparse_grad(torch, idx.astype(np.int64), values, tp.shape)
        topt.step()
        expected = tp.detach().numpy()
        err = np.max(np.abs(p.astype(np.float64) - expected), initial=0.0)
        assert err <= trajectory_tolerance(dtype, step, scale), f"step {step}: {err:.3g}"


@pytest.mark.parametrize("algorithm", ALGORITHMS[::2], ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_any_order_of_the_duplicates(algorithm, dtype):
    """The rows' order within a call does not change a bit: duplicates are added in
    the order of their bits, not their arrival."""
    rng = np.random.default_rng(seed_of("order", algorithm.name, dtype))
    base = table(rng, 30, (5,), dtype)
    idx = np.concatenate([np.full(25, 3), np.full(7, 11), rng.integers(0, 30, 40)])
    values = (rng.standard_normal((len(idx), 5)) * 10.0 ** rng.integers(-4, 4, (len(idx), 1))).astype(dtype)
    results = []
    for trial in range(4):
        order = rng.permutation(len(idx)) if trial else np.arange(len(idx))
        p = base.copy()
        opt = algorithm.cls([p], **algorithm.kwargs)
        opt.step([RowSparseGrad(idx[order], values[order])])
        results.append(p)
    for p in results[1:]:
        assert_bitwise(p, results[0], "param")


@pytest.mark.parametrize("threads, simd", run_everywhere(threads=(1, 2, 3)))
@pytest.mark.parametrize("algorithm", ALGORITHMS[::2], ids=repr)
def test_same_bits_for_any_thread_count_and_simd_path(algorithm, threads, simd):
    """Against the twin (run once per process): the same bits on every path."""
    use(threads, simd)
    for dtype in DTYPES:
        (p, opt), (twin_p, state) = run_both(algorithm, 3000, (64,), dtype, seed_of("threads", algorithm.name))
        assert_bitwise(p, twin_p, f"param ({threads} threads, {simd})")
        for name in algorithm.slots:
            assert_bitwise(opt.state_dict()["state"][0][name], state[name], name)


# -- semantics --------------------------------------------------------------------------

def test_sparse_adam_counts_steps_without_rows():
    """The step count advances at every step (torch's), so the bias correction of a
    later step is that of the global step."""
    rng = np.random.default_rng(1)
    p = table(rng, 10, (4,), np.float64)
    twin_p, state = p.copy(), {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
    opt = fusedopt.SparseAdam([p], lr=0.1)
    before = p.copy()
    for _ in range(3):
        opt.step([RowSparseGrad(np.zeros(0, np.int64), np.zeros((0, 4)))])
    np.testing.assert_array_equal(p, before)
    assert opt.state_dict()["state"][0]["step"] == 3
    idx, values = np.array([2, 5]), rng.standard_normal((2, 4))
    opt.step([RowSparseGrad(idx, values)])
    rows, merged = sparse.merge_rows(idx, values)
    sparse.sparse_adam_(twin_p, rows, merged, state["exp_avg"], state["exp_avg_sq"], step=4, lr=0.1)
    assert_bitwise(p, twin_p, "param")


def test_untouched_rows_keep_their_values_and_state():
    rng = np.random.default_rng(2)
    p = table(rng, 100, (8,), np.float32)
    opt = fusedopt.SparseAdam([p])
    opt.step([RowSparseGrad(np.arange(100), rng.standard_normal((100, 8)).astype(np.float32))])
    before = p.copy()
    state = {k: v.copy() for k, v in opt.state_dict()["state"][0].items() if isinstance(v, np.ndarray)}
    opt.step([RowSparseGrad(np.array([7, 7, 50]), rng.standard_normal((3, 8)).astype(np.float32))])
    untouched = np.setdiff1d(np.arange(100), [7, 50])
    np.testing.assert_array_equal(p[untouched], before[untouched])
    for name, old in state.items():
        np.testing.assert_array_equal(opt.state_dict()["state"][0][name][untouched], old[untouched])
    assert (p[[7, 50]] != before[[7, 50]]).all()


@pytest.mark.parametrize("cls, kwargs", [(fusedopt.Adagrad, dict(lr=0.1)), (fusedopt.SGD, dict(lr=0.1))])
def test_dense_and_row_sparse_gradients_alternate(cls, kwargs):
    """A parameter may get a dense gradient at one step and a row-sparse one at the
    next (Adagrad's sum carries over), in one optimizer with a dense parameter."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    table_p, bias = table(rng, 20, (3,), np.float64), rng.standard_normal(5)
    tt, tb = torch.nn.Parameter(torch.from_numpy(table_p.copy())), torch.nn.Parameter(torch.from_numpy(bias.copy()))
    opt, topt = cls([table_p, bias], **kwargs), getattr(torch.optim, cls.__name__)([tt, tb], **kwargs)
    for step in range(6):
        gb = rng.standard_normal(5)
        if step % 2:
            idx, values = rng.integers(0, 20, 6), rng.standard_normal((6, 3))
            opt.step([RowSparseGrad(idx, values), gb])
            rows, merged = sparse.merge_rows(idx, values)
            tt.grad = torch_sparse_grad(torch, rows, merged, tt.shape)
        else:
            g = rng.standard_normal((20, 3))
            opt.step([g, gb])
            tt.grad = torch.from_numpy(g)
        tb.grad = torch.from_numpy(gb)
        topt.step()
        np.testing.assert_allclose(table_p, tt.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bias, tb.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_param_groups_and_schedules():
    """Two groups with their own rates; a schedule gives the rate of each step."""
    rng = np.random.default_rng(4)
    a, b = table(rng, 50, (4,), np.float64), table(rng, 30, (2,), np.float64)
    twin = {"a": (a.copy(), {"exp_avg": np.zeros_like(a), "exp_avg_sq": np.zeros_like(a)}),
            "b": (b.copy(), {"exp_avg": np.zeros_like(b), "exp_avg_sq": np.zeros_like(b)})}
    schedule = fusedopt.schedules.CosineAnnealing(0.1, T_max=10)
    opt = fusedopt.SparseAdam([{"params": [a], "lr": schedule}, {"params": [b], "lr": 0.02}])
    for step in range(1, 8):
        ga = (rng.integers(0, 50, 9), rng.standard_normal((9, 4)))
        gb = (rng.integers(0, 30, 4), rng.standard_normal((4, 2)))
        opt.step([RowSparseGrad(*ga), RowSparseGrad(*gb)])
        for key, (idx, values), lr in (("a", ga, schedule(step - 1)), ("b", gb, 0.02)):
            p, state = twin[key]
            rows, merged = sparse.merge_rows(idx, values)
            sparse.sparse_adam_(p, rows, merged, state["exp_avg"], state["exp_avg_sq"], step=step, lr=lr)
    assert_bitwise(a, twin["a"][0], "a")
    assert_bitwise(b, twin["b"][0], "b")


def test_state_dict_round_trip_resumes_bitwise():
    rng = np.random.default_rng(5)
    p = table(rng, 200, (16,), np.float32)
    grads = [(rng.integers(0, 200, 50), rng.standard_normal((50, 16)).astype(np.float32)) for _ in range(6)]
    opt = fusedopt.SparseAdam([p], lr=0.01)
    for g in grads[:3]:
        opt.step([RowSparseGrad(*g)])
    sd = opt.state_dict()
    q = p.copy()
    resumed = fusedopt.SparseAdam([q], lr=0.01)
    resumed.load_state_dict(sd)
    for g in grads[3:]:
        opt.step([RowSparseGrad(*g)])
        resumed.step([RowSparseGrad(*g)])
    assert_bitwise(q, p, "param")
    assert resumed.state_dict()["state"][0]["step"] == 6


def test_skip_nonfinite_and_the_norm_of_the_merged_rows():
    rng = np.random.default_rng(6)
    p = table(rng, 40, (3,), np.float64)
    opt = fusedopt.SparseAdam([p], lr=0.1, skip_nonfinite=True)
    before = p.copy()
    values = rng.standard_normal((5, 3))
    values[2, 1] = np.nan
    assert opt.step([RowSparseGrad(np.array([1, 2, 3, 4, 5]), values)]) is False
    np.testing.assert_array_equal(p, before)
    assert opt.skipped_steps == 1
    # the norm is that of the merged rows: rows 7 and 7 sum before squaring
    idx, values = np.array([7, 7, 9]), rng.standard_normal((3, 3))
    assert opt.step([RowSparseGrad(idx, values)])
    _, merged = sparse.merge_rows(idx, values)
    np.testing.assert_allclose(opt.last_grad_norm, np.linalg.norm(merged), rtol=1e-14)


@pytest.mark.parametrize("cls, kwargs, twin", [
    (fusedopt.SparseAdam, dict(lr=0.1), lambda p, r, m, s: sparse.sparse_adam_(
        p, r, m, s["exp_avg"], s["exp_avg_sq"], step=1, lr=0.1)),
    (fusedopt.SGD, dict(lr=0.1), lambda p, r, m, s: sparse.sparse_sgd_(p, r, m, lr=0.1)),
])
def test_max_grad_norm_clips_the_merged_rows(cls, kwargs, twin):
    rng = np.random.default_rng(7)
    p, dense = table(rng, 40, (3,), np.float64), rng.standard_normal(4)
    twin_p = p.copy()
    opt = cls([p, dense.copy()], max_grad_norm=0.5, **kwargs)
    idx, values = np.array([3, 3, 8, 1]), 10 * rng.standard_normal((4, 3))
    gd = rng.standard_normal(4)
    second = RowSparseGrad(np.arange(4), gd) if cls is fusedopt.SparseAdam else gd   # it takes no dense one
    opt.step([RowSparseGrad(idx, values), second])
    rows, merged = sparse.merge_rows(idx, values)
    norm = np.sqrt(np.sum(merged ** 2) + np.sum(gd ** 2))
    np.testing.assert_allclose(opt.last_grad_norm, norm, rtol=1e-14)
    # the kernels scale by the same multiplier; the twin gets the scaled rows
    twin(twin_p, rows, merged * min(1.0, 0.5 / (norm + 1e-6)),
         {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)})
    np.testing.assert_allclose(p, twin_p, rtol=1e-13, atol=1e-15)


def test_grad_scale_divides_the_rows():
    rng = np.random.default_rng(8)
    p = table(rng, 10, (3,), np.float64)
    q = p.copy()
    idx, values = np.array([1, 4]), rng.standard_normal((2, 3))
    fusedopt.SGD([p], lr=0.1).step([RowSparseGrad(idx, values * 8.0)], grad_scale=8.0)
    fusedopt.SGD([q], lr=0.1).step([RowSparseGrad(idx, values)])
    assert_bitwise(p, q, "param")


# -- storage -----------------------------------------------------------------------------

BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("threads, simd", run_everywhere())
@pytest.mark.parametrize("storage", [dict(state_dtype="bfloat16"), dict(state_dtype="bfloat16", stochastic_rounding=True),
                                     dict(state_dtype="8bit", min_8bit_size=1)], ids=str)
def test_low_precision_state_is_deterministic(storage, threads, simd):
    """bfloat16 and 8-bit state on rows: the same bits on every path, untouched rows
    and their state untouched, and within a few percent of float32 state."""
    use(threads, simd)
    rng = np.random.default_rng(9)
    p0 = table(rng, 64, (256,), np.float32)
    grads = [(rng.integers(0, 64, 20), rng.standard_normal((20, 256)).astype(np.float32)) for _ in range(5)]
    p, reference = p0.copy(), p0.copy()
    opt, ref = fusedopt.SparseAdam([p], lr=1e-3, **storage), fusedopt.SparseAdam([reference], lr=1e-3)
    touched = np.zeros(64, bool)
    for g in grads:
        opt.step([RowSparseGrad(*g)])
        ref.step([RowSparseGrad(*g)])
        touched[g[0]] = True
    np.testing.assert_array_equal(p[~touched], p0[~touched])
    np.testing.assert_allclose(p - p0, reference - p0, atol=5e-4)   # displacement <= 5e-3: 10%
    key = ("threads", str(sorted(storage.items())))
    expected = _first_result.setdefault(key, p.copy())
    assert_bitwise(p, expected, "param")


_first_result = {}


def test_8bit_state_needs_whole_blocks_per_row():
    p = np.zeros((1000, 64), np.float32)
    opt = fusedopt.SparseAdam([p], state_dtype="8bit", min_8bit_size=1)
    with pytest.raises(ValueError, match=r"grads\[0\].*256"):
        opt.step([RowSparseGrad(np.array([1]), np.ones((1, 64), np.float32))])
    np.testing.assert_array_equal(p, 0)


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "8bit"])
@pytest.mark.parametrize("master_weights", [True, False])
def test_bfloat16_tables(master_weights, state_dtype):
    """bfloat16 tables (with or without float32 master weights, any state storage)
    step their rows: with master weights, the table is the master rounded to nearest."""
    rng = np.random.default_rng(10)
    p = table(rng, 100, (8,), np.float32).astype(BF16)
    before = p.copy()
    opt = fusedopt.SparseAdam([p], lr=0.01, master_weights=master_weights, stochastic_rounding=not master_weights,
                              state_dtype=state_dtype, min_8bit_size=1)
    if state_dtype == "8bit":   # rows of 8 elements straddle the blocks of 256
        with pytest.raises(ValueError, match="256"):
            opt.step([RowSparseGrad(np.array([5]), np.ones((1, 8), BF16))])
        return
    for _ in range(3):
        opt.step([RowSparseGrad(np.array([5, 9, 5]), rng.standard_normal((3, 8)).astype(BF16))])
    changed = np.flatnonzero((bits(p) != bits(before)).any(axis=1))
    assert set(changed) <= {5, 9} and 5 in changed
    if master_weights:
        master = opt.state_dict()["state"][0]["master"]
        assert_bitwise(p, master.astype(BF16), "param vs master")


# -- bad input ----------------------------------------------------------------------------

def bad_cases():
    ok_idx, ok_values = np.array([1, 2]), np.ones((2, 4), np.float32)
    return [
        ("negative row", lambda p, opt: RowSparseGrad(np.array([1, -1]), ok_values), ValueError, r"indices.*-1"),
        ("row past the end", lambda p, opt: RowSparseGrad(np.array([1, 10]), ok_values), ValueError, r"row 10.*\[0, 10\)"),
        ("int32 past the end", lambda p, opt: RowSparseGrad(np.array([2**31 - 1, 0], np.int32), ok_values), ValueError,
         "indices"),
        ("wrong row shape", lambda p, opt: RowSparseGrad(ok_idx, np.ones((2, 5), np.float32)), ValueError,
         r"grads\[0\]\.values must have shape \(2, 4\)"),
        ("wrong dtype", lambda p, opt: RowSparseGrad(ok_idx, np.ones((2, 4), np.float64)), TypeError,
         r"grads\[0\]\.values must have dtype"),
        ("values aliasing the table", lambda p, opt: RowSparseGrad(ok_idx, p[:2]), ValueError,
         r"grads\[0\]\.values shares memory with params\[0\]"),
        ("indices aliasing the table", lambda p, opt: RowSparseGrad(p.view(np.int32).reshape(-1)[:2], ok_values), ValueError,
         r"grads\[0\]\.indices shares memory with params\[0\]"),
        ("indices aliasing the state", lambda p, opt: RowSparseGrad(opt.state[0]["exp_avg"].view(np.int32)
                                                                    .reshape(-1)[:2], ok_values),
         ValueError, r"grads\[0\]\.indices shares memory with exp_avg\[0\]"),
    ]


@pytest.mark.parametrize("case", bad_cases(), ids=lambda c: c[0])
def test_bad_gradients_raise_before_anything_is_written(case):
    _, make, error, match = case
    p = np.arange(40, dtype=np.float32).reshape(10, 4)
    opt = fusedopt.SparseAdam([p], lr=0.1)
    opt.step([RowSparseGrad(np.array([0, 3]), np.ones((2, 4), np.float32))])
    state = opt.state_dict()["state"][0]
    before, before_state = p.copy(), {k: np.copy(v) for k, v in state.items()}
    with pytest.raises(error, match=match):
        opt.step([make(p, opt)])
    assert_bitwise(p, before, "param")
    after = opt.state_dict()["state"][0]
    for name, value in before_state.items():
        np.testing.assert_array_equal(after[name], value)


@pytest.mark.parametrize("make, error, match", [
    (lambda: RowSparseGrad([1, 2], np.ones((2, 3))), TypeError, "indices must be a numpy.ndarray"),
    (lambda: RowSparseGrad(np.array([1.0, 2.0]), np.ones((2, 3))), TypeError, "indices must have dtype int32 or int64"),
    (lambda: RowSparseGrad(np.array([1, 2], np.int16), np.ones((2, 3))), TypeError, "int32 or int64"),
    (lambda: RowSparseGrad(np.array([[1, 2]]), np.ones((2, 3))), ValueError, "indices must be 1-D"),
    (lambda: RowSparseGrad(np.arange(4)[::2], np.ones((2, 3))), ValueError, "indices must be C-contiguous"),
    (lambda: RowSparseGrad(np.array([1, 2]), np.ones((3, 3))), ValueError, "one row per index"),
    (lambda: RowSparseGrad(np.array([1, 2]), np.float64(1.0)), TypeError, "values must be a numpy.ndarray"),
    (lambda: RowSparseGrad(np.array([1, 2]), np.ones((2, 3), np.int64)), TypeError, "values must have dtype"),
    (lambda: RowSparseGrad(np.array([1, 2]), np.ones((3, 2)).T), ValueError, "values must be C-contiguous"),
])
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_arrays_reshaped_in_place_after_construction_are_checked_at_the_step():
    p = np.zeros((10, 4))
    values = np.ones((2, 4))
    g = RowSparseGrad(np.array([1, 2]), values)
    values.shape = (4, 2)
    with pytest.raises(ValueError, match=r"grads\[0\]\.values must have shape"):
        fusedopt.SparseAdam([p]).step([g])
    np.testing.assert_array_equal(p, 0)


def test_what_refuses_row_sparse_gradients():
    p = np.zeros((10, 4))
    g = RowSparseGrad(np.array([1]), np.ones((1, 4)))
    with pytest.raises(TypeError, match=r"grads\[0\] must be a fusedopt.RowSparseGrad.*sparse_adam"):
        fusedopt.SparseAdam([p]).step([np.ones((10, 4))])
    with pytest.raises(TypeError, match=r"grads\[0\] is a RowSparseGrad, but adam has no row-sparse step"):
        fusedopt.Adam([p]).step([g])
    with pytest.raises(ValueError, match=r"weight_decay must be 0 for params\[0\].*RowSparseGrad"):
        fusedopt.Adagrad([p], weight_decay=0.1).step([g])
    with pytest.raises(ValueError, match=r"momentum must be 0"):
        fusedopt.SGD([p], momentum=0.9).step([g])
    with pytest.raises(ValueError, match=r"weight_decay must be 0"):
        fusedopt.SGD([p], weight_decay=0.1).step([g])
    with pytest.raises(ValueError, match=r"0-d"):
        fusedopt.SGD([np.zeros(())]).step([RowSparseGrad(np.array([0]), np.ones(1))])
    np.testing.assert_array_equal(p, 0)


def test_the_groups_other_array_is_not_stepped_when_a_row_check_fails():
    """A refused row-sparse gradient (momentum) leaves every array of the step alone."""
    a, b = np.ones((10, 4)), np.ones(3)
    opt = fusedopt.SGD([{"params": [b]}, {"params": [a], "momentum": 0.9}], lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[1\]: momentum"):
        opt.step([np.ones(3), RowSparseGrad(np.array([1]), np.ones((1, 4)))])
    np.testing.assert_array_equal(a, 1)
    np.testing.assert_array_equal(b, 1)


@pytest.mark.parametrize("cls, kwargs", [(fusedopt.SparseAdam, {}), (fusedopt.SparseAdam, dict(lr=0.0)),
                                         (fusedopt.SparseAdam, dict(eps=0.0))])
def test_sparse_adam_hyperparameters_as_torch(cls, kwargs):
    """lr and eps must be > 0 (torch's checks); betas in [0, 1)."""
    p = np.zeros((3, 2))
    if not kwargs:
        for bad in (dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1)), dict(lr=-1.0), dict(eps=float("nan"))):
            with pytest.raises(ValueError):
                cls([p], **bad).step([RowSparseGrad(np.array([0]), np.ones((1, 2)))])
        return
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        cls([p], **kwargs).step([RowSparseGrad(np.array([0]), np.ones((1, 2)))])


def test_row_sparse_grad_api():
    idx, values = np.array([2, 0, 2], np.int32), np.arange(6, dtype=np.float32).reshape(3, 2)
    g = RowSparseGrad(idx, values)
    assert g.indices is idx and g.values is values and g.dtype == np.float32 and g.nnz == 3
    np.testing.assert_array_equal(g.to_dense((4, 2)), [[2, 3], [0, 0], [4 + 0, 6], [0, 0]])
    assert "RowSparseGrad" in repr(g)
    with pytest.raises(AttributeError):
        g.indices = idx


def test_concurrent_steps_from_threads_are_refused_or_serialised():
    """Threads stepping one SparseAdam either step or get RuntimeError; every
    applied step is counted once."""
    p = np.zeros((2000, 64), np.float32)
    opt = fusedopt.SparseAdam([p], lr=1e-3)
    rng = np.random.default_rng(11)
    grads = [RowSparseGrad(rng.integers(0, 2000, 3000), rng.standard_normal((3000, 64)).astype(np.float32))
             for _ in range(4)]
    applied, errors = [], []

    def worker(g):
        for _ in range(5):
            try:
                applied.append(opt.step([g]))
            except RuntimeError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(g,)) for g in grads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(applied) + len(errors) == 20
    assert opt.state_dict()["state"][0]["step"] == len(applied)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("algorithm", ALGORITHMS[::2], ids=repr)
def test_the_norm_path_gives_the_same_bits(algorithm):
    """With skip_nonfinite (or clipping that does not bite) the step merges every row
    into its buffer to take the norm; without, rows given once are read in place.
    Both give the same bits."""
    a = run_both(algorithm, 500, (8,), np.float32, seed_of("norm path", algorithm.name))[0][0]
    b = run_both(algorithm, 500, (8,), np.float32, seed_of("norm path", algorithm.name), skip_nonfinite=True,
                 max_grad_norm=1e30)[0][0]
    assert_bitwise(a, b, "param")


@pytest.mark.parametrize("grad_dtype", [BF16, np.dtype(np.float16)], ids=str)
@pytest.mark.parametrize("cls, kwargs", [(fusedopt.Adagrad, dict(lr=0.01)), (fusedopt.SGD, dict(lr=0.01))],
                         ids=["adagrad", "sgd"])
def test_16_bit_gradient_rows_for_float32_tables(cls, kwargs, grad_dtype):
    """bfloat16/float16 rows for a float32 table, as dense gradients may be: merged in
    float32 and rounded once to their dtype (the twin's merge), widened in registers."""
    rng = np.random.default_rng(12)
    p = table(rng, 50, (6,), np.float32)
    twin_p, total = p.copy(), np.zeros_like(p)
    opt = cls([p], **kwargs)
    for step in range(1, 4):
        idx = np.concatenate([rng.integers(0, 50, 10), [4, 4, 4]])
        values = rng.standard_normal((len(idx), 6)).astype(grad_dtype)
        opt.step([RowSparseGrad(idx, values)])
        rows, merged = sparse.merge_rows(idx, values)
        assert merged.dtype == grad_dtype
        if cls is fusedopt.Adagrad:
            sparse.sparse_adagrad_(twin_p, rows, merged.astype(np.float32), total, step=step, **kwargs)
        else:
            sparse.sparse_sgd_(twin_p, rows, merged.astype(np.float32), **kwargs)
    assert_bitwise(p, twin_p, "param")


def test_empty_tables_and_empty_rows():
    """A table of no rows takes an empty gradient; rows of no elements step nothing."""
    p, q = np.zeros((0, 4), np.float32), np.zeros((6, 0), np.float32)
    opt = fusedopt.SparseAdam([p, q])
    assert opt.step([RowSparseGrad(np.zeros(0, np.int32), np.zeros((0, 4), np.float32)),
                     RowSparseGrad(np.array([5, 5, 0]), np.zeros((3, 0), np.float32))])
    with pytest.raises(ValueError, match=r"row 0, outside \[0, 0\)"):
        opt.step([RowSparseGrad(np.array([0]), np.zeros((1, 4), np.float32)),
                  RowSparseGrad(np.zeros(0, np.int64), np.zeros((0, 0), np.float32))])


def test_checkpoint_round_trip(tmp_path):
    """fusedopt.save/load of a SparseAdam resume its trajectory bitwise."""
    rng = np.random.default_rng(13)
    p = table(rng, 300, (8,), np.float32)
    grads = [(rng.integers(0, 300, 40), rng.standard_normal((40, 8)).astype(np.float32)) for _ in range(4)]
    opt = fusedopt.SparseAdam([p], lr=0.01)
    for g in grads[:2]:
        opt.step([RowSparseGrad(*g)])
    path = tmp_path / "table.npz"
    fusedopt.save(opt, path)
    q = p.copy()
    resumed = fusedopt.SparseAdam([q], lr=0.01)
    fusedopt.load(resumed, path)
    for g in grads[2:]:
        opt.step([RowSparseGrad(*g)])
        resumed.step([RowSparseGrad(*g)])
    assert_bitwise(q, p, "param")


@pytest.mark.parametrize("dtype", DTYPES)
def test_many_duplicates_sum_to_the_precision_of_their_dtype(dtype):
    """1e5 copies of one row: the merged row is within an ulp of the exact sum
    (math.fsum), whatever the signs: float32 rows are added in float64, float64 rows
    with a compensated sum (the order of the adds, fixed by the bits, puts the
    positive values first)."""
    rng = np.random.default_rng(14)
    values = rng.standard_normal((100_000, 3)).astype(dtype)
    p = np.zeros((2, 3), dtype)
    fusedopt.SGD([p], lr=1.0).step([RowSparseGrad(np.ones(100_000, np.int64), values)])
    exact = np.array([-math.fsum(values[:, k].astype(np.float64)) for k in range(3)])
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    assert np.all(np.abs(p[1].astype(np.float64) - exact) <= ulp), (p[1], exact)
    np.testing.assert_array_equal(p[0], 0)


@pytest.mark.parametrize("kind", ["mostly zero", "differ in the last element", "identical"])
def test_duplicates_that_share_their_first_elements(kind):
    """Duplicates alike but for a few elements are ordered by their hashes (no
    whole-row comparisons to speak of), and any order of arrival gives the same bits."""
    rng = np.random.default_rng(15)
    n, width = 2000, 300
    values = np.zeros((n, width), np.float32)
    if kind == "mostly zero":
        cols = rng.integers(width // 2, width, (n, 3))
        np.put_along_axis(values, cols, rng.standard_normal((n, 3)).astype(np.float32), axis=1)
    elif kind == "differ in the last element":
        values[:, -1] = rng.standard_normal(n)
    else:
        values[:] = 0.5
    idx = rng.integers(0, 3, n)
    results = []
    for order in (np.arange(n), rng.permutation(n), rng.permutation(n)):
        p = np.zeros((3, width), np.float32)
        fusedopt.SGD([p], lr=1.0).step([RowSparseGrad(idx[order], values[order])])
        results.append(p)
    rows, merged = sparse.merge_rows(idx, values)
    expected = np.zeros((3, width), np.float32)
    sparse.sparse_sgd_(expected, rows, merged, lr=1.0)
    assert_bitwise(results[0], expected, "param vs the twin")
    for p in results[1:]:
        assert_bitwise(p, results[0], "param")


@pytest.mark.parametrize("claimed", [(1_000_000, 4), (1, 2)], ids=["more rows", "narrower rows"])
def test_an_ndarray_subclass_that_lies_about_its_shape_is_refused(claimed):
    """The checks, and the merge buffers, read the C dimensions, which the merge
    reads, not .shape."""
    class Liar(np.ndarray):
        @property
        def shape(self):
            return claimed

    values = np.ones((1, 4), np.float32).view(Liar)
    p = np.zeros((10, 4), np.float32)
    if claimed[0] != 1:
        with pytest.raises(ValueError, match="one row per index"):
            RowSparseGrad(np.zeros(claimed[0], np.int64), values)
    g = RowSparseGrad(np.array([1]), values)
    fusedopt.SGD([p], lr=1.0).step([g])   # its real shape fits
    np.testing.assert_array_equal(p[1], -1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("column, expected", [
    ([-0.0, -0.0], -0.0),
    ([np.inf, 1.0, 2.0], np.inf),
    ([-np.inf, "max", "max"], -np.inf),      # the fixed order adds the positives first: no overflow to +inf
    ([np.inf, -np.inf, 1.0], np.nan),
    ([np.nan, np.inf, 1.0], np.nan),
    (["max", "max"], np.inf),                # float64: the plain sum overflows; float32: rounding to float32 does
    ([3.0, 3.0, "max", "-max", 3.0, 1.0], 10.0),
], ids=["-0", "inf", "-inf beside overflow", "inf-inf", "nan", "overflow", "cancellation"])
def test_special_values_merge_as_exact_arithmetic_would(dtype, column, expected):
    """Duplicates merge to what exact arithmetic gives, whatever the order: signed
    zeros kept, infinities counted (not added), NaN propagated, cancellation exact;
    and bitwise as the twin."""
    big = np.finfo(dtype).max
    values = np.array([big if x == "max" else -big if x == "-max" else x for x in column], dtype)[:, None]
    p = np.zeros((2, 1), dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        fusedopt.SGD([p], lr=1.0).step([RowSparseGrad(np.ones(len(values), np.int64), values)])
        rows, merged = sparse.merge_rows(np.ones(len(values), np.int64), values)
    expected_p = np.zeros((2, 1), dtype)
    sparse.sparse_sgd_(expected_p, rows, merged, lr=1.0)
    assert_bitwise(p, expected_p, "param vs the twin")
    got = merged[0, 0]
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == expected and np.signbit(got) == np.signbit(expected), got
