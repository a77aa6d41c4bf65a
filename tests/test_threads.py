"""Threads and SIMD variants: bitwise identical results, and thread controls that work."""
import threading

import numpy as np
import pytest

import fusedopt
from fusedopt import _core

OPTIMIZERS = [
    (fusedopt.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    (fusedopt.AdamW, {"lr": 0.01}),
    (fusedopt.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    (fusedopt.SGD, {"lr": 0.01, "momentum": 0.9, "lr_in_velocity": True, "weight_decay": 0.1}),
]
# tensor sizes whose boundaries fall inside thread chunks; one above the cutoff
SHAPES = [(1000, 37), (5,), (0,), (2**17 + 7,), (3, 3)]


def trajectory(cls, kw, dtype, n_steps=5):
    rng = np.random.default_rng(42)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    opt = cls(params, **kw)
    for _ in range(n_steps):
        opt.step([rng.standard_normal(s).astype(dtype) for s in SHAPES])
    return params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kw", OPTIMIZERS)
@pytest.mark.parametrize("cutoff", ["default", 0])
def test_bitwise_identical_for_any_thread_count(cls, kw, dtype, cutoff):
    if not fusedopt.info()["openmp"]:
        pytest.skip("built without OpenMP: one thread only, nothing to compare")
    if cutoff == 0:
        _core.set_parallel_min_elements(0)  # force threads even for tiny spans
    results = {}
    for n in (1, 2, 3, 8):
        fusedopt.set_num_threads(n)
        assert fusedopt.get_num_threads() == n
        results[n] = trajectory(cls, kw, dtype)
    for n in (2, 3, 8):
        for a, b in zip(results[1], results[n]):
            assert a.tobytes() == b.tobytes(), f"{n} threads differ from 1"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kw", OPTIMIZERS)
def test_every_simd_variant_gives_the_same_bits(cls, kw, dtype):
    supported = _core.simd_supported()
    assert "baseline" in supported
    results = {}
    for name in supported:
        _core.set_simd_path(name)
        assert _core.simd_path() == name
        results[name] = trajectory(cls, kw, dtype)
    for name in supported:
        for a, b in zip(results["baseline"], results[name]):
            assert a.tobytes() == b.tobytes(), f"{name} differs from baseline"


def test_set_simd_path_rejects_unknown():
    with pytest.raises(ValueError, match="name"):
        _core.set_simd_path("sse9")


def test_num_threads_controls():
    fusedopt.set_num_threads(3)
    if fusedopt.info()["openmp"]:
        assert fusedopt.get_num_threads() == 3
    fusedopt.set_num_threads(None)
    with pytest.raises(ValueError, match="n"):
        fusedopt.set_num_threads(-1)


def test_threadpoolctl_limits_fusedopt():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fusedopt.info()["openmp"]:
        pytest.skip("built without OpenMP")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fusedopt.get_num_threads() == 1
    assert fusedopt.get_num_threads() >= 1


def test_two_optimizers_in_two_threads_match_sequential():
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(300_000).astype(np.float32) for _ in range(2)]
    grads = [[rng.standard_normal(300_000).astype(np.float32)] for _ in range(20)]

    def run(p):
        opt = fusedopt.Adam([p], lr=0.01)
        for g in grads:
            opt.step(g)

    sequential = [p.copy() for p in start]
    for p in sequential:
        run(p)
    concurrent = [p.copy() for p in start]
    threads = [threading.Thread(target=run, args=(p,)) for p in concurrent]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, concurrent):
        assert a.tobytes() == b.tobytes()


def test_one_optimizer_from_two_threads_is_rejected_not_corrupted():
    """Stepping one optimizer concurrently raises RuntimeError in one thread; each
    step either happens completely or not at all."""
    p = np.zeros(4_000_000, np.float32)
    g = np.ones_like(p)
    opt = fusedopt.SGD([p], lr=1.0)
    errors, done = [], []
    barrier = threading.Barrier(2)

    def worker():
        barrier.wait()
        for _ in range(20):
            try:
                opt.step([g])
                done.append(1)
            except RuntimeError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) + len(errors) == 40
    assert all("another thread" in e for e in errors)
    # every completed step subtracted exactly 1 from every element
    assert (p == -float(len(done))).all()
    assert opt.step_count == len(done)
