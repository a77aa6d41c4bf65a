"""The implementations the benchmark compares, as small adapters behind one interface.

An adapter takes ``(algorithm, workload, params, grads)`` (NumPy arrays; the
gradients are shared and only read) and returns a callable doing one
optimizer step.  Each adapter copies the parameters, so no two
implementations write the same memory.  The algorithms and their
hyperparameters are set in the tables below, once for every implementation.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fusedopt
from fusedopt._numpy_adam import NumPyAdam

ADAM_LR = 1e-3
ADAMW_WEIGHT_DECAY = 1e-2
SGD_LR = 1e-2
SGD_MOMENTUM = 0.9


@dataclass(frozen=True)
class Algorithm:
    """An optimizer algorithm as the benchmark runs it.

    Attributes
    ----------
    name : str
        Command-line and table name.
    transfers : int
        Element reads plus writes per step (Adam: read p, g, m, v, write p, m, v = 7);
        effective bytes per step = transfers * itemsize * elements.
    description : str
        Human-readable configuration.
    has_targets : bool
        Checked against the project's targets (Adam, AdamW, SGD with momentum).
    """

    name: str
    transfers: int
    description: str
    has_targets: bool = True


ALGORITHMS = {a.name: a for a in [
    Algorithm("adam", 7, f"Adam, lr {ADAM_LR}"),
    Algorithm("adamw", 7, f"AdamW, lr {ADAM_LR}, weight decay {ADAMW_WEIGHT_DECAY}"),
    Algorithm("sgd", 5, f"SGD, lr {SGD_LR}, momentum {SGD_MOMENTUM}, PyTorch form"),
    Algorithm("sgd-velocity", 5, f"SGD, lr {SGD_LR}, momentum {SGD_MOMENTUM}, velocity form "
                                 "(lr_in_velocity; torch rows run the PyTorch form)"),
    Algorithm("sgd-plain", 3, f"SGD without momentum, lr {SGD_LR}", has_targets=False),
]}
DEFAULT_ALGORITHMS = ["adam", "adamw", "sgd", "sgd-velocity"]

FUSEDOPT_OPTIMIZERS = {
    "adam": lambda ps: fusedopt.Adam(ps, lr=ADAM_LR),
    "adamw": lambda ps: fusedopt.AdamW(ps, lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY),
    "sgd": lambda ps: fusedopt.SGD(ps, lr=SGD_LR, momentum=SGD_MOMENTUM),
    "sgd-velocity": lambda ps: fusedopt.SGD(ps, lr=SGD_LR, momentum=SGD_MOMENTUM, lr_in_velocity=True),
    "sgd-plain": lambda ps: fusedopt.SGD(ps, lr=SGD_LR),
}


def _torch_optimizer(algorithm, params, mode):
    import torch

    options = {mode: True}
    if algorithm == "adam":
        return torch.optim.Adam(params, lr=ADAM_LR, **options)
    if algorithm == "adamw":
        return torch.optim.AdamW(params, lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY, **options)
    # torch has only the PyTorch momentum form; the velocity form moves the same bytes
    momentum = 0.0 if algorithm == "sgd-plain" else SGD_MOMENTUM
    return torch.optim.SGD(params, lr=SGD_LR, momentum=momentum, **options)


# -- NumPy peers ---------------------------------------------------------------------

class NumPyAdamW(NumPyAdam):
    """:class:`NumPyAdam` with decoupled weight decay (one extra in-place pass over p)."""

    def __init__(self, params, lr=ADAM_LR, weight_decay=ADAMW_WEIGHT_DECAY):
        super().__init__(params, lr=lr)
        self.decoupled_weight_decay = weight_decay

    def step(self, grads, lr=None):
        shrink = 1.0 - (self.lr if lr is None else lr) * self.decoupled_weight_decay
        for p in self.params:
            p *= shrink
        super().step(grads, lr)


class NumPySGD:
    """SGD with in-place NumPy ufuncs and one scratch buffer: the NumPy in-place peer of
    :class:`fusedopt.SGD` (PyTorch momentum form, velocity form, or no momentum).

    Parameters
    ----------
    params : list of ndarray
        Updated in place.
    lr, momentum : float
    lr_in_velocity : bool
        Velocity form ``v = momentum*v + lr*g; p -= v`` instead of
        ``b = momentum*b + g; p -= lr*b``.
    """

    def __init__(self, params, lr=SGD_LR, momentum=0.0, lr_in_velocity=False):
        self.params, self.lr, self.momentum, self.lr_in_velocity = list(params), lr, momentum, lr_in_velocity
        self.buffers = [np.zeros_like(p) for p in self.params] if momentum else [None] * len(self.params)
        self.scratch = [np.empty_like(p) for p in self.params]
        self.started = False

    def step(self, grads):
        lr, momentum = self.lr, self.momentum
        for p, g, b, s in zip(self.params, grads, self.buffers, self.scratch):
            if not momentum:
                np.multiply(g, lr, out=s)
            elif self.lr_in_velocity:                 # v = momentum*v + lr*g; p -= v
                b *= momentum
                np.multiply(g, lr, out=s)
                b += s
                s = b
            else:                                     # b = momentum*b + g (b = g first); p -= lr*b
                if self.started:
                    b *= momentum
                    b += g
                else:
                    np.copyto(b, g)
                np.multiply(b, lr, out=s)
            p -= s
        self.started = True


class NaiveNumPy:
    """Each algorithm written as plain NumPy expressions, a temporary per operation:
    what a first NumPy implementation looks like (state arrays are re-bound each step).
    """

    def __init__(self, algorithm, params):
        self.algorithm, self.params = algorithm, list(params)
        self.first = [np.zeros_like(p) for p in self.params]    # m, or the momentum buffer
        self.second = [np.zeros_like(p) for p in self.params]   # v (Adam only)
        self.t = 0

    def step(self, grads):
        self.t += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if self.algorithm in ("adam", "adamw"):
                if self.algorithm == "adamw":
                    p -= ADAM_LR * ADAMW_WEIGHT_DECAY * p
                m = self.first[i] = beta1 * self.first[i] + (1 - beta1) * g
                v = self.second[i] = beta2 * self.second[i] + (1 - beta2) * g * g
                p -= (ADAM_LR / (1 - beta1 ** self.t)) * m / (np.sqrt(v / (1 - beta2 ** self.t)) + eps)
            elif self.algorithm == "sgd":
                b = self.first[i] = SGD_MOMENTUM * self.first[i] + g if self.t > 1 else g.copy()
                p -= SGD_LR * b
            elif self.algorithm == "sgd-velocity":
                v = self.first[i] = SGD_MOMENTUM * self.first[i] + SGD_LR * g
                p -= v
            else:
                p -= SGD_LR * g


NUMPY_INPLACE_OPTIMIZERS = {
    "adam": lambda ps: NumPyAdam(ps, lr=ADAM_LR),
    "adamw": lambda ps: NumPyAdamW(ps),
    "sgd": lambda ps: NumPySGD(ps, momentum=SGD_MOMENTUM),
    "sgd-velocity": lambda ps: NumPySGD(ps, momentum=SGD_MOMENTUM, lr_in_velocity=True),
    "sgd-plain": lambda ps: NumPySGD(ps),
}


# -- adapters: (algorithm, workload, params, grads) -> step() ---------------------------

def _fusedopt_list(algorithm, workload, params, grads):
    optimizer = FUSEDOPT_OPTIMIZERS[algorithm]([p.copy() for p in params])
    return lambda: optimizer.step(grads)


def _step_flat_buffer(algorithm, flat):
    # one optimizer over one flat buffer: the model's FlatParams or one plain tensor
    optimizer = FUSEDOPT_OPTIMIZERS[algorithm]([flat.param])
    flat_grads = [flat.grad]
    return lambda: optimizer.step(flat_grads)


def _fusedopt_flat(algorithm, workload, params, grads):
    flat = fusedopt.FlatParams(workload.shapes, params[0].dtype)
    for view, p in zip(flat.params, params):
        view[...] = p
    for view, g in zip(flat.grads, grads):
        view[...] = g
    return _step_flat_buffer(algorithm, flat)


def _fusedopt_single(algorithm, workload, params, grads):
    # the same total size as one tensor, allocated like FlatParams (aligned), so
    # only the model's tensor layout differs from the flat buffer
    n = workload.n_elements
    flat = fusedopt.FlatParams([(n,)], params[0].dtype)  # rounded up to a cache line, as FlatParams does
    np.concatenate([p.ravel() for p in params], out=flat.param[:n])
    np.concatenate([g.ravel() for g in grads], out=flat.grad[:n])
    return _step_flat_buffer(algorithm, flat)


def _numpy_inplace(algorithm, workload, params, grads):
    optimizer = NUMPY_INPLACE_OPTIMIZERS[algorithm]([p.copy() for p in params])
    return lambda: optimizer.step(grads)


def _numpy_naive(algorithm, workload, params, grads):
    optimizer = NaiveNumPy(algorithm, [p.copy() for p in params])
    return lambda: optimizer.step(grads)


def _torch(mode):
    def build(algorithm, workload, params, grads):
        import torch

        tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
        for tensor, g in zip(tensors, grads):
            tensor.grad = torch.from_numpy(g)  # shares the NumPy gradient's memory
        return _torch_optimizer(algorithm, tensors, mode).step
    return build


@dataclass(frozen=True)
class Implementation:
    """One implementation: how to build its step, and how it uses threads.

    Attributes
    ----------
    name : str
    build : callable
        ``build(algorithm, workload, params, grads) -> step``; may raise when the
        implementation cannot run this case (the case is then listed as unavailable).
    threaded : bool
        Runs at every thread count of ``--threads``; NumPy runs once, on one thread.
    models_only : bool
        Only for model-shaped workloads (the FlatParams and single-buffer variants).
    needs_torch : bool
    is_peer : bool
        A competitor (for speed-ups and the "fastest peer" target), not fusedopt.
    """

    name: str
    build: Callable
    threaded: bool = True
    models_only: bool = False
    needs_torch: bool = False
    is_peer: bool = True

    def runs_on(self, workload, have_torch):
        """Whether this implementation takes part in a case on `workload`."""
        return (workload.is_model or not self.models_only) and (have_torch or not self.needs_torch)


IMPLEMENTATIONS = {i.name: i for i in [
    Implementation("fusedopt", _fusedopt_list, is_peer=False),
    Implementation("fusedopt-flat", _fusedopt_flat, models_only=True, is_peer=False),
    Implementation("fusedopt-single", _fusedopt_single, models_only=True, is_peer=False),
    Implementation("numpy-inplace", _numpy_inplace, threaded=False),
    Implementation("numpy-naive", _numpy_naive, threaded=False),
    Implementation("torch-foreach", _torch("foreach"), needs_torch=True),
    Implementation("torch-fused", _torch("fused"), needs_torch=True),
]}
PEERS = [name for name, impl in IMPLEMENTATIONS.items() if impl.is_peer]
