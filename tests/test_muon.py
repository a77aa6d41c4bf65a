"""Muon: against its NumPy twin (float64 copies), and torch.optim.Muon where torch
is installed: its momentum exactly, its trajectory to bfloat16 precision (torch
runs the Newton-Schulz iteration in bfloat16, fusedopt in the parameter's dtype)."""
import pickle

import numpy as np
import pytest

import fusedopt
from fusedopt import slow
from fusedopt.optim.muon import orthogonalize
from conftest import DTYPES, trajectory_tolerance
from optimizer_cases import seed_of
from test_low_precision import run_everywhere, use

N_STEPS = 50
DTYPE_IDS = ["float32", "float64"]
#: wide, tall, square, a vector-like matrix, one element, and one with no elements
SHAPES = [(8, 20), (30, 6), (16, 16), (1, 9), (1, 1), (0, 5)]


def draw_options(seed):
    rng = np.random.default_rng(seed)
    return dict(lr=float(10 ** rng.uniform(-3, -1.5)), weight_decay=float(rng.uniform(0.0, 0.2)),
                momentum=float(rng.uniform(0.5, 0.99)), nesterov=bool(rng.random() < 0.7),
                ns_steps=int(rng.integers(1, 7)), eps=float(10 ** rng.uniform(-9, -6)),
                adjust_lr_fn=[None, "original", "match_rms_adamw"][int(rng.integers(0, 3))])


def make_problem(shapes, dtype, seed, n_steps=N_STEPS):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal(s) * 0.1).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(n_steps)]
    return params, grads


def run_twin(params, grads, groups):
    ps = [p.astype(np.float64) for p in params]
    bufs = [np.zeros_like(p) for p in ps]
    for step_grads in grads:
        for first, stop, opts in groups:
            for i in range(first, stop):
                if ps[i].size:
                    slow.muon_(ps[i], step_grads[i].astype(np.float64), bufs[i], **opts)
    return ps, bufs


def run_fused(params, grads, groups, **options):
    params = [p.copy() for p in params]
    opt = fusedopt.Muon([dict(opts, params=params[a:b]) for a, b, opts in groups], **options)
    for step_grads in grads:
        assert opt.step(step_grads)
    return params, opt


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("trial", range(3))
def test_matches_the_twin(dtype, trial):
    """Two groups of random options, 20 steps.  float64: 1e-12 relative (the same
    operations in the same order); float32: the per-step ulp rule (the iteration's
    float32 rounding is far below it at these rates)."""
    seed = seed_of("twin", np.dtype(dtype).name, trial)
    params, grads = make_problem(SHAPES, dtype, seed)
    groups = [(0, 3, draw_options(seed)), (3, len(SHAPES), draw_options(seed + 1))]
    got, opt = run_fused(params, grads, groups)
    expected, bufs = run_twin(params, grads, groups)
    for i, (a, b) in enumerate(zip(got, expected)):
        scale = max(1.0, float(np.max(np.abs(b), initial=0)))
        np.testing.assert_allclose(a, b, rtol=0, atol=trajectory_tolerance(dtype, N_STEPS, scale),
                                   err_msg=f"params[{i}] {a.shape}")
        np.testing.assert_allclose(opt.state[i]["momentum_buffer"], bufs[i], rtol=0,
                                   atol=trajectory_tolerance(dtype, N_STEPS, max(1.0, float(np.max(np.abs(bufs[i]), initial=0)))))
        if a.size:
            assert not np.array_equal(a, params[i])


