"""Tests of fusedopt.schedules.

Each schedule is checked against its closed form, written here again
independently in plain Python, and (where torch is installed) against
torch.optim.lr_scheduler step for step: PyTorch's learning rate at the k-th
optimizer.step() must equal our sched(k).
"""
import copy
import json
import math
import pickle
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusedopt.schedules import (
    Constant,
    CosineAnnealing,
    CosineAnnealingWarmRestarts,
    ExponentialDecay,
    Lambda,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PerEpoch,
    Polynomial,
    ReduceLROnPlateau,
    Scaled,
    Schedule,
    Sequential,
    StepDecay,
    from_config,
    group_rate,
    plot,
)

REL = 1e-12  # the agreement the specification asks for, relative


def assert_rel(actual, expected, rel=REL):
    """Element-wise |actual - expected| <= rel * |expected| (exact where expected is 0)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    bad = np.flatnonzero(~(np.abs(actual - expected) <= rel * np.abs(expected)))
    assert bad.size == 0, (
        f"{bad.size} mismatches, first at index {bad[0]}: "
        f"{actual.flat[bad[0]]!r} != {expected.flat[bad[0]]!r}")


def bits(x):
    return np.asarray(x, dtype=np.float64).view(np.int64)


# ---------------------------------------------------------------------------
# Closed forms, written independently of the module under test
# ---------------------------------------------------------------------------


def ref_step(lr, step_size, gamma):
    return lambda t: lr * gamma ** (t // step_size)


def ref_multistep(lr, milestones, gamma):
    return lambda t: lr * gamma ** sum(1 for m in milestones if m <= t)


def ref_exponential(lr, gamma):
    return lambda t: lr * gamma ** t


def ref_cosine(lr, T_max, eta_min):
    def f(t):
        t = min(t, T_max)
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
    return f


def ref_sgdr(lr, T_0, T_mult, eta_min):
    def f(t):
        period = T_0
        while t >= period:  # walk the cycles one by one
            t -= period
            period *= T_mult
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / period)) / 2
    return f


def ref_polynomial(lr, total, power, end_lr):
    return lambda t: end_lr + (lr - end_lr) * (1 - min(t, total) / total) ** power


def ref_onecycle(max_lr, total, pct_start, anneal, div_factor, final_div_factor):
    start = max_lr / div_factor
    final = start / final_div_factor
    peak_step = pct_start * total - 1

    def interpolate(a, b, frac):
        if anneal == "cos":
            return b + (a - b) * (1 + math.cos(math.pi * frac)) / 2
        return a + (b - a) * frac

    def f(t):
        if t <= peak_step:
            return interpolate(start, max_lr, t / peak_step)
        return interpolate(max_lr, final, min(1.0, (t - peak_step) / (total - 1 - peak_step)))
    return f


def ref_warmup(inner, warmup, start_factor):
    def f(t):
        if t < warmup:
            return inner(0) * (start_factor + (1 - start_factor) * t / warmup)
        return inner(t - warmup)
    return f


def ref_sequential(inners, milestones):
    def f(t):
        start, i = 0, 0
        for i, m in enumerate(milestones):
            if t < m:
                break
            start = m
        else:
            i = len(milestones)
        return inners[i](t - start)
    return f


def inverse_sqrt(t):
    """Module-level so that Lambda schedules using it pickle."""
    return 1.0 / math.sqrt(1.0 + t)


# (schedule, independent closed form)
CASES = {
    "constant": (Constant(0.1), lambda t: 0.1),
    "step": (StepDecay(0.1, step_size=7, gamma=0.5), ref_step(0.1, 7, 0.5)),
    "multistep": (MultiStepDecay(0.1, milestones=[10, 50, 50, 200], gamma=0.3),
                  ref_multistep(0.1, [10, 50, 50, 200], 0.3)),
    "exponential": (ExponentialDecay(0.1, gamma=0.99), ref_exponential(0.1, 0.99)),
    "cosine": (CosineAnnealing(0.1, T_max=250, eta_min=1e-4), ref_cosine(0.1, 250, 1e-4)),
    "sgdr": (CosineAnnealingWarmRestarts(0.1, T_0=10, T_mult=2, eta_min=1e-4),
             ref_sgdr(0.1, 10, 2, 1e-4)),
    "sgdr_mult1": (CosineAnnealingWarmRestarts(0.2, T_0=13), ref_sgdr(0.2, 13, 1, 0.0)),
    "polynomial": (Polynomial(0.1, total_steps=200, power=2.0, end_lr=1e-3),
                   ref_polynomial(0.1, 200, 2.0, 1e-3)),
    "onecycle_cos": (OneCycle(0.1, total_steps=300), ref_onecycle(0.1, 300, 0.3, "cos", 25.0, 1e4)),
    "onecycle_linear": (OneCycle(1.0, total_steps=257, pct_start=0.25, anneal="linear",
                                 div_factor=10.0, final_div_factor=100.0),
                        ref_onecycle(1.0, 257, 0.25, "linear", 10.0, 100.0)),
    "lambda": (Lambda(0.1, inverse_sqrt), lambda t: 0.1 * inverse_sqrt(t)),
    "warmup_cosine": (LinearWarmup(CosineAnnealing(0.1, T_max=200), warmup_steps=20),
                      ref_warmup(ref_cosine(0.1, 200, 0.0), 20, 0.0)),
    "warmup_constant": (LinearWarmup(0.05, warmup_steps=10, start_factor=0.1),
                        ref_warmup(lambda t: 0.05, 10, 0.1)),
    "sequential": (Sequential([StepDecay(0.1, step_size=5, gamma=0.5),
                               CosineAnnealing(0.1, T_max=100), 0.001], milestones=[50, 150]),
                   ref_sequential([ref_step(0.1, 5, 0.5), ref_cosine(0.1, 100, 0.0), lambda t: 0.001],
                                  [50, 150])),
    "per_epoch": (PerEpoch(StepDecay(0.1, step_size=3), steps_per_epoch=17),
                  lambda t: ref_step(0.1, 3, 0.1)(t // 17)),
    "scaled": (Scaled(LinearWarmup(CosineAnnealing(0.1, T_max=200), warmup_steps=20), 0.3),
               lambda t: 0.3 * ref_warmup(ref_cosine(0.1, 200, 0.0), 20, 0.0)(t)),
}
NAMES = sorted(CASES)
N_STEPS = 400


@pytest.mark.parametrize("name", NAMES)
def test_matches_closed_form(name):
    sched, ref = CASES[name]
    expected = [ref(t) for t in range(N_STEPS)]
    assert_rel([sched(t) for t in range(N_STEPS)], expected)
    assert_rel(sched(np.arange(N_STEPS)), expected)


@pytest.mark.parametrize("name", NAMES)
def test_scalar_and_vectorised_agree_bitwise(name):
    sched, _ = CASES[name]
    rng = np.random.default_rng(0)
    steps = np.concatenate([np.arange(N_STEPS), rng.integers(0, 10**6, 200)])
    rng.shuffle(steps)  # order must not matter: no hidden state
    vector = sched(steps)
    assert vector.dtype == np.float64 and vector.shape == steps.shape
    scalar = np.array([sched(int(t)) for t in steps])
    np.testing.assert_array_equal(bits(vector), bits(scalar))
    # numpy scalars, 0-d arrays and whole floats are scalars too
    for t in (np.int64(5), np.uint32(5), np.array(5), 5.0):
        value = sched(t)
        assert type(value) is float and bits(value) == bits(sched(5))
    # any shape comes back in that shape
    grid = steps[:12].reshape(3, 4)
    np.testing.assert_array_equal(bits(sched(grid)), bits(vector[:12].reshape(3, 4)))
    assert sched(np.array([], dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("name", NAMES)
def test_negative_or_fractional_steps_raise(name):
    sched, _ = CASES[name]
    for bad in (-1, np.int64(-3), np.array([0, 5, -1]), np.array([[1, 2], [3, -4]])):
        with pytest.raises(ValueError, match="t must be >= 0"):
            sched(bad)
    with pytest.raises(ValueError, match="whole"):
        sched(2.5)
    with pytest.raises(TypeError):
        sched("3")


# ---------------------------------------------------------------------------
# Against PyTorch, step for step
# ---------------------------------------------------------------------------


def torch_rates(torch, make_scheduler, lr, n):
    """lr used by each of n optimizer.step() calls, stepping the scheduler after each."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(optimizer)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            rates.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
    return np.array(rates, dtype=np.float64)


