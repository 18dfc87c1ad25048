"""A file that cannot be written (full disk, read-only folder) ends as one line that names it, says
what is safe and how to go on, never as a traceback; nothing already saved is lost.

The failures are injected (the tests run as root, whom a read-only chmod does not stop): a write
of a chosen file raises the OSError a full disk or a read-only file system raises."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from zerograd import api, checkpoint_format, files, runs
from zerograd.cli import main as cli
from zerograd.errors import WriteError

CONFIG: dict[str, Any] = {
    "name": "line", "data": {"dataset": "line"}, "model": {"name": "linear", "in_features": 1, "out_features": 1},
    "loss": {"name": "mse", "reduction": "sum"}, "optimizer": "sgd", "lr": 0.01, "batch_size": 3, "epochs": 6,
    "shuffle": False, "progress": "none", "plots": False, "log_every": 0, "checkpoint_every": "epoch",
}
FULL = (errno.ENOSPC, "No space left on device")
READ_ONLY = (errno.EROFS, "Read-only file system")


def config_file(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(json.dumps(CONFIG | changes))
    return path


def fail_atomic_writes(monkeypatch: pytest.MonkeyPatch, *names: str, error: tuple[int, str] = FULL) -> None:
    """Writing any of `names` (through runs.write_atomic's temp file) fails like a full disk."""
    real = tempfile.mkstemp

    def mkstemp(*args: Any, prefix: str = "", **kwargs: Any) -> Any:
        if any(prefix == f".{name}." for name in names):
            raise OSError(*error)
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def fail_appends(monkeypatch: pytest.MonkeyPatch, name: str, *, after: int, error: tuple[int, str] = FULL) -> None:
    """Appending to a file called `name` works `after` times, then fails."""
    real, calls = Path.open, [0]

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.name == name and "a" in mode:
            calls[0] += 1
            if calls[0] > after:
                raise OSError(*error)
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    assert err.startswith("zerograd: error: "), err
    return err.removeprefix("zerograd: error: ")


# --- the start of a run --------------------------------------------------------------------------

@pytest.mark.parametrize("error", [FULL, READ_ONLY])
def test_a_run_that_cannot_write_its_config_stops_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  error: tuple[int, str]) -> None:
    fail_atomic_writes(monkeypatch, "config.yaml", error=error)
    run_dir = tmp_path / "run"
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir)]) == 2
    assert one_line_error(capsys) == (
        f"could not write {run_dir / 'config.yaml'}: {error[1]}; nothing was trained yet. Free some disk space "
        "(or choose a writable --out), then run the command again")
    assert not (run_dir / "metrics.jsonl").exists()


def test_a_run_whose_folder_cannot_be_made_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    real = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name == "run":
            raise OSError(*READ_ONLY)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert cli(["train", str(config_file(tmp_path)), "--out", str(tmp_path / "run")]) == 2
    assert one_line_error(capsys) == (f"could not write {tmp_path / 'run'}: Read-only file system; nothing was "
                                      "written; choose a writable --out (or free some disk space)")


# --- during training -----------------------------------------------------------------------------

@pytest.mark.parametrize("error", [FULL, READ_ONLY])
def test_a_metrics_append_that_fails_saves_a_checkpoint_and_the_run_resumes_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        error: tuple[int, str]) -> None:
    config = config_file(tmp_path, checkpoint_every=None)  # no checkpoint but the one the failure asks for
    reference = api.train(str(config), out=tmp_path / "reference", quiet=True)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        fail_appends(patch, "metrics.jsonl", after=3, error=error)  # epoch 4's record cannot be appended
        assert cli(["train", str(config), "--out", str(run_dir), "--quiet"]) == 2
    saved = run_dir / "checkpoints" / "step-00000004"
    assert one_line_error(capsys) == (
        f"could not write {run_dir / 'metrics.jsonl'}: {error[1]}; training stopped at step 4 (the end of epoch 4) "
        f"and saved checkpoint {saved}. Free some disk space (or make the folder writable), then continue with "
        f"`zerograd resume {run_dir}`")
    assert checkpoint_format.problem_with(saved) is None

    assert cli(["resume", str(run_dir), "--quiet"]) == 0  # space freed
    assert [r["epoch"] for r in runs.load_history(run_dir).records] == [1, 2, 3, 4, 5, 6]
    assert torch.equal(load_file(str(run_dir / "model.safetensors"))["weight"], reference.model.weight.detach())


