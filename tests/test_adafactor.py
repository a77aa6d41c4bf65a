"""Adafactor: against its NumPy twin (float64 copies), torch.optim.Adafactor
(foreach=False) where torch is installed, and itself across thread counts and SIMD
paths.  Its factored state has shapes of its own (rows and columns of the last
two dimensions) and its step runs the driver's factored phases, so these also
test the slot shape rules and the factored units (whole small matrices per unit,
split large ones, empty ones)."""
import pickle

import numpy as np
import pytest

import fusedopt
from fusedopt import slow
from conftest import DTYPES, trajectory_tolerance
from optimizer_cases import seed_of
from test_low_precision import run_everywhere, use

N_STEPS = 50
DTYPE_IDS = ["float32", "float64"]
#: scalars, vectors (unfactored), small matrices (many per unit), a batch of
#: matrices, a matrix split into row units (40 x 1100 > 32768 elements), empty ones
SHAPES = [(), (0,), (1,), (17,), (3 * 4096 + 5,), (3, 5), (1, 7), (6, 1), (70, 3, 3), (2, 3, 4, 5),
          (40, 1100), (4, 0), (0, 3)]
TORCH_SHAPES = [(), (1,), (17,), (3, 5), (6, 1), (7, 3, 3), (40, 1100)]


def draw_options(seed):
    rng = np.random.default_rng(seed)
    eps1 = None if rng.random() < 0.5 else float(10 ** rng.uniform(-30, -3))
    return dict(lr=float(10 ** rng.uniform(-3, -1)), beta2_decay=float(rng.uniform(-1.0, -0.3)),
                eps=(eps1, float(10 ** rng.uniform(-4, -2))), d=float(rng.uniform(1.0, 3.0)),
                weight_decay=float(rng.uniform(0.0, 0.2)) if rng.random() < 0.5 else 0.0,
                maximize=bool(rng.random() < 0.3))


def make_problem(shapes, dtype, seed, n_steps=N_STEPS):
    rng = np.random.default_rng(seed)
    params = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]
    grads = [[np.asarray(rng.standard_normal(s) * 10 ** rng.uniform(-2, 1), dtype=dtype) for s in shapes]
             for _ in range(n_steps)]
    return params, grads


def twin_state(p):
    if p.ndim >= 2:
        return (np.zeros(p.shape[:-1] + (1,), p.dtype), np.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype),
                None)
    return None, None, np.zeros_like(p)


def run_twin(params, grads, groups):
    """The twin on float64 copies; groups: [(first, stop, options)]."""
    ps = [p.astype(np.float64) for p in params]
    states = [twin_state(p) for p in ps]
    for step, step_grads in enumerate(grads, start=1):
        for first, stop, opts in groups:
            lr = opts["lr"](step - 1) if callable(opts["lr"]) else opts["lr"]
            for i in range(first, stop):
                slow.adafactor_(ps[i], step_grads[i].astype(np.float64), *states[i], step=step,
                                **dict(opts, lr=lr, eps=_twin_eps(opts["eps"], params[i].dtype)))
    return ps


def _twin_eps(eps, dtype):
    """eps1=None is the parameter's machine epsilon: the twin runs in float64, so say it."""
    return (np.finfo(dtype).eps if eps[0] is None else eps[0], eps[1])


def run_fused(params, grads, groups, **options):
    params = [p.copy() for p in params]
    opt = fusedopt.Adafactor([dict(opts, params=params[first:stop]) for first, stop, opts in groups], **options)
    for step_grads in grads:
        assert opt.step(step_grads)
    return params, opt


def assert_close(got, expected, dtype, n_steps=N_STEPS):
    for i, (a, b) in enumerate(zip(got, expected)):
        scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
        np.testing.assert_allclose(a.astype(np.float64), b, rtol=0, atol=trajectory_tolerance(dtype, n_steps, scale),
                                   err_msg=f"params[{i}] {a.shape}")


def two_groups(seed, n):
    half = n // 2
    return [(0, half, draw_options(seed)), (half, n, draw_options(seed + 1))]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("trial", range(3))