def assert_matches_torch(ours, theirs, exact):
    """ours == PyTorch's rates to REL, step for step.

    PyTorch computes StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
    PolynomialLR and SequentialLR recursively, so its value can drift from the
    exact closed form.  Where that drift exceeds REL we compare against the
    closed form instead (and check that PyTorch is off by rounding only, 1e-12
    of the largest rate); elsewhere we compare against PyTorch directly.
    """
    ours, theirs, exact = (np.asarray(a, dtype=np.float64) for a in (ours, theirs, exact))
    drifted = np.abs(theirs - exact) > REL * np.abs(exact)
    assert_rel(ours[~drifted], theirs[~drifted])
    assert_rel(ours[drifted], exact[drifted])
    assert np.all(np.abs(theirs - exact) <= 1e-12 * np.abs(exact).max())


@pytest.mark.parametrize("lr, step_size, gamma", [(0.1, 7, 0.5), (1.0, 30, 0.1), (0.05, 1, 0.97)])
def test_step_decay_matches_torch(lr, step_size, gamma):
    torch = pytest.importorskip("torch")
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma), lr, N_STEPS)
    exact = [ref_step(lr, step_size, gamma)(t) for t in range(N_STEPS)]
    assert_matches_torch(StepDecay(lr, step_size=step_size, gamma=gamma)(np.arange(N_STEPS)), theirs, exact)


@pytest.mark.parametrize("lr, milestones, gamma",
                         [(0.1, [10, 50, 50, 200], 0.3), (0.5, [0, 100, 299], 0.1), (0.2, [], 0.5)])
def test_multistep_decay_matches_torch(lr, milestones, gamma):
    torch = pytest.importorskip("torch")
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma),
                         lr, N_STEPS)
    exact = [ref_multistep(lr, milestones, gamma)(t) for t in range(N_STEPS)]
    ours = MultiStepDecay(lr, milestones=milestones, gamma=gamma)(np.arange(N_STEPS))
    assert_matches_torch(ours, theirs, exact)


@pytest.mark.parametrize("lr, gamma", [(0.1, 0.99), (1.0, 0.9), (0.01, 1.001)])
def test_exponential_decay_matches_torch(lr, gamma):
    torch = pytest.importorskip("torch")
    n = 500
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma), lr, n)
    exact = [ref_exponential(lr, gamma)(t) for t in range(n)]
    assert_matches_torch(ExponentialDecay(lr, gamma=gamma)(np.arange(n)), theirs, exact)


@pytest.mark.parametrize("lr, T_max, eta_min", [(0.1, 300, 0.0), (0.1, 1000, 1e-3), (2.0, 301, 0.5)])
def test_cosine_annealing_matches_torch(lr, T_max, eta_min):
    torch = pytest.importorskip("torch")
    sched = CosineAnnealing(lr, T_max=T_max, eta_min=eta_min)
    # PyTorch's CosineAnnealingLR agrees for t < T_max (it rises again afterwards)
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max, eta_min),
                         lr, T_max)
    exact = [ref_cosine(lr, T_max, eta_min)(t) for t in range(T_max)]
    assert_matches_torch(sched(np.arange(T_max)), theirs, exact)


def test_cosine_annealing_stays_at_eta_min_after_T_max():
    sched = CosineAnnealing(0.1, T_max=100, eta_min=0.002)
    np.testing.assert_array_equal(sched(np.arange(100, 1000)), 0.002)
    assert sched(99) > 0.002


@pytest.mark.parametrize("lr, T_0, T_mult, eta_min",
                         [(0.1, 10, 1, 0.0), (0.1, 7, 2, 1e-4), (1.0, 1, 3, 0.0), (0.1, 50, 1, 0.01)])
def test_warm_restarts_matches_torch(lr, T_0, T_mult, eta_min):
    torch = pytest.importorskip("torch")
    theirs = torch_rates(
        torch, lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0, T_mult, eta_min),
        lr, N_STEPS)
    exact = [ref_sgdr(lr, T_0, T_mult, eta_min)(t) for t in range(N_STEPS)]
    ours = CosineAnnealingWarmRestarts(lr, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    assert_matches_torch(ours(np.arange(N_STEPS)), theirs, exact)


def test_warm_restarts_far_out():
    # exact integer cycle search even where PyTorch's log-based search would round
    sched = CosineAnnealingWarmRestarts(0.1, T_0=3, T_mult=2)
    starts = [3 * (2**n - 1) for n in range(40)]
    np.testing.assert_array_equal(sched(np.array(starts)), 0.1)  # every cycle starts at lr
    assert_rel(sched(np.array(starts[1:])[:, None] - 1).ravel(),
               [ref_cosine(0.1, 3 * 2**n, 0.0)(3 * 2**n - 1) for n in range(39)])


@pytest.mark.parametrize("lr, total, power", [(0.1, 300, 1.0), (0.1, 250, 2.0), (1.0, 100, 0.5)])
def test_polynomial_matches_torch(lr, total, power):
    torch = pytest.importorskip("torch")
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total, power),
                         lr, N_STEPS)
    exact = [ref_polynomial(lr, total, power, 0.0)(t) for t in range(N_STEPS)]
    ours = Polynomial(lr, total_steps=total, power=power)(np.arange(N_STEPS))
    assert_matches_torch(ours, theirs, exact)
    assert ours[total] == 0.0 and np.all(ours[total:] == 0.0)


def test_polynomial_end_lr():
    sched = Polynomial(0.1, total_steps=10, power=1.0, end_lr=0.01)
    assert sched(0) == 0.1 and sched(10) == 0.01 and sched(500) == 0.01
    assert_rel(sched(4), 0.01 + 0.09 * 0.6)


@pytest.mark.parametrize("max_lr, total, pct_start, anneal, div_factor, final_div_factor", [
    (0.1, 300, 0.3, "cos", 25.0, 1e4),
    (1.0, 1000, 0.25, "cos", 10.0, 100.0),
    (0.1, 350, 0.45, "cos", 25.0, 1e4),
    (0.01, 301, 0.1, "linear", 25.0, 1e4),
    (0.5, 400, 0.5, "linear", 5.0, 1e3),
])
def test_one_cycle_matches_torch(max_lr, total, pct_start, anneal, div_factor, final_div_factor):
    torch = pytest.importorskip("torch")
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr, total_steps=total, pct_start=pct_start, anneal_strategy=anneal,
        cycle_momentum=False, div_factor=div_factor, final_div_factor=final_div_factor,
        three_phase=False), 0.123, total)
    sched = OneCycle(max_lr, total_steps=total, pct_start=pct_start, anneal=anneal,
                     div_factor=div_factor, final_div_factor=final_div_factor)
    exact = [ref_onecycle(max_lr, total, pct_start, anneal, div_factor, final_div_factor)(t)
             for t in range(total)]
    assert_matches_torch(sched(np.arange(total)), theirs, exact)


def test_one_cycle_shape():
    sched = OneCycle(0.1, total_steps=100, pct_start=0.3)
    rates = sched(np.arange(200))
    assert_rel(rates[0], 0.1 / 25)
    assert rates.max() == rates[29] and abs(rates[29] - 0.1) <= 1e-17
    assert_rel(rates[99], 0.1 / 25 / 1e4)
    np.testing.assert_array_equal(rates[99:], rates[99])  # stays at the final rate
    # a one-step warm-up (PyTorch divides by zero here): step 0 is the peak
    assert OneCycle(0.1, total_steps=10, pct_start=0.1)(0) == 0.1


