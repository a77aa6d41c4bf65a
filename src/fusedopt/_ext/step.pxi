# The step: plans (what the kernels need, built once) and the hot path.
# (Included by _core.pyx.)


class LayoutChanged(Exception):
    """A group's options now need state slots the plan lacks (rebuild and retry)."""


cdef class ListBlocks:
    """The hyperparameter blocks of one TensorList: one per (param group, counters) cohort."""
    cdef readonly TensorList tensors
    cdef double *hyper        # the blocks as filled: counters before this step
    cdef double *prepared     # this step's blocks, prepared by fill(); kept by commit()
    cdef int32_t *group
    cdef unsigned *slots_present
    cdef readonly Py_ssize_t n_blocks
    cdef int64_t stride
    cdef int n_inputs, n_counters
    cdef double *rows_prepared  # the prepared blocks as a row-sparse step reads them
    cdef int _row_flag          # input index of row_sparse (set to 1 there), or -1
    cdef tuple _row_zero        # (input index, name): must be 0 with a row-sparse gradient

    def __cinit__(self):
        self.hyper = NULL
        self.prepared = NULL
        self.rows_prepared = NULL
        self.group = NULL
        self.slots_present = NULL

    def __dealloc__(self):
        free(self.hyper)
        free(self.prepared)
        free(self.rows_prepared)
        free(self.group)
        free(self.slots_present)

    def __init__(self, TensorList tensors, list block_groups, list block_counters, tuple row_zero=()):
        cdef Py_ssize_t b, i, j, n = len(block_groups)
        cdef int k, kernel = tensors.kernel
        self.tensors = tensors
        self.n_blocks = n
        self.stride = fo_kernel_hyper_doubles(kernel)
        self.n_inputs = len(fo_kernel_inputs(kernel).split())
        self.n_counters = len(fo_kernel_counters(kernel).split())
        inputs = fo_kernel_inputs(kernel).decode().split()
        self._row_flag = inputs.index("row_sparse") if "row_sparse" in inputs else -1
        self._row_zero = tuple((inputs.index(name), name) for name in row_zero)
        self.hyper = <double *>calloc(max(n, 1) * self.stride, sizeof(double))
        self.prepared = <double *>calloc(max(n, 1) * self.stride, sizeof(double))
        self.group = <int32_t *>malloc(max(n, 1) * sizeof(int32_t))
        self.slots_present = <unsigned *>malloc(max(n, 1) * sizeof(unsigned))
        if self.hyper == NULL or self.prepared == NULL or self.group == NULL or self.slots_present == NULL:
            raise MemoryError()
        for b in range(n):
            self.group[b] = block_groups[b]
            self.slots_present[b] = ~0u
            counters = block_counters[b]
            if len(counters) != self.n_counters:
                raise ValueError("ListBlocks: wrong number of counters")
            for j in range(self.n_counters):
                self.hyper[b * self.stride + FO_COMMON_FIELDS + self.n_inputs + j] = <double>counters[j]
        for i in range(tensors.n_tensors):
            b = tensors.hyper_of(i)
            if not 0 <= b < n:
                raise ValueError("ListBlocks: a tensor's block is out of range")
            for k in range(FO_MAX_SLOTS):
                if not tensors.has_slot(i, k) and tensors.slot_applies(i, k):
                    self.slots_present[b] &= ~(1u << k)

    cdef int fill(self, const double *rows, double multiplier, const double *rounding,
                  Py_ssize_t n_groups) except -1:
        """Copy each block's group row into it, after the common fields (multiplier,
        then `rounding`: stochastic rounding, seed, step), and prepare this step's copy
        of it; LayoutChanged if a block's options need a slot one of its tensors lacks;
        ValueError if its per-step values overflow (before any kernel runs: the
        blocks' counters advance only at commit())."""
        cdef Py_ssize_t b
        cdef double *block
        for b in range(self.n_blocks):
            block = self.hyper + b * self.stride
            block[0] = multiplier
            memcpy(block + 1, rounding, (FO_COMMON_FIELDS - 1) * sizeof(double))
            memcpy(block + FO_COMMON_FIELDS, rows + self.group[b] * self.n_inputs,
                   self.n_inputs * sizeof(double))
            if fo_kernel_slots_needed(self.tensors.kernel, block) & ~self.slots_present[b]:
                raise LayoutChanged()
            memcpy(self.prepared + b * self.stride, block, self.stride * sizeof(double))
            if not fo_kernel_prepare(self.tensors.kernel, self.prepared + b * self.stride):
                inputs = fo_kernel_inputs(self.tensors.kernel).decode().split()
                raise ValueError(f"{_group_prefix(self.group[b], n_groups)}the hyperparameters "
                                 f"({', '.join(inputs)}) overflow at this step: a per-step value of "
                                 f"{fo_kernel_algorithm(self.tensors.kernel).decode()} is not finite")
        return 0

    cdef int check_rows(self, Py_ssize_t n_groups) except -1:
        """ValueError if a tensor with a row-sparse gradient has a hyperparameter that
        would touch every row (weight decay, momentum) set at this step."""
        cdef TensorList tl = self.tensors
        cdef Py_ssize_t i, b
        cdef double value
        if tl._n_sparse == 0:
            return 0
        for i in range(tl.n_tensors):
            if tl._sparse[i] is None:
                continue
            b = tl.hyper_of(i)
            for j, name in self._row_zero:
                value = self.hyper[b * self.stride + FO_COMMON_FIELDS + j]
                if value != 0.0:
                    raise ValueError(f"{_group_prefix(self.group[b], n_groups)}{name} must be 0 for "
                                     f"params[{tl._positions[i]}], whose gradient is a RowSparseGrad "
                                     f"({name} would change every row), got {value!r}")
        return 0

    cdef int step(self, int n_threads) except -1:
        """The kernel over this step's prepared blocks: the rows of the row-sparse
        gradients, then the dense gradients in one pass.  In that order because only
        the first can fail in a list that has both (fo_step_rows' bookkeeping, out of
        memory; the dense pass allocates only for reduction kernels, which take no
        row-sparse gradients): a failure then has written nothing."""
        cdef TensorList tl = self.tensors
        cdef const fo_tensor_list *dense = &tl.c
        cdef int rc = 0, kernel = tl.kernel
        cdef int64_t n_dense
        if tl._n_sparse > 0:
            self._step_rows(n_threads)
            dense = tl.dense_view()
        n_dense = dense.offset[dense.n_tensors]
        if tl._n_sparse > 0 and n_dense == 0:
            return 0
        if n_dense < GIL_RELEASE_MIN_ELEMENTS:
            rc = fo_step_prepared(kernel, dense, self.prepared, self.n_blocks, n_threads)
        else:
            with nogil:
                rc = fo_step_prepared(kernel, dense, self.prepared, self.n_blocks, n_threads)
        if rc != 0:
            # only a kernel with a reduction pass allocates (its scratch), before
            # writing anything; lists stepped before this one keep their step
            raise MemoryError(f"fusedopt: no memory for the {fo_kernel_name(kernel).decode()} "
                              f"kernel's reduction pass")
        return 0

    cdef int _step_rows(self, int n_threads) except -1:
        """fo_step_rows over this step's merged rows, on a copy of the prepared blocks
        with row_sparse set (the algorithms that read it round as torch's sparse path)."""
        cdef TensorList tl = self.tensors
        cdef const fo_tensor_list *rows = tl.rows_view()
        cdef const fo_row_grads *row_grads = tl.row_grads()
        cdef int rc, kernel = tl.kernel
        cdef int64_t n_row_elements = 0
        cdef Py_ssize_t b, i
        if self.rows_prepared == NULL:
            self.rows_prepared = <double *>malloc(max(self.n_blocks, 1) * self.stride * sizeof(double))
            if self.rows_prepared == NULL:
                raise MemoryError()
        memcpy(self.rows_prepared, self.prepared, self.n_blocks * self.stride * sizeof(double))
        if self._row_flag >= 0:
            for b in range(self.n_blocks):
                self.rows_prepared[b * self.stride + FO_COMMON_FIELDS + self._row_flag] = 1.0
        for i in range(tl.n_tensors):
            n_row_elements += tl._n_rows[i] * tl._widths[i]
        if n_row_elements < GIL_RELEASE_MIN_ELEMENTS:
            rc = fo_step_rows(kernel, rows, row_grads, self.rows_prepared, self.n_blocks, n_threads)
        else:
            with nogil:
                rc = fo_step_rows(kernel, rows, row_grads, self.rows_prepared, self.n_blocks, n_threads)
        if rc != 0:
            raise MemoryError(f"fusedopt: the {fo_kernel_name(kernel).decode()} kernel could not step "
                              f"the rows of a row-sparse gradient (out of memory)")
        return 0

    cdef void set_multiplier(self, double multiplier):
        cdef Py_ssize_t b
        for b in range(self.n_blocks):
            self.hyper[b * self.stride] = multiplier
            self.prepared[b * self.stride] = multiplier

    cdef void commit(self):
        """The step ran: its prepared blocks (advanced counters) become the blocks."""
        memcpy(self.hyper, self.prepared, self.n_blocks * self.stride * sizeof(double))

    def inputs(self, Py_ssize_t block):
        """The kernel inputs of a block as the last step filled them (a schedule's rate:
        its value at that step)."""
        cdef Py_ssize_t j
        if not 0 <= block < self.n_blocks:
            raise IndexError(block)
        return tuple(self.hyper[block * self.stride + FO_COMMON_FIELDS + j] for j in range(self.n_inputs))

    def counters(self, Py_ssize_t block):
        """The counters of a block, as floats (the optimizer knows which are counts)."""
        cdef Py_ssize_t j
        if not 0 <= block < self.n_blocks:
            raise IndexError(block)
        return tuple(self.hyper[block * self.stride + FO_COMMON_FIELDS + self.n_inputs + j]
                     for j in range(self.n_counters))


