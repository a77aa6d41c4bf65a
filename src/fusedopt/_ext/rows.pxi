# Row-sparse gradients: RowSparseGrad and what a TensorList does with one.
# (Included by _core.pyx, before tensors.pxi.)


@cython.final    # the step recognises it by its exact type (one pointer compare per gradient)
cdef class RowSparseGrad:
    """The gradient of an embedding table that a batch touched in a few rows.

    Parameters
    ----------
    indices : ndarray of int32 or int64, 1-D
        Row numbers of the parameter (its first axis); duplicates allowed, in any
        order.  Their rows are summed (``torch.sparse_coo_tensor(...).coalesce()``).
    values : ndarray, shape ``(len(indices),) + param.shape[1:]``
        One gradient row per index, C-contiguous, in the parameter's dtype (or
        bfloat16/float16 for float32 parameters, as dense gradients).

    Neither array is copied: the step reads them where they are.  The row
    numbers are checked against the parameter at the step, on the step's own
    copy of them, before anything is written.
    """
    cdef readonly object indices
    cdef readonly object values

    def __init__(self, indices, values):
        check_index_array(indices, "indices")
        if not cnp.PyArray_Check(values):
            raise TypeError(f"values must be a numpy.ndarray, got {type(values).__name__}")
        if cnp.PyArray_NDIM(<cnp.ndarray>values) < 1:
            raise ValueError("values must have one row per index (at least 1 dimension), got a 0-d array")
        check_array(values, "values", False)
        # the C dimensions, which the merge reads (a subclass's .shape may say otherwise)
        if cnp.PyArray_DIMS(<cnp.ndarray>values)[0] != cnp.PyArray_DIMS(<cnp.ndarray>indices)[0]:
            raise ValueError(f"values must have one row per index: {cnp.PyArray_DIMS(<cnp.ndarray>indices)[0]} "
                             f"indices, {cnp.PyArray_DIMS(<cnp.ndarray>values)[0]} rows of values")
        self.indices = indices
        self.values = values

    @property
    def dtype(self):
        """The dtype of the gradient rows."""
        return self.values.dtype

    @property
    def nnz(self):
        """The number of rows given (duplicates included)."""
        return self.indices.shape[0]

    def to_dense(self, shape):
        """The dense gradient this stands for: an array of `shape` (the parameter's),
        zero outside the rows given, duplicates summed.  For checks and debugging:
        it allocates the whole table."""
        shape = tuple(shape)
        if len(shape) < 1 or shape[1:] != self.values.shape[1:]:
            raise ValueError(f"shape must be (rows,) + {self.values.shape[1:]}, got {shape}")
        dense = np.zeros(shape, dtype=np.float64 if self.values.dtype == np.float64 else np.float32)
        np.add.at(dense, self.indices, self.values)
        return dense.astype(self.values.dtype, copy=False)

    def __repr__(self):
        return (f"RowSparseGrad(<{self.indices.shape[0]} {self.indices.dtype} indices>, "
                f"<{self.values.dtype} values of shape {self.values.shape}>)")

    def __reduce__(self):
        return (RowSparseGrad, (self.indices, self.values))


def check_index_array(indices, name):
    """TypeError/ValueError naming `name` unless `indices` is a 1-D int32/int64
    array the C code can read where it is."""
    if not cnp.PyArray_Check(indices):
        raise TypeError(f"{name} must be a numpy.ndarray of int32 or int64, got {type(indices).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>indices
    if cnp.PyArray_TYPE(a) != cnp.NPY_INT32 and cnp.PyArray_TYPE(a) != cnp.NPY_INT64:
        raise TypeError(f"{name} must have dtype int32 or int64, got {a.dtype}")
    if isinstance(indices, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a plain ndarray, not a masked array")
    if cnp.PyArray_NDIM(a) != 1:
        raise ValueError(f"{name} must be 1-D, got shape {(<object>a).shape}")
    if (not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or not cnp.PyArray_ISALIGNED(a)):
        raise ValueError(f"{name} must be C-contiguous, aligned and in native byte order "
                         f"(fusedopt never copies)")
