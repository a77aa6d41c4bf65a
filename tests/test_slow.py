"""fusedopt.slow, the pure-NumPy twins, against the kernels: the same bits in float32.

The twins compute in the arrays' own dtype in the kernel's order of operations,
so on float32 arrays they must reproduce fusedopt.functional bit for bit, on
every SIMD path (the kernels are built without fused multiply-add).  Their
float64 results are the references of test_optimizers and test_safety; the
textbook formulas they are checked against are in test_demo.
"""
import numpy as np
import pytest

from fusedopt import _core, functional, slow

N = 1037  # not a multiple of any vector width: the scalar tails run too
N_STEPS = 6

ADAM_CONFIGS = [
    {},
    {"weight_decay": 0.01},
    {"weight_decay": 0.01, "decoupled": True},
    {"amsgrad": True, "weight_decay": 0.02, "decoupled": True},
    {"maximize": True, "grad_scale": 4.0},
    {"grad_scale": 3.0, "weight_decay": 0.05},
]
SGD_CONFIGS = [
    {},
    {"weight_decay": 0.01, "maximize": True},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
    {"momentum": 0.8, "lr_in_velocity": True, "dampening": 0.2},
    {"momentum": 0.9, "lr_in_velocity": True, "nesterov": True, "grad_scale": 3.0},
]


def _ids(configs):
    return ["-".join(f"{k}={v}" for k, v in c.items()) or "plain" for c in configs]


@pytest.fixture(params=_core.simd_supported())
def simd_path(request):
    _core.set_simd_path(request.param)  # conftest restores the path afterwards
    return request.param


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=_ids(ADAM_CONFIGS))
def test_adam_twin_gives_the_kernels_bits_in_float32(config, simd_path):
    config = dict(config)
    amsgrad = config.pop("amsgrad", False)
    rng = np.random.default_rng(len(repr(config)))
    param = rng.standard_normal(N).astype(np.float32)
    kernel = [param.copy()] + [np.zeros(N, np.float32) for _ in range(3 if amsgrad else 2)]
    twin = [a.copy() for a in kernel]
    for step in range(1, N_STEPS + 1):
        grad = rng.standard_normal(N).astype(np.float32)
        lr = 1e-2 / step  # a changing rate, as under a schedule
        for fn, (p, m, v, *vmax) in ((functional.adam_, kernel), (slow.adam_, twin)):
            fn(p, grad, m, v, step=step, lr=lr, beta1=0.9, beta2=0.999, eps=1e-8,
               amsgrad_max=vmax[0] if vmax else None, **config)
    assert not np.array_equal(kernel[0], param)
    for name, a, b in zip(["param", "exp_avg", "exp_avg_sq", "amsgrad_max"], kernel, twin):
        assert a.dtype == b.dtype == np.float32
        assert a.tobytes() == b.tobytes(), \
            f"{name} differs on {simd_path}: max |diff| {np.max(np.abs(a - b)):.3g}"


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=_ids(SGD_CONFIGS))
def test_sgd_twin_gives_the_kernels_bits_in_float32(config, simd_path):
    rng = np.random.default_rng(len(repr(config)))
    param = rng.standard_normal(N).astype(np.float32)
    kernel = [param.copy(), np.zeros(N, np.float32)]
    twin = [a.copy() for a in kernel]
    for step in range(N_STEPS):
        grad = rng.standard_normal(N).astype(np.float32)
        for fn, (p, b) in ((functional.sgd_, kernel), (slow.sgd_, twin)):
            fn(p, grad, b if config.get("momentum") else None, lr=0.05, first_step=step == 0,
               **config)
    assert not np.array_equal(kernel[0], param)
    for name, a, b in zip(["param", "momentum_buffer"], kernel, twin):
        assert a.tobytes() == b.tobytes(), \
            f"{name} differs on {simd_path}: max |diff| {np.max(np.abs(a - b)):.3g}"


def test_twins_take_lists_and_leave_gradients_alone():
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), ()]]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    saved = [g.copy() for g in grads]
    ms, vs = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    kernel = [p.copy() for p in params]
    kms, kvs = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    slow.adam_(params, grads, ms, vs, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
               maximize=True, grad_scale=2.0)
    functional.adam_(kernel, grads, kms, kvs, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
                     maximize=True, grad_scale=2.0)
    for g, s in zip(grads, saved):
        assert g.tobytes() == s.tobytes()
    for a, b in zip(params, kernel):
        assert a.tobytes() == b.tobytes()
