"""End to end: real training processes killed (kill -9, SIGINT, SIGTERM) and resumed.

The promise under test: on CPU a run that was killed any number of times and resumed with
`zerograd resume RUN_DIR` ends with exactly the weights, epoch records and summary of a run that
was never interrupted.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zerograd.checkpoint_format import checkpoint_dirs

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"seconds", "train_seconds"}

# A real MNIST run, kept small: MLP with dropout (so the RNG state matters), a one-cycle schedule
# (per-step scheduler state), 2 epochs of 300 steps, a checkpoint every 23 steps (mid-epoch).
MNIST_CONFIG = """\
data: {dataset: mnist, normalize: true}
model: {name: mlp, sizes: [784, 64, 10], dropout: 0.2}
loss: cross_entropy
optimizer: adam
lr: 0.002
batch_size: 200
epochs: 3
schedule: onecycle
threads: 1
checkpoint_every: 23
keep_checkpoints: 2
plots: false
"""

# A quick synthetic run for the signal tests: 25 steps per epoch, a checkpoint every 10 steps.
SINC_CONFIG = """\
data: {dataset: sinc, n: 20}
model: {name: mlp, sizes: [2, 32, 32, 1], activation_fn: tanh, flatten: false, dropout: 0.1}
loss: mse
lr: 0.01
batch_size: 16
epochs: 40
threads: 1
checkpoint_every: 10
plots: false
"""


def zerograd(*args: str) -> list[str]:
    return [sys.executable, "-m", "zerograd", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def run_to_end(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env(), cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def newest_step(run_dir: Path) -> int:
    found = checkpoint_dirs(run_dir / "checkpoints")
    return int(found[0].name.split("-")[1]) if found else -1


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while newest_step(run_dir) < step:
        if process.poll() is not None:
            raise AssertionError(f"training ended (rc {process.returncode}) before reaching step {step}: "
                                 f"{process.stderr.read()[-2000:] if process.stderr else ''}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no checkpoint of step {step} after {timeout} s")
        time.sleep(0.01)


def epoch_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records if r.get("kind", "epoch") == "epoch"]


def assert_same_run(expected: Path, actual: Path) -> None:
    want, got = load_file(expected / "model.safetensors"), load_file(actual / "model.safetensors")
    assert want.keys() == got.keys()
    different = [k for k in want if not torch.equal(want[k], got[k])]
    assert not different, f"weights differ from the uninterrupted run: {different}"
    assert epoch_records(actual) == epoch_records(expected)  # exactly: no duplicated or missing epochs
    summaries = [json.loads((d / "summary.json").read_text()) for d in (expected, actual)]
    for summary in summaries:
        summary.pop("train_seconds")
    assert summaries[1] == summaries[0]


@pytest.mark.slow
def test_kill_9_at_random_steps_then_resume_ends_bit_identical(tmp_path: Path) -> None:
    (tmp_path / "mnist.yaml").write_text(MNIST_CONFIG)
    run_to_end(zerograd("train", "mnist.yaml", "--out", "reference", "--progress", "none"), tmp_path)

    seed = int(os.environ.get("ZEROGRAD_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # of 900 steps: the last kill leaves 340+ steps, which outlast the random wait below on a fast machine
    targets = [rng.randint(30, 170), rng.randint(230, 370), rng.randint(430, 560)]
    run_dir, command, killed = tmp_path / "killed", zerograd("train", "mnist.yaml", "--out", "killed", "--progress",
                                                             "none"), []
    for target in targets:
        process = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        wait_for_step(run_dir, target, process)
        time.sleep(rng.uniform(0.0, 0.05))  # a random moment (steps take ~1 ms): mid-step, mid-checkpoint, mid-eval
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, f"seed {seed}: the run ended before the kill"
        killed.append(newest_step(run_dir))
        command = zerograd("resume", "killed", "--progress", "none")
    assert killed == sorted(killed) and killed[-1] < 900, f"seed {seed}: killed after steps {killed}"
    assert not (run_dir / "summary.json").exists()  # killed runs are not mistaken for finished ones

    run_to_end(command, tmp_path)
    assert_same_run(tmp_path / "reference", run_dir)


def test_sigint_saves_a_checkpoint_exits_130_and_resume_matches(tmp_path: Path) -> None:
    (tmp_path / "sinc.yaml").write_text(SINC_CONFIG.replace("epochs: 40", "epochs: 6"))
    run_to_end(zerograd("train", "sinc.yaml", "--out", "reference", "--progress", "none"), tmp_path)
    run_dir = tmp_path / "stopped"
    process = subprocess.Popen(zerograd("train", "sinc.yaml", "--out", "stopped", "--progress", "none"), cwd=tmp_path,
                               env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(run_dir, 20, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert f"zerograd resume {run_dir.name}" in stderr  # says how to go on
    stopped_at = newest_step(run_dir)
    assert stopped_at > 20 and f"step-{stopped_at:08d}" in stderr  # a checkpoint written on the way out
    assert not (run_dir / "model.safetensors").exists()

    run_to_end(zerograd("resume", "stopped", "--progress", "none"), tmp_path)
    assert_same_run(tmp_path / "reference", run_dir)


def test_sigterm_exits_143_with_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "sinc.yaml").write_text(SINC_CONFIG)
    process = subprocess.Popen(zerograd("train", "sinc.yaml", "--out", "run", "--progress", "none"), cwd=tmp_path,
                               env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(tmp_path / "run", 10, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr and "zerograd resume run" in stderr
    assert newest_step(tmp_path / "run") > 10


def test_a_second_ctrl_c_stops_at_once_without_waiting_for_the_step(tmp_path: Path) -> None:
    # One optimizer step per epoch (batch 1, accumulate 1600): the safe point is seconds away.
    config = (SINC_CONFIG.replace("n: 20", "n: 40").replace("batch_size: 16", "batch_size: 1\naccumulate: 1600")
              .replace("checkpoint_every: 10", "checkpoint_every: 1"))
    (tmp_path / "sinc.yaml").write_text(config)
    process = subprocess.Popen(zerograd("train", "sinc.yaml", "--out", "run", "--progress", "none"), cwd=tmp_path,
                               env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(tmp_path / "run", 1, process)  # epoch 2 has begun: its one step is an epoch away
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    while "SIGINT received" not in (line := process.stderr.readline()):  # the first one was taken
        assert line, "the process ended without acknowledging the first SIGINT"
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "zerograd: interrupted" in stderr and "checkpoint saved" not in stderr
    assert time.monotonic() - sent < 10
    assert newest_step(tmp_path / "run") == 1  # no checkpoint of a half-accumulated step
