"""Type stubs for fusedopt._core, the Cython binding to the C kernels (csrc/).

Kept in step with src/fusedopt/_core.pyx; tests/test_packaging.py checks that
every public name of the compiled module is declared here and vice versa.
"""
from collections.abc import Sequence
from typing import Any, Final, TypedDict

import numpy as np
import numpy.typing as npt

_FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

#: algorithm codes for `step` and `validate`
ADAM: Final[int]
SGD: Final[int]

class _BuildInfo(TypedDict):
    compiler: str
    flags: str
    openmp: bool
    openmp_version: int
    openmp_flags: str

# --- threads, SIMD path, build information ---------------------------------

def get_num_threads() -> int:
    """Threads the kernels use: `set_num_threads`'s value, else omp_get_max_threads()."""

def set_num_threads(n: int | None) -> None:
    """Use `n` threads; None or 0 goes back to following OpenMP's setting."""

def parallel_min_elements() -> int:
    """Below this many elements in one step, the kernels stay on the calling thread."""

def set_parallel_min_elements(n: int) -> None:
    """Change the single-thread cutoff."""

def simd_path() -> str:
    """The SIMD variant of the kernels in use: 'baseline', 'avx2' or 'avx512'."""

def simd_supported() -> list[str]:
    """The SIMD variants this CPU can run, best first."""

def set_simd_path(name: str) -> None:
    """Force a SIMD variant this CPU supports (ValueError otherwise)."""

def build_info() -> _BuildInfo:
    """How the extension was built (compiler, flags, OpenMP)."""

# --- validation --------------------------------------------------------------

def check_array(arr: object, name: str, writeable: bool) -> None:
    """Raise TypeError/ValueError naming `name` unless `arr` can be a kernel buffer."""

class LayoutChanged(Exception):
    """A group now needs state buffers the current TensorLists lack (rebuild and retry)."""

def validate(
    algorithm: int,
    groups: list[dict[str, Any]],
    group_state: list[dict[str, Any]],
    k: int,
    decoupled: bool = False,
) -> None:
    """Check the groups' hyperparameters at step k as `step` would, touching no buffer."""

# --- tensor lists, norms and steps -----------------------------------------

class TensorList:
    """Tensors of one dtype, their state buffers and group ids, as C arrays."""

    @property
    def typenum(self) -> int: ...
    @property
    def n_tensors(self) -> int: ...
    def __init__(
        self,
        params: list[_FloatArray],
        positions: list[int],
        groups: list[int],
        states: list[list[_FloatArray | None]],
        state_names: list[str],
        writeable: bool = True,
    ) -> None: ...

def check_disjoint(lists: tuple[TensorList, ...]) -> None:
    """Raise ValueError if buffers of different TensorLists (dtypes) share memory."""

def arrays_norm(lists: tuple[TensorList, ...]) -> float:
    """Global L2 norm of the TensorLists' own arrays (NaN if any is non-finite)."""

def step(
    algorithm: int,
    lists: tuple[TensorList, ...],
    grads: Sequence[_FloatArray],
    n_params: int,
    groups: list[dict[str, Any]],
    group_state: list[dict[str, Any]],
    k: int,
    decoupled: bool = False,
    layout: Sequence[bool] | None = None,
    grad_scale: float = 1.0,
    max_grad_norm: float = 0.0,
    skip_nonfinite: bool = False,
) -> tuple[bool, float | None]:
    """One step of `algorithm` over `lists`; validates everything before any write.

    Returns (applied, grad_norm): whether the step was applied, and the norm of
    the unscaled gradients where it was computed.
    """

class Stepper:
    """An optimizer's step in C speed: plan check, step count, busy flag."""

    algorithm: int
    decoupled: bool
    lists: tuple[TensorList, ...]
    n_params: int
    param_groups: list[dict[str, Any]]
    group_state: list[dict[str, Any]]
    plan_lists: list[list[Any]]
    plan_copies: list[list[Any]]
    layout: tuple[bool, ...] | None
    step_count: int
    def __init__(
        self,
        algorithm: int,
        decoupled: bool,
        param_groups: list[dict[str, Any]],
        group_state: list[dict[str, Any]],
    ) -> None: ...
    def run(
        self,
        grads: Sequence[_FloatArray],
        grad_scale: float,
        max_grad_norm: float,
        skip_nonfinite: bool,
    ) -> tuple[bool, float | None] | None:
        """One step, or None if the plan is stale (rebuild and call again)."""

def plan_is_current(
    param_groups: list[dict[str, Any]],
    plan_lists: list[list[Any]],
    plan_copies: list[list[Any]],
) -> bool:
    """True if every group still holds the same params list and arrays as when planned."""

def same_objects(a: list[Any], b: list[Any]) -> bool:
    """True if `a` and `b` hold the same objects in the same order."""
