"""Adadelta: against its NumPy twin, torch.optim.Adadelta, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety and bad
hyperparameters."""
import pytest

import optimizer_cases as oc
from optimizer_cases import DTYPE_IDS, DTYPES, Case


def draw(rng, flags):
    kwargs = dict(lr=float(rng.uniform(0.1, 1.0)), rho=float(rng.uniform(0.8, 0.99)),
                  eps=oc.log_uniform(rng, -7, -5))
    if flags["weight_decay"]:
        kwargs["weight_decay"] = float(rng.uniform(0.0, 0.1))
    kwargs["maximize"] = flags["maximize"]
    return kwargs


CASE = Case(
    name="adadelta", class_name="Adadelta", torch_name="Adadelta",
    defaults=dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    slots={"square_avg": False, "acc_delta": False}, flags=("weight_decay", "maximize"), draw=draw,
    counters=(), bad=(({"rho": 1.5}, "rho"),),
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


