"""End-to-end demo: a NumPy MLP trained on the digits data set with fusedopt.

Run it from the root of a source checkout with ``python examples/digits_demo.py``
(``--help`` lists the options), or read ``examples/train_mlp.py`` for the
recommended structure in a few lines (it imports the model from here).

The model keeps all its weights and biases as views into one flat parameter
buffer and all its gradients as views into one flat gradient buffer
(:class:`fusedopt.FlatParams`).  Its backward pass writes into those views,
so each training step ends with a single fused kernel call::

    loss, n_correct = model.loss_and_backward(x_batch, y_batch)  # fills model.flat.grad
    optimizer.step([model.flat.grad])                            # updates model.flat.param

The demo then trains the same model again, from the same initial weights on
the same mini-batches, with a plain NumPy optimizer (:class:`NumpyAdam` or
:class:`NumpySGD`: thin wrappers around the pure-NumPy twins of the kernels,
:func:`fusedopt.slow.adam_` and :func:`fusedopt.slow.sgd_`, with the same
learning-rate schedule), and reports the test accuracy of both runs, how often
their predictions agree, and the time spent in the forward/backward pass and
in the optimizer step.

Everything here needs the optional ``fusedopt[examples]`` extra
(scikit-learn for the data; tqdm and matplotlib are used when present).
"""
import argparse
import contextlib
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

import fusedopt
from fusedopt import slow
from fusedopt.schedules import group_rate

__all__ = [
    "DigitsSplits", "MLP", "NumpyAdam", "NumpySGD", "MissingExtraError",
    "load_digits_splits", "make_schedule", "make_optimizer", "shuffled_batches", "train", "run",
    "format_summary", "plot_history", "build_parser", "main",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "step", "plateau", "onecycle", "constant")
DTYPES = ("float32", "float64")

_DISPLAY_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
#: Learning rate when --lr is not given: Adam-type rates are ~10x smaller than SGD's.
DEFAULT_LR = {"adam": 3e-3, "adamw": 3e-3, "sgd": 5e-2}
#: Momentum of the "sgd" optimizer (PyTorch's form: b = mu*b + g, p -= lr*b).
SGD_MOMENTUM = 0.9
#: Decoupled weight decay of the "adamw" optimizer (AdamW's usual default).
ADAMW_WEIGHT_DECAY = 1e-2

_INSTALL_HINT = 'pip install "fusedopt[examples]"'


class MissingExtraError(ImportError):
    """An optional dependency of the demo (scikit-learn, matplotlib) is not installed."""


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


