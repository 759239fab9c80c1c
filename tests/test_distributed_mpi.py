"""Data-parallel training over MPI, run as real jobs: `mpiexec -n N python tests/mpi_workers/...`
under a timeout (a hang fails the test, never the suite). Skipped, with the reason, where
mpi4py or mpiexec is missing (pip install 'ffcompile[distributed]')."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason="data-parallel tests need mpi4py (pip install 'ffcompile[distributed]')")

ROOT = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).resolve().parent / "mpi_workers"
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
TIMEOUT = 300  # seconds per job: two loaded cores compile both programs on every rank

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (the mpich wheel brings one)")


def mpirun(ranks: int, script: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # -n beyond the cores (3 on 2) oversubscribes; MPICH's hydra allows it by default.
    return subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(script), *args],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ranks_match_one_process(backend, ranks, optimizer):
    """N ranks on B/N rows each == one process on B rows, after 20 steps, within 1e-12
    (relative loss, absolute parameters: float64 sums in another order; measured ~3e-16);
    parameters bitwise equal on every rank. Buckets of 1 KiB split the gradients into several."""
    run = mpirun(ranks, WORKERS / "equivalence.py", backend, optimizer, "1024")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"OK ranks={ranks}" in run.stdout, run.stdout
    assert "buckets=1 " not in run.stdout  # several buckets, so several collectives in flight


def test_one_bucket(backend):
    run = mpirun(2, WORKERS / "equivalence.py", backend, "adam", str(1 << 30))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "OK ranks=2 buckets=1 " in run.stdout, run.stdout


def test_a_raising_rank_ends_the_job_with_its_error(backend):
    run = mpirun(2, WORKERS / "failures.py", "raise", backend)
    assert run.returncode != 0
    assert "rank 1 fails on purpose" in run.stderr


MISMATCHES = {  # failures.py case -> what the message shows
    "mismatch": ("rank 0 arguments: ", "params.w: f64[5,8]", "params.w: f64[5,12]"),  # another model
    "late": ("x: f64[4,5]", "x: f64[3,5]"),  # one rank's batch changes shape at step 4
    "loss": ("same argument types, different programs (model, loss or optimizer) at IR line", "= tanh"),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_different_programs_fail_on_every_rank_before_the_steps_collectives(backend, case):
    run = mpirun(2, WORKERS / "failures.py", case, backend)
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in (0, 1):
        assert f"MISMATCH {rank}: data_parallel: the ranks compiled different training steps" in run.stdout
    for shown in MISMATCHES[case]:
        assert shown in run.stdout, run.stdout


def test_digits_ddp_reaches_the_single_process_accuracy(backend):
    """examples/digits_ddp.py on 2 ranks against examples/digits.py in one process (same model,
    data split, global batch and epochs; another shuffle): >= 95% and within 2 points."""
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    run = mpirun(2, ROOT / "examples" / "digits_ddp.py", "--backend", backend)
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = float(run.stdout.split("test accuracy ")[1].split("%")[0]) / 100
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import digits
    finally:
        sys.path.pop(0)
    single = digits.train(epochs=30, progress=False, backend=backend).test_accuracy
    print(f"digits test accuracy: 2 ranks {accuracy:.4f}, one process {single:.4f}")
    assert accuracy >= 0.95 and abs(accuracy - single) <= 0.02


@pytest.mark.parametrize("ranks", [2, 3])
def test_scaling_study_validates_against_a_real_run(ranks):
    """The model's prediction and the measured step, side by side (no bound on their ratio:
    on a loaded 2-core machine the measured step varies by several times)."""
    run = mpirun(ranks, ROOT / "examples" / "scaling_study.py", "--validate", "--model", "digits")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"digits on {ranks} ranks" in run.stdout and "measured/predicted" in run.stdout, run.stdout
    print(run.stdout)
