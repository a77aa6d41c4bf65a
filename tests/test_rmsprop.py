"""RMSprop: against its NumPy twin, torch.optim.RMSprop, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety, bad
hyperparameters; and the textbook formula, centered with momentum."""
import numpy as np
import pytest

import fusedopt
import optimizer_cases as oc
from optimizer_cases import Case


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

class TestStandardChecks(oc.StandardChecks):
    case = CASE




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