@dataclass
class DigitsSplits:
    """The digits data set split into train, validation and test sets.

    Attributes
    ----------
    X_train, X_val, X_test : ndarray, shape (n, 64)
        Pixel intensities scaled to [0, 1].
    y_train, y_val, y_test : ndarray of int64, shape (n,)
        Class labels 0-9.
    n_classes : int
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 10


def load_digits_splits(seed=0, dtype="float32", test_fraction=0.25, validation_fraction=0.1):
    """Load scikit-learn's bundled 8x8 digits and split them (stratified, seeded).

    Parameters
    ----------
    seed : int
        Seed of the splits.
    dtype : {"float32", "float64"}
        Dtype of the features.
    test_fraction : float
        Fraction of all samples held out for the final test.
    validation_fraction : float
        Fraction of the remaining training samples held out for validation
        (the metric of ``--schedule plateau``, and a per-epoch check).

    Returns
    -------
    DigitsSplits

    Raises
    ------
    MissingExtraError
        If scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise MissingExtraError(
            "the demo needs scikit-learn (for its bundled digits data set); "
            f"install the examples extra: {_INSTALL_HINT}") from err
    digits = load_digits()  # ships with scikit-learn: no download
    X = (digits.data / 16.0).astype(dtype)  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y)
    X_train, X_val, y_train, y_val = train_test_split(
        X_train, y_train, test_size=validation_fraction, random_state=seed, stratify=y_train)
    return DigitsSplits(X_train, y_train, X_val, y_val, X_test, y_test,
                        n_classes=int(digits.target.max()) + 1)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class MLP:
    """A ReLU multilayer perceptron with softmax cross-entropy, in NumPy.

    All parameters live in one :class:`fusedopt.FlatParams`: ``weights`` and
    ``biases`` are views into ``flat.param``, ``weight_grads`` and
    ``bias_grads`` views into ``flat.grad``.  :meth:`loss_and_backward`
    overwrites every gradient view in place, so the whole model is stepped
    with ``optimizer.step([model.flat.grad])``.

    Parameters
    ----------
    n_inputs, n_classes : int
        Input features and output classes.
    hidden : int
        Width of each hidden layer.
    layers : int
        Number of hidden layers.
    dtype : {"float32", "float64"}
        Dtype of parameters, gradients and activations.
    seed : int
        Seed of the (He-normal) weight initialisation; biases start at zero.
    """

    def __init__(self, n_inputs, n_classes, hidden=128, layers=2, dtype="float32", seed=0):
        self.sizes = [n_inputs] + [hidden] * layers + [n_classes]
        shapes = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            shapes += [(fan_in, fan_out), (fan_out,)]
        self.flat = fusedopt.FlatParams(shapes, dtype)
        self.dtype = self.flat.dtype
        self.weights = self.flat.params[0::2]
        self.biases = self.flat.params[1::2]
        self.weight_grads = self.flat.grads[0::2]
        self.bias_grads = self.flat.grads[1::2]
        rng = np.random.default_rng(seed)
        for weight in self.weights:
            # He initialisation keeps the ReLU activations' scale from layer to layer
            weight[...] = rng.standard_normal(weight.shape) * math.sqrt(2.0 / weight.shape[0])

    @property
    def n_parameters(self):
        """Number of weights and biases (without the alignment gaps of the flat buffer)."""
        return sum(p.size for p in self.flat.params)

    def _forward(self, x):
        """Logits and the input of every layer (kept for the backward pass)."""
        layer_inputs = [x]
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            z = layer_inputs[-1] @ weight
            z += bias
            if i == last:
                return z, layer_inputs
            np.maximum(z, 0, out=z)  # ReLU
            layer_inputs.append(z)

    def logits(self, x):
        """Class scores, shape (n, n_classes)."""
        return self._forward(x)[0]

    def predict(self, x):
        """Predicted class of each row of `x`."""
        return self.logits(x).argmax(axis=1)

    @staticmethod
    def _log_softmax(logits):
        shifted = logits - logits.max(axis=1, keepdims=True)  # avoids overflow in exp
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def evaluate(self, x, y):
        """Mean cross-entropy loss and accuracy on (x, y), as Python floats."""
        logits = self.logits(x)
        loss = -self._log_softmax(logits)[np.arange(len(y)), y].mean()
        return float(loss), float((logits.argmax(axis=1) == y).mean())

    def loss_and_backward(self, x, y):
        """Forward and backward pass on one mini-batch.

        Writes the gradient of the mean loss into ``flat.grad`` (through the
        views ``weight_grads`` and ``bias_grads``; every element of every
        view is overwritten, so no ``zero_grad()`` is needed).

        Parameters
        ----------
        x : ndarray, shape (n, n_inputs)
        y : ndarray of int, shape (n,)

        Returns
        -------
        loss : float
            Mean cross-entropy on the batch.
        n_correct : int
            Samples of the batch classified correctly (before the update).
        """
        n = len(y)
        rows = np.arange(n)
        logits, layer_inputs = self._forward(x)
        log_probs = self._log_softmax(logits)
        loss = -float(log_probs[rows, y].mean())
        n_correct = int((logits.argmax(axis=1) == y).sum())

        # d(mean loss)/d(logits) = (softmax - one_hot) / n
        delta = np.exp(log_probs)
        delta[rows, y] -= 1
        delta /= n
        for i in reversed(range(len(self.weights))):
            # out= writes into the flat gradient buffer; rebinding the names would not
            np.matmul(layer_inputs[i].T, delta, out=self.weight_grads[i])
            np.sum(delta, axis=0, out=self.bias_grads[i])
            if i > 0:
                delta = delta @ self.weights[i].T
                delta *= layer_inputs[i] > 0  # ReLU passes gradient only where it was active
        return loss, n_correct


# ---------------------------------------------------------------------------
# The NumPy reference optimizers
# ---------------------------------------------------------------------------


