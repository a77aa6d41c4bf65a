"""Adamax: against its NumPy twin, torch.optim.Adamax, itself across thread
counts and SIMD paths, low-precision storage, state_dict, gradient safety and bad
hyperparameters."""

import optimizer_cases as oc
from optimizer_cases import Case


def draw(rng, flags):
    kwargs = dict(lr=oc.log_uniform(rng, -3.5, -2),
                  betas=(float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999))),
                  eps=oc.log_uniform(rng, -10, -6))
    if flags["weight_decay"]:
        kwargs["weight_decay"] = float(rng.uniform(0.0, 0.1))
    kwargs["maximize"] = flags["maximize"]
    return kwargs


CASE = Case(
    name="adamax", class_name="Adamax", torch_name="Adamax",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False),
    slots={"exp_avg": True, "exp_inf": False}, flags=("weight_decay", "maximize"), draw=draw,
)

class TestStandardChecks(oc.StandardChecks):
    case = CASE


