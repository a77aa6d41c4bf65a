# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The binding between fusedopt's optimizers and its C kernels (csrc/).

`TensorList` holds tensors of one dtype and their optimizer state as C arrays
of pointers, validated once.  Each step it validates the gradients and the
hyperparameters (raising before any buffer is touched), then makes one call
into C with the GIL released.
"""
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport free, malloc, qsort
from libc.math cimport isfinite, sqrt
from cpython.ref cimport PyObject

cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef extern from "fusedopt.h" nogil:
    enum: FO_MAX_STATE
    ctypedef struct fo_tensor_list:
        int64_t n_tensors
        void **param
        const void **grad
        void **state[FO_MAX_STATE]
        const int64_t *size
        const int64_t *offset
        const int32_t *group

    ctypedef struct fo_adam_group:
        double lr, beta1, beta2, eps, weight_decay, grad_multiplier
        int64_t step
        int decoupled, amsgrad, maximize

    ctypedef struct fo_sgd_group:
        double lr, momentum, dampening, weight_decay, grad_multiplier
        int nesterov, maximize, lr_in_velocity, first_step

    void fo_adam_f32(const fo_tensor_list *t, fo_adam_group *groups, int64_t n_groups, int n_threads)
    void fo_adam_f64(const fo_tensor_list *t, fo_adam_group *groups, int64_t n_groups, int n_threads)
    void fo_sgd_f32(const fo_tensor_list *t, const fo_sgd_group *groups, int n_threads)
    void fo_sgd_f64(const fo_tensor_list *t, const fo_sgd_group *groups, int n_threads)
    ctypedef struct fo_grad_stats:
        double sum_sq
        int non_finite
    void fo_grad_stats_f32(const fo_tensor_list *t, int n_threads, fo_grad_stats *out)
    void fo_grad_stats_f64(const fo_tensor_list *t, int n_threads, fo_grad_stats *out)
    int64_t fo_parallel_min_elements()
    void fo_set_parallel_min_elements(int64_t n)
    void fo_set_num_threads(int n)
    int fo_get_num_threads()
    int fo_openmp_enabled()
    const char *fo_simd_path()
    const char *fo_simd_supported()
    int fo_set_simd_path(const char *name)

cdef extern from "fusedopt_build_config.h":
    const char *FUSEDOPT_BUILD_COMPILER
    const char *FUSEDOPT_BUILD_FLAGS
    const char *FUSEDOPT_BUILD_OPENMP_FLAGS

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fo_openmp_version(void) { return _OPENMP; }
    #else
    static int fo_openmp_version(void) { return 0; }
    #endif
    """
    int fo_openmp_version()


# ---------------------------------------------------------------------------
# Threads, SIMD path, build information
# ---------------------------------------------------------------------------

def get_num_threads():
    """Number of threads the kernels use: `set_num_threads`'s value, else
    ``omp_get_max_threads()`` (which follows ``OMP_NUM_THREADS`` and threadpoolctl)."""
    return fo_get_num_threads()


def set_num_threads(n):
    """Use `n` threads in the kernels; ``None`` or 0 goes back to following OpenMP's setting."""
    if n is None:
        n = 0
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    fo_set_num_threads(<int>n)


def parallel_min_elements():
    """Below this many elements in one step, the kernels stay on the calling thread."""
    return fo_parallel_min_elements()


