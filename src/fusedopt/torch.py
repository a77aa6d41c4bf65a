"""fusedopt's optimizers as ``torch.optim.Optimizer`` subclasses, for PyTorch on CPU.

``fusedopt.torch.AdamW(model.parameters(), lr=1e-3)`` is a drop-in replacement of
``torch.optim.AdamW``: the same constructor, param groups, ``step(closure)``,
``zero_grad``, ``add_param_group``, LR schedulers and ``state_dict`` format (a
``torch.optim`` state dict loads into it and the other way round), while every
step runs fusedopt's fused kernels on zero-copy NumPy views of the tensors.

Each class takes its ``torch.optim`` peer's arguments, plus fusedopt's
keyword-only options where the algorithm has them: ``state_dtype``,
``master_weights``, ``stochastic_rounding``, ``seed``, ``min_8bit_size``,
``skip_nonfinite``, ``max_grad_norm`` and ``grad_scale`` (see
:class:`fusedopt.Optimizer`).  Lion, LAMB and the schedule-free optimizers,
which torch lacks, take fusedopt's arguments.

What differs from ``torch.optim``:

* Tensors must be CPU, contiguous, float32/float64/bfloat16/float16, and so must
  their gradients (a dense gradient of a 32-bit parameter may also be
  bfloat16/float16).  Anything else raises, naming the parameter: a copy would
  not be updated in place.
* ``foreach`` and ``fused`` are accepted and ignored (every step is fused);
  ``capturable=True`` and ``differentiable=True`` raise ValueError.
* Optimizer state is allocated for every parameter at construction (torch
  allocates it at a parameter's first step); a parameter whose ``.grad`` is None
  sits the step out, as in torch.
* ``state_dict()`` holds live views of the state, as torch's holds references;
  with ``state_dtype="bfloat16"`` or ``"8bit"`` it holds the stored codes
  (``torch.optim`` cannot load those), and it has one more key, ``"fusedopt"``
  (the storage options and step counts; ``torch.optim`` ignores it).
* With 16-bit parameters and master weights, the float32 master copy is the
  weights the optimizer steps: write new weights through ``p.data = ...``
  (the master restarts from them), not in place.

``import fusedopt`` never imports torch; this module does.
"""
import collections
import contextlib
import copy
import inspect
import itertools
import numbers
import operator
import re
import weakref

try:
    import torch
except ImportError as exc:   # pragma: no cover - exercised where torch is absent
    raise ImportError("fusedopt.torch needs PyTorch: pip install torch (a CPU build: "
                      "pip install torch --index-url https://download.pytorch.org/whl/cpu)") from exc

import ml_dtypes
import numpy as np

from . import optim as _optim
from ._core import RowSparseGrad

__all__ = ["Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "AdamWScheduleFree", "LAMB",
           "Lion", "Muon", "NAdam", "RAdam", "RMSprop", "SGD", "SGDScheduleFree", "SparseAdam",
           "FusedOptimizer"]

#: fusedopt's keyword-only options (those its class takes are added to each signature)
FUSEDOPT_OPTIONS = ("skip_nonfinite", "max_grad_norm", "grad_scale", "state_dtype", "master_weights",
                    "stochastic_rounding", "seed", "min_8bit_size")
#: torch.optim options that would need what fusedopt does not do (autograd through
#: the step, CUDA graphs): refused when True
_REFUSED_FLAGS = ("capturable", "differentiable")
_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
#: counters torch keeps as 0-d tensors
_TENSOR_COUNTERS = ("step", "mu_product")
#: 8-bit state in torch's format: "exp_avg_codes" (uint8) and "exp_avg_absmax"
CODES_SUFFIX = "_codes"
_POSITION = re.compile(r"\b(params|grads)\[(\d+)\]")


def _renamed(exc, where):
    """`exc` with fusedopt's positions (params[k], grads[k]: the k-th parameter that
    had a gradient) given as torch's param_groups[g]['params'][i]."""
    def name(match):
        k = int(match.group(2))
        if k >= len(where):
            return match.group(0)
        g, i = where[k]
        return ("the gradient of " if match.group(1) == "grads" else "") + _where(g, i)
    message = _POSITION.sub(name, str(exc))
    return exc if message == str(exc) else type(exc)(message)


