"""History as plain data: step records in metrics.jsonl, one-call loading, CSV export."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import zerograd
from zerograd import runs
from zerograd.errors import RunDirError


def fit_with_writer(run_dir: Path, data, *, every_steps: int, epochs: int = 2, batch_size: int = 10, **options):
    x, y = data
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return zerograd.fit(model, (x, y), epochs=epochs, batch_size=batch_size, lr=0.01, device="cpu",
                        callbacks=[runs.MetricsWriter(run_dir, every_steps=every_steps)], **options)


def test_step_records_every_n_steps_average_to_the_epoch_loss(tmp_path: Path, tiny_classification) -> None:
    history = fit_with_writer(tmp_path, tiny_classification, every_steps=5)  # 30 steps per epoch
    steps = runs.load_steps(tmp_path)
    assert [s["step"] for s in steps] == list(range(5, 61, 5))
    assert [s["epoch"] for s in steps] == pytest.approx([k / 6 for k in range(1, 13)])
    assert all(s["kind"] == "step" and s["lr"] == 0.01 for s in steps)
    for epoch, record in enumerate(history.records):  # six equal windows per epoch: their mean is the epoch's loss
        windows = [s["train_loss"] for s in steps[6 * epoch: 6 * epoch + 6]]
        assert sum(windows) / 6 == pytest.approx(record["train_loss"], rel=1e-5)


def test_load_history_skips_step_records(tmp_path: Path, tiny_classification) -> None:
    history = fit_with_writer(tmp_path, tiny_classification, every_steps=5)
    lines = [json.loads(line) for line in (tmp_path / runs.METRICS).read_text().splitlines()]
    assert len(lines) == 2 + 12
    loaded = zerograd.load_history(tmp_path)
    assert loaded.records == history.records  # JSON keeps floats exactly
    assert loaded["epoch"] == [1, 2]


def test_no_step_records_when_an_epoch_is_shorter_than_the_interval(tmp_path: Path, tiny_classification) -> None:
    fit_with_writer(tmp_path, tiny_classification, every_steps=50)  # 30 steps per epoch
    assert runs.load_steps(tmp_path) == []


def test_step_records_count_optimizer_steps_with_accumulation(tmp_path: Path, tiny_classification) -> None:
    fit_with_writer(tmp_path, tiny_classification, every_steps=5, epochs=1, accumulate=3)  # 30 batches, 10 steps
    assert [s["step"] for s in runs.load_steps(tmp_path)] == [5, 10]


def test_export_csv_holds_the_same_numbers_as_metrics_jsonl(tmp_path: Path, tiny_classification) -> None:
    history = fit_with_writer(tmp_path, tiny_classification, every_steps=10)
    path = runs.export_csv(tmp_path)
    assert path == tmp_path / "metrics.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(history.records[0])  # the columns in record order
    for row, record in zip(rows, history.records, strict=True):
        assert {k: float(v) for k, v in row.items()} == pytest.approx(record)
    step_path = runs.export_csv(tmp_path, kind="step")
    with step_path.open(newline="") as handle:
        step_rows = list(csv.DictReader(handle))
    assert step_path.name == "steps.csv" and [int(r["step"]) for r in step_rows] == [10, 20, 30, 40, 50, 60]
    assert "kind" not in step_rows[0]


def test_train_writes_metrics_csv_and_steps_csv(image_run: Path) -> None:
    assert (image_run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr,train_loss")
    assert len((image_run / "metrics.csv").read_text().splitlines()) == 1 + 2
    assert len((image_run / "steps.csv").read_text().splitlines()) == 1 + 8  # 16 steps, every 2


def test_missing_history_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="metrics.jsonl does not exist"):
        runs.export_csv(tmp_path)


def test_a_resumed_run_keeps_the_step_grid(tmp_path: Path) -> None:
    from zerograd.accelerator import Accelerator
    from zerograd.options import FitOptions
    from zerograd.state import EpochTotals, LoopState

    model = torch.nn.Linear(2, 1)
    totals = EpochTotals("cpu", [])
    state = LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1), Accelerator(torch.device("cpu")),
                      FitOptions(epochs=3), batches_per_epoch=100, totals=totals)
    writer = runs.MetricsWriter(tmp_path, every_steps=50)
    writer.on_fit_start(state)
    state.global_step, state.epoch, state.batch = 134, 1, 34  # restored from a checkpoint mid-epoch
    totals.load_state_dict({"loss_sum": torch.tensor(34.0), "count": 34, "metrics": []})  # loss 1.0 per sample so far
    writer.on_epoch_start(state)
    for _ in range(20):
        state.global_step += 1
        state.batch += 1
        totals.record(torch.tensor(3.0), torch.zeros(1), torch.zeros(1))
        writer.on_batch_end(state)
    (record,) = runs.load_steps(tmp_path)
    assert record["step"] == 150 and record["train_loss"] == pytest.approx(3.0)  # only the steps since the restart
