"""fusedopt.distributed under MPI: each test starts ``mpiexec -n {2,3}`` on a scenario
of tests/mpi_scenarios.py (where the assertions and their references are), with a
timeout, and checks that every rank finished it.  Skipped where mpi4py or mpiexec
is missing (``pip install "fusedopt[mpi]"``); CI installs both."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpirun")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")

SCENARIOS = Path(__file__).with_name("mpi_scenarios.py")
TIMEOUT = 300


def run(scenario, n, folder, expect_ok=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = Path(__file__).resolve().parents[1] / "src"
    if (src / "fusedopt" / "__init__.py").exists() and any((src / "fusedopt").glob("_core*.so")):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    result = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(SCENARIOS), scenario, str(folder)],
                            capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if expect_ok:
        done = result.stdout.count(f"OK {scenario} rank")
        assert result.returncode == 0 and done == n, (
            f"{scenario} on {n} ranks: exit {result.returncode}, {done} ranks finished\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("scenario", ["data_parallel", "zero_matches_single_process", "zero_state_is_sharded",
                                      "zero_clipping_and_nonfinite", "options_set_later", "zero_checkpoints",
                                      "bad_input_raises_everywhere", "plateau_and_partition",
                                      "one_rank_goes_wrong"])
def test_scenario(scenario, n, tmp_path):
    run(scenario, n, tmp_path)


@pytest.mark.parametrize("n", [2, 3])
def test_rank_killed_mid_save_leaves_its_checkpoint_whole(n, tmp_path):
    died = run("save_then_die", n, tmp_path, expect_ok=False)
    assert died.returncode != 0, "the rank meant to die mid-save did not"
    assert sorted(f.name for f in tmp_path.glob("rank*.npz")) == [f"rank{r}.npz" for r in range(n)]
    run("load_after_death", n, tmp_path)


def test_import_without_mpi4py_names_the_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "try:\n    import fusedopt.distributed\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "fusedopt[mpi]"' in out.stdout
    code = "import sys, fusedopt; print('mpi4py' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
