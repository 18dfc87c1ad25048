"""Checkpoints: exact resume (in process), atomic writes, damage detection, retention, settings."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from zerograd import checkpoint_format, fit, runs
from zerograd.api import resume, train
from zerograd.cadence import Every
from zerograd.callbacks import Callback, Checkpointer, ResumeFrom
from zerograd.checkpoint_format import checkpoint_dirs, problem_with
from zerograd.cli import main as cli
from zerograd.errors import CheckpointError, ConfigError, ZerogradWarning

# 196 samples, batch 16: 13 steps per epoch, 39 in all; dropout makes the RNG state matter.
CONFIG: dict[str, Any] = {
    "name": "sinc-small",
    "data": {"dataset": "sinc", "n": 14},
    "model": {"name": "mlp", "sizes": [2, 24, 24, 1], "activation_fn": "tanh", "flatten": False, "dropout": 0.1},
    "loss": "mse", "metrics": ["mae"], "lr": 0.01, "batch_size": 16, "epochs": 3, "threads": 1,
    "schedule": "cosine", "checkpoint_every": 5, "progress": "none", "plots": False, "log_every": 0,
}


class Crash(Exception):
    pass


class CrashAt(Callback):
    """Dies like a killed process: no clean-up, at the end of optimizer step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state: Any) -> None:
        if state.global_step == self.step:  # the first batch end after that step
            raise Crash(f"crash after step {self.step}")


def epoch_lines(run_dir: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records if r.get("kind", "epoch") == "epoch"]


def assert_same_weights(a: Path, b: Path) -> None:
    want, got = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def crash_then_resume(config: dict[str, Any], run_dir: Path, crashes: list[int]) -> None:
    for i, step in enumerate(crashes):
        with pytest.raises(Crash):
            if i == 0:
                train(config, out=run_dir, quiet=True, callbacks=[CrashAt(step)])
            else:
                resume(run_dir, quiet=True, callbacks=[CrashAt(step)])
    resume(run_dir, quiet=True)


@pytest.mark.filterwarnings("ignore:no checkpoint in")  # [3, ...]: the first crash comes before any checkpoint
@pytest.mark.parametrize(("changes", "crashes"), [
    ({}, [7]),                                                   # mid-epoch
    ({"checkpoint_every": "epoch"}, [14]),                       # just after an epoch-end checkpoint
    ({}, [3, 18, 33]),                                           # three times, one before any checkpoint
    # 4 steps per epoch; early stopping ends it after epoch 3 and puts epoch 2's weights back
    ({"accumulate": 3, "val_split": 0.2, "schedule": "onecycle", "epochs": 5, "lr": 0.05,
      "early_stopping": {"monitor": "val_loss", "patience": 1}}, [6, 11]),
])
def test_a_crashed_run_resumes_to_the_same_weights_and_history(tmp_path: Path, changes: dict,
                                                               crashes: list[int]) -> None:
    config = CONFIG | changes
    reference = train(config, out=tmp_path / "reference", quiet=True)
    crash_then_resume(config, tmp_path / "run", crashes)
    assert_same_weights(tmp_path / "reference", tmp_path / "run")
    assert epoch_lines(tmp_path / "run") == epoch_lines(tmp_path / "reference")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["epochs_completed"], summary["stop_reason"], summary["best_epoch"]) == (
        len(reference.history), reference.summary["stop_reason"], reference.summary["best_epoch"])