cdef class Plan:
    """What one optimizer's step needs, validated once: the ListBlocks (one per
    kernel in use), the reader of the groups' hyperparameters, and the identity of
    what it was built from (each group dict, its params list and their arrays).
    Holds references to every array the kernels touch."""
    cdef readonly tuple blocks
    cdef readonly Py_ssize_t n_params
    cdef readonly HyperReader reader
    cdef list _group_dicts
    cdef list _params_lists
    cdef list _params_copies
    cdef tuple _lists
    cdef unsigned char *_has_f32
    cdef double *_rows           # one row of kernel inputs per group, reused every step
    cdef double _rounding[FO_COMMON_FIELDS - 1]   # stochastic rounding, seed, step

    def __cinit__(self):
        self._has_f32 = NULL
        self._rows = NULL

    def __dealloc__(self):
        free(self._has_f32)
        free(self._rows)

    def __init__(self, HyperReader reader, tuple blocks, Py_ssize_t n_params, list param_groups,
                 list params_lists, list params_copies, list has_f32, bint stochastic_rounding=False,
                 seed=0):
        cdef Py_ssize_t g, n = len(param_groups)
        if not 0 <= seed < 2 ** 53:
            raise ValueError(f"seed must be an int in [0, 2**53), got {seed!r}")
        self._rounding[0] = 1.0 if stochastic_rounding else 0.0
        self._rounding[1] = <double>seed
        if len(params_lists) != n or len(params_copies) != n or len(has_f32) != n:
            raise ValueError("Plan: one params list, its copy and one has_f32 per group")
        self.reader = reader
        self.blocks = blocks
        self.n_params = n_params
        self._group_dicts = list(param_groups)
        self._params_lists = list(params_lists)
        # the arrays the TensorLists were built from, copied before any user code ran
        self._params_copies = [list(copy) for copy in params_copies]
        self._lists = tuple([(<ListBlocks>lb).tensors for lb in blocks])
        self._has_f32 = <unsigned char *>malloc(max(n, 1))
        self._rows = <double *>malloc(max(n * reader.n_inputs, 1) * sizeof(double))
        if self._has_f32 == NULL or self._rows == NULL:
            raise MemoryError()
        for g in range(n):
            self._has_f32[g] = bool(has_f32[g])

    cpdef bint is_current(self, list param_groups):
        """True if the groups are the same dicts holding the same params lists with
        the same arrays in the same order as when the plan was built (identity, C speed)."""
        cdef Py_ssize_t g, i, n = len(param_groups)
        cdef list copy
        cdef object params   # any object: a group's "params" may have been set to a tuple
        if len(self._group_dicts) != n:
            return False
        for g in range(n):
            group = param_groups[g]
            if group is not self._group_dicts[g] or type(group) is not dict:
                return False
            params = (<dict>group).get("params")
            if params is not self._params_lists[g] or type(params) is not list:
                return False
            copy = <list>self._params_copies[g]
            if len(<list>params) != len(copy):
                return False
            for i in range(len(copy)):
                if <PyObject *>(<list>params)[i] is not <PyObject *>copy[i]:
                    return False
        return True

    cdef tuple run(self, list groups, object grads, Py_ssize_t k, double grad_scale,
                   double max_grad_norm, bint skip_nonfinite):
        """One step (see `step_plan`).  `groups` must be the groups the plan was built
        for (is_current), so their number matches the rows buffer."""
        cdef ListBlocks lb
        cdef int rc, n_threads = fo_get_num_threads()
        cdef double multiplier, norm = 0.0
        cdef bint non_finite = False, need_norm = max_grad_norm > 0.0 or skip_nonfinite
        cdef tuple lists = self._lists
        cdef tuple group_snapshot = tuple(groups)
        if len(group_snapshot) != len(self._group_dicts):
            raise ValueError("the plan was built for another number of param groups")
        if not (grad_scale > 0.0) or not isfinite(grad_scale) or not isfinite(<float>(1.0 / grad_scale)):
            raise ValueError(f"grad_scale must be a finite number > 0 whose float32 reciprocal is finite, "
                             f"got {grad_scale!r}")
        if not (max_grad_norm >= 0.0) or not isfinite(max_grad_norm):
            raise ValueError(f"max_grad_norm must be a finite number > 0 (or None), got {max_grad_norm!r}")
        try:
            # the gradients are taken before user code (schedules) runs
            seq = _as_tuple(grads, self.n_params)
            self.reader.read(group_snapshot, k, self._has_f32, self._rows)
            multiplier = 1.0 / grad_scale
            self._rounding[2] = <double>k
            for lb in self.blocks:
                lb.fill(self._rows, multiplier, self._rounding, len(group_snapshot))
            for lb in self.blocks:
                lb.tensors.check_grads(seq, lists)
            for lb in self.blocks:
                lb.check_rows(len(group_snapshot))
            for lb in self.blocks:
                lb.tensors.merge_rows(n_threads, need_norm)
            if need_norm:
                norm = _norm_of(lists, n_threads, &non_finite, FO_OPERAND_GRAD) / grad_scale
                if non_finite and skip_nonfinite:
                    return False, norm
                if max_grad_norm > 0.0:
                    multiplier *= min(1.0, max_grad_norm / (norm + 1e-6))
                    for lb in self.blocks:
                        lb.set_multiplier(multiplier)
            for lb in self.blocks:
                lb.step(n_threads)
                lb.commit()
        finally:
            for lb in self.blocks:
                lb.tensors.release_grads()
        return True, (norm if need_norm else None)


