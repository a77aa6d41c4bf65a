"""NAdam: against its NumPy twin, torch.optim.NAdam, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety, bad
hyperparameters; and its per-parameter counter mu_product."""
import numpy as np
import pytest

import fusedopt
import optimizer_cases as oc
from optimizer_cases import Case


def draw(rng, flags):
    kwargs = dict(lr=oc.log_uniform(rng, -3.5, -2),
                  betas=(float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999))),
                  eps=oc.log_uniform(rng, -10, -6))
    if flags["weight_decay"]:
        kwargs["weight_decay"] = float(rng.uniform(0.0, 0.1))
    kwargs["momentum_decay"] = oc.log_uniform(rng, -3.5, -1.5)
    kwargs["decoupled_weight_decay"] = flags["decoupled_weight_decay"]
    kwargs["maximize"] = flags["maximize"]
    return kwargs


CASE = Case(
    name="nadam", class_name="NAdam", torch_name="NAdam",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False),
    slots={"exp_avg": True, "exp_avg_sq": False},
    flags=("weight_decay", "maximize", "decoupled_weight_decay"), draw=draw, counters=("step", "mu_product"),
)

class TestStandardChecks(oc.StandardChecks):
    case = CASE




# -- NAdam's own -------------------------------------------------------------------------

def mu(t, beta1, momentum_decay):
    """The momentum schedule of Dozat (2016), as torch writes it."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def test_mu_product_is_kept_per_parameter_and_saved():
    """mu_product is each array's own product of the schedule (a float, in the
    state and the state_dict); an array added later starts its own at 1.0; a
    loaded mu_product is the one the next step uses."""
    rng = np.random.default_rng(4)
    beta1, psi = 0.85, 0.01
    a, b = rng.standard_normal(20), rng.standard_normal(7)
    opt = fusedopt.NAdam([a], betas=(beta1, 0.99), momentum_decay=psi)
    for _ in range(3):
        opt.step([rng.standard_normal(20)])
    opt.add_param_group({"params": [b]})
    for _ in range(2):
        opt.step([rng.standard_normal(20), rng.standard_normal(7)])
    sd = opt.state_dict()
    expected_a = np.prod([mu(t, beta1, psi) for t in range(1, 6)])
    expected_b = np.prod([mu(t, beta1, psi) for t in range(1, 3)])   # its group takes the constructor's
    for i, expected, steps in ((0, expected_a, 5), (1, expected_b, 2)):
        for where in (opt.state[i], sd["state"][i]):
            assert isinstance(where["mu_product"], float)
            assert where["mu_product"] == pytest.approx(expected, rel=1e-15)
            assert where["step"] == steps

    # the loaded value is used: a state_dict with another mu_product steps as the twin with it
    sd["state"][0]["mu_product"] = 0.5
    c = a.copy()
    other = fusedopt.NAdam([c], betas=(beta1, 0.99), momentum_decay=psi)
    other.add_param_group({"params": [b.copy()]})
    other.load_state_dict(sd)
    twin_p, m, v = a.copy(), sd["state"][0]["exp_avg"].copy(), sd["state"][0]["exp_avg_sq"].copy()
    g = rng.standard_normal(20)
    other.step([g, np.zeros(7)])
    new_mu = CASE.twin(twin_p, g, m, v, step=6, mu_product=0.5, lr=2e-3, beta1=beta1, beta2=0.99, eps=1e-8,
                       momentum_decay=psi)
    np.testing.assert_allclose(c, twin_p, rtol=1e-14, atol=1e-16)
    assert other.state[0]["mu_product"] == pytest.approx(new_mu, rel=1e-15)
    assert new_mu == pytest.approx(0.5 * mu(6, beta1, psi), rel=1e-15)


@pytest.mark.parametrize("decoupled", [False, True])
def test_textbook_formula(decoupled):
    """torch's documented algorithm, written here in float64."""
    rng = np.random.default_rng(5)
    lr, beta1, beta2, eps, wd, psi = 0.01, 0.8, 0.99, 1e-8, 0.05, 0.02
    p0 = rng.standard_normal(30)
    p = p0.copy()
    opt = fusedopt.NAdam([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd, momentum_decay=psi,
                         decoupled_weight_decay=decoupled)
    expected, m, v, mu_product = p0.copy(), np.zeros(30), np.zeros(30), 1.0
    for t in range(1, 9):
        g = rng.standard_normal(30)
        opt.step([g])
        if decoupled:
            expected = expected * (1 - lr * wd)
        else:
            g = g + wd * expected
        mu_t, mu_next = mu(t, beta1, psi), mu(t + 1, beta1, psi)
        mu_product *= mu_t
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        denom = np.sqrt(v / (1 - beta2 ** t)) + eps
        expected = (expected - lr * (1 - mu_t) / (1 - mu_product) * g / denom
                    - lr * mu_next / (1 - mu_product * mu_next) * m / denom)
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-14)
