"""Gradient safety: atomic skipping of non-finite steps, fused clipping, loss scaling, fuzzing."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedopt
import reference
from conftest import trajectory_tolerance
from fusedopt import functional, slow
from test_bad_input import assert_unchanged, snapshot


def model(rng):
    """A float32 and a float64 group: the check must cover every list and group."""
    a = rng.standard_normal((30, 7)).astype(np.float32)
    b = rng.standard_normal(50_000)
    c = rng.standard_normal(3).astype(np.float32)
    return [{"params": [a, b]}, {"params": [c], "lr": 0.002}]


def grads_like(groups, rng, scale=1.0):
    return [(rng.standard_normal(p.shape) * scale).astype(p.dtype) for g in groups for p in g["params"]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize("cls, kw", [(fusedopt.Adam, {"amsgrad": True}), (fusedopt.AdamW, {}),
                                     (fusedopt.SGD, {"momentum": 0.9}),
                                     (fusedopt.SGD, {"momentum": 0.9, "lr_in_velocity": True})])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_nonfinite_step_is_skipped_atomically(cls, kw, where, bad, clip):
    rng = np.random.default_rng(0)
    groups = model(rng)
    opt = cls(groups, lr=0.01, skip_nonfinite=True, max_grad_norm=clip, **kw)
    assert opt.step(grads_like(groups, rng)) is True
    before = snapshot(opt)
    grads = grads_like(groups, rng)
    grads[where].reshape(-1)[-1] = bad  # the very last element of one tensor
    grad_bytes = [g.tobytes() for g in grads]
    assert opt.step(grads) is False
    assert opt.skipped_steps == 1
    assert_unchanged(opt, before)
    assert opt.state_dict()["state"][0]["step"] == 1   # the skipped step did not count
    assert [g.tobytes() for g in grads] == grad_bytes
    assert opt.step(grads_like(groups, rng)) is True and opt.step_count == 2


def test_without_skip_nonfinite_nan_propagates():
    p = np.zeros(4)
    opt = fusedopt.SGD([p], lr=0.1)
    assert opt.step([np.array([1.0, np.nan, 0.0, 0.0])]) is True
    assert np.isnan(p[1]) and p[0] == -0.1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipping active / inactive
def test_clipping_matches_reference(dtype, max_norm):
    rng = np.random.default_rng(1)
    shapes = [(40, 3), (1000,), ()]
    params = [np.array(rng.standard_normal(s), dtype=dtype) for s in shapes]
    start = [p.copy() for p in params]
    opt = fusedopt.Adam(params, lr=0.01, weight_decay=0.01, max_grad_norm=max_norm, grad_scale=4.0)
    refs = [p.astype(np.float64) for p in start]
    ms = [np.zeros_like(r) for r in refs]
    vs = [np.zeros_like(r) for r in refs]
    for t in range(1, 21):
        grads = [np.array(rng.standard_normal(s) * 4.0, dtype=dtype) for s in shapes]
        saved = [g.copy() for g in grads]
        opt.step(grads)
        for g, s in zip(grads, saved):
            assert g.tobytes() == s.tobytes(), "the step must not rewrite gradients"
        unscaled = [g.astype(np.float64) / 4.0 for g in grads]
        norm = np.linalg.norm(np.concatenate([u.ravel() for u in unscaled]))
        assert opt.last_grad_norm == pytest.approx(norm, rel=1e-12)
        coefficient = min(1.0, max_norm / (norm + 1e-6))
        for i in range(3):
            refs[i], ms[i], vs[i], _ = reference.adam_step(
                refs[i], unscaled[i] * coefficient, ms[i], vs[i], None, step=t, lr=0.01,
                beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    for p, r in zip(params, refs):
        err = np.max(np.abs(p - r))
        assert err <= trajectory_tolerance(dtype, 20, 4.0), err


def test_clipping_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    params = [rng.standard_normal((20, 5)), rng.standard_normal(7)]
    tensors = [torch.tensor(p.copy()) for p in params]
    opt = fusedopt.SGD(params, lr=0.1, momentum=0.9, max_grad_norm=0.3)
    topt = torch.optim.SGD(tensors, lr=0.1, momentum=0.9)
    for _ in range(20):
        grads = [rng.standard_normal(p.shape) for p in params]
        opt.step(grads)
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 0.3)
        topt.step()
        assert opt.last_grad_norm == pytest.approx(float(torch_norm), rel=1e-12)
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p, t.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_power_of_two_loss_scale_is_exact(dtype):
    rng = np.random.default_rng(3)
    p1 = rng.standard_normal(500).astype(dtype)
    p2 = p1.copy()
    a = fusedopt.Adam([p1], lr=0.01)
    b = fusedopt.Adam([p2], lr=0.01)
    for _ in range(10):
        g = rng.standard_normal(500).astype(dtype)
        a.step([g])
        b.step([g * 1024], grad_scale=1024.0)
    assert p1.tobytes() == p2.tobytes()


def test_bad_safety_arguments():
    with pytest.raises(ValueError, match="max_grad_norm"):
        fusedopt.Adam([np.zeros(2)], max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="grad_scale"):
        fusedopt.SGD([np.zeros(2)], grad_scale=0.0)
    opt = fusedopt.Adam([np.zeros(2)])
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step([np.ones(2)], grad_scale=float("nan"))
    assert opt.step_count == 0


# -- norms ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_norm_matches_numpy_and_is_thread_invariant(dtype):
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(n).astype(dtype) for n in (3, 2**20 + 5, 0, 77_777)]
    exact = np.linalg.norm(np.concatenate([a.astype(np.float64) for a in arrays]))
    results = set()
    for threads in (1, 2, 5):
        fusedopt.set_num_threads(threads)
        norm = functional.grad_norm(arrays)
        results.add(norm)
        assert norm == pytest.approx(exact, rel=1e-13)
    assert len(results) == 1, "the norm must have the same bits for any thread count"


def test_grad_norm_special_values():
    assert np.isnan(functional.grad_norm([np.ones(10), np.array([np.inf])]))
    assert np.isnan(functional.grad_norm(np.array([1.0, np.nan], np.float32)))
    assert functional.grad_norm([np.zeros(0)]) == 0.0
    huge = np.full(1000, 1e200)  # squares overflow a double; the norm does not
    assert functional.grad_norm(huge) == pytest.approx(1e200 * np.sqrt(1000), rel=1e-12)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(s) * 3 for s in [(10, 10), (5,)]]
    tensors = [torch.zeros(g.shape, dtype=torch.float64) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g.copy())
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 1.5)
    norm = functional.clip_grad_norm_(grads, 1.5)
    assert norm == pytest.approx(float(torch_norm), rel=1e-13)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14)
    assert functional.grad_norm(grads) == pytest.approx(1.5, rel=1e-6)


# -- fuzzing -------------------------------------------------------------------

def same_precision_adam(p, g, m, v, *, step, lr, beta1, beta2, eps, weight_decay):
    """fusedopt.slow's twin on copies, in the parameter's own dtype: the kernel's operation
    order (NumPy rounds each op the same way), so extreme values (overflow, subnormals) can
    be compared exactly-ish.  Returns new (p, m, v)."""
    p, m, v = p.copy(), m.copy(), v.copy()
    with np.errstate(all="ignore"):
        slow.adam_(p, g, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                   weight_decay=weight_decay)
    return p, m, v


special_floats = st.sampled_from([0.0, -0.0, 1e-45, 5e-324, 1e-30, 1e30, 3e38, 1e300, -1e300,
                                  np.nan, np.inf, -np.inf, 1.0, -2.5])
sizes = st.sampled_from([0, 1, 2, 7, 8, 15, 16, 17, 31, 33, 1000, 32767, 32768, 32769, 70_001])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=sizes, dtype=st.sampled_from([np.float32, np.float64]),
       lr=st.sampled_from([0.0, 1e-8, 1e-3, 1.0]),
       beta1=st.sampled_from([0.0, 0.5, 0.9, 0.999999]),
       beta2=st.sampled_from([0.0, 0.9, 0.999, 0.9999999]),
       eps=st.sampled_from([1e-30, 1e-8, 1.0]),
       weight_decay=st.sampled_from([0.0, 0.01]),
       specials=st.lists(st.tuples(st.integers(0, 10**6), special_floats), max_size=4),
       skip=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_fuzz_adam_step_is_correct_or_skipped(size, dtype, lr, beta1, beta2, eps, weight_decay,
                                              specials, skip, threads, seed):
    fusedopt.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size).astype(dtype)
    g = rng.standard_normal(size).astype(dtype)
    with np.errstate(over="ignore"):
        for index, value in specials:
            if size:
                g[index % size] = dtype(value)
    start = p.copy()
    opt = fusedopt.Adam([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                        skip_nonfinite=skip)
    applied = opt.step([g])
    if skip and not np.isfinite(g).all():
        assert applied is False and p.tobytes() == start.tobytes()
        assert not opt.state[0]["exp_avg"].any() and opt.step_count == 0
        return
    assert applied is True
    m0 = np.zeros_like(start)
    expected, m, v = same_precision_adam(start, g, m0, m0.copy(), step=1, lr=lr, beta1=beta1,
                                         beta2=beta2, eps=eps, weight_decay=weight_decay)
    rtol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(opt.state[0]["exp_avg"], m, rtol=rtol, atol=0, equal_nan=True)
    np.testing.assert_allclose(opt.state[0]["exp_avg_sq"], v, rtol=rtol, atol=0, equal_nan=True)
    np.testing.assert_allclose(p, expected, rtol=rtol, atol=np.finfo(dtype).tiny, equal_nan=True)


def test_grad_norm_reads_overlapping_arrays():
    g = np.full(10, 2.0)
    assert functional.grad_norm([g, g[:5]]) == pytest.approx(np.sqrt(40 + 20), rel=1e-15)
    assert functional.grad_norm([g, g[:5].view(np.float32)]) > 0  # read only: no aliasing rule