def _lambda_inverse_sqrt(t):
    return 1.0 / math.sqrt(1.0 + t)


def _lambda_exp(t):
    return 0.95 ** t


def _lambda_piecewise(t):
    return 1.0 if t < 100 else 0.1


@pytest.mark.parametrize("f", [_lambda_inverse_sqrt, _lambda_exp, _lambda_piecewise])
def test_lambda_matches_torch(f):
    torch = pytest.importorskip("torch")
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.LambdaLR(o, f), 0.3, N_STEPS)
    exact = [0.3 * f(t) for t in range(N_STEPS)]
    assert_matches_torch(Lambda(0.3, f)(np.arange(N_STEPS)), theirs, exact)


@pytest.mark.parametrize("warmup, start_factor", [(10, 0.25), (50, 0.01), (1, 0.5)])
def test_linear_warmup_matches_torch_sequential(warmup, start_factor):
    torch = pytest.importorskip("torch")
    sched_mod = torch.optim.lr_scheduler

    def make(o):
        return sched_mod.SequentialLR(o, [
            sched_mod.LinearLR(o, start_factor=start_factor, total_iters=warmup),
            sched_mod.CosineAnnealingLR(o, T_max=N_STEPS, eta_min=0.001)], milestones=[warmup])

    theirs = torch_rates(torch, make, 0.1, N_STEPS)
    exact = [ref_warmup(ref_cosine(0.1, N_STEPS, 0.001), warmup, start_factor)(t) for t in range(N_STEPS)]
    ours = LinearWarmup(CosineAnnealing(0.1, T_max=N_STEPS, eta_min=0.001), warmup_steps=warmup,
                        start_factor=start_factor)
    assert_matches_torch(ours(np.arange(N_STEPS)), theirs, exact)


def test_sequential_matches_torch():
    torch = pytest.importorskip("torch")
    sched_mod = torch.optim.lr_scheduler

    def make(o):
        return sched_mod.SequentialLR(o, [sched_mod.StepLR(o, 5, 0.5),
                                          sched_mod.CosineAnnealingLR(o, T_max=300, eta_min=0.001),
                                          sched_mod.ExponentialLR(o, 0.99)], milestones=[40, 340])

    theirs = torch_rates(torch, make, 0.1, N_STEPS)
    ours = Sequential([StepDecay(0.1, step_size=5, gamma=0.5), CosineAnnealing(0.1, 300, 0.001),
                       ExponentialDecay(0.1, 0.99)], milestones=[40, 340])
    exact = [ref_sequential([ref_step(0.1, 5, 0.5), ref_cosine(0.1, 300, 0.001),
                             ref_exponential(0.1, 0.99)], [40, 340])(t) for t in range(N_STEPS)]
    assert_matches_torch(ours(np.arange(N_STEPS)), theirs, exact)


# ---------------------------------------------------------------------------
# Combinators and per-epoch use
# ---------------------------------------------------------------------------


def test_linear_warmup_hand_values():
    sched = LinearWarmup(CosineAnnealing(0.1, T_max=10), warmup_steps=4)
    assert_rel([sched(t) for t in range(5)], [0.0, 0.025, 0.05, 0.075, 0.1])
    assert_rel(sched(9), 0.1 * (1 + math.cos(math.pi * 5 / 10)) / 2)
    assert sched(14) == 0.0
    assert LinearWarmup(0.3, warmup_steps=0)(0) == 0.3  # no warm-up


