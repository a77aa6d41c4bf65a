"""Crash-safe checkpoints: atomic save, strict load, no pickle."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fusedopt


def trained(cls=fusedopt.AdamW, steps=5, **kw):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal(9)]
    opt = cls([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.02}], lr=0.01, **kw)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    return opt, params


@pytest.mark.parametrize("cls, kw", [(fusedopt.AdamW, {"amsgrad": True}),
                                     (fusedopt.SGD, {"momentum": 0.9, "nesterov": True})])
def test_save_load_resumes_bitwise(tmp_path, cls, kw):
    opt, params = trained(cls, **kw)
    fusedopt.save(opt, tmp_path / "ckpt.npz")
    resumed_params = [p.copy() for p in params]
    fresh = cls([{"params": [resumed_params[0]]}, {"params": [resumed_params[1]], "lr": 0.02}],
                lr=0.01, **kw)
    fusedopt.load(fresh, tmp_path / "ckpt.npz")
    assert fresh.step_count == opt.step_count
    rng = np.random.default_rng(9)
    for _ in range(5):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        opt.step(grads)
        fresh.step(grads)
    for a, b in zip(params, resumed_params):
        assert a.tobytes() == b.tobytes()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_file_has_no_pickle(tmp_path):
    opt, _ = trained()
    fusedopt.save(opt, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:  # raises if anything is pickled
        for name in npz.files:
            assert npz[name].dtype != object


def test_load_rejects_mismatches_before_changing_anything(tmp_path):
    opt, _ = trained()
    fusedopt.save(opt, tmp_path / "c.npz")
    other = fusedopt.AdamW([np.zeros((16, 5), np.float32), np.zeros(9)], lr=0.01)
    with pytest.raises(ValueError, match="2 param groups, the optimizer has 1"):
        fusedopt.load(other, tmp_path / "c.npz")
    assert other.step_count == 0 and not other.state[0]["exp_avg"].any()
    sgd = fusedopt.SGD([{"params": [np.zeros((16, 4), np.float32)]}, {"params": [np.zeros(9)]}])
    with pytest.raises(ValueError, match="hyperparameters|AdamW"):
        fusedopt.load(sgd, tmp_path / "c.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable"):
        fusedopt.load(other, tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fusedopt checkpoint"):
        fusedopt.load(other, tmp_path / "plain.npz")


SAVER = textwrap.dedent("""
    import sys, numpy as np, fusedopt
    path = sys.argv[1]
    params = [np.zeros(6_000_000)]
    opt = fusedopt.Adam(params, lr=0.1)
    opt.step([np.ones(6_000_000)])
    fusedopt.save(opt, path)               # the good checkpoint: step_count 1
    print("saved", flush=True)
    while True:                            # keep overwriting it until killed
        opt.step([np.ones(6_000_000)])
        fusedopt.save(opt, path)
""")


def test_killed_mid_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        deadline = time.time() + 20
        # wait until a temporary file exists: the kill then lands mid-write
        while time.time() < deadline and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]:
            time.sleep(0.001)
        saw_partial_write = bool([f for f in os.listdir(tmp_path) if f.endswith(".tmp")])
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert saw_partial_write
    opt = fusedopt.Adam([np.zeros(6_000_000)], lr=0.1)
    fusedopt.load(opt, path)  # the last complete checkpoint, never a torn one
    assert opt.step_count >= 1
    expected_m = 0.1 * sum(0.9 ** k for k in range(opt.step_count))  # m after n steps of g = 1
    np.testing.assert_allclose(opt.state[0]["exp_avg"][:3], expected_m, rtol=1e-12)
