"""MLflow tracking (`loggers: [mlflow]`, `--logger mlflow`): everything read back with MLflow's own
client from the SQLite store the run logged to."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

import zerograd
from zerograd.callbacks.base import Callback
from zerograd.callbacks.loggers import flatten
from zerograd.checkpoint_format import checkpoint_dirs
from zerograd.cli import main
from zerograd.errors import ConfigError, TrainingInterrupted, ZerogradWarning
from zerograd.reporting.mlflow_tracking import MLFLOW_RUN, MLflowLogger, absolute_uri, artifact_root, mlflow_key
from zerograd.state import LoopState

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_outside_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store is the one under test


def logged_run(run_dir: Path) -> tuple[MlflowClient, object]:
    """The MLflow run of a run directory, read from the SQLite store beside it."""
    saved = json.loads((run_dir / MLFLOW_RUN).read_text())
    assert saved["tracking_uri"] == f"sqlite:///{run_dir.resolve().parent / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    return client, client.get_run(saved["run_id"])


def metric_points(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for info in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def test_a_run_logs_params_metrics_artifacts_and_summary_to_mlflow(tmp_path: Path) -> None:
    run = zerograd.train("linear-regression", out=tmp_path / "runs" / "line", quiet=True,
                         overrides={"epochs": 4, "loggers": ["mlflow"]})
    client, logged = logged_run(run.dir)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "line"
    assert client.get_experiment(logged.info.experiment_id).name == "linear-regression"
    # the resolved config, flat, as params
    expected = {k: v if isinstance(v, str) else json.dumps(v) for k, v in flatten(run.config).items()}
    assert logged.data.params == expected
    assert logged.data.params["loggers"] == '["mlflow"]' and logged.data.params["loss.reduction"] == "sum"
    # every epoch's metrics at its optimizer step (one step per epoch here)
    steps, values = zip(*metric_points(client, logged.info.run_id, "train_loss"))
    assert steps == (1, 2, 3, 4) and list(values) == pytest.approx(run.history["train_loss"], rel=1e-6)
    assert [step for step, _ in metric_points(client, logged.info.run_id, "epoch")] == [1, 2, 3, 4]
    # the summary as tags
    assert logged.data.tags["summary.epochs_completed"] == "4"
    assert float(logged.data.tags["summary.final.train_loss"]) == pytest.approx(run.summary["final"]["train_loss"])
    # the run's files as artifacts, in the artifact folder beside the database
    artifacts = artifact_paths(client, logged.info.run_id)
    assert {"config.yaml", "model.safetensors", "summary.json", "metrics.csv", "plots/fit.png"} <= artifacts
    stored = tmp_path / "runs" / "mlartifacts" / logged.info.run_id / "artifacts"
    assert (stored / "model.safetensors").read_bytes() == (run.dir / "model.safetensors").read_bytes()


def test_step_records_are_logged_beside_the_epochs(tmp_path: Path) -> None:
    zerograd.train("sinc-surface", out=tmp_path / "runs" / "sinc", quiet=True,
                   overrides={"epochs": 2, "loggers": "mlflow", "log_every": 5, "plots": False})
    client, logged = logged_run(tmp_path / "runs" / "sinc")
    steps = [json.loads(line) for line in (tmp_path / "runs" / "sinc" / "metrics.jsonl").read_text().splitlines()]
    step_records = [r for r in steps if r.get("kind") == "step"]
    assert step_records  # metrics.jsonl has them, and MLflow the same
    steps, values = zip(*metric_points(client, logged.info.run_id, "lr_step"))
    assert list(steps) == [r["step"] for r in step_records]
    assert list(values) == pytest.approx([r["lr"] for r in step_records])


class SigintAt(Callback):
    """Ctrl-C at one optimizer step, as a user would press it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state: LoopState) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_resumed_run_continues_the_same_mlflow_run_without_duplicates(tmp_path: Path) -> None:
    overrides = {"epochs": 6, "loggers": ["mlflow"], "checkpoint_every": 2, "plots": False}
    run_dir = tmp_path / "runs" / "line"
    with pytest.raises(TrainingInterrupted):
        zerograd.train("linear-regression", out=run_dir, quiet=True, overrides=overrides, callbacks=[SigintAt(4)])
    client, stopped = logged_run(run_dir)
    assert stopped.info.status == "KILLED"
    assert [s for s, _ in metric_points(client, stopped.info.run_id, "train_loss")] == [1, 2, 3, 4]
    # as after kill -9: the newest checkpoint lost, so resuming repeats epochs MLflow has already
    for newer in checkpoint_dirs(run_dir / "checkpoints")[:-1]:
        for file in newer.iterdir():
            file.unlink()
        newer.rmdir()
    assert [d.name for d in checkpoint_dirs(run_dir / "checkpoints")] == ["step-00000002"]
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    client, resumed = logged_run(run_dir)
    assert resumed.info.run_id == stopped.info.run_id and resumed.info.status == "FINISHED"
    assert len(client.search_runs([resumed.info.experiment_id])) == 1
    reference = zerograd.train("linear-regression", out=tmp_path / "reference", quiet=True,
                               overrides={"epochs": 6, "plots": False})
    steps, values = zip(*metric_points(client, resumed.info.run_id, "train_loss"))
    assert steps == (1, 2, 3, 4, 5, 6) and list(values) == pytest.approx(reference.history["train_loss"], rel=1e-6)
    assert zerograd.load_history(run_dir)["train_loss"] == pytest.approx(reference.history["train_loss"], rel=1e-6)
    assert "model.safetensors" in artifact_paths(client, resumed.info.run_id)