def test_orthogonalize_matches_the_formula_and_orthogonalizes():
    """The production iteration (in place, preallocated) against the twin's plain
    formula, both in float64: the same bits; and, for well-conditioned (rectangular
    random) matrices, its result has singular values near 1 (the quintic's band,
    roughly [0.7, 1.2]; a random square matrix's smallest ones take more steps)."""
    rng = np.random.default_rng(0)
    for shape in [(12, 40), (40, 12), (25, 25)]:
        m = rng.standard_normal(shape)
        before = m.copy()
        ours = orthogonalize(m)
        assert np.array_equal(m, before)
        assert np.array_equal(ours, slow.muon.newton_schulz(m))
        singular = np.linalg.svd(ours, compute_uv=False)
        if shape[0] != shape[1]:
            assert singular.min() > 0.6 and singular.max() < 1.3, singular


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_torch(dtype):
    """torch.optim.Muon (single-tensor path) from the same start, 10 steps: the
    momentum buffers agree to the ulp rule (the same lerps on the same gradients);
    the parameters' displacement agrees to bfloat16 precision: within 4% of its
    largest element (measured: under 1.5%), since torch orthogonalises in bfloat16."""
    torch = pytest.importorskip("torch")
    for trial in range(2):
        seed = seed_of("torch", np.dtype(dtype).name, trial)
        opts = draw_options(seed)
        params, grads = make_problem(SHAPES[:4], dtype, seed, n_steps=10)
        ours = [p.copy() for p in params]
        opt = fusedopt.Muon(ours, **opts)
        tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]
        reference = torch.optim.Muon(tensors, **opts)
        for step_grads in grads:
            opt.step(step_grads)
            for tensor, g in zip(tensors, step_grads):
                tensor.grad = torch.tensor(g)
            reference.step()
        for i, (p0, a, tensor) in enumerate(zip(params, ours, tensors)):
            b = tensor.detach().numpy()
            moved = np.abs(b - p0).max()
            assert np.abs((a - p0) - (b - p0)).max() <= 0.04 * moved, (i, opts)
            buf = reference.state[tensor]["momentum_buffer"].numpy()
            scale = max(1.0, float(np.abs(buf).max()))
            np.testing.assert_allclose(opt.state[i]["momentum_buffer"], buf, rtol=0,
                                       atol=trajectory_tolerance(dtype, 10, scale))


@pytest.mark.parametrize("shape", [(5,), (), (2, 3, 4)])
def test_only_matrices(shape):
    """As torch: a parameter that is not 2-D is refused, naming it; so is one added later."""
    with pytest.raises(ValueError, match=r"params\[1\].*2-D"):
        fusedopt.Muon([np.ones((2, 2)), np.ones(shape)])
    opt = fusedopt.Muon([np.ones((2, 2))])
    with pytest.raises(ValueError, match=r"params\[1\].*2-D"):
        opt.add_param_group({"params": [np.ones(shape)]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("bad, match", [
    (dict(ns_steps=100), "ns_steps"), (dict(ns_steps=-1), "ns_steps"), (dict(ns_steps=2.5), "ns_steps"),
    (dict(ns_coefficients=(1.0, 2.0)), "ns_coefficients"),
    (dict(ns_coefficients=(1.0, float("nan"), 2.0)), "ns_coefficients"),
    (dict(adjust_lr_fn="fast"), "adjust_lr_fn"), (dict(eps=-1.0), "eps"), (dict(eps=float("inf")), "eps"),
    (dict(lr=-1.0), "lr"), (dict(momentum=-0.5), "momentum"), (dict(weight_decay=float("nan")), "weight_decay"),
    (dict(nesterov="yes"), "nesterov"),
])
def test_bad_hyperparameters_raise_naming_them(bad, match):
    p = np.ones((3, 4))
    with pytest.raises((ValueError, TypeError), match=match):
        fusedopt.Muon([p], **bad)
    opt = fusedopt.Muon([p])
    opt.param_groups[0].update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.step([np.ones((3, 4))])
    assert np.array_equal(p, np.ones((3, 4))) and opt.step_count == 0
    assert "momentum_buffer" not in opt.state.get(0, {}) or not opt.state[0]["momentum_buffer"].any()


def test_state_dict_resumes_bitwise():
    params, grads = make_problem(SHAPES, np.float32, 7, n_steps=8)
    groups = [(0, len(SHAPES), draw_options(7))]
    straight, _ = run_fused(params, grads, groups)
    half, opt = run_fused(params, grads[:4], groups)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    resumed = [p.copy() for p in half]
    other = fusedopt.Muon(resumed, **groups[0][2])
    other.load_state_dict(saved)
    for step_grads in grads[4:]:
        other.step(step_grads)
    for a, b in zip(resumed, straight):
        assert a.tobytes() == b.tobytes()


def test_skip_nonfinite_changes_nothing():
    p = np.ones((4, 3), np.float32)
    opt = fusedopt.Muon([p], skip_nonfinite=True)
    g = np.ones((4, 3), np.float32)
    g[0, 0] = np.inf
    assert opt.step([g]) is False
    assert np.array_equal(p, np.ones((4, 3), np.float32)) and opt.skipped_steps == 1
    assert opt.step([np.ones((4, 3), np.float32)])
    assert not np.array_equal(p, np.ones((4, 3), np.float32))


def test_schedule_gives_each_steps_rate():
    params, grads = make_problem([(6, 4)], np.float64, 11, n_steps=5)
    opts = draw_options(11)
    got, _ = run_fused(params, grads, [(0, 1, dict(opts, lr=lambda k: 1e-2 / (1 + k)))])
    expected = params[0].astype(np.float64)
    buf = np.zeros_like(expected)
    for k, step_grads in enumerate(grads):
        slow.muon_(expected, step_grads[0], buf, **dict(opts, lr=1e-2 / (1 + k)))
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 0), (0, 5), (0, 0)])
def test_empty_matrices_are_left_alone(shape):
    q = np.ones((3, 3), np.float32)
    p = np.ones(shape, np.float32)
    opt = fusedopt.Muon([q, p])
    assert opt.step([np.ones((3, 3), np.float32), np.ones(shape, np.float32)])
    assert not np.array_equal(q, np.ones((3, 3), np.float32)) and opt.step_count == 1


