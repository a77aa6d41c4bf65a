# Array checks and tensor lists: what the kernels may touch, validated once.
# (Included by _core.pyx.)

import ml_dtypes

cdef struct Interval:
    uintptr_t start
    uintptr_t end
    int32_t kind      # 0: parameter, k in [1, S]: slot k-1, [S+1, 2S]: its absmax, 2S+1: master
    int64_t index     # position of the tensor in the optimizer's parameter list

#: NumPy's type number of ml_dtypes.bfloat16 (a user dtype: its number is set at run time)
cdef int NPY_BFLOAT16 = np.dtype(ml_dtypes.bfloat16).num

#: the dtypes a parameter (or gradient) may have, by name
PARAM_DTYPES = ("float32", "float64", "float16", "bfloat16")


cdef int _typenum_of_storage(str name) except? -2:
    """NumPy type number of a kernel storage name ("8bit" codes are uint8)."""
    if name == "float32":
        return cnp.NPY_FLOAT32
    if name == "float64":
        return cnp.NPY_FLOAT64
    if name == "float16":
        return cnp.NPY_FLOAT16
    if name == "bfloat16":
        return NPY_BFLOAT16
    if name == "8bit":
        return cnp.NPY_UINT8
    raise ValueError(f"unknown storage {name!r}")


cdef int _stats_storage_id(int typenum) except? -2:
    """fo_stats' storage id of a parameter or gradient dtype (an empty list has no
    dtype: float64, as any id would do for no elements)."""
    name = np.dtype(cnp.PyArray_DescrFromType(typenum)).name if typenum >= 0 else "float64"
    return fo_storage_id(name.encode())


cdef inline bint _is_param_typenum(int typenum):
    return (typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64
            or typenum == cnp.NPY_FLOAT16 or typenum == NPY_BFLOAT16)


cdef inline bint _narrower_grad_allowed(int param_typenum, int grad_typenum):
    """float32 parameters also take bfloat16 and float16 gradients (widened in registers)."""
    return param_typenum == cnp.NPY_FLOAT32 and (grad_typenum == NPY_BFLOAT16
                                                 or grad_typenum == cnp.NPY_FLOAT16)


def grad_dtype_allowed(param_dtype, grad_dtype):
    """True if a gradient of `grad_dtype` can step a parameter of `param_dtype`:
    the same dtype, or bfloat16/float16 for float32 (never a wider one)."""
    a, b = np.dtype(param_dtype), np.dtype(grad_dtype)
    return a == b or _narrower_grad_allowed(a.num, b.num)


cdef int _compare_intervals(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const Interval *>a).start
    cdef uintptr_t y = (<const Interval *>b).start
    return -1 if x < y else (1 if x > y else 0)


cdef str _array_problem(object arr, bint writeable, int typenum_required=-1):
    """Why `arr` cannot be used as a kernel buffer (of dtype `typenum_required`, or
    any parameter dtype), or None."""
    if not cnp.PyArray_Check(arr):
        return f"must be a numpy.ndarray, got {type(arr).__name__}"
    if isinstance(arr, np.ma.MaskedArray):
        return "must be a plain ndarray, not a masked array (the kernels would ignore its mask)"
    cdef cnp.ndarray a = <cnp.ndarray>arr
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum_required >= 0 and typenum != typenum_required:
        return f"must have dtype {np.dtype(cnp.PyArray_DescrFromType(typenum_required))}, got {a.dtype}"
    if typenum_required < 0 and not _is_param_typenum(typenum):
        return f"must have dtype float32, float64, float16 or bfloat16, got {a.dtype}"
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return f"must be in native byte order, got {a.dtype.str}"
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return "must be C-contiguous (fusedopt updates in place and never copies)"
    if not cnp.PyArray_ISALIGNED(a):
        return "must be aligned (its address a multiple of its itemsize; fusedopt never copies)"
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        return "must be writeable (it is updated in place)"
    return None


def check_array(arr, name, writeable, dtype=None):
    """Raise TypeError/ValueError naming `name` unless `arr` can be a kernel buffer
    (a parameter, or of `dtype` when given)."""
    problem = _array_problem(arr, writeable, -1 if dtype is None else np.dtype(dtype).num)
    if problem is None:
        return
    if not cnp.PyArray_Check(arr) or "dtype" in problem or "masked" in problem:
        raise TypeError(f"{name} {problem}")
    raise ValueError(f"{name} {problem}")


cdef int _check_buffer(object arr, str name, int typenum) except -1:
    """ValueError naming `name` unless `arr` can be a state buffer of `typenum`
    (one the optimizer allocated; a mismatch means it was swapped or the parameter
    was changed in place)."""
    problem = _array_problem(arr, True, typenum)
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    return 0