def set_parallel_min_elements(n):
    """Change the single-thread cutoff (for benchmarking the cutoff itself)."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    fo_set_parallel_min_elements(<int64_t>n)


def simd_path():
    """The SIMD variant of the kernels in use ('baseline', 'avx2' or 'avx512')."""
    return fo_simd_path().decode()


def simd_supported():
    """The SIMD variants this CPU can run, best first."""
    return fo_simd_supported().decode().split()


def set_simd_path(name):
    """Force a SIMD variant this CPU supports (used by the tests and FUSEDOPT_SIMD)."""
    cdef int rc = fo_set_simd_path(str(name).encode())
    if rc == -1:
        raise ValueError(f"name must be one of {simd_supported()}, got {name!r}")
    if rc == -2:
        raise ValueError(f"this CPU cannot run the {name!r} kernels; it supports {simd_supported()}")


def build_info():
    """How the extension was built."""
    return {
        "compiler": FUSEDOPT_BUILD_COMPILER.decode(),
        "flags": FUSEDOPT_BUILD_FLAGS.decode(),
        "openmp": bool(fo_openmp_enabled()),
        "openmp_version": fo_openmp_version(),
        "openmp_flags": FUSEDOPT_BUILD_OPENMP_FLAGS.decode(),
    }


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------

cdef struct Interval:
    uintptr_t start
    uintptr_t end
    int32_t kind      # 0: parameter, k >= 1: state buffer k-1
    int64_t index     # position of the tensor in the step's parameter list


cdef int _compare_intervals(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const Interval *>a).start
    cdef uintptr_t y = (<const Interval *>b).start
    return -1 if x < y else (1 if x > y else 0)


cdef str _array_problem(object arr, bint writeable):
    """Why `arr` cannot be used as a kernel buffer, or None."""
    if not cnp.PyArray_Check(arr):
        return f"must be a numpy.ndarray, got {type(arr).__name__}"
    cdef cnp.ndarray a = <cnp.ndarray>arr
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return f"must have dtype float32 or float64, got {a.dtype}"
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return f"must be in native byte order, got {a.dtype.str}"
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return "must be C-contiguous (fusedopt updates in place and never copies)"
    if not cnp.PyArray_ISALIGNED(a):
        return "must be aligned to its dtype"
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        return "must be writeable (it is updated in place)"
    return None


def check_array(arr, name, writeable):
    """Raise TypeError/ValueError naming `name` unless `arr` can be a kernel buffer."""
    problem = _array_problem(arr, writeable)
    if problem is None:
        return
    if not cnp.PyArray_Check(arr) or "dtype" in problem:
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


cdef str _group_prefix(Py_ssize_t g, Py_ssize_t n_groups):
    return f"param_groups[{g}]: " if n_groups > 1 else ""


# ---------------------------------------------------------------------------
# TensorList
# ---------------------------------------------------------------------------

cdef class TensorList:
    """Tensors of one dtype, their state buffers and group ids, as C arrays.

    Parameters
    ----------
    params : list of ndarray
        The parameters (all float32 or all float64), updated in place.
    positions : list of int
        positions[i] is the index of params[i] (and of its gradient) in the
        optimizer's flat parameter list; errors name that index.
    groups : list of int
        Parameter group of each tensor.
    states : list of (list of ndarray or None)
        One list per state slot, aligned with `params` (None where unused).
    state_names : list of str
        Names of the state slots, for error messages.
    """
    cdef fo_tensor_list c
    cdef readonly int typenum
    cdef readonly Py_ssize_t n_tensors
    cdef list _params
    cdef list _states
    cdef int64_t *_positions
    cdef void **_param_ptrs
    cdef const void **_grad_ptrs
    cdef void **_state_ptrs[FO_MAX_STATE]
    cdef int64_t *_sizes
    cdef int64_t *_offsets
    cdef int32_t *_groups
    cdef Interval *_intervals
    cdef Py_ssize_t _n_intervals
    cdef list _state_names

    def __cinit__(self):
        self._positions = NULL
        self._param_ptrs = NULL
        self._grad_ptrs = NULL
        for k in range(FO_MAX_STATE):
            self._state_ptrs[k] = NULL
        self._sizes = NULL
        self._offsets = NULL
        self._groups = NULL
        self._intervals = NULL

    def __dealloc__(self):
        free(self._positions)
        free(self._param_ptrs)
        free(<void *>self._grad_ptrs)
        for k in range(FO_MAX_STATE):
            free(self._state_ptrs[k])
        free(self._sizes)
        free(self._offsets)
        free(self._groups)
        free(self._intervals)

    def __init__(self, list params, list positions, list groups, list states, list state_names,
                 bint writeable=True):
        cdef Py_ssize_t n = len(params), i, k, n_state = len(states)
        cdef cnp.ndarray p, s
        if n_state > FO_MAX_STATE:
            raise ValueError("too many state buffers")
        self.n_tensors = n
        self._params = list(params)
        self._states = [list(slot) for slot in states]
        self._state_names = list(state_names)
        self.typenum = -1
        for i in range(n):
            check_array(params[i], f"params[{positions[i]}]", writeable)
            p = <cnp.ndarray>params[i]
            if self.typenum == -1:
                self.typenum = cnp.PyArray_TYPE(p)
            elif cnp.PyArray_TYPE(p) != self.typenum:
                raise TypeError(f"params[{positions[i]}]: a TensorList holds one dtype")
            for k in range(n_state):
                if states[k][i] is None:
                    continue
                check_array(states[k][i], f"{state_names[k]}[{positions[i]}]", True)
                s = <cnp.ndarray>states[k][i]
                if cnp.PyArray_TYPE(s) != cnp.PyArray_TYPE(p) or not _same_shape(s, p):
                    raise ValueError(
                        f"{state_names[k]}[{positions[i]}] must match params[{positions[i]}] in "
                        f"dtype and shape: got {s.dtype} {(<object>s).shape}, "
                        f"expected {p.dtype} {(<object>p).shape}")

        self._positions = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self._param_ptrs = <void **>malloc(max(n, 1) * sizeof(void *))
        self._grad_ptrs = <const void **>malloc(max(n, 1) * sizeof(void *))
        self._sizes = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self._offsets = <int64_t *>malloc((n + 1) * sizeof(int64_t))
        self._groups = <int32_t *>malloc(max(n, 1) * sizeof(int32_t))
        self._intervals = <Interval *>malloc(max(n * (n_state + 1), 1) * sizeof(Interval))
        for k in range(FO_MAX_STATE):
            self._state_ptrs[k] = <void **>malloc(max(n, 1) * sizeof(void *))
        if (self._positions == NULL or self._param_ptrs == NULL or self._grad_ptrs == NULL
                or self._sizes == NULL or self._offsets == NULL or self._groups == NULL
                or self._intervals == NULL):
            raise MemoryError()
        for k in range(FO_MAX_STATE):
            if self._state_ptrs[k] == NULL:
                raise MemoryError()

        self._offsets[0] = 0
        self._n_intervals = 0
        for i in range(n):
            p = <cnp.ndarray>params[i]
            self._positions[i] = positions[i]
            self._groups[i] = groups[i]
            self._param_ptrs[i] = cnp.PyArray_DATA(p)
            self._grad_ptrs[i] = NULL
            self._sizes[i] = cnp.PyArray_SIZE(p)
            self._offsets[i + 1] = self._offsets[i] + self._sizes[i]
            self._add_interval(p, 0, positions[i])
            for k in range(FO_MAX_STATE):
                self._state_ptrs[k][i] = NULL
            for k in range(n_state):
                if states[k][i] is not None:
                    s = <cnp.ndarray>states[k][i]
                    self._state_ptrs[k][i] = cnp.PyArray_DATA(s)
                    self._add_interval(s, k + 1, positions[i])
        qsort(self._intervals, self._n_intervals, sizeof(Interval), _compare_intervals)
        for i in range(1, self._n_intervals if writeable else 0):  # only what is written must be disjoint
            if self._intervals[i].start < self._intervals[i - 1].end:
                raise ValueError(f"{self._interval_name(i)} shares memory with "
                                 f"{self._interval_name(i - 1)}; every parameter and state "
                                 f"buffer must be distinct memory")

        self.c.n_tensors = n
        self.c.param = self._param_ptrs
        self.c.grad = self._grad_ptrs
        for k in range(FO_MAX_STATE):
            self.c.state[k] = self._state_ptrs[k]
        self.c.size = self._sizes
        self.c.offset = self._offsets
        self.c.group = self._groups

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
        return f"{self._state_names[iv.kind - 1]}[{iv.index}]"

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

    cdef int check_grads(self, object grads, tuple lists) except -1:
        """Validate this list's gradients in `grads` and record their pointers;
        no gradient may overlap what any of `lists` (this one included) writes."""
        cdef Py_ssize_t i, j, pos
        cdef TensorList other
        cdef object g_obj, p_obj
        cdef cnp.ndarray g, p
        cdef uintptr_t start
        for i in range(self.n_tensors):
            pos = self._positions[i]
            g_obj = grads[pos]
            p_obj = self._params[i]
            p = <cnp.ndarray>p_obj
            if not cnp.PyArray_ISWRITEABLE(p):
                raise ValueError(f"params[{pos}] must be writeable (it is updated in place)")
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
            self._grad_ptrs[i] = cnp.PyArray_DATA(g)
        return 0

    cdef fo_grad_stats grad_stats(self, int n_threads) noexcept nogil:
        """Statistics of the gradients recorded by check_grads."""
        cdef fo_grad_stats stats
        if self.typenum == cnp.NPY_FLOAT32:
            fo_grad_stats_f32(&self.c, n_threads, &stats)
        else:
            fo_grad_stats_f64(&self.c, n_threads, &stats)
        return stats

    cdef void read_own_arrays(self):
        """Point the gradient slots at the list's own arrays (for their norm)."""
        cdef Py_ssize_t i
        for i in range(self.n_tensors):
            self._grad_ptrs[i] = self._param_ptrs[i]



