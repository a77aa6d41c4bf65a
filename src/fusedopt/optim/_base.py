"""The optimizer base class: param groups, per-array state, the plan, state_dict.

State belongs to the array, not to its position: each parameter array's slots
and counters are kept under the array's identity, so whatever is done to
``param_groups`` between steps (groups appended, popped or replaced, arrays
inserted, removed or reordered), each array keeps its own state, a new array
starts fresh and a removed array's state is dropped.  What the kernels need
(pointer arrays, hyperparameter blocks, overlap checks) is built once into a
plan, and rebuilt only when the groups or the state layout change.
"""
import copy
import math
import numbers

import numpy as np

from .. import _core
from .._memory import aligned_zeros
from ._spec import storage_name

__all__ = ["Optimizer"]

#: state_dict layout version, checked on load
STATE_DICT_VERSION = 2

#: what ``state_dtype`` may be
STATE_DTYPES = (None, "float32", "bfloat16", "8bit")
_NARROW = ("bfloat16", "float16")


class _ArrayState:
    """One parameter array's optimizer state: its slot buffers and counters."""

    __slots__ = ("array", "slots", "counters")

    def __init__(self, array, n_counters):
        self.array = array           # held, so that id(array) stays this array's
        self.slots = {}
        self.counters = (0,) * n_counters


def _normalize_params(params):
    """`params` (arrays or group dicts) as a list of group dicts."""
    if isinstance(params, (np.ndarray, dict)):
        raise TypeError("params must be a list of arrays or a list of param-group dicts, "
                        f"got a single {type(params).__name__}")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"params must be a list of arrays or of dicts, got {type(params).__name__}") from None
    if not params:
        raise ValueError("params is empty: the optimizer needs at least one parameter")
    n_dicts = sum(isinstance(p, dict) for p in params)
    if n_dicts == 0:
        return [{"params": params}]
    if n_dicts != len(params):
        raise TypeError("params must be all arrays or all param-group dicts, not a mix")
    return [dict(group) for group in params]


def _real(name, value, minimum, allow_none=False, strictly=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number{' or None' if allow_none else ''}, "
                        f"got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < minimum or (strictly and value == minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strictly else '>='} {minimum}, "
                         f"got {value!r}")
    return value


#: the smallest grad_scale: the kernels multiply the gradients by its reciprocal in float32
MIN_GRAD_SCALE = 1.0 / float(np.finfo(np.float32).max)


def _grad_scale(value):
    """A grad_scale argument: a finite number whose float32 reciprocal is finite."""
    value = _real("grad_scale", value, 0.0, strictly=True)
    if value < MIN_GRAD_SCALE:
        raise ValueError(f"grad_scale must be at least {MIN_GRAD_SCALE:.4g} (the gradients are multiplied "
                         f"by its reciprocal in float32), got {value!r}")
    return value