def test_per_epoch_step_decay():
    steps_per_epoch = 50
    sched = PerEpoch(StepDecay(0.1, step_size=30), steps_per_epoch=steps_per_epoch)
    rates = sched(np.arange(90 * steps_per_epoch))
    epochs = np.arange(90 * steps_per_epoch) // steps_per_epoch
    assert_rel(rates, 0.1 * 0.1 ** (epochs // 30))
    assert sched(30 * 50 - 1) == 0.1 and sched(30 * 50) == pytest.approx(0.01, rel=1e-15)
    # the alternative: evaluate the schedule on the epoch number directly
    by_epoch = StepDecay(0.1, step_size=30)
    assert all(sched(e * steps_per_epoch + i) == by_epoch(e) for e in range(90) for i in (0, 49))


def test_sequential_restarts_each_count():
    sched = Sequential([0.5, ExponentialDecay(0.2, gamma=0.5)], milestones=[3])
    assert [sched(t) for t in range(6)] == [0.5, 0.5, 0.5, 0.2, 0.1, 0.05]


# ---------------------------------------------------------------------------
# Immutability, config, repr, pickling
# ---------------------------------------------------------------------------


def test_every_schedule_is_a_schedule():
    assert all(isinstance(sched, Schedule) for sched, _ in CASES.values())
    assert {type(sched).__name__ for sched, _ in CASES.values()} >= {
        "Constant", "StepDecay", "MultiStepDecay", "ExponentialDecay", "CosineAnnealing",
        "CosineAnnealingWarmRestarts", "Polynomial", "OneCycle", "Lambda", "LinearWarmup",
        "Sequential", "PerEpoch", "Scaled"}


@pytest.mark.parametrize("name", NAMES)
def test_immutable(name):
    sched, _ = CASES[name]
    attribute = type(sched)._params[0]
    before = sched(np.arange(50))
    with pytest.raises(AttributeError):
        setattr(sched, attribute, 1.0)
    with pytest.raises(AttributeError):
        delattr(sched, attribute)
    with pytest.raises(AttributeError):
        sched.something_new = 1
    assert not hasattr(sched, "__dict__")
    np.testing.assert_array_equal(sched(np.arange(50)), before)


@pytest.mark.parametrize("name", NAMES)
def test_pickle_copy_and_config_round_trip(name):
    sched, _ = CASES[name]
    steps = np.arange(300)
    for clone in (pickle.loads(pickle.dumps(sched)), copy.deepcopy(sched),
                  from_config(json.loads(json.dumps(sched.config())),
                              functions={"inverse_sqrt": inverse_sqrt})):
        assert clone == sched and hash(clone) == hash(sched) and repr(clone) == repr(sched)
        np.testing.assert_array_equal(bits(clone(steps)), bits(sched(steps)))


def test_config_and_repr():
    cos = CosineAnnealing(0.1, T_max=100)
    assert cos.config() == {"type": "CosineAnnealing", "lr": 0.1, "T_max": 100, "eta_min": 0.0}
    assert repr(cos) == "CosineAnnealing(lr=0.1, T_max=100, eta_min=0.0)"
    warm = LinearWarmup(cos, warmup_steps=5)
    assert warm.config() == {"type": "LinearWarmup", "schedule": cos.config(),
                             "warmup_steps": 5, "start_factor": 0.0}
    assert repr(warm) == f"LinearWarmup(schedule={cos!r}, warmup_steps=5, start_factor=0.0)"
    seq = Sequential([0.1, cos], milestones=[7])
    assert seq.config() == {"type": "Sequential",
                            "schedules": [{"type": "Constant", "lr": 0.1}, cos.config()],
                            "milestones": [7]}
    assert MultiStepDecay(1, [3, 5]).config() == {"type": "MultiStepDecay", "lr": 1.0,
                                                   "milestones": [3, 5], "gamma": 0.1}
    assert OneCycle(0.1, 10).config()["anneal"] == "cos"
    lam = Lambda(0.1, inverse_sqrt)
    assert lam.config() == {"type": "Lambda", "lr": 0.1, "f": "inverse_sqrt"}
    assert repr(lam) == "Lambda(lr=0.1, f=inverse_sqrt)"
    for sched, _ in CASES.values():
        json.dumps(sched.config())  # plain data only


def test_lambda_needs_its_function_back():
    lam = Lambda(0.1, lambda t: 1.0)
    assert lam.config()["f"].endswith("<lambda>")
    with pytest.raises(ValueError, match="functions="):
        from_config(lam.config())
    with pytest.raises(Exception):
        pickle.dumps(lam)  # a lambda does not pickle, so neither does its schedule


def test_schedules_compare_by_value():
    assert StepDecay(0.1, 10) == StepDecay(0.1, step_size=10, gamma=0.1)
    assert StepDecay(0.1, 10) != StepDecay(0.1, 11)
    assert len({Constant(0.1), Constant(0.1), Constant(0.2)}) == 2


# ---------------------------------------------------------------------------
# Scaled, and multiplying a schedule by a number
# ---------------------------------------------------------------------------


def test_scaled_values_and_array_evaluation():
    cos = CosineAnnealing(0.1, T_max=50, eta_min=1e-3)
    steps = np.arange(120)
    for factor in (0.5, 0.1, 0.0, 3.0, 1):
        sched = Scaled(cos, factor)
        assert sched.schedule is cos and type(sched.factor) is float and sched.factor == factor
        scalar = [sched(int(t)) for t in steps]
        # the same product the optimizer used to form: base(k) * factor, bit for bit
        assert scalar == [cos(int(t)) * float(factor) for t in steps]
        np.testing.assert_array_equal(bits(sched(steps)), bits(np.array(scalar)))
        np.testing.assert_array_equal(bits(sched(steps.reshape(4, 30))),
                                      bits(np.array(scalar).reshape(4, 30)))
    assert Scaled(0.2, 0.5) == Scaled(Constant(0.2), 0.5) and Scaled(0.2, 0.5)(7) == 0.1


def test_multiplying_a_schedule_by_a_number_gives_scaled():
    cos = CosineAnnealing(0.1, T_max=50)
    for scaled in (cos * 0.1, 0.1 * cos, cos * np.float64(0.1), np.float64(0.1) * cos,
                   cos * np.float32(0.5) * 0.2):
        assert isinstance(scaled, Scaled) and scaled.schedule is cos
    assert cos * 0.1 == 0.1 * cos == Scaled(cos, 0.1)
    assert cos * 2 == Scaled(cos, 2.0)  # scaling up is allowed too
    x = cos
    x *= 0.1
    assert x == Scaled(cos, 0.1) and cos == CosineAnnealing(0.1, T_max=50)  # cos unchanged


def test_scaled_of_scaled_collapses():
    cos = CosineAnnealing(0.1, T_max=50)
    nested = Scaled(Scaled(cos, 0.5), 0.25)
    assert type(nested.schedule) is CosineAnnealing and nested.schedule is cos
    assert nested == Scaled(cos, 0.125) and nested.factor == 0.125
    assert cos * 0.5 * 0.25 == nested == 0.25 * (0.5 * cos)
    assert repr(nested) == f"Scaled(schedule={cos!r}, factor=0.125)"
    # inside another schedule it is a schedule like any other, not collapsed away
    warm = LinearWarmup(Scaled(cos, 0.5), warmup_steps=3)
    assert warm.schedule == Scaled(cos, 0.5) and Scaled(warm, 2.0).schedule is warm


def test_scaled_config_pickle_and_repr():
    cos = CosineAnnealing(0.1, T_max=100)
    sched = Scaled(LinearWarmup(cos, warmup_steps=5), 0.25)
    assert sched.config() == {"type": "Scaled",
                              "schedule": LinearWarmup(cos, warmup_steps=5).config(),
                              "factor": 0.25}
    assert repr(sched) == f"Scaled(schedule={LinearWarmup(cos, warmup_steps=5)!r}, factor=0.25)"
    steps = np.arange(200)
    for clone in (from_config(json.loads(json.dumps(sched.config()))),
                  pickle.loads(pickle.dumps(sched)), copy.deepcopy(sched)):
        assert clone == sched and hash(clone) == hash(sched) and type(clone) is Scaled
        np.testing.assert_array_equal(bits(clone(steps)), bits(sched(steps)))
    lam = Scaled(Lambda(0.1, inverse_sqrt), 0.5)
    assert from_config(lam.config(), functions={"inverse_sqrt": inverse_sqrt}) == lam
    assert Scaled(cos, 0.5) != Scaled(cos, 0.25) and Scaled(cos, 0.5) != cos


def test_group_rate():
    cos = CosineAnnealing(0.1, T_max=100)
    assert group_rate({"lr": 0.01}, 5) == 0.01 and type(group_rate({"lr": 1}, 0)) is float
    assert group_rate({"lr": cos}, 30) == cos(30)
    assert group_rate({"lr": cos * 0.5}, 30) == cos(30) * 0.5
    assert group_rate({"lr": lambda k: 0.5 / (k + 1)}, 4) == 0.1
    # any other key is just a key: there is no hidden multiplier
    assert group_rate({"lr": 0.01, "lr_factor": 0.5}, 0) == 0.01


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


BAD = [
    (lambda: Constant(-0.1), "lr"),
    (lambda: Constant(float("nan")), "lr"),
    (lambda: Constant(float("inf")), "lr"),
    (lambda: StepDecay(-1.0, step_size=3), "lr"),
    (lambda: StepDecay(0.1, step_size=0), "step_size"),
    (lambda: StepDecay(0.1, step_size=-2), "step_size"),
    (lambda: StepDecay(0.1, step_size=2.5), "step_size"),
    (lambda: StepDecay(0.1, step_size=3, gamma=0.0), "gamma"),
    (lambda: StepDecay(0.1, step_size=3, gamma=-0.5), "gamma"),
    (lambda: StepDecay(0.1, step_size=3, gamma=float("nan")), "gamma"),
    (lambda: MultiStepDecay(float("nan"), [1]), "lr"),
    (lambda: MultiStepDecay(0.1, [30, 10]), "milestones"),
    (lambda: MultiStepDecay(0.1, [-5, 10]), "milestones"),
    (lambda: MultiStepDecay(0.1, [5], gamma=0), "gamma"),
    (lambda: ExponentialDecay(-0.1, gamma=0.9), "lr"),
    (lambda: ExponentialDecay(0.1, gamma=0.0), "gamma"),
    (lambda: CosineAnnealing(-0.1, T_max=10), "lr"),
    (lambda: CosineAnnealing(0.1, T_max=0), "T_max"),
    (lambda: CosineAnnealing(0.1, T_max=-10), "T_max"),
    (lambda: CosineAnnealing(0.1, T_max=10, eta_min=-1.0), "eta_min"),
    (lambda: CosineAnnealingWarmRestarts(float("nan"), T_0=10), "lr"),
    (lambda: CosineAnnealingWarmRestarts(0.1, T_0=0), "T_0"),
    (lambda: CosineAnnealingWarmRestarts(0.1, T_0=10, T_mult=0), "T_mult"),
    (lambda: Polynomial(-0.1, total_steps=10), "lr"),
    (lambda: Polynomial(0.1, total_steps=0), "total_steps"),
    (lambda: Polynomial(0.1, total_steps=10, power=0.0), "power"),
    (lambda: Polynomial(0.1, total_steps=10, end_lr=-0.1), "end_lr"),
    (lambda: OneCycle(-0.1, total_steps=100), "max_lr"),
    (lambda: OneCycle(0.1, total_steps=0), "total_steps"),
    (lambda: OneCycle(0.1, total_steps=100, pct_start=0.0), "pct_start"),
    (lambda: OneCycle(0.1, total_steps=100, pct_start=1.0), "pct_start"),
    (lambda: OneCycle(0.1, total_steps=100, pct_start=-0.2), "pct_start"),
    (lambda: OneCycle(0.1, total_steps=100, anneal="exp"), "anneal"),
    (lambda: OneCycle(0.1, total_steps=100, div_factor=0), "div_factor"),
    (lambda: Lambda(-0.1, inverse_sqrt), "lr"),
    (lambda: Lambda(float("nan"), inverse_sqrt), "lr"),
    (lambda: LinearWarmup(-0.1, warmup_steps=5), "lr"),
    (lambda: LinearWarmup(float("nan"), warmup_steps=5), "schedule"),
    (lambda: Sequential([0.1, -0.2], milestones=[3]), "lr"),
    (lambda: LinearWarmup(0.1, warmup_steps=-1), "warmup_steps"),
    (lambda: LinearWarmup(0.1, warmup_steps=5, start_factor=1.5), "start_factor"),
    (lambda: Sequential([0.1, 0.2], milestones=[]), "milestones"),
    (lambda: Sequential([0.1, 0.2, 0.3], milestones=[20, 10]), "milestones"),
    (lambda: Sequential([0.1, 0.2], milestones=[-1]), "milestones"),
    (lambda: Sequential([], milestones=[]), "schedules"),
    (lambda: PerEpoch(0.1, steps_per_epoch=0), "steps_per_epoch"),
    (lambda: Scaled(CosineAnnealing(0.1, T_max=10), -0.5), "factor"),
    (lambda: Scaled(CosineAnnealing(0.1, T_max=10), float("nan")), "factor"),
    (lambda: Scaled(CosineAnnealing(0.1, T_max=10), float("inf")), "factor"),
    (lambda: Scaled(Scaled(0.1, 1e200), 1e200), "factor"),  # the collapsed product overflows
    (lambda: CosineAnnealing(0.1, T_max=10) * -2, "factor"),
    (lambda: Scaled(-0.1, 0.5), "schedule"),
]


@pytest.mark.parametrize("make, argument", BAD, ids=[f"{i}-{a}" for i, (_, a) in enumerate(BAD)])
def test_bad_construction_raises_value_error_naming_argument(make, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        make()


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="lr"):
        Constant("0.1")
    with pytest.raises(TypeError, match="f"):
        Lambda(0.1, 3.0)
    with pytest.raises(TypeError, match="schedule"):
        LinearWarmup(lambda t: 0.1, warmup_steps=3)
    cos = CosineAnnealing(0.1, T_max=10)
    for bad in ("0.5", True, None, 1j):
        with pytest.raises(TypeError, match=r"\bfactor\b"):
            Scaled(cos, bad)
    with pytest.raises(TypeError, match=r"\bfactor\b"):
        cos * True
    with pytest.raises(TypeError):
        cos * cos  # only a number scales a schedule
    with pytest.raises(TypeError):
        cos * "2"


class FakeOptimizer:
    """The optimizer side of the plateau contract, and nothing else."""

    def __init__(self, lrs):
        self.param_groups = [{"lr": lr} for lr in lrs]
        self.step_count = 0
        self.plateau = None

    def attach_scheduler(self, scheduler):
        self.plateau = scheduler

    def rates(self):
        """Rates the next step() would use: the number in "lr", or the schedule at step k."""
        k = self.step_count
        return [g["lr"](k) if callable(g["lr"]) else float(g["lr"]) for g in self.param_groups]

    def check_keys(self):
        assert all(set(g) == {"lr"} for g in self.param_groups), self.param_groups

    def step(self):
        rates = self.rates()
        self.step_count += 1
        return rates


@pytest.mark.parametrize("kwargs, argument", [
    ({"factor": 1.0}, "factor"), ({"factor": 0.0}, "factor"), ({"factor": 1.5}, "factor"),
    ({"factor": -0.1}, "factor"), ({"mode": "lowest"}, "mode"),
    ({"threshold_mode": "relative"}, "threshold_mode"), ({"patience": -1}, "patience"),
    ({"cooldown": -1}, "cooldown"), ({"min_lr": -0.1}, "min_lr"),
    ({"min_lr": [0.0, 0.0, 0.0]}, "min_lr"), ({"min_lr": float("nan")}, "min_lr"),
])
def test_plateau_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        ReduceLROnPlateau(FakeOptimizer([0.1, 0.2]), **kwargs)


# ---------------------------------------------------------------------------
# ReduceLROnPlateau
# ---------------------------------------------------------------------------


def worst(mode):
    return math.inf if mode == "min" else -math.inf


plateau_args = st.fixed_dictionaries({
    "mode": st.sampled_from(["min", "max"]),
    "factor": st.floats(0.01, 0.99),
    "patience": st.integers(0, 4),
    "threshold": st.sampled_from([0.0, 1e-4, 0.05, 0.5]),
    "threshold_mode": st.sampled_from(["rel", "abs"]),
    "cooldown": st.integers(0, 3),
    "min_lr": st.one_of(st.sampled_from([0.0, 1e-4, 0.003]),
                        st.lists(st.sampled_from([0.0, 1e-5, 0.002]), min_size=2, max_size=2)),
    "eps": st.sampled_from([1e-8, 0.0]),
})
metric_values = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, math.inf, -math.inf]),  # ties and plateaus
    st.floats(-10, 10, allow_nan=False))