def test_matches_the_twin(dtype, trial):
    """Two groups of random hyperparameters over every kind of shape, 50 steps.
    float64: 1e-12 relative (only the order of the float64 sums differs);
    float32: the project's per-step ulp rule."""
    seed = seed_of("twin", np.dtype(dtype).name, trial)
    params, grads = make_problem(SHAPES, dtype, seed)
    groups = two_groups(seed, len(SHAPES))
    got, _ = run_fused(params, grads, groups)
    assert_close(got, run_twin(params, grads, groups), dtype)
    for a, p in zip(got, params):
        if a.size:
            assert not np.array_equal(a, p)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_torch(dtype):
    """torch.optim.Adafactor, single-tensor path, default eps (None: the dtype's)
    and random others, every step.  torch computes its norms in the parameter's
    dtype, fusedopt in float64: float32 within the ulp rule, float64 1e-12."""
    torch = pytest.importorskip("torch")
    for trial in range(3):
        seed = seed_of("torch", np.dtype(dtype).name, trial)
        opts = draw_options(seed)
        if trial == 0:
            opts["eps"] = (None, 1e-3)
        params, grads = make_problem(TORCH_SHAPES, dtype, seed, n_steps=30)
        ours = [p.copy() for p in params]
        opt = fusedopt.Adafactor(ours, **opts)
        tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]
        reference = torch.optim.Adafactor(tensors, foreach=False, **opts)
        for step, step_grads in enumerate(grads, start=1):
            opt.step(step_grads)
            for tensor, g in zip(tensors, step_grads):
                tensor.grad = torch.tensor(g)
            reference.step()
            assert_close(ours, [t.detach().numpy().astype(np.float64) for t in tensors], dtype, step)
        for i, p in enumerate(params):
            state = reference.state[tensors[i]]
            for name in ("row_var", "col_var", "variance"):
                if name in state:
                    assert opt.state[i][name].shape == tuple(state[name].shape), name


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_same_bits_for_any_thread_count_and_simd_path(dtype):
    """The factored sums and norms are in an order fixed by the shapes."""
    seed = seed_of("threads", np.dtype(dtype).name)
    params, grads = make_problem(SHAPES, dtype, seed, n_steps=8)
    groups = two_groups(seed, len(SHAPES))
    results = []
    for threads, simd in run_everywhere(threads=(1, 2, 3)):
        use(threads, simd)
        results.append((simd, threads, run_fused(params, grads, groups)[0]))
    first = results[0][2]
    for simd, threads, got in results[1:]:
        for a, b in zip(got, first):
            assert a.tobytes() == b.tobytes(), (simd, threads, a.shape)


def test_state_is_factored():
    """A matrix's second moment is a row and a column statistic, not a full tensor;
    vectors keep a full variance.  The bytes show it."""
    shapes = [(64, 32), (5, 64, 32), (32,), ()]
    params = [np.ones(s, np.float32) for s in shapes]
    opt = fusedopt.Adafactor(params)
    opt.step([np.full(s, 0.5, np.float32) for s in shapes])
    state = opt.state
    assert state[0]["row_var"].shape == (64, 1) and state[0]["col_var"].shape == (1, 32)
    assert state[1]["row_var"].shape == (5, 64, 1) and state[1]["col_var"].shape == (5, 1, 32)
    assert "variance" not in state[0] and "row_var" not in state[2]
    assert state[2]["variance"].shape == (32,) and state[3]["variance"].shape == ()
    assert state[0]["step"] == 1
    assert opt.state_nbytes() == 4 * (64 + 32 + 5 * (64 + 32) + 32 + 1)
    # g*g = 0.25 everywhere: the first step's statistics are exactly 0.25
    np.testing.assert_array_equal(state[0]["row_var"], 0.25)
    np.testing.assert_array_equal(state[1]["col_var"], 0.25)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_state_dict_resumes_bitwise(dtype):
    seed = seed_of("resume", np.dtype(dtype).name)
    params, grads = make_problem(SHAPES, dtype, seed, n_steps=10)
    groups = two_groups(seed, len(SHAPES))
    straight, _ = run_fused(params, grads, groups)
    first, opt = run_fused(params, grads[:5], groups)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    resumed = [p.copy() for p in first]
    opt2 = fusedopt.Adafactor([dict(opts, params=resumed[a:b]) for a, b, opts in groups])
    opt2.load_state_dict(saved)
    for step_grads in grads[5:]:
        opt2.step(step_grads)
    for a, b in zip(resumed, straight):
        assert a.tobytes() == b.tobytes()


