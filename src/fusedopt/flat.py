"""One contiguous buffer for all of a model's parameters, and one for its gradients.

A NumPy model that keeps its weights and gradients as views into these
buffers is stepped by one kernel pass over one array: the fastest way to use
fusedopt, and the structure we recommend.
"""
import math

import numpy as np

from . import _core

from ._memory import ALIGNMENT, aligned_zeros

__all__ = ["FlatParams"]


class FlatParams:
    """Parameters and gradients of a model as views into two aligned flat buffers.

    Parameters
    ----------
    shapes : sequence of tuple of int
        The shape of each parameter tensor.
    dtype : numpy dtype, default float32
        One dtype for the whole buffer.

    Attributes
    ----------
    param, grad : ndarray
        The flat 1-D buffers (64-byte aligned).  Give ``[flat.param]`` to an
        optimizer and step it with ``[flat.grad]``.
    params, grads : list of ndarray
        Views of the given shapes into `param` and `grad`, for the model to
        use; each starts on a 64-byte boundary (the gaps stay zero and are
        harmless to every optimizer).

    Examples
    --------
    >>> flat = FlatParams([(784, 128), (128,), (128, 10), (10,)])
    >>> W1, b1, W2, b2 = flat.params          # the model's weights
    >>> dW1, db1, dW2, db2 = flat.grads       # where its backward pass writes
    >>> opt = fusedopt.Adam([flat.param], lr=1e-3)
    >>> opt.step([flat.grad])                 # one fused pass over the whole model
    """

    def __init__(self, shapes, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in _core.PARAM_DTYPES:
            raise TypeError(f"dtype must be one of {', '.join(_core.PARAM_DTYPES)}, got {self.dtype}")
        self.shapes = [tuple(int(n) for n in shape) for shape in shapes]
        for i, shape in enumerate(self.shapes):
            if any(n < 0 for n in shape):
                raise ValueError(f"shapes[{i}] has a negative dimension: {shape}")
        per_line = ALIGNMENT // self.dtype.itemsize
        self.offsets = []
        total = 0
        for shape in self.shapes:
            self.offsets.append(total)
            size = math.prod(shape)
            total += -(-size // per_line) * per_line  # round up to a whole cache line
        self.param = aligned_zeros(total, self.dtype)
        self.grad = aligned_zeros(total, self.dtype)
        self.params = self._views(self.param)
        self.grads = self._views(self.grad)

    def _views(self, buffer):
        return [buffer[start:start + math.prod(shape)].reshape(shape)
                for start, shape in zip(self.offsets, self.shapes)]

    @classmethod
    def from_arrays(cls, arrays, dtype=None):
        """A FlatParams holding copies of `arrays` (their shapes; their common dtype by default)."""
        arrays = [np.asarray(a) for a in arrays]
        if dtype is None:
            dtype = np.result_type(*arrays) if arrays else np.float32
        flat = cls([a.shape for a in arrays], dtype)
        for view, a in zip(flat.params, arrays):
            view[...] = a
        return flat

    def zero_grad(self):
        """Set every gradient to zero (one pass over the flat gradient buffer)."""
        self.grad.fill(0)

    def __len__(self):
        return len(self.shapes)

    def __repr__(self):
        return f"FlatParams({len(self.shapes)} tensors, {self.param.size} elements, {self.dtype})"