def test_cli_logger_flag_trains_fashion_mlp_into_mlflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir() and "ZEROGRAD_DATA" not in os.environ:
        pytest.fail("Fashion-MNIST is needed: sudo apt-get install dataset-fashion-mnist")
    out = tmp_path / "runs" / "fashion"
    args = ["train", "fashion-mlp", "--logger", "mlflow", "--epochs", "1", "--batch-size", "1000", "--quiet",
            "--set", "model.sizes=[784,32,10]", "--set", "precision=fp32", "--out", str(out)]
    assert main(args) == 0
    client, logged = logged_run(out)
    assert logged.info.status == "FINISHED" and logged.data.params["model.sizes"] == "[784, 32, 10]"
    [(step, accuracy)] = metric_points(client, logged.info.run_id, "test_accuracy")
    assert step == 60 and accuracy == pytest.approx(zerograd.load_history(out)["test_accuracy"][0])
    assert {"config.yaml", "model.safetensors", "plots/confusion_matrix.png"} <= artifact_paths(client,
                                                                                                logged.info.run_id)


def test_two_ranks_log_one_mlflow_run(tmp_path: Path) -> None:
    """Under torchrun only rank 0 logs: one MLflow run, each epoch once."""
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "zerograd", "train", "sinc-surface", "--epochs", "2", "--logger", "mlflow",
                          "--set", "plots=false", "--out", str(tmp_path / "runs" / "ddp")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert job.returncode == 0, job.stderr[-3000:]
    client, logged = logged_run(tmp_path / "runs" / "ddp")
    assert len(client.search_runs([logged.info.experiment_id])) == 1
    assert [s for s, _ in metric_points(client, logged.info.run_id, "epoch")] == [13, 26]  # 13 steps an epoch
    assert logged.data.tags["summary.world_size"] == "2"


def test_logger_names_are_checked_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "linear-regression", "--logger", "mlfow", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert 'unknown logger "mlfow" (did you mean "mlflow"?)' in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="loggers must be a list"):
        zerograd.train("linear-regression", out=tmp_path / "run2", quiet=True, overrides={"loggers": 3})
    with pytest.raises(ConfigError, match="unknown mlflow key 'uri'"):
        zerograd.train("linear-regression", out=tmp_path / "run3", quiet=True,
                       overrides={"loggers": ["mlflow"], "mlflow": {"uri": "x"}})
    with pytest.raises(ConfigError, match="unknown mlflow key 'experimnt' \\(did you mean \"experiment\"\\?\\)"):
        zerograd.train("linear-regression", out=tmp_path / "run4", quiet=True,
                       overrides={"loggers": ["mlflow"], "mlflow": {"experimnt": "x"}})