def test_when_the_rescue_checkpoint_fails_too_both_failures_are_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    fail_appends(monkeypatch, "metrics.jsonl", after=3)
    real_write, writes = checkpoint_format.write_file, []

    def write(path: Path, content: Any) -> None:
        writes.append(path)
        if len(writes) > 3 * 4:  # epochs 1-3 are checkpointed (4 files each); the disk is full after
            raise OSError(*FULL)
        real_write(path, content)

    monkeypatch.setattr(checkpoint_format, "write_file", write)
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"could not write {run_dir / 'metrics.jsonl'}: No space left on device; "
                          "could not write checkpoint step-00000004")
    assert "the previous checkpoint step-00000003 is intact" in err and f"zerograd resume {run_dir}" in err


def test_a_model_summary_that_cannot_be_written_names_the_newest_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fail_atomic_writes(monkeypatch, "model_summary.txt", error=READ_ONLY)
    run_dir = tmp_path / "run"
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir)]) == 2
    assert one_line_error(capsys) == (
        f"could not write {run_dir / 'model_summary.txt'}: Read-only file system; no checkpoint was written yet, so "
        f"resuming starts over. Free some disk space (or make the folder writable), then continue with "
        f"`zerograd resume {run_dir}`")


def test_tensorboard_files_that_cannot_be_written_only_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    def flush(self: Any) -> None:
        raise OSError(*FULL)

    monkeypatch.setattr(SummaryWriter, "flush", flush)
    run_dir = tmp_path / "run"
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir), "--tensorboard", "--quiet"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == (f"zerograd: warning: could not write TensorBoard files in {run_dir / 'tensorboard'}: No space left "
                   "on device; TensorBoard logging stopped, training goes on (metrics.jsonl has the same numbers)")
    assert (run_dir / "model.safetensors").is_file() and len(runs.load_history(run_dir)) == 6


# --- the end of a run ----------------------------------------------------------------------------

def test_final_weights_that_cannot_be_written_are_in_the_last_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        fail_atomic_writes(patch, "model.safetensors")
        assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir), "--quiet"]) == 2
    last = run_dir / "checkpoints" / "step-00000006"
    assert one_line_error(capsys) == (
        f"could not write {run_dir / 'model.safetensors'}: No space left on device; the trained weights are in "
        f"checkpoint {last}. Free some disk space (or make the folder writable), then continue with "
        f"`zerograd resume {run_dir}` to write the run's files from it")
    trained = load_file(str(last / "model.safetensors"))["weight"]
    assert cli(["resume", str(run_dir), "--quiet"]) == 0
    assert torch.equal(load_file(str(run_dir / "model.safetensors"))["weight"], trained)
    assert (run_dir / "summary.json").is_file() and len(runs.load_history(run_dir)) == 6


@pytest.mark.parametrize(("every", "expected"), [
    (4, "the newest checkpoint, {run}/checkpoints/step-00000004, is from step 4 of 6. Free some disk space (or make "
        "the folder writable), then continue with `zerograd resume {run}` to train the rest again from it"),
    (None, "no checkpoint holds the trained weights (checkpoints: only when stopped by a signal), so the training must "
           "be done again: free some disk space (or make the folder writable), then continue with "
           "`zerograd resume {run}` (it starts over)"),
])
def test_final_weights_that_cannot_be_written_say_how_much_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], every: Any,
        expected: str) -> None:
    fail_atomic_writes(monkeypatch, "model.safetensors")
    run_dir = tmp_path / "run"
    assert cli(["train", str(config_file(tmp_path, checkpoint_every=every)), "--out", str(run_dir), "--quiet"]) == 2
    assert one_line_error(capsys) == (f"could not write {run_dir / 'model.safetensors'}: No space left on device; "
                                      + expected.format(run=run_dir))


