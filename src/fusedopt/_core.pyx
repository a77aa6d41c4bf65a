# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# boundscheck/wraparound are off: every C array index here is bounded by the loop
# that produced it (n_tensors, n_blocks, n_groups, FO_MAX_SLOTS), and every Python
# sequence indexed by position was length-checked first (_as_tuple, ListBlocks).
"""The binding between fusedopt's optimizers and its C kernels (csrc/).

Split by job: _ext/kernels.pxd (the C API, declared once), _ext/runtime.pxi
(threads, SIMD, build info, the kernel catalogue), _ext/tensors.pxi (array
checks, TensorList), _ext/hyper.pxi (param-group dicts -> validated C
hyperparameter blocks), _ext/step.pxi (plans and the step).  Every check runs
before the first kernel; the kernels run with the GIL released.
"""
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcmp, memcpy
from libc.math cimport isfinite, sqrt
from cpython.ref cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.exc cimport PyErr_CheckSignals

cimport cython
cimport numpy as cnp

from fusedopt._ext.kernels cimport *

import numbers
from time import sleep as _sleep

import numpy as np

cnp.import_array()

include "_ext/runtime.pxi"
include "_ext/rows.pxi"
include "_ext/tensors.pxi"
include "_ext/hyper.pxi"
include "_ext/step.pxi"