def test_the_cli_takes_repeated_and_comma_separated_loggers(tmp_path: Path) -> None:
    assert main(["train", "linear-regression", "--logger", "mlflow,tensorboard", "--logger", "mlflow", "--quiet",
                 "--epochs", "2", "--set", "plots=false", "--out", str(tmp_path / "runs" / "both")]) == 0
    assert list((tmp_path / "runs" / "both" / "tensorboard").glob("events.out.tfevents.*"))
    client, logged = logged_run(tmp_path / "runs" / "both")
    assert logged.data.params["loggers"] == '["mlflow", "tensorboard"]'


def test_a_tracking_store_that_cannot_be_used_is_one_clear_error(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    assert main(["train", "linear-regression", "--logger", "mlflow", "--set", f"mlflow.tracking_uri={uri}",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerograd: error: the MLflow tracking store") and "mlflow.tracking_uri" in err
    assert len(err.splitlines()) == 1


def test_a_sqlite_store_that_cannot_be_opened_fails_at_once_without_mlflows_retries(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store").mkdir()  # a folder where the database file should be: sqlite cannot open it
    uri = f"sqlite:///{tmp_path / 'store'}"
    assert main(["train", "linear-regression", "--logger", "mlflow", "--set", f"mlflow.tracking_uri={uri}",
                 "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("zerograd: error: the MLflow tracking store") and "unable to open database file" in err
    assert "retried" not in err and len(err.splitlines()) == 1  # not MLflow's two minutes of retry warnings


def test_a_given_tracking_uri_and_experiment_are_used(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    zerograd.train("linear-regression", out=tmp_path / "runs" / "line", quiet=True,
                   overrides={"epochs": 2, "loggers": ["mlflow"], "plots": False,
                              "mlflow": {"tracking_uri": uri, "experiment": "mine"}})
    assert not (tmp_path / "runs" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    [found] = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert found.info.status == "FINISHED" and len(metric_points(client, found.info.run_id, "train_loss")) == 2


def test_a_missing_mlflow_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'zerograd\[mlflow\]'"):
        MLflowLogger(tmp_path)


def test_a_store_failing_during_training_warns_once_and_training_goes_on(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(MlflowClient, "log_batch", broken)
    with pytest.warns(ZerogradWarning, match="MLflow logging stopped: database is locked") as caught:
        run = zerograd.train("linear-regression", out=tmp_path / "runs" / "line", quiet=True,
                             overrides={"epochs": 3, "loggers": ["mlflow"], "plots": False})
    assert len([w for w in caught if issubclass(w.category, ZerogradWarning)]) == 1
    assert len(run.history) == 3 and (run.dir / "model.safetensors").is_file()


def test_a_relative_sqlite_uri_is_kept_absolute_with_its_artifacts_beside_it(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///store/mlflow.db") == f"sqlite:///{tmp_path.resolve() / 'store' / 'mlflow.db'}"
    assert absolute_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert absolute_uri("http://tracking:5000") == "http://tracking:5000"
    assert artifact_root("sqlite:////abs/mlflow.db") == "file:///abs/mlartifacts"
    assert artifact_root("http://tracking:5000") is None


@pytest.mark.parametrize("overrides", [{"loggers": ["mlfow"]}, {"loggers": ["mlflow"], "mlflow": {"uri": "x"}},
                                       {"log_every": -1}])
def test_a_bad_logger_setting_fails_before_any_run_file(tmp_path: Path, overrides: dict) -> None:
    with pytest.raises(ConfigError):
        zerograd.train("linear-regression", out=tmp_path / "run", quiet=True, overrides=overrides)
    assert not (tmp_path / "run").exists()


def test_keys_mlflow_refuses_are_made_acceptable() -> None:
    assert mlflow_key("data.columns.price (€)!") == "data.columns.price ____"
    assert mlflow_key("data.columns.größe") == "data.columns.größe"  # letters of any script are fine
    assert mlflow_key("model.sizes") == "model.sizes" and len(mlflow_key("k" * 300)) == 250
