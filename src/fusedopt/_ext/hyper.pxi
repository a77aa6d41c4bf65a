# Hyperparameter readers: param-group dicts -> validated C hyperparameter blocks.
# (Included by _core.pyx.)

# What a hyperparameter is (the `kind` of fusedopt.optim._spec.Hyper)
cdef enum Kind:
    KIND_LR            # a number >= 0, or a schedule called with the step count
    KIND_RATE          # a finite number >= 0
    KIND_UNIT          # 0 <= x <= 1
    KIND_POSITIVE      # a finite number > 0 that does not round to 0 in float32 parameters
    KIND_BOOL          # True or False
    KIND_BETAS         # a pair of numbers in [0, 1): two fields
    KIND_REAL          # a finite number
    KIND_EPS_PAIR      # a pair (None or a finite number >= 0, a finite number >= 0): two
                       # fields, None read as -1
    KIND_CONSTANT      # fixed by the class, not read from the group

KINDS = {"lr": KIND_LR, "rate": KIND_RATE, "unit": KIND_UNIT, "positive": KIND_POSITIVE,
         "bool": KIND_BOOL, "betas": KIND_BETAS, "real": KIND_REAL, "eps_pair": KIND_EPS_PAIR,
         "constant": KIND_CONSTANT}
#: the kinds that fill two kernel inputs
PAIR_KINDS = ("betas", "eps_pair")


cdef str _group_prefix(Py_ssize_t g, Py_ssize_t n_groups):
    return f"param_groups[{g}]: " if n_groups > 1 else ""


cdef inline bint _as_double(object value, double *out):
    """Store `value` as a double if it is a Python or NumPy real (not a bool, not a
    str); False otherwise.  The caller words the error, so the fast path formats nothing."""
    if type(value) is float:
        out[0] = <double>value
        return True
    if isinstance(value, bool) or isinstance(value, np.bool_) or not isinstance(value, numbers.Real):
        return False
    try:
        out[0] = <double>float(value)
    except OverflowError:              # an int beyond a double: infinite, refused as not finite
        out[0] = float("inf") if value > 0 else float("-inf")
    return True


