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
from fusedopt import slow

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


# -- the NumPy peer --------------------------------------------------------------------

class NumPyTwin:
    """The NumPy peer: :mod:`fusedopt.slow`'s twin of the algorithm, with its state arrays.

    ``fusedopt.slow.adam_`` / ``sgd_`` update the arrays in place with whole-array
    NumPy expressions in the kernel's order of operations, each expression
    allocating its temporaries: the textbook NumPy implementation, so there is
    one NumPy peer, not an in-place (``out=``) one and a naive one.
    """

    def __init__(self, algorithm, params):
        self.algorithm, self.params = algorithm, list(params)
        self.step_count = 0
        if algorithm in ("adam", "adamw"):
            self.exp_avg = [np.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [np.zeros_like(p) for p in self.params]
        elif algorithm != "sgd-plain":
            self.momentum_buffer = [np.zeros_like(p) for p in self.params]

    def step(self, grads):
        self.step_count += 1
        if self.algorithm in ("adam", "adamw"):
            adamw = self.algorithm == "adamw"
            slow.adam_(self.params, grads, self.exp_avg, self.exp_avg_sq, step=self.step_count,
                       lr=ADAM_LR, beta1=0.9, beta2=0.999, eps=1e-8,
                       weight_decay=ADAMW_WEIGHT_DECAY if adamw else 0.0, decoupled=adamw)
        elif self.algorithm == "sgd-plain":
            slow.sgd_(self.params, grads, lr=SGD_LR)
        else:
            slow.sgd_(self.params, grads, self.momentum_buffer, lr=SGD_LR, momentum=SGD_MOMENTUM,
                      lr_in_velocity=self.algorithm == "sgd-velocity",
                      first_step=self.step_count == 1)


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


def _numpy(algorithm, workload, params, grads):
    optimizer = NumPyTwin(algorithm, [p.copy() for p in params])
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
    Implementation("numpy-inplace", _numpy, threaded=False),
    Implementation("torch-foreach", _torch("foreach"), needs_torch=True),
    Implementation("torch-fused", _torch("fused"), needs_torch=True),
]}
PEERS = [name for name, impl in IMPLEMENTATIONS.items() if impl.is_peer]
