"""Lion: against its NumPy twin, itself across thread counts and SIMD paths,
low-precision storage, state_dict, gradient safety, bad hyperparameters; and the
update of Chen et al. (2023) written here (torch has no Lion)."""
import numpy as np
import pytest

import fusedopt
import optimizer_cases as oc
from optimizer_cases import Case


def draw(rng, flags):
    kwargs = dict(lr=oc.log_uniform(rng, -4, -2.5),
                  betas=(float(rng.uniform(0.8, 0.95)), float(rng.uniform(0.95, 0.999))))
    if flags["weight_decay"]:
        kwargs["weight_decay"] = float(rng.uniform(0.0, 1.0))
    kwargs["maximize"] = flags["maximize"]
    return kwargs


CASE = Case(
    name="lion", class_name="Lion",
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    slots={"exp_avg": True}, flags=("weight_decay", "maximize"), draw=draw, counters=(), sign_update=True,
)

class TestStandardChecks(oc.StandardChecks):
    case = CASE
    test_signature_matches_torch = test_matches_torch = None   # torch has no Lion




# -- Lion's own --------------------------------------------------------------------------

@pytest.mark.parametrize("maximize", [False, True])
def test_textbook_formula(maximize):
    """Chen et al. (2023), Algorithm 2, in float64: c = b1 m + (1-b1) g;
    p -= lr (sign(c) + wd p); m = b2 m + (1-b2) g."""
    rng = np.random.default_rng(7)
    lr, beta1, beta2, wd = 3e-3, 0.9, 0.99, 0.5
    p0 = rng.standard_normal(40)
    p = p0.copy()
    opt = fusedopt.Lion([p], lr=lr, betas=(beta1, beta2), weight_decay=wd, maximize=maximize)
    expected, m = p0.copy(), np.zeros(40)
    for _ in range(6):
        g = rng.standard_normal(40)
        opt.step([g])
        g = -g if maximize else g
        c = beta1 * m + (1 - beta1) * g
        expected = expected - lr * (np.sign(c) + wd * expected)
        m = beta2 * m + (1 - beta2) * g
        np.testing.assert_allclose(p, expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(opt.state[0]["exp_avg"], m, rtol=1e-13, atol=1e-16)


def test_a_zero_direction_does_not_move_the_parameter():
    """sign(0) = 0: a zero gradient on a zero momentum leaves p (without decay) as it is."""
    p = np.linspace(-1, 1, 9)
    before = p.copy()
    fusedopt.Lion([p], lr=0.1).step([np.zeros(9)])
    np.testing.assert_array_equal(p, before)
