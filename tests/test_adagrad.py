"""Adagrad: against its NumPy twin, torch.optim.Adagrad, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety, bad
hyperparameters; and the textbook formula with initial_accumulator_value and lr_decay."""
import numpy as np
import pytest

import fusedopt
import optimizer_cases as oc
from optimizer_cases import Case


def draw(rng, flags):
    kwargs = dict(lr=oc.log_uniform(rng, -3, -1), eps=oc.log_uniform(rng, -10, -6))
    if flags["weight_decay"]:
        kwargs["weight_decay"] = float(rng.uniform(0.0, 0.1))
    if flags["lr_decay"]:
        kwargs["lr_decay"] = float(rng.uniform(0.0, 0.05))
    if flags["initial_accumulator_value"]:
        kwargs["initial_accumulator_value"] = float(rng.uniform(0.01, 1.0))
    kwargs["maximize"] = flags["maximize"]
    return kwargs


CASE = Case(
    name="adagrad", class_name="Adagrad", torch_name="Adagrad",
    defaults=dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                  maximize=False),
    slots={"sum": False}, twin_args={"sum": "state_sum"},
    flags=("weight_decay", "maximize", "lr_decay", "initial_accumulator_value"), draw=draw,
    not_twin=("initial_accumulator_value",), constructor_only=("initial_accumulator_value",),
    initial=lambda kw: {"sum": kw["initial_accumulator_value"]},
)

class TestStandardChecks(oc.StandardChecks):
    case = CASE


# -- Adagrad's own ---------------------------------------------------------------------

@pytest.mark.parametrize("maximize", [False, True])
def test_textbook_formula_with_initial_accumulator_and_lr_decay(maximize):
    """torch's documented algorithm, written here in float64: the sum starts at
    initial_accumulator_value; the rate decays as lr / (1 + (t-1) lr_decay)."""
    rng = np.random.default_rng(1)
    lr, lr_decay, wd, init, eps = 0.05, 0.1, 0.02, 0.7, 1e-10
    p0 = rng.standard_normal(40)
    grads = [rng.standard_normal(40) for _ in range(6)]
    p = p0.copy()
    opt = fusedopt.Adagrad([p], lr=lr, lr_decay=lr_decay, weight_decay=wd, initial_accumulator_value=init,
                           eps=eps, maximize=maximize)
    expected, state_sum = p0.copy(), np.full(40, init)
    for t, g in enumerate(grads, start=1):
        opt.step([g])
        g = (-g if maximize else g) + wd * expected
        state_sum = state_sum + g * g
        expected = expected - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(state_sum) + eps)
        if t == 1:
            np.testing.assert_allclose(opt.state[0]["sum"], state_sum, rtol=1e-15)
        np.testing.assert_allclose(p, expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(opt.state[0]["sum"], state_sum, rtol=1e-13)
    assert opt.state[0]["step"] == len(grads)


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "8bit"])
def test_the_sum_starts_at_initial_accumulator_value(state_dtype):
    """With zero gradients the sum stays the initial value, in every storage
    (8-bit: code 1.0 times absmax = the value, exactly), and parameters do not move."""
    p = np.ones(5000, np.float32)
    opt = fusedopt.Adagrad([p], initial_accumulator_value=0.3, state_dtype=state_dtype)
    opt.step([np.zeros(5000, np.float32)])
    state = opt.state[0]
    if state_dtype == "8bit":
        value = fusedopt.slow.quantization.dequantize(state["sum"], state["sum_absmax"], False)
    else:
        value = state["sum"].astype(np.float32)
    expected = np.float32(0.3) if state_dtype != "bfloat16" else np.float32(np.float32(0.3).astype(oc.BF16))
    assert np.all(value == expected)
    assert np.all(p == 1.0)


def test_an_initial_accumulator_value_the_state_cannot_hold_is_refused():
    p = np.ones(3, dtype=np.float32)
    for options in (dict(), dict(state_dtype="bfloat16")):
        with pytest.raises(ValueError, match="initial_accumulator_value"):
            fusedopt.Adagrad([p], initial_accumulator_value=1e39, **options)
    assert np.array_equal(p, np.ones(3, dtype=np.float32))
    fusedopt.Adagrad([np.ones(3)], initial_accumulator_value=1e39)   # float64 state holds it