cdef tuple _as_tuple(object grads, Py_ssize_t expected):
    """The gradients as a tuple (a snapshot: the caller's list may change meanwhile)."""
    if isinstance(grads, (list, tuple)):
        seq = tuple(grads)
    elif cnp.PyArray_Check(grads):
        raise TypeError("grads must be a sequence of arrays (one per parameter), got one ndarray")
    else:
        try:
            seq = tuple(grads)
        except TypeError:
            raise TypeError(f"grads must be a sequence of arrays, got {type(grads).__name__}") from None
    if len(seq) != expected:
        raise ValueError(f"grads has {len(seq)} arrays but the optimizer has {expected} parameters")
    return seq


cdef double _scaled_norm(object seq):
    """Norm of arrays whose squares overflow a double: NumPy, scaled by the largest |x|."""
    largest = max((float(np.max(np.abs(a))) for a in seq if a.size), default=0.0)
    if largest == 0.0:
        return 0.0
    return largest * float(np.sqrt(sum(np.sum(np.square(a / largest)) for a in seq)))


cdef double _norm_of(tuple lists, int n_threads, bint *non_finite, fo_operand operand) except? -1.0:
    """Global L2 norm of the lists' gradients (or params), in a fixed order (list
    order), the same bits for any thread count."""
    cdef double sum_sq = 0.0
    cdef fo_grad_stats stats
    cdef TensorList tl
    non_finite[0] = False
    for tl in lists:
        tl.stats(operand, n_threads, &stats)
        sum_sq += stats.sum_sq
        non_finite[0] = non_finite[0] or stats.non_finite
    if non_finite[0]:
        return float("nan")
    if sum_sq == float("inf"):  # finite values whose squares overflow (float64 only)
        return _scaled_norm([a for tl in lists for a in tl.stat_arrays(operand)])
    return sqrt(sum_sq)