# ---------------------------------------------------------------------------
# Hyperparameters: read from the param-group dicts, validated, stored in C
# ---------------------------------------------------------------------------

cdef enum:
    ALG_ADAM = 0
    ALG_SGD = 1

ADAM = ALG_ADAM
SGD = ALG_SGD


class LayoutChanged(Exception):
    """A group now needs state buffers the current TensorLists lack (rebuild and retry)."""


cdef inline int _check_rate(double value, str name, Py_ssize_t g, Py_ssize_t n) except -1:
    if not (value >= 0.0) or not isfinite(value):
        raise ValueError(f"{_group_prefix(g, n)}{name} must be a finite number >= 0, got {value!r}")
    return 0


cdef double _group_lr(dict group, Py_ssize_t k, Py_ssize_t g, Py_ssize_t n) except? -1.0:
    """The group's rate at step k: its lr (a number, or a schedule called with k)
    times its lr_factor (set by ReduceLROnPlateau)."""
    lr = group["lr"]
    if not isinstance(lr, (float, int)):
        if callable(lr):
            lr = lr(k)
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise TypeError(f"{_group_prefix(g, n)}lr must be a number or a schedule, "
                            f"got {type(group['lr']).__name__}") from None
    factor = group.get("lr_factor", 1.0)
    cdef double value = <double>lr * <double>factor
    if not (value >= 0.0) or not isfinite(value):
        raise ValueError(f"{_group_prefix(g, n)}lr must be a finite number >= 0, got {value!r}"
                         + ("" if factor == 1.0 else f" (lr {lr!r} x lr_factor {factor!r})"))
    return value