def test_reshaped_in_place_is_checked_before_anything_changes():
    """To a non-matrix: ValueError naming it, with the momentum and the counters as
    they were; to another matrix of the same size: the step goes on element-wise
    (as every optimizer's state does) and the state_dict has the new shape."""
    p = np.random.default_rng(0).random((4, 6)).astype(np.float32)
    opt = fusedopt.Muon([p])
    opt.step([np.ones((4, 6), np.float32)])
    momentum, before = opt.state[0]["momentum_buffer"].copy(), p.copy()
    p.shape = (24,)
    with pytest.raises(ValueError, match=r"params\[0\].*2-D"):
        opt.step([np.ones(24, np.float32)])
    p.shape = (4, 6)
    assert np.array_equal(p, before) and np.array_equal(opt.state[0]["momentum_buffer"], momentum)
    assert opt.step_count == 1 and opt.state[0]["step"] == 1
    p.shape = (6, 4)
    assert opt.step([np.ones((6, 4), np.float32)])
    assert opt.state_dict()["state"][0]["momentum_buffer"].shape == (6, 4)


def test_a_schedule_runs_once_per_step_and_cannot_step():
    calls = []
    p = np.ones((3, 4))

    def rate(k):
        calls.append(k)
        return 1e-2

    opt = fusedopt.Muon([p], lr=rate)
    opt.step([np.ones((3, 4))])
    assert calls == [0]

    def reentrant(k):
        opt.step([np.ones((3, 4))])
        return 1e-2

    opt.param_groups[0]["lr"] = reentrant
    before = p.copy()
    with pytest.raises(RuntimeError, match="already stepping"):
        opt.step([np.ones((3, 4))])
    assert np.array_equal(p, before) and opt.step_count == 1


def test_concurrent_steps_raise_instead_of_interleaving():
    """Two threads stepping one Muon: each call either steps whole or raises
    RuntimeError; the counts agree."""
    import threading

    p = np.ones((64, 64), np.float32)
    opt = fusedopt.Muon([p])
    grads = [np.full((64, 64), 1e-3, np.float32)]
    outcomes = []

    def worker():
        for _ in range(20):
            try:
                outcomes.append(opt.step(grads))
            except RuntimeError:
                outcomes.append("busy")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 60
    assert opt.step_count == outcomes.count(True) == opt.state[0]["step"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_same_bits_for_any_thread_count_and_simd_path(dtype):
    """The fused momentum pass gives the same bits for any thread count and SIMD
    path (the iteration's matmuls are NumPy's BLAS, left at its own threads)."""
    seed = seed_of("threads", np.dtype(dtype).name)
    params, grads = make_problem([(300, 200), (7, 9), (1, 1)], dtype, seed, n_steps=5)
    groups = [(0, 3, draw_options(seed))]
    results = []
    for threads, simd in run_everywhere(threads=(1, 2, 3)):
        use(threads, simd)
        results.append(run_fused(params, grads, groups)[0])
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            assert a.tobytes() == b.tobytes()
