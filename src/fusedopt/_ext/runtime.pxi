# Runtime controls: threads, the SIMD path, build information, the kernel catalogue.
# (Included by _core.pyx.)

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

fo_runtime_init()

#: the most threads a kernel call uses (set_num_threads rejects more; OMP_NUM_THREADS is capped)
MAX_THREADS = FO_MAX_THREADS


def get_num_threads():
    """Number of threads the kernels use: `set_num_threads`'s value, else
    ``omp_get_max_threads()`` (which follows ``OMP_NUM_THREADS`` and threadpoolctl),
    at most `MAX_THREADS`; 1 in a forked child process."""
    return fo_get_num_threads()


def set_num_threads(n):
    """Use `n` threads in the kernels (1 <= n <= MAX_THREADS); ``None`` or 0 goes back
    to following OpenMP's setting."""
    if n is None:
        n = 0
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise TypeError(f"n must be an int or None, got {type(n).__name__}")
    if not 0 <= n <= FO_MAX_THREADS:
        raise ValueError(f"n must be between 0 and the maximum num_threads {FO_MAX_THREADS}, "
                         f"got {n!r}")
    fo_set_num_threads(<int>n)


def forked_child():
    """True in a forked child process (os.fork, multiprocessing's "fork" start method):
    the kernels run on one thread there, since the parent's OpenMP team cannot be used."""
    return bool(fo_forked_child())


def fork_generation():
    """How many forks this process descends from (it changes in the child at each
    fork): a flag set by a thread of the parent is recognised as stale by it."""
    return fo_fork_generation()


def parallel_min_elements():
    """Below this many elements in one step, the kernels stay on the calling thread."""
    return fo_parallel_min_elements()


def set_parallel_min_elements(n):
    """Change the single-thread cutoff (for benchmarking the cutoff itself)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
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


cdef tuple _slot_shapes_of(int k):
    """The shape rule of each slot of kernel k ("full" where the header gives none)."""
    n_slots = len(fo_kernel_slots(k).split())
    rules = tuple(fo_kernel_slot_shapes(k).decode().split())
    return rules if rules else ("full",) * n_slots


def kernels():
    """Every compiled kernel (a row of csrc/kernels.def) as a dict: its id, algorithm,
    param, grad and state dtypes ("8bit" for quantized state), hyperparameter
    fields, counters and state slots."""
    cdef int k
    return [{
        "id": k,
        "name": fo_kernel_name(k).decode(),
        "algorithm": fo_kernel_algorithm(k).decode(),
        "param_dtype": fo_kernel_param_storage(k).decode(),
        "grad_dtype": fo_kernel_grad_storage(k).decode(),
        "state_dtype": fo_kernel_state_storage(k).decode(),
        "inputs": tuple(fo_kernel_inputs(k).decode().split()),
        "counters": tuple(fo_kernel_counters(k).decode().split()),
        "slots": tuple(fo_kernel_slots(k).decode().split()),
        "slot_shapes": _slot_shapes_of(k),
        "block": fo_kernel_block(k),
    } for k in range(FO_N_KERNELS)]


# Below this many elements a kernel call takes well under a microsecond: releasing
# and retaking the GIL (~0.1 us, measured with perf on the 1e3 step) would cost more
# than another thread could gain, so such calls keep it.
cdef int64_t GIL_RELEASE_MIN_ELEMENTS = 16384
