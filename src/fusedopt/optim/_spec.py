"""The declarative description of an algorithm, read by everything around its kernel.

A :class:`Spec` names the algorithm's C kernels (rows of csrc/kernels.def) and
its hyperparameters, with the check each value gets.  The state slots and the
per-tensor counters come from the C header itself (``_core.kernels()``), so
they cannot drift from what the kernel reads.  Validation, state allocation,
``state_dict``, checkpoints and the functional API all read the spec.
"""
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping, Optional

import numpy as np

from .. import _core

#: the checks a hyperparameter can get (see _ext/hyper.pxi)
KINDS = ("lr", "rate", "unit", "positive", "bool", "betas", "real", "eps_pair")

#: the compiled kernels (rows of csrc/kernels.def)
KERNELS = tuple(_core.kernels())


def storage_name(dtype):
    """A state storage as the kernels name it: "8bit", or a NumPy dtype name."""
    if isinstance(dtype, str) and dtype == "8bit":
        return dtype
    return np.dtype(dtype).name


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a param group.

    Attributes
    ----------
    name : str
        Its key in the group dict (and the constructor's argument).
    kind : str
        Its check: "lr" (number >= 0 or schedule), "rate" (finite >= 0), "unit"
        (in [0, 1]), "positive" (finite > 0, not 0 in float32), "bool", "betas"
        (pair in [0, 1)), "real" (finite), "eps_pair" (pair: None or finite >= 0,
        then finite >= 0; None fills -1).
    fields : tuple of str
        The kernel inputs it fills (default: its name; betas fill beta1, beta2;
        an eps_pair fills eps1, eps2).
    """

    name: str
    kind: str
    fields: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.fields:
            pairs = {"betas": ("beta1", "beta2"), "eps_pair": ("eps1", "eps2")}
            object.__setattr__(self, "fields", pairs.get(self.kind, (self.name,)))


@dataclass(frozen=True)
class Spec:
    """An algorithm as its optimizer class, functional API and tests see it.

    Attributes
    ----------
    algorithm : str
        The C algorithm (csrc/algorithms/<algorithm>.h).
    hypers : tuple of Hyper
        Its hyperparameters, in constructor order.
    constants : mapping
        Kernel inputs fixed by the class (AdamW: decoupled=1).
    check : callable, optional
        check(group) raises ValueError for invalid combinations of values.
    real_counters : tuple of str
        Counters that hold real numbers (NAdam's mu_product); the others count steps.
    initial_state : mapping
        Slots that start at a group's hyperparameter instead of 0, as
        {slot: hyperparameter} (Adagrad: {"sum": "initial_accumulator_value"}).
    group_counters : tuple of str
        Counters of the param group rather than the array (schedule-free's
        weight sum): an array new to a group starts with its group's values.
    row_sparse : tuple of str, optional
        The algorithm has a row-sparse step (``RowSparseGrad`` gradients, updating
        only the rows given) while these hyperparameters are 0 (they would touch
        every row: weight decay, momentum).  None: dense gradients only.
    dense : bool
        False if the algorithm takes row-sparse gradients only (SparseAdam).
    """

    algorithm: str
    hypers: tuple
    constants: Mapping[str, float] = field(default_factory=dict)
    check: Optional[Callable[[dict], None]] = None
    real_counters: tuple = ()
    initial_state: Mapping[str, str] = field(default_factory=dict)
    group_counters: tuple = ()
    row_sparse: Optional[tuple] = None
    dense: bool = True

    def kernel(self, param_dtype, grad_dtype=None, state_dtype=None):
        """The kernel catalogue entry for these dtypes (TypeError if none is compiled).
        Defaults: gradients of the parameter's dtype; state of the parameter's dtype
        (float32 for 16-bit parameters)."""
        param_dtype = np.dtype(param_dtype).name
        grad_dtype = param_dtype if grad_dtype is None else np.dtype(grad_dtype).name
        if state_dtype is None:
            state_dtype = param_dtype if param_dtype in ("float32", "float64") else "float32"
        state_dtype = storage_name(state_dtype)
        for entry in KERNELS:
            if (entry["algorithm"], entry["param_dtype"], entry["grad_dtype"], entry["state_dtype"]) == (
                    self.algorithm, param_dtype, grad_dtype, state_dtype):
                return entry
        raise TypeError(f"{self.algorithm} has no kernel for {param_dtype} parameters with "
                        f"{grad_dtype} gradients and {state_dtype} state")

    def state_dtypes(self):
        """The state storages some kernel of this algorithm offers."""
        return tuple(dict.fromkeys(e["state_dtype"] for e in KERNELS if e["algorithm"] == self.algorithm))

    @property
    def slots(self):
        """Names of the state slots, in the kernel's order."""
        return self._any_kernel()["slots"]

    @cached_property
    def slot_shapes(self):
        """{slot: its shape rule}: "full" (the parameter's shape), "rows", "cols" or
        "vector" (see _core.slot_shape)."""
        entry = self._any_kernel()
        return dict(zip(entry["slots"], entry["slot_shapes"]))

    @cached_property
    def factored(self):
        """True if some slot is factored (rows or columns of the last two dimensions)."""
        return any(rule in ("rows", "cols") for rule in self.slot_shapes.values())

    @property
    def counters(self):
        """Names of the per-tensor counters (step, ...), in the kernel's order."""
        return self._any_kernel()["counters"]

    def _any_kernel(self):
        for entry in KERNELS:
            if entry["algorithm"] == self.algorithm:
                return entry
        raise TypeError(f"no kernel of algorithm {self.algorithm!r} is compiled")

    def reader(self, constants=None):
        """The binding's reader of this spec's param groups (constants override the class's)."""
        values = dict(self.constants, **(constants or {}))
        program = [(h.name, h.kind, h.fields, None) for h in self.hypers]
        program += [(name, "constant", (name,), value) for name, value in values.items()]
        return _core.HyperReader(self._any_kernel()["inputs"], program, self.check)
