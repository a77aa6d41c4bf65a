"""Pure-NumPy twins of fusedopt's kernels, one module per algorithm (as bottleneck's ``slow``).

Each function has the signature of its counterpart in :mod:`fusedopt.functional`
and updates its arguments in place with NumPy ufuncs, computing in the arrays'
own dtype in the kernel's order of operations (hyperparameters rounded to that
dtype once, no fused multiply-add).  They are the references of the test
suite (on float64 copies), the NumPy peers of the benchmark, and the NumPy
optimizer of the demo.  They check nothing: give them what the kernels accept.

Low-precision storage (16-bit parameters and state, 8-bit block quantization,
stochastic rounding) has its twins in :mod:`fusedopt.slow.storage` and
:mod:`fusedopt.slow.quantization`.
"""
from . import quantization, sparse, storage
from .adadelta import adadelta_
from .adafactor import adafactor_
from .adagrad import adagrad_
from .adam import adam_
from .adamax import adamax_
from .lamb import lamb_
from .lion import lion_
from .muon import muon_
from .nadam import nadam_
from .radam import radam_
from .rmsprop import rmsprop_
from .schedule_free import schedule_free_
from .sgd import sgd_

__all__ = ["adadelta_", "adafactor_", "adagrad_", "adam_", "adamax_", "lamb_", "lion_", "muon_", "nadam_", "radam_",
           "rmsprop_", "schedule_free_", "sgd_", "quantization", "sparse", "storage"]