def test_a_summary_that_cannot_be_written_says_the_weights_are_safe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fail_atomic_writes(monkeypatch, "summary.json")
    run_dir = tmp_path / "run"
    assert cli(["train", str(config_file(tmp_path)), "--out", str(run_dir), "--quiet"]) == 2
    assert one_line_error(capsys) == (
        f"could not write {run_dir / 'summary.json'}: No space left on device; the trained weights are safe in "
        f"{run_dir / 'model.safetensors'}. Free some disk space (or make the folder writable), then continue with "
        f"`zerograd resume {run_dir}` to finish the run's files")
    monkeypatch.undo()
    assert cli(["resume", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "summary.json").is_file()


@pytest.mark.parametrize(("name", "warning"), [
    ("curves.png", "could not write {run}/plots/curves.png: No space left on device; the run itself is saved: draw "
                   "its plots later with `zerograd plot {run}`"),
    ("metrics.csv", "could not write {run}/metrics.csv: No space left on device; the run itself is saved (weights, "
                    "summary, metrics.jsonl, of which the CSV files are copies)"),
])
def test_plots_and_csv_that_cannot_be_written_only_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], name: str,
                                                        warning: str) -> None:
    fail_atomic_writes(monkeypatch, name)
    run_dir = tmp_path / "run"
    assert cli(["train", str(config_file(tmp_path, plots=True)), "--out", str(run_dir), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == "zerograd: warning: " + warning.format(run=run_dir)
    assert "run directory:" in out
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "summary.json").is_file()


# --- the other commands that write files ---------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    api.train(CONFIG | {"checkpoint_every": None}, out=run_dir, quiet=True)
    return run_dir


@pytest.mark.parametrize(("command", "written"), [
    (["plot", "{run}", "--out", "{out}"], "{out}/curves.png"),
    (["report", "{run}", "--out", "{out}/report.html"], "{out}/report.html"),
    (["compare", "{run}", "--out", "{out}/compare.png"], "{out}/compare.png"),
    (["export", "{run}", "--format", "torchscript", "--out", "{out}/model.pt"], "{out}/model.pt"),
    (["lr-find", "linear-regression", "--steps", "5", "--out", "{out}"], "{out}/lr_find.png"),
])
def test_every_command_that_writes_reports_a_failed_write_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], finished_run: Path,
        command: list[str], written: str) -> None:
    out = tmp_path / "out"
    fail_atomic_writes(monkeypatch, Path(written).name, error=READ_ONLY)
    assert cli([part.format(run=finished_run, out=out) for part in command]) == 2
    assert one_line_error(capsys) == f"could not write {written.format(out=out)}: Read-only file system"


def test_a_sweep_whose_results_cannot_be_written_keeps_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", str(config_file(tmp_path, epochs=2)), "--grid", "lr=0.01,0.02", "--out", str(sweep_dir), "--quiet"]
    with monkeypatch.context() as patch:
        fail_atomic_writes(patch, "results.csv")
        assert cli(args) == 2
    assert one_line_error(capsys) == (
        f"could not write {sweep_dir / 'results.csv'}: No space left on device; the finished runs are kept: free some "
        "disk space (or make the folder writable), then run the same command again (finished runs are not trained "
        "again)")
    trained = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/model.safetensors")}
    assert len(trained) == 2
    assert cli(args) == 0
    assert (sweep_dir / "results.csv").is_file()
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/model.safetensors")} == trained  # not trained again


def test_a_metrics_file_cut_short_by_a_full_disk_still_plots(tmp_path: Path, finished_run: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.safetensors"):
        (run_dir / name).write_bytes((finished_run / name).read_bytes())
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"epoch": 7, "lr": 0.01, "train_lo')  # the append the disk had no room for
    assert cli(["plot", str(run_dir)]) == 0
    assert len(runs.load_history(run_dir)) == 6
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('\n{"epoch": 8}\n')  # damage in the middle is not a crash: it is named
    assert cli(["plot", str(run_dir)]) == 2
    assert "metrics.jsonl, line 7, is not valid JSON" in one_line_error(capsys)


def test_write_errors_are_os_errors_with_the_errno(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_atomic_writes(monkeypatch, "a.txt")
    with pytest.raises(WriteError) as caught:
        files.write_atomic(tmp_path / "a.txt", "x")
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"could not write {tmp_path / 'a.txt'}: No space left on device"
    assert os.listdir(tmp_path) == []


def test_a_step_record_that_fails_mid_epoch_stops_at_a_step_and_resumes_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, batch_size=1, log_every=1, checkpoint_every=None)  # 3 steps an epoch
    reference = api.train(str(config), out=tmp_path / "reference", quiet=True)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        fail_appends(patch, "metrics.jsonl", after=4)  # steps 1-3, epoch 1's record; step 4's fails
        assert cli(["train", str(config), "--out", str(run_dir), "--quiet"]) == 2
    saved = f"training stopped at step 4 (epoch 2) and saved checkpoint {run_dir}/checkpoints/step-00000004"
    assert saved in one_line_error(capsys)
    assert cli(["resume", str(run_dir), "--quiet"]) == 0
    assert [r["step"] for r in runs.load_steps(run_dir)] == list(range(1, 19))
    assert torch.equal(load_file(str(run_dir / "model.safetensors"))["weight"], reference.model.weight.detach())
