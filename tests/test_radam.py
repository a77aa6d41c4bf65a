"""RAdam: against its NumPy twin, torch.optim.RAdam, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety, bad
hyperparameters; and the textbook formula on both sides of rho_t = 5."""
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
    kwargs["decoupled_weight_decay"] = flags["decoupled_weight_decay"]
    kwargs["maximize"] = flags["maximize"]
    return kwargs


CASE = Case(
    name="radam", class_name="RAdam", torch_name="RAdam",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                  maximize=False),
    slots={"exp_avg": True, "exp_avg_sq": False},
    flags=("weight_decay", "maximize", "decoupled_weight_decay"), draw=draw,
)

class TestStandardChecks(oc.StandardChecks):
    case = CASE




# -- RAdam's own -------------------------------------------------------------------------

@pytest.mark.parametrize("beta2", [0.9, 0.999])
@pytest.mark.parametrize("decoupled", [False, True])
def test_textbook_formula_below_and_above_rho_5(decoupled, beta2):
    """Liu et al. (2020) as torch writes it, in float64: while the length of the
    approximated SMA rho_t is <= 5 the step is the bias-corrected momentum
    (lr * m / bc1); beyond, it is rectified and adaptive.  Both occur here."""
    rng = np.random.default_rng(6)
    lr, beta1, eps, wd = 0.01, 0.8, 1e-8, 0.05
    p0 = rng.standard_normal(30)
    p = p0.copy()
    opt = fusedopt.RAdam([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd,
                         decoupled_weight_decay=decoupled)
    expected, m, v = p0.copy(), np.zeros(30), np.zeros(30)
    rho_inf = 2 / (1 - beta2) - 1
    regimes = set()
    for t in range(1, 13):
        g = rng.standard_normal(30)
        opt.step([g])
        if decoupled:
            expected = expected * (1 - lr * wd)
        else:
            g = g + wd * expected
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        rho_t = rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)
        if rho_t > 5:
            rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            expected = expected - lr * m_hat * rect * np.sqrt(1 - beta2 ** t) / (np.sqrt(v) + eps)
        else:
            expected = expected - lr * m_hat
        regimes.add(rho_t > 5)
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-14, err_msg=f"step {t}, rho_t {rho_t}")
    assert regimes == {False, True}
