"""Comparing runs: config differences only, final metrics, best first, overlaid curves."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from zerograd import runs
from zerograd.cli import main
from zerograd.errors import ConfigError, RunDirError
from zerograd.reporting.compare import choose_metric, compare_runs, config_differences, higher_is_better


def test_runs_are_ranked_best_first_by_the_main_metric(line_runs: list[Path]) -> None:
    rows = compare_runs(line_runs)
    losses = [runs.read_summary(p)["final"]["train_loss"] for p in line_runs]
    assert rows[0].metric == "train_loss" and not rows[0].higher_is_better  # regression: lower loss first
    assert [r.value for r in rows] == sorted(losses)
    assert all(set(r.differences) == {"lr"} for r in rows)  # name, progress, ... are not differences
    assert {r.differences["lr"] for r in rows} == {0.001, 0.01, 0.02}
    assert rows[-1].differences["lr"] == 0.001  # the smallest lr has not fitted the line in 30 epochs


def test_only_the_keys_that_differ_are_shown() -> None:
    a = {"name": "a", "lr": 0.1, "model": {"name": "mlp", "sizes": [2, 4, 1]}, "loss": "mse", "progress": "plain"}
    b = {"name": "b", "lr": 0.1, "model": {"name": "mlp", "sizes": [2, 8, 1]}, "loss": {"name": "mse"}}
    assert config_differences([a, b]) == [{"model.sizes": [2, 4, 1]}, {"model.sizes": [2, 8, 1]}]


def test_classification_is_ranked_by_validation_accuracy_when_every_run_has_it() -> None:
    finals = [{"val_accuracy": 0.8, "test_accuracy": 0.7}, {"val_accuracy": 0.9, "test_accuracy": 0.6}]
    assert choose_metric(finals, "classification") == "val_accuracy" and higher_is_better("val_accuracy")
    assert choose_metric([{"test_accuracy": 0.7}, {"val_accuracy": 0.9, "test_accuracy": 0.6}],
                         "classification") == "test_accuracy"
    assert choose_metric([{"train_loss": 0.1, "test_loss": 0.2}], "regression") == "test_loss"


def test_compare_command_prints_the_table_and_writes_the_overlay(line_runs: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "overlay.png"
    assert main(["compare", *map(str, line_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 runs, best first by train_loss (lower is better)" in printed
    order = [printed.index(name) for name in ("line-lr0.02", "line-lr0.01", "line-lr0.001")]
    assert order == sorted(order)
    assert f"overlay plot: {out}" in printed
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 600


def test_compare_in_a_terminal_narrower_than_the_table_keeps_every_cell_whole(line_runs: list[Path], tmp_path: Path,
                                                                             capsys, monkeypatch) -> None:
    # rich squeezed each column to a letter or two in an 80-column terminal: headers read down, one letter a line
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes stdout for a terminal, COLUMNS wide
    monkeypatch.setenv("COLUMNS", "40")
    assert main(["compare", *map(str, line_runs), "--out", str(tmp_path / "c.png")]) == 0
    printed = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out)
    header = next(line for line in printed.splitlines() if " run " in line)
    assert all(name in header for name in ("train_loss", "epochs done", " lr ")), printed
    assert all(any(name in line for line in printed.splitlines()) for name in ("line-lr0.001", "line-lr0.02")), printed


def test_compare_a_folder_of_runs_as_json_with_the_default_plot_path(line_runs: list[Path], capsys) -> None:
    folder = line_runs[0].parent
    assert main(["compare", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["runs"]) == 3 and result["plot"] == str(folder / "compare.png")  # beside the runs
    assert Path(result["plot"]).is_file()


def test_unknown_metric_and_missing_runs_are_clear_errors(line_runs: list[Path], tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match='did you mean "train_loss"'):
        compare_runs(line_runs, metric="train_los")
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(RunDirError, match="neither a run directory"):
        compare_runs([tmp_path])
