"""Checks and measurements for fusedopt's distributions, used by tools/build_wheel.sh.

    python tools/check_dist.py sdist  DIST.tar.gz SOURCE_TREE
    python tools/check_dist.py wheel  DIST.whl [--vendored-openmp]
    python tools/check_dist.py installed SITE_PYTHON        (run with the venv's python)
    python tools/check_dist.py importtime [--runs N]        (run with the venv's python)
    python tools/check_dist.py junit-sum REPORT.xml...

Standard library only, Python >= 3.10.  Each check prints what it looked at
and exits non-zero with the reasons when something is wrong.
"""
import argparse
import email.parser
import fnmatch
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path


class CheckFailed(Exception):
    pass


def _fail_if(problems, what):
    if problems:
        raise CheckFailed(f"{what}:\n  - " + "\n  - ".join(problems))


def _metadata_problems(text, where):
    """Problems with a PKG-INFO / METADATA file's contents."""
    msg = email.parser.Parser().parsestr(text)
    problems = []
    if msg["Name"] != "fusedopt":
        problems.append(f"{where}: Name is {msg['Name']!r}")
    if not msg["Version"]:
        problems.append(f"{where}: no Version")
    runtime = [r for r in msg.get_all("Requires-Dist") or [] if "extra ==" not in r]
    names = [re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in runtime]
    if names != ["numpy", "ml-dtypes"] or "1.23" not in runtime[0] or "0.3" not in runtime[1]:
        problems.append(f"{where}: runtime requirements should be numpy>=1.23 and ml-dtypes>=0.3 only, "
                        f"got {runtime}")
    if any("cython" in r.lower() for r in runtime):
        problems.append(f"{where}: Cython is a runtime requirement")
    if not (msg["License-Expression"] or msg["License"]):
        problems.append(f"{where}: no license")
    if not msg.get_all("Project-URL"):
        problems.append(f"{where}: no Project-URL")
    if msg["Description-Content-Type"] != "text/markdown" or not msg.get_payload().strip():
        problems.append(f"{where}: README is not the (markdown) long description")
    extras = set(msg.get_all("Provides-Extra") or [])
    if not {"test", "plot", "bench", "examples"} <= extras:
        problems.append(f"{where}: extras are {sorted(extras)}")
    return problems, msg


def check_sdist(path, source):
    source = Path(source)
    with tarfile.open(path) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1:
            raise CheckFailed(f"sdist has several top-level directories: {roots}")
        root = roots.pop()
        rel = {n.split("/", 1)[1] for n in names if "/" in n}
        pkg_info = tf.extractfile(f"{root}/PKG-INFO").read().decode()
        pyproject = tf.extractfile(f"{root}/pyproject.toml").read().decode()
    problems = []
    required = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE",
                "src/fusedopt/_core.pyx", "src/fusedopt/_core.pyi", "src/fusedopt/py.typed",
                "src/fusedopt/_version.py", "src/fusedopt/__init__.py"]
    # every kernel source and header, every Python module and every test of the tree
    for pattern in ["csrc/**/*.c", "csrc/**/*.h", "csrc/*.def", "csrc/*.py", "src/fusedopt/**/*.py",
                    "src/fusedopt/**/*.pyx", "src/fusedopt/**/*.pxi",
                    "src/fusedopt/**/*.pxd", "tests/*.py", "examples/*.py"]:
        required += [p.relative_to(source).as_posix() for p in source.glob(pattern)]
    problems += [f"missing from the sdist: {r}" for r in sorted(set(required)) if r not in rel]
    for bad in ["*.so", "*.pyd", "*.dylib", "*.o", "src/fusedopt/_core.c", "build/*", "*.whl"]:
        problems += [f"should not be in the sdist: {n}" for n in sorted(rel) if fnmatch.fnmatch(n, bad)]
    meta_problems, _ = _metadata_problems(pkg_info, "PKG-INFO")
    problems += meta_problems
    build_requires = re.search(r"\[build-system\][^\[]*?requires\s*=\s*\[([^\]]*)\]", pyproject, re.S)
    if not build_requires or "cython" not in build_requires.group(1).lower():
        problems.append("Cython is not a build requirement in pyproject.toml")
    _fail_if(problems, f"{path}")
    print(f"sdist ok: {Path(path).name}: {len(rel)} files, "
          f"{sum(1 for r in rel if r.startswith('csrc/'))} in csrc/, "
          f"{sum(1 for r in rel if r.startswith('tests/'))} in tests/, .pyx/.pyi/py.typed/LICENSE present")


