"""Tests of the end-to-end demo (``examples/digits_demo.py``, ``python -m fusedopt demo``,
``examples/train_mlp.py``).

The demo is an example script, not part of the package: it is imported from
``examples/`` next to ``tests/`` (a source checkout, or cibuildwheel's copy of
the test sources).  The training tests need scikit-learn (the
``fusedopt[examples]`` extra).  They skip without it, except under CI, which
installs the extra: there a missing scikit-learn fails them instead of hiding them.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fusedopt
from fusedopt import slow
from fusedopt.schedules import CosineAnnealing, LinearWarmup

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(EXAMPLES))
import digits_demo as demo  # noqa: E402  (examples/ is not a package)

try:
    import sklearn  # noqa: F401
    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

needs_sklearn = pytest.mark.skipif(
    not HAVE_SKLEARN and not os.environ.get("CI"),
    reason='scikit-learn is not installed (pip install "fusedopt[examples]")')

OPTIONS = ["--epochs", "--batch-size", "--hidden", "--layers", "--optimizer", "--lr",
           "--schedule", "--threads", "--dtype", "--seed", "--plot"]


def _subprocess_env():
    """The environment of a child Python that imports this same fusedopt."""
    env = dict(os.environ)
    package_root = str(Path(fusedopt.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["OPENBLAS_NUM_THREADS"] = "1"  # small matrices: BLAS threads only slow the child down
    return env


def _run_python(*args, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=_subprocess_env(), cwd=REPO, timeout=timeout)


# ---------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------


@needs_sklearn
def test_defaults_reach_95_percent_and_match_the_numpy_reference():
    result = demo.run(progress=False)
    assert result["test_accuracy"] >= 0.95
    assert result["numpy_test_accuracy"] == result["test_accuracy"]
    assert result["prediction_agreement"] >= 0.99
    for key in ("optimizer_seconds", "numpy_optimizer_seconds", "forward_backward_seconds",
                "numpy_forward_backward_seconds", "wall_seconds", "numpy_wall_seconds"):
        assert result[key] > 0, key
    # the defaults must stay a quick demo
    assert result["wall_seconds"] + result["numpy_wall_seconds"] < 60


@needs_sklearn
def test_float64_runs_make_the_same_predictions():
    result = demo.run(dtype="float64", progress=False)
    assert result["prediction_agreement"] >= 0.99
    assert result["test_accuracy"] == result["numpy_test_accuracy"]
    assert result["test_accuracy"] >= 0.95
    # same update rule: the two trajectories stay together to rounding error
    assert result["max_parameter_difference"] <= 1e-8


@needs_sklearn
@pytest.mark.parametrize("optimizer, schedule", [
    ("adam", "cosine"), ("adamw", "cosine"), ("sgd", "cosine"), ("adam", "step"),
    ("adam", "plateau"), ("sgd", "onecycle"), ("adamw", "constant"),
])
def test_every_optimizer_and_schedule_matches_its_numpy_reference(optimizer, schedule):
    result = demo.run(epochs=2, optimizer=optimizer, schedule=schedule, dtype="float64",
                      progress=False)
    assert result["prediction_agreement"] >= 0.99
    assert result["max_parameter_difference"] <= 1e-8
    assert result["history"]["lr"] == result["numpy_history"]["lr"]
    assert result["test_accuracy"] > 0.5  # it learned something in two epochs


@needs_sklearn
def test_comparison_detects_a_reference_that_does_not_learn(monkeypatch):
    def frozen_reference(name, params, lr, implementation="fusedopt"):
        if implementation == "numpy":
            return demo.NumpyAdam(params, lr=0.0)  # the reference model keeps its initial weights
        return fusedopt.Adam(params, lr=lr)

    monkeypatch.setattr(demo, "make_optimizer", frozen_reference)
    result = demo.run(epochs=2, progress=False)
    assert result["test_accuracy"] > 0.8
    assert result["numpy_test_accuracy"] < 0.5
    assert result["prediction_agreement"] < 0.5
    assert result["max_parameter_difference"] > 1e-3


@needs_sklearn
def test_plateau_schedule_halves_the_rate_when_validation_loss_stalls():
    result = demo.run(schedule="plateau", dtype="float64", progress=False)
    history = result["history"]
    lr = result["lr"]
    assert history["lr"][0] == lr
    assert min(history["lr"]) < lr  # at least one reduction in ten epochs
    # each reduction follows an epoch whose validation loss did not improve on the best before
    steps_per_epoch = result["steps"] // result["epochs"]
    val_loss = history["epoch_val_loss"]
    for epoch in range(1, result["epochs"]):
        first_step = epoch * steps_per_epoch
        before, after = history["lr"][first_step - 1], history["lr"][first_step]
        if after < before:
            assert after == pytest.approx(before / 2)
            # not better than the best before it by ReduceLROnPlateau's relative threshold
            assert val_loss[epoch - 1] >= min(val_loss[:epoch - 1], default=np.inf) * (1 - 1e-4)


@needs_sklearn
def test_cosine_schedule_warms_up_then_anneals_to_zero():
    result = demo.run(epochs=3, compare_numpy=False, progress=False)
    rates = np.array(result["history"]["lr"])
    peak = int(np.argmax(rates))
    assert rates[0] == 0.0
    assert rates[peak] == pytest.approx(result["lr"])
    assert 0 < peak < len(rates) // 5
    assert np.all(np.diff(rates[:peak + 1]) > 0) and np.all(np.diff(rates[peak:]) <= 0)
    assert rates[-1] < 0.01 * result["lr"]


@needs_sklearn
def test_run_sets_the_kernel_threads_and_restores_them():
    before = fusedopt.get_num_threads()
    result = demo.run(epochs=1, threads=1, compare_numpy=False, progress=False)
    assert result["threads"] == 1
    assert fusedopt.get_num_threads() == before


@needs_sklearn
def test_plot_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    result = demo.run(epochs=1, plot=str(path), progress=False)
    assert result["plot"] == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# The model and the NumPy reference optimizers
# ---------------------------------------------------------------------------


def _small_model(dtype="float64", seed=0):
    model = demo.MLP(n_inputs=6, n_classes=4, hidden=5, layers=2, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for bias in model.biases:
        bias[...] = rng.standard_normal(bias.shape)  # nonzero, so their gradients are checked too
    x = rng.standard_normal((7, 6)).astype(dtype)
    y = rng.integers(0, 4, size=7)
    return model, x, y


def test_model_parameters_and_gradients_are_views_of_the_flat_buffers():
    model, _, _ = _small_model()
    for view in model.weights + model.biases:
        assert np.shares_memory(view, model.flat.param)
    for view in model.weight_grads + model.bias_grads:
        assert np.shares_memory(view, model.flat.grad)
    assert model.n_parameters == 6 * 5 + 5 + 5 * 5 + 5 + 5 * 4 + 4


def test_backward_matches_finite_differences():
    model, x, y = _small_model()
    model.loss_and_backward(x, y)
    analytic = model.flat.grad.copy()
    step = 1e-6
    for index in range(model.flat.param.size):
        saved = model.flat.param[index]
        model.flat.param[index] = saved + step
        loss_plus = model.evaluate(x, y)[0]
        model.flat.param[index] = saved - step
        loss_minus = model.evaluate(x, y)[0]
        model.flat.param[index] = saved
        numeric = (loss_plus - loss_minus) / (2 * step)
        assert analytic[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8), index


def test_backward_overwrites_every_gradient_without_zero_grad():
    model, x, y = _small_model()
    model.loss_and_backward(x, y)
    expected = model.flat.grad.copy()
    for view in model.flat.grads:
        view.fill(np.nan)  # stale values from a previous step must not survive
    loss, n_correct = model.loss_and_backward(x, y)
    np.testing.assert_array_equal(model.flat.grad, expected)
    assert loss > 0 and 0 <= n_correct <= len(y)


def _trajectories(fused, reference, dtype, n_steps=25):
    """Step a fused optimizer and its NumPy twin with the same gradients; final parameters."""
    rng = np.random.default_rng(1)
    start = rng.standard_normal(1000).astype(dtype)
    fused_param, reference_param = start.copy(), start.copy()
    fused_opt, reference_opt = fused([fused_param]), reference([reference_param])
    for _ in range(n_steps):
        grad = rng.standard_normal(1000).astype(dtype)
        fused_opt.step([grad])
        reference_opt.step([grad])
    assert fused_opt.step_count == reference_opt.step_count == n_steps
    return fused_param, reference_param, start


SCHEDULE = LinearWarmup(CosineAnnealing(0.05, T_max=20), warmup_steps=5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_numpy_reference_optimizers_reproduce_the_kernels(name, dtype):
    fused_param, reference_param, start = _trajectories(
        lambda params: demo.make_optimizer(name, params, SCHEDULE, "fusedopt"),
        lambda params: demo.make_optimizer(name, params, SCHEDULE, "numpy"),
        dtype)
    assert not np.array_equal(fused_param, start)
    # same operations in the same order, each rounded to `dtype`: the same bits
    np.testing.assert_array_equal(fused_param, reference_param)


def _textbook_adam(param, grads, decoupled_weight_decay=0.0):
    """The independent reference: Adam (AdamW with decoupled decay) as the papers write
    it, in float64, with lr 0.01, betas (0.8, 0.9), eps 1e-6; the final parameters."""
    expected, m, v = param.copy(), np.zeros_like(param), np.zeros_like(param)
    for t, grad in enumerate(grads, start=1):
        expected *= 1 - 0.01 * decoupled_weight_decay
        m = 0.8 * m + 0.2 * grad
        v = 0.9 * v + 0.1 * grad ** 2
        expected -= 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
    return expected


@pytest.mark.parametrize("implementation", ["fusedopt.slow.adam_", "NumpyAdam"])
def test_numpy_adam_follows_the_textbook_update(implementation):
    rng = np.random.default_rng(2)
    param = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(5)]
    expected = _textbook_adam(param, grads)
    if implementation == "NumpyAdam":
        optimizer = demo.NumpyAdam([param], lr=0.01, betas=(0.8, 0.9), eps=1e-6)
        step = optimizer.step
    else:
        exp_avg, exp_avg_sq, count = np.zeros(50), np.zeros(50), [0]

        def step(grads):
            count[0] += 1
            slow.adam_([param], grads, [exp_avg], [exp_avg_sq], step=count[0], lr=0.01,
                       beta1=0.8, beta2=0.9, eps=1e-6)
    for grad in grads:
        step([grad])
    np.testing.assert_allclose(param, expected, rtol=1e-12)


def test_numpy_adamw_follows_the_textbook_update():
    rng = np.random.default_rng(4)
    param = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(5)]
    expected = _textbook_adam(param, grads, decoupled_weight_decay=0.1)
    optimizer = demo.NumpyAdam([param], lr=0.01, betas=(0.8, 0.9), eps=1e-6,
                               decoupled_weight_decay=0.1)
    for grad in grads:
        optimizer.step([grad])
    np.testing.assert_allclose(param, expected, rtol=1e-12)


def test_numpy_sgd_follows_the_momentum_update():
    rng = np.random.default_rng(3)
    param = rng.standard_normal(50)
    expected = param.copy()
    optimizer = demo.NumpySGD([param], lr=0.1, momentum=0.9)
    buffer = None
    for _ in range(5):
        grad = rng.standard_normal(50)
        optimizer.step([grad])
        buffer = grad.copy() if buffer is None else 0.9 * buffer + grad
        expected -= 0.1 * buffer
    np.testing.assert_allclose(param, expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv, option", [
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--schedule", "linear"], "--schedule"),
    (["--dtype", "float16"], "--dtype"),
    (["--lr", "-0.1"], "--lr"),
    (["--batch-size", "many"], "--batch-size"),
    (["--threads", "0"], "--threads"),
    (["--frobnicate"], "--frobnicate"),
])
def test_bad_arguments_give_a_usage_error(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python examples/digits_demo.py")
    assert option in err


def test_cli_negative_epochs_exits_2_without_traceback():
    completed = _run_python("-m", "fusedopt", "demo", "--epochs", "-1")
    assert completed.returncode == 2
    assert "usage:" in completed.stderr
    assert "--epochs" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in OPTIONS:
        assert option in out, option
    for choice in demo.OPTIMIZERS + demo.SCHEDULES:
        assert choice in out, choice


def test_cli_help_exits_0():
    completed = _run_python("-m", "fusedopt", "demo", "--help")
    assert completed.returncode == 0, completed.stderr
    for option in OPTIONS:
        assert option in completed.stdout, option


def test_script_help_exits_0():
    completed = _run_python(str(EXAMPLES / "digits_demo.py"), "--help")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage: python examples/digits_demo.py")
    for option in OPTIONS:
        assert option in completed.stdout, option


def test_cli_demo_outside_a_checkout_says_where_the_demo_is(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "fusedopt", "demo", "--epochs", "1"],
                               capture_output=True, text=True, env=_subprocess_env(),
                               cwd=tmp_path, timeout=120)
    assert completed.returncode == 2
    assert "python examples/digits_demo.py" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_demo_is_not_in_the_package():
    assert not (Path(fusedopt.__file__).parent / "demo.py").exists()
    with pytest.raises(ImportError):
        __import__("fusedopt.demo")


def test_run_rejects_bad_values_before_training():
    with pytest.raises(ValueError, match="epochs"):
        demo.run(epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        demo.run(optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule"):
        demo.run(schedule="linear")
    with pytest.raises(ValueError, match="dtype"):
        demo.run(dtype="float16")


def test_missing_scikit_learn_gives_install_hint(monkeypatch, capsys):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import sklearn...` fail
    assert demo.main(["--epochs", "1", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert 'pip install "fusedopt[examples]"' in captured.err
    assert "scikit-learn" in captured.err


@needs_sklearn
def test_main_prints_the_summary(capsys):
    assert demo.main(["--epochs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^fusedopt Adam +\d+\.\d\d%", out, re.M)
    assert re.search(r"^NumPy Adam \(reference\) +\d+\.\d\d%", out, re.M)
    assert "same prediction on" in out
    assert "optimizer step" in out
    assert "epoch 1/2" not in out  # --no-progress


@needs_sklearn
def test_progress_prints_lines_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    demo.run(epochs=2, progress=True)
    out = capsys.readouterr().out
    assert re.search(r"fusedopt epoch 1/2: loss \d\.\d{4}  acc \d+\.\d\d%", out)
    assert "fusedopt epoch 2/2" in out
    assert "NumPy Adam (reference)" in out


@needs_sklearn
def test_progress_uses_a_tqdm_bar_per_epoch_on_a_terminal(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    demo.run(epochs=2, progress=True, compare_numpy=False)
    captured = capsys.readouterr()
    assert "fusedopt epoch 1/2" in captured.err and "fusedopt epoch 2/2" in captured.err
    assert "val_acc" in captured.err
    assert "fusedopt epoch" not in captured.out


@needs_sklearn
def test_example_script_trains_to_95_percent():
    completed = _run_python(str(REPO / "examples" / "train_mlp.py"))
    assert completed.returncode == 0, completed.stderr
    match = re.search(r"test accuracy (\d+\.\d\d)%", completed.stdout)
    assert match, completed.stdout
    assert float(match.group(1)) >= 95.0