def arrays_norm(tuple lists):
    """Global L2 norm of the TensorLists' own arrays (NaN if any is non-finite)."""
    cdef bint non_finite = False
    return _norm_of(lists, fo_get_num_threads(), &non_finite, FO_OPERAND_PARAM)


cdef class StepLock:
    """A reentrant lock whose state lives under the GIL: taking it uncontended (the
    step does, every call) is a few C assignments, no system call.  A thread that finds
    it held by another waits in short sleeps with the GIL released (a state_dict
    waiting for a step, or the reverse: rare and short).  It is fair enough that a
    thread stepping in a loop cannot starve a waiter: a thread that finds the lock
    free while others wait for it queues behind them for one sleep first, and a
    waiter that finds it free takes it.  In a child forked while another thread of
    the parent held it, or waited for it, it starts free (those threads do not exist
    in the child)."""
    cdef unsigned long _owner
    cdef Py_ssize_t _count
    cdef Py_ssize_t _waiting
    cdef long _generation

    def __cinit__(self):
        self._owner = 0
        self._count = 0
        self._waiting = 0
        self._generation = fo_fork_generation()

    cdef int take(self) except -1:
        cdef unsigned long me = PyThread_get_thread_ident()
        if self._generation != fo_fork_generation():   # forked since: the parent's other threads are gone
            self._generation = fo_fork_generation()
            self._waiting = 0
            if self._count > 0 and self._owner != me:
                self._count = 0
        if self._count > 0 and self._owner == me:
            self._count += 1
            return 0
        if self._count > 0 or self._waiting > 0:       # held, or others wait for it: queue behind them
            self._waiting += 1
            try:
                while True:
                    _sleep(1e-4)                       # releases the GIL
                    PyErr_CheckSignals()               # Ctrl-C while waiting (not only mid-sleep)
                    if self._count == 0:
                        break
            finally:
                self._waiting -= 1
        self._owner = me
        self._count = 1
        return 0

    cdef int give(self) except -1:
        if self._count <= 0 or self._owner != PyThread_get_thread_ident():
            raise RuntimeError("StepLock released by a thread that does not hold it")
        self._count -= 1
        return 0

    def acquire(self):
        """Take the lock (waiting for another thread to give it up)."""
        self.take()
        return True

    def release(self):
        self.give()

    def __enter__(self):
        self.take()
        return self

    def __exit__(self, *exc):
        self.give()
        return False


