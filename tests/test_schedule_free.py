"""Schedule-free AdamW and SGD: against the schedulefree package (where installed),
the NumPy twin (fusedopt.slow.schedule_free) on float64 copies, and themselves
across thread counts and SIMD paths; train/eval modes, group counters, state_dict."""
import zlib

import numpy as np
import pytest

import fusedopt
from fusedopt import slow
from fusedopt.slow import schedule_free as twin
from conftest import DTYPES, trajectory_tolerance
from test_low_precision import assert_bitwise, run_everywhere, use

N_STEPS = 30
SHAPES = [(0,), (1,), (3, 5), (), (17,), (1500,)]
ADAMW_OPTIONS = dict(lr=0.01, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.05, warmup_steps=5, r=0.5,
                     weight_lr_power=1.5)
SGD_OPTIONS = dict(lr=0.1, momentum=0.8, weight_decay=0.01, warmup_steps=3, r=0.0, weight_lr_power=2.0)
CASES = {"adamw": (fusedopt.AdamWScheduleFree, ADAMW_OPTIONS, "AdamWScheduleFree"),
         "sgd": (fusedopt.SGDScheduleFree, SGD_OPTIONS, "SGDScheduleFree")}


def problem(dtype, seed, shapes=SHAPES, n_steps=N_STEPS):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(n_steps)]
    return params, grads


def run_twin(kind, params, grads, options, eval_at=()):
    """The twin on float64 copies; returns the parameters after each eval_at step in
    eval mode (x) and the final ones (train mode, y)."""
    ys = [p.astype(np.float64) for p in params]
    zs = [np.zeros_like(y) for y in ys]
    squares = [np.zeros_like(y) for y in ys] if kind == "adamw" else None
    beta1 = options["betas"][0] if kind == "adamw" else options["momentum"]
    hyper = {k: v for k, v in options.items() if k not in ("betas", "momentum")}
    if kind == "adamw":
        hyper.update(beta1=options["betas"][0], beta2=options["betas"][1])
    else:
        hyper.update(beta1=options["momentum"])
    k, weight_sum, lr_max, evaluated = 0, 0.0, 0.0, []
    for t, step_grads in enumerate(grads):
        k, weight_sum, lr_max = slow.schedule_free_(ys, [g.astype(np.float64) for g in step_grads], zs, squares,
                                                    k=k, weight_sum=weight_sum, lr_max=lr_max, first_step=t == 0,
                                                    **hyper)
        if t in eval_at:
            xs = [y.copy() for y in ys]
            for x, z in zip(xs, zs):
                twin.to_eval_(x, z, beta1)
            evaluated.append(xs)
    return ys, evaluated


def run_fused(cls, params, grads, options, eval_at=()):
    params = [p.copy() for p in params]
    opt = cls(params, **options)
    opt.train()
    evaluated = []
    for t, step_grads in enumerate(grads):
        assert opt.step(step_grads)
        if t in eval_at:
            opt.eval()
            evaluated.append([p.copy() for p in params])
            opt.train()
    return params, evaluated, opt


def assert_close(got, expected, dtype, n_steps, what):
    tol = trajectory_tolerance(dtype, n_steps, max(1.0, *(np.abs(e).max(initial=0) for e in expected)))
    for i, (a, b) in enumerate(zip(got, expected)):
        err = np.max(np.abs(a.astype(np.float64) - b), initial=0.0)
        assert err <= tol, f"{what} tensor {i}: max error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", list(CASES))
def test_matches_the_twin_in_train_and_eval_mode(kind, dtype):
    cls, options, _ = CASES[kind]
    params, grads = problem(dtype, zlib.crc32(repr((kind, np.dtype(dtype).name)).encode()))
    eval_at = (0, 9, N_STEPS - 1)
    got, got_eval, _ = run_fused(cls, params, grads, options, eval_at)
    expected, expected_eval = run_twin(kind, params, grads, options, eval_at)
    assert_close(got, expected, dtype, N_STEPS, "y")
    for t, a, b in zip(eval_at, got_eval, expected_eval):
        assert_close(a, b, dtype, t + 2, f"x after step {t}")
    assert any(not np.array_equal(a, p) for a, p in zip(got, params) if a.size)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", list(CASES))
def test_matches_the_schedulefree_package(kind, dtype):
    """float64: 1e-12 relative (torch fuses some multiply-adds, and its CPU sqrt is not
    always correctly rounded: a few ulps a step); float32: the per-step ulp rule."""
    torch = pytest.importorskip("torch")
    schedulefree = pytest.importorskip("schedulefree")
    cls, options, name = CASES[kind]
    params, grads = problem(dtype, zlib.crc32(repr(("package", kind)).encode()), shapes=SHAPES[:5] + [(301,)])
    eval_at = (4, N_STEPS - 1)
    got, got_eval, _ = run_fused(cls, params, grads, options, eval_at)
    tensors = [torch.tensor(p) for p in params]
    reference = getattr(schedulefree, name)(tensors, foreach=False, **options)
    reference.train()
    expected_eval = []
    for t, step_grads in enumerate(grads):
        for tensor, g in zip(tensors, step_grads):
            tensor.grad = torch.tensor(g)
        reference.step()
        if t in eval_at:
            reference.eval()
            expected_eval.append([x.numpy().astype(np.float64) for x in tensors])
            reference.train()
    assert_close(got, [x.numpy().astype(np.float64) for x in tensors], dtype, N_STEPS, "y")
    for t, a, b in zip(eval_at, got_eval, expected_eval):
        assert_close(a, b, dtype, t + 2, f"x after step {t}")


