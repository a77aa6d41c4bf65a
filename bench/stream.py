"""STREAM copy / triad / update bandwidth, the roof the optimizers are measured against.

bench/stream.c is compiled at run time with the system C compiler into a
temporary directory and loaded with ctypes.  The arrays are float64, each at
least four times the last-level cache (and at least 3.2e7 elements), so every
pass streams from memory.
"""
import ctypes
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from harness import Variant

SOURCE = Path(__file__).with_name("stream.c")
COMPILE_FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC"]
MIN_ELEMENTS = 32_000_000

#: kernel -> element transfers per pass (bytes = transfers * 8)
KERNEL_TRANSFERS = {"copy": 2, "triad": 3, "update": 3}


def l3_cache_bytes():
    """Size of the largest CPU cache from sysfs (32 MiB if unknown)."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=32 << 20)


def compiler_command(output):
    """The compile command: $CC (default the system ``cc``) with the STREAM flags."""
    return [os.environ.get("CC", "cc"), *COMPILE_FLAGS, str(SOURCE), "-o", str(output)]


class Stream:
    """The compiled kernels and their three float64 arrays.

    Parameters
    ----------
    n_elements : int, optional
        Array length; default max(3.2e7, 4 x last-level cache / 8).
    init_threads : int
        Threads that first-touch the arrays.

    Raises
    ------
    RuntimeError
        If the C compiler is missing or fails.
    """

    def __init__(self, n_elements=None, init_threads=1):
        self.n = n_elements or max(MIN_ELEMENTS, 4 * l3_cache_bytes() // 8)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fusedopt-stream-")
        library = Path(self._tmpdir.name) / "stream.so"
        self.command = compiler_command(library)
        try:
            subprocess.run(self.command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or error
            raise RuntimeError(f"cannot compile {SOURCE.name} ({' '.join(self.command)}): {detail}") from None
        self.lib = ctypes.CDLL(str(library))
        ptr, i64, c_int, c_double = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
        self.lib.stream_init.argtypes = [ptr, ptr, ptr, i64, c_int]
        self.lib.stream_copy.argtypes = [ptr, ptr, i64, c_int]
        self.lib.stream_triad.argtypes = [ptr, ptr, ptr, c_double, i64, c_int]
        self.lib.stream_update.argtypes = [ptr, ptr, c_double, i64, c_int]
        # np.empty leaves the pages untouched: stream_init faults them in, in parallel
        self.a, self.b, self.c = (np.empty(self.n, np.float64) for _ in range(3))
        self.lib.stream_init(*self._pointers("a", "b", "c"), self.n, init_threads)

    def _pointers(self, *names):
        return [getattr(self, name).ctypes.data for name in names]

    def kernel(self, name, threads):
        """A zero-argument callable running one pass of kernel `name` on `threads` threads."""
        lib, n = self.lib, self.n
        if name == "copy":
            c, a = self._pointers("c", "a")
            return lambda: lib.stream_copy(c, a, n, threads)
        if name == "triad":
            a, b, c = self._pointers("a", "b", "c")
            return lambda: lib.stream_triad(a, b, c, 0.5, n, threads)
        a, b = self._pointers("a", "b")
        return lambda: lib.stream_update(a, b, 1e-9, n, threads)

    def variants(self, threads_list, kernels=tuple(KERNEL_TRANSFERS)):
        """Harness variants, one per (kernel, threads); keys are ("stream", kernel, threads)."""
        return [Variant(("stream", name, threads), self.kernel(name, threads))
                for name in kernels for threads in threads_list]

    def bytes_per_pass(self, kernel):
        """Bytes a pass of `kernel` moves (STREAM's count: no write-allocate traffic)."""
        return KERNEL_TRANSFERS[kernel] * 8 * self.n

    def close(self):
        """Free the arrays and delete the compiled library's directory."""
        self.a = self.b = self.c = None
        self._tmpdir.cleanup()