cdef int _read_adam_groups(list groups, list group_state, Py_ssize_t k, bint decoupled,
                           object layout, fo_adam_group *out) except -1:
    cdef Py_ssize_t g, n = len(groups)
    cdef dict group
    cdef double beta1, beta2, eps
    for g in range(n):
        group = <dict?>groups[g]
        out[g].lr = _group_lr(group, k, g, n)
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"{_group_prefix(g, n)}betas must be a pair (beta1, beta2), got {betas!r}")
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0):
            raise ValueError(f"{_group_prefix(g, n)}betas[0] must be in [0, 1), got {beta1!r}")
        if not (0.0 <= beta2 < 1.0):
            raise ValueError(f"{_group_prefix(g, n)}betas[1] must be in [0, 1), got {beta2!r}")
        eps = group["eps"]
        if not (eps > 0.0) or not isfinite(eps):
            raise ValueError(f"{_group_prefix(g, n)}eps must be a finite number > 0, got {eps!r}")
        out[g].beta1 = beta1
        out[g].beta2 = beta2
        out[g].eps = eps
        out[g].weight_decay = group["weight_decay"]
        _check_rate(out[g].weight_decay, "weight_decay", g, n)
        steps_done = (<dict?>group_state[g])["step"]
        if not isinstance(steps_done, (int, np.integer)) or steps_done < 0:
            raise ValueError(f"{_group_prefix(g, n)}step must be an int >= 1, got {steps_done + 1!r}")
        out[g].step = steps_done + 1
        out[g].decoupled = decoupled
        out[g].amsgrad = bool(group["amsgrad"])
        out[g].maximize = bool(group["maximize"])
        if layout is not None and out[g].amsgrad != layout[g]:
            raise LayoutChanged()
    return 0


