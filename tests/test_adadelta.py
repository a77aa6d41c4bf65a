"""Adadelta: against its NumPy twin, torch.optim.Adadelta, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety and bad
hyperparameters."""

import optimizer_cases as oc
from optimizer_cases import Case


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

class TestStandardChecks(oc.StandardChecks):
    case = CASE