def test_state_dict_with_a_wrong_factor_shape_is_refused():
    p = np.ones((4, 6), np.float32)
    opt = fusedopt.Adafactor([p])
    opt.step([np.ones((4, 6), np.float32)])
    sd = opt.state_dict()
    sd["state"][0]["row_var"] = np.zeros((4, 6), np.float32)
    other = fusedopt.Adafactor([np.ones((4, 6), np.float32)])
    with pytest.raises(ValueError, match="row_var"):
        other.load_state_dict(sd)


def test_reshaped_in_place_is_refused_and_nothing_changes():
    """A parameter reshaped in place so that its last two dimensions change no
    longer fits its row and column state: ValueError naming it, nothing written."""
    p = np.arange(24, dtype=np.float64).reshape(4, 6) / 10
    q = np.ones(5)
    opt = fusedopt.Adafactor([p, q])
    opt.step([np.ones((4, 6)), np.ones(5)])
    p.shape = (6, 4)
    before, q_before = p.copy(), q.copy()
    with pytest.raises(ValueError, match=r"params\[0\].*reshape"):
        opt.step([np.ones((6, 4)), np.ones(5)])
    assert np.array_equal(p, before) and np.array_equal(q, q_before)
    p.shape = (4, 6)   # back: the step goes on with the state it had
    assert opt.step([np.ones((4, 6)), np.ones(5)])
    assert opt.state[0]["step"] == 2


def test_reshape_keeping_the_last_two_dimensions_keeps_the_state():
    p = np.ones((2, 3, 4))
    opt = fusedopt.Adafactor([p])
    opt.step([np.ones((2, 3, 4))])
    p.shape = (1, 2, 3, 4)
    assert opt.step([np.ones((1, 2, 3, 4))])
    assert opt.state[0]["row_var"].shape == (2, 3, 1)


@pytest.mark.parametrize("bad, match", [
    (dict(beta2_decay=0.5), "beta2_decay"),
    (dict(beta2_decay=float("nan")), "beta2_decay"),
    (dict(d=0.5), "d "),
    (dict(d=float("inf")), "d "),
    (dict(eps=(-1.0, 1e-3)), r"eps\[0\]"),
    (dict(eps=(None, -1e-3)), r"eps\[1\]"),
    (dict(eps=(None, float("nan"))), r"eps\[1\]"),
    (dict(eps=1e-3), "eps"),
    (dict(eps=(None,)), "eps"),
    (dict(lr=-1.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(maximize=1), "maximize"),
])
def test_bad_hyperparameters_raise_naming_them(bad, match):
    p = np.ones((3, 4), np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        fusedopt.Adafactor([p], **bad)
    opt = fusedopt.Adafactor([p])
    opt.param_groups[0].update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.step([np.ones((3, 4), np.float32)])
    assert np.array_equal(p, np.ones((3, 4), np.float32))
    assert opt.step_count == 0


def test_torch_checks_match():
    """The values torch refuses, fusedopt refuses too."""
    torch = pytest.importorskip("torch")
    for bad in (dict(beta2_decay=0.5), dict(d=0.5), dict(eps=(-1.0, 1e-3)), dict(eps=(None, -1.0)),
                dict(lr=-1.0), dict(weight_decay=-1.0)):
        with pytest.raises(ValueError):
            torch.optim.Adafactor([torch.zeros(2, 2, requires_grad=True)], **bad)
        with pytest.raises(ValueError):
            fusedopt.Adafactor([np.zeros((2, 2))], **bad)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gradient_safety_and_schedules(dtype):
    """grad_scale divides the gradient inside the kernels; a schedule gives the
    rate of each step; skip_nonfinite changes nothing on a NaN gradient."""
    seed = seed_of("safety", np.dtype(dtype).name)
    params, grads = make_problem([(5, 7), (9,)], dtype, seed, n_steps=12)
    opts = draw_options(seed)
    opts["lr"] = fusedopt.schedules.cosine(opts["lr"], 12) if hasattr(fusedopt.schedules, "cosine") else \
        (lambda k, lr=opts["lr"]: lr / (1 + k))
    scaled = [[g * 8 for g in step] for step in grads]
    got, opt = run_fused(params, scaled, [(0, 2, opts)], grad_scale=8.0, skip_nonfinite=True)
    assert_close(got, run_twin(params, grads, [(0, 2, opts)]), dtype, 12)
    before = [p.copy() for p in got]
    bad = [g.copy() for g in grads[0]]
    bad[1][3] = np.nan
    assert opt.step(bad) is False
    assert all(np.array_equal(a, b) for a, b in zip(got, before))
    assert opt.state[0]["step"] == 12


def test_max_grad_norm_clips_inside_the_kernel():
    params, grads = make_problem([(6, 5), (4,)], np.float64, 3, n_steps=5)
    big = [[g * 100 for g in step] for step in grads]
    got, opt = run_fused(params, big, [(0, 2, draw_options(3))], max_grad_norm=1.0)
    expected = [p.astype(np.float64) for p in params]
    states = [twin_state(p) for p in expected]
    opts = draw_options(3)
    for step, step_grads in enumerate(big, start=1):
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in step_grads))
        multiplier = min(1.0, 1.0 / (norm + 1e-6))
        for i in range(2):
            slow.adafactor_(expected[i], step_grads[i], *states[i], step=step,
                            **dict(opts, eps=_twin_eps(opts["eps"], np.float64), grad_scale=1.0 / multiplier))
    assert_close(got, expected, np.float64, 5)
    assert opt.last_grad_norm > 1.0