def _scalar_dtype():
    # torch keeps "step" in float64 when that is the default dtype, else float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _plain(value):
    """A hyperparameter as fusedopt reads it: 0-d tensors as numbers, lists as tuples."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"a tensor hyperparameter must hold one number, got shape {tuple(value.shape)}")
        return value.item()
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return value


def _numpy_view(tensor):
    """The tensor's memory as an ndarray (bfloat16 through ml_dtypes); no copy."""
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _tensor_of(array):
    """An ndarray's memory as a tensor (bfloat16 through int16); no copy."""
    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _array_of(tensor, dtype, what):
    """A loaded state tensor as a new ndarray of `dtype` (floats cast as torch.optim casts them)."""
    if not isinstance(tensor, torch.Tensor):
        return tensor
    tensor = tensor.detach().to("cpu")
    if dtype == ml_dtypes.bfloat16:
        if tensor.is_floating_point():
            tensor = tensor.to(torch.bfloat16)
        if tensor.dtype != torch.bfloat16:
            raise ValueError(f"{what} is {tensor.dtype}, expected bfloat16")
        return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    if tensor.is_floating_point() and np.dtype(dtype).kind == "f":
        tensor = tensor.to(getattr(torch, np.dtype(dtype).name))
    return tensor.contiguous().numpy().copy()


def _where(g, i):
    return f"param_groups[{g}]['params'][{i}]"


def _check_tensor(t, what, grad=False):
    """TypeError/ValueError naming `what` unless fusedopt can step `t` in place."""
    if t.layout != torch.strided:
        raise TypeError(f"{what} is a {t.layout} tensor; fusedopt.torch steps dense (strided) tensors"
                        + ("" if grad else " (sparse gradients are taken, as torch.sparse_coo)"))
    if not t.is_cpu:
        raise ValueError(f"{what} is on {t.device}; fusedopt.torch steps CPU tensors (keep the "
                         f"optimizer's copy of the parameters on the CPU, as CPU offload does)")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{what} is {t.dtype}; fusedopt.torch steps float32, float64, bfloat16 "
                        f"and float16 tensors")
    if not t.is_contiguous():
        raise ValueError(f"{what} is not contiguous; fusedopt.torch updates tensors in place "
                         f"and will not step a copy (make it contiguous before building the optimizer)")
    if not _within_storage(t):
        raise ValueError(f"{what} reaches past the end of its storage ({t.untyped_storage().nbytes()} "
                         f"bytes; storage.resize_() shrank it, as FSDP frees parameters)")


def _within_storage(t):
    """Whether contiguous tensor t's elements lie inside its storage: a storage can be
    shrunk under its tensors (untyped_storage().resize_()), and torch's .numpy() does
    not check (with no bytes left it even returns a new, unrelated array)."""
    return (t.storage_offset() + t.numel()) * t.element_size() <= t.untyped_storage().nbytes()


class _Memory:
    """What an ndarray needs to see another array's memory without holding its owner."""

    __slots__ = ("__array_interface__",)

    def __init__(self, array):
        self.__array_interface__ = array.__array_interface__


class _View:
    """A parameter tensor's NumPy view, what it was made from, and the last
    gradient's view (kept while that gradient tensor lives, which it does not prolong)."""

    __slots__ = ("tensor", "ptr", "shape", "dtype", "array", "grad_ref", "grad_ptr", "grad_shape", "grad_dtype",
                 "grad_array")

    def __init__(self, tensor, what):
        _check_tensor(tensor, what)
        try:
            self.array = _numpy_view(tensor)
        except RuntimeError as exc:   # a negative or conjugate view
            raise ValueError(f"{what} cannot be viewed as a NumPy array: {exc}") from None
        self.tensor = tensor
        self.ptr = tensor.data_ptr()
        self.shape = tensor.shape
        self.dtype = tensor.dtype
        self.grad_ref = None
        self.grad_array = None

    def grad_view(self, grad, memory):
        """`grad` as an ndarray, or None where .numpy() cannot make one (bfloat16, sparse,
        another device, requires_grad: the caller checks and names those).

        A gradient tensor seen at two steps in a row (CPU offload keeps its
        gradients in the same buffers; zero_grad(set_to_none=False)) gets a view
        made once, which does not keep it alive (a gradient set to None is freed).
        Such a view is returned with its tensor's storage appended to `memory`,
        taken before the view is checked: held through the step, it keeps the
        memory the view reads allocated even if another thread gives the tensor
        other memory (set_, .data =) meanwhile.  A new tensor at each step
        (zero_grad()'s default) costs one .numpy(), whose array holds the storage
        itself (through an alias of the tensor)."""
        if self.grad_ref is not None and self.grad_ref() is grad:
            try:
                storage = grad.untyped_storage()
            except (RuntimeError, NotImplementedError, TypeError):
                return None
            if _unchanged(grad, self.grad_ptr, self.grad_dtype, self.grad_shape):
                if self.grad_array is None:
                    try:
                        array = grad.numpy()
                    except (RuntimeError, TypeError):
                        return None
                    self.grad_array = np.asarray(_Memory(array))
                    memory.append(array)   # what the view reads, whatever happened since the check
                memory.append(storage)
                return self.grad_array
        try:
            array = grad.numpy()   # its storage can no longer be resized: checked once here
        except (RuntimeError, TypeError):
            return None
        if not _within_storage(array.base if isinstance(array.base, torch.Tensor) else grad):
            return None   # checked on the alias the array holds (the caller names the problem)
        self.grad_ref = weakref.ref(grad)
        self.grad_ptr = grad.data_ptr()
        self.grad_shape = grad.shape
        self.grad_dtype = grad.dtype
        self.grad_array = None
        return array


