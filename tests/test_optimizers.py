"""Each optimizer and option against the float64 NumPy reference and torch.optim."""
import zlib

import numpy as np
import pytest

import fusedopt
import reference
from conftest import DTYPES, trajectory_tolerance

SIZES = [0, 1, 3, 17, 1000]
BIG = 2**20 + 3  # above the threading cutoff
N_STEPS = 50

# name -> (class name, fixed options); random rates are drawn per case
CONFIGS = {
    "adam": ("Adam", {}),
    "adam_l2": ("Adam", {"weight_decay": "random"}),
    "adam_amsgrad": ("Adam", {"amsgrad": True}),
    "adam_maximize": ("Adam", {"maximize": True, "weight_decay": "random"}),
    "adamw": ("AdamW", {"weight_decay": "random"}),
    "adamw_amsgrad": ("AdamW", {"weight_decay": "random", "amsgrad": True}),
    "sgd": ("SGD", {}),
    "sgd_l2": ("SGD", {"weight_decay": "random"}),
    "sgd_momentum": ("SGD", {"momentum": "random"}),
    "sgd_dampening": ("SGD", {"momentum": "random", "dampening": "random"}),
    "sgd_nesterov": ("SGD", {"momentum": "random", "nesterov": True, "weight_decay": "random"}),
    "sgd_maximize": ("SGD", {"momentum": "random", "maximize": True}),
    "sgd_velocity": ("SGD", {"momentum": "random", "lr_in_velocity": True, "dampening": "random"}),
    "sgd_velocity_nesterov": ("SGD", {"momentum": "random", "lr_in_velocity": True,
                                      "nesterov": True, "weight_decay": "random"}),
}
BIG_CONFIGS = ["adam", "adamw_amsgrad", "sgd_nesterov", "sgd_velocity"]


def draw_options(name, seed):
    """The fixed options of CONFIGS[name] with every "random" replaced by a drawn value."""
    cls_name, fixed = CONFIGS[name]
    rng = np.random.default_rng(seed)
    opts = {}
    if cls_name == "SGD":
        opts["lr"] = float(10 ** rng.uniform(-3, -1))
    else:
        opts["lr"] = float(10 ** rng.uniform(-4, -1.5))
        opts["betas"] = (float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999)))
        opts["eps"] = float(10 ** rng.uniform(-10, -6))
    draws = {"weight_decay": lambda: float(rng.uniform(0.0, 0.1)),
             "momentum": lambda: float(rng.uniform(0.5, 0.99)),
             "dampening": lambda: float(rng.uniform(0.0, 0.5))}
    for key, value in fixed.items():
        opts[key] = draws[key]() if value == "random" else value
    return cls_name, opts


def case_seed(*parts):
    return zlib.crc32(repr(parts).encode())


def make_problem(shapes, dtype, n_steps, seed):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    grads = [[rng.standard_normal(shape).astype(dtype) for shape in shapes] for _ in range(n_steps)]
    return params, grads


def run_reference(cls_name, opts, params, grads_per_step):
    """float64 trajectory of the reference on the same (dtype-rounded) inputs."""
    ps = [p.astype(np.float64) for p in params]
    if cls_name in ("Adam", "AdamW"):
        ms = [np.zeros_like(p) for p in ps]
        vs = [np.zeros_like(p) for p in ps]
        vmaxs = [np.zeros_like(p) if opts.get("amsgrad") else None for p in ps]
        for t, grads in enumerate(grads_per_step, start=1):
            for i, g in enumerate(grads):
                ps[i], ms[i], vs[i], vmaxs[i] = reference.adam_step(
                    ps[i], g.astype(np.float64), ms[i], vs[i], vmaxs[i], step=t, lr=opts["lr"],
                    beta1=opts["betas"][0], beta2=opts["betas"][1], eps=opts["eps"],
                    weight_decay=opts.get("weight_decay", 0.0 if cls_name == "Adam" else 1e-2),
                    decoupled=cls_name == "AdamW", maximize=opts.get("maximize", False))
        return ps
    bufs = [np.zeros_like(p) for p in ps]
    for t, grads in enumerate(grads_per_step):
        for i, g in enumerate(grads):
            ps[i], bufs[i] = reference.sgd_step(
                ps[i], g.astype(np.float64), bufs[i], lr=opts["lr"],
                momentum=opts.get("momentum", 0.0), dampening=opts.get("dampening", 0.0),
                nesterov=opts.get("nesterov", False), weight_decay=opts.get("weight_decay", 0.0),
                maximize=opts.get("maximize", False),
                lr_in_velocity=opts.get("lr_in_velocity", False), first_step=t == 0)
    return ps


