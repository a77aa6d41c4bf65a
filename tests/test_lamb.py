"""LAMB: against its NumPy twin (float64 copies), an inline textbook formula, and
itself across thread counts and SIMD paths (its per-tensor norms are a reduction
pass in the kernel, so these also test the driver's reduction hook)."""
import zlib

import numpy as np
import pytest

import fusedopt
from fusedopt import _core, slow
from conftest import DTYPES, trajectory_tolerance

N_STEPS = 30
# several tensors per step: sizes 0 and 1, odd sizes, one crossing reduction blocks (4096)
SHAPES = [(0,), (1,), (3, 5), (17,), (4096 * 2 + 7,), ()]


def draw_options(seed):
    rng = np.random.default_rng(seed)
    return dict(lr=float(10 ** rng.uniform(-3, -1.5)),
                betas=(float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999))),
                eps=float(10 ** rng.uniform(-8, -5)), weight_decay=float(rng.uniform(0.0, 0.1)))


def make_problem(shapes, dtype, seed, zero_first=False):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    if zero_first:
        params[0][...] = 0   # ||p|| = 0 at the first step: trust ratio 1
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(N_STEPS)]
    return params, grads


def run_fused(params, grads, opts):
    params = [p.copy() for p in params]
    opt = fusedopt.LAMB(params, **opts)
    for step_grads in grads:
        assert opt.step(step_grads)
    return params, opt


def run_twin(params, grads, opts):
    """The twin on float64 copies of the (dtype-rounded) inputs."""
    ps = [p.astype(np.float64) for p in params]
    ms, vs = [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]
    for t, step_grads in enumerate(grads, start=1):
        slow.lamb_(ps, [g.astype(np.float64) for g in step_grads], ms, vs, step=t, lr=opts["lr"],
                   beta1=opts["betas"][0], beta2=opts["betas"][1], eps=opts["eps"],
                   weight_decay=opts["weight_decay"])
    return ps


@pytest.mark.parametrize("zero_first", [False, True], ids=["random", "zero-param"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_matches_the_twin(dtype, zero_first):
    """float64: 1e-12 relative (rounding order of the norms only); float32: the
    project's per-step ulp rule, the trust ratio being computed from float64 norms
    of float32 values in both."""
    seed = zlib.crc32(repr((np.dtype(dtype).name, zero_first)).encode())
    opts = draw_options(seed)
    params, grads = make_problem(SHAPES, dtype, seed, zero_first)
    got, _ = run_fused(params, grads, opts)
    expected = run_twin(params, grads, opts)
    tol = trajectory_tolerance(dtype, N_STEPS, max(1.0, *(np.abs(p).max(initial=0) for p in params)))
    for i, (a, b) in enumerate(zip(got, expected)):
        err = np.max(np.abs(a.astype(np.float64) - b), initial=0.0)
        assert err <= tol, f"tensor {i}: max error {err:.3g} > {tol:.3g}"
        if a.size:
            assert not np.array_equal(a, params[i]), f"tensor {i} did not move"


def test_one_step_equals_the_textbook_formula():
    """An independent float64 reference written here from the paper / optax.lamb."""
    rng = np.random.default_rng(3)
    p0, m0, v0 = rng.standard_normal(50), rng.standard_normal(50) * 0.1, rng.random(50) * 0.01
    g = rng.standard_normal(50)
    lr, b1, b2, eps, wd, t = 0.01, 0.8, 0.99, 1e-6, 0.05, 4
    m = b1 * m0 + (1 - b1) * g
    v = b2 * v0 + (1 - b2) * g * g
    r = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p0
    expected = p0 - lr * r * (np.linalg.norm(p0) / np.linalg.norm(r))
    p, m_k, v_k = p0.copy(), m0.copy(), v0.copy()
    fusedopt.functional.lamb_(p, g, m_k, v_k, step=t, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    np.testing.assert_allclose(p, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(m_k, m, rtol=1e-15)
    np.testing.assert_allclose(v_k, v, rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_bitwise_identical_for_any_thread_count_and_simd_path(dtype):
    """The per-tensor norms are reduced in blocks whose order depends only on the
    sizes: 1, 2, 3 and 8 threads (the cutoff at 0, so tiny tensors are split too)
    and every SIMD path give the same bits."""
    if not fusedopt.info()["openmp"]:
        pytest.skip("built without OpenMP: one thread only")
    _core.set_parallel_min_elements(0)
    opts = draw_options(11)
    shapes = SHAPES + [(2**17 + 5,)]
    params, grads = make_problem(shapes, dtype, 11)
    results = {}
    for simd in _core.simd_supported():
        _core.set_simd_path(simd)
        for n in (1, 2, 3, 8):
            fusedopt.set_num_threads(n)
            assert fusedopt.get_num_threads() == n
            results[simd, n] = run_fused(params, grads[:5], opts)[0]
    first = results["baseline", 1]
    for key, got in results.items():
        for a, b in zip(first, got):
            assert a.tobytes() == b.tobytes(), f"{key} differs from baseline on 1 thread"


def test_state_dict_resumes_bitwise():
    opts = draw_options(5)
    params, grads = make_problem([(40,), (3, 3)], np.float32, 5)
    straight, _ = run_fused(params, grads, opts)
    resumed = [p.copy() for p in params]
    opt = fusedopt.LAMB(resumed, **opts)
    for step_grads in grads[:10]:
        opt.step(step_grads)
    state = opt.state_dict()
    assert sorted(state["state"][0]) == ["exp_avg", "exp_avg_sq", "step"] and state["state"][0]["step"] == 10
    again = fusedopt.LAMB(resumed, **opts)
    again.load_state_dict(state)
    for step_grads in grads[10:]:
        again.step(step_grads)
    for a, b in zip(straight, resumed):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lr": -1.0}, ValueError, "lr must be a finite number >= 0"),
    ({"lr": "0.1"}, TypeError, "lr must be a real number"),
    ({"betas": (1.0, 0.9)}, ValueError, r"betas\[0\] must be in \[0, 1\)"),
    ({"betas": None}, TypeError, "betas must be a pair"),
    ({"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
    ({"eps": float("nan")}, ValueError, "eps must be a finite number"),
    ({"weight_decay": float("inf")}, ValueError, "weight_decay must be a finite number >= 0"),
])
def test_bad_hyperparameters_are_rejected_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        fusedopt.LAMB([np.zeros(3)], **kwargs)


def test_gradient_safety_applies():
    """max_grad_norm scales the gradients inside the kernel; a non-finite step is skipped."""
    rng = np.random.default_rng(2)
    p = rng.standard_normal(100)
    g = rng.standard_normal(100) * 10
    clipped, reference = p.copy(), p.copy()
    fusedopt.LAMB([clipped], lr=0.01, max_grad_norm=1.0).step([g])
    m, v = np.zeros(100), np.zeros(100)
    coefficient = 1.0 / (np.linalg.norm(g) + 1e-6)
    slow.lamb_(reference, g * coefficient, m, v, step=1, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6)
    np.testing.assert_allclose(clipped, reference, rtol=1e-12)
    opt = fusedopt.LAMB([p], lr=0.01, skip_nonfinite=True)
    before = p.copy()
    bad = g.copy()
    bad[7] = np.nan
    assert opt.step([bad]) is False and p.tobytes() == before.tobytes()