cdef int _read_sgd_groups(list groups, list group_state, Py_ssize_t k, object layout,
                          fo_sgd_group *out) except -1:
    cdef Py_ssize_t g, n = len(groups)
    cdef dict group
    for g in range(n):
        group = <dict?>groups[g]
        out[g].lr = _group_lr(group, k, g, n)
        out[g].momentum = group["momentum"]
        _check_rate(out[g].momentum, "momentum", g, n)
        out[g].dampening = group["dampening"]
        if not (0.0 <= out[g].dampening <= 1.0):
            raise ValueError(f"{_group_prefix(g, n)}dampening must be in [0, 1], "
                             f"got {out[g].dampening!r}")
        out[g].weight_decay = group["weight_decay"]
        _check_rate(out[g].weight_decay, "weight_decay", g, n)
        out[g].nesterov = bool(group["nesterov"])
        if out[g].nesterov and (out[g].momentum <= 0.0 or out[g].dampening != 0.0):
            raise ValueError(f"{_group_prefix(g, n)}nesterov requires momentum > 0 and "
                             f"dampening = 0, got momentum={out[g].momentum!r}, "
                             f"dampening={out[g].dampening!r}")
        out[g].maximize = bool(group["maximize"])
        out[g].lr_in_velocity = bool(group["lr_in_velocity"])
        out[g].first_step = not (<dict?>group_state[g])["momentum_started"]
        if layout is not None and (out[g].momentum != 0.0) != layout[g]:
            raise LayoutChanged()
    return 0


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------

cdef object _as_sequence(object grads, Py_ssize_t expected):
    if isinstance(grads, (list, tuple)):
        seq = grads
    elif cnp.PyArray_Check(grads):
        raise TypeError("grads must be a sequence of arrays (one per parameter), got one ndarray")
    else:
        try:
            seq = list(grads)
        except TypeError:
            raise TypeError(f"grads must be a sequence of arrays, got {type(grads).__name__}") from None
    if len(seq) != expected:
        raise ValueError(f"grads has {len(seq)} arrays but the optimizer has {expected} parameters")
    return seq


cdef void *_read_groups(int algorithm, list groups, list group_state, Py_ssize_t k,
                        bint decoupled, object layout) except NULL:
    """Validated C hyperparameters of every group (free() them)."""
    cdef size_t group_size = sizeof(fo_adam_group) if algorithm == ALG_ADAM else sizeof(fo_sgd_group)
    cdef void *out = malloc(max(len(groups), 1) * group_size)
    if out == NULL:
        raise MemoryError()
    try:
        if algorithm == ALG_ADAM:
            _read_adam_groups(groups, group_state, k, decoupled, layout, <fo_adam_group *>out)
        else:
            _read_sgd_groups(groups, group_state, k, layout, <fo_sgd_group *>out)
    except BaseException:
        free(out)
        raise
    return out


def validate(int algorithm, list groups, list group_state, Py_ssize_t k, bint decoupled=False):
    """Check the groups' hyperparameters at step k as `step` would, touching no buffer."""
    free(_read_groups(algorithm, groups, group_state, k, decoupled, None))


cdef double _scaled_norm(object seq):
    """Norm of arrays whose squares overflow a double: NumPy, scaled by the largest |x|."""
    largest = max((float(np.max(np.abs(a))) for a in seq if a.size), default=0.0)
    if largest == 0.0:
        return 0.0
    return largest * float(np.sqrt(sum(np.sum(np.square(a / largest)) for a in seq)))


