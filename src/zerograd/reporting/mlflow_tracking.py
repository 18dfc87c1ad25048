"""MLflow tracking for a run (`loggers: [mlflow]` / `--logger mlflow`), an optional extra.

Through MLflow's own client (`MlflowClient`, no global active run): the resolved config as params,
every epoch's record as metrics at its optimizer step (and the step records of `log_every` as
`train_loss_step` / `lr_step`), at the end config.yaml, model.safetensors, summary.json, the metric
files and plots/ as artifacts and the summary as `summary.*` tags. Only the main process (rank 0)
logs.

The store: `mlflow: {tracking_uri: ...}` in the config, else `MLFLOW_TRACKING_URI`, else a SQLite
database beside the run directory (`runs/mlflow.db`, its artifacts in `runs/mlartifacts/`), so the
runs of one folder share one store: `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`. The
experiment is `mlflow: {experiment: ...}`, else the recipe's name.

The run's MLflow id is kept in RUN_DIR/mlflow_run.json, so a resumed run goes on in the same
MLflow run (its metrics after the checkpoint are not logged twice).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zerograd.callbacks.loggers import FAILED, FINISHED, INTERRUPTED, RunInfo, RunLogger, flatten
from zerograd.errors import ConfigError, ZerogradWarning, did_you_mean
from zerograd.files import write_atomic

INSTALL_HINT = "pip install 'zerograd[mlflow]'"
MLFLOW_RUN = "mlflow_run.json"  # the MLflow run id and store of a run directory, for resuming it
DEFAULT_DB, DEFAULT_ARTIFACTS = "mlflow.db", "mlartifacts"
SETTINGS = ("tracking_uri", "experiment")
STATUS = {FINISHED: "FINISHED", INTERRUPTED: "KILLED", FAILED: "FAILED"}
# MLflow's limits: a param's value, a tag's value, params per call
MAX_PARAM, MAX_TAG, PARAMS_PER_CALL = 6000, 8000, 100


def client_class() -> Any:
    """`mlflow.MlflowClient`, or a clear error when MLflow is not installed."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(f"loggers: [mlflow] needs MLflow: {INSTALL_HINT}") from None
    return MlflowClient


def mlflow_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's `mlflow:` section, checked: `tracking_uri` and `experiment` (text or null)."""
    section = config.get("mlflow") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"mlflow must be a section like {{tracking_uri: sqlite:///mlflow.db}}, got {section!r}")
    unknown = [key for key in section if key not in SETTINGS]
    if unknown:
        raise ConfigError(f"unknown mlflow key {unknown[0]!r}{did_you_mean(str(unknown[0]), SETTINGS)}; valid keys: "
                          f"{', '.join(SETTINGS)}")
    for key in SETTINGS:
        if section.get(key) is not None and not isinstance(section[key], str):
            raise ConfigError(f"mlflow.{key} must be text, got {section[key]!r}")
    return {key: section.get(key) for key in SETTINGS}


def default_tracking_uri(run_dir: str | Path) -> str:
    """`MLFLOW_TRACKING_URI` when set, else a SQLite database beside the run directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(run_dir).resolve().parent / DEFAULT_DB)}"


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///FILE` URI, made absolute (`sqlite:///x.db` is relative to
    the current folder, `sqlite:////abs/x.db` absolute); None for other stores."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite" or len(parsed.path) < 2 or parsed.path == "/:memory:":
        return None
    return Path(parsed.path[1:]).resolve()


def absolute_uri(tracking_uri: str) -> str:
    """A local SQLite URI with an absolute path, so a run resumed from another folder finds its store."""
    file = sqlite_file(tracking_uri)
    return f"sqlite:///{file}" if file is not None and "?" not in tracking_uri else tracking_uri


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment in a local SQLite store keeps its artifacts: beside the database (MLflow's
    own default is ./mlruns of whatever folder the command ran in). Other stores choose their own."""
    file = sqlite_file(tracking_uri)
    return (file.parent / DEFAULT_ARTIFACTS).as_uri() if file is not None else None


def open_sqlite(tracking_uri: str) -> None:
    """Open a local SQLite store once, directly: MLflow retries a database it cannot open for about
    two minutes, printing a warning each time, before it gives up."""
    file = sqlite_file(tracking_uri)
    if file is None:
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(file)) as connection:
        connection.execute("pragma schema_version")


