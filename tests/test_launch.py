"""The launcher (`zerograd train ... --nproc N [--nnodes M]`): a worker never launches again, a job
of one process trains exactly like the plain command, and two launchers on this machine form a
two-"node" job that matches one process and fails cleanly when a node dies.

Every test that starts a launcher runs it under `proc_watchdog.py`, which kills the whole
process tree as soon as more than a handful of processes appear: a regression that makes the
launcher start itself again must fail the test, never eat the machine.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zerograd import cli, distributed, launch, performance
from zerograd.errors import ConfigError

import proc_watchdog
from helpers import write_band_idx

TESTS = Path(__file__).resolve().parent
WATCHDOG = TESTS / "proc_watchdog.py"
MAX_PROCESSES = 6  # a launcher, its worker(s) and a little slack: a recursion passes this at once
MARK, SHARE = "ZEROGRAD_LAUNCHED", "ZEROGRAD_CPU_SHARE"  # what the launcher sets in its workers
LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                      MARK, SHARE)


def clean_environment() -> dict[str, str]:
    """This process's environment without any launcher's or thread count's variables."""
    drop = {*LAUNCHER_VARIABLES, *performance.THREAD_ENV_VARS}
    return {k: v for k, v in os.environ.items() if k not in drop}


def zerograd_cli(args: list[str], cwd: Path, *, limit: int = MAX_PROCESSES, timeout_s: float = 300,
                 env: dict[str, str] | None = None, **popen: object) -> subprocess.CompletedProcess:
    """`python -m zerograd ARGS` under the process-count watchdog."""
    command = [sys.executable, str(WATCHDOG), str(limit), str(timeout_s), "--", sys.executable, "-m", "zerograd", *args]
    return subprocess.run(command, cwd=cwd, env=env or clean_environment(), capture_output=True, text=True,
                          timeout=timeout_s + 60, **popen)


def assert_watchdog_quiet(job: subprocess.CompletedProcess) -> None:
    assert job.returncode not in (proc_watchdog.TOO_MANY, proc_watchdog.TIMED_OUT), job.stderr[-3000:]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def summary(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "summary.json").read_text())


# --- who is a worker ---------------------------------------------------------------------------


