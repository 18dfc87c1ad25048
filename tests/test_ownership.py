"""One process at a time owns a run or sweep directory: a second train, resume or sweep of the same
folder is refused with a message naming the first, and a folder whose owner died is free again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zerograd import runs
from zerograd.cli import main as cli
from zerograd.errors import RunInUseError
from zerograd.ownership import LOCK_FILE, DirectoryLock

CONFIG: dict[str, Any] = {
    "name": "line", "data": {"dataset": "line"}, "model": {"name": "linear", "in_features": 1, "out_features": 1},
    "loss": {"name": "mse", "reduction": "sum"}, "optimizer": "sgd", "lr": 0.01, "batch_size": 3, "epochs": 4,
    "shuffle": False, "progress": "none", "plots": False, "log_every": 0, "checkpoint_every": "epoch",
}
HOLDER = """
import sys, time
from zerograd.ownership import DirectoryLock
DirectoryLock(sys.argv[1], sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Any]:
    """`held(DIR, purpose)`: another live process holds DIR, as a `zerograd train` would; the
    fixture gives back the process (kill it to free the folder)."""
    started: list[subprocess.Popen] = []

    def hold(directory: Path, purpose: str = "train") -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), purpose], stdout=subprocess.PIPE,
                                   text=True, env=env())
        started.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def config_file(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(json.dumps(CONFIG | changes))
    return path


def test_a_second_train_into_a_busy_run_directory_is_refused_and_writes_nothing(
        tmp_path: Path, held: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    owner = held(run_dir)
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir), "--seed", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zerograd: error: {run_dir} is being trained by another process (pid {owner.pid}, ")
    assert "wait for it to finish, or choose another --out" in err and "\n" not in err
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # no config.yaml, no metrics of its own

    owner.send_signal(signal.SIGKILL)  # the owner dies without cleaning up: the folder is free again
    owner.wait()
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir), "--seed", "7", "--quiet"]) == 0
    assert runs.read_config(run_dir)["seed"] == 7 and len(runs.load_history(run_dir)) == 4
    assert not (run_dir / LOCK_FILE).exists()  # released at the end of the run


def test_two_trainings_started_at_once_into_one_folder_leave_one_consistent_run(tmp_path: Path) -> None:
    """The issue's case: both used to "succeed", leaving two runs' epochs, one's config and the
    other's weights. Now exactly one trains the folder; the other is refused."""
    run_dir = tmp_path / "run"
    config = config_file(tmp_path, epochs=300, checkpoint_every=None)
    jobs = [subprocess.Popen([sys.executable, "-m", "zerograd", "train", str(config), "--out", str(run_dir),
                              "--seed", str(seed), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env()) for seed in (1, 2)]
    results = [(job.wait(timeout=300), *job.communicate()) for job in jobs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = (1, 2)[[code for code, _, _ in results].index(0)]
    loser_err = next(err for code, _, err in results if code == 2)
    assert any(said in loser_err for said in ("is being trained by another process", "already holds a training run",
                                              "already holds a finished training run")), loser_err
    assert "Traceback" not in loser_err
    assert runs.read_config(run_dir)["seed"] == winner
    assert [r["epoch"] for r in runs.load_history(run_dir).records] == list(range(1, 301))


def test_resume_of_a_run_that_is_still_training_says_so(tmp_path: Path, held: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir), "--quiet"]) == 0
    for name in (runs.WEIGHTS, runs.SUMMARY):  # as if still running: checkpoints, no final files
        (run_dir / name).unlink()
    capsys.readouterr()
    owner = held(run_dir)
    assert cli(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{run_dir} is being trained by another process (pid {owner.pid}" in err and "\n" not in err
    assert "it can be resumed only once that process has stopped" in err and "Directory not empty" not in err
    assert not (run_dir / runs.WEIGHTS).exists()
    owner.kill()
    owner.wait()
    assert cli(["resume", str(run_dir), "--quiet"]) == 0
    assert (run_dir / runs.WEIGHTS).is_file()


def test_a_second_sweep_into_a_busy_sweep_folder_is_refused(tmp_path: Path, held: Any,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    sweep_dir = tmp_path / "sweep"
    owner = held(sweep_dir, "sweep")
    assert cli(["sweep", str(config_file(tmp_path)), "--grid", "lr=0.01,0.02", "--out", str(sweep_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zerograd: error: {sweep_dir} is in use by another sweep (pid {owner.pid}, ")
    assert err.endswith("; wait for it to finish, or choose another --out") and "\n" not in err
    assert sorted(p.name for p in sweep_dir.iterdir()) == [LOCK_FILE]
    owner.kill()
    owner.wait()
    assert cli(["sweep", str(config_file(tmp_path)), "--grid", "lr=0.01,0.02", "--out", str(sweep_dir), "--quiet"]) == 0
    assert not (sweep_dir / LOCK_FILE).exists()


def test_the_lock_is_exclusive_within_one_process_too_and_released_on_exit(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path / "run") as first:
        holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and first.held
        with pytest.raises(RunInUseError, match=f"pid {os.getpid()}"):
            DirectoryLock(tmp_path / "run", "resume").acquire()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    with DirectoryLock(tmp_path / "run") as again:
        assert again.held


def test_default_run_directories_started_in_the_same_second_differ(tmp_path: Path) -> None:
    made = [runs.new_run_dir("line", base=tmp_path, create=True) for _ in range(3)]
    assert len(set(made)) == 3 and all(p.is_dir() for p in made)


def test_a_busy_folder_refuses_every_rank_of_a_ddp_job_without_a_hang(tmp_path: Path, held: Any) -> None:
    run_dir = tmp_path / "run"
    owner = held(run_dir)
    job = subprocess.run([sys.executable, "-m", "zerograd", "train", "sinc-surface", "--epochs", "1", "--nproc", "2",
                          "--out", str(run_dir)], capture_output=True, text=True, env=env(), timeout=240, cwd=tmp_path)
    assert job.returncode == 2, job.stderr[-2000:]
    for rank in (0, 1):  # rank 0 took the lock's answer; rank 1 got it from rank 0
        refusal = f"zerograd: error: [rank {rank}] {run_dir} is being trained by another process (pid {owner.pid}"
        assert refusal in job.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]