class GradientSafety:
    """The gradient safety options, checked when set (fusedopt.Optimizer and
    fusedopt.distributed.ZeroRedundancyOptimizer, which clips across ranks)."""

    @property
    def skip_nonfinite(self):
        """Skip (change nothing) when any gradient holds NaN or Inf."""
        return self._skip_nonfinite

    @skip_nonfinite.setter
    def skip_nonfinite(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"skip_nonfinite must be True or False, got {value!r}")
        self._skip_nonfinite = bool(value)

    @property
    def max_grad_norm(self):
        """Clip the global gradient norm to this inside the kernels (None: no clipping)."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_grad_norm = _real("max_grad_norm", value, 0.0, allow_none=True, strictly=True)

    @property
    def grad_scale(self):
        """Loss scale: gradients are divided by it inside the kernels."""
        return self._grad_scale

    @grad_scale.setter
    def grad_scale(self, value):
        self._grad_scale = _grad_scale(value)


class Optimizer(GradientSafety):
    """Base class of fusedopt's optimizers.  A subclass sets ``spec`` (its
    :class:`~fusedopt.optim._spec.Spec`) and passes its defaults.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Arrays updated in place (C-contiguous, aligned, writeable, any shape;
        dtypes as the algorithm's kernels), or param-group dicts
        ``{"params": [...], "lr": ..., ...}`` whose keys override the defaults.
    defaults : dict
        Default hyperparameters.
    skip_nonfinite : bool, default False
        When any gradient of a step holds NaN or Inf, skip the step: no
        parameter, state buffer or counter changes, ``step()`` returns False
        and ``skipped_steps`` counts it.  Off by default because it costs one
        extra read of the gradients (free when ``max_grad_norm`` is set).
    max_grad_norm : float, optional
        Clip the global L2 norm of all gradients of the step to this, inside the
        update kernels (the gradients are not rewritten); the norm of each step
        is kept in ``last_grad_norm``.
    grad_scale : float, default 1.0
        Loss scale: gradients are divided by it inside the kernels (at least
        ``MIN_GRAD_SCALE``, about 2.9e-39, so that its float32 reciprocal is finite).
    state_dtype : {None, "float32", "bfloat16", "8bit"}
        How the optimizer state is stored: None, the parameter's dtype (float32
        for 16-bit parameters); "bfloat16" (half the bytes); "8bit", block-wise
        dynamic quantization (Dettmers et al. 2022: blocks of 256, one float32
        absmax each; tensors under ``min_8bit_size`` elements keep float32).
        The arithmetic is float32 in every case.
    master_weights : bool, optional
        For float16/bfloat16 parameters: keep a float32 master copy, update it and
        write its rounding to the parameter in the same pass (default True).
        False updates the 16-bit parameters directly.
    stochastic_rounding : bool
        Round every 16-bit store (parameters without master weights, bfloat16
        state) stochastically instead of to nearest: unbiased, and the same bits
        for any thread count, keyed by (seed, step, parameter index, element).
    seed : int
        The stochastic rounding seed.
    min_8bit_size : int
        With ``state_dtype="8bit"``, tensors with fewer elements keep float32 state.

    Notes
    -----
    ``param_groups`` may be edited between steps like PyTorch's: change a value
    (``g["lr"] *= 0.1``), append or pop groups, replace a group dict, insert or
    remove arrays.  Missing hyperparameters of a new group are filled from the
    defaults at the next step; every value is checked before anything is written.
    A group's ``"lr"`` holds what was given: a number, or a schedule (a callable
    of the step count, evaluated at each step); :meth:`current_lrs` gives the
    rates the next step will use.

    One optimizer is stepped from one thread at a time: a step that finds another
    step, ``state_dict``, ``load_state_dict`` or ``save`` running in another
    thread raises RuntimeError and changes nothing; those three wait for a
    running step instead.
    """

    spec = None
    #: each element's update reads only that element (and per-group values): an array
    #: may be split into pieces stepped apart (fusedopt.distributed's ZeRO shards)
    elementwise = True

    def __init__(self, params, defaults, *, skip_nonfinite=False, max_grad_norm=None,
                 grad_scale=1.0, state_dtype=None, master_weights=None, stochastic_rounding=False,
                 seed=0, min_8bit_size=4096):
        self.skip_nonfinite = skip_nonfinite
        self.max_grad_norm = max_grad_norm
        self.grad_scale = grad_scale
        self._storage = self._check_storage(state_dtype, master_weights, stochastic_rounding, seed,
                                            min_8bit_size)
        self._grad_dtypes = {}       # id(array) -> dtype of its last gradient (when narrower)
        self.defaults = dict(defaults)
        self._param_groups = []
        self._states = {}            # id(array) -> _ArrayState
        # keep the state of arrays no longer in the groups (fusedopt.torch: a
        # parameter without a gradient sits out a step, as in torch.optim)
        self._keep_absent_state = False
        self._members = []           # (ArrayState, ListBlocks, block) of the current plan
        self._reader = self.spec.reader()
        self._stepper = _core.Stepper(self._param_groups)
        self._schedulers = []
        self._pending_scheduler_states = []
        #: steps skipped because of non-finite gradients
        self.skipped_steps = 0
        #: global norm of the last step's unscaled gradients (when it was computed), else None
        self.last_grad_norm = None
        self._param_groups.extend(_normalize_params(params))
        self._build_plan()
        self._check_storage_against_params()

    # -- storage: state dtype, master weights, rounding (fixed at construction) --

    def _check_storage(self, state_dtype, master_weights, stochastic_rounding, seed, min_8bit_size):
        if state_dtype is not None:
            try:
                state_dtype = storage_name(state_dtype)
            except (TypeError, ValueError):
                raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {state_dtype!r}") from None
            if state_dtype not in STATE_DTYPES:
                raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {state_dtype!r}")
            if state_dtype not in self.spec.state_dtypes():
                raise ValueError(f"state_dtype={state_dtype!r} is not available for "
                                 f"{type(self).__name__} (its state is kept in "
                                 f"{' or '.join(self.spec.state_dtypes())})")
        for name, value in (("master_weights", master_weights), ("stochastic_rounding", stochastic_rounding)):
            if value is not None and not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool{' or None' if name == 'master_weights' else ''}, "
                                f"got {type(value).__name__}")
        if stochastic_rounding is None:
            raise TypeError("stochastic_rounding must be a bool, got NoneType")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 53:
            raise ValueError(f"seed must be an int in [0, 2**53), got {seed!r}")
        if (isinstance(min_8bit_size, (bool, np.bool_)) or not isinstance(min_8bit_size, numbers.Integral)
                or min_8bit_size < 0):
            raise ValueError(f"min_8bit_size must be an int >= 0, got {min_8bit_size!r}")
        return {"state_dtype": state_dtype, "master_weights": None if master_weights is None else bool(master_weights),
                "stochastic_rounding": bool(stochastic_rounding), "seed": int(seed),
                "min_8bit_size": int(min_8bit_size)}

    def _check_storage_against_params(self):
        """The combinations that make no sense for the parameters given: ValueError
        naming the argument (per-array rules are checked by _layout)."""
        dtypes = {p.dtype.name for p in self._all_params()}
        narrow = bool(dtypes & set(_NARROW))
        if self._storage["master_weights"] and not narrow:
            raise ValueError("master_weights=True needs float16 or bfloat16 parameters (these are "
                             f"{', '.join(sorted(dtypes))}): float32 parameters are their own master")
        if self._storage["stochastic_rounding"]:
            rounded_params = narrow and self._storage["master_weights"] is False
            if not rounded_params and self._storage["state_dtype"] != "bfloat16":
                raise ValueError("stochastic_rounding=True needs a 16-bit store: 16-bit parameters "
                                 "with master_weights=False, or state_dtype='bfloat16'")

    @property
    def state_dtype(self):
        """How the state is stored: None (the parameter's dtype; float32 for 16-bit
        parameters), "float32", "bfloat16" or "8bit"."""
        return self._storage["state_dtype"]

    @property
    def master_weights(self):
        """Keep a float32 master copy of 16-bit parameters (None: yes, the default)."""
        return self._storage["master_weights"]

    @property
    def stochastic_rounding(self):
        """Round 16-bit stores stochastically (seeded by `seed`, the step and the element)."""
        return self._storage["stochastic_rounding"]

    @property
    def seed(self):
        return self._storage["seed"]

    @property
    def min_8bit_size(self):
        """With state_dtype="8bit", smaller tensors keep float32 state."""
        return self._storage["min_8bit_size"]

    def _layout(self, p, grad_dtype=None, name=None):
        """(kernel entry, master) for parameter p (and gradients of grad_dtype):
        ValueError naming state_dtype for a storage its dtype cannot have; TypeError
        naming the parameter (`name`) where no kernel fits."""
        param = p.dtype.name
        state = self._storage["state_dtype"]
        if state is not None and param == "float64":
            raise ValueError(f"state_dtype={state!r} needs float32 or 16-bit parameters; float64 "
                             f"parameters keep float64 state (state_dtype=None)")
        if state == "8bit" and p.size < self._storage["min_8bit_size"]:
            state = "float32"
        grad = grad_dtype if grad_dtype is not None and _core.grad_dtype_allowed(p.dtype, grad_dtype) else p.dtype
        try:
            kernel = self.spec.kernel(p.dtype, grad, state)
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}: {name + ': ' if name else ''}{exc}") from None
        master = param in _NARROW and self._storage["master_weights"] is not False
        return kernel, master

    @staticmethod
    def _buffers(p, kernel, master, slot_numbers):
        """{name: (shape, dtype)} of the buffers p needs: the given slots that p's
        shape has (by their shape rules), 8-bit ones as codes and "<slot>_absmax"
        blocks, and "master"."""
        state = kernel["state_dtype"]
        out = {}
        for k in slot_numbers:
            name = kernel["slots"][k]
            shape = _core.slot_shape(kernel["slot_shapes"][k], p.shape)
            if shape is None:
                continue
            if state == "8bit":
                out[name] = (shape, np.dtype(np.uint8))
                out[name + "_absmax"] = ((-(-p.size // _core.QUANTIZATION_BLOCK),), np.dtype(np.float32))
            else:
                out[name] = (shape, np.dtype(state))
        if master:
            out["master"] = (p.shape, np.dtype(np.float32))
        return out

    def state_nbytes(self, per_element=False):
        """Bytes of optimizer state held now (slots, 8-bit absmax blocks, master
        weights), summed over the arrays themselves; with per_element, divided by
        the number of parameter elements."""
        with self._stepper.lock:
            total = sum(buffer.nbytes for state in self._states.values() for buffer in state.slots.values())
            if not per_element:
                return total
            elements = sum(p.size for p in self._all_params())
            return total / elements if elements else 0.0

    # -- groups -------------------------------------------------------------

    @property
    def param_groups(self):
        """The parameter groups: dicts of ``"params"`` (a list of arrays) and
        hyperparameters.  Edit them between steps as in PyTorch; the list itself
        cannot be rebound."""
        return self._param_groups

    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyperparameters (defaults fill the rest).

        Checked at once: a bad group raises and leaves the optimizer as it was."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        with self._stepper.lock:
            self._not_inside_a_step("add_param_group")
            self._param_groups.append(dict(param_group))
            try:
                self._build_plan(keep_removed=True)
            except BaseException:
                self._param_groups.pop()
                raise

    def _not_inside_a_step(self, what):
        """RuntimeError if called from inside this optimizer's step (by a schedule):
        the step has read its plan and would apply it over what this changes.
        (Called holding the lock: a step in another thread has finished by then.)"""
        if self._stepper.stepping:
            raise RuntimeError(f"{what} cannot be called while this optimizer is stepping "
                               f"(from a schedule or another callback of its step)")

    def _complete_groups(self):
        """Give every group a list-valued "params" and the defaults it lacks."""
        for g, group in enumerate(self._param_groups):
            if type(group) is not dict:
                raise TypeError(f"param_groups[{g}] must be a dict, got {type(group).__name__}")
            if "params" not in group:
                raise ValueError(f"param_groups[{g}] has no 'params'")
            params = group["params"]
            if isinstance(params, np.ndarray):
                group["params"] = [params]
            elif type(params) is not list:
                try:
                    group["params"] = list(params)
                except TypeError:
                    raise TypeError(f"param_groups[{g}]['params'] must be a list of arrays, "
                                    f"got {type(params).__name__}") from None
            for name, value in self.defaults.items():
                group.setdefault(name, value)

    def _all_params(self):
        return [p for group in self._param_groups for p in group["params"]]

    # -- the plan: what the kernels need, built once --------------------------

    def _sync_counters(self):
        """Copy the counters the kernels advanced into each array's state."""
        for state, blocks, block in self._members:
            state.counters = self._counter_values(blocks.counters(block))

    def _counter_values(self, values):
        """Counters as the state shows them: ints for step counts, floats for real ones."""
        real = self.spec.real_counters
        return tuple(float(v) if name in real else int(v) for name, v in zip(self.spec.counters, values))

    def _build_plan(self, states=None, keep_removed=False, grads=None):
        """Check the groups and every array, allocate missing state, build the plan.

        Nothing changes unless everything checks: then the per-array states are
        the given ones (default: the current ones, with new arrays fresh and
        removed arrays dropped; with keep_removed, kept: add_param_group uses it,
        so that clearing the groups and adding them back one by one loses nothing;
        the next step drops what is still absent).  `grads` (a step's) tells which
        gradient dtypes the kernels must read."""
        self._sync_counters()
        self._complete_groups()
        old = self._states if states is None else states
        # what the plan is built from, taken before any user code (__float__ of a
        # hyperparameter) runs: the plan is current only while the groups still hold these
        groups_snapshot = tuple(self._param_groups)
        params_lists = [group["params"] for group in groups_snapshot]
        params_copies = [list(params_list) for params_list in params_lists]
        n_counters = len(self.spec.counters)
        params = [p for copy in params_copies for p in copy]
        if grads is not None:
            self._note_grad_dtypes(grads, params)
        positions_of_kernel, new_states, first, layouts = {}, {}, {}, {}
        group_of = [g for g, copy in enumerate(params_copies) for _ in copy]
        group_counters = self._group_counters(old, params, group_of)
        for position, p in enumerate(params):
            _core.check_array(p, f"params[{position}]", True)
            if id(p) in new_states:
                raise ValueError(f"params[{position}] shares memory with params[{first[id(p)]}]: "
                                 f"the same array appears twice in the param groups")
            first[id(p)] = position
            state = old.get(id(p))
            if state is None or state.array is not p:
                state = _ArrayState(p, n_counters)
                state.counters = group_counters.get(group_of[position], state.counters)
            for name, buffer in state.slots.items():
                shape = self._state_shape(name, buffer, p)
                if buffer.shape != shape:
                    state.slots[name] = buffer.reshape(shape)   # p was reshaped in place: a view
            new_states[id(p)] = state
            kernel, master = self._layout(p, self._grad_dtypes.get(id(p)), f"params[{position}]")
            layouts[position] = (kernel, master)
            positions_of_kernel.setdefault(kernel["id"], []).append(position)
        has_f32 = [any(p.dtype != np.float64 for p in copy) for copy in params_copies]
        slot_names = self.spec.slots
        allocations, built, members = {}, [], []
        for kernel_id, positions in sorted(positions_of_kernel.items()):
            needed = _core.slots_needed(kernel_id, self._reader, list(groups_snapshot),
                                        self.step_count, has_f32)
            blocks_of, block_groups, block_counters = {}, [], []
            slots = [[None] * len(positions) for _ in slot_names]
            scales = [[None] * len(positions) for _ in slot_names]
            masters = [None] * len(positions)
            hyper = []
            for j, position in enumerate(positions):
                p, g = params[position], group_of[position]
                state = new_states[id(p)]
                kernel, master = layouts[position]
                # what these options need, allocated where missing; kept buffers stay in the plan
                wanted = self._buffers(p, kernel, master, needed[g])
                kept = self._buffers(p, kernel, master, range(len(slot_names)))
                if self.spec.factored:
                    self._check_factored_state(state, kept, p, position)
                for name, (shape, dtype) in kept.items():
                    buffer = state.slots.get(name)
                    if buffer is None and name in wanted:
                        buffer = allocations.get((id(p), name))
                        if buffer is None:
                            buffer = aligned_zeros(shape, dtype)
                            if name == "master":
                                np.copyto(buffer, p, casting="unsafe")   # exact: float32 holds every 16-bit value
                            self._initialize(buffer, name, groups_snapshot[g])
                            allocations[(id(p), name)] = buffer
                    if buffer is None:
                        continue
                    if name == "master":
                        masters[j] = buffer
                    elif name.endswith("_absmax"):
                        scales[slot_names.index(name[:-len("_absmax")])][j] = buffer
                    else:
                        slots[slot_names.index(name)][j] = buffer
                key = (g, state.counters)
                if key not in blocks_of:
                    blocks_of[key] = len(block_groups)
                    block_groups.append(g)
                    block_counters.append(state.counters)
                hyper.append(blocks_of[key])
            tensors = _core.TensorList(kernel_id, [params[i] for i in positions], positions, hyper,
                                       slots, list(slot_names), True, scales, masters,
                                       dense_grads=self.spec.dense, row_grads=self.spec.row_sparse is not None)
            blocks = _core.ListBlocks(tensors, block_groups, block_counters, tuple(self.spec.row_sparse or ()))
            built.append(blocks)
            members.extend((new_states[id(params[i])], blocks, hyper[j]) for j, i in enumerate(positions))
        lists = tuple(b.tensors for b in built)
        if len(lists) > 1:
            _core.check_disjoint(lists)   # e.g. a float32 and a float64 view of the same bytes
        plan = _core.Plan(self._reader, tuple(built), len(params), list(groups_snapshot),
                          params_lists, params_copies, has_f32, self._storage["stochastic_rounding"],
                          self._storage["seed"])
        # commit
        for (array_id, name), buffer in allocations.items():
            new_states[array_id].slots[name] = buffer
        if keep_removed or self._keep_absent_state:
            for array_id, state in old.items():
                new_states.setdefault(array_id, state)
        self._states = new_states
        self._members = members
        self._stepper.plan = plan

    def _check_factored_state(self, state, kept, p, position):
        """ValueError if p was reshaped in place so that its factored state (row and
        column statistics of its last two dimensions) no longer fits it."""
        for name, buffer in state.slots.items():
            if name not in kept or buffer.shape != kept[name][0]:
                raise ValueError(f"params[{position}] now has shape {p.shape}, but its "
                                 f"{type(self).__name__} state {name!r} was made for another shape "
                                 f"({buffer.shape}): it was reshaped in place; reshape it back")

    def _group_counters(self, states, params, group_of):
        """{group: counters a new array of the group starts with}, for groups with
        counters of their own (spec.group_counters) that some array already holds."""
        shared = self.spec.group_counters
        result = {}
        if not shared:
            return result
        for p, g in zip(params, group_of):
            state = states.get(id(p))
            if g not in result and state is not None and state.array is p:
                result[g] = tuple(value if name in shared else 0
                                  for name, value in zip(self.spec.counters, state.counters))
        return result

    def _initialize(self, buffer, name, group):
        """Fill a new slot buffer with its initial value where the spec gives one
        (8-bit: every code 255, which reads back 1.0, times an absmax of the value)."""
        slot = name[:-len("_absmax")] if name.endswith("_absmax") else name
        if slot not in self.spec.initial_state:
            return
        key = self.spec.initial_state[slot]
        value = _real(key, group[key], 0.0)   # checked here too: the reader does not read it
        if value == 0.0:
            return
        if buffer.dtype == np.uint8:
            buffer.fill(255)
            return
        # float32 or bfloat16 (rounded to nearest, as the kernels round), or an absmax block
        with np.errstate(over="ignore"):
            stored = np.array(value, dtype=buffer.dtype)
        if not np.isfinite(stored.astype(np.float64)):
            raise ValueError(f"{key}={value!r} overflows the {buffer.dtype} state it starts")
        buffer[...] = stored

    @property
    def step_count(self):
        """Number of steps applied; the next step uses ``schedule(step_count)``."""
        return self._stepper.step_count

    @step_count.setter
    def step_count(self, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"step_count must be an int >= 0, got {value!r}")
        self._stepper.step_count = int(value)

    @property
    def state(self):
        """Each parameter's state, by its position in the groups (groups in order):
        ``{i: {slot name: ndarray (live), counter name: int (a copy)}}``; parameters
        that have no state yet are left out."""
        with self._stepper.lock:
            self._sync_counters()
            result = {}
            for i, p in enumerate(self._all_params()):
                state = self._states.get(id(p))
                if state is not None and state.array is p and (state.slots or any(state.counters)):
                    entry = dict(state.slots)
                    entry.update(zip(self.spec.counters, state.counters))
                    result[i] = entry
            return result

    def _live_state(self, array):
        """(slots, counters) of `array`: its buffers (live) by name and its counters
        by name, or None if it has no state.  Call holding the lock."""
        state = self._states.get(id(array))
        if state is None or state.array is not array:
            return None
        self._sync_counters()
        return dict(state.slots), dict(zip(self.spec.counters, state.counters))

    def _move_state(self, old, new, reset_master=True):
        """Give array `new` the state of array `old` (same size and dtype: the
        parameter's memory was replaced, or it was reshaped); a master copy restarts
        from `new` with reset_master."""
        with self._stepper.lock:
            self._not_inside_a_step("moving state")
            state = self._states.pop(id(old), None)
            if state is None or state.array is not old:
                return
            state.array = new
            if reset_master and "master" in state.slots:
                np.copyto(state.slots["master"], new.reshape(state.slots["master"].shape), casting="unsafe")
            self._states[id(new)] = state

    def _ensure_plan(self):
        if self._stepper.plan is None or not self._stepper.plan.is_current(self._param_groups):
            self._build_plan()

    # -- stepping -------------------------------------------------------------

    def step(self, grads, *, grad_scale=None):
        """Update every parameter in place from `grads`, one array per parameter (groups in order).

        All gradients and hyperparameters are checked before any buffer is
        written: a step that raises has changed nothing.

        Parameters
        ----------
        grads : sequence of ndarray
        grad_scale : float, optional
            Loss scale of this step's gradients (default: the optimizer's
            ``grad_scale``); they are divided by it inside the kernels.

        Returns
        -------
        bool
            True if the step was applied; False if it was skipped because a
            gradient held NaN or Inf (only with ``skip_nonfinite=True``).
        """
        scale = self._grad_scale if grad_scale is None else _grad_scale(grad_scale)
        if not isinstance(grads, (list, tuple, np.ndarray)):
            try:                # a generator: read it once, for every attempt below
                grads = tuple(grads)
            except TypeError:
                raise TypeError(f"grads must be a sequence of arrays, got {type(grads).__name__}") from None
        max_norm = self._max_grad_norm or 0.0
        result = self._stepper.run(grads, scale, max_norm, self._skip_nonfinite)
        attempts = 0
        while result is None:   # groups or state layout changed since the plan was built
            attempts += 1
            if attempts > 3:    # another thread keeps editing them
                raise RuntimeError("param_groups changed while the step was being prepared "
                                   "(edited from another thread?)")
            with self._stepper.lock:
                self._build_plan(grads=grads)
            result = self._stepper.run(grads, scale, max_norm, self._skip_nonfinite)
        applied, self.last_grad_norm = result
        if not applied:
            self.skipped_steps += 1
        return applied

    def _note_grad_dtypes(self, grads, params):
        """Remember each parameter's gradient dtype where it is an allowed other one
        (bfloat16/float16 for float32): the plan picks the kernel that reads it."""
        if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
            return
        self._grad_dtypes = {}
        for p, g in zip(params, grads):
            dtype = getattr(g, "dtype", None)
            if (isinstance(dtype, np.dtype) and isinstance(p, np.ndarray) and dtype != p.dtype
                    and _core.grad_dtype_allowed(p.dtype, dtype)):
                self._grad_dtypes[id(p)] = dtype

    def current_lrs(self):
        """The learning rate each group's next step will use (a schedule evaluated at step_count)."""
        from ..schedules import group_rate

        return [group_rate(group, self.step_count) for group in self._param_groups]

    # -- schedulers -------------------------------------------------------------

    def attach_scheduler(self, scheduler):
        """Include `scheduler`'s state in this optimizer's :meth:`state_dict` (and in
        :func:`fusedopt.save`), and restore it in :meth:`load_state_dict`.

        `scheduler` needs ``state_dict()`` and ``load_state_dict(state)``;
        :class:`fusedopt.schedules.ReduceLROnPlateau` attaches itself.  Schedulers
        are saved in the order they were attached."""
        for name in ("state_dict", "load_state_dict"):
            if not callable(getattr(scheduler, name, None)):
                raise TypeError(f"scheduler must have a {name}() method")
        self._schedulers.append(scheduler)
        if self._pending_scheduler_states:
            scheduler.load_state_dict(self._pending_scheduler_states.pop(0))

    # -- state_dict -------------------------------------------------------------

    def state_dict(self):
        """The optimizer's state as plain dicts, lists, numbers and NumPy arrays (copies).

        ``{"version", "algorithm", "step_count", "skipped_steps",
        "state": {i: {slot: array, counter: int}}, "param_groups": [{hyperparameters...,
        "params": [i, ...]}], "schedulers": [state, ...]}``.  A schedule-valued
        ``lr`` is saved as its ``config()`` (or repr).
        """
        with self._stepper.lock:
            self._complete_groups()
            groups, index = [], 0
            for group in self._param_groups:
                saved = {}
                for name, value in group.items():
                    if name == "params":
                        continue
                    if name == "lr" and callable(value):
                        value = value.config() if hasattr(value, "config") else repr(value)
                    saved[name] = copy.deepcopy(value)
                saved["params"] = list(range(index, index + len(group["params"])))
                index += len(group["params"])
                groups.append(saved)
            params = self._all_params()
            # copies, in the shapes the parameter's shape gives (it may have been
            # reshaped in place since)
            state = {i: {name: (np.array(value, copy=True).reshape(self._state_shape(name, value, params[i]))
                                if isinstance(value, np.ndarray) else value)
                         for name, value in entry.items()}
                     for i, entry in self.state.items()}
            return {
                "version": STATE_DICT_VERSION,
                "algorithm": type(self).__name__,
                "step_count": self.step_count,
                "skipped_steps": self.skipped_steps,
                "state": state,
                "param_groups": groups,
                "schedulers": [s.state_dict() for s in self._schedulers],
                "storage": dict(self._storage),
            }

    def _state_shape(self, name, buffer, p):
        """The shape a state buffer takes for p's shape (after an in-place reshape of p;
        state_dict saves it in it): its slot's shape rule applied to p's shape where
        the sizes agree, so each element keeps its meaning; else its own (absmax
        blocks, or a factored slot p's new shape does not fit)."""
        if name.endswith("_absmax"):
            return buffer.shape
        shape = _core.slot_shape(self.spec.slot_shapes.get(name, "full"), p.shape)
        return shape if shape is not None and math.prod(shape) == buffer.size else buffer.shape

    def load_state_dict(self, state_dict):
        """Restore a state_dict (from this class, same parameter shapes and dtypes).

        Everything (versions, group counts and sizes, every hyperparameter, every
        counter's type and range, every buffer's presence, shape and dtype) is
        checked before anything changes.  Buffers are copied into the optimizer's
        own aligned state, so resuming gives bitwise the same parameters as never
        stopping.
        """
        with self._stepper.lock:
            self._not_inside_a_step("load_state_dict")
            self._ensure_plan()
            restored, states, step_count, skipped, schedulers = self._check_state_dict(state_dict)
            self._sync_counters()
            # what a failure below puts back (the new state lives in new buffers)
            old = ([dict(group) for group in self._param_groups], self._states, self.step_count,
                   self.skipped_steps)
            try:
                for group, new in zip(self._param_groups, restored):
                    params_list = group["params"]
                    group.clear()
                    group.update(new)
                    group["params"] = params_list
                self._build_plan(states)
                self.step_count = step_count
                self.skipped_steps = skipped
                # last: a plateau re-wraps schedule-valued rates of the restored groups
                self._load_schedulers(schedulers)
            except BaseException:
                old_groups, old_states, self.step_count, self.skipped_steps = old
                for group, saved in zip(self._param_groups, old_groups):
                    group.clear()
                    group.update(saved)
                self._build_plan(old_states)
                raise
            self._pending_scheduler_states = list(schedulers[len(self._schedulers):])

    def _load_schedulers(self, states):
        """Load each attached scheduler's saved state; if one fails, put back the
        ones already loaded and raise ValueError naming it."""
        before = [scheduler.state_dict() for scheduler in self._schedulers]
        for i, (scheduler, state) in enumerate(zip(self._schedulers, states)):
            try:
                scheduler.load_state_dict(state)
            except Exception as exc:
                for earlier, saved in zip(self._schedulers[:i + 1], before):
                    earlier.load_state_dict(saved)
                raise ValueError(f"state_dict schedulers[{i}] cannot be loaded into "
                                 f"{type(scheduler).__name__}: {exc}") from exc

    def _check_state_dict(self, sd):
        """Everything load_state_dict needs, checked; raises before anything changes."""
        if not isinstance(sd, dict):
            raise TypeError(f"state_dict must be a dict, got {type(sd).__name__}")
        for key in ("state", "param_groups", "step_count"):
            if key not in sd:
                raise ValueError(f"state_dict is missing {key!r}")
        version = sd.get("version", STATE_DICT_VERSION)
        if version != STATE_DICT_VERSION:
            raise ValueError(f"state_dict has version {version!r}, this fusedopt reads {STATE_DICT_VERSION}")
        algorithm = sd.get("algorithm", type(self).__name__)
        if algorithm != type(self).__name__:
            raise ValueError(f"state_dict is from {algorithm}, not {type(self).__name__}")
        step_count = self._count(sd["step_count"], "step_count")
        skipped = self._count(sd.get("skipped_steps", 0), "skipped_steps")
        saved_groups = sd["param_groups"]
        if not isinstance(saved_groups, (list, tuple)):
            raise TypeError(f"state_dict['param_groups'] must be a list, got {type(saved_groups).__name__}")
        if len(saved_groups) != len(self._param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} param groups, "
                             f"the optimizer has {len(self._param_groups)}")
        restored = []
        for g, (saved, group) in enumerate(zip(saved_groups, self._param_groups)):
            if not isinstance(saved, dict):
                raise TypeError(f"state_dict param_groups[{g}] must be a dict, got {type(saved).__name__}")
            if "params" not in saved or not isinstance(saved["params"], (list, tuple)):
                raise ValueError(f"state_dict param_groups[{g}] must have a 'params' list")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"state_dict param_groups[{g}] has {len(saved['params'])} "
                                 f"parameters, the optimizer's has {len(group['params'])}")
            new = {name: value for name, value in group.items() if name != "params"}
            for name, value in saved.items():
                if name != "params" and name not in group:
                    raise ValueError(f"state_dict param_groups[{g}] has {name!r}, which "
                                     f"{type(self).__name__}'s groups do not have")
                if name == "params" or (name == "lr" and not isinstance(value, numbers.Real)):
                    continue   # a schedule stays the one the optimizer was built with
                new[name] = tuple(value) if name == "betas" and isinstance(value, list) else copy.deepcopy(value)
            restored.append(new)
        storage = sd.get("storage", {})
        if not isinstance(storage, dict):
            raise TypeError(f"state_dict['storage'] must be a dict, got {type(storage).__name__}")
        for name in ("state_dtype", "master_weights", "min_8bit_size", "stochastic_rounding", "seed"):
            if name in storage and not (isinstance(storage[name], (str, bool, int, type(None)))
                                        and storage[name] == self._storage[name]):
                raise ValueError(f"state_dict has {name}={storage[name]!r}, this optimizer "
                                 f"{name}={self._storage[name]!r}")
        # the restored hyperparameters, checked as a step would; which slots they need
        params = self._all_params()
        group_of = [g for g, group in enumerate(self._param_groups) for _ in group["params"]]
        has_f32 = [any(p.dtype != np.float64 for p in group["params"]) for group in self._param_groups]
        layouts = [self._layout(p, self._grad_dtypes.get(id(p))) for p in params]
        needed = {}
        for kernel, _ in layouts:
            if kernel["id"] not in needed:
                needed[kernel["id"]] = _core.slots_needed(kernel["id"], self._reader, restored, step_count,
                                                          has_f32)
        saved_state = sd["state"]
        if not isinstance(saved_state, dict):
            raise TypeError(f"state_dict['state'] must be a dict, got {type(saved_state).__name__}")
        entries = {}
        for key, entry in saved_state.items():
            i = self._count(int(key) if isinstance(key, str) and key.isdigit() else key,
                            "state_dict['state'] key")
            if i in entries:
                raise ValueError(f"state_dict state has two entries for parameter {i}")
            if i >= len(params):
                raise ValueError(f"state_dict state has an entry for parameter {i}, "
                                 f"the optimizer has {len(params)}")
            if not isinstance(entry, dict):
                raise TypeError(f"state_dict state[{i}] must be a dict, got {type(entry).__name__}")
            entries[i] = entry
        slot_names, counter_names = self.spec.slots, self.spec.counters
        states = {}
        for i, p in enumerate(params):
            state = _ArrayState(p, len(counter_names))
            entry = entries.get(i)
            kernel, master = layouts[i]
            if entry is not None:
                allowed = self._buffers(p, kernel, master, range(len(slot_names)))
                for name in entry:
                    if name not in allowed and name not in counter_names:
                        raise ValueError(f"state_dict state[{i}] has unknown entry {name!r} (for "
                                         f"{p.dtype} parameters with {kernel['state_dtype']} state)")
                values = []
                for name in counter_names:
                    if name not in entry:
                        raise ValueError(f"state_dict state[{i}] is missing the counter {name!r}")
                    what = f"state_dict state[{i}][{name!r}]"
                    values.append(self._real_counter(entry[name], what) if name in self.spec.real_counters
                                  else self._count(entry[name], what))
                state.counters = tuple(values)
                for name in self._buffers(p, kernel, master, needed[kernel["id"]][group_of[i]]):
                    if name not in entry:
                        raise ValueError(f"state_dict state[{i}] is missing the state buffer {name!r}")
                for name in entry:   # 8-bit codes and their absmax blocks come together
                    pair = name[:-len("_absmax")] if name.endswith("_absmax") else name + "_absmax"
                    if pair in allowed and pair not in entry:
                        raise ValueError(f"state_dict state[{i}] has {name!r} but is missing {pair!r}")
                for name, (shape, dtype) in allowed.items():
                    if name not in entry:
                        continue
                    value = entry[name]
                    if not isinstance(value, np.ndarray):
                        raise TypeError(f"state_dict state[{i}][{name!r}] must be an ndarray, "
                                        f"got {type(value).__name__}")
                    if value.shape != shape or value.dtype != dtype:
                        raise ValueError(f"state_dict state[{i}][{name!r}] is {value.dtype} "
                                         f"{value.shape}, expected {dtype} {shape}")
                    buffer = aligned_zeros(shape, dtype)
                    np.copyto(buffer, value, casting="no")
                    state.slots[name] = buffer
            states[id(p)] = state
        schedulers = sd.get("schedulers", [])
        if not isinstance(schedulers, (list, tuple)):
            raise TypeError("state_dict['schedulers'] must be a list")
        return restored, states, step_count, skipped, list(schedulers)

    @staticmethod
    def _count(value, name):
        """A counter: an int >= 0 (not a bool, not a float)."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int >= 0, got {value!r}")
        if not 0 <= value <= 2 ** 53:   # counters live in doubles in the kernels
            raise ValueError(f"{name} must be an int in [0, 2**53], got {value!r}")
        return int(value)

    @staticmethod
    def _real_counter(value, name):
        """A real-valued counter (NAdam's mu_product, schedule-free's weight sum): finite, >= 0."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            value = float("inf")
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        return value

    # -- pickling and repr ------------------------------------------------------

    def __getstate__(self):
        # the plan is C pointers: pickle the groups (with their arrays) and the state_dict
        with self._stepper.lock:
            groups = [dict(group, params=list(group["params"])) for group in self._param_groups]
            safety = dict(skip_nonfinite=self._skip_nonfinite, max_grad_norm=self._max_grad_norm,
                          grad_scale=self._grad_scale, **self._storage)
            return {"groups": groups, "defaults": self.defaults, "safety": safety,
                    "state_dict": self.state_dict()}

    def __setstate__(self, pickled):
        Optimizer.__init__(self, pickled["groups"], pickled["defaults"], **pickled["safety"])
        self.load_state_dict(pickled["state_dict"])

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self._param_groups):
            lines.append(f"Parameter Group {g}")
            for name in sorted(group):
                if name != "params":
                    lines.append(f"    {name}: {group[name]!r}")
        lines.append(")")
        return "\n".join(lines)