def check_wheel(path, vendored_openmp):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info"))
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        wheel_info = zf.read(f"{dist_info}/WHEEL").decode()
    problems = []
    ext = [n for n in names if re.fullmatch(r"fusedopt/_core\.[^/]*(\.so|\.pyd)", n)]
    if len(ext) != 1:
        problems.append(f"expected one compiled fusedopt/_core, got {ext}")
    for required in ["fusedopt/__init__.py", "fusedopt/py.typed", "fusedopt/_core.pyi",
                     "fusedopt/_version.py"]:
        if required not in names:
            problems.append(f"missing from the wheel: {required}")
    if not any(re.fullmatch(rf"{re.escape(dist_info)}/(licenses/)?LICENSE", n) for n in names):
        problems.append("LICENSE is not in the wheel's .dist-info")
    problems += [f"should not be in the wheel: {n}" for n in names
                 if n.endswith((".c", ".pyx", ".o")) or "/tests/" in n or n.startswith("tests/")]
    libs = [n for n in names if re.search(r"\.(libs|dylibs)/", n)]
    if vendored_openmp and not any(re.search(r"(gomp|omp|vcomp)", os.path.basename(n)) for n in libs):
        problems.append(f"no vendored OpenMP runtime in the wheel (vendored: {libs})")
    if "Root-Is-Purelib: false" not in wheel_info:
        problems.append("the wheel claims to be pure Python")
    meta_problems, _ = _metadata_problems(metadata, "METADATA")
    problems += meta_problems
    _fail_if(problems, f"{path}")
    print(f"wheel ok: {Path(path).name}: {len(names)} files; extension {ext[0]}; "
          f"vendored: {', '.join(libs) or 'nothing'}")


def check_installed(expect_under):
    """fusedopt must import from the installed location, not from a source tree."""
    import fusedopt

    where = Path(fusedopt.__file__).resolve()
    core = Path(fusedopt._core.__file__).resolve()
    under = Path(expect_under).resolve()
    if not where.is_relative_to(under) or not core.is_relative_to(under):
        raise CheckFailed(f"fusedopt imported from {where} (extension {core}), not under {under}")
    print(f"imports from the installed package: {where.parent}")


def _median_run(cmd, runs, cwd):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def import_time(runs):
    py = sys.executable
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run([py, "-c", "import fusedopt"], check=True, cwd=cwd)  # warm the file cache
        base = _median_run([py, "-c", "pass"], runs, cwd)
        numpy_t = _median_run([py, "-c", "import numpy"], runs, cwd)
        fo_t = _median_run([py, "-c", "import fusedopt"], runs, cwd)
        # -X importtime: cumulative microseconds of the top-level imports
        cumulative = {"fusedopt": [], "numpy": []}
        for _ in range(runs):
            err = subprocess.run([py, "-X", "importtime", "-c", "import fusedopt"], check=True,
                                 cwd=cwd, capture_output=True, text=True).stderr
            seen = {}
            for line in err.splitlines():
                # "import time: self [us] | cumulative | <indent by nesting>module"
                m = re.match(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s*(\S+)\s*$", line)
                if m and m.group(2) in cumulative:
                    seen[m.group(2)] = int(m.group(1)) / 1e6
            for name, value in seen.items():
                cumulative[name].append(value)
    fo_cum = statistics.median(cumulative["fusedopt"])
    np_cum = statistics.median(cumulative["numpy"])
    print(f"import time, median of {runs} fresh interpreters (wall clock, minus `python -c pass` "
          f"= {base * 1e3:.0f} ms):")
    print(f"  import numpy     {1e3 * (numpy_t - base):7.1f} ms")
    print(f"  import fusedopt  {1e3 * (fo_t - base):7.1f} ms  (numpy included)")
    print(f"  python -X importtime, cumulative: fusedopt {1e3 * fo_cum:.1f} ms, of which numpy "
          f"{1e3 * np_cum:.1f} ms -> fusedopt itself {1e3 * (fo_cum - np_cum):.1f} ms")


def junit_sum(paths):
    total = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for p in paths:
        root = ET.parse(p).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for s in suites:
            tests = int(s.get("tests", 0))
            failed, errors, skipped = (int(s.get(k, 0)) for k in ("failures", "errors", "skipped"))
            total["failed"] += failed
            total["errors"] += errors
            total["skipped"] += skipped
            total["passed"] += tests - failed - errors - skipped
    line = f"{total['passed']} passed, {total['failed'] + total['errors']} failed"
    if total["skipped"]:
        line += f", {total['skipped']} skipped"
    print(line)
    return 0 if total["failed"] + total["errors"] == 0 and total["passed"] > 0 else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sdist")
    p.add_argument("path")
    p.add_argument("source")
    p = sub.add_parser("wheel")
    p.add_argument("path")
    p.add_argument("--vendored-openmp", action="store_true")
    p = sub.add_parser("installed")
    p.add_argument("under")
    p = sub.add_parser("importtime")
    p.add_argument("--runs", type=int, default=9)
    p = sub.add_parser("junit-sum")
    p.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "sdist":
            check_sdist(args.path, args.source)
        elif args.cmd == "wheel":
            check_wheel(args.path, args.vendored_openmp)
        elif args.cmd == "installed":
            check_installed(args.under)
        elif args.cmd == "importtime":
            import_time(args.runs)
        elif args.cmd == "junit-sum":
            return junit_sum(args.paths)
    except CheckFailed as exc:
        print(f"check_dist: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
