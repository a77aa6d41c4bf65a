"""fusedopt: fused native optimizer kernels (Adam, AdamW, SGD, Adagrad, RMSprop, Adamax, NAdam,
RAdam, Adadelta, Adafactor, Lion, LAMB, Muon, schedule-free AdamW and SGD, SparseAdam) for NumPy
models.

The optimizers update float32 and float64 NumPy arrays in place, in one pass
over memory, with OpenMP threads and the GIL released::

    import fusedopt
    opt = fusedopt.Adam([W, b], lr=1e-3)
    opt.step([dW, db])
"""
import os as _os

from . import _core, functional
from ._core import RowSparseGrad, get_num_threads, set_num_threads
from ._version import __version__
from .checkpoint import load, save
from .flat import FlatParams
from .optim import (LAMB, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW, AdamWScheduleFree, Lion, Muon,
                    NAdam, Optimizer, RAdam, RMSprop, SGDScheduleFree, SparseAdam)

__all__ = [
    "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "LAMB", "Lion", "Muon", "NAdam", "RAdam",
    "RMSprop", "SGD", "SparseAdam", "RowSparseGrad",
    "AdamWScheduleFree", "SGDScheduleFree", "Optimizer", "FlatParams", "functional", "schedules",
    "get_num_threads", "set_num_threads", "simd_path", "info", "save", "load", "__version__",
]

# FUSEDOPT_SIMD forces a lower SIMD variant (for testing and comparison).
if _os.environ.get("FUSEDOPT_SIMD"):
    try:
        _core.set_simd_path(_os.environ["FUSEDOPT_SIMD"])
    except ValueError as _exc:
        import warnings as _warnings

        _warnings.warn(f"FUSEDOPT_SIMD ignored: {_exc}", RuntimeWarning, stacklevel=2)

simd_path = _core.simd_path


def info():
    """Version, build and run-time configuration, as a dict."""
    import numpy as np

    import ml_dtypes

    build = _core.build_info()
    kernels = _core.kernels()
    return {
        "version": __version__,
        "numpy": np.__version__,
        "ml_dtypes": ml_dtypes.__version__,
        "dtypes": list(_core.PARAM_DTYPES),
        "state_dtypes": sorted({k["state_dtype"] for k in kernels}),
        "kernels": len(kernels),
        "openmp": build["openmp"],
        "openmp_version": build["openmp_version"],
        "openmp_runtime": _openmp_runtime() if build["openmp"] else None,
        "num_threads": get_num_threads(),
        "parallel_min_elements": _core.parallel_min_elements(),
        "simd_path": _core.simd_path(),
        "simd_supported": _core.simd_supported(),
        "compiler": build["compiler"],
        "flags": build["flags"],
        "openmp_flags": build["openmp_flags"],
    }


def _openmp_runtime():
    """Path of the OpenMP runtime library loaded in this process (Linux), else "linked"."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = _os.path.basename(path)
                if name.startswith(("libgomp", "libomp", "libiomp")):
                    return path
    except OSError:
        pass
    return "linked"


def __getattr__(name):
    # schedules is imported on first use, keeping `import fusedopt` light
    if name == "schedules":
        import importlib

        return importlib.import_module(".schedules", __name__)
    raise AttributeError(f"module 'fusedopt' has no attribute {name!r}")
