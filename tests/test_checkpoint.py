"""Crash-safe checkpoints: atomic save, strict load, no pickle."""
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

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


def _rewritten(source, target, change, compression=zipfile.ZIP_STORED, stated_sizes=None):
    """A copy of checkpoint `source` at `target` with change(members) applied to its
    {name: bytes} before it is written; stated_sizes: {name: size} the archive's
    directory states instead of the true sizes (a corrupt or forged directory)."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(target, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for info in archive.filelist:
            if info.filename in (stated_sizes or {}):
                info.file_size = stated_sizes[info.filename]
    return target


def _npy(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _with_meta(edit):
    def change(members):
        meta = json.loads(np.load(io.BytesIO(members["fusedopt_meta.json.npy"])).tobytes())
        edit(meta)
        members["fusedopt_meta.json.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return change


def _huge_header(members):
    name = next(n for n in members if n.startswith("state/"))
    members[name] = _npy(np.zeros(1, np.uint8)).replace(b"(1,)", b"(99999999999,)")


def _corrupt_deflate(path):
    data = bytearray(path.read_bytes())
    data[60:80] = bytes(20)   # inside the first member's compressed stream
    path.write_bytes(bytes(data))


def test_corrupt_files_raise_valueerror_before_changing_anything(tmp_path):
    """A corrupt checkpoint raises ValueError (never another error, never an attempt to
    allocate what a header claims), and the optimizer is untouched."""
    opt, _ = trained()
    good = tmp_path / "c.npz"
    fusedopt.save(opt, good)
    fresh, params = trained(steps=0)
    before = [p.copy() for p in params]
    cases = {
        "declares more than it holds": (_rewritten(good, tmp_path / "huge.npz", _huge_header), "declares shape"),
        "betas not a pair": (_rewritten(good, tmp_path / "betas.npz", _with_meta(
            lambda meta: meta["param_groups"][0].update(betas=0.9))), "not a pair"),
    }
    with zipfile.ZipFile(good) as archive:
        state_member = next(n for n in archive.namelist() if n.startswith("state/"))
    cases["directory states what the file cannot hold"] = (_rewritten(
        good, tmp_path / "stated.npz", _huge_header, stated_sizes={state_member: 10**11 + 200}), "cannot hold")
    plain = tmp_path / "plain.npz"   # one .npy whose header claims 1e11 bytes
    plain.write_bytes(_npy(np.zeros(1, np.uint8)).replace(b"(1,)", b"(99999999999,)"))
    cases["a plain .npy file"] = (plain, "not an .npz archive")
    deflated = _rewritten(good, tmp_path / "deflate.npz", lambda members: None, zipfile.ZIP_DEFLATED)
    _corrupt_deflate(deflated)
    cases["corrupt compressed member"] = (deflated, "not a readable")
    for what, (path, match) in cases.items():
        with pytest.raises(ValueError, match=match):
            fusedopt.load(fresh, path)
        assert fresh.step_count == 0, what
        assert all(np.array_equal(p, b) for p, b in zip(params, before)), what


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
