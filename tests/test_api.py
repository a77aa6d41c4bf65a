"""Package-level API: info, command line, FlatParams, SIMD override."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fusedopt


def test_info_reports_the_build():
    info = fusedopt.info()
    assert info["version"] == fusedopt.__version__
    assert info["dtypes"] == ["float32", "float64", "float16", "bfloat16"]
    assert {"float32", "bfloat16", "8bit"} <= set(info["state_dtypes"])
    assert info["simd_path"] in info["simd_supported"]
    assert info["num_threads"] >= 1
    assert "-O3" in info["flags"] or "/O2" in info["flags"]
    assert "march=native" not in info["flags"]
    if info["openmp"]:
        assert info["openmp_runtime"]


def test_command_line_info_and_bench():
    out = subprocess.run([sys.executable, "-m", "fusedopt", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert "simd_path" in out and "openmp" in out
    out = subprocess.run([sys.executable, "-m", "fusedopt", "bench", "--sizes", "1000", "--repeats", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert "fusedopt.slow" in out and "1e+03" in out


def test_simd_override_by_environment():
    env = dict(os.environ, FUSEDOPT_SIMD="baseline")
    out = subprocess.run([sys.executable, "-c", "import fusedopt; print(fusedopt.simd_path())"],
                         capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "baseline"
    env["FUSEDOPT_SIMD"] = "no-such-isa"
    result = subprocess.run([sys.executable, "-c", "import fusedopt; print(fusedopt.simd_path())"],
                            capture_output=True, text=True, check=True, env=env)
    assert "FUSEDOPT_SIMD ignored" in result.stderr
    assert result.stdout.strip() == fusedopt._core.simd_supported()[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_params_views_and_one_pass_update(dtype):
    shapes = [(7, 3), (3,), (), (0, 5), (33,)]
    flat = fusedopt.FlatParams(shapes, dtype)
    assert [p.shape for p in flat.params] == shapes == [g.shape for g in flat.grads]
    assert flat.param.ctypes.data % 64 == 0 and flat.grad.ctypes.data % 64 == 0
    for p in flat.params:
        assert np.shares_memory(p, flat.param) or p.size == 0
        assert p.size == 0 or p.ctypes.data % 64 == 0
    rng = np.random.default_rng(0)
    for p in flat.params:
        p[...] = rng.standard_normal(p.shape)
    separate = [p.copy() for p in flat.params]
    opt_flat = fusedopt.Adam([flat.param], lr=0.01)
    opt_list = fusedopt.Adam(separate, lr=0.01)
    for _ in range(5):
        for g in flat.grads:
            g[...] = rng.standard_normal(g.shape)
        opt_flat.step([flat.grad])
        opt_list.step([g.copy() for g in flat.grads])
    for p, q in zip(flat.params, separate):
        assert p.tobytes() == q.tobytes()  # same elementwise arithmetic, same bits
    flat.zero_grad()
    assert not flat.grad.any()


def test_flat_params_from_arrays_and_errors():
    arrays = [np.arange(6.0).reshape(2, 3), np.ones(4)]
    flat = fusedopt.FlatParams.from_arrays(arrays)
    assert flat.dtype == np.float64
    np.testing.assert_array_equal(flat.params[0], arrays[0])
    with pytest.raises(TypeError, match="dtype"):
        fusedopt.FlatParams([(3,)], np.int32)
    with pytest.raises(ValueError, match=r"shapes\[0\]"):
        fusedopt.FlatParams([(-1,)])