@pytest.mark.parametrize("kind", ["number", "schedule"])
def test_plateau_decisions_match_torch(kind):
    """Same decisions as PyTorch.  A numeric lr is rewritten with exactly the numbers
    PyTorch writes; a schedule-valued lr (here a Constant) becomes Scaled(schedule, f)
    with the same rate up to rounding."""
    torch = pytest.importorskip("torch")

    @settings(max_examples=300, deadline=None)
    @given(args=plateau_args, metrics=st.lists(metric_values, min_size=1, max_size=60))
    def check(args, metrics):
        lrs = [0.1, 0.037]
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
        torch_opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **args)
        bases = lrs if kind == "number" else [Constant(lr) for lr in lrs]
        fake = FakeOptimizer(bases)
        ours = ReduceLROnPlateau(fake, **args)
        assert fake.plateau is ours
        for metric in metrics:
            fake.step()
            ours.step(metric)
            theirs.step(metric)
            assert ours.num_bad_epochs == theirs.num_bad_epochs
            assert ours.cooldown_counter == theirs.cooldown_counter
            assert ours.best == theirs.best
            fake.check_keys()  # no "lr_factor", nor any other key, ever
            torch_lrs = [g["lr"] for g in torch_opt.param_groups]
            if kind == "number":
                assert [g["lr"] for g in fake.param_groups] == torch_lrs
                assert all(type(g["lr"]) is float for g in fake.param_groups)
                assert ours.factors == [g["lr"] / lr for g, lr in zip(fake.param_groups, lrs)]
            else:
                assert_rel(fake.rates(), torch_lrs)
                for g, base, f in zip(fake.param_groups, bases, ours.factors):
                    assert g["lr"] == (base if f == 1.0 else Scaled(base, f))
            assert_rel(ours.effective_lrs(), torch_lrs)

    check()


def test_plateau_nan_metric_is_no_improvement():
    torch = pytest.importorskip("torch")

    @settings(max_examples=200, deadline=None)
    @given(args=plateau_args,
           metrics=st.lists(st.one_of(metric_values, st.just(math.nan)), min_size=1, max_size=60))
    def check(args, metrics):
        # PyTorch gets the worst possible value where we get NaN
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
        torch_opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, [0.1, 0.037])])
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **args)
        fake = FakeOptimizer([0.1, 0.037])
        ours = ReduceLROnPlateau(fake, **args)
        for metric in metrics:
            ours.step(metric)
            theirs.step(worst(args["mode"]) if math.isnan(metric) else metric)
            assert (ours.num_bad_epochs, ours.cooldown_counter) == (
                theirs.num_bad_epochs, theirs.cooldown_counter)
            assert not math.isnan(ours.best) and ours.best == theirs.best
            assert all(math.isfinite(r) for r in fake.rates())
            assert_rel(fake.rates(), [g["lr"] for g in torch_opt.param_groups])

    check()


def test_plateau_nan_counts_as_bad_epoch():
    fake = FakeOptimizer([0.1])
    plateau = ReduceLROnPlateau(fake, patience=1, factor=0.5)
    for metric in (1.0, math.nan, math.nan):
        plateau.step(metric)
    assert plateau.best == 1.0 and plateau.factors == [0.5] and plateau.num_bad_epochs == 0
    plateau.step(math.nan)
    assert plateau.num_bad_epochs == 1 and fake.rates() == [0.05]
    assert fake.param_groups == [{"lr": 0.05}]


