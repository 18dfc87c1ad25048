"""The logger protocol (`callbacks.loggers.RunLogger`): one interface for the run's own files,
TensorBoard, MLflow and a logger of your own, driven by `fit` and by `zerograd.train`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import zerograd
from zerograd import runs
from zerograd.callbacks.loggers import RunInfo, RunLogger, flatten
from zerograd.errors import ConfigError
from zerograd.reporting.run_reporters import logger_names


class Recorder(RunLogger):
    """Writes down every call of the protocol."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, Any]] = []

    def start(self, run: RunInfo) -> None:
        self.calls.append(("start", run.resumed))

    def log_params(self, params: dict[str, Any]) -> None:
        self.calls.append(("params", params))

    def log_metrics(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None:
        self.calls.append((kind, step))

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        self.calls.append(("artifacts", sorted(p.name for p in paths)))

    def end(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        self.calls.append(("end", status, None if summary is None else summary["epochs_completed"]))


def test_fit_drives_a_logger_through_the_protocol(tiny_classification) -> None:
    x, y = tiny_classification
    logger = Recorder(every_steps=4)
    zerograd.fit(torch.nn.Linear(8, 3), (x, y), epochs=2, batch_size=10, device="cpu", callbacks=[logger])
    names = [call[0] for call in logger.calls]
    assert names[:2] == ["start", "params"] and names[-1] == "end" and logger.calls[-1] == ("end", "finished", None)
    assert logger.calls[0] == ("start", False)
    assert logger.calls[1][1]["batch_size"] == 10  # without a config: the fit options
    per_epoch = -(-len(x) // 10)
    assert [c[1] for c in logger.calls if c[0] == "epoch"] == [per_epoch, 2 * per_epoch]
    assert [c[1] for c in logger.calls if c[0] == "step"] == list(range(4, 2 * per_epoch + 1, 4))


def test_the_runs_own_loggers_get_the_files_and_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Recorder] = []

    def make(self: Any, name: str, config: dict[str, Any]) -> RunLogger:
        made.append(Recorder(config=config))
        return made[-1]

    monkeypatch.setattr("zerograd.reporting.run_reporters.RunReporters.make_logger", make)
    zerograd.train("linear-regression", out=tmp_path / "run", quiet=True,
                   overrides={"epochs": 2, "loggers": ["tensorboard"]})
    [logger] = made
    assert logger.calls[-2] == ("artifacts", ["config.yaml", "metrics.csv", "metrics.jsonl", "model.safetensors",
                                              "model_summary.txt", "plots", "summary.json"])
    assert logger.calls[-1] == ("end", "finished", 2)
    assert logger.calls[1][1]["loggers"] == '["tensorboard"]'  # the resolved config, flattened


def test_metrics_writer_is_a_logger_that_ends_with_the_csv_copies(tmp_path: Path, tiny_classification) -> None:
    x, y = tiny_classification
    writer = runs.MetricsWriter(tmp_path)
    assert isinstance(writer, RunLogger)
    zerograd.fit(torch.nn.Linear(8, 3), (x, y), epochs=2, batch_size=10, device="cpu", callbacks=[writer])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3  # the header and two epochs


def test_logger_names_are_checked() -> None:
    assert logger_names(None) == [] and logger_names("mlflow, tensorboard") == ["mlflow", "tensorboard"]
    assert logger_names(["mlflow"], tensorboard=True) == ["mlflow", "tensorboard"]
    assert logger_names(["tensorboard"], tensorboard=True) == ["tensorboard"]
    with pytest.raises(ConfigError, match='unknown logger "wandb"'):
        logger_names(["wandb"])
    with pytest.raises(ConfigError, match="loggers must be a list"):
        logger_names({"mlflow": True})


def test_flatten_gives_dotted_keys_and_json_lists() -> None:
    assert flatten({"model": {"sizes": [784, 10], "name": "mlp"}, "lr": 0.1, "schedule": None, "empty": {}}) == {
        "model.sizes": "[784, 10]", "model.name": "mlp", "lr": 0.1, "schedule": None, "empty": "{}"}