cdef class Stepper:
    """An optimizer's step at C speed: the busy flag, the plan check, the step count.

    `run` returns None when the plan no longer matches the param groups (or a
    group's options need slots it lacks): the optimizer then rebuilds the plan
    (holding `lock`) and calls again.  `lock` (a reentrant lock) serialises the
    step with state_dict/load_state_dict/save (each waits for the other); a step
    that finds this optimizer already stepping raises RuntimeError and changes
    nothing.
    """
    cdef public Plan plan
    cdef public list param_groups
    cdef public Py_ssize_t step_count
    cdef readonly StepLock lock
    cdef bint busy
    cdef long _busy_generation

    def __init__(self, list param_groups):
        self.param_groups = param_groups
        self.plan = None
        self.step_count = 0
        self.lock = StepLock()
        self.busy = False

    @property
    def stepping(self):
        """True while a step of this optimizer runs (in this process)."""
        return bool(self.busy) and self._busy_generation == fo_fork_generation()

    def run(self, object grads, double grad_scale, double max_grad_norm, bint skip_nonfinite):
        """One step: (applied, grad_norm), or None if the plan must be rebuilt first."""
        cdef tuple result
        cdef Plan plan
        if self.busy and self._busy_generation != fo_fork_generation():
            self.busy = False     # set by a step of the parent's other thread, forked mid-step
        if self.busy:
            raise RuntimeError("this optimizer is already stepping (in another thread, or "
                               "this step's schedule called step); step one optimizer from "
                               "one thread at a time")
        self.lock.take()      # waits for a state_dict/load_state_dict/save in another thread
        if self.busy:         # another thread's step got in first
            self.lock.give()
            raise RuntimeError("this optimizer is already stepping in another thread; step one "
                               "optimizer from one thread at a time")
        self.busy = True
        self._busy_generation = fo_fork_generation()
        try:
            plan = self.plan   # read under the lock: load_state_dict may just have replaced it
            if plan is None or not plan.is_current(self.param_groups):
                return None
            try:
                result = plan.run(self.param_groups, grads, self.step_count, grad_scale,
                                  max_grad_norm, skip_nonfinite)
            except LayoutChanged:
                return None
            if result[0]:
                self.step_count += 1
            return result
        finally:
            self.busy = False
            self.lock.give()