def test_plateau_patience_and_cooldown_by_hand():
    fake = FakeOptimizer([1.0])
    plateau = ReduceLROnPlateau(fake, mode="max", factor=0.5, patience=2, cooldown=2,
                                threshold=0.1, threshold_mode="abs")
    history = []
    for metric in [1.0, 1.05, 1.0, 0.9, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]:
        plateau.step(metric)
        history.append((plateau.num_bad_epochs, plateau.cooldown_counter, plateau.factors[0]))
    assert history == [
        (0, 0, 1.0),    # first value is the best so far
        (1, 0, 1.0),    # +0.05 < threshold 0.1: no improvement
        (2, 0, 1.0),
        (0, 2, 0.5),    # third bad epoch > patience 2: halve, start cooldown
        (0, 1, 0.5),    # 2.0 improves; cooldown runs down
        (0, 0, 0.5),    # bad epoch ignored in cooldown
        (1, 0, 0.5),
        (2, 0, 0.5),
        (0, 2, 0.25),
        (0, 1, 0.25),
        (0, 0, 0.25),
    ]


def test_plateau_min_lr_list_and_eps():
    fake = FakeOptimizer([0.1, 0.01])
    plateau = ReduceLROnPlateau(fake, factor=0.1, patience=0, min_lr=[0.0005, 0.0])
    for metric in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]:
        plateau.step(metric)
    rates = fake.rates()
    assert_rel(rates[0], 0.0005)  # clamped at its min_lr
    # group 1 goes down by 10 until a drop would be <= eps = 1e-8
    assert_rel(rates[1], 1e-8)


def test_plateau_min_lr_with_groups_added_later():
    fake = FakeOptimizer([0.1])
    plateau = ReduceLROnPlateau(fake, factor=0.1, patience=0, min_lr=0.02)
    fake.param_groups.append({"lr": 1.0})
    plateau.step(1.0)
    plateau.step(2.0)  # a float min_lr covers the new group too
    assert_rel(fake.rates(), [0.02, 0.1])
    assert plateau.state_dict()["min_lr"] == 0.02
    # the ratio of a group added later counts from its rate before the first reduction
    assert plateau.factors == [0.02 / 0.1, 0.1 / 1.0]

    per_group = ReduceLROnPlateau(FakeOptimizer([0.1]), patience=0, min_lr=[0.02])
    per_group.optimizer.param_groups.append({"lr": 1.0})
    per_group.step(1.0)
    with pytest.raises(RuntimeError, match="min_lr"):
        per_group.step(2.0)


def test_plateau_zero_base_rate_leaves_factor_alone():
    # base(k) == 0 (warm-up from zero): base * (f - new_f) == 0 <= eps, nothing to reduce
    sched = LinearWarmup(0.1, warmup_steps=10)
    fake = FakeOptimizer([sched])
    plateau = ReduceLROnPlateau(fake, patience=0)
    plateau.step(1.0)
    plateau.step(2.0)
    assert plateau.factors == [1.0] and plateau.num_bad_epochs == 0
    assert fake.param_groups[0]["lr"] is sched  # left as it was, not wrapped


def test_plateau_composes_with_warmup_and_cosine_by_hand():
    """LinearWarmup + CosineAnnealing + plateau, every rate computed by hand."""
    def base(t):  # warm-up 5 steps from 20%, then half a cosine over 40 steps to 0.001
        if t < 5:
            return 0.1 * (0.2 + 0.8 * t / 5)
        return 0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * min(t - 5, 40) / 40)) / 2

    sched = LinearWarmup(CosineAnnealing(0.1, T_max=40, eta_min=0.001), warmup_steps=5, start_factor=0.2)
    fake = FakeOptimizer([sched])
    plateau = ReduceLROnPlateau(fake, factor=0.5, patience=1, min_lr=0.01)
    steps_per_epoch = 4
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3]
    # epochs 3 and 4 are bad (> patience 1): halve after epoch 4, i.e. from step 16 on;
    # epochs 7 and 8 are bad: halving again would put step 32 at 0.25 * base(32) < min_lr,
    # so the factor stops at min_lr / base(32); epochs 9 and 10 are bad again but the
    # factor cannot go lower at step 40 (the rate is already below min_lr there).
    def factor(k):
        if k < 16:
            return 1.0
        if k < 32:
            return 0.5
        return 0.01 / base(32)

    rates = []
    for metric in metrics:
        for _ in range(steps_per_epoch):
            rates.append(fake.step()[0])
        plateau.step(metric)
    expected = [base(k) * factor(k) for k in range(len(rates))]
    assert_rel(rates, expected)
    assert_rel(rates[32], 0.01)  # min_lr reached exactly at the reduction
    assert base(32) * 0.25 < 0.01 and plateau.factors == [pytest.approx(factor(40), rel=1e-15)]
    # the group's lr is the schedule, scaled: it keeps its shape
    assert fake.param_groups[0]["lr"] == Scaled(sched, plateau.factors[0])
    fake.check_keys()


def test_plateau_state_dict_resume_gives_identical_rates():
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 1.2, 0.5, 0.6, 0.7, 0.8, 0.81, 0.9, 0.3, 0.4, 0.45, 0.5]
    sched = LinearWarmup(CosineAnnealing(0.1, T_max=60), warmup_steps=6)
    kwargs = dict(factor=0.3, patience=1, cooldown=2, min_lr=[1e-4, 0.0], threshold=0.01)

    def run(fake, plateau, metrics):
        out = []
        for metric in metrics:
            out.extend(fake.step() for _ in range(3))
            plateau.step(metric)
            out.append((plateau.best, plateau.num_bad_epochs, plateau.cooldown_counter, plateau.factors))
        return out

    straight = FakeOptimizer([sched, 0.05])
    straight_plateau = ReduceLROnPlateau(straight, **kwargs)
    expected = run(straight, straight_plateau, metrics)
    assert straight_plateau.factors[0] < 0.3  # the run does reduce, more than once

    saved_states = []
    for split in range(len(metrics) + 1):  # stop and resume after every epoch
        first = FakeOptimizer([sched, 0.05])
        plateau = ReduceLROnPlateau(first, **kwargs)
        head = run(first, plateau, metrics[:split])
        # what an optimizer saves of its groups: numbers; it keeps the schedules it was built with
        saved = json.loads(json.dumps({"plateau": plateau.state_dict(), "step_count": first.step_count,
                                       "lr1": first.param_groups[1]["lr"]}))
        assert all(isinstance(v, (int, float, str, list)) for v in saved["plateau"].values())
        saved_states.append(saved["plateau"])

        second = FakeOptimizer([sched, 0.05])
        second.step_count = saved["step_count"]
        second.param_groups[1]["lr"] = saved["lr1"]
        resumed = ReduceLROnPlateau(second, mode="max", factor=0.9)  # overwritten by the load
        resumed.load_state_dict(saved["plateau"])
        assert resumed.mode == "min" and resumed.factor == 0.3
        # the plateau puts the factor of the schedule-valued group back
        assert second.param_groups == first.param_groups
        tail = run(second, resumed, metrics[split:])
        assert head + tail == expected, f"resuming after epoch {split}"
        assert resumed.state_dict() == straight_plateau.state_dict()
    # the saves covered every kind of state: in cooldown, counting bad epochs
    assert any(s["cooldown_counter"] > 0 for s in saved_states)
    assert any(s["num_bad_epochs"] > 0 for s in saved_states)


# ---------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------


