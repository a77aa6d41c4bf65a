"""Build the fusedopt._core extension: C kernels (csrc/) + the Cython binding.

OpenMP is detected by compiling a small test program with the compiler that
will build the extension.  Without it (or with FUSEDOPT_NO_OPENMP=1) the
package still builds and runs single-threaded, and says so at run time
(`python -m fusedopt info`).  No host-specific flags (no -march for the build host) are used:
the SIMD variants are chosen at run time by csrc/dispatch.c.
"""
import os
import runpy
from concurrent.futures import ThreadPoolExecutor
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent.resolve()
KERNEL_SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").rglob("*.c"))

OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
#pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _compiles_and_links(compiler, code, compile_args, link_args):
    """True if `code` compiles and links with these flags (the test binary is not run)."""
    tmp = tempfile.mkdtemp(prefix="fusedopt-omp-")
    try:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(code)
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=compile_args)
        compiler.link_executable(objects, "omp_test", output_dir=tmp, extra_postargs=link_args)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _openmp_flag_candidates(compiler_type):
    if compiler_type == "msvc":
        return [(["/openmp"], [])]
    if sys.platform == "darwin":
        # Apple clang needs libomp (from conda-forge's llvm-openmp in wheel builds).
        prefix = os.environ.get("FUSEDOPT_LIBOMP_PREFIX") or os.environ.get("PREFIX", "")
        inc = [f"-I{prefix}/include"] if prefix else []
        lib = [f"-L{prefix}/lib", f"-Wl,-rpath,{prefix}/lib"] if prefix else []
        return [(["-Xpreprocessor", "-fopenmp"] + inc, lib + ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    return [(["-fopenmp"], ["-fopenmp"])]


class BuildExt(build_ext):
    """build_ext that detects OpenMP and records the build configuration."""

    def build_extensions(self):
        compiler_type = self.compiler.compiler_type
        if compiler_type == "msvc":
            base_flags = ["/O2", "/fp:precise"]
        else:
            # -ffp-contract=off: no FMA contraction, so every SIMD variant gives the
            # same bits; -fno-math-errno: lets sqrt vectorise (errno only, no value
            # change); -fno-trapping-math: lets the 16-bit conversions' selects
            # vectorise (no FP trap is ever enabled; values are unchanged).
            base_flags = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]

        omp_compile, omp_link = [], []
        if os.environ.get("FUSEDOPT_NO_OPENMP", "0") not in ("", "0"):
            print("fusedopt: OpenMP disabled by FUSEDOPT_NO_OPENMP")
        else:
            for compile_args, link_args in _openmp_flag_candidates(compiler_type):
                if _compiles_and_links(self.compiler, OPENMP_TEST, compile_args, link_args):
                    omp_compile, omp_link = compile_args, link_args
                    break
            else:
                print("fusedopt: WARNING: no OpenMP found; building single-threaded kernels")

        simd_flags = []
        if not omp_compile and compiler_type != "msvc":
            # keep `#pragma omp simd` meaningful without the OpenMP runtime
            if _compiles_and_links(self.compiler, "int main(void){return 0;}", ["-fopenmp-simd"], []):
                simd_flags = ["-fopenmp-simd", "-DFO_HAVE_OPENMP_SIMD=1"]

        compile_flags = base_flags + omp_compile + simd_flags
        config_dir = Path(self.build_temp) / "fusedopt_config"
        config_dir.mkdir(parents=True, exist_ok=True)
        compiler_name = " ".join(getattr(self.compiler, "compiler_so", None) or [compiler_type])
        (config_dir / "fusedopt_build_config.h").write_text(
            "/* written by setup.py */\n"
            f"#define FUSEDOPT_BUILD_COMPILER {_c_string(compiler_name)}\n"
            f"#define FUSEDOPT_BUILD_FLAGS {_c_string(' '.join(compile_flags))}\n"
            f"#define FUSEDOPT_BUILD_OPENMP_FLAGS {_c_string(' '.join(omp_compile + omp_link))}\n"
        )
        # the headers that csrc/kernels.def's rows need #include for
        runpy.run_path(str(HERE / "csrc" / "generate.py"))["write_kernel_instances"](config_dir)
        for ext in self.extensions:
            ext.include_dirs.append(str(config_dir))
            ext.extra_compile_args = compile_flags + ext.extra_compile_args
            ext.extra_link_args = omp_link + ext.extra_link_args
        super().build_extensions()

    def build_extension(self, ext):
        # one compiler process per source file, in parallel: each ISA file compiles
        # every kernels.def row (FUSEDOPT_BUILD_JOBS=1 compiles one at a time)
        jobs = int(os.environ.get("FUSEDOPT_BUILD_JOBS", "0") or 0) or os.cpu_count() or 1
        compile_serially = self.compiler.compile

        def compile_in_parallel(sources, *args, **kwargs):
            if jobs <= 1 or len(sources) <= 1:
                return compile_serially(sources, *args, **kwargs)
            with ThreadPoolExecutor(min(jobs, len(sources))) as pool:
                objects = pool.map(lambda source: compile_serially([source], *args, **kwargs), sources)
                return [obj for batch in objects for obj in batch]

        self.compiler.compile = compile_in_parallel
        try:
            super().build_extension(ext)
        finally:
            del self.compiler.compile


def _c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


extensions = [
    Extension(
        "fusedopt._core",
        sources=["src/fusedopt/_core.pyx"] + KERNEL_SOURCES,
        include_dirs=["csrc", np.get_include()],
        # headers and kernels.def: a change to any of them rebuilds the extension
        depends=sorted(str(p.relative_to(HERE)) for pattern in ("*.h", "*.def", "*.py", "*.pxi", "*.pxd")
                       for folder in ("csrc", "src/fusedopt/_ext") for p in (HERE / folder).rglob(pattern))
        + ["src/fusedopt/_qmap.py"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False,
                             "initializedcheck": False, "cdivision": True},
    ),
    cmdclass={"build_ext": BuildExt},
)
