"""Type stubs for fusedopt._core, the Cython binding to the C kernels (csrc/).

Kept in step with src/fusedopt/_core.pyx; tests/test_packaging.py checks that
every public name of the compiled module is declared here and vice versa.
"""
from collections.abc import Callable, Sequence
from typing import Any, Final, TypedDict

import numpy as np
import numpy.typing as npt

#: float32, float64, float16 or ml_dtypes.bfloat16
_FloatArray = npt.NDArray[Any]

class _BuildInfo(TypedDict):
    compiler: str
    flags: str
    openmp: bool
    openmp_version: int
    openmp_flags: str

# --- threads, SIMD path, build information ---------------------------------

#: the most threads a kernel call uses
MAX_THREADS: Final[int]

def forked_child() -> bool:
    """True in a process forked after the kernels ran threads (they run on one thread there)."""

def fork_generation() -> int:
    """How many forks this process descends from."""

def kernels() -> list[dict[str, Any]]:
    """Every compiled kernel (a row of csrc/kernels.def): id, algorithm, dtypes, inputs, counters, slots."""

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

# --- array checks and tensor lists -------------------------------------------

#: the dtypes a parameter (or gradient) may have
PARAM_DTYPES: Final[tuple[str, ...]]

#: elements per absmax block of 8-bit state
QUANTIZATION_BLOCK: Final[int]

def check_array(arr: object, name: str, writeable: bool, dtype: object = None) -> None:
    """Raise TypeError/ValueError naming `name` unless `arr` can be a kernel buffer."""

def grad_dtype_allowed(param_dtype: object, grad_dtype: object) -> bool:
    """True if gradients of `grad_dtype` can step parameters of `param_dtype`."""

def slot_shape(rule: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape of a state slot with this rule ("full", "rows", "cols", "vector") for a
    parameter of `shape`, or None where the parameter has no such slot."""

# --- row-sparse gradients ----------------------------------------------------------

class RowSparseGrad:
    """The gradient of a table that a batch touched in a few rows: row numbers
    (duplicates allowed, any order) and one gradient row per number."""

    @property
    def indices(self) -> npt.NDArray[np.int32] | npt.NDArray[np.int64]: ...
    @property
    def values(self) -> _FloatArray: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def nnz(self) -> int: ...
    def __init__(self, indices: npt.NDArray[np.int32] | npt.NDArray[np.int64], values: _FloatArray) -> None: ...
    def to_dense(self, shape: tuple[int, ...]) -> _FloatArray:
        """The dense gradient this stands for (zero outside the rows, duplicates summed)."""

def check_index_array(indices: object, name: str) -> None:
    """Raise TypeError/ValueError naming `name` unless `indices` is a 1-D int32/int64
    array the kernels can read where it is."""

class TensorList:
    """Tensors of one kernel, their state slots and hyperparameter-block ids, as C arrays."""

    @property
    def kernel(self) -> int: ...
    @property
    def typenum(self) -> int: ...
    @property
    def grad_typenum(self) -> int: ...
    @property
    def state_typenum(self) -> int: ...
    @property
    def n_tensors(self) -> int: ...
    @property
    def n_elements(self) -> int: ...
    @property
    def params(self) -> list[_FloatArray]: ...
    @property
    def slots(self) -> list[list[_FloatArray | None]]: ...
    @property
    def scales(self) -> list[list[_FloatArray | None]]: ...
    @property
    def masters(self) -> list[_FloatArray | None]: ...
    def __init__(
        self,
        kernel: int,
        params: list[_FloatArray],
        positions: list[int],
        hyper: list[int],
        slots: list[list[_FloatArray | None]],
        slot_names: list[str],
        writeable: bool = True,
        scales: list[list[_FloatArray | None]] | None = None,
        masters: list[_FloatArray | None] | None = None,
        dense_grads: bool = True,
        row_grads: bool = False,
    ) -> None: ...

def check_disjoint(lists: tuple[TensorList, ...]) -> None:
    """Raise ValueError if buffers of different TensorLists share memory."""

# --- hyperparameters -----------------------------------------------------------

#: the checks a hyperparameter can get
KINDS: dict[str, int]
PAIR_KINDS: tuple[str, ...]

class HyperReader:
    """Reads every param group's hyperparameters into validated C rows."""

    @property
    def inputs(self) -> tuple[str, ...]: ...
    @property
    def n_inputs(self) -> int: ...
    def __init__(
        self,
        inputs: tuple[str, ...],
        program: list[tuple[str, str, tuple[str, ...], float | None]],
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> None: ...

# --- plans and the step -----------------------------------------------------------

class LayoutChanged(Exception):
    """A group's options now need state slots the plan lacks (rebuild and retry)."""

class ListBlocks:
    """The hyperparameter blocks (one per group x counters cohort) of one TensorList."""

    @property
    def tensors(self) -> TensorList: ...
    @property
    def n_blocks(self) -> int: ...
    def __init__(self, tensors: TensorList, block_groups: list[int],
                 block_counters: list[tuple[int, ...]], row_zero: tuple[str, ...] = ()) -> None: ...
    def inputs(self, block: int) -> tuple[float, ...]:
        """The kernel inputs of a block as the last step filled them."""

    def counters(self, block: int) -> tuple[int, ...]:
        """The counters of a block, as ints."""

class Plan:
    """What one optimizer's step needs, validated once."""

    @property
    def blocks(self) -> tuple[ListBlocks, ...]: ...
    @property
    def n_params(self) -> int: ...
    @property
    def reader(self) -> HyperReader: ...
    def __init__(self, reader: HyperReader, blocks: tuple[ListBlocks, ...], n_params: int,
                 param_groups: list[dict[str, Any]], params_lists: list[list[Any]],
                 params_copies: list[list[Any]], has_f32: list[bool],
                 stochastic_rounding: bool = False, seed: int = 0) -> None: ...
    def is_current(self, param_groups: list[dict[str, Any]]) -> bool:
        """True if the groups still hold the same dicts, params lists and arrays."""

def arrays_norm(lists: tuple[TensorList, ...]) -> float:
    """Global L2 norm of the TensorLists' own arrays (NaN if any is non-finite)."""

class StepLock:
    """A reentrant lock whose state lives under the GIL (no system call uncontended)."""

    def acquire(self) -> bool:
        """Take the lock (waiting for another thread to give it up)."""
    def release(self) -> None: ...

class Stepper:
    """An optimizer's step at C speed: busy flag, lock, plan check, step count."""

    plan: Plan | None
    param_groups: list[dict[str, Any]]
    step_count: int
    @property
    def lock(self) -> StepLock: ...
    @property
    def stepping(self) -> bool: ...
    def __init__(self, param_groups: list[dict[str, Any]]) -> None: ...
    def run(
        self,
        grads: Sequence[_FloatArray],
        grad_scale: float,
        max_grad_norm: float,
        skip_nonfinite: bool,
    ) -> tuple[bool, float | None] | None:
        """One step, or None if the plan must be rebuilt first."""

def step_plan(
    plan: Plan,
    groups: list[dict[str, Any]],
    grads: Sequence[_FloatArray],
    k: int,
    grad_scale: float = 1.0,
    max_grad_norm: float = 0.0,
    skip_nonfinite: bool = False,
) -> tuple[bool, float | None]:
    """One step over a plan built for these groups (the functional layer's entry point)."""

def slots_needed(kernel: int, reader: HyperReader, groups: list[dict[str, Any]], k: int,
                 has_f32: list[bool]) -> list[list[int]]:
    """For each group: the slot numbers its options make `kernel` use."""