def test_plot_draws_each_schedule():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cos = CosineAnnealing(0.1, T_max=100)
    step = StepDecay(0.1, step_size=30)
    fig = plot([cos, step], 120)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [repr(cos), repr(step)]
    np.testing.assert_array_equal(lines[0].get_ydata(), cos(np.arange(120)))
    np.testing.assert_array_equal(lines[1].get_xdata(), np.arange(120))
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "learning rate"

    fig2, ax2 = plt.subplots()
    assert plot({"warm": LinearWarmup(cos, 10)}, np.arange(0, 200, 5), ax=ax2) is fig2
    assert ax2.get_lines()[0].get_label() == "warm"
    assert plot(cos, 10, labels=["cosine"]).axes[0].get_lines()[0].get_label() == "cosine"
    plt.close("all")


def test_plot_without_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "fusedopt\[plot\]"'):
        plot(Constant(0.1), 10)


# ---------------------------------------------------------------------------
# With the real optimizers
# ---------------------------------------------------------------------------


def scheduler_states(state_dict):
    """The attached schedulers' states inside an optimizer's state_dict (a list under
    "schedulers"; older layouts kept the one plateau under "plateau")."""
    if "schedulers" in state_dict:
        return list(state_dict["schedulers"])
    return [] if state_dict.get("plateau") is None else [state_dict["plateau"]]


def sgd_trajectory(fusedopt, lr, n_steps, plateau_kwargs=None, metrics=None, steps_per_epoch=1):
    """Run fusedopt.SGD on a float64 parameter with unit gradients: p_{k+1} = p_k - rate_k."""
    p = np.zeros(4)
    opt = fusedopt.SGD([p], lr=lr)
    plateau = ReduceLROnPlateau(opt, **plateau_kwargs) if plateau_kwargs is not None else None
    values = []
    for k in range(n_steps):
        opt.step([np.ones(4)])
        values.append(p[0])
        if plateau is not None and (k + 1) % steps_per_epoch == 0:
            plateau.step(metrics[k // steps_per_epoch])
    return np.array(values), opt, plateau


def test_optimizer_follows_schedule():
    import fusedopt

    sched = OneCycle(0.1, total_steps=50)
    values, opt, _ = sgd_trajectory(fusedopt, sched, 50)
    assert opt.step_count == 50
    assert opt.param_groups[0]["lr"] is sched and "lr_factor" not in opt.param_groups[0]
    expected, p = [], 0.0
    for k in range(50):
        p = p - sched(k)
        expected.append(p)
    assert_rel(values, expected)


def test_optimizer_adam_schedule_equals_manual_rate():
    import fusedopt

    sched = LinearWarmup(CosineAnnealing(1e-2, T_max=30), warmup_steps=5)
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(7) for _ in range(40)]
    a, b = np.ones(7), np.ones(7)
    scheduled, manual = fusedopt.Adam([a], lr=sched), fusedopt.Adam([b], lr=1.0)
    for k, g in enumerate(grads):
        assert scheduled.current_lrs() == [sched(k)]
        manual.param_groups[0]["lr"] = sched(k)
        scheduled.step([g])
        manual.step([g.copy()])
    np.testing.assert_array_equal(a, b)


def test_optimizer_with_warmup_cosine_and_plateau():
    import fusedopt

    sched = LinearWarmup(CosineAnnealing(0.1, T_max=40, eta_min=0.001), warmup_steps=5, start_factor=0.2)
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9]
    values, opt, plateau = sgd_trajectory(fusedopt, sched, 40, dict(factor=0.5, patience=1, min_lr=0.01),
                                          metrics, steps_per_epoch=4)
    fake = FakeOptimizer([sched])
    twin = ReduceLROnPlateau(fake, factor=0.5, patience=1, min_lr=0.01)
    expected, p = [], 0.0
    for k in range(40):
        p = p - fake.step()[0]
        expected.append(p)
        if (k + 1) % 4 == 0:
            twin.step(metrics[k // 4])
    assert_rel(values, expected)
    assert plateau.factors == twin.factors and plateau.factors[0] < 0.5
    assert opt.param_groups[0]["lr"] == fake.param_groups[0]["lr"] == Scaled(sched, twin.factors[0])
    assert "lr_factor" not in opt.param_groups[0] and "lr_factor" not in repr(opt)


@pytest.mark.parametrize("attach_first", [True, False])
def test_optimizer_state_dict_carries_plateau(attach_first):
    import fusedopt

    sched = CosineAnnealing(0.05, T_max=100, eta_min=1e-3)
    metrics = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0, 1.5, 1.6, 1.7, 1.8, 0.5, 0.6]
    kwargs = dict(factor=0.5, patience=1, cooldown=1)
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal(5) for _ in range(len(metrics) * 3)]

    def run(opt, plateau, p, epochs):
        for e in epochs:
            for g in grads[3 * e: 3 * e + 3]:
                opt.step([g.copy()])
            plateau.step(metrics[e])
        return p

    p_straight = np.zeros(5)
    opt = fusedopt.Adam([p_straight], lr=sched)
    run(opt, ReduceLROnPlateau(opt, **kwargs), p_straight, range(len(metrics)))

    p1 = np.zeros(5)
    opt1 = fusedopt.Adam([p1], lr=sched)
    plateau1 = ReduceLROnPlateau(opt1, **kwargs)
    run(opt1, plateau1, p1, range(6))
    saved = opt1.state_dict()
    assert scheduler_states(saved) == [plateau1.state_dict()]
    assert plateau1.factors[0] < 1.0 and "lr_factor" not in saved["param_groups"][0]
    assert saved["param_groups"][0]["lr"] == Scaled(sched, plateau1.factors[0]).config()

    p2 = p1.copy()
    opt2 = fusedopt.Adam([p2], lr=sched)
    if attach_first:
        plateau2 = ReduceLROnPlateau(opt2, mode="max")
        opt2.load_state_dict(saved)
    else:
        opt2.load_state_dict(saved)
        plateau2 = ReduceLROnPlateau(opt2, mode="max")  # the optimizer restores it on attach
    assert plateau2.state_dict() == plateau1.state_dict() and plateau2.factors == plateau1.factors
    assert opt2.param_groups[0]["lr"] == opt1.param_groups[0]["lr"]  # the plateau re-scaled it
    assert opt2.current_lrs() == opt1.current_lrs()
    run(opt2, plateau2, p2, range(6, len(metrics)))
    np.testing.assert_array_equal(p2, p_straight)


@pytest.mark.parametrize("attach_first", [True, False])
def test_optimizer_state_dict_with_numeric_lr_and_plateau(attach_first):
    import fusedopt

    metrics = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0, 1.5, 1.6, 1.7]
    p1 = np.zeros(3)
    opt1 = fusedopt.SGD([p1], lr=0.05, momentum=0.9)
    plateau1 = ReduceLROnPlateau(opt1, factor=0.5, patience=1)
    for metric in metrics[:6]:
        opt1.step([np.ones(3)])
        plateau1.step(metric)
    assert opt1.param_groups[0]["lr"] == 0.025 and plateau1.factors == [0.5]
    saved = opt1.state_dict()
    assert saved["param_groups"][0]["lr"] == 0.025

    opt2 = fusedopt.SGD([p1.copy()], lr=0.05, momentum=0.9)
    if attach_first:
        plateau2 = ReduceLROnPlateau(opt2)
        opt2.load_state_dict(saved)
    else:
        opt2.load_state_dict(saved)
        plateau2 = ReduceLROnPlateau(opt2)
    # the optimizer restores the number; the plateau remembers the rate it started from
    assert opt2.param_groups[0]["lr"] == 0.025 and plateau2.factors == [0.5]
    assert plateau2.state_dict() == plateau1.state_dict()


def test_optimizer_numeric_lr_plateau_writes_what_torch_writes():
    import fusedopt

    torch = pytest.importorskip("torch")
    kwargs = dict(factor=0.3, patience=1, cooldown=1, min_lr=[1e-4, 0.0], threshold=0.01)
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 1.2, 0.5, 0.6, 0.7, 0.8, 0.81, 0.9, 0.3, 0.4, 0.45,
               0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    lrs = [0.01, 0.003]
    params = [np.zeros(2), np.zeros(3)]
    opt = fusedopt.Adam([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])
    ours = ReduceLROnPlateau(opt, **kwargs)
    torch_params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    torch_opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(torch_params, lrs)])
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **kwargs)
    for metric in metrics:
        opt.step([np.ones(2), np.ones(3)])
        ours.step(metric)
        theirs.step(metric)
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in torch_opt.param_groups]
        assert opt.current_lrs() == [g["lr"] for g in torch_opt.param_groups]
        assert all("lr_factor" not in g for g in opt.param_groups)
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[1]["lr"] < 0.003 * 0.3 ** 2
    assert "lr_factor" not in repr(opt)