@pytest.mark.parametrize("threads,simd", run_everywhere(threads=(1, 2, 3)))
@pytest.mark.parametrize("kind", list(CASES))
def test_bitwise_identical_across_threads_and_simd_paths(kind, threads, simd):
    cls, options, _ = CASES[kind]
    params, grads = problem(np.float32, 7, shapes=[(3,), (5 * 4096 + 7,)], n_steps=5)
    use(1, "baseline")
    expected, _, _ = run_fused(cls, params, grads, options)
    use(threads, simd)
    got, _, _ = run_fused(cls, params, grads, options)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert_bitwise(a, b, f"params[{i}]")


@pytest.mark.parametrize("kind", list(CASES))
def test_starts_in_eval_mode_and_step_in_eval_mode_raises(kind):
    cls, options, _ = CASES[kind]
    p = np.ones(4)
    opt = cls([p], **options)
    assert not opt.train_mode
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step([np.ones(4)])
    assert np.array_equal(p, np.ones(4)) and opt.step_count == 0
    opt.train()
    opt.step([np.ones(4)])
    opt.eval()
    before = p.copy()
    with pytest.raises(RuntimeError, match="train()"):
        opt.step([np.ones(4)])
    assert np.array_equal(p, before)
    opt.eval()                      # a second eval() does not move the parameter again
    assert np.array_equal(p, before)


@pytest.mark.parametrize("save_in", ["train", "eval"])
@pytest.mark.parametrize("kind", list(CASES))
def test_state_dict_and_checkpoint_record_the_mode_and_resume_bitwise(kind, save_in, tmp_path):
    """Saved in eval mode, the model holds x: the run it resumes is one that went
    to eval mode and back to train mode there (y -> x -> y rounds)."""
    cls, options, _ = CASES[kind]
    params, grads = problem(np.float32, 11, shapes=[(7,), (300,)], n_steps=12)
    straight, _, _ = run_fused(cls, params, grads, options, eval_at=(5,) if save_in == "eval" else ())
    first = [p.copy() for p in params]
    opt = cls(first, **options)
    opt.train()
    for step_grads in grads[:6]:
        opt.step(step_grads)
    if save_in == "eval":
        opt.eval()
    sd = opt.state_dict()
    assert sd["train_mode"] is (save_in == "train")
    fusedopt.save(opt, tmp_path / "sf.npz")
    for source in ("state_dict", "checkpoint"):
        resumed = [p.copy() for p in first]           # the model as saved (x in eval mode)
        opt2 = cls(resumed, **options)
        if source == "state_dict":
            opt2.load_state_dict(sd)
        else:
            fusedopt.load(opt2, tmp_path / "sf.npz")
        assert opt2.train_mode is (save_in == "train")
        opt2.train()
        for step_grads in grads[6:]:
            opt2.step(step_grads)
        for i, (a, b) in enumerate(zip(resumed, straight)):
            assert_bitwise(a, b, f"{source}: params[{i}]")


