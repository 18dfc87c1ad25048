"""The thread count of a training run (`threads: null`): a function of the machine and the model,
never of the momentary load; written into the run (config.yaml and summary.json), so training
from RUN/config.yaml uses it again; and a busy machine is named in the header, not hidden in
the numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zerograd
from zerograd import performance, runs

from helpers import write_band_idx


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_band_idx(tmp_path_factory.mktemp("tiny-mnist"), {"train": 1280, "t10k": 128}, noise=90, bright=None)


@pytest.fixture(autouse=True)
def no_thread_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*performance.THREAD_ENV_VARS, performance.CPU_SHARE):
        monkeypatch.delenv(name, raising=False)


def cnn_overrides(data: Path) -> dict:
    """mnist-fast (compact CNN, bf16, channels-last: 270 MFLOP a step, so more than one thread on
    a machine with several cores) for 10 steps on a tiny data set."""
    return {"epochs": 1, "data.root": str(data), "plots": False, "progress": "none"}


def train(data: Path, out: Path, source: str | Path = "mnist-fast", **options) -> zerograd.Run:
    overrides = cnn_overrides(data) if source == "mnist-fast" else {}
    return zerograd.train(source, overrides=overrides, out=out, **options)


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a / runs.WEIGHTS)), load_file(str(b / runs.WEIGHTS))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_busy_machine_trains_the_same_weights_and_says_so(tiny_mnist: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The issue: fashion-cnn gave test accuracy 0.8492 in one run and 0.8629 in another, the
    thread count having been taken from the cores idle at the start. Here the machine looks idle
    to one run and has all but a fraction of a core busy for the other."""
    cores = min(torch.get_num_threads(), performance.usable_cores())
    monkeypatch.setattr(performance, "idle_cores", lambda seconds=0.1: float(cores))
    idle = train(tiny_mnist, tmp_path / "idle")
    header_idle = capsys.readouterr().out
    monkeypatch.setattr(performance, "idle_cores", lambda seconds=0.1: 0.2)
    busy = train(tiny_mnist, tmp_path / "busy")
    header_busy = capsys.readouterr().out
    assert same_weights(idle.dir, busy.dir)
    assert idle.summary["threads"] == busy.summary["threads"] == cores
    assert runs.read_config(idle.dir)["threads"] == runs.read_config(busy.dir)["threads"] == cores
    assert f"on cpu ({cores} thread" in header_idle and "note:" not in header_idle
    if cores > 1:  # one thread cannot be slowed by a busy neighbour: nothing to say then
        assert f"note: {cores} of the {cores} cores this run uses are busy with other processes" in header_busy
        assert "the results stay the same" in header_busy and "--set threads=1" in header_busy


def test_training_from_the_runs_config_uses_its_thread_count_again(tiny_mnist: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`zerograd train RUN/config.yaml` on a machine (here: a worker's share) with fewer cores
    still trains with the count the run used, and so ends with the same weights."""
    first = train(tiny_mnist, tmp_path / "first", quiet=True)
    used = first.summary["threads"]
    assert runs.read_config(first.dir)["threads"] == used == min(torch.get_num_threads(), performance.usable_cores())
    monkeypatch.setenv(performance.CPU_SHARE, "1")  # automatic choice would now be 1 thread
    again = train(tiny_mnist, tmp_path / "again", source=first.dir / runs.CONFIG, quiet=True)
    assert same_weights(first.dir, again.dir)
    assert again.summary["threads"] == used
    fresh = train(tiny_mnist, tmp_path / "fresh", quiet=True)  # the recipe itself: chosen for this share
    assert fresh.summary["threads"] == 1 and runs.read_config(fresh.dir)["threads"] == 1


def test_a_small_model_records_one_thread(tmp_path: Path) -> None:
    run = zerograd.train("sinc-surface", overrides={"epochs": 1, "plots": False}, out=tmp_path / "run", quiet=True)
    assert run.summary["threads"] == 1 and runs.read_config(run.dir)["threads"] == 1
    assert json.loads((run.dir / runs.SUMMARY).read_text())["threads"] == 1


def test_fit_keeps_the_thread_count_it_chose_in_its_options(tiny_classification) -> None:
    """A bare `fit` (no run directory) decides the same way; callbacks see the count in `options`."""
    from zerograd.callbacks import Callback

    seen = []

    class Look(Callback):
        def on_fit_start(self, state) -> None:
            seen.append((state.options.threads, torch.get_num_threads()))

    zerograd.fit(zerograd.models.mlp([8, 4, 3], flatten=False), tiny_classification, epochs=1, device="cpu",
                 callbacks=[Look()])
    assert seen == [(1, 1)]


def test_resuming_with_threads_null_keeps_the_count_the_run_recorded(tmp_path: Path) -> None:
    """`zerograd train RECIPE --resume RUN` asks for `threads: null` (the recipe's): the run goes
    on with the count it started with, not with a count chosen again."""
    from zerograd import config as configs

    started = configs.resolve("sinc-surface", {"threads": 2})
    runs.write_config(tmp_path, started)
    assert runs.resume_config(tmp_path, configs.resolve("sinc-surface"))["threads"] == 2
    assert runs.resume_config(tmp_path, configs.resolve("sinc-surface", {"threads": 1}))["threads"] == 1