class NoisyDataset(Dataset):
    """A map-style data set that is not in-memory tensors and draws from the global RNG in
    __getitem__ (like random augmentation): the generic DataLoader path."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(120, 6, generator=generator)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index] + 0.05 * torch.randn(6), self.y[index]


def small_classifier() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 3))


@pytest.mark.parametrize("data", ["dataloader", "tensors"])
def test_fit_with_checkpointer_and_resume_from_is_exact_mid_epoch(tmp_path: Path, data: str) -> None:
    def dataset() -> Any:
        return NoisyDataset() if data == "dataloader" else (NoisyDataset().x, NoisyDataset().y)

    options = dict(epochs=3, batch_size=16, lr=0.01, seed=5, accumulate=2, metrics=["accuracy", "f1"],
                   schedule={"name": "plateau", "monitor": "train_loss", "patience": 0}, threads=1)
    reference = small_classifier()
    expected = fit(reference, dataset(), **options)
    with pytest.raises(Crash):
        fit(small_classifier(), dataset(), callbacks=[CrashAt(10), Checkpointer(tmp_path, every=3)], **options)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-00000009", "step-00000006", "step-00000003"]
    model = small_classifier()
    history = fit(model, dataset(), callbacks=[ResumeFrom(tmp_path), Checkpointer(tmp_path, every=3)], **options)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values()))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h.records]  # noqa: E731
    assert strip(history) == strip(expected)


def test_checkpoint_files_are_safetensors_and_json_listed_in_the_manifest(tmp_path: Path) -> None:
    train(CONFIG | {"epochs": 1}, out=tmp_path / "run", quiet=True)
    newest = checkpoint_dirs(tmp_path / "run" / "checkpoints")[0]
    manifest = json.loads((newest / "manifest.json").read_text())
    assert manifest["format"] == "zerograd-checkpoint" and manifest["step"] == 10
    assert set(manifest["files"]) == {"model.safetensors", "state.safetensors", "state.json"}
    assert {p.name for p in newest.iterdir()} == set(manifest["files"]) | {"manifest.json"}
    assert load_file(newest / "model.safetensors").keys() == load_file(tmp_path / "run" / "model.safetensors").keys()
    state = json.loads((newest / "state.json").read_text())
    assert state["position"]["global_step"] == 10 and state["position"]["batch"] == 10
    assert any(k.startswith("/optimizer/state") for k in load_file(newest / "state.safetensors"))
    assert problem_with(newest) is None
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temp folders left


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning_naming_both(tmp_path: Path) -> None:
    train(CONFIG, out=tmp_path / "reference", quiet=True)
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        train(CONFIG, out=run_dir, quiet=True, callbacks=[CrashAt(22)])
    newest, previous = checkpoint_dirs(run_dir / "checkpoints")[:2]
    data = bytearray((newest / "state.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit
    (newest / "state.safetensors").write_bytes(bytes(data))
    assert "SHA-256" in problem_with(newest)

    with pytest.warns(ZerogradWarning) as caught:
        resume(run_dir, quiet=True)
    message = next(str(w.message) for w in caught if "damaged" in str(w.message))
    assert newest.name in message and previous.name in message
    assert_same_weights(tmp_path / "reference", run_dir)  # resuming from an older checkpoint is exact too


def test_a_half_written_checkpoint_without_manifest_is_not_used(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        train(CONFIG, out=run_dir, quiet=True, callbacks=[CrashAt(12)])
    newest = checkpoint_dirs(run_dir / "checkpoints")[0]
    (newest / "manifest.json").unlink()
    assert "manifest.json is missing" in problem_with(newest)
    with pytest.warns(ZerogradWarning, match="step-00000010 is damaged"):
        assert checkpoint_format.find_resumable(run_dir / "checkpoints").name == "step-00000005"


def test_no_intact_checkpoint_is_a_clear_error_and_nothing_is_deleted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        train(CONFIG, out=run_dir, quiet=True, callbacks=[CrashAt(12)])
    for path in checkpoint_dirs(run_dir / "checkpoints"):
        (path / "model.safetensors").write_bytes(b"garbage")
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="no intact checkpoint.*step-00000010: model.safetensors has 7 bytes"):
        resume(run_dir, quiet=True)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_keeps_the_newest_k_and_the_best_epoch_end_checkpoint(tmp_path: Path) -> None:
    # lr so high that the loss gets worse after the first epoch: the best is an early checkpoint
    config = CONFIG | {"checkpoint_every": "epoch", "keep_checkpoints": 2, "epochs": 5, "lr": 0.3, "schedule": None,
                       "optimizer": "sgd", "val_split": 0.2}
    run = train(config, out=tmp_path / "run", quiet=True)
    val = run.history["val_loss"]
    best_epoch = min(range(len(val)), key=val.__getitem__) + 1
    assert best_epoch < 4  # else this test would not tell "the best" from "the newest"
    kept = {json.loads((p / "manifest.json").read_text())["epoch"]
            for p in checkpoint_dirs(tmp_path / "run" / "checkpoints")}
    assert kept == {4, 5} | {best_epoch}


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays_intact(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    real_write, writes = checkpoint_format.write_file, []

    def write_until_full(path: Path, content: Any) -> None:
        writes.append(path)
        if len(writes) > 4:  # the second checkpoint: its first file fills the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, content)

    monkeypatch.setattr(checkpoint_format, "write_file", write_until_full)
    with pytest.raises(CheckpointError) as caught:
        train(CONFIG, out=run_dir, quiet=True)
    message = str(caught.value)
    assert "No space left on device" in message and "step-00000010" in message
    assert "previous checkpoint step-00000005 is intact" in message and f"zerograd resume {run_dir}" in message
    assert [p.name for p in checkpoint_dirs(run_dir / "checkpoints")] == ["step-00000005"]
    assert problem_with(run_dir / "checkpoints" / "step-00000005") is None
    assert not list((run_dir / "checkpoints").glob(".*"))  # the half-written one was removed

    monkeypatch.setattr(checkpoint_format, "write_file", real_write)  # space freed: the run goes on
    resume(run_dir, quiet=True)
    assert (run_dir / "summary.json").is_file()


def test_the_cli_reports_a_failed_checkpoint_write_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    def full(path: Path, content: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_format, "write_file", full)
    (tmp_path / "c.yaml").write_text(json.dumps(CONFIG))
    assert cli(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerograd: error: could not write checkpoint step-00000005") and "\n" not in err
    assert "no earlier checkpoint exists" in err


@pytest.mark.parametrize(("value", "expected"), [
    (500, Every(steps=500)), ("epoch", Every(epoch=True)), ("10m", Every(seconds=600.0)), ("90s", Every(seconds=90.0)),
    ("1.5h", Every(seconds=5400.0)), (None, Every()), (False, Every()), (0, Every()), ("off", Every()),
])
def test_checkpoint_every_accepts_steps_epoch_times_and_off(value: Any, expected: Every) -> None:
    assert Every.parse(value) == expected


@pytest.mark.parametrize("changes", [{"checkpoint_every": -5}, {"checkpoint_every": "weekly"},
                                     {"checkpoint_every": True}, {"keep_checkpoints": 0}, {"keep_checkpoints": "all"}])
def test_bad_checkpoint_settings_fail_before_anything_is_written(tmp_path: Path, changes: dict) -> None:
    with pytest.raises(ConfigError, match="checkpoint_every|keep_checkpoints"):
        train(CONFIG | changes, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_resume_continues_only_with_the_config_the_run_started_with(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        train(CONFIG, out=run_dir, quiet=True, callbacks=[CrashAt(12)])
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    (tmp_path / "c.yaml").write_text(json.dumps(CONFIG))

    assert cli(["train", str(tmp_path / "c.yaml"), "--lr", "0.5", "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.01 -> 0.5" in err and f"zerograd resume {run_dir}" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot  # nothing touched

    assert cli(["train", str(tmp_path / "c.yaml"), "--resume", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "summary.json").is_file()


def test_a_new_run_never_writes_over_an_earlier_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        train(CONFIG, out=run_dir, quiet=True, callbacks=[CrashAt(12)])
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a training run.*zerograd resume"):
        train(CONFIG, out=run_dir, quiet=True)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot


def test_a_finished_run_has_nothing_to_resume(tmp_path: Path) -> None:
    train(CONFIG | {"epochs": 1}, out=tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match="finished run"):
        resume(tmp_path / "run", quiet=True)


def test_resuming_a_run_stopped_before_its_first_checkpoint_starts_it_over(tmp_path: Path) -> None:
    config = CONFIG | {"checkpoint_every": None}
    train(config, out=tmp_path / "reference", quiet=True)
    run_dir = tmp_path / "run"

    class CrashInEpoch2(Callback):
        def on_batch_end(self, state: Any) -> None:
            if state.epoch == 1:
                raise Crash

    with pytest.raises(Crash):
        train(config, out=run_dir, quiet=True, callbacks=[CrashInEpoch2()])
    assert len(epoch_lines(run_dir)) == 1 and not checkpoint_dirs(run_dir / "checkpoints")
    with pytest.warns(ZerogradWarning, match="starts from the beginning"):
        resume(run_dir, quiet=True)
    assert epoch_lines(run_dir) == epoch_lines(tmp_path / "reference")  # the killed run's line is not repeated
    assert_same_weights(tmp_path / "reference", run_dir)


def test_metrics_lines_after_the_checkpoint_are_dropped_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "step", "step": 5, "epoch": 0.4}, {"epoch": 1, "train_loss": 0.5},
             {"kind": "step", "step": 15, "epoch": 1.2}, {"kind": "step", "step": 25, "epoch": 1.9},
             {"epoch": 2, "train_loss": 9}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"epoch": 3, "trai')  # cut short by the kill
    runs.rewrite_metrics(path, [{"epoch": 1, "train_loss": 0.5}], global_step=20)
    assert [json.loads(line) for line in path.read_text().splitlines()] == lines[:3]


def test_tied_weights_and_plain_values_round_trip_without_pickle(tmp_path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    value = {"a": (1, 2.5, float("inf")), 3: [None, True, "x"], "t": torch.arange(3), "__odd": {"n": float("nan")}}
    packed = checkpoint_format.pack(value, "", tensors)
    restored = checkpoint_format.unpack(json.loads(json.dumps(packed)), tensors)
    assert restored["a"][:2] == (1, 2.5) and restored["a"][2] == float("inf") and restored[3] == [None, True, "x"]
    assert torch.equal(restored["t"], torch.arange(3)) and restored["__odd"]["n"] != restored["__odd"]["n"]
    with pytest.raises(CheckpointError, match="without pickle"):
        checkpoint_format.pack({"f": print}, "", {})
    layer = torch.nn.Linear(3, 3)
    tied = torch.nn.ModuleDict({"a": layer, "b": layer})
    state = checkpoint_format.unshared(tied.state_dict())
    assert (state["a.weight"].data_ptr() != state["b.weight"].data_ptr()
            and torch.equal(state["a.weight"], state["b.weight"]))


def test_a_checkpoint_with_other_training_options_is_refused(tmp_path: Path) -> None:
    options = dict(epochs=2, batch_size=16, lr=0.01, threads=1)
    x, y = NoisyDataset().x, NoisyDataset().y
    fit(small_classifier(), (x, y), callbacks=[Checkpointer(tmp_path, every=2)], **options)
    with pytest.raises(ConfigError, match="lr 0.01 -> 0.02"):
        fit(small_classifier(), (x, y), callbacks=[ResumeFrom(tmp_path)], **(options | {"lr": 0.02}))
    with pytest.raises(ConfigError, match="batches per epoch"):
        fit(small_classifier(), (x[:60], y[:60]), callbacks=[ResumeFrom(tmp_path)], **options)


FORMAT_1 = Path(__file__).parent / "fixtures" / "checkpoint-format-1"


def test_a_checkpoint_of_format_1_still_resumes_exactly(tmp_path: Path) -> None:
    """A checkpoint from before each part of the state was saved by its owner (format 1, written by
    zerograd at commit b182d77: the run below stopped after step 10, mid-epoch, with a DataLoader,
    early stopping's best weights and on_nan: skip's count in it) resumes bit-identically."""
    options = dict(epochs=3, batch_size=16, lr=0.01, seed=5, accumulate=2, metrics=["accuracy", "f1"],
                   schedule={"name": "plateau", "monitor": "train_loss", "patience": 0}, threads=1,
                   early_stopping={"monitor": "train_loss", "patience": 5}, on_nan="skip")
    assert json.loads((FORMAT_1 / "step-00000009" / "manifest.json").read_text())["version"] == 1
    reference = small_classifier()
    expected = fit(reference, NoisyDataset(), **options)
    shutil.copytree(FORMAT_1, tmp_path / "ckpt")
    model = small_classifier()
    history = fit(model, NoisyDataset(), callbacks=[ResumeFrom(tmp_path / "ckpt")], **options)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values()))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in history.records] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in expected.records]


def test_a_checkpoint_from_a_newer_zerograd_is_refused_in_one_line(tmp_path: Path) -> None:
    shutil.copytree(FORMAT_1, tmp_path / "ckpt")
    manifest = tmp_path / "ckpt" / "step-00000009" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 99'))
    with pytest.raises(CheckpointError, match="written by a newer zerograd \\(checkpoint format 99"):
        fit(small_classifier(), NoisyDataset(), callbacks=[ResumeFrom(tmp_path / "ckpt")], epochs=3, batch_size=16,
            lr=0.01, seed=5, threads=1)


def test_a_finished_run_is_not_offered_a_resume(tmp_path: Path) -> None:
    from zerograd.runs import refuse_existing_run

    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a finished training run; choose another --out") as caught:
        refuse_existing_run(tmp_path)
    assert "resume" not in str(caught.value)