def slot_shape(str rule, tuple shape):
    """The shape of a state slot with this rule (fusedopt.h, fo_kernel_slot_shapes)
    for a parameter of `shape`; None where the rule gives the parameter no such slot."""
    if rule == "full":
        return shape
    if rule == "vector":
        return shape if len(shape) < 2 else None
    if rule != "rows" and rule != "cols":
        raise ValueError(f"unknown slot shape rule {rule!r}")
    cdef Py_ssize_t ndim = len(shape)
    if ndim < 2:
        return None
    return shape[:ndim - 1] + (1,) if rule == "rows" else shape[:ndim - 2] + (1, shape[ndim - 1])


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int d, ndim = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != ndim:
        return False
    for d in range(ndim):
        if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(b)[d]:
            return False
    return True


cdef class TensorList:
    """Tensors of one kernel (param x grad x state storage), their state slots and
    hyperparameter-block ids, as C arrays.  Holds a reference to every array it
    points at, so nothing it hands to C can be freed while a kernel runs.

    Parameters
    ----------
    kernel : int
        The kernel (a row of csrc/kernels.def) that steps this list; -1 for a
        read-only list of parameters of one dtype (norms).
    params : list of ndarray
        The parameters, updated in place.
    positions : list of int
        positions[i] is the index of params[i] (and of its gradient) in the
        optimizer's flat parameter list; errors name that index, and it keys the
        tensor's stochastic rounding.
    hyper : list of int
        The hyperparameter block of each tensor.
    slots : list of (list of ndarray or None)
        One list per state slot of the kernel, aligned with `params` (None where
        unused): the kernel's state dtype (uint8 codes for 8-bit state), the
        parameter's shape.
    slot_names : list of str
        Names of the slots, for error messages.
    writeable : bool
        False for read-only arrays (norms): then they may overlap.
    scales : list of (list of ndarray or None), optional
        8-bit state: the float32 absmax of each block of 256 elements of each slot.
    masters : list of (ndarray or None), optional
        16-bit parameters: their float32 master copies (None: updated directly).
    """
    cdef fo_tensor_list c
    cdef readonly int kernel
    cdef readonly int typenum
    cdef readonly int grad_typenum
    cdef readonly int state_typenum
    cdef readonly Py_ssize_t n_tensors
    cdef readonly int64_t n_elements
    cdef readonly list params
    cdef readonly list slots
    cdef readonly list scales
    cdef readonly list masters
    cdef list _grads
    cdef int64_t *_positions
    cdef void **_param_ptrs
    cdef const void **_grad_ptrs
    cdef void **_slot_ptrs[FO_MAX_SLOTS]
    cdef float **_scale_ptrs[FO_MAX_SLOTS]
    cdef float **_master_ptrs
    cdef int64_t *_sizes
    cdef int64_t *_offsets
    cdef int32_t *_hyper
    cdef Interval *_intervals
    cdef Py_ssize_t _n_intervals
    cdef list _slot_names
    cdef double *_reduced
    cdef bint _factored            # a slot of shape "rows"/"cols": per-tensor matrix shapes
    cdef int64_t *_rows
    cdef int64_t *_cols
    cdef int64_t *_slot_sizes[FO_MAX_SLOTS]
    cdef unsigned *_applicable     # per tensor: bit k set if its shape has slot k
    cdef int _param_storage_id     # fo_stats' storage ids, looked up once, not per step
    cdef int _grad_storage_id
    # row-sparse gradients (RowSparseGrad, rows.pxi; fo_merge_rows, fo_step_rows)
    cdef bint _dense_grads         # which gradients the kernel's algorithm takes
    cdef bint _row_grads
    cdef Py_ssize_t _n_sparse      # tensors with a RowSparseGrad at this step
    cdef list _sparse              # per tensor: (indices, values) of this step, or None
    cdef list _merged              # per tensor: (rows, values) merged at this step, or None
    cdef list _merge_buffers       # per tensor: the (rows, grad_at, values) buffers kept for the next steps
    cdef const int64_t **_row_ptrs
    cdef const int64_t **_grad_at_ptrs
    cdef const void **_values_ptrs
    cdef int64_t *_n_rows
    cdef int64_t *_widths
    cdef fo_row_grads _rows_c
    cdef fo_tensor_list _view      # c with other sizes and gradients (_stats_view, dense_view, rows_view)
    cdef int64_t *_view_sizes
    cdef int64_t *_view_offsets
    cdef const void **_view_grads

    def __cinit__(self):
        cdef int k
        self._positions = NULL
        self._param_ptrs = NULL
        self._grad_ptrs = NULL
        for k in range(FO_MAX_SLOTS):
            self._slot_ptrs[k] = NULL
            self._scale_ptrs[k] = NULL
            self._slot_sizes[k] = NULL
        self._master_ptrs = NULL
        self._rows = NULL
        self._cols = NULL
        self._applicable = NULL
        self._sizes = NULL
        self._offsets = NULL
        self._hyper = NULL
        self._intervals = NULL
        self._reduced = NULL
        self._row_ptrs = NULL
        self._grad_at_ptrs = NULL
        self._values_ptrs = NULL
        self._n_rows = NULL
        self._widths = NULL
        self._view_sizes = NULL
        self._view_offsets = NULL
        self._view_grads = NULL

    def __dealloc__(self):
        cdef int k
        free(self._positions)
        free(self._param_ptrs)
        free(<void *>self._grad_ptrs)
        for k in range(FO_MAX_SLOTS):
            free(self._slot_ptrs[k])
            free(self._scale_ptrs[k])
            free(self._slot_sizes[k])
        free(self._master_ptrs)
        free(self._rows)
        free(self._cols)
        free(self._applicable)
        free(self._sizes)
        free(self._offsets)
        free(self._hyper)
        free(self._intervals)
        free(self._reduced)
        free(<void *>self._row_ptrs)
        free(<void *>self._grad_at_ptrs)
        free(<void *>self._values_ptrs)
        free(self._n_rows)
        free(self._widths)
        free(self._view_sizes)
        free(self._view_offsets)
        free(<void *>self._view_grads)

    def __init__(self, int kernel, list params, list positions, list hyper, list slots,
                 list slot_names, bint writeable=True, list scales=None, list masters=None,
                 bint dense_grads=True, bint row_grads=False):
        cdef Py_ssize_t n = len(params), i, k, n_slots = len(slots)
        cdef int64_t block = fo_kernel_block(kernel) if kernel >= 0 else 1
        cdef bint quantized = False
        cdef cnp.ndarray p, s
        cdef tuple rules = ()
        if scales is None:
            scales = [[None] * n for _ in range(n_slots)]
        if masters is None:
            masters = [None] * n
        if (n_slots > FO_MAX_SLOTS or len(positions) != n or len(hyper) != n
                or len(scales) != n_slots or len(masters) != n):
            raise ValueError("TensorList: inconsistent arguments")
        for k in range(n_slots):
            if len(slots[k]) != n or len(scales[k]) != n:
                raise ValueError("TensorList: inconsistent arguments")
        self.kernel = kernel
        self.n_tensors = n
        self.params = list(params)
        self.slots = [list(slot) for slot in slots]
        self.scales = [list(scale) for scale in scales]
        self.masters = list(masters)
        self._slot_names = list(slot_names)
        self._grads = [None] * n
        self._dense_grads = dense_grads
        self._row_grads = row_grads
        self._n_sparse = 0
        self._sparse = [None] * n
        self._merged = [None] * n
        self._merge_buffers = [None] * n
        if kernel >= 0:
            self.typenum = _typenum_of_storage(fo_kernel_param_storage(kernel).decode())
            self.grad_typenum = _typenum_of_storage(fo_kernel_grad_storage(kernel).decode())
            self.state_typenum = _typenum_of_storage(fo_kernel_state_storage(kernel).decode())
            quantized = self.state_typenum == cnp.NPY_UINT8
            rules = _slot_shapes_of(kernel)
        else:
            self.typenum = cnp.PyArray_TYPE(<cnp.ndarray>params[0]) if n else -1
            self.grad_typenum = self.state_typenum = self.typenum
        self._param_storage_id = _stats_storage_id(self.typenum)
        self._grad_storage_id = _stats_storage_id(self.grad_typenum)
        if len(rules) < n_slots:
            rules = rules + ("full",) * (n_slots - len(rules))
        self._factored = "rows" in rules or "cols" in rules
        for i in range(n):
            check_array(params[i], f"params[{positions[i]}]", writeable)
            p = <cnp.ndarray>params[i]
            if cnp.PyArray_TYPE(p) != self.typenum:
                raise TypeError(f"params[{positions[i]}]: a TensorList holds one dtype")
            for k in range(n_slots):
                if slots[k][i] is None:
                    continue
                _check_buffer(slots[k][i], f"{slot_names[k]}[{positions[i]}]", self.state_typenum)
                s = <cnp.ndarray>slots[k][i]
                expected = slot_shape(rules[k], (<object>p).shape)
                if expected is None:
                    raise ValueError(f"{slot_names[k]}[{positions[i]}]: params[{positions[i]}] of shape "
                                     f"{(<object>p).shape} has no {slot_names[k]} state")
                if (<object>s).shape != expected:
                    raise ValueError(
                        f"{slot_names[k]}[{positions[i]}] must have shape {expected} for params[{positions[i]}] "
                        f"{(<object>p).shape}, got {(<object>s).shape}")
                if quantized and rules[k] != "full":
                    raise ValueError("TensorList: 8-bit state is for slots of the parameter's shape only")
                if quantized:
                    _check_buffer(scales[k][i], f"{slot_names[k]}_absmax[{positions[i]}]", cnp.NPY_FLOAT32)
                    if (cnp.PyArray_NDIM(<cnp.ndarray>scales[k][i]) != 1 or cnp.PyArray_SIZE(<cnp.ndarray>scales[k][i])
                            != _blocks_of(cnp.PyArray_SIZE(p))):
                        raise ValueError(f"{slot_names[k]}_absmax[{positions[i]}] must be 1-D with one "
                                         f"value per block of {FO_QUANTIZATION_BLOCK} elements "
                                         f"({_blocks_of(cnp.PyArray_SIZE(p))}), got "
                                         f"{(<object>scales[k][i]).shape}")
                elif scales[k][i] is not None:
                    raise ValueError("TensorList: scales are for 8-bit state only")
            if masters[i] is not None:
                if self.typenum != cnp.NPY_FLOAT16 and self.typenum != NPY_BFLOAT16:
                    raise ValueError("TensorList: master weights are for 16-bit parameters only")
                _check_buffer(masters[i], f"master[{positions[i]}]", cnp.NPY_FLOAT32)
                if not _same_shape(<cnp.ndarray>masters[i], p):
                    raise ValueError(f"master[{positions[i]}] must have the shape of params[{positions[i]}]")

        self._positions = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self._param_ptrs = <void **>malloc(max(n, 1) * sizeof(void *))
        self._grad_ptrs = <const void **>malloc(max(n, 1) * sizeof(void *))
        self._master_ptrs = <float **>malloc(max(n, 1) * sizeof(float *))
        self._sizes = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self._offsets = <int64_t *>malloc((n + 1) * sizeof(int64_t))
        self._hyper = <int32_t *>malloc(max(n, 1) * sizeof(int32_t))
        self._intervals = <Interval *>malloc(max(n * (2 * n_slots + 2), 1) * sizeof(Interval))
        self._rows = <int64_t *>calloc(max(n, 1), sizeof(int64_t))
        self._cols = <int64_t *>calloc(max(n, 1), sizeof(int64_t))
        self._applicable = <unsigned *>calloc(max(n, 1), sizeof(unsigned))
        for k in range(FO_MAX_SLOTS):
            self._slot_ptrs[k] = <void **>malloc(max(n, 1) * sizeof(void *))
            self._scale_ptrs[k] = <float **>malloc(max(n, 1) * sizeof(float *))
            self._slot_sizes[k] = <int64_t *>calloc(max(n, 1), sizeof(int64_t))
        self._row_ptrs = <const int64_t **>calloc(max(n, 1), sizeof(int64_t *))
        self._grad_at_ptrs = <const int64_t **>calloc(max(n, 1), sizeof(int64_t *))
        self._values_ptrs = <const void **>calloc(max(n, 1), sizeof(void *))
        self._n_rows = <int64_t *>calloc(max(n, 1), sizeof(int64_t))
        self._widths = <int64_t *>calloc(max(n, 1), sizeof(int64_t))
        self._view_sizes = <int64_t *>calloc(max(n, 1), sizeof(int64_t))
        self._view_offsets = <int64_t *>calloc(n + 1, sizeof(int64_t))
        self._view_grads = <const void **>calloc(max(n, 1), sizeof(void *))
        if (self._row_ptrs == NULL or self._grad_at_ptrs == NULL or self._values_ptrs == NULL
                or self._n_rows == NULL or self._widths == NULL or self._view_sizes == NULL
                or self._view_offsets == NULL or self._view_grads == NULL):
            raise MemoryError()
        if (self._positions == NULL or self._param_ptrs == NULL or self._grad_ptrs == NULL
                or self._master_ptrs == NULL or self._sizes == NULL or self._offsets == NULL
                or self._hyper == NULL or self._intervals == NULL or self._rows == NULL
                or self._cols == NULL or self._applicable == NULL):
            raise MemoryError()
        for k in range(FO_MAX_SLOTS):
            if self._slot_ptrs[k] == NULL or self._scale_ptrs[k] == NULL or self._slot_sizes[k] == NULL:
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
            if cnp.PyArray_NDIM(p) >= 2:
                self._rows[i] = cnp.PyArray_DIMS(p)[cnp.PyArray_NDIM(p) - 2]
                self._cols[i] = cnp.PyArray_DIMS(p)[cnp.PyArray_NDIM(p) - 1]
            for k in range(n_slots):
                if slot_shape(rules[k], (<object>p).shape) is not None:
                    self._applicable[i] |= 1u << k
            # each tensor starts on a block boundary of the concatenated range
            self._offsets[i + 1] = self._offsets[i] + (self._sizes[i] + block - 1) // block * block
            self._add_interval(p, 0, positions[i])
            self._master_ptrs[i] = NULL
            if masters[i] is not None:
                self._master_ptrs[i] = <float *>cnp.PyArray_DATA(<cnp.ndarray>masters[i])
                self._add_interval(<cnp.ndarray>masters[i], 2 * n_slots + 1, positions[i])
            for k in range(FO_MAX_SLOTS):
                self._slot_ptrs[k][i] = NULL
                self._scale_ptrs[k][i] = NULL
            for k in range(n_slots):
                if slots[k][i] is not None:
                    s = <cnp.ndarray>slots[k][i]
                    self._slot_ptrs[k][i] = cnp.PyArray_DATA(s)
                    self._slot_sizes[k][i] = cnp.PyArray_SIZE(s)
                    self._add_interval(s, k + 1, positions[i])
                    if quantized:
                        s = <cnp.ndarray>scales[k][i]
                        self._scale_ptrs[k][i] = <float *>cnp.PyArray_DATA(s)
                        self._add_interval(s, n_slots + k + 1, positions[i])
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
            self.c.scale[k] = self._scale_ptrs[k]
        self.c.master = self._master_ptrs
        self.c.index = self._positions
        self.c.size = self._sizes
        self.c.offset = self._offsets
        self.c.hyper = self._hyper
        self.c.rows = self._rows if self._factored else NULL
        self.c.cols = self._cols if self._factored else NULL
        self.c.first = NULL
        self._rows_c.row = self._row_ptrs
        self._rows_c.grad_at = self._grad_at_ptrs
        self._rows_c.values = self._values_ptrs
        self._rows_c.n_rows = self._n_rows
        self._rows_c.width = self._widths
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
        cdef Py_ssize_t n_slots = len(self._slot_names)
        if iv.kind == 0:
            return f"params[{iv.index}]"
        if iv.kind <= n_slots:
            return f"{self._slot_names[iv.kind - 1]}[{iv.index}]"
        if iv.kind <= 2 * n_slots:
            return f"{self._slot_names[iv.kind - n_slots - 1]}_absmax[{iv.index}]"
        return f"master[{iv.index}]"

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

    cdef bint slot_applies(self, Py_ssize_t i, int k):
        """True if tensor i's shape has slot k (its shape rule gives it one)."""
        return (self._applicable[i] >> k) & 1u

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
            if self._factored and not self._same_matrix(p, i):
                raise LayoutChanged()     # reshaped in place: its factored state no longer fits
            if type(g_obj) is RowSparseGrad:
                self._check_row_grad(<RowSparseGrad>g_obj, i, pos, p, lists)
                continue
            if not self._dense_grads:
                raise TypeError(f"grads[{pos}] must be a fusedopt.RowSparseGrad: "
                                f"{self._algorithm_name()} has no step for dense gradients")
            if not cnp.PyArray_Check(g_obj):
                raise TypeError(f"grads[{pos}] must be a numpy.ndarray, got {type(g_obj).__name__}")
            if not cnp.PyArray_CheckExact(g_obj) and isinstance(g_obj, np.ma.MaskedArray):
                raise TypeError(f"grads[{pos}] must be a plain ndarray, not a masked array "
                                "(the kernels would ignore its mask)")
            g = <cnp.ndarray>g_obj
            self._check_grad_dtype(g, f"grads[{pos}]", p, pos)
            if not _same_shape(g, p):
                raise ValueError(f"grads[{pos}] must have the shape of params[{pos}] "
                                 f"{(<object>p).shape}, got {(<object>g).shape}")
            if not cnp.PyArray_IS_C_CONTIGUOUS(g) or not cnp.PyArray_ISALIGNED(g):
                raise ValueError(f"grads[{pos}] must be C-contiguous and aligned "
                                 f"(fusedopt never copies)")
            if self._sizes[i] > 0:
                _check_not_written(g, f"grads[{pos}]", lists)
            self._grads[i] = g
            self._grad_ptrs[i] = cnp.PyArray_DATA(g)
        self._check_slots_unchanged()
        return 0

    cdef int _check_grad_dtype(self, cnp.ndarray g, str name, cnp.ndarray p, Py_ssize_t pos) except -1:
        """TypeError unless g's dtype is this kernel's gradient storage; LayoutChanged
        if it is another one the parameter allows (another kernel reads it)."""
        if cnp.PyArray_TYPE(g) != self.grad_typenum or not cnp.PyArray_ISNOTSWAPPED(g):
            if cnp.PyArray_ISNOTSWAPPED(g) and (cnp.PyArray_TYPE(g) == self.typenum or
                                               _narrower_grad_allowed(self.typenum, cnp.PyArray_TYPE(g))):
                raise LayoutChanged()    # another allowed gradient dtype: another kernel
            allowed = "float32, bfloat16 or float16" if self.typenum == cnp.NPY_FLOAT32 else str(p.dtype)
            raise TypeError(f"{name} must have dtype {allowed} for params[{pos}] "
                            f"({p.dtype}), got {g.dtype}; fusedopt never narrows a gradient "
                            f"or copies one")
        return 0

    cdef str _algorithm_name(self):
        return fo_kernel_algorithm(self.kernel).decode() if self.kernel >= 0 else "this list"

    cdef bint _same_matrix(self, cnp.ndarray p, Py_ssize_t i):
        """True if p's last two dimensions are still those of tensor i's factored state."""
        cdef int ndim = cnp.PyArray_NDIM(p)
        if ndim < 2:
            return self._rows[i] == 0 and self._cols[i] == 0
        return (cnp.PyArray_DIMS(p)[ndim - 2] == self._rows[i]
                and cnp.PyArray_DIMS(p)[ndim - 1] == self._cols[i])

    cdef int _check_slots_unchanged(self) except -1:
        """LayoutChanged if a state buffer (or absmax, or master copy) was resized,
        re-typed or made read-only in place (opt.state hands them out) since the plan
        was built."""
        cdef Py_ssize_t i, k
        for i in range(self.n_tensors):
            for k in range(len(self.slots)):
                if self._slot_ptrs[k][i] == NULL:
                    continue
                _check_unchanged((<list>self.slots[k])[i], self._slot_ptrs[k][i], self._slot_sizes[k][i],
                                 self.state_typenum)
                if self._scale_ptrs[k][i] != NULL:
                    _check_unchanged((<list>self.scales[k])[i], self._scale_ptrs[k][i],
                                     _blocks_of(self._sizes[i]), cnp.NPY_FLOAT32)
            if self._master_ptrs[i] != NULL:
                _check_unchanged(self.masters[i], self._master_ptrs[i], self._sizes[i], cnp.NPY_FLOAT32)
        return 0

    cdef void release_grads(self):
        """Drop the references check_grads took (after the step)."""
        cdef Py_ssize_t i
        for i in range(self.n_tensors):
            self._grads[i] = None
            self._grad_ptrs[i] = NULL
            self._sparse[i] = None
            self._merged[i] = None
            self._row_ptrs[i] = NULL
            self._grad_at_ptrs[i] = NULL
            self._values_ptrs[i] = NULL
            self._n_rows[i] = 0
        self._n_sparse = 0

    cdef int stats(self, fo_operand operand, int n_threads, fo_grad_stats *out) except -1:
        """Sum of squares and finiteness of the recorded gradients (or of the params)."""
        cdef int rc, storage = self._grad_storage_id if operand == FO_OPERAND_GRAD else self._param_storage_id
        cdef const fo_tensor_list *tensors = &self.c
        if operand == FO_OPERAND_GRAD and self._n_sparse > 0:
            tensors = self._stats_view()     # the merged rows of row-sparse gradients
        with nogil:
            rc = fo_stats(storage, tensors, operand, n_threads, out, NULL)
        if rc != 0:
            raise MemoryError("fusedopt: no memory for the gradient statistics")
        return 0


    cdef list stat_arrays(self, fo_operand operand):
        """The arrays `stats` reads: the params, or the gradients (merged rows of
        row-sparse ones)."""
        cdef Py_ssize_t i
        if operand == FO_OPERAND_PARAM:
            return list(self.params)
        return [self._grads[i] if self._merged[i] is None else self._merged[i][1][:self._n_rows[i]]
                for i in range(self.n_tensors)]

    # -- row-sparse gradients ---------------------------------------------------

    cdef int _check_row_grad(self, RowSparseGrad rg, Py_ssize_t i, Py_ssize_t pos, cnp.ndarray p,
                             tuple lists) except -1:
        """Validate tensor i's row-sparse gradient as it is now (its arrays may have
        been reshaped in place since it was made) and record it."""
        cdef cnp.ndarray idx, v
        cdef int64_t width = 1
        cdef int k, d
        name = f"grads[{pos}]"
        if not self._row_grads:
            raise TypeError(f"{name} is a RowSparseGrad, but {self._algorithm_name()} has no row-sparse step "
                            f"(Adagrad, SGD and SparseAdam have one)")
        if cnp.PyArray_NDIM(p) < 1:
            raise ValueError(f"{name} is a RowSparseGrad, but params[{pos}] is 0-d: it has no rows")
        check_index_array(rg.indices, f"{name}.indices")
        check_array(rg.values, f"{name}.values", False)
        idx = <cnp.ndarray>rg.indices
        v = <cnp.ndarray>rg.values
        self._check_grad_dtype(v, f"{name}.values", p, pos)
        if not _rows_match(v, idx, p):     # the C dimensions, which the merge reads
            expected = (cnp.PyArray_DIMS(idx)[0],) + tuple(cnp.PyArray_DIMS(p)[d] for d in range(1, cnp.PyArray_NDIM(p)))
            got = tuple(cnp.PyArray_DIMS(v)[d] for d in range(cnp.PyArray_NDIM(v)))
            raise ValueError(f"{name}.values must have shape {expected} (one row of params[{pos}] "
                             f"{(<object>p).shape} per index), got {got}")
        for d in range(1, cnp.PyArray_NDIM(p)):
            width *= cnp.PyArray_DIMS(p)[d]
        for k in range(FO_MAX_SLOTS):
            if self._scale_ptrs[k][i] != NULL and width % FO_QUANTIZATION_BLOCK != 0:
                raise ValueError(f"{name}: 8-bit state steps whole blocks of {FO_QUANTIZATION_BLOCK} "
                                 f"elements, and a row of params[{pos}] has {width}; use "
                                 f"state_dtype='bfloat16' or 'float32' for this table (or rows of a "
                                 f"multiple of {FO_QUANTIZATION_BLOCK})")
        _check_not_written(v, f"{name}.values", lists)
        _check_not_written(idx, f"{name}.indices", lists)
        self._sparse[i] = (idx, v)
        self._widths[i] = width
        self._grad_ptrs[i] = NULL
        self._n_sparse += 1
        return 0

    cdef int merge_rows(self, int n_threads, bint copy_all) except -1:
        """Sort and merge this step's row-sparse gradients (fo_merge_rows): checks
        every row number, on the merge's own copy, before any kernel runs.  With
        copy_all (a norm will read them), every merged row is in the merge buffer;
        else rows given once stay where they are."""
        cdef Py_ssize_t i
        cdef cnp.ndarray idx, v, rows, grad_at, merged
        cdef int64_t n, got, bad = 0, n_table, width
        cdef int index_bytes, storage = self._grad_storage_id
        if self._n_sparse == 0:
            return 0
        for i in range(self.n_tensors):
            if self._sparse[i] is None:
                continue
            idx, v = self._sparse[i]
            n = cnp.PyArray_DIMS(idx)[0]
            n_table = cnp.PyArray_DIMS(<cnp.ndarray>self.params[i])[0]
            width = self._widths[i]
            index_bytes = <int>cnp.PyArray_ITEMSIZE(idx)
            rows, grad_at, merged = self._merge_buffers_for(i, v)
            if n * width < GIL_RELEASE_MIN_ELEMENTS:
                got = fo_merge_rows(storage, cnp.PyArray_DATA(idx), index_bytes, n, cnp.PyArray_DATA(v), width,
                                    n_table, copy_all, <int64_t *>cnp.PyArray_DATA(rows),
                                    <int64_t *>cnp.PyArray_DATA(grad_at), cnp.PyArray_DATA(merged), &bad, n_threads)
            else:
                with nogil:
                    got = fo_merge_rows(storage, cnp.PyArray_DATA(idx), index_bytes, n, cnp.PyArray_DATA(v),
                                        width, n_table, copy_all, <int64_t *>cnp.PyArray_DATA(rows),
                                        <int64_t *>cnp.PyArray_DATA(grad_at), cnp.PyArray_DATA(merged), &bad,
                                        n_threads)
            if got == -1:
                raise MemoryError("fusedopt: no memory to merge a row-sparse gradient")
            if got == -2:
                raise ValueError(f"grads[{self._positions[i]}].indices holds row {bad}, outside [0, {n_table}) "
                                 f"for params[{self._positions[i]}] of shape {(<object>self.params[i]).shape}")
            self._merged[i] = (rows, merged)
            self._row_ptrs[i] = <const int64_t *>cnp.PyArray_DATA(rows)
            self._grad_at_ptrs[i] = <const int64_t *>cnp.PyArray_DATA(grad_at)
            self._values_ptrs[i] = cnp.PyArray_DATA(v)
            self._n_rows[i] = got
        return 0

    cdef tuple _merge_buffers_for(self, Py_ssize_t i, cnp.ndarray v):
        """Buffers for merging `v` into (n rows of tensor i's width, sized by v's C
        dimensions, which the merge reads): those of an earlier step when large enough
        (a fresh megabyte every step would cost its page faults every step)."""
        cdef Py_ssize_t n = cnp.PyArray_DIMS(v)[0]
        cdef int64_t width = self._widths[i]
        kept = self._merge_buffers[i]
        if (kept is None or cnp.PyArray_DIMS(<cnp.ndarray>kept[0])[0] < n
                or cnp.PyArray_DIMS(<cnp.ndarray>kept[2])[1] != width
                or cnp.PyArray_TYPE(<cnp.ndarray>kept[2]) != cnp.PyArray_TYPE(v)):
            kept = (np.empty(n, np.int64), np.empty(n, np.int64),
                    np.empty((n, width), <object>cnp.PyArray_DESCR(v)))
            self._merge_buffers[i] = kept
        return kept[0][:n], kept[1][:n], kept[2][:n]

    cdef const fo_tensor_list *_stats_view(self):
        """c with each row-sparse gradient's merged rows as its gradient (merged with copy_all)."""
        cdef Py_ssize_t i
        self._view = self.c
        self._view_offsets[0] = 0
        for i in range(self.n_tensors):
            if self._merged[i] is None:
                self._view_sizes[i] = self._sizes[i]
                self._view_grads[i] = self._grad_ptrs[i]
            else:
                self._view_sizes[i] = self._n_rows[i] * self._widths[i]
                self._view_grads[i] = cnp.PyArray_DATA(<cnp.ndarray>self._merged[i][1])
            self._view_offsets[i + 1] = self._view_offsets[i] + self._view_sizes[i]
        self._view.size = self._view_sizes
        self._view.offset = self._view_offsets
        self._view.grad = self._view_grads
        return &self._view

    cdef const fo_tensor_list *dense_view(self):
        """c without the tensors of row-sparse gradients (the dense step's list)."""
        cdef Py_ssize_t i
        cdef int64_t block = fo_kernel_block(self.kernel)
        self._view = self.c
        self._view_offsets[0] = 0
        for i in range(self.n_tensors):
            self._view_sizes[i] = self._sizes[i] if self._merged[i] is None else 0
            self._view_offsets[i + 1] = (self._view_offsets[i]
                                         + (self._view_sizes[i] + block - 1) // block * block)
        self._view.size = self._view_sizes
        self._view.offset = self._view_offsets
        return &self._view

    cdef const fo_tensor_list *rows_view(self):
        """c with the merged rows as the gradients (fo_step_rows' list)."""
        cdef Py_ssize_t i
        self._view = self.c
        for i in range(self.n_tensors):
            self._view_grads[i] = (NULL if self._merged[i] is None
                                   else cnp.PyArray_DATA(<cnp.ndarray>self._merged[i][1]))
        self._view.grad = self._view_grads
        return &self._view

    cdef const fo_row_grads *row_grads(self):
        return &self._rows_c


cdef bint _rows_match(cnp.ndarray v, cnp.ndarray idx, cnp.ndarray p):
    """True if v's C dimensions are (len(idx),) + p's rows."""
    cdef int d, ndim = cnp.PyArray_NDIM(p)
    if cnp.PyArray_NDIM(v) != ndim or cnp.PyArray_DIMS(v)[0] != cnp.PyArray_DIMS(idx)[0]:
        return False
    for d in range(1, ndim):
        if cnp.PyArray_DIMS(v)[d] != cnp.PyArray_DIMS(p)[d]:
            return False
    return True


cdef int _check_not_written(cnp.ndarray a, str name, tuple lists) except -1:
    """ValueError naming `name` if `a` overlaps a buffer any of `lists` writes."""
    cdef TensorList other
    cdef Py_ssize_t j
    cdef uintptr_t start = <uintptr_t>cnp.PyArray_DATA(a)
    if cnp.PyArray_NBYTES(a) == 0:
        return 0
    for other in lists:
        j = other._overlapping(start, start + <uintptr_t>cnp.PyArray_NBYTES(a))
        if j >= 0:
            raise ValueError(f"{name} shares memory with {other._interval_name(j)}; "
                             f"a gradient must not alias what the step writes")
    return 0


#: elements per absmax block of 8-bit state
QUANTIZATION_BLOCK = FO_QUANTIZATION_BLOCK


cdef inline int64_t _blocks_of(int64_t n):
    return (n + FO_QUANTIZATION_BLOCK - 1) // FO_QUANTIZATION_BLOCK


cdef int _check_unchanged(object arr, void *data, int64_t size, int typenum) except -1:
    cdef cnp.ndarray a = <cnp.ndarray>arr
    if (cnp.PyArray_DATA(a) != data or cnp.PyArray_SIZE(a) != size or cnp.PyArray_TYPE(a) != typenum
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISWRITEABLE(a)):
        raise LayoutChanged()
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
