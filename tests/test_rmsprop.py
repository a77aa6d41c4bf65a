"""RMSprop: against its NumPy twin, torch.optim.RMSprop, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety, bad
hyperparameters; and the textbook formula, centered with momentum."""
import numpy as np
import pytest

import fusedopt
import optimizer_cases as oc
from optimizer_cases import DTYPE_IDS, DTYPES, Case


def draw(rng, flags):
    kwargs = dict(lr=oc.log_uniform(rng, -4, -2), alpha=float(rng.uniform(0.9, 0.999)),
                  eps=oc.log_uniform(rng, -8, -5))
    if flags["weight_decay"]:
        kwargs["weight_decay"] = float(rng.uniform(0.0, 0.1))
    if flags["momentum"]:
        kwargs["momentum"] = float(rng.uniform(0.5, 0.95))
    kwargs["centered"] = flags["centered"]
    kwargs["maximize"] = flags["maximize"]
    return kwargs


def needed(kwargs):
    return ["square_avg"] + ["momentum_buffer"] * (kwargs["momentum"] > 0) + ["grad_avg"] * kwargs["centered"]


CASE = Case(
    name="rmsprop", class_name="RMSprop", torch_name="RMSprop",
    defaults=dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                  maximize=False),
    slots={"square_avg": False, "momentum_buffer": True, "grad_avg": True},
    flags=("weight_decay", "maximize", "momentum", "centered"), draw=draw, counters=(), needed=needed,
)
COMBINATIONS = [pytest.param(c, id=CASE.combination_id(c)) for c in CASE.combinations()]


def test_signature():
    oc.check_signature(CASE)


def test_signature_matches_torch():
    oc.check_signature_matches_torch(CASE)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("combination", COMBINATIONS)
def test_matches_the_twin(combination, dtype):
    oc.check_twin_trajectory(CASE, combination, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("combination", COMBINATIONS)
def test_matches_torch(combination, dtype):
    oc.check_torch(CASE, combination, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bitwise_identical_for_any_thread_count_and_simd_path(dtype):
    oc.check_threads_and_simd(CASE, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_functional_form_equals_the_twin_bitwise(dtype):
    oc.check_functional(CASE, dtype)


@pytest.mark.parametrize("config,combination,threads,simd", oc.low_precision_parameters(CASE))
def test_low_precision_equals_the_twin_bitwise(config, combination, threads, simd):
    oc.check_low_precision(CASE, config, combination, threads, simd)


@pytest.mark.parametrize("config", list(oc.STATE_DICT_CONFIGS))
def test_state_dict_resumes_bitwise(config):
    oc.check_state_dict_round_trip(CASE, config)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nonfinite_gradients_skip_the_step(dtype):
    oc.check_skip_nonfinite(CASE, dtype)


def test_max_grad_norm_clips_as_the_twin():
    oc.check_max_grad_norm(CASE)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_grad_scale_divides_the_gradients(dtype):
    oc.check_grad_scale(CASE, dtype)


@pytest.mark.parametrize("kwargs,name,via", oc.bad_parameters(CASE))
def test_bad_hyperparameters_are_rejected_naming_them(kwargs, name, via):
    oc.check_bad_hyperparameter(CASE, kwargs, name, via)




# -- RMSprop's own ---------------------------------------------------------------------

@pytest.mark.parametrize("config,combination,threads,simd", oc.low_precision_parameters(
    CASE, [("maximize",), ("centered",), ("momentum", "weight_decay")]))
def test_low_precision_with_fewer_slots(config, combination, threads, simd):
    """Without momentum or centering their slots are not allocated nor read."""
    oc.check_low_precision(CASE, config, combination, threads, simd)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_textbook_formula(momentum, centered):
    """torch's documented algorithm, written here in float64."""
    rng = np.random.default_rng(2)
    lr, alpha, eps, wd = 0.01, 0.95, 1e-8, 0.01
    p0 = rng.standard_normal(40)
    grads = [rng.standard_normal(40) for _ in range(8)]
    p = p0.copy()
    opt = fusedopt.RMSprop([p], lr=lr, alpha=alpha, eps=eps, weight_decay=wd, momentum=momentum,
                           centered=centered)
    expected, v, g_avg, buf = p0.copy(), np.zeros(40), np.zeros(40), np.zeros(40)
    for g in grads:
        opt.step([g])
        g = g + wd * expected
        v = alpha * v + (1 - alpha) * g * g
        v_tilde = v
        if centered:
            g_avg = alpha * g_avg + (1 - alpha) * g
            v_tilde = v - g_avg * g_avg
        if momentum > 0:
            buf = momentum * buf + g / (np.sqrt(v_tilde) + eps)
            expected = expected - lr * buf
        else:
            expected = expected - lr * g / (np.sqrt(v_tilde) + eps)
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-14)
    state = opt.state[0]
    np.testing.assert_allclose(state["square_avg"], v, rtol=1e-13)
    assert ("grad_avg" in state) == centered and ("momentum_buffer" in state) == (momentum > 0)
    if centered:
        np.testing.assert_allclose(state["grad_avg"], g_avg, rtol=1e-12, atol=1e-15)
    if momentum:
        np.testing.assert_allclose(state["momentum_buffer"], buf, rtol=1e-12)

