"""Aligned allocation for parameters, gradients and optimizer state."""
import math

import numpy as np

#: Buffers start on a 64-byte boundary: a cache line, and a full AVX-512 vector.
ALIGNMENT = 64


def aligned_zeros(shape, dtype, alignment=ALIGNMENT):
    """A zero-filled C-contiguous array whose data starts on an `alignment`-byte boundary."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.zeros(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)
