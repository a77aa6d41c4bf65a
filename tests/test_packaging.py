"""Packaging: metadata, type stubs, the built extension, and its OpenMP runtime
next to others (PyTorch's) in one process.

These tests run against whatever `import fusedopt` finds: the in-place build
of a checkout, or an installed wheel / sdist (tools/build_wheel.sh and
cibuildwheel run them from a directory outside the source tree).  Everything
that could hang (two OpenMP runtimes in one process) runs in a subprocess
with a timeout, so a deadlock fails the test instead of stalling the suite.

Environment switches, set by the wheel builds:
  FUSEDOPT_EXPECT_OPENMP=1|0          the build must (not) have OpenMP
  FUSEDOPT_EXPECT_VENDORED_OPENMP=1   the OpenMP runtime must be the copy shipped
                                      inside the wheel (auditwheel, delocate, delvewheel)
"""
import ast
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fusedopt
from fusedopt import _core

PACKAGE_DIR = Path(fusedopt.__file__).resolve().parent
HAVE_OPENMP = bool(fusedopt.info()["openmp"])
HAVE_THREADPOOLCTL = importlib.util.find_spec("threadpoolctl") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
TIMEOUT = 300  # seconds for one subprocess; a deadlock hits it

needs_openmp = pytest.mark.skipif(not HAVE_OPENMP, reason="fusedopt was built without OpenMP")
needs_threadpoolctl = pytest.mark.skipif(not HAVE_THREADPOOLCTL,
                                         reason="threadpoolctl is not installed")
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")

# file names of OpenMP runtimes: GNU (libgomp, renamed libgomp-<hash>.so by
# auditwheel), LLVM (libomp), Intel (libiomp5), MSVC (vcomp140, maybe mangled)
OPENMP_LIB = re.compile(r"^(lib)?(gomp|omp|iomp5|vcomp)([-._\d]|$)", re.IGNORECASE)


def run_python(code, *args, env=None, timeout=TIMEOUT):
    """Run `code` in a fresh interpreter that imports this same fusedopt; return stdout."""
    full_env = dict(os.environ)
    # the subprocess must find the fusedopt under test, also for a source-tree run
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_DIR.parent)] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    full_env.update(env or {})
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                              capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the subprocess did not finish in {timeout} s (deadlock?)\n"
                    f"stdout: {exc.stdout}\nstderr: {exc.stderr}")
    assert proc.returncode == 0, (f"subprocess exited with {proc.returncode}\n"
                                  f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc.stdout


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


# ---------------------------------------------------------------------------
# Metadata and files
# ---------------------------------------------------------------------------

def _installed_distribution():
    """The installed distribution that `import fusedopt` came from, or None (source tree)."""
    try:
        dist = importlib.metadata.distribution("fusedopt")
    except importlib.metadata.PackageNotFoundError:
        return None
    init = Path(dist.locate_file("fusedopt/__init__.py"))
    if not init.exists() or not _same_file(init, fusedopt.__file__):
        return None
    return dist


def test_version_is_single_sourced():
    from fusedopt._version import __version__

    assert fusedopt.__version__ == __version__ == fusedopt.info()["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d*)*(\+[\w.]+)?", __version__)
    dist = _installed_distribution()
    if dist is not None:
        assert dist.version == __version__


def test_installed_metadata():
    dist = _installed_distribution()
    if dist is None:
        pytest.skip("fusedopt is imported from a source tree, not an installed distribution")
    meta = dist.metadata
    assert meta["Name"] == "fusedopt"
    assert meta["Requires-Python"].replace(" ", "") == ">=3.10"
    assert "BSD" in (meta.get("License-Expression") or meta.get("License") or "")
    assert any(c.startswith("Programming Language :: Python :: 3.1")
               for c in meta.get_all("Classifier"))
    assert meta.get_all("Project-URL"), "project URLs missing"
    assert "fusedopt" in (meta.get_payload() or meta.get("Description") or "").lower(), \
        "README is not the long description"
    runtime = [r for r in (dist.requires or []) if "extra ==" not in r]
    names = [re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in runtime]
    assert names == ["numpy", "ml-dtypes"], f"the runtime dependencies are NumPy and ml-dtypes, got {runtime}"
    assert "1.23" in runtime[0] and "0.3" in runtime[1]
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"test", "plot", "bench", "examples"} <= extras
    # Cython builds the extension; it is never needed at run time
    assert not any("cython" in r.lower() for r in dist.requires or [] if "extra ==" not in r)
    files = {str(f).replace("\\", "/") for f in dist.files or []}
    assert any(re.search(r"dist-info/(licenses/)?LICENSE", f) for f in files), "LICENSE not shipped"


def test_typing_files_ship_with_the_package():
    assert (PACKAGE_DIR / "py.typed").is_file()
    assert (PACKAGE_DIR / "_core.pyi").is_file()