cdef double _norm_of(tuple lists, object seq, int n_threads, bint *non_finite) except? -1.0:
    """Global L2 norm of the gradients recorded by check_grads, in a fixed order
    (float32 list first), the same bits for any thread count."""
    cdef double sum_sq = 0.0
    cdef fo_grad_stats stats
    cdef TensorList tl
    non_finite[0] = False
    for tl in lists:
        with nogil:
            stats = tl.grad_stats(n_threads)
        sum_sq += stats.sum_sq
        non_finite[0] = non_finite[0] or stats.non_finite
    if non_finite[0]:
        return float("nan")
    if sum_sq == float("inf"):  # finite values whose squares overflow (float64 only)
        return _scaled_norm(seq)
    return sqrt(sum_sq)


def check_disjoint(tuple lists):
    """Raise ValueError if buffers of different TensorLists (dtypes) share memory."""
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


def arrays_norm(tuple lists):
    """Global L2 norm of the TensorLists' own arrays (NaN if any is non-finite)."""
    cdef bint non_finite = False
    cdef TensorList tl
    arrays = []
    for tl in lists:
        tl.read_own_arrays()
        arrays.extend(tl._params)
    return _norm_of(lists, arrays, fo_get_num_threads(), &non_finite)


def step(int algorithm, tuple lists, object grads, Py_ssize_t n_params, list groups,
         list group_state, Py_ssize_t k, bint decoupled=False, object layout=None,
         double grad_scale=1.0, double max_grad_norm=0.0, bint skip_nonfinite=False):
    """One step (see _step); the functional layer's entry point."""
    return _step(algorithm, lists, grads, n_params, groups, group_state, k, decoupled, layout,
                 grad_scale, max_grad_norm, skip_nonfinite)


cdef tuple _step(int algorithm, tuple lists, object grads, Py_ssize_t n_params, list groups,
                 list group_state, Py_ssize_t k, bint decoupled, object layout,
                 double grad_scale, double max_grad_norm, bint skip_nonfinite):
    """One step of `algorithm` (ADAM or SGD) over `lists` (TensorLists, one per dtype).

    groups are param-group dicts (hyperparameters), group_state[g] holds the
    group's "step" (steps done) and "momentum_started"; k is the optimizer's
    step count (for schedules).  Everything (hyperparameters of all groups,
    gradients of all lists) is validated before the first kernel runs, so a
    failing step changes nothing.

    Gradients are divided by `grad_scale` (a loss scale) inside the kernels.
    With `max_grad_norm` > 0 or `skip_nonfinite`, one read pass over the
    gradients first computes their global norm and finiteness; then either the
    step is skipped (non-finite gradients and `skip_nonfinite`: nothing is
    written) or the kernels scale the gradients by
    ``min(1, max_grad_norm / (norm + 1e-6))`` as they read them.

    After the kernels, each group's "step" is incremented (and
    "momentum_started" set where SGD used momentum).  Raises LayoutChanged if a
    group's options need state buffers that `layout` (the lists' layout) lacks.

    Returns
    -------
    (applied, grad_norm) : (bool, float or None)
        grad_norm is the norm of the unscaled gradients (g / grad_scale) before
        clipping, or None where it was not computed.
    """
    cdef Py_ssize_t n_groups = len(groups), i, n_lists = len(lists)
    cdef TensorList tl
    cdef int n_threads = fo_get_num_threads()
    cdef double multiplier, norm = 0.0
    cdef bint non_finite = False, need_norm = max_grad_norm > 0.0 or skip_nonfinite
    if not (grad_scale > 0.0) or not isfinite(grad_scale):
        raise ValueError(f"grad_scale must be a finite number > 0, got {grad_scale!r}")
    if not (max_grad_norm >= 0.0) or not isfinite(max_grad_norm):
        raise ValueError(f"max_grad_norm must be a finite number > 0 (or None), got {max_grad_norm!r}")
    seq = _as_sequence(grads, n_params)
    cdef void *hypers = _read_groups(algorithm, groups, group_state, k, decoupled, layout)
    try:
        for i in range(n_lists):
            (<TensorList>lists[i]).check_grads(seq, lists)
        multiplier = 1.0 / grad_scale
        if need_norm:
            norm = _norm_of(lists, seq, n_threads, &non_finite) / grad_scale
            if non_finite and skip_nonfinite:
                return False, norm
            if max_grad_norm > 0.0:
                multiplier *= min(1.0, max_grad_norm / (norm + 1e-6))
        for i in range(n_groups):
            if algorithm == ALG_ADAM:
                (<fo_adam_group *>hypers)[i].grad_multiplier = multiplier
            else:
                (<fo_sgd_group *>hypers)[i].grad_multiplier = multiplier
        for i in range(n_lists):
            tl = <TensorList>lists[i]
            with nogil:
                if algorithm == ALG_ADAM:
                    if tl.typenum == cnp.NPY_FLOAT32:
                        fo_adam_f32(&tl.c, <fo_adam_group *>hypers, n_groups, n_threads)
                    else:
                        fo_adam_f64(&tl.c, <fo_adam_group *>hypers, n_groups, n_threads)
                else:
                    if tl.typenum == cnp.NPY_FLOAT32:
                        fo_sgd_f32(&tl.c, <fo_sgd_group *>hypers, n_threads)
                    else:
                        fo_sgd_f64(&tl.c, <fo_sgd_group *>hypers, n_threads)
    finally:
        free(hypers)
    for i in range(n_groups):
        state = <dict?>group_state[i]
        state["step"] += 1
        if algorithm == ALG_SGD and (<dict?>groups[i])["momentum"] != 0:
            state["momentum_started"] = True
    return True, (norm if need_norm else None)