def test_pytorch_style_lr_edits_on_a_schedule_valued_group():
    import fusedopt

    sched = CosineAnnealing(0.1, T_max=20)
    p = np.zeros(2)
    opt = fusedopt.SGD([p], lr=sched)
    opt.step([np.ones(2)])
    assert opt.param_groups[0]["lr"] is sched  # "lr" holds the schedule itself
    assert opt.current_lrs() == [group_rate(opt.param_groups[0], opt.step_count)] == [sched(1)]
    for group in opt.param_groups:
        group["lr"] *= 0.1  # as a PyTorch user would
    assert opt.param_groups[0]["lr"] == Scaled(sched, 0.1)
    assert opt.current_lrs() == [sched(1) * 0.1]
    before = p.copy()
    opt.step([np.ones(2)])
    np.testing.assert_array_equal(p, before - sched(1) * 0.1)
    assert "lr_factor" not in repr(opt) and "Scaled(" in repr(opt)

    # a plateau on top multiplies the factor further, collapsing into one Scaled
    plateau = ReduceLROnPlateau(opt, factor=0.5, patience=0)
    assert plateau.factors == [0.1]
    plateau.step(1.0)
    plateau.step(1.0)
    assert opt.param_groups[0]["lr"] == Scaled(sched, 0.05) and plateau.factors == [0.05]
    assert plateau.effective_lrs() == opt.current_lrs() == [sched(2) * 0.05]


def test_plateau_on_fusedopt_adam_keeps_repr_and_groups_clean():
    import fusedopt

    for lr in (0.01, CosineAnnealing(0.01, T_max=50)):
        opt = fusedopt.Adam([np.zeros(3)], lr=lr)
        plateau = ReduceLROnPlateau(opt, factor=0.5, patience=0)
        assert scheduler_states(opt.state_dict()) == [plateau.state_dict()]  # attached by the hook
        for metric in (1.0, 2.0, 3.0):
            opt.step([np.ones(3)])
            plateau.step(metric)
        assert plateau.factors == [0.25]
        assert "lr_factor" not in repr(opt)
        assert all("lr_factor" not in g for g in opt.param_groups)
        assert all("lr_factor" not in g for g in opt.state_dict()["param_groups"])
        assert isinstance(opt.param_groups[0]["lr"], float if lr == 0.01 else Scaled)


def test_optimizer_has_a_public_scheduler_hook():
    import fusedopt

    opt = fusedopt.SGD([np.zeros(2)], lr=0.1)
    assert callable(opt.attach_scheduler) and not hasattr(opt, "_attach_plateau")
    assert opt.attach_scheduler.__doc__ and "state_dict" in opt.attach_scheduler.__doc__

    class Counter:  # any object with state_dict / load_state_dict
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    counter = Counter()
    opt.attach_scheduler(counter)
    counter.n = 7
    saved = opt.state_dict()
    assert scheduler_states(saved) == [{"n": 7}]
    other = fusedopt.SGD([np.zeros(2)], lr=0.1)
    other.load_state_dict(saved)
    restored = Counter()
    other.attach_scheduler(restored)  # a state loaded before attaching is handed over
    assert restored.n == 7


def test_plateau_state_from_before_factors_were_saved_still_loads():
    fake = FakeOptimizer([CosineAnnealing(0.1, T_max=10), 0.2])
    plateau = ReduceLROnPlateau(fake)
    state = plateau.state_dict()
    del state["factors"], state["initial_lrs"]
    state["num_bad_epochs"] = 3
    plateau.load_state_dict(state)
    assert plateau.num_bad_epochs == 3 and plateau.factors == [1.0, 1.0]
    bad = plateau.state_dict()
    bad["factors"] = [0.5]
    with pytest.raises(ValueError, match="param groups"):
        plateau.load_state_dict(bad)
    bad["factors"] = [-0.5, None]
    with pytest.raises(ValueError, match="factor"):
        plateau.load_state_dict(bad)
    assert plateau.num_bad_epochs == 3 and fake.param_groups[0]["lr"] == CosineAnnealing(0.1, T_max=10)


def test_plateau_wraps_a_plain_callable_lr():
    fake = FakeOptimizer([lambda k: 0.1])
    plateau = ReduceLROnPlateau(fake, factor=0.5, patience=0)
    plateau.step(1.0)
    plateau.step(1.0)
    lr = fake.param_groups[0]["lr"]
    assert isinstance(lr, Scaled) and lr.factor == 0.5 and isinstance(lr.schedule, Lambda)
    assert fake.rates() == [0.05] and plateau.factors == [0.5]


# ---------------------------------------------------------------------------
# The package layout
# ---------------------------------------------------------------------------


def test_modules_are_split_and_names_reexported():
    import importlib

    import fusedopt.schedules as schedules

    plateau_module = importlib.import_module("fusedopt.schedules.plateau")
    closed_form = importlib.import_module("fusedopt.schedules.closed_form")
    plot_module = importlib.import_module("fusedopt.schedules.plot")
    assert plateau_module.ReduceLROnPlateau is schedules.ReduceLROnPlateau is ReduceLROnPlateau
    assert closed_form.Scaled is schedules.Scaled is Scaled
    assert closed_form.CosineAnnealing is schedules.CosineAnnealing
    assert plot_module.plot is schedules.plot is plot
    for name in ("Schedule", "Constant", "StepDecay", "MultiStepDecay", "ExponentialDecay",
                 "CosineAnnealing", "CosineAnnealingWarmRestarts", "Polynomial", "LinearWarmup",
                 "OneCycle", "Lambda", "Sequential", "PerEpoch", "ReduceLROnPlateau",
                 "from_config", "plot", "Scaled", "group_rate"):
        assert name in schedules.__all__ and hasattr(schedules, name)
    assert schedules.__doc__ and "Per-epoch schedules" in schedules.__doc__


def test_importing_schedules_does_not_import_matplotlib():
    import os
    import subprocess

    code = (
        "import sys, numpy as np, fusedopt, fusedopt.schedules as s\n"
        "opt = fusedopt.SGD([np.zeros(2)], lr=s.CosineAnnealing(0.1, T_max=10))\n"
        "p = s.ReduceLROnPlateau(opt, patience=0)\n"
        "p.step(1.0); p.step(2.0)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------
# The scalar memo behind the optimizer's one-call-per-step use
# ---------------------------------------------------------------------------

def test_scalar_memo_gives_the_vectorised_values_in_any_order():
    from fusedopt.schedules import CosineAnnealingWarmRestarts, LinearWarmup, OneCycle

    for sched in (LinearWarmup(CosineAnnealingWarmRestarts(0.1, T_0=50, T_mult=2), 30),
                  OneCycle(0.5, total_steps=1000)):
        steps = np.arange(1200)
        expected = sched(steps)
        forward = [sched(int(k)) for k in steps]
        backward = [sched(int(k)) for k in steps[::-1]][::-1]
        assert forward == expected.tolist() == backward


def test_user_functions_are_called_only_for_the_steps_asked():
    from fusedopt.schedules import Lambda, LinearWarmup

    seen = []

    def factor(t):
        seen.append(t)
        return 1.0 / (1 + t)

    sched = LinearWarmup(Lambda(0.1, factor), warmup_steps=5)
    values = [sched(k) for k in range(20)]
    assert values[10] == 0.1 / (1 + 5)
    assert max(seen) <= 19 - 5  # no look-ahead into the user's function