@contextlib.contextmanager
def quiet_store() -> Iterator[None]:
    """MLflow and alembic say at INFO level that they create the database's tables; keep that off
    the run's output (the levels are put back after)."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class MLflowLogger(RunLogger):
    """Logs a run to MLflow (see the module's text). A store that cannot be opened at the start is a
    `ConfigError` before any step trains; a failure later only warns once and stops logging, as
    the run's own files hold everything MLflow would."""

    def __init__(self, run_dir: str | Path, *, config: Mapping[str, Any] | None = None, tracking_uri: str | None = None,
                 experiment: str | None = None, every_steps: int = 0) -> None:
        super().__init__(every_steps=every_steps, config=config)
        self.client_class = client_class()  # fail before training, not after an epoch
        self.run_dir = Path(run_dir)
        self.tracking_uri = absolute_uri(tracking_uri or default_tracking_uri(self.run_dir))
        self.experiment = experiment or str((config or {}).get("name") or "zerograd")
        self.client: Any = None
        self.run_id: str | None = None
        self.continued = False
        self._logged_up_to: dict[str, int] = {}  # a continued run's newest step of each metric

    # --- the protocol -----------------------------------------------------------------------
    def start(self, run: RunInfo) -> None:
        saved = self.saved_run()
        uri = saved.get("tracking_uri", self.tracking_uri)  # a resumed run stays in the store it began in
        try:
            with quiet_store():
                open_sqlite(uri)
                self.client = self.client_class(tracking_uri=uri)
                if saved.get("run_id"):
                    self.run_id = str(saved["run_id"])
                    self.continued = True
                    self.client.update_run(self.run_id, status="RUNNING")
                    self._logged_up_to = self.newest_steps()
                else:
                    self.run_id = self.create_run()
        except Exception as error:  # MLflow raises its own and its stores' errors (SQLAlchemy, HTTP, OS)
            self.client = None
            raise ConfigError(f"the MLflow tracking store {uri} could not be used ({first_line(error)}); "
                              "set mlflow.tracking_uri to a store you can reach (or leave it out for "
                              f"sqlite beside the run directory), or drop mlflow from loggers") from None
        self.tracking_uri = uri
        write_atomic(self.run_dir / MLFLOW_RUN, json.dumps({"run_id": self.run_id, "tracking_uri": uri,
                                                             "experiment": self.experiment}, indent=2) + "\n")

    def log_params(self, params: dict[str, Any]) -> None:
        if self.continued:  # logged when the run began; MLflow's params cannot change
            return
        from mlflow.entities import Param

        items = [Param(mlflow_key(key), text(value, MAX_PARAM)) for key, value in params.items()]
        for first in range(0, len(items), PARAMS_PER_CALL):
            self.call("log_batch", self.run_id, params=items[first:first + PARAMS_PER_CALL])

    def log_metrics(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None:
        from mlflow.entities import Metric

        suffix = "" if kind == "epoch" else f"_{kind}"
        now = int(time.time() * 1000)
        entries = [Metric(f"{key}{suffix}", float(value), now, step) for key, value in metrics.items()
                   if key != "step" and not isinstance(value, bool) and isinstance(value, (int, float))
                   and step > self._logged_up_to.get(f"{key}{suffix}", -1)]
        if entries:
            self.call("log_batch", self.run_id, metrics=entries)

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        for path in paths:
            if path.is_dir():
                self.call("log_artifacts", self.run_id, str(path), path.name)
            elif path.is_file():
                self.call("log_artifact", self.run_id, str(path))

    def end(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        if summary:
            from mlflow.entities import RunTag

            tags = [RunTag(mlflow_key(f"summary.{key}"), text(value, MAX_TAG))
                    for key, value in flatten(summary).items()]
            self.call("log_batch", self.run_id, tags=tags)
        self.call("set_terminated", self.run_id, STATUS.get(status, "FAILED"))
        self.client = None

    # --- helpers ----------------------------------------------------------------------------
    def saved_run(self) -> dict[str, Any]:
        """RUN_DIR/mlflow_run.json of an earlier start of this run (empty when there is none)."""
        try:
            saved = json.loads((self.run_dir / MLFLOW_RUN).read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def create_run(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            experiment_id = self.client.create_experiment(self.experiment,
                                                          artifact_location=artifact_root(self.tracking_uri))
        created = self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                         tags={"zerograd.run_dir": str(self.run_dir.resolve())})
        return str(created.info.run_id)

    def newest_steps(self) -> dict[str, int]:
        """The newest step logged of each metric of the run being continued."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {key: max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
                for key in keys}

    def call(self, method: str, *args: Any, **kwargs: Any) -> None:
        """One call of the client's `method`; a failure warns once and stops the logging (the run's
        own files have it all)."""
        if self.client is None:
            return
        try:
            getattr(self.client, method)(*args, **kwargs)
        except Exception as error:  # MLflow's own errors and its stores' (SQLAlchemy, HTTP, OS)
            self.client = None
            warnings.warn(f"MLflow logging stopped: {first_line(error)} (run {self.run_id} in {self.tracking_uri}); "
                          "training goes on, and metrics.jsonl has every record", ZerogradWarning, stacklevel=2)

    def close(self) -> None:
        """Nothing to release: the client holds no open run (the run is ended by `end`)."""


def mlflow_key(key: str) -> str:
    """A name MLflow accepts (letters, digits, `_ - . / :` and spaces, 250 at most): a config key of
    the user's own (a column name) may hold anything."""
    return re.sub(r"[^\w./: -]", "_", key)[:250]


def text(value: Any, limit: int) -> str:
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