cdef class Stepper:
    """An optimizer's step, all in C speed: plan check, step count, busy flag.

    The optimizer builds the TensorLists (``lists``) and records what they were
    built from (``plan_lists``: each group's params list object;
    ``plan_copies``: its contents; ``layout``: which state buffers exist).
    `run` returns None when those no longer match the param groups: the
    optimizer then rebuilds and calls again.  `step_count` lives here so that it
    is read and advanced under the busy flag: one optimizer stepped from two
    threads at once raises RuntimeError in one of them and changes nothing there.
    """
    cdef public int algorithm
    cdef public bint decoupled
    cdef public tuple lists
    cdef public Py_ssize_t n_params
    cdef public list param_groups
    cdef public list group_state
    cdef public list plan_lists
    cdef public list plan_copies
    cdef public object layout
    cdef public Py_ssize_t step_count
    cdef bint busy

    def __init__(self, int algorithm, bint decoupled, list param_groups, list group_state):
        self.algorithm = algorithm
        self.decoupled = decoupled
        self.param_groups = param_groups
        self.group_state = group_state
        self.lists = ()
        self.n_params = 0
        self.plan_lists = []
        self.plan_copies = []
        self.layout = None
        self.step_count = 0
        self.busy = False

    def run(self, object grads, double grad_scale, double max_grad_norm, bint skip_nonfinite):
        """One step: (applied, grad_norm) as `step` returns, or None if the plan is stale."""
        cdef tuple result
        if self.busy:
            raise RuntimeError("this optimizer is already stepping in another thread; "
                               "step one optimizer from one thread at a time")
        if not plan_is_current(self.param_groups, self.plan_lists, self.plan_copies):
            return None
        self.busy = True
        try:
            result = _step(self.algorithm, self.lists, grads, self.n_params, self.param_groups,
                           self.group_state, self.step_count, self.decoupled, self.layout,
                           grad_scale, max_grad_norm, skip_nonfinite)
        except LayoutChanged:
            return None
        finally:
            self.busy = False
        if result[0]:
            self.step_count += 1
        return result


cpdef bint plan_is_current(list param_groups, list plan_lists, list plan_copies):
    """True if every group still holds the same params list object with the same
    arrays in it as when the TensorLists were built (identity checks, C speed)."""
    cdef Py_ssize_t g, n = len(param_groups)
    if len(plan_lists) != n:
        return False
    for g in range(n):
        params = (<dict?>param_groups[g])["params"]
        if params is not plan_lists[g] or not same_objects(<list?>params, <list?>plan_copies[g]):
            return False
    return True


cpdef bint same_objects(list a, list b):
    """True if `a` and `b` hold the same objects in the same order (identity, C speed)."""
    cdef Py_ssize_t i, n = len(a)
    if len(b) != n:
        return False
    for i in range(n):
        if <PyObject *>a[i] is not <PyObject *>b[i]:
            return False
    return True