def test_a_process_torchrun_started_is_a_worker_whatever_the_world_size() -> None:
    one = distributed.WorkerEnv.from_environ({"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "LOCAL_RANK": "0",
                                              "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    assert one.is_worker and not one.multi_process  # one process: a worker, but no process group
    for name in ("TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_RANK", "RANK"):
        assert distributed.WorkerEnv.from_environ({name: "0"}).is_worker, name
    assert distributed.WorkerEnv.from_environ({MARK: "1"}).is_worker
    assert not distributed.WorkerEnv.from_environ({"WORLD_SIZE": "1"}).is_worker


def test_a_one_process_worker_does_not_launch_again(monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["train", "sinc-surface", "--nproc", "1"])
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launch.launch_options(args) is not None
    for name, value in {"TORCHELASTIC_RUN_ID": "job", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    assert launch.launch_options(args) is None


def test_a_marked_process_refuses_to_launch(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """ZEROGRAD_LAUNCHED without torchrun's variables (an environment copied from a worker): the
    flags ask for a launch, and it refuses in one line instead of starting torchrun."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(MARK, "1")
    started = []
    monkeypatch.setattr("torch.distributed.run.run", lambda args: started.append(args))
    assert cli.main(["train", "sinc-surface", "--nproc", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "started by a zerograd launcher (ZEROGRAD_LAUNCHED is set)" in err
    with pytest.raises(ConfigError, match="will not start workers itself"):
        launch.launch(launch.LaunchOptions(nproc=2), ["train", "sinc-surface"])
    monkeypatch.delenv(MARK)
    monkeypatch.setenv("RANK", "0")  # torchrun's worker: `launch` itself refuses too
    with pytest.raises(ConfigError, match="a worker that torchrun started"):
        launch.launch(launch.LaunchOptions(nproc=1), ["train", "sinc-surface"])
    assert not started


def test_the_launcher_marks_its_workers_and_gives_each_its_share_of_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*LAUNCHER_VARIABLES, *performance.THREAD_ENV_VARS):
        monkeypatch.delenv(name, raising=False)
    seen: list[dict[str, str]] = []

    def fake_run(args: argparse.Namespace) -> None:
        seen.append(dict(os.environ))

    monkeypatch.setattr("torch.distributed.run.run", fake_run)
    cores = min(performance.usable_cores(), torch.get_num_threads())
    for nproc in (1, 2):
        assert launch.launch(launch.LaunchOptions(nproc=nproc), ["train", "x"]) == 0
    one, two = seen
    assert one[MARK] == two[MARK] == "1"
    assert one[SHARE] == str(cores) and "OMP_NUM_THREADS" not in one  # torch's default, as plain
    assert two[SHARE] == two["OMP_NUM_THREADS"] == str(max(1, cores // 2))  # not torchrun's 1
    for name in (MARK, SHARE, "OMP_NUM_THREADS"):
        assert name not in os.environ  # the launcher's own environment is left as it was
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins: no share to override it
    assert launch.worker_environment(2) == {MARK: "1"}


# --- real launches, under the watchdog ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_band_idx(tmp_path_factory.mktemp("tiny-mnist"), {"train": 1280, "t10k": 128})


def cnn_args(data: Path, out: Path) -> list[str]:
    """mnist-fast (a compact CNN, bf16, channels-last: a step big enough for several threads) on
    a tiny data set: 10 steps."""
    return ["train", "mnist-fast", "--epochs", "1", "--out", str(out), "--quiet", "--set", f"data.root={data}",
            "--set", "plots=false"]


def test_nproc_1_trains_exactly_like_the_plain_command(tiny_mnist: Path, tmp_path: Path) -> None:
    """The issue's case: `--nproc 1` started torchrun, whose one worker started torchrun again,
    without end. Now the worker trains, with the plain command's thread count and weights."""
    plain = zerograd_cli(cnn_args(tiny_mnist, tmp_path / "plain"), tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    launched = zerograd_cli([*cnn_args(tiny_mnist, tmp_path / "one"), "--nproc", "1"], tmp_path)
    assert_watchdog_quiet(launched)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert summary(tmp_path / "one")["world_size"] == 1
    assert summary(tmp_path / "one")["threads"] == summary(tmp_path / "plain")["threads"]
    expected, actual = weights(tmp_path / "plain"), weights(tmp_path / "one")
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


@pytest.mark.parametrize("flags", [["--nproc", "2"], ["--nproc", "1", "--nnodes", "1"]])
def test_every_launch_value_trains_under_the_watchdog(flags: list[str], tmp_path: Path) -> None:
    job = zerograd_cli(["train", "sinc-surface", "--epochs", "2", "--out", str(tmp_path / "run"), "--quiet", *flags],
                       tmp_path)
    assert_watchdog_quiet(job)
    assert job.returncode == 0, job.stderr[-3000:]
    assert summary(tmp_path / "run")["world_size"] == int(flags[1])


def test_nproc_0_is_a_one_line_error(tmp_path: Path) -> None:
    job = zerograd_cli(["train", "sinc-surface", "--nproc", "0"], tmp_path)
    assert job.returncode == 2 and job.stderr.splitlines()[0] == "zerograd: error: --nproc must be >= 1, got 0"


# --- two "nodes" on this machine ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], cwd: Path, name: str) -> subprocess.Popen:
    """One node's launcher under its own watchdog, in a session of its own (to be killed whole)."""
    command = [sys.executable, str(WATCHDOG), str(MAX_PROCESSES), "240", "--", sys.executable, "-m", "zerograd", *args]
    return subprocess.Popen(command, cwd=cwd, env=clean_environment(), stdout=open(cwd / f"{name}.out", "w"),
                            stderr=open(cwd / f"{name}.err", "w"), start_new_session=True)


def node_args(port: int, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "sinc-surface", "--epochs", str(epochs), "--out", str(out), "--nnodes", "2", "--nproc", "1",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"test-{port}", *extra]


@pytest.mark.slow
def test_two_nodes_end_with_the_weights_of_one_process(tmp_path: Path) -> None:
    from test_distributed import assert_same_weights  # the tolerance of the 2-process test

    single = zerograd_cli(["train", "sinc-surface", "--epochs", "3", "--out", str(tmp_path / "one"), "--quiet"],
                          tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    nodes = [start_node(node_args(port, tmp_path / "two", 3, "--quiet"), tmp_path, name) for name in ("a", "b")]
    codes = [node.wait(timeout=300) for node in nodes]
    errors = [(tmp_path / f"{name}.err").read_text()[-3000:] for name in ("a", "b")]
    assert codes == [0, 0], errors
    assert summary(tmp_path / "two")["world_size"] == 2
    assert sum((tmp_path / f"{name}.out").read_text().count("run directory:") for name in ("a", "b")) == 1
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"))


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])  # 0 hosts the rendezvous store (it started first)
def test_a_node_that_dies_ends_the_job_on_the_other_with_a_clear_error(tmp_path: Path, victim: int) -> None:
    port = free_port()
    nodes = []
    for name in ("a", "b"):
        nodes.append(start_node(node_args(port, tmp_path / "run", 400, "--dist-timeout", "20", "--progress", "none"),
                                tmp_path, name))
        time.sleep(1.0)  # "a" starts first, so it hosts the store
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "metrics.jsonl").is_file():  # training has started on both nodes
        assert time.monotonic() < deadline and all(node.poll() is None for node in nodes), "the job did not start"
        time.sleep(0.2)
    time.sleep(1.0)
    dead, survivor = nodes[victim], nodes[1 - victim]
    tree = proc_watchdog.descendants(dead.pid)  # the node's launcher and its worker (its own session)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in tree:
            os.kill(pid, sig)
    killed = time.monotonic()
    code = survivor.wait(timeout=150)
    elapsed = time.monotonic() - killed
    dead.wait(timeout=30)
    err = (tmp_path / f"{'ab'[1 - victim]}.err").read_text()
    assert code not in (0, proc_watchdog.TOO_MANY, proc_watchdog.TIMED_OUT), err[-3000:]
    assert elapsed < 60, f"the other node took {elapsed:.0f} s to stop"
    lines = [line for line in err.splitlines() if not line.startswith("proc_watchdog:")]
    assert lines[-1].startswith("zerograd: error: "), err[-3000:]
    assert "another node" in lines[-1], lines[-1]
    assert "Traceback (most recent call last)" not in err, err[-3000:]
    assert not (tmp_path / "run" / "summary.json").exists()