_GRAD = operator.attrgetter("grad")
_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_DEREFERENCE = weakref.ref.__call__
_LastStep = collections.namedtuple(
    "_LastStep", "counts params fused_params grad_refs grads where param_meta grad_meta")


def _unchanged(t, ptr, dtype, shape):
    """Whether tensor `t` still has the memory, dtype and shape a view of it was made
    from, contiguous and not lazily negated (else the view would read other elements,
    or read them unnegated)."""
    return (t.data_ptr() == ptr and t.dtype is dtype and t.shape == shape and t.is_contiguous()
            and not t.is_neg())


def _metadata(tensors):
    """What _unchanged compares, for many tensors at once (C-level loops): memory,
    shapes, dtypes, and whether all are contiguous and none lazily negated."""
    return (list(map(torch.Tensor.data_ptr, tensors)), list(map(_SHAPE, tensors)),
            list(map(_DTYPE, tensors)), all(map(torch.Tensor.is_contiguous, tensors)),
            not any(map(torch.Tensor.is_neg, tensors)))


class FusedOptimizer(torch.optim.Optimizer):
    """Base of fusedopt.torch's optimizers: a ``torch.optim.Optimizer`` whose
    step is a fusedopt optimizer's, over NumPy views of the parameters.

    A subclass sets ``fused_class`` (the fusedopt class) and ``torch_class``
    (its ``torch.optim`` peer, or None); the constructor takes the peer's
    arguments (or the fusedopt class's) and fusedopt's keyword-only options.
    """

    fused_class = None
    torch_class = None
    #: the hyperparameters the fusedopt class reads from each group
    hyper_names = ()
    #: slots fusedopt fills at each step before reading them (not in torch's state)
    scratch_slots = ()

    def __init__(self, params, *args, **kwargs):
        arguments = self._bind(params, args, kwargs)
        options = {name: arguments.pop(name) for name in FUSEDOPT_OPTIONS if name in arguments}
        params = arguments.pop("params")
        defaults = self._torch_defaults(arguments)
        self._setup(params, defaults, options)

    # -- construction -----------------------------------------------------------

    @classmethod
    def _bind(cls, params, args, kwargs):
        try:
            bound = cls.__signature__.bind(params, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}(): {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _torch_defaults(self, arguments):
        """The defaults dict torch.optim's peer would build from these arguments,
        checked by the peer itself (same errors), plus fusedopt's own hyperparameters."""
        for flag in _REFUSED_FLAGS:
            if arguments.get(flag):
                raise ValueError(f"{flag}=True is not supported by fusedopt.torch ({flag} needs "
                                 f"torch's own kernels)")
        if self.torch_class is None:
            return arguments
        torch_names = inspect.signature(self.torch_class.__init__).parameters
        given = {name: value for name, value in arguments.items() if name in torch_names}
        lr = given.get("lr")
        if callable(lr) and not isinstance(lr, torch.Tensor):
            given["lr"] = 1e-3   # a fusedopt schedule: torch checks a number in its place
        probe = self.torch_class([torch.zeros(2, 2, requires_grad=True)], **given)
        defaults = dict(probe.defaults)
        defaults.update((name, value) for name, value in arguments.items() if name not in torch_names)
        if "lr" in given:
            defaults["lr"] = lr
        return defaults

    def _setup(self, params, defaults, options):
        self._views = {}            # id(tensor) -> _View of each parameter seen
        self._last_step = None      # what a step like the last one reuses (_repeated_step)
        self._fused = None
        self._options = dict(options)
        super().__init__(params, defaults)   # calls add_param_group for each group
        if self.torch_class is torch.optim.Adam or self.torch_class is torch.optim.AdamW:
            # torch's Adam with decoupled_weight_decay=True is AdamW: fusedopt's AdamW kernel
            self._decoupled = bool(self.defaults.get("decoupled_weight_decay", False))
            fused_class = _optim.AdamW if self._decoupled else _optim.Adam
        else:
            self._decoupled = None
            fused_class = self.fused_class
        groups = [self._fused_group(g, group, [self._views[id(p)].array for p in group["params"]])
                  for g, group in enumerate(self.param_groups)]
        self._fused = fused_class(groups, **self._options)
        self._fused._keep_absent_state = True

    def _locked(self):
        """The fused optimizer's lock (reentrant): what a step reads and writes of the
        groups is read and written by one thread at a time."""
        fused = getattr(self, "_fused", None)
        return contextlib.nullcontext() if fused is None else fused._stepper.lock

    def add_param_group(self, param_group):
        """Add a group (torch.optim's checks, then fusedopt's: CPU, contiguous, dtype)."""
        with self._locked():
            super().add_param_group(param_group)
            group = self.param_groups[-1]
            g = len(self.param_groups) - 1
            try:
                views = [self._current_view(p, g, i) for i, p in enumerate(group["params"])]
                if self._fused is not None:
                    self._fused.add_param_group(self._fused_group(g, group, [v.array for v in views]))
            except BaseException:
                self.param_groups.pop()
                raise

    def _view(self, p, g, i):
        view = self._views.get(id(p))
        if view is None or view.tensor is not p:
            view = self._views[id(p)] = _View(p, _where(g, i))
        return view

    def _current_view(self, p, g, i):
        """p's view, made again where p's memory or layout changed (p.data = t)."""
        view = self._views.get(id(p))
        if view is None or view.tensor is not p:
            return self._view(p, g, i)
        if not _unchanged(p, view.ptr, view.dtype, view.shape):   # p.data = t
            return self._replaced(view, p, g, i)
        return view

    def _check_group(self, g, group):
        """ValueError where torch's group `g` asks what fusedopt.torch does not do."""
        for flag in _REFUSED_FLAGS:
            if group.get(flag):
                raise ValueError(f"param_groups[{g}][{flag!r}]=True is not supported by fusedopt.torch")
        if self._decoupled is not None and bool(group.get("decoupled_weight_decay", False)) != self._decoupled:
            raise ValueError(f"param_groups[{g}]['decoupled_weight_decay'] differs from the "
                             f"optimizer's ({self._decoupled}); one optimizer runs one of Adam and AdamW")

    def _fused_group(self, g, group, arrays):
        """fusedopt's group for torch's group `g`: the arrays and the hyperparameters."""
        self._check_group(g, group)
        fused = {name: _plain(group[name]) for name in self.hyper_names if name in group}
        fused["params"] = arrays
        return fused

    # -- stepping ---------------------------------------------------------------

    def step(self, closure=None):
        """One fused step of every parameter that has a gradient; returns `closure()`'s loss.

        Returns the loss (None without a closure) even when the step is skipped
        (``skip_nonfinite``); ``skipped_steps`` counts those."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._locked():
            grads, held, names, memory = self._gather()
            try:
                self._fused.step(grads)   # `memory`: what views made once read, allocated until the step ends
            except (TypeError, ValueError) as exc:
                self._check_grads()   # the error again, naming the parameter, where it is a gradient's
                raise _renamed(exc, names) from None
        return loss

    def _check_grads(self):
        for g, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                view = self._views.get(id(p))
                if view is not None and view.tensor is p and p.shape != view.shape:
                    raise ValueError(f"{_where(g, i)} was reshaped in place (to {tuple(p.shape)}, from "
                                     f"{tuple(view.shape)}); give it its shape back, or new memory "
                                     f"(p.data = t), to step it")
                if p.grad is not None:
                    self._grad_view(p.grad, p, g, i)

    def _gather(self):
        """Bring fusedopt's groups up to date with torch's (hyperparameters, which
        parameters have gradients, replaced parameter memory); the gradients' views,
        the gradient tensors they view, their positions, and the storages that keep
        views made once readable (_View.grad_view)."""
        self._match_group_count()
        fused_groups = self._fused.param_groups
        names = self.hyper_names
        for g, (group, fused) in enumerate(zip(self.param_groups, fused_groups)):
            self._check_group(g, group)
            for name in names:
                if name in group:
                    fused[name] = _plain(group[name])
        repeated = self._repeated_step()
        if repeated is not None:
            return repeated
        self._last_step = None   # recorded again below if this gathering completes
        grads, held, where, memory = [], [], [], []
        views = self._views
        for g, (group, fused) in enumerate(zip(self.param_groups, fused_groups)):
            arrays = []
            for i, p in enumerate(group["params"]):
                grad = p.grad
                if grad is None:
                    continue
                view = views.get(id(p))
                if view is None or view.tensor is not p or not _unchanged(p, view.ptr, view.dtype, view.shape):
                    view = self._current_view(p, g, i)
                arrays.append(view.array)
                where.append((g, i))
                held.append(grad)
                array = view.grad_view(grad, memory)
                # None: not a plain CPU tensor; checked, named, or taken as row-sparse here
                grads.append(self._grad_view(grad, p, g, i) if array is None else array)
            current = fused["params"]
            if len(current) != len(arrays) or any(a is not b for a, b in zip(current, arrays)):
                fused["params"] = arrays
        self._record_step(held, grads, where)
        return grads, held, where, memory

    def _record_step(self, held, grads, where):
        """Remember a step whose every parameter had a gradient already seen at the step
        before (views made once): the next step, if it finds the same tensors with the
        same memory, reuses the lists instead of checking parameter by parameter."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(held) != len(params):
            return
        views = [self._views[id(p)] for p in params]
        if any(view.grad_array is not array for view, array in zip(views, grads)):
            return
        self._last_step = _LastStep(
            counts=[len(group["params"]) for group in self.param_groups], params=params,
            fused_params=[fused["params"] for fused in self._fused.param_groups],
            grad_refs=[view.grad_ref for view in views], grads=grads, where=where,
            param_meta=_metadata(params), grad_meta=_metadata(held))

    def _repeated_step(self):
        """The last step's (grads, held, where) and the gradients' storages where the
        parameters, their gradient tensors and the memory, shapes, dtypes and layout of
        both are as they were; else None."""
        last = self._last_step
        if last is None or [len(group["params"]) for group in self.param_groups] != last.counts:
            return None
        params = [p for group in self.param_groups for p in group["params"]]
        if not all(map(operator.is_, params, last.params)):
            return None
        if not all(map(operator.is_, (fused["params"] for fused in self._fused.param_groups), last.fused_params)):
            return None
        held = list(map(_GRAD, params))
        # the same gradient tensors (a freed one dereferences to None, as a removed .grad reads)
        if (not all(map(operator.is_, held, map(_DEREFERENCE, last.grad_refs)))
                or any(map(operator.is_, held, itertools.repeat(None)))):
            return None
        memory = list(map(torch.Tensor.untyped_storage, held))   # before the check (_View.grad_view)
        if _metadata(params) != last.param_meta or _metadata(held) != last.grad_meta:
            return None
        return last.grads, held, last.where, memory

    def _match_group_count(self):
        fused_groups = self._fused.param_groups
        if len(fused_groups) != len(self.param_groups):
            # torch's list of groups was edited directly: rebuild fusedopt's
            del fused_groups[:]
            fused_groups.extend(self._fused_group(g, group, []) for g, group in enumerate(self.param_groups))

    def _replaced(self, old, p, g, i):
        """`p.data = ...` gave p other memory: step that, with p's state (same shape and dtype)."""
        what = _where(g, i)
        new = _View(p, what)
        if new.array.size != old.array.size or new.array.dtype != old.array.dtype:
            raise ValueError(f"{what} now holds a {new.array.dtype} tensor of shape {tuple(p.shape)}, "
                             f"its optimizer state was made for {old.array.dtype} {old.array.shape}")
        # new memory: new weights, from which a master copy restarts; the same memory
        # reshaped (p.data = p.data.view(...)): the same weights, the master kept
        self._fused._move_state(old.array, new.array, reset_master=new.ptr != old.ptr)
        self._views[id(p)] = new
        return new

    @staticmethod
    def _grad_view(grad, p, g, i):
        what = f"the gradient of {_where(g, i)}"
        if grad.layout == torch.sparse_coo:
            if grad.sparse_dim() != 1 or grad.dense_dim() != p.dim() - 1:
                raise ValueError(f"{what} is sparse over {grad.sparse_dim()} dimensions; fusedopt "
                                 f"takes row-sparse gradients (sparse over the first dimension only)")
            indices, values = grad._indices(), grad._values()
            _check_tensor(values, what + " (its values)", grad=True)
            if not indices.is_cpu:
                raise ValueError(f"{what} has its indices on {indices.device}")
            if not _within_storage(indices):
                raise ValueError(f"{what} has indices that reach past the end of their storage")
            return RowSparseGrad(indices[0].numpy(), _numpy_view(values))
        _check_tensor(grad, what, grad=True)
        if grad.is_neg():
            raise ValueError(f"{what} is a negated view (torch's lazy negation): make it a tensor "
                             f"of its own (grad.resolve_neg())")
        if grad.shape != p.shape:
            raise ValueError(f"{what} has shape {tuple(grad.shape)}, the parameter {tuple(p.shape)}")
        if grad.dtype != p.dtype and grad.itemsize >= p.itemsize:
            raise TypeError(f"{what} is {grad.dtype}, the parameter {p.dtype}: a gradient may be "
                            f"narrower than its parameter (bfloat16/float16 for float32), not wider")
        return _numpy_view(grad)

    # -- what fusedopt adds -------------------------------------------------------

    @property
    def fused(self):
        """The fusedopt optimizer that runs the steps (over NumPy views of the parameters)."""
        return self._fused

    @property
    def skipped_steps(self):
        """Steps skipped because of non-finite gradients (``skip_nonfinite=True``)."""
        return self._fused.skipped_steps

    @property
    def last_grad_norm(self):
        """The global gradient norm of the last step, where it was computed (``max_grad_norm``)."""
        return self._fused.last_grad_norm

    def state_nbytes(self, per_element=False):
        """Bytes of optimizer state (see :meth:`fusedopt.Optimizer.state_nbytes`)."""
        return self._fused.state_nbytes(per_element)

    # -- state, in torch's format -------------------------------------------------

    @property
    def state(self):
        """``{parameter tensor: {name: tensor}}`` in torch.optim's format: slots are
        live views of fusedopt's buffers; "step" is a 0-d tensor.  Parameters that
        have not stepped yet are left out, as in torch."""
        result = collections.defaultdict(dict)
        if getattr(self, "_fused", None) is None:
            return result
        with self._fused._stepper.lock:
            for group in self.param_groups:
                for p in group["params"]:
                    entry = self._torch_entry(p)
                    if entry is not None:
                        result[p] = entry
        return result

    @state.setter
    def state(self, value):
        # torch.optim.Optimizer.__init__ assigns an empty state; later, an empty one is the
        # reset idiom (opt.state = defaultdict(dict)): every parameter starts afresh
        if value:
            raise AttributeError("the state of a fusedopt.torch optimizer is set by load_state_dict "
                                 "(opt.state = {} resets it)")
        fused = getattr(self, "_fused", None)
        if fused is not None:
            with self._locked():
                fresh = fused.state_dict()
                fresh["state"] = {}
                fused.load_state_dict(fresh)

    def _torch_entry(self, p):
        view = self._views.get(id(p))
        live = None if view is None else self._fused._live_state(view.array)
        if live is None:
            return None
        slots, counters = live
        if not any(counters.values()):
            return None      # never stepped: torch has no state for it yet
        entry = {}
        for name, value in counters.items():
            entry[name] = (torch.tensor(float(value), dtype=_scalar_dtype()) if name in _TENSOR_COUNTERS
                           else value)
        for name, buffer in slots.items():
            if name in self.scratch_slots:
                continue
            if name == "momentum_buffer" and not counters.get("momentum_started", 1):
                continue     # torch's SGD starts the buffer at the gradient when it has none
            # 8-bit codes under their own name: torch.optim must not read them as moments
            key = name + CODES_SUFFIX if buffer.dtype == np.uint8 else name
            entry[key] = _tensor_of(buffer.reshape(self._fused._state_shape(name, buffer, view.array)))
        return entry

    def state_dict(self):
        """torch.optim's ``state_dict`` (``"state"``, ``"param_groups"``) plus ``"fusedopt"``:
        the storage options and step counts.  A snapshot: copies of the state (torch's holds
        references to its live tensors, but fusedopt's step counts cannot be tensors shared with it)."""
        with self._locked():
            result = super().state_dict()
            # a snapshot (torch's holds references to its live state; here the step
            # counts cannot be live, so nothing is: the state dict is self-consistent)
            result["state"] = {i: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in entry.items()}
                               for i, entry in result["state"].items()}
        fused = self._fused
        result["fusedopt"] = {"storage": dict(fused._storage), "step_count": fused.step_count,
                              "skipped_steps": fused.skipped_steps}
        return result

    def load_state_dict(self, state_dict):
        """Load a state dict of this class or of its ``torch.optim`` peer.

        Checked in full before anything changes (group count and sizes, every
        buffer's shape and dtype, the storage options): a state dict that does
        not fit raises and leaves the optimizer as it was.  Floating-point state
        is cast to the dtype this optimizer keeps it in, as torch.optim casts it."""
        with self._locked():
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = dict(state_dict)   # the hooks may edit it, not the caller's (as torch)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"state_dict is missing {key!r}")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict) or len(saved.get("params", ())) != len(group["params"]):
                raise ValueError(f"loaded state dict's param_groups[{g}] does not match the size of "
                                 f"the optimizer's group")
        new_groups = []
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            new = {name: copy.deepcopy(value) for name, value in saved.items() if name != "params"}
            new["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                new["param_names"] = group["param_names"]
            new_groups.append(new)
        # fusedopt's state dict over every parameter, in the groups' order
        fused = self._fused
        self._match_group_count()
        arrays, index_of = [], {}
        for g, (saved, group) in enumerate(zip(saved_groups, new_groups)):
            for i, (key, p) in enumerate(zip(saved["params"], group["params"])):
                view = self._current_view(p, g, i)
                index_of[key] = len(arrays)
                arrays.append(view.array)
        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise TypeError(f"state_dict['state'] must be a dict, got {type(saved_state).__name__}")
        state = {}
        for key, entry in saved_state.items():
            if key not in index_of:
                raise ValueError(f"state_dict['state'] has an entry {key!r} for no parameter of the groups")
            if not isinstance(entry, dict):
                raise TypeError(f"state_dict['state'][{key!r}] must be a dict, got {type(entry).__name__}")
            state[index_of[key]] = self._fused_entry(entry, arrays[index_of[key]], key)
        extra = state_dict.get("fusedopt", {})
        if not isinstance(extra, dict):
            raise TypeError("state_dict['fusedopt'] must be a dict")
        steps = [entry.get("step", 0) for entry in state.values()]
        fused_dict = {
            "algorithm": type(fused).__name__,
            "step_count": extra.get("step_count", max(steps, default=0)),
            "skipped_steps": extra.get("skipped_steps", 0),
            "state": state,
            "param_groups": [],
        }
        start = 0
        for g, group in enumerate(new_groups):
            size = len(group["params"])
            fused_dict["param_groups"].append(self._fused_group(g, group, list(range(start, start + size))))
            start += size
        if "storage" in extra:
            fused_dict["storage"] = extra["storage"]
        # every parameter in fusedopt's groups while loading; the next step leaves
        # out those without gradients again
        old_lists = [group["params"] for group in fused.param_groups]
        start = 0
        for group, new in zip(fused.param_groups, new_groups):
            group["params"] = arrays[start:start + len(new["params"])]
            start += len(new["params"])
        try:
            fused.load_state_dict(fused_dict)
        except BaseException:
            for group, params in zip(fused.param_groups, old_lists):
                group["params"] = params
            raise
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _fused_entry(self, entry, array, key):
        """A torch-format state entry as fusedopt's: tensors as ndarrays of the dtypes
        fusedopt keeps (floats cast), counters as numbers."""
        fused = self._fused
        kernel, master = fused._layout(array)
        buffers = fused._buffers(array, kernel, master, range(len(fused.spec.slots)))
        result = {}
        for name, value in entry.items():
            what = f"state_dict['state'][{key!r}][{name!r}]"
            if name.endswith(CODES_SUFFIX) and name[:-len(CODES_SUFFIX)] in buffers:
                name = name[:-len(CODES_SUFFIX)]
            if value is None and name not in fused.spec.counters:
                continue   # torch.optim's SGD keeps momentum_buffer None without momentum
            if name in fused.spec.counters:
                if isinstance(value, torch.Tensor):
                    if value.numel() != 1:
                        raise ValueError(f"{what} must hold one number, got shape {tuple(value.shape)}")
                    value = value.item()
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError(f"{what} must be a number, got {value!r}")
                if isinstance(value, np.generic):
                    value = value.item()
                if name not in fused.spec.real_counters:
                    if isinstance(value, float) and value.is_integer():
                        value = int(value)
                result[name] = value
            elif name in buffers:
                shape, dtype = buffers[name]
                result[name] = _array_of(value, dtype, what)
            else:
                result[name] = value   # fusedopt names what it does not know
        if "momentum_started" in fused.spec.counters and "momentum_started" not in result:
            result["momentum_started"] = int("momentum_buffer" in result)
        for name in fused.spec.counters:
            result.setdefault(name, 0)
        for name in self.scratch_slots:
            if name in buffers and name not in result:
                shape, dtype = buffers[name]
                result[name] = np.zeros(shape, dtype)
        return result

    # -- pickling (torch.save(optimizer), copy.deepcopy) ---------------------------

    def __getstate__(self):
        return {"param_groups": self.param_groups, "defaults": self.defaults,
                "options": self._options, "state_dict": self.state_dict()}

    def __setstate__(self, pickled):
        FusedOptimizer._setup(self, [dict(group) for group in pickled["param_groups"]],
                              pickled["defaults"], pickled["options"])
        self.load_state_dict(pickled["state_dict"])

    def __repr__(self):
        return super().__repr__().replace(type(self).__name__, f"fusedopt.torch.{type(self).__name__}", 1)


class _ScheduleFree:
    """train()/eval() of the schedule-free optimizers (as the schedulefree package's)."""

    @property
    def train_mode(self):
        """True between train() and eval(): the parameters hold the training point."""
        return self._fused.train_mode

    def train(self):
        """Switch the parameters to the training point (call before step())."""
        self._fused.train()

    def eval(self):
        """Switch the parameters to the averaged point (call before evaluating or saving)."""
        self._fused.eval()


def _signature(fused_class, torch_class):
    """The constructor's signature: torch's peer's (or the fusedopt class's), then
    fusedopt's hyperparameters torch lacks and fusedopt's options, keyword-only."""
    fused_parameters = list(inspect.signature(fused_class.__init__).parameters.values())[1:]
    if torch_class is None:
        return inspect.Signature(fused_parameters)
    parameters = list(inspect.signature(torch_class.__init__).parameters.values())[1:]
    parameters = [p.replace(annotation=p.empty) for p in parameters]
    have = {p.name for p in parameters}
    keyword_only = [p.replace(kind=p.KEYWORD_ONLY) for p in fused_parameters
                    if p.name not in have and p.name != "params"]
    return inspect.Signature(parameters + keyword_only)


def _optimizer_class(name, fused_class, torch_class, scratch_slots=()):
    doc = (f"fusedopt's fused :class:`fusedopt.{fused_class.__name__}` as a ``torch.optim`` optimizer"
           + (f", with the arguments of ``torch.optim.{torch_class.__name__}``" if torch_class else "")
           + " (and fusedopt's keyword-only options).\n\n"
           + f"See :mod:`fusedopt.torch` and :class:`fusedopt.{fused_class.__name__}`.")
    bases = (_ScheduleFree, FusedOptimizer) if hasattr(fused_class, "train_mode") else (FusedOptimizer,)
    cls = type(name, bases, {
        "__doc__": doc, "__module__": __name__, "fused_class": fused_class, "torch_class": torch_class,
        "scratch_slots": tuple(scratch_slots), "hyper_names": _hyper_names(fused_class),
        "__signature__": _signature(fused_class, torch_class),
    })
    return cls


def _hyper_names(fused_class):
    """The hyperparameters a fusedopt class reads from each group."""
    signature = inspect.signature(fused_class.__init__)
    return tuple(name for name, p in signature.parameters.items()
                 if name not in ("self", "params") and p.kind == p.POSITIONAL_OR_KEYWORD)


def _torch_peer(name):
    return getattr(torch.optim, name, None)


# One line per optimizer: its name (in torch.optim where torch has it), the fusedopt class.
Adam = _optimizer_class("Adam", _optim.Adam, _torch_peer("Adam"))
AdamW = _optimizer_class("AdamW", _optim.AdamW, _torch_peer("AdamW"))
SGD = _optimizer_class("SGD", _optim.SGD, _torch_peer("SGD"))
Adagrad = _optimizer_class("Adagrad", _optim.Adagrad, _torch_peer("Adagrad"))
RMSprop = _optimizer_class("RMSprop", _optim.RMSprop, _torch_peer("RMSprop"))
Adamax = _optimizer_class("Adamax", _optim.Adamax, _torch_peer("Adamax"))
NAdam = _optimizer_class("NAdam", _optim.NAdam, _torch_peer("NAdam"))
RAdam = _optimizer_class("RAdam", _optim.RAdam, _torch_peer("RAdam"))
Adadelta = _optimizer_class("Adadelta", _optim.Adadelta, _torch_peer("Adadelta"))
Adafactor = _optimizer_class("Adafactor", _optim.Adafactor, _torch_peer("Adafactor"))
SparseAdam = _optimizer_class("SparseAdam", _optim.SparseAdam, _torch_peer("SparseAdam"))
Muon = _optimizer_class("Muon", _optim.Muon, _torch_peer("Muon"), scratch_slots=("update",))
Lion = _optimizer_class("Lion", _optim.Lion, None)
LAMB = _optimizer_class("LAMB", _optim.LAMB, None)
AdamWScheduleFree = _optimizer_class("AdamWScheduleFree", _optim.AdamWScheduleFree, None)
SGDScheduleFree = _optimizer_class("SGDScheduleFree", _optim.SGDScheduleFree, None)