def test_k_and_weight_sum_are_the_groups():
    """An array appended to a group later takes on the group's k, weight sum and
    lr_max (the package keeps them per group); its z starts at its first step."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(5), rng.standard_normal(3)
    opt = fusedopt.AdamWScheduleFree([a], **ADAMW_OPTIONS)
    opt.train()
    for _ in range(4):
        opt.step([rng.standard_normal(5)])
    opt.param_groups[0]["params"].append(b)
    b_before = b.copy()
    g = rng.standard_normal(3)
    opt.step([rng.standard_normal(5), g])
    state = opt.state
    assert state[1]["k"] == state[0]["k"] == 5
    assert state[1]["weight_sum"] == state[0]["weight_sum"] and state[1]["step"] == 1
    # b stepped as the twin with the group's counters before this step, z from b itself
    expected = b_before.copy()
    z, v = np.zeros(3), np.zeros(3)
    hyper = {k: val for k, val in ADAMW_OPTIONS.items() if k != "betas"}
    hyper.update(beta1=0.85, beta2=0.99)
    probe = fusedopt.AdamWScheduleFree([np.zeros(1)], **ADAMW_OPTIONS)   # the counters after 4 steps
    probe.train()
    for _ in range(4):
        probe.step([np.zeros(1)])
    counters = probe.state[0]
    slow.schedule_free_(expected, g, z, v, k=counters["k"], weight_sum=counters["weight_sum"],
                        lr_max=counters["lr_max"], first_step=True, **hyper)
    np.testing.assert_allclose(b, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cls,kwargs,name", [
    (fusedopt.SGDScheduleFree, dict(momentum=0.0), "momentum"),
    (fusedopt.SGDScheduleFree, dict(momentum=1.0), "momentum"),
    (fusedopt.SGDScheduleFree, dict(momentum=float("nan")), "momentum"),
    (fusedopt.AdamWScheduleFree, dict(betas=(0.0, 0.999)), "betas"),
    (fusedopt.AdamWScheduleFree, dict(eps=0.0), "eps"),
    (fusedopt.AdamWScheduleFree, dict(lr=-1.0), "lr"),
    (fusedopt.AdamWScheduleFree, dict(weight_decay=float("nan")), "weight_decay"),
    (fusedopt.AdamWScheduleFree, dict(warmup_steps=-1), "warmup_steps"),
    (fusedopt.SGDScheduleFree, dict(r=float("inf")), "r"),
    (fusedopt.SGDScheduleFree, dict(weight_lr_power=-2.0), "weight_lr_power"),
])
def test_bad_hyperparameters_raise_naming_them(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([np.zeros(3)], **kwargs)




# -- hostile-review regressions --------------------------------------------------------

def stepped(cls, options, groups=1, n=8, steps=3):
    rng = np.random.default_rng(5)
    params = [np.ones(n) for _ in range(groups)]
    opt = cls([{"params": [p]} for p in params], **options)
    opt.train()
    for _ in range(steps):
        opt.step([rng.standard_normal(n) for _ in params])
    return opt, params


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1, float("nan"), "x", None])
@pytest.mark.parametrize("kind", list(CASES))
def test_eval_checks_every_group_before_moving_any(kind, bad):
    cls, options, _ = CASES[kind]
    opt, params = stepped(cls, options, groups=2)
    before = [p.copy() for p in params]
    if kind == "adamw":
        opt.param_groups[1]["betas"] = (bad, 0.999)
    else:
        opt.param_groups[1]["momentum"] = bad
    with pytest.raises((ValueError, TypeError), match=r"param_groups\[1\]: (betas\[0\]|momentum)"):
        opt.eval()
    assert opt.train_mode
    for p, b in zip(params, before):
        assert np.array_equal(p, b)


def test_eval_and_train_follow_a_parameter_reshaped_in_place():
    opt, (p,) = stepped(fusedopt.AdamWScheduleFree, ADAMW_OPTIONS, n=6)
    z = opt.state[0]["z"].copy()
    y = p.copy()
    p.shape = (2, 3)
    opt.eval()
    x = y.copy()
    twin.to_eval_(x, z, ADAMW_OPTIONS["betas"][0])
    assert_bitwise(p.ravel(), x, "x")
    opt.train()
    opt.step([np.ones((2, 3))])


def test_a_step_racing_eval_in_another_thread_changes_nothing():
    """eval() from another thread while the step reads its gradients: the step sees
    eval mode when it takes the lock and raises; nothing is stepped."""
    import threading

    opt, (p,) = stepped(fusedopt.AdamWScheduleFree, ADAMW_OPTIONS)

    def grads():
        thread = threading.Thread(target=opt.eval)
        thread.start()
        thread.join()
        yield np.ones(8)

    count = opt.step_count
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step(grads())
    x = p.copy()
    assert not opt.train_mode and opt.step_count == count
    opt.train()
    opt.eval()
    assert np.allclose(p, x, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("options", [dict(lr=2.0, weight_lr_power=2000.0), dict(lr=0.1, r=1000.0)])
def test_an_overflowing_average_weight_raises_before_anything_changes(options):
    p = np.ones(5)
    opt = fusedopt.AdamWScheduleFree([p], **options)
    opt.train()
    with pytest.raises(ValueError, match="overflow"):
        for _ in range(3):
            opt.step([np.ones(5)])
    before, state = p.copy(), {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[0].items()}
    with pytest.raises(ValueError, match="overflow"):
        opt.step([np.ones(5)])
    assert np.array_equal(p, before) and np.isfinite(p).all()
    for key, value in opt.state[0].items():
        assert np.array_equal(value, state[key]), key


def test_loading_checks_the_mode_and_the_real_counters():
    opt, _ = stepped(fusedopt.AdamWScheduleFree, ADAMW_OPTIONS)
    sd = opt.state_dict()
    fresh = fusedopt.AdamWScheduleFree([np.ones(8)], **ADAMW_OPTIONS)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        fresh.load_state_dict([1])
    for value in (-1.0, float("inf"), 10 ** 400):
        bad = dict(sd, state={0: dict(sd["state"][0], weight_sum=value)})
        with pytest.raises(ValueError, match="weight_sum"):
            fresh.load_state_dict(bad)
    fresh.load_state_dict(dict(sd, train_mode=np.True_))
    assert fresh.train_mode is True


def test_16_bit_parameters_are_refused_naming_them():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(TypeError, match=r"params\[1\]"):
        fusedopt.SGDScheduleFree([np.zeros(3), np.zeros(3, dtype=ml_dtypes.bfloat16)])
