#!/usr/bin/env bash
# cibuildwheel `before-all` on macOS: install LLVM's OpenMP runtime (libomp and
# omp.h, conda-forge's llvm-openmp package) into $FUSEDOPT_LIBOMP_PREFIX, built
# for a macOS no newer than the wheels' $MACOSX_DEPLOYMENT_TARGET.
#
# Apple's clang has no OpenMP runtime of its own.  setup.py compiles with
# `-Xpreprocessor -fopenmp -I$FUSEDOPT_LIBOMP_PREFIX/include` and links
# `-L$FUSEDOPT_LIBOMP_PREFIX/lib -lomp` with an rpath to it; delocate-wheel then
# copies libomp.dylib into the wheel (fusedopt/.dylibs/).  delocate refuses a
# library that needs a newer macOS than the wheel's tag, so the runtime must be
# built for the deployment target: CONDA_OVERRIDE_OSX makes the solver accept
# only builds whose `__osx` requirement the target satisfies, and the library's
# minimum macOS (LC_BUILD_VERSION minos) is checked afterwards.
#
# Needs micromamba, mamba or conda on PATH (the workflow installs micromamba);
# runs on the architecture it builds for (cibuildwheel archs = native).
# FUSEDOPT_LLVM_OPENMP_VERSION overrides the pinned llvm-openmp version.
set -euo pipefail

prefix=${FUSEDOPT_LIBOMP_PREFIX:?FUSEDOPT_LIBOMP_PREFIX must name the libomp install directory}
target=${MACOSX_DEPLOYMENT_TARGET:?MACOSX_DEPLOYMENT_TARGET must be set}
version=${FUSEDOPT_LLVM_OPENMP_VERSION:-19.1.7}

if [ "$(uname)" != Darwin ]; then
    echo "cibw_before_all_macos.sh: not macOS, nothing to do"
    exit 0
fi

solver=""
for candidate in micromamba mamba conda "${MAMBA_EXE:-}" "${CONDA_EXE:-}" "${CONDA:+$CONDA/bin/conda}"; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
        solver=$(command -v "$candidate")
        break
    fi
done
[ -n "$solver" ] || { echo "cibw_before_all_macos.sh: need micromamba, mamba or conda on PATH" >&2; exit 1; }

echo "installing llvm-openmp=$version for macOS >= $target ($(uname -m)) into $prefix with $solver"
rm -rf "$prefix"
CONDA_OVERRIDE_OSX="$target" "$solver" create --yes --prefix "$prefix" \
    --override-channels --channel conda-forge "llvm-openmp=$version"

lib="$prefix/lib/libomp.dylib"
[ -f "$lib" ] && [ -f "$prefix/include/omp.h" ] || { echo "no libomp.dylib / omp.h in $prefix" >&2; exit 1; }
otool -L "$lib"
# minimum macOS of the library: LC_BUILD_VERSION minos, or LC_VERSION_MIN_MACOSX version
# (otool's output goes to a file first: no early-closed pipe under pipefail)
otool -l "$lib" > "$prefix/libomp-load-commands.txt"
minos=$(awk '/LC_BUILD_VERSION/ {b = 1} b && $1 == "minos" && !found {print $2; found = 1}
             /LC_VERSION_MIN_MACOSX/ {v = 1} v && $1 == "version" && !found {print $2; found = 1}' \
        "$prefix/libomp-load-commands.txt")
[ -n "$minos" ] || { echo "could not read the minimum macOS of $lib" >&2; exit 1; }
echo "libomp.dylib: minimum macOS $minos, deployment target $target, archs $(lipo -archs "$lib")"
python3 - "$minos" "$target" <<'EOF'
import sys
minos, target = (tuple(int(x) for x in v.split(".")) for v in sys.argv[1:3])
if minos > target:
    sys.exit(f"libomp.dylib needs macOS {sys.argv[1]}, newer than MACOSX_DEPLOYMENT_TARGET={sys.argv[2]}")
EOF