def _stub_tree():
    return ast.parse((PACKAGE_DIR / "_core.pyi").read_text(encoding="utf-8"))


def _stub_public_names(body):
    names = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return {k: v for k, v in names.items() if not k.startswith("_")}


def test_stubs_declare_every_public_name_of_the_extension():
    stub = _stub_public_names(_stub_tree().body)
    module = {name for name, obj in vars(_core).items()
              if not name.startswith("_") and not inspect.ismodule(obj)}
    assert set(stub) == module, (f"only in the stub: {sorted(set(stub) - module)}; "
                                 f"only in the module: {sorted(module - set(stub))}")


def test_stub_signatures_match_the_extension():
    stub = _stub_public_names(_stub_tree().body)
    for name, node in stub.items():
        obj = getattr(_core, name)
        if isinstance(node, ast.FunctionDef):
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue  # no introspectable signature: nothing to compare
            assert [a.arg for a in node.args.args] == list(sig.parameters), name
        elif isinstance(node, ast.ClassDef):
            stub_members = {n.name for n in node.body
                            if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
            stub_members |= {n.target.id for n in node.body  # attributes: `name: type`
                             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            real_members = {m for m in vars(obj) if not m.startswith("_")}  # not inherited
            assert stub_members == real_members, name


def test_cli_reports_the_simd_path_at_run_time():
    out = run_python("import sys, fusedopt.__main__ as m; sys.exit(m.main(['info']))")
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["simd_path"] in fields["simd_supported"].split()
    assert fields["simd_path"] == fusedopt.simd_path()
    assert fields["openmp"] == str(HAVE_OPENMP)
    assert fields["version"] == fusedopt.__version__


def test_build_flags_are_portable():
    flags = _core.build_info()["flags"].split()
    host_specific = [f for f in flags if re.match(r"(-march=|-mtune=native|-mcpu=native|-xHost"
                                                  r"|/arch:|-mavx|-mfma|-msse4)", f)]
    assert not host_specific, f"host-specific flags in a distributable build: {host_specific}"
    if os.name != "nt":
        assert "-ffp-contract=off" in flags


def test_openmp_as_expected_by_the_build():
    expected = os.environ.get("FUSEDOPT_EXPECT_OPENMP")
    if expected not in ("0", "1"):
        pytest.skip("FUSEDOPT_EXPECT_OPENMP not set")
    assert HAVE_OPENMP == (expected == "1"), fusedopt.info()
    if not HAVE_OPENMP:
        assert fusedopt.get_num_threads() == 1


# ---------------------------------------------------------------------------
# The OpenMP runtime the extension links, as threadpoolctl sees it
# ---------------------------------------------------------------------------

PROBE = r"""
import json, os, sys

def mapped_files():
    try:
        with open("/proc/self/maps") as f:
            return {parts[5] for parts in (line.split(None, 5) for line in f)
                    if len(parts) == 6 and parts[5].startswith("/")}
    except OSError:
        return None

import numpy
import threadpoolctl
{extra_imports}
maps_before = mapped_files()
apis_before = [i["filepath"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
import fusedopt
maps_after = mapped_files()
new_maps = None if maps_before is None else sorted(p.strip() for p in maps_after - maps_before)
print(json.dumps({
    "core": fusedopt._core.__file__,
    "new_maps": new_maps,
    "openmp_before": apis_before,
    "info": threadpoolctl.threadpool_info(),
}))
"""


def _ldd_openmp(core_file):
    """Path of the OpenMP library `core_file` loads, as resolved by ldd (Linux), or None."""
    if not sys.platform.startswith("linux") or shutil.which("ldd") is None:
        return None
    proc = subprocess.run(["ldd", core_file], capture_output=True, text=True, timeout=60)
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(/\S+)", line)
        if m and OPENMP_LIB.match(os.path.basename(m.group(1))):
            return m.group(2)
    return None


def _probe(extra_imports=""):
    out = run_python(PROBE.replace("{extra_imports}", extra_imports))
    data = json.loads(out.strip().splitlines()[-1])
    ldd = _ldd_openmp(data["core"])
    mapped = [p for p in data["new_maps"] or [] if OPENMP_LIB.match(os.path.basename(p))]
    openmp = [i for i in data["info"] if i["user_api"] == "openmp"]
    if ldd is not None:
        ours = ldd
        if mapped:  # what ldd resolves is what the dynamic loader mapped
            assert any(_same_file(ours, p) for p in mapped), (ours, mapped)
    elif mapped:
        ours = mapped[0]
    else:  # no /proc (macOS, Windows): the runtime that appeared with `import fusedopt`
        new = [i["filepath"] for i in openmp
               if not any(_same_file(i["filepath"], b) for b in data["openmp_before"])]
        assert new, f"no OpenMP runtime appeared with `import fusedopt`: {data['info']}"
        ours = new[0]
    return ours, openmp, data


@needs_openmp
@needs_threadpoolctl
def test_threadpoolctl_lists_the_openmp_runtime_we_link():
    ours, openmp, data = _probe()
    assert any(_same_file(ours, i["filepath"]) for i in openmp), \
        f"threadpoolctl does not list {ours}: {data['info']}"
    if os.environ.get("FUSEDOPT_EXPECT_VENDORED_OPENMP") == "1":
        site = Path(data["core"]).resolve().parent.parent
        assert Path(ours).resolve().is_relative_to(site), \
            f"{ours} is not the OpenMP runtime shipped in the wheel (under {site})"
        assert Path(ours).resolve().name.lower().startswith(
            ("libgomp-", "libomp", "vcomp")), ours


@needs_openmp
@needs_threadpoolctl
def test_threadpool_limits_caps_fusedopt_threads():
    out = run_python("""
        import numpy as np
        import threadpoolctl
        import fusedopt

        fusedopt.set_num_threads(None)
        assert fusedopt.get_num_threads() == 3, fusedopt.get_num_threads()
        p = np.zeros(1 << 17, np.float32)
        opt = fusedopt.Adam([p], lr=0.1)
        g = np.ones_like(p)
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert fusedopt.get_num_threads() == 1, fusedopt.get_num_threads()
            opt.step([g])
        assert fusedopt.get_num_threads() == 3, fusedopt.get_num_threads()
        opt.step([g])
        assert np.allclose(p, -0.2, atol=1e-3), p[:4]
        # an explicit fusedopt setting wins over OpenMP's
        fusedopt.set_num_threads(2)
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert fusedopt.get_num_threads() == 2
        print("ok")
    """, env={"OMP_NUM_THREADS": "3"})
    assert out.strip().endswith("ok")


# ---------------------------------------------------------------------------
# Two OpenMP runtimes in one process: ours next to PyTorch's
# ---------------------------------------------------------------------------

TORCH_AND_FUSEDOPT = r"""
import sys
import threading

if sys.argv[1] == "torch_first":
    import torch
    import fusedopt
else:
    import fusedopt
    import torch
import numpy as np

torch.set_num_threads(2)
fusedopt.set_num_threads(2)
n = 4 * fusedopt._core.parallel_min_elements() + 13   # large enough to use threads
rng = np.random.default_rng(0)

def make():
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    return p, g

# in alternation, on one thread
p, g = make()
start = p.copy()
opt = fusedopt.Adam([p], lr=1e-3)
a = torch.randn(384, 384)
for _ in range(25):
    c = a @ a                                   # torch's intra-op (OpenMP) threads
    s = float(torch.tanh(c).sum())              # an elementwise op in parallel too
    opt.step([g])
assert np.isfinite(p).all() and not np.array_equal(p, start)
# the same steps alone give the same bits: threads and the other runtime change nothing
q = start.copy()
opt2 = fusedopt.Adam([q], lr=1e-3)
for _ in range(25):
    opt2.step([g])
assert np.array_equal(p, q)

# at the same time, from two Python threads (both release the GIL)
errors = []
def torch_work():
    try:
        for _ in range(25):
            float((a @ a).sum())
    except BaseException as exc:
        errors.append(exc)
def fusedopt_work():
    try:
        p2, g2 = make()
        o = fusedopt.AdamW([p2], lr=1e-3)
        for _ in range(25):
            o.step([g2])
        assert np.isfinite(p2).all()
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=torch_work), threading.Thread(target=fusedopt_work)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
print("ok", torch.__version__)
"""


@needs_torch
@pytest.mark.parametrize("order", ["fusedopt_first", "torch_first"])
def test_fusedopt_and_torch_openmp_in_one_process(order):
    out = run_python(TORCH_AND_FUSEDOPT, order)
    assert out.strip().splitlines()[-1].startswith("ok")


@needs_torch
@needs_openmp
@needs_threadpoolctl
def test_threadpoolctl_sees_ours_next_to_torchs_runtime():
    ours, openmp, data = _probe(extra_imports="import torch")
    # a build linked to the system's libgomp.so.1 (pip install ., not a repaired wheel)
    # shares its soname with torch's: the loader then binds our extension to the
    # runtime torch already loaded, so one runtime serves both, listed under torch's path
    assert any(_same_file(ours, i["filepath"])
               or os.path.basename(i["filepath"]) == os.path.basename(ours) for i in openmp), data["info"]
    # and limiting OpenMP reaches ours while torch is loaded
    out = run_python("""
        import torch, threadpoolctl, fusedopt
        fusedopt.set_num_threads(None)
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert fusedopt.get_num_threads() == 1, fusedopt.get_num_threads()
        print("ok")
    """, env={"OMP_NUM_THREADS": "2"})
    assert out.strip().endswith("ok")