class _NumpyOptimizer:
    """What the demo's training loop and ReduceLROnPlateau use of an optimizer.

    One parameter group, a dict with ``"params"`` and ``"lr"`` (a number or a
    schedule, which :class:`fusedopt.schedules.ReduceLROnPlateau` lowers in
    place), and ``step_count``: the same interface as fusedopt's optimizers.
    The state arrays live here; the update itself is :mod:`fusedopt.slow`'s.
    """

    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]
        self.step_count = 0

    def current_lrs(self):
        """The learning rate the next step will use."""
        return [group_rate(self.param_groups[0], self.step_count)]

    def step(self, grads):
        self._update(self.param_groups[0]["params"], list(grads), self.current_lrs()[0],
                     self.step_count + 1)
        self.step_count += 1


class NumpyAdam(_NumpyOptimizer):
    r"""Adam (or AdamW) in plain NumPy: :func:`fusedopt.slow.adam_` with its state.

    The update, for step :math:`t = 1, 2, \dots`, with rate :math:`\eta_t`:

    .. math::

        p &\leftarrow (1 - \eta_t \lambda)\, p \quad\text{(decoupled decay, AdamW)} \\
        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        p &\leftarrow p - \frac{\eta_t}{1 - \beta_1^t}\,
             \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

    The twin runs each line as whole-array NumPy expressions, in the kernel's
    order of operations and with the scalars rounded to the array dtype as
    the kernel rounds them; the kernel does it all in one pass over memory.

    Parameters
    ----------
    params : list of ndarray
        Updated in place.
    lr : float or schedule
    betas : (float, float)
    eps : float
    decoupled_weight_decay : float
        AdamW's :math:`\lambda` (0 for Adam).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, decoupled_weight_decay=0.0):
        super().__init__(params, lr)
        self.betas = tuple(float(b) for b in betas)
        self.eps = float(eps)
        self.decoupled_weight_decay = float(decoupled_weight_decay)
        params = self.param_groups[0]["params"]
        self.exp_avg = [np.zeros_like(p) for p in params]
        self.exp_avg_sq = [np.zeros_like(p) for p in params]

    def _update(self, params, grads, lr, t):
        slow.adam_(params, grads, self.exp_avg, self.exp_avg_sq, step=t, lr=lr,
                   beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                   weight_decay=self.decoupled_weight_decay,
                   decoupled=bool(self.decoupled_weight_decay))


class NumpySGD(_NumpyOptimizer):
    r"""SGD with momentum in plain NumPy (PyTorch's form): :func:`fusedopt.slow.sgd_` with its buffers.

    .. math::

        b \leftarrow \mu b + g \quad (b = g \text{ at the first step}), \qquad
        p \leftarrow p - \eta_t b

    the form ``fusedopt.SGD(momentum=mu)`` uses by default.

    Parameters
    ----------
    params : list of ndarray
        Updated in place.
    lr : float or schedule
    momentum : float
    """

    def __init__(self, params, lr=1e-3, momentum=SGD_MOMENTUM):
        super().__init__(params, lr)
        self.momentum = float(momentum)
        params = self.param_groups[0]["params"]
        self.momentum_buffer = [np.zeros_like(p) for p in params]

    def _update(self, params, grads, lr, t):
        slow.sgd_(params, grads, self.momentum_buffer, lr=lr, momentum=self.momentum,
                  first_step=t == 1)


# ---------------------------------------------------------------------------
# Schedules and optimizers
# ---------------------------------------------------------------------------


def make_schedule(name, lr, epochs, steps_per_epoch):
    """The learning-rate schedule of the demo, as a function of the step count.

    Parameters
    ----------
    name : {"cosine", "step", "plateau", "onecycle", "constant"}
        ``cosine``: linear warm-up over the first 10% of the steps, then
        cosine annealing to 0; ``step``: divide by 5 every third of the
        epochs; ``onecycle``: the 1cycle policy peaking at `lr`;
        ``plateau`` and ``constant``: constant `lr` (``plateau`` lowers it
        through :class:`fusedopt.schedules.ReduceLROnPlateau`, see :func:`train`).
    lr : float
        Peak learning rate.
    epochs, steps_per_epoch : int

    Returns
    -------
    fusedopt.schedules.Schedule
    """
    from fusedopt import schedules

    total_steps = epochs * steps_per_epoch
    if name == "cosine":
        warmup_steps = total_steps // 10
        return schedules.LinearWarmup(
            schedules.CosineAnnealing(lr, T_max=max(1, total_steps - warmup_steps)),
            warmup_steps=warmup_steps)
    if name == "step":
        return schedules.PerEpoch(schedules.StepDecay(lr, step_size=max(1, epochs // 3), gamma=0.2),
                                  steps_per_epoch=steps_per_epoch)
    if name == "onecycle":
        return schedules.OneCycle(lr, total_steps=total_steps)
    if name in ("plateau", "constant"):
        return schedules.Constant(lr)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


def make_optimizer(name, params, lr, implementation="fusedopt"):
    """An optimizer of the demo, fused or the NumPy reference.

    Parameters
    ----------
    name : {"adam", "adamw", "sgd"}
    params : list of ndarray
        Usually ``[model.flat.param]``.
    lr : float or schedule
    implementation : {"fusedopt", "numpy"}

    Returns
    -------
    fusedopt.Optimizer or NumpyAdam or NumpySGD
    """
    if implementation not in ("fusedopt", "numpy"):
        raise ValueError(f"implementation must be 'fusedopt' or 'numpy', got {implementation!r}")
    fused = implementation == "fusedopt"
    if name == "adam":
        return fusedopt.Adam(params, lr=lr) if fused else NumpyAdam(params, lr=lr)
    if name == "adamw":
        if fused:
            return fusedopt.AdamW(params, lr=lr, weight_decay=ADAMW_WEIGHT_DECAY)
        return NumpyAdam(params, lr=lr, decoupled_weight_decay=ADAMW_WEIGHT_DECAY)
    if name == "sgd":
        if fused:
            return fusedopt.SGD(params, lr=lr, momentum=SGD_MOMENTUM)
        return NumpySGD(params, lr=lr, momentum=SGD_MOMENTUM)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def shuffled_batches(n_samples, batch_size, epochs, seed=0):
    """The mini-batches of every epoch: a fresh random order of the samples each epoch.

    Parameters
    ----------
    n_samples, batch_size, epochs : int
    seed : int
        The same seed gives the same batches (the last batch of an epoch may be smaller).

    Yields
    ------
    list of ndarray of int
        For each epoch, the sample indices of each of its batches.
    """
    # a stream of its own, apart from the weight initialisation's (which uses `seed` alone)
    rng = np.random.default_rng([seed, 1])
    for _ in range(epochs):
        order = rng.permutation(n_samples)
        yield [order[start:start + batch_size] for start in range(0, n_samples, batch_size)]


class _Progress:
    """A tqdm bar per epoch, or one printed line per epoch without tqdm or a terminal."""

    def __init__(self, enabled, label, epochs, steps_per_epoch, per_epoch=True):
        self.enabled = enabled
        self.label = label
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.per_epoch = per_epoch
        self.bar = None
        self.tqdm = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional: fall back to printed lines
                tqdm = None
            self.tqdm = tqdm
        if enabled and not per_epoch:
            if self.tqdm is not None:
                self.bar = self.tqdm(total=epochs * steps_per_epoch, desc=label, leave=True)
            else:
                print(f"{label}: training the same model again ...", flush=True)

    def start_epoch(self, epoch):
        if self.enabled and self.per_epoch and self.tqdm is not None:
            self.bar = self.tqdm(total=self.steps_per_epoch, leave=True,
                                 desc=f"{self.label} epoch {epoch + 1}/{self.epochs}")

    def update(self, loss, accuracy):
        if self.bar is not None:
            self.bar.update(1)
            if self.per_epoch:
                self.bar.set_postfix({"loss": f"{loss:.4f}", "acc": f"{accuracy:.2%}"},
                                     refresh=False)

    def end_epoch(self, epoch, loss, accuracy, val_loss, val_accuracy, lr):
        if not (self.enabled and self.per_epoch):
            return
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{loss:.4f}", "acc": f"{accuracy:.2%}",
                                  "val_loss": f"{val_loss:.4f}", "val_acc": f"{val_accuracy:.2%}"})
            self.bar.close()
            self.bar = None
        else:
            print(f"{self.label} epoch {epoch + 1}/{self.epochs}: loss {loss:.4f}  "
                  f"acc {accuracy:.2%}  val_loss {val_loss:.4f}  val_acc {val_accuracy:.2%}  "
                  f"lr {lr:.3g}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train(model, optimizer, data, *, epochs, batch_size, seed=0, plateau=None,
          progress=False, label="fusedopt", per_epoch_progress=True):
    """Train `model` with `optimizer` on mini-batches of `data`, timing both halves of each step.

    The loop is the recommended structure: the backward pass fills
    ``model.flat.grad``, then ``optimizer.step([model.flat.grad])`` updates
    the whole model at once.

    Parameters
    ----------
    model : MLP
    optimizer : fusedopt optimizer or NumpyAdam or NumpySGD
        Built over ``[model.flat.param]``.
    data : DigitsSplits
    epochs, batch_size : int
    seed : int
        Seed of the mini-batch order (the same seed gives the same batches).
    plateau : fusedopt.schedules.ReduceLROnPlateau, optional
        Stepped with the validation loss after every epoch.
    progress : bool
        Show a progress bar (or print a line) per epoch.
    label : str
        Name of the run in the progress output.
    per_epoch_progress : bool
        One bar per epoch with loss and accuracy (else one bar for the whole run).

    Returns
    -------
    dict
        ``step_loss`` and ``lr`` (one per step), ``epoch_train_loss``,
        ``epoch_train_accuracy``, ``epoch_val_loss``, ``epoch_val_accuracy``
        (one per epoch), ``forward_backward_seconds``, ``optimizer_seconds``,
        ``wall_seconds`` and ``steps``.
    """
    X, y = data.X_train, data.y_train
    n_samples = len(y)
    steps_per_epoch = -(-n_samples // batch_size)
    history = {key: [] for key in ("step_loss", "lr", "epoch_train_loss", "epoch_train_accuracy",
                                   "epoch_val_loss", "epoch_val_accuracy")}
    forward_backward_seconds = optimizer_seconds = 0.0
    bar = _Progress(progress, label, epochs, steps_per_epoch, per_epoch=per_epoch_progress)
    wall_start = time.perf_counter()
    try:
        for epoch, batches in enumerate(shuffled_batches(n_samples, batch_size, epochs, seed)):
            bar.start_epoch(epoch)
            loss_sum = 0.0
            n_seen = n_correct = 0
            for batch in batches:
                history["lr"].append(optimizer.current_lrs()[0])
                x_batch, y_batch = X[batch], y[batch]

                t0 = time.perf_counter()
                loss, batch_correct = model.loss_and_backward(x_batch, y_batch)
                t1 = time.perf_counter()
                optimizer.step([model.flat.grad])  # one fused kernel call for the whole model
                t2 = time.perf_counter()

                forward_backward_seconds += t1 - t0
                optimizer_seconds += t2 - t1
                history["step_loss"].append(loss)
                loss_sum += loss * len(batch)
                n_seen += len(batch)
                n_correct += batch_correct
                bar.update(loss_sum / n_seen, n_correct / n_seen)

            val_loss, val_accuracy = model.evaluate(data.X_val, data.y_val)
            if plateau is not None:
                plateau.step(val_loss)
            history["epoch_train_loss"].append(loss_sum / n_samples)
            history["epoch_train_accuracy"].append(n_correct / n_samples)
            history["epoch_val_loss"].append(val_loss)
            history["epoch_val_accuracy"].append(val_accuracy)
            bar.end_epoch(epoch, loss_sum / n_samples, n_correct / n_samples, val_loss,
                          val_accuracy, optimizer.current_lrs()[0])
    finally:
        bar.close()
    history.update(forward_backward_seconds=forward_backward_seconds,
                   optimizer_seconds=optimizer_seconds,
                   wall_seconds=time.perf_counter() - wall_start,
                   steps=epochs * steps_per_epoch)
    return history


def _train_one(implementation, data, *, epochs, batch_size, hidden, layers, optimizer, lr,
               schedule, dtype, seed, progress, label, per_epoch_progress):
    """Build a model and its optimizer from scratch and train it; returns (model, history)."""
    from fusedopt.schedules import ReduceLROnPlateau

    model = MLP(data.X_train.shape[1], data.n_classes, hidden=hidden, layers=layers,
                dtype=dtype, seed=seed)
    steps_per_epoch = -(-len(data.y_train) // batch_size)
    rate = make_schedule(schedule, lr, epochs, steps_per_epoch)
    opt = make_optimizer(optimizer, [model.flat.param], rate, implementation)
    plateau = None
    if schedule == "plateau":
        # few epochs: halve the rate as soon as the validation loss stalls for one epoch
        plateau = ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1)
    history = train(model, opt, data, epochs=epochs, batch_size=batch_size, seed=seed,
                    plateau=plateau, progress=progress, label=label,
                    per_epoch_progress=per_epoch_progress)
    return model, history


def _limit_blas_threads(n):
    """A context limiting NumPy's BLAS to `n` threads (no-op for None or without threadpoolctl)."""
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it, BLAS keeps its threads
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def run(epochs=10, batch_size=32, hidden=128, layers=2, optimizer="adam", lr=None,
        schedule="cosine", threads=None, dtype="float32", seed=0, plot=None, progress=True,
        compare_numpy=True, blas_threads=1):
    """Train the digits MLP with fusedopt, then with the NumPy reference, and compare.

    Parameters
    ----------
    epochs, batch_size, hidden, layers : int
        Training length, mini-batch size, hidden width, number of hidden layers.
    optimizer : {"adam", "adamw", "sgd"}
        SGD uses momentum 0.9; AdamW decoupled weight decay 0.01.
    lr : float, optional
        Peak learning rate; default 3e-3 for Adam and AdamW, 5e-2 for SGD.
    schedule : {"cosine", "step", "plateau", "onecycle", "constant"}
        See :func:`make_schedule`.
    threads : int, optional
        Threads of the fusedopt kernels (restored afterwards); default: unchanged.
    dtype : {"float32", "float64"}
    seed : int
        Seed of the data split, the initial weights and the mini-batch order.
    plot : str or path, optional
        Write loss and learning-rate curves there (needs matplotlib).
    progress : bool
        Show progress while training.
    compare_numpy : bool
        Also train with the NumPy reference optimizer.
    blas_threads : int or None
        Threads of NumPy's BLAS (the matrix products of the forward and
        backward pass) while training, set through threadpoolctl (installed
        with scikit-learn); None leaves BLAS as it is.  The default, 1, keeps
        idle BLAS threads, which spin for a while after each product, from
        competing with the optimizer step for the cores, and makes the
        timings reproducible; on a machine with cores to spare, more BLAS
        threads speed up wide layers.

    Returns
    -------
    dict
        ``test_accuracy``, ``numpy_test_accuracy``, ``prediction_agreement``
        (fraction of test samples where both models predict the same class),
        ``max_parameter_difference``, ``optimizer_seconds``,
        ``numpy_optimizer_seconds``, ``forward_backward_seconds``,
        ``numpy_forward_backward_seconds``, ``wall_seconds`` (the fused run),
        ``numpy_wall_seconds``, ``steps``, ``n_parameters``, the histories
        (``history``, ``numpy_history``) and the configuration.  The
        ``numpy_*`` entries and ``prediction_agreement`` are None when
        `compare_numpy` is false.

    Raises
    ------
    MissingExtraError
        If scikit-learn (or, with `plot`, matplotlib) is not installed.
    ValueError
        For an unknown optimizer, schedule or dtype, or a non-positive size.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("hidden", hidden),
                        ("layers", layers)):
        _check_positive(name, value)
    for name, value in (("threads", threads), ("blas_threads", blas_threads)):
        if value is not None:
            _check_positive(name, value)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if lr is None:
        lr = DEFAULT_LR[optimizer]
    if plot is not None:
        _import_pyplot()  # fail before training, not after

    data = load_digits_splits(seed=seed, dtype=dtype)
    config = dict(epochs=epochs, batch_size=batch_size, hidden=hidden, layers=layers,
                  optimizer=optimizer, lr=lr, schedule=schedule, dtype=dtype, seed=seed)
    previous_threads = fusedopt.get_num_threads()
    if threads is not None:
        fusedopt.set_num_threads(threads)
    try:
        with _limit_blas_threads(blas_threads):
            kernel_threads = fusedopt.get_num_threads()
            model, history = _train_one("fusedopt", data, progress=progress, label="fusedopt",
                                        per_epoch_progress=True, **config)
            numpy_model = numpy_history = None
            if compare_numpy:
                numpy_model, numpy_history = _train_one(
                    "numpy", data, progress=progress,
                    label=f"NumPy {_DISPLAY_NAMES[optimizer]} (reference)",
                    per_epoch_progress=False, **config)
            predictions = model.predict(data.X_test)
            numpy_predictions = numpy_model.predict(data.X_test) if compare_numpy else None
    finally:
        if threads is not None:
            fusedopt.set_num_threads(previous_threads)

    result = dict(
        config,
        n_train=len(data.y_train), n_val=len(data.y_val), n_test=len(data.y_test),
        layer_sizes=list(model.sizes), n_parameters=model.n_parameters,
        simd_path=fusedopt.simd_path(), threads=kernel_threads, blas_threads=blas_threads,
        steps=history["steps"],
        test_accuracy=float((predictions == data.y_test).mean()),
        forward_backward_seconds=history["forward_backward_seconds"],
        optimizer_seconds=history["optimizer_seconds"],
        wall_seconds=history["wall_seconds"],
        history=history,
        numpy_test_accuracy=None, numpy_forward_backward_seconds=None,
        numpy_optimizer_seconds=None, numpy_wall_seconds=None, numpy_history=None,
        prediction_agreement=None, max_parameter_difference=None,
    )
    if compare_numpy:
        result.update(
            numpy_test_accuracy=float((numpy_predictions == data.y_test).mean()),
            numpy_forward_backward_seconds=numpy_history["forward_backward_seconds"],
            numpy_optimizer_seconds=numpy_history["optimizer_seconds"],
            numpy_wall_seconds=numpy_history["wall_seconds"],
            numpy_history=numpy_history,
            prediction_agreement=float((predictions == numpy_predictions).mean()),
            max_parameter_difference=float(np.max(np.abs(
                model.flat.param.astype(np.float64) - numpy_model.flat.param))),
        )
    if plot is not None:
        plot_history(result, plot)
        result["plot"] = str(plot)
    return result


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def _plural(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_summary(result):
    """The demo's final report, as a list of lines.

    Parameters
    ----------
    result : dict
        As returned by :func:`run`.

    Returns
    -------
    list of str
    """
    optimizer_name = _DISPLAY_NAMES[result["optimizer"]]
    steps = result["steps"]
    layer_sizes = "-".join(str(n) for n in result["layer_sizes"])
    lines = [
        f"digits: {result['n_train']} train / {result['n_val']} validation / "
        f"{result['n_test']} test samples; MLP {layer_sizes} "
        f"({result['n_parameters']:,} parameters, {result['dtype']})",
        f"{optimizer_name}, lr {result['lr']:g}, {result['schedule']} schedule, batch "
        f"{result['batch_size']}, {_plural(result['epochs'], 'epoch')} = {steps} steps; fusedopt "
        f"{result['simd_path']}, {_plural(result['threads'], 'thread')}"
        + (f"; BLAS {_plural(result['blas_threads'], 'thread')}"
           if result.get("blas_threads") else ""),
        "",
        f"{'':24}{'test acc':>9}{'fwd+bwd':>10}{'optimizer':>11}{'opt/step':>11}{'wall':>9}",
    ]

    def row(name, accuracy, forward_backward, optimizer_time, wall):
        return (f"{name:24}{accuracy:>9.2%}{forward_backward:>9.2f}s{optimizer_time:>10.3f}s"
                f"{optimizer_time / steps * 1e3:>8.3f} ms{wall:>8.2f}s")

    lines.append(row(f"fusedopt {optimizer_name}", result["test_accuracy"],
                     result["forward_backward_seconds"], result["optimizer_seconds"],
                     result["wall_seconds"]))
    if result.get("numpy_test_accuracy") is None:
        return lines
    lines.append(row(f"NumPy {optimizer_name} (reference)", result["numpy_test_accuracy"],
                     result["numpy_forward_backward_seconds"], result["numpy_optimizer_seconds"],
                     result["numpy_wall_seconds"]))
    n_test = result["n_test"]
    agreeing = round(result["prediction_agreement"] * n_test)
    difference = result["max_parameter_difference"]
    lines.append("")
    lines.append(f"same prediction on {agreeing}/{n_test} test samples "
                 f"({result['prediction_agreement']:.1%}); largest parameter difference "
                 f"{difference:.3g}{' (bitwise equal)' if difference == 0 else ''}")

    def share(optimizer_time, forward_backward):
        return optimizer_time / (optimizer_time + forward_backward)

    speedup = result["numpy_optimizer_seconds"] / result["optimizer_seconds"]
    comparison = f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower"
    lines.append(
        f"optimizer step {comparison} with fusedopt; share of the training step: "
        f"{share(result['optimizer_seconds'], result['forward_backward_seconds']):.0%} "
        f"(fusedopt) vs "
        f"{share(result['numpy_optimizer_seconds'], result['numpy_forward_backward_seconds']):.0%}"
        f" (NumPy)")
    return lines


def _import_pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise MissingExtraError(f"--plot needs matplotlib: {_INSTALL_HINT}") from err
    matplotlib.use("Agg")  # write files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_history(result, path):
    """Write the training-loss and learning-rate curves of a :func:`run` result to `path`.

    Parameters
    ----------
    result : dict
        As returned by :func:`run`.
    path : str or path
        Image file; the format follows the extension (png, svg, pdf, ...).
    """
    plt = _import_pyplot()
    history, numpy_history = result["history"], result.get("numpy_history")
    steps_per_epoch = result["steps"] // result["epochs"]
    epoch_ends = np.arange(1, result["epochs"] + 1) * steps_per_epoch
    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                         gridspec_kw={"height_ratios": [2, 1]})
    loss_ax.plot(history["step_loss"], lw=0.8, alpha=0.6, label="train loss per batch (fusedopt)")
    loss_ax.plot(epoch_ends, history["epoch_train_loss"], "s-", label="train loss, epoch mean")
    loss_ax.plot(epoch_ends, history["epoch_val_loss"], "o-", label="validation loss (fusedopt)")
    if numpy_history is not None:
        loss_ax.plot(epoch_ends, numpy_history["epoch_val_loss"], "x--", color="k",
                     label="validation loss (NumPy reference)")
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.set_title(f"digits MLP {'-'.join(map(str, result['layer_sizes']))}, "
                      f"{_DISPLAY_NAMES[result['optimizer']]}, {result['schedule']} schedule: "
                      f"test accuracy {result['test_accuracy']:.2%}")
    loss_ax.grid(True, alpha=0.3)
    loss_ax.legend()
    lr_ax.plot(history["lr"], label="fusedopt")
    if numpy_history is not None:
        lr_ax.plot(numpy_history["lr"], "--", color="k", label="NumPy reference")
    lr_ax.set_xlabel("step")
    lr_ax.set_ylabel("learning rate")
    lr_ax.grid(True, alpha=0.3)
    lr_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def build_parser(prog="python examples/digits_demo.py"):
    """The demo's argument parser (also used by ``examples/train_mlp.py``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a NumPy MLP on scikit-learn's digits with a fused fusedopt optimizer, "
                    "then with a plain NumPy optimizer, and compare accuracy and step time.",
        epilog='Needs the examples extra: pip install "fusedopt[examples]".  An optimizer-bound '
               "configuration: --hidden 2048 --layers 4 --epochs 3.")
    parser.add_argument("--epochs", type=_positive_int, default=10,
                        help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=_positive_int, default=32,
                        help="mini-batch size (default 32)")
    parser.add_argument("--hidden", type=_positive_int, default=128,
                        help="width of each hidden layer (default 128)")
    parser.add_argument("--layers", type=_positive_int, default=2,
                        help="number of hidden layers (default 2)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                        help="adam, adamw (weight decay 0.01) or sgd (momentum 0.9); default adam")
    parser.add_argument("--lr", type=_positive_float, default=None,
                        help="peak learning rate (default 3e-3 for adam/adamw, 5e-2 for sgd)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="cosine (10%% linear warm-up, then cosine to 0), step (/5 every third "
                             "of the epochs), plateau (halve when the validation loss stalls), "
                             "onecycle, constant; default cosine")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="threads of the fusedopt kernels (default: OpenMP's setting)")
    parser.add_argument("--blas-threads", type=_positive_int, default=1,
                        help="threads of NumPy's BLAS in the forward/backward pass (default 1: "
                             "idle BLAS threads would compete with the optimizer step)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="float32 (default) or float64")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data split, initial weights and batch order (default 0)")
    parser.add_argument("--plot", metavar="OUT.png", default=None,
                        help="write loss and learning-rate curves to this image (needs matplotlib)")
    parser.add_argument("--no-numpy", dest="compare_numpy", action="store_false",
                        help="skip the NumPy reference run")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars or per-epoch lines")
    return parser


def main(argv=None, prog="python examples/digits_demo.py"):
    """Run the demo from the command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).
    prog : str
        Program name in the usage message.

    Returns
    -------
    int
        0 on success, 2 when an optional dependency is missing.  Bad arguments
        raise ``SystemExit(2)`` with a usage message, as argparse does.
    """
    args = build_parser(prog).parse_args(argv)
    try:
        result = run(**vars(args))
    except MissingExtraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print("\n".join(format_summary(result)))
    if args.plot is not None:
        print(f"curves written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