cdef class HyperReader:
    """Reads the hyperparameters of every param group into C rows (one double per
    kernel input, in fo_kernel_inputs order), validating each.

    Parameters
    ----------
    inputs : tuple of str
        The kernel's input fields, in order.
    program : list of (key, kind, fields, constant)
        How each field is filled: from group[key] (kind names the check), or
        from `constant`.  Every input must be filled exactly once.
    check : callable or None
        check(group) raises for invalid combinations (nesterov without
        momentum...); called when a group's values differ from the last ones it
        accepted.
    """
    cdef readonly tuple inputs
    cdef readonly Py_ssize_t n_inputs
    cdef list _keys
    cdef int *_kinds
    cdef int *_fields        # first field of each entry
    cdef double *_constants
    cdef Py_ssize_t _n_entries
    cdef object _check
    cdef double *_accepted   # the last rows check() accepted
    cdef Py_ssize_t _n_accepted

    def __cinit__(self):
        self._kinds = NULL
        self._fields = NULL
        self._constants = NULL
        self._accepted = NULL
        self._n_accepted = 0

    def __dealloc__(self):
        free(self._kinds)
        free(self._fields)
        free(self._constants)
        free(self._accepted)

    def __init__(self, tuple inputs, list program, object check=None):
        cdef Py_ssize_t e, n = len(program)
        filled = []
        self.inputs = inputs
        self.n_inputs = len(inputs)
        self._n_entries = n
        self._keys = []
        self._check = check
        self._kinds = <int *>malloc(max(n, 1) * sizeof(int))
        self._fields = <int *>malloc(max(n, 1) * sizeof(int))
        self._constants = <double *>malloc(max(n, 1) * sizeof(double))
        if self._kinds == NULL or self._fields == NULL or self._constants == NULL:
            raise MemoryError()
        for e in range(n):
            key, kind, fields, constant = program[e]
            fields = tuple(fields)
            if kind not in KINDS:
                raise ValueError(f"unknown hyperparameter kind {kind!r}")
            for field in fields:
                if field not in inputs:
                    raise ValueError(f"{key!r} fills {field!r}, which is not a kernel input {inputs}")
            expected = [inputs[inputs.index(fields[0]) + j] for j in range(len(fields))] if fields else []
            if list(fields) != expected or len(fields) != (2 if kind in PAIR_KINDS else 1):
                raise ValueError(f"{key!r} must fill consecutive kernel inputs, got {fields}")
            filled.extend(fields)
            self._keys.append(key)
            self._kinds[e] = KINDS[kind]
            self._fields[e] = inputs.index(fields[0])
            self._constants[e] = float(constant) if constant is not None else 0.0
        if sorted(filled) != sorted(inputs):
            raise ValueError(f"the spec fills {sorted(filled)}, the kernel reads {sorted(inputs)}")

    cdef int read(self, tuple groups, Py_ssize_t k, const unsigned char *has_f32,
                  double *rows, bint call_schedules=True) except -1:
        """Fill rows[g * n_inputs + field] for every group g at step count k
        (without call_schedules, a schedule-valued lr reads as 0: for checks that
        must not run user code).  `groups` is a snapshot (a tuple) holding each
        group dict: user code run here (schedules, __float__) cannot change how
        many there are or free one.  rows has room for len(groups) rows."""
        cdef Py_ssize_t g, e, n = len(groups)
        cdef double *row
        cdef str key
        cdef object group_obj, raw
        cdef bint changed = False
        for g in range(n):
            group_obj = groups[g]
            if type(group_obj) is not dict:
                raise TypeError(f"param_groups[{g}] must be a dict, got {type(group_obj).__name__}")
            row = rows + g * self.n_inputs
            for e in range(self._n_entries):
                if self._kinds[e] == KIND_CONSTANT:
                    row[self._fields[e]] = self._constants[e]
                    continue
                key = <str>self._keys[e]
                raw = (<dict>group_obj).get(key, _MISSING)
                if raw is _MISSING:
                    raise ValueError(f"{_group_prefix(g, n)}the param group has no {key!r}")
                if not call_schedules and self._kinds[e] == KIND_LR and callable(raw):
                    row[self._fields[e]] = 0.0
                    continue
                self._read_one(raw, key, <Kind>self._kinds[e], g, n, k,
                               has_f32[g] if has_f32 != NULL else 0, row + self._fields[e])
        if self._check is not None:
            if self._n_accepted != n:
                free(self._accepted)
                self._accepted = <double *>malloc(max(n * self.n_inputs, 1) * sizeof(double))
                if self._accepted == NULL:
                    self._n_accepted = 0
                    raise MemoryError()
                self._n_accepted = n
                changed = True
            for g in range(n):
                if changed or memcmp(self._accepted + g * self.n_inputs, rows + g * self.n_inputs,
                                     self.n_inputs * sizeof(double)) != 0:
                    try:
                        self._check(groups[g])
                    except (TypeError, ValueError) as exc:
                        self._n_accepted = -1    # check them all again next time
                        raise type(exc)(f"{_group_prefix(g, n)}{exc}") from None
                    memcpy(self._accepted + g * self.n_inputs, rows + g * self.n_inputs,
                           self.n_inputs * sizeof(double))
        return 0

    cdef int _read_one(self, object raw, str key, Kind kind, Py_ssize_t g, Py_ssize_t n,
                       Py_ssize_t k, bint has_f32, double *out) except -1:
        """Check one value and store it; errors name the group (when there are
        several) and the key.  Nothing is formatted unless there is an error."""
        cdef double value
        cdef Py_ssize_t j
        cdef tuple pair
        if kind == KIND_BOOL:
            if raw is True or raw is False or isinstance(raw, np.bool_):
                out[0] = 1.0 if raw else 0.0
                return 0
            raise TypeError(f"{_group_prefix(g, n)}{key} must be True or False, got {raw!r}")
        if kind == KIND_BETAS:
            if not isinstance(raw, (tuple, list)):
                raise TypeError(f"{_group_prefix(g, n)}{key} must be a pair of numbers "
                                f"(beta1, beta2), got {raw!r}")
            pair = tuple(raw)   # a snapshot: __float__ of an element may change the list
            if len(pair) != 2:
                raise TypeError(f"{_group_prefix(g, n)}{key} must be a pair of numbers "
                                f"(beta1, beta2), got {raw!r}")
            for j in range(2):
                if not _as_double(pair[j], &value):
                    raise TypeError(f"{_group_prefix(g, n)}{key}[{j}] must be a real number, "
                                    f"got {type(pair[j]).__name__}")
                if not (0.0 <= value < 1.0):
                    raise ValueError(f"{_group_prefix(g, n)}{key}[{j}] must be in [0, 1), got {value!r}")
                out[j] = value
            return 0
        if kind == KIND_EPS_PAIR:
            pair = tuple(raw) if isinstance(raw, (tuple, list)) else ()   # a snapshot
            if len(pair) != 2:
                raise TypeError(f"{_group_prefix(g, n)}{key} must be a pair (eps1 or None, eps2), "
                                f"got {raw!r}")
            for j in range(2):
                if j == 0 and pair[0] is None:
                    out[0] = -1.0
                    continue
                if not _as_double(pair[j], &value):
                    raise TypeError(f"{_group_prefix(g, n)}{key}[{j}] must be a real number"
                                    f"{' or None' if j == 0 else ''}, got {type(pair[j]).__name__}")
                if not isfinite(value) or value < 0.0:
                    raise ValueError(f"{_group_prefix(g, n)}{key}[{j}] must be a finite number >= 0, "
                                     f"got {value!r}")
                out[j] = value
            return 0
        if not _as_double(raw, &value):
            if kind != KIND_LR or not callable(raw):
                raise TypeError(f"{_group_prefix(g, n)}{key} must be a real number"
                                f"{' or a schedule' if kind == KIND_LR else ''}, got {type(raw).__name__}")
            try:
                scheduled = raw(k)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{_group_prefix(g, n)}{key} schedule failed at step {k}: {exc}") from None
            if not _as_double(scheduled, &value):
                raise TypeError(f"{_group_prefix(g, n)}{key} (a schedule) must give real numbers, "
                                f"got {type(scheduled).__name__} at step {k}")
        if kind == KIND_REAL:
            if not isfinite(value):
                raise ValueError(f"{_group_prefix(g, n)}{key} must be a finite number, got {value!r}")
            out[0] = value
            return 0
        if not isfinite(value) or value < 0.0:
            raise ValueError(f"{_group_prefix(g, n)}{key} must be a finite number >= 0, got {value!r}")
        if kind == KIND_UNIT and value > 1.0:
            raise ValueError(f"{_group_prefix(g, n)}{key} must be in [0, 1], got {value!r}")
        if kind == KIND_POSITIVE:
            if not value > 0.0:
                raise ValueError(f"{_group_prefix(g, n)}{key} must be a finite number > 0, got {value!r}")
            if has_f32 and not (<float>value > 0.0):
                raise ValueError(f"{_group_prefix(g, n)}{key} = {raw!r} rounds to 0 in float32: use a "
                                 f"value >= {np.finfo(np.float32).smallest_subnormal} with float32 "
                                 f"parameters")
        out[0] = value
        return 0


cdef object _MISSING = object()
