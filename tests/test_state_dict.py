"""state_dict round trip and bit-exact resume."""
import pickle

import numpy as np
import pytest

import fusedopt

CASES = [
    (fusedopt.Adam, {"lr": 0.01}),
    (fusedopt.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    (fusedopt.AdamW, {"lr": 0.003, "betas": (0.8, 0.99)}),
    (fusedopt.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.2}),
    (fusedopt.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (fusedopt.SGD, {"lr": 0.05, "momentum": 0.8, "lr_in_velocity": True}),
    (fusedopt.SGD, {"lr": 0.05}),
]


def model(dtype_b=np.float64):
    rng = np.random.default_rng(1)
    return [rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal(5).astype(dtype_b)]


def gradients(n):
    rng = np.random.default_rng(2)
    return [[rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal(5)] for _ in range(n)]


def is_plain(obj):
    """Only dicts, lists, tuples, str, numbers, bools, None and NumPy arrays."""
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and is_plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(is_plain(v) for v in obj)
    return obj is None or isinstance(obj, (str, int, float, bool, np.ndarray, np.number))


@pytest.mark.parametrize("cls, kw", CASES)
def test_resume_is_bitwise_identical(cls, kw):
    grads = gradients(40)
    straight = model()
    opt = cls([{"params": [straight[0]]}, {"params": [straight[1]], "lr": 0.02}], **kw)
    for g in grads:
        opt.step(g)

    first = model()
    opt1 = cls([{"params": [first[0]]}, {"params": [first[1]], "lr": 0.02}], **kw)
    for g in grads[:17]:
        opt1.step(g)
    saved = pickle.loads(pickle.dumps(opt1.state_dict()))  # as if written to disk
    assert is_plain(saved)
    resumed = [p.copy() for p in first]
    opt2 = cls([{"params": [resumed[0]]}, {"params": [resumed[1]], "lr": 0.02}], **kw)
    opt2.load_state_dict(saved)
    assert opt2.step_count == 17
    for g in grads[17:]:
        opt2.step(g)
    for a, b in zip(straight, resumed):
        assert a.tobytes() == b.tobytes()


def test_state_dict_holds_copies():
    p = np.ones(3)
    opt = fusedopt.Adam([p], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][:] = 123.0
    assert not (opt.state[0]["exp_avg"] == 123.0).any()
    assert sd["state"][0]["step"] == 1 and sd["step_count"] == 1
    assert sd["param_groups"][0]["params"] == [0]


def test_load_rejects_mismatch_and_changes_nothing():
    p = np.ones(3)
    opt = fusedopt.Adam([p], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    other = fusedopt.Adam([np.ones(4)], lr=0.1)
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"state\[0\]"):
        other.load_state_dict(sd)
    after = other.state_dict()
    assert after["step_count"] == before["step_count"] == 0
    assert (after["state"][0]["exp_avg"] == 0).all()
    with pytest.raises(ValueError, match="SGD"):
        fusedopt.Adam([np.ones(3)]).load_state_dict(fusedopt.SGD([np.ones(3)]).state_dict())
    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = -1.0
    fresh = fusedopt.Adam([np.ones(3)], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        fresh.load_state_dict(bad)
    assert fresh.param_groups[0]["lr"] == 0.1 and fresh.step_count == 0


def test_loaded_hyperparameters_apply():
    opt = fusedopt.SGD([np.ones(2)], lr=0.1)
    opt.param_groups[0]["lr"] = 0.7
    other = fusedopt.SGD([np.ones(2)], lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == 0.7


def test_optimizer_pickles_with_its_parameters():
    p = np.ones(3)
    opt = fusedopt.Adam([p], lr=0.1)
    opt.step([np.ones(3)])
    clone = pickle.loads(pickle.dumps(opt))
    q = clone.param_groups[0]["params"][0]
    clone.step([np.ones(3)])
    opt.step([np.ones(3)])
    assert q.tobytes() == p.tobytes() and clone.step_count == 2
