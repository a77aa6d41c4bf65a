"""Bad input raises a clear error naming the argument, before any buffer is touched."""
import numpy as np
import pytest

import fusedopt


def snapshot(opt):
    """Copies of every parameter and state buffer, plus the step counters."""
    params = [p.copy() for g in opt.param_groups for p in g["params"]]
    state = {i: {k: np.copy(v) for k, v in s.items()} for i, s in opt.state.items()}
    return params, state, opt.step_count


def assert_unchanged(opt, before):
    params, state, step_count = before
    now = [p for g in opt.param_groups for p in g["params"]]
    for a, b in zip(now, params):
        assert a.tobytes() == b.tobytes()
    for i, buffers in state.items():
        for k, v in buffers.items():
            assert np.asarray(opt.state[i][k]).tobytes() == v.tobytes()
    assert opt.step_count == step_count


def warmed_up(cls=fusedopt.Adam, **kw):
    """An optimizer over a float32 and a float64 parameter (two groups) after two steps."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(6)
    opt = cls([{"params": [a]}, {"params": [b]}], lr=0.01, **kw)
    for _ in range(2):
        opt.step([rng.standard_normal(a.shape).astype(np.float32), rng.standard_normal(6)])
    return opt, a, b


def good_grads(a, b):
    return [np.ones_like(a), np.ones_like(b)]


# -- bad gradients at step time --------------------------------------------

BAD_GRADS = {
    "too_few": (lambda a, b: [np.ones_like(a)], ValueError, "grads has 1 arrays"),
    "too_many": (lambda a, b: good_grads(a, b) + [np.ones(1)], ValueError, "grads has 3 arrays"),
    "not_array": (lambda a, b: [np.ones_like(a), [1.0] * 6], TypeError, r"grads\[1\]"),
    "dtype_mismatch": (lambda a, b: [np.ones_like(a), np.ones(6, np.float32)], TypeError, r"grads\[1\]"),
    "int_grad": (lambda a, b: [np.ones(a.shape, np.int32), np.ones(6)], TypeError, r"grads\[0\]"),
    "float16_grad_for_float64": (lambda a, b: [np.ones_like(a), np.ones(6, np.float16)], TypeError, r"grads\[1\]"),
    "shape_mismatch": (lambda a, b: [np.ones((5, 4), np.float32), np.ones(6)], ValueError, r"grads\[0\]"),
    "non_contiguous": (lambda a, b: [np.ones((4, 10), np.float32)[:, ::2], np.ones(6)], ValueError,
                       r"grads\[0\].*contiguous"),
    "fortran_order": (lambda a, b: [np.asfortranarray(np.ones((4, 5), np.float32)), np.ones(6)],
                      ValueError, r"grads\[0\].*contiguous"),
    "aliases_param": (lambda a, b: [np.ones_like(a), b], ValueError, r"grads\[1\] shares memory with params\[1\]"),
    "aliases_other_param": (lambda a, b: [a, np.ones(6)], ValueError, r"grads\[0\] shares memory with params\[0\]"),
    "byteswapped": (lambda a, b: [np.ones_like(a), np.ones(6, dtype=">f8")], TypeError, r"grads\[1\]"),
    "single_array": (lambda a, b: np.ones(6), TypeError, "sequence"),
}


@pytest.mark.parametrize("case", list(BAD_GRADS))
@pytest.mark.parametrize("cls", [fusedopt.Adam, fusedopt.SGD])
def test_bad_grads_raise_and_change_nothing(case, cls):
    make, error, message = BAD_GRADS[case]
    kw = {"momentum": 0.9} if cls is fusedopt.SGD else {"amsgrad": True}
    opt, a, b = warmed_up(cls, **kw)
    before = snapshot(opt)
    with pytest.raises(error, match=message):
        opt.step(make(a, b))
    assert_unchanged(opt, before)
    opt.step(good_grads(a, b))  # still usable
    assert opt.step_count == 3


def test_grad_aliasing_optimizer_state_is_rejected():
    opt, a, b = warmed_up()
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with exp_avg_sq\[1\]"):
        opt.step([np.ones_like(a), opt.state[1]["exp_avg_sq"]])
    assert_unchanged(opt, before)


def test_grad_overlapping_part_of_a_param_is_rejected():
    memory = np.zeros(200)
    p = memory[:100]
    opt = fusedopt.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[0\]"):
        opt.step([memory[50:150]])
    assert (memory == 0).all()


def test_read_only_param_at_step_time():
    opt, a, b = warmed_up()
    before = snapshot(opt)
    b.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] must be writeable"):
        opt.step(good_grads(a, b))
    b.flags.writeable = True
    assert_unchanged(opt, before)


# -- bad hyperparameters, at construction and at step time ---------------------

BAD_HYPERS = [
    (fusedopt.Adam, {"lr": -1.0}, "lr"),
    (fusedopt.Adam, {"lr": float("nan")}, "lr"),
    (fusedopt.Adam, {"lr": float("inf")}, "lr"),
    (fusedopt.Adam, {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    (fusedopt.Adam, {"betas": (0.9, -0.1)}, r"betas\[1\]"),
    (fusedopt.Adam, {"betas": (0.9, float("nan"))}, r"betas\[1\]"),
    (fusedopt.Adam, {"eps": 0.0}, "eps"),
    (fusedopt.Adam, {"eps": float("nan")}, "eps"),
    (fusedopt.AdamW, {"weight_decay": -0.1}, "weight_decay"),
    (fusedopt.Adam, {"weight_decay": float("nan")}, "weight_decay"),
    (fusedopt.SGD, {"lr": -0.1}, "lr"),
    (fusedopt.SGD, {"momentum": -0.5}, "momentum"),
    (fusedopt.SGD, {"momentum": float("nan")}, "momentum"),
    (fusedopt.SGD, {"dampening": 1.5}, "dampening"),
    (fusedopt.SGD, {"weight_decay": -1.0}, "weight_decay"),
    (fusedopt.SGD, {"nesterov": True}, "nesterov"),
    (fusedopt.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov"),
]


@pytest.mark.parametrize("cls, kw, name", BAD_HYPERS)
def test_bad_hyperparameter_at_construction(cls, kw, name):
    with pytest.raises(ValueError, match=name):
        cls([np.zeros(3)], **kw)


@pytest.mark.parametrize("cls, kw, name", BAD_HYPERS)
def test_bad_hyperparameter_in_second_group_at_step_changes_nothing(cls, kw, name):
    # SGD groups get momentum so their buffers exist, unless that would make kw valid
    extra = {"momentum": 0.9} if cls is fusedopt.SGD and not {"momentum", "nesterov"} & set(kw) else {}
    opt, a, b = warmed_up(cls, **extra)
    before = snapshot(opt)
    opt.param_groups[1].update(kw)
    with pytest.raises(ValueError, match=r"param_groups\[1\]: " + name):
        opt.step(good_grads(a, b))
    assert_unchanged(opt, before)


# -- bad parameters at construction ---------------------------------------------

BAD_PARAMS = {
    "non_contiguous": (lambda: np.zeros((4, 10))[:, ::2], ValueError, "contiguous"),
    "read_only": (lambda: np.frombuffer(b"\0" * 32, dtype=np.float64), ValueError, "writeable"),
    "int": (lambda: np.zeros(3, np.int64), TypeError, "float32, float64, float16 or bfloat16"),
    "complex": (lambda: np.zeros(3, np.complex64), TypeError, "float32, float64, float16 or bfloat16"),
    "list": (lambda: [0.0, 1.0], TypeError, "ndarray"),
    "byteswapped": (lambda: np.zeros(3, ">f4"), ValueError, "byte order"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_bad_param_names_its_index(case):
    make, error, message = BAD_PARAMS[case]
    with pytest.raises(error, match=r"params\[1\].*" + message):
        fusedopt.Adam([np.zeros(2), make()])


def test_same_param_twice_is_rejected():
    p = np.zeros(5)
    with pytest.raises(ValueError, match="shares memory"):
        fusedopt.Adam([p, p])
    with pytest.raises(ValueError, match="shares memory"):
        fusedopt.SGD([{"params": [p]}, {"params": [p[2:]]}])


def test_empty_params():
    with pytest.raises(ValueError, match="params"):
        fusedopt.Adam([])
    with pytest.raises(TypeError, match="params"):
        fusedopt.Adam(np.zeros(3))


def test_functional_bad_input_changes_nothing():
    p = np.ones(10, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(ValueError, match="exp_avg_sq"):
        fusedopt.functional.adam_(p, np.ones_like(p), m, m, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    with pytest.raises(ValueError, match="step"):
        fusedopt.functional.adam_(p, np.ones_like(p), m, v, step=0, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    with pytest.raises(ValueError, match="momentum_buffer"):
        fusedopt.functional.sgd_(p, np.ones_like(p), lr=0.1, momentum=0.9)
    assert (p == 1).all() and (m == 0).all() and (v == 0).all()


def test_size_zero_parameter_is_fine():
    p = np.zeros((0, 3), np.float32)
    q = np.ones(2, np.float32)
    opt = fusedopt.Adam([p, q], lr=0.1)
    opt.step([np.zeros((0, 3), np.float32), np.ones(2, np.float32)])
    assert p.shape == (0, 3) and (q < 1).all()


def test_memory_shared_across_dtypes_is_rejected():
    raw = np.zeros(64, np.uint8)
    as32, as64 = raw[:32].view(np.float32), raw[16:48].view(np.float64)
    with pytest.raises(ValueError, match="shares memory"):
        fusedopt.Adam([as32, as64])
    p32, p64 = np.zeros(8, np.float32), np.zeros(4)
    opt = fusedopt.SGD([p32, p64], lr=0.1)
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[1\]"):
        opt.step([p64.view(np.float32), np.ones(4)])
    assert not p32.any() and not p64.any()