def test_empty_arrays_are_left_alone_and_count_steps():
    params = [np.zeros((0, 3)), np.zeros((4, 0)), np.zeros(0), np.ones((2, 2))]
    opt = fusedopt.Adafactor(params)
    assert opt.step([np.zeros((0, 3)), np.zeros((4, 0)), np.zeros(0), np.ones((2, 2))])
    assert opt.state[1]["row_var"].shape == (4, 1)
    assert np.array_equal(opt.state[1]["row_var"], np.zeros((4, 1)))
    assert not np.array_equal(params[3], np.ones((2, 2)))


def test_nonfinite_gradients_propagate_as_torch():
    """Without skip_nonfinite a NaN gradient makes the array's update NaN (as torch)."""
    p = np.ones((3, 4))
    g = np.ones((3, 4))
    g[1, 2] = np.nan
    fusedopt.Adafactor([p]).step([g])
    assert np.isnan(p).any()


def test_reshape_keeping_the_matrix_saves_and_loads():
    """(3, 4) -> (1, 3, 4) in place keeps the factored state (as views); the state_dict
    holds it in the new shapes and loads back."""
    p = np.ones((3, 4), np.float32)
    opt = fusedopt.Adafactor([p])
    opt.step([np.ones((3, 4), np.float32)])
    p.shape = (1, 3, 4)
    assert opt.step([np.ones((1, 3, 4), np.float32)])
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    assert saved["state"][0]["row_var"].shape == (1, 3, 1)
    other = fusedopt.Adafactor([p.copy()])
    other.load_state_dict(saved)
    assert pickle.loads(pickle.dumps(opt)).state[0]["col_var"].shape == (1, 1, 4)


def test_a_vector_made_a_matrix_is_refused_naming_its_state():
    p = np.ones(12)
    opt = fusedopt.Adafactor([p])
    opt.step([np.ones(12)])
    p.shape = (3, 4)
    with pytest.raises(ValueError, match=r"params\[0\].*'variance'.*\(12,\)"):
        opt.step([np.ones((3, 4))])


def test_huge_integer_hyperparameters_are_refused_naming_them():
    with pytest.raises(ValueError, match="d must be a finite"):
        fusedopt.Adafactor([np.ones((2, 2))], d=10 ** 400)
    with pytest.raises(ValueError, match=r"eps\[0\]"):
        fusedopt.Adafactor([np.ones((2, 2))], eps=(10 ** 400, 1e-3))