def run_fused(cls_name, opts, params, grads_per_step):
    params = [p.copy() for p in params]
    opt = getattr(fusedopt, cls_name)(params, **opts)
    for grads in grads_per_step:
        opt.step(grads)
    return params


def assert_close(got, expected, dtype, n_steps, scale):
    tol = trajectory_tolerance(dtype, n_steps, scale)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == dtype
        err = np.max(np.abs(a.astype(np.float64) - b), initial=0.0)
        assert err <= tol, f"tensor {i}: max error {err:.3g} > tolerance {tol:.3g}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference(name, dtype, size):
    seed = case_seed(name, np.dtype(dtype).name, size)
    cls_name, opts = draw_options(name, seed)
    shapes = [(size,), (2, 3), ()]  # several tensors in one call, a 0-d one included
    params, grads = make_problem(shapes, dtype, N_STEPS, seed)
    got = run_fused(cls_name, opts, params, grads)
    expected = run_reference(cls_name, opts, params, grads)
    assert_close(got, expected, dtype, N_STEPS, scale=max(1.0, *(np.abs(p).max(initial=0) for p in params)))
    if size:  # the step did something
        assert not np.array_equal(got[0], params[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", BIG_CONFIGS)
def test_matches_reference_above_threading_cutoff(name, dtype):
    assert BIG > fusedopt._core.parallel_min_elements()
    seed = case_seed(name, np.dtype(dtype).name, BIG)
    cls_name, opts = draw_options(name, seed)
    params, grads = make_problem([(BIG,)], dtype, N_STEPS, seed)
    got = run_fused(cls_name, opts, params, grads)
    expected = run_reference(cls_name, opts, params, grads)
    assert_close(got, expected, dtype, N_STEPS, scale=max(1.0, np.abs(params[0]).max()))


def test_mixed_dtypes_and_groups():
    """float32 and float64 parameters, in two groups with their own rates, one optimizer."""
    rng = np.random.default_rng(7)
    p32 = [rng.standard_normal(s).astype(np.float32) for s in [(5,), (4, 4)]]
    p64 = [rng.standard_normal(s) for s in [(7,), (3,)]]
    groups = [{"params": [p32[0], p64[0]], "lr": 0.01},
              {"params": [p64[1], p32[1]], "lr": 0.003, "betas": (0.8, 0.99), "weight_decay": 0.05}]
    start = [p.copy() for p in (p32[0], p64[0], p64[1], p32[1])]
    opt = fusedopt.Adam(groups, eps=1e-8)
    refs = [p.astype(np.float64) for p in start]
    ms = [np.zeros_like(p) for p in refs]
    vs = [np.zeros_like(p) for p in refs]
    hyper = [dict(lr=0.01, beta1=0.9, beta2=0.999, weight_decay=0.0)] * 2 + \
            [dict(lr=0.003, beta1=0.8, beta2=0.99, weight_decay=0.05)] * 2
    for t in range(1, 31):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in start]
        opt.step(grads)
        for i in range(4):
            refs[i], ms[i], vs[i], _ = reference.adam_step(
                refs[i], grads[i].astype(np.float64), ms[i], vs[i], None, step=t, eps=1e-8, **hyper[i])
    got = [p32[0], p64[0], p64[1], p32[1]]
    for p, r in zip(got, refs):
        assert_close([p], [r], p.dtype.type, 30, scale=4.0)


def test_param_group_change_takes_effect_next_step():
    p = np.ones(4, dtype=np.float64)
    opt = fusedopt.SGD([p], lr=0.1)
    opt.step([np.ones(4)])
    np.testing.assert_array_equal(p, 0.9)
    opt.param_groups[0]["lr"] = 0.5
    opt.step([np.ones(4)])
    np.testing.assert_array_equal(p, 0.4)


def test_functional_matches_class():
    rng = np.random.default_rng(3)
    p1 = rng.standard_normal(100).astype(np.float32)
    p2 = p1.copy()
    m, v, vmax = (np.zeros_like(p2) for _ in range(3))
    opt = fusedopt.AdamW([p1], lr=0.01, weight_decay=0.1, amsgrad=True)
    for t in range(1, 11):
        g = rng.standard_normal(100).astype(np.float32)
        opt.step([g])
        fusedopt.functional.adam_(p2, g, m, v, step=t, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                                  weight_decay=0.1, decoupled=True, amsgrad_max=vmax)
    np.testing.assert_array_equal(p1, p2)
    q1 = rng.standard_normal(50)
    q2 = q1.copy()
    buf = np.zeros_like(q2)
    sgd = fusedopt.SGD([q1], lr=0.05, momentum=0.9, dampening=0.1)
    for t in range(5):
        g = rng.standard_normal(50)
        sgd.step([g])
        fusedopt.functional.sgd_(q2, g, buf, lr=0.05, momentum=0.9, dampening=0.1, first_step=t == 0)
    np.testing.assert_array_equal(q1, q2)


def test_velocity_form_differs_from_pytorch_form_when_lr_changes():
    """Same trajectory (to rounding) while lr is constant; different after it changes."""
    rng = np.random.default_rng(11)
    p_torch_form, p_velocity = np.zeros(10), np.zeros(10)
    a = fusedopt.SGD([p_torch_form], lr=0.1, momentum=0.9)
    b = fusedopt.SGD([p_velocity], lr=0.1, momentum=0.9, lr_in_velocity=True)
    for _ in range(5):
        g = rng.standard_normal(10)
        a.step([g])
        b.step([g])
    np.testing.assert_allclose(p_torch_form, p_velocity, rtol=1e-13, atol=1e-15)
    for opt in (a, b):
        opt.param_groups[0]["lr"] = 0.01
    g = rng.standard_normal(10)
    a.step([g])
    b.step([g])
    assert np.max(np.abs(p_torch_form - p_velocity)) > 1e-3


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------

TORCH_CONFIGS = [name for name in CONFIGS if "velocity" not in name]


@pytest.mark.parametrize("size", [1, 17, 1000])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", TORCH_CONFIGS)
def test_matches_torch(name, dtype, size):
    torch = pytest.importorskip("torch")
    seed = case_seed("torch", name, np.dtype(dtype).name, size)
    cls_name, opts = draw_options(name, seed)
    params, grads = make_problem([(size,), (3, 2)], dtype, N_STEPS, seed)
    got = run_fused(cls_name, opts, params, grads)
    tensors = [torch.tensor(p.copy()) for p in params]
    topt = getattr(torch.optim, cls_name)(tensors, foreach=False, **opts)
    for step_grads in grads:
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        topt.step()
    expected = [t.numpy().astype(np.float64) for t in tensors]
    # torch rounds like the kernel (both in the parameter dtype), in a different
    # order (lerp for the first moment, division by sqrt(bc2)): same bound.
    assert_close(got, expected, dtype, N_STEPS, scale=max(1.0, *(np.abs(p).max() for p in params)))


def test_velocity_form_matches_torch_while_lr_constant():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    p = rng.standard_normal(100)
    t = torch.tensor(p.copy())
    opt = fusedopt.SGD([p], lr=0.05, momentum=0.9, nesterov=True, lr_in_velocity=True)
    topt = torch.optim.SGD([t], lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(N_STEPS):
        g = rng.standard_normal(100)
        opt.step([g])
        t.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, t.numpy(), rtol=1e-12, atol=1e-12)


def test_param_groups_list_cannot_be_replaced_silently():
    opt = fusedopt.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(AttributeError):
        opt.param_groups = [{"params": [np.ones(2)], "lr": 1.0}]
    opt.param_groups[0]["momentum"] = 0.5  # editing the dicts is the way
    opt.step([np.ones(2)])
    assert "momentum_buffer" in opt.state[0]
