# Array checks and tensor lists: what the kernels may touch, validated once.
# (Included by _core.pyx.)

cdef struct Interval:
    uintptr_t start
    uintptr_t end
    int32_t kind      # 0: parameter, k >= 1: state slot k-1
    int64_t index     # position of the tensor in the optimizer's parameter list


cdef int _compare_intervals(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const Interval *>a).start
    cdef uintptr_t y = (<const Interval *>b).start
    return -1 if x < y else (1 if x > y else 0)


cdef str _array_problem(object arr, bint writeable):
    """Why `arr` cannot be used as a kernel buffer, or None."""
    if not cnp.PyArray_Check(arr):
        return f"must be a numpy.ndarray, got {type(arr).__name__}"
    if isinstance(arr, np.ma.MaskedArray):
        return "must be a plain ndarray, not a masked array (the kernels would ignore its mask)"
    cdef cnp.ndarray a = <cnp.ndarray>arr
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return f"must have dtype float32 or float64, got {a.dtype}"
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return f"must be in native byte order, got {a.dtype.str}"
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return "must be C-contiguous (fusedopt updates in place and never copies)"
    if not cnp.PyArray_ISALIGNED(a):
        return "must be aligned (its address a multiple of its itemsize; fusedopt never copies)"
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        return "must be writeable (it is updated in place)"
    return None


def check_array(arr, name, writeable):
    """Raise TypeError/ValueError naming `name` unless `arr` can be a kernel buffer."""
    problem = _array_problem(arr, writeable)
    if problem is None:
        return
    if not cnp.PyArray_Check(arr) or "dtype" in problem or "masked" in problem:
        raise TypeError(f"{name} {problem}")
    raise ValueError(f"{name} {problem}")


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int d, ndim = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != ndim:
        return False
    for d in range(ndim):
        if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(b)[d]:
            return False
    return True