def step_plan(Plan plan, list groups, object grads, Py_ssize_t k, double grad_scale=1.0,
              double max_grad_norm=0.0, bint skip_nonfinite=False):
    """One step over a plan built for these groups (the functional layer's entry point);
    raises LayoutChanged if a group needs slots the plan lacks."""
    return plan.run(groups, grads, k, grad_scale, max_grad_norm, skip_nonfinite)


def slots_needed(int kernel, HyperReader reader, list groups, Py_ssize_t k, list has_f32):
    """For each group: the slot numbers its options make `kernel` use.  Checks every
    hyperparameter except the values of schedules (no user code runs here)."""
    cdef tuple snapshot = tuple(groups)
    cdef tuple flags_snapshot = tuple(has_f32)
    cdef Py_ssize_t g, n = len(snapshot), j
    cdef unsigned mask
    cdef double *block = <double *>calloc(max(fo_kernel_hyper_doubles(kernel), 1), sizeof(double))
    cdef double *rows = <double *>malloc(max(n * reader.n_inputs, 1) * sizeof(double))
    cdef unsigned char *flags = <unsigned char *>malloc(max(n, 1))
    if block == NULL or rows == NULL or flags == NULL:
        free(block); free(rows); free(flags)
        raise MemoryError()
    try:
        for g in range(n):
            flags[g] = bool(flags_snapshot[g]) if g < len(flags_snapshot) else True
        reader.read(snapshot, k, flags, rows, False)
        result = []
        for g in range(n):
            memcpy(block + FO_COMMON_FIELDS, rows + g * reader.n_inputs, reader.n_inputs * sizeof(double))
            mask = fo_kernel_slots_needed(kernel, block)
            result.append([j for j in range(FO_MAX_SLOTS) if mask & (1u << j)])
        return result
    finally:
        free(block); free(rows); free(flags)