cdef class TensorList:
    """Tensors of one kernel (param dtype x state dtype), their state slots and
    hyperparameter-block ids, as C arrays.  Holds a reference to every array it
    points at, so nothing it hands to C can be freed while a kernel runs.

    Parameters
    ----------
    kernel : int
        The kernel (a row of csrc/kernels.def) that steps this list.
    params : list of ndarray
        The parameters, updated in place.
    positions : list of int
        positions[i] is the index of params[i] (and of its gradient) in the
        optimizer's flat parameter list; errors name that index.
    hyper : list of int
        The hyperparameter block of each tensor.
    slots : list of (list of ndarray or None)
        One list per state slot of the kernel, aligned with `params` (None where unused).
    slot_names : list of str
        Names of the slots, for error messages.
    writeable : bool
        False for read-only arrays (norms): then they may overlap.
    """
    cdef fo_tensor_list c
    cdef readonly int kernel
    cdef readonly int typenum
    cdef readonly Py_ssize_t n_tensors
    cdef readonly int64_t n_elements
    cdef readonly list params
    cdef readonly list slots
    cdef list _grads
    cdef int64_t *_positions
    cdef void **_param_ptrs
    cdef const void **_grad_ptrs
    cdef void **_slot_ptrs[FO_MAX_SLOTS]
    cdef int64_t *_sizes
    cdef int64_t *_offsets
    cdef int32_t *_hyper
    cdef Interval *_intervals
    cdef Py_ssize_t _n_intervals
    cdef list _slot_names
    cdef double *_reduced

    def __cinit__(self):
        cdef int k
        self._positions = NULL
        self._param_ptrs = NULL
        self._grad_ptrs = NULL
        for k in range(FO_MAX_SLOTS):
            self._slot_ptrs[k] = NULL
        self._sizes = NULL
        self._offsets = NULL
        self._hyper = NULL
        self._intervals = NULL
        self._reduced = NULL

    def __dealloc__(self):
        cdef int k
        free(self._positions)
        free(self._param_ptrs)
        free(<void *>self._grad_ptrs)
        for k in range(FO_MAX_SLOTS):
            free(self._slot_ptrs[k])
        free(self._sizes)
        free(self._offsets)
        free(self._hyper)
        free(self._intervals)
        free(self._reduced)

    def __init__(self, int kernel, list params, list positions, list hyper, list slots,
                 list slot_names, bint writeable=True):
        cdef Py_ssize_t n = len(params), i, k, n_slots = len(slots)
        cdef int64_t block = fo_kernel_block(kernel) if kernel >= 0 else 1
        cdef cnp.ndarray p, s
        if n_slots > FO_MAX_SLOTS or len(positions) != n or len(hyper) != n:
            raise ValueError("TensorList: inconsistent arguments")
        for k in range(n_slots):
            if len(slots[k]) != n:
                raise ValueError("TensorList: inconsistent arguments")
        self.kernel = kernel
        self.n_tensors = n
        self.params = list(params)
        self.slots = [list(slot) for slot in slots]
        self._slot_names = list(slot_names)
        self._grads = [None] * n
        self.typenum = -1
        for i in range(n):
            check_array(params[i], f"params[{positions[i]}]", writeable)
            p = <cnp.ndarray>params[i]
            if self.typenum == -1:
                self.typenum = cnp.PyArray_TYPE(p)
            elif cnp.PyArray_TYPE(p) != self.typenum:
                raise TypeError(f"params[{positions[i]}]: a TensorList holds one dtype")
            for k in range(n_slots):
                if slots[k][i] is None:
                    continue
                check_array(slots[k][i], f"{slot_names[k]}[{positions[i]}]", True)
                s = <cnp.ndarray>slots[k][i]
                if cnp.PyArray_TYPE(s) != cnp.PyArray_TYPE(p) or not _same_shape(s, p):
                    raise ValueError(
                        f"{slot_names[k]}[{positions[i]}] must match params[{positions[i]}] in "
                        f"dtype and shape: got {s.dtype} {(<object>s).shape}, "
                        f"expected {p.dtype} {(<object>p).shape}")

        self._positions = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self._param_ptrs = <void **>malloc(max(n, 1) * sizeof(void *))
        self._grad_ptrs = <const void **>malloc(max(n, 1) * sizeof(void *))
        self._sizes = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self._offsets = <int64_t *>malloc((n + 1) * sizeof(int64_t))
        self._hyper = <int32_t *>malloc(max(n, 1) * sizeof(int32_t))
        self._intervals = <Interval *>malloc(max(n * (n_slots + 1), 1) * sizeof(Interval))
        for k in range(FO_MAX_SLOTS):
            self._slot_ptrs[k] = <void **>malloc(max(n, 1) * sizeof(void *))
        if (self._positions == NULL or self._param_ptrs == NULL or self._grad_ptrs == NULL
                or self._sizes == NULL or self._offsets == NULL or self._hyper == NULL
                or self._intervals == NULL):
            raise MemoryError()
        for k in range(FO_MAX_SLOTS):
            if self._slot_ptrs[k] == NULL:
                raise MemoryError()

        self._offsets[0] = 0
        self._n_intervals = 0
        for i in range(n):
            p = <cnp.ndarray>params[i]
            self._positions[i] = positions[i]
            self._hyper[i] = hyper[i]
            self._param_ptrs[i] = cnp.PyArray_DATA(p)
            self._grad_ptrs[i] = NULL
            self._sizes[i] = cnp.PyArray_SIZE(p)
            # each tensor starts on a block boundary of the concatenated range
            self._offsets[i + 1] = self._offsets[i] + (self._sizes[i] + block - 1) // block * block
            self._add_interval(p, 0, positions[i])
            for k in range(FO_MAX_SLOTS):
                self._slot_ptrs[k][i] = NULL
            for k in range(n_slots):
                if slots[k][i] is not None:
                    s = <cnp.ndarray>slots[k][i]
                    self._slot_ptrs[k][i] = cnp.PyArray_DATA(s)
                    self._add_interval(s, k + 1, positions[i])
        self.n_elements = self._offsets[n]
        qsort(self._intervals, self._n_intervals, sizeof(Interval), _compare_intervals)
        for i in range(1, self._n_intervals if writeable else 0):  # only what is written must be disjoint
            if self._intervals[i].start < self._intervals[i - 1].end:
                raise ValueError(f"{self._interval_name(i)} shares memory with "
                                 f"{self._interval_name(i - 1)}; every parameter and state "
                                 f"buffer must be distinct memory")

        self.c.n_tensors = n
        self.c.param = self._param_ptrs
        self.c.grad = self._grad_ptrs
        for k in range(FO_MAX_SLOTS):
            self.c.slot[k] = self._slot_ptrs[k]
        self.c.size = self._sizes
        self.c.offset = self._offsets
        self.c.hyper = self._hyper
        if kernel >= 0 and fo_kernel_n_reduced(kernel) > 0:
            self._reduced = <double *>calloc(max(n, 1) * fo_kernel_n_reduced(kernel), sizeof(double))
            if self._reduced == NULL:
                raise MemoryError()
        self.c.reduced = self._reduced

    cdef void _add_interval(self, cnp.ndarray a, int32_t kind, int64_t index):
        cdef uintptr_t start = <uintptr_t>cnp.PyArray_DATA(a)
        cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(a)
        if nbytes == 0:
            return
        self._intervals[self._n_intervals].start = start
        self._intervals[self._n_intervals].end = start + nbytes
        self._intervals[self._n_intervals].kind = kind
        self._intervals[self._n_intervals].index = index
        self._n_intervals += 1

    cdef str _interval_name(self, Py_ssize_t j):
        cdef Interval *iv = &self._intervals[j]
        if iv.kind == 0:
            return f"params[{iv.index}]"
        return f"{self._slot_names[iv.kind - 1]}[{iv.index}]"

    cdef Py_ssize_t _overlapping(self, uintptr_t start, uintptr_t end):
        """Index of a parameter/state interval overlapping [start, end), or -1."""
        # intervals are disjoint and sorted, so their ends are sorted too:
        # find the first one ending after `start`
        cdef Py_ssize_t lo = 0, hi = self._n_intervals, mid
        while lo < hi:
            mid = (lo + hi) // 2
            if self._intervals[mid].end <= start:
                lo = mid + 1
            else:
                hi = mid
        if lo < self._n_intervals and self._intervals[lo].start < end:
            return lo
        return -1

    cdef bint has_slot(self, Py_ssize_t i, int k):
        return self._slot_ptrs[k][i] != NULL

    cdef int32_t hyper_of(self, Py_ssize_t i):
        return self._hyper[i]

    cdef int check_grads(self, tuple grads, tuple lists) except -1:
        """Validate this list's gradients in `grads`, keep references to them and
        record their pointers; no gradient may overlap what any of `lists` writes."""
        cdef Py_ssize_t i, j, pos
        cdef TensorList other
        cdef object g_obj
        cdef cnp.ndarray g, p
        cdef uintptr_t start
        for i in range(self.n_tensors):
            pos = self._positions[i]
            g_obj = grads[pos]
            p = <cnp.ndarray>self.params[i]
            if not cnp.PyArray_ISWRITEABLE(p):
                raise ValueError(f"params[{pos}] must be writeable (it is updated in place)")
            if (cnp.PyArray_DATA(p) != self._param_ptrs[i] or cnp.PyArray_SIZE(p) != self._sizes[i]
                    or cnp.PyArray_TYPE(p) != self.typenum or not cnp.PyArray_IS_C_CONTIGUOUS(p)):
                # resized, re-typed or re-strided in place since the plan was built
                raise LayoutChanged()
            if not cnp.PyArray_Check(g_obj):
                raise TypeError(f"grads[{pos}] must be a numpy.ndarray, got {type(g_obj).__name__}")
            g = <cnp.ndarray>g_obj
            if cnp.PyArray_TYPE(g) != self.typenum or not cnp.PyArray_ISNOTSWAPPED(g):
                raise TypeError(f"grads[{pos}] must have the dtype of params[{pos}] "
                                f"({p.dtype}), got {g.dtype}; fusedopt never converts")
            if not _same_shape(g, p):
                raise ValueError(f"grads[{pos}] must have the shape of params[{pos}] "
                                 f"{(<object>p).shape}, got {(<object>g).shape}")
            if not cnp.PyArray_IS_C_CONTIGUOUS(g) or not cnp.PyArray_ISALIGNED(g):
                raise ValueError(f"grads[{pos}] must be C-contiguous and aligned "
                                 f"(fusedopt never copies)")
            if self._sizes[i] > 0:
                start = <uintptr_t>cnp.PyArray_DATA(g)
                for other in lists:
                    j = other._overlapping(start, start + <uintptr_t>cnp.PyArray_NBYTES(g))
                    if j >= 0:
                        raise ValueError(f"grads[{pos}] shares memory with {other._interval_name(j)}; "
                                         f"a gradient must not alias what the step writes")
            self._grads[i] = g
            self._grad_ptrs[i] = cnp.PyArray_DATA(g)
        self._check_slots_unchanged()
        return 0

    cdef int _check_slots_unchanged(self) except -1:
        """LayoutChanged if a state buffer was resized or re-typed in place (opt.state
        hands them out) since the plan was built."""
        cdef Py_ssize_t i, k
        cdef cnp.ndarray s
        for k in range(len(self.slots)):
            for i in range(self.n_tensors):
                if self._slot_ptrs[k][i] == NULL:
                    continue
                s = <cnp.ndarray>(<list>self.slots[k])[i]
                if (cnp.PyArray_DATA(s) != self._slot_ptrs[k][i] or cnp.PyArray_SIZE(s) != self._sizes[i]
                        or cnp.PyArray_TYPE(s) != self.typenum or not cnp.PyArray_IS_C_CONTIGUOUS(s)
                        or not cnp.PyArray_ISWRITEABLE(s)):
                    raise LayoutChanged()
        return 0

    cdef void release_grads(self):
        """Drop the references check_grads took (after the step)."""
        cdef Py_ssize_t i
        for i in range(self.n_tensors):
            self._grads[i] = None
            self._grad_ptrs[i] = NULL

    cdef int stats(self, fo_operand operand, int n_threads, fo_grad_stats *out) except -1:
        """Sum of squares and finiteness of the recorded gradients (or of the params)."""
        cdef int rc, storage = fo_storage_id(b"float32" if self.typenum == cnp.NPY_FLOAT32 else b"float64")
        with nogil:
            rc = fo_stats(storage, &self.c, operand, n_threads, out, NULL)
        if rc != 0:
            raise MemoryError("fusedopt: no memory for the gradient statistics")
        return 0


def check_disjoint(tuple lists):
    """Raise ValueError if buffers of different TensorLists share memory."""
    cdef TensorList a, b
    cdef Py_ssize_t i, j
    for a in lists:
        for b in lists:
            if a is b:
                continue
            for i in range(a._n_intervals):
                j = b._overlapping(a._intervals[i].start, a._intervals[i].end)
                if j >= 0:
                    raise ValueError(f"{a._interval_name(i)} shares memory with "
                                     f"{b._interval_name(j)}; every parameter and state "
                                     f"buffer must be distinct memory")
