"""Everything a training run shows and leaves behind besides weights and metrics, in one object
that `api.train` hooks into the loop:

- the header and live progress (`progress: bar|plain|none|notebook`, nothing with `quiet`; in a Jupyter
  notebook `bar` is the notebook's HTML display and live chart, reporting/notebook.py),
- `model_summary.txt` (layers, output shapes, parameter counts, data sizes),
- the experiment trackers of `loggers: [tensorboard, mlflow]` (`tensorboard: true` is the same as
  naming it there), each a `callbacks.loggers.RunLogger`,
- at the end, `metrics.csv` (and `steps.csv`) and the plots in `plots/` (`plots: false` skips them),
  then the trackers get the run's files and summary and end.

The run-level config keys it reads: progress, tensorboard, loggers, mlflow, plots, log_every (a
`"kind": "step"` record in metrics.jsonl every `log_every` optimizer steps; 0 for none).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from zerograd import runs
from zerograd.callbacks.base import Callback
from zerograd.callbacks.loggers import FAILED, FINISHED, RunLogger
from zerograd.errors import ConfigError, WriteError, ZerogradWarning, did_you_mean
from zerograd.files import write_atomic
from zerograd.finetune import frozen_names
from zerograd.reporting.mlflow_tracking import MLflowLogger, client_class, mlflow_settings
from zerograd.reporting.model_summary import ModelSummary, sample_batch, split_sizes, summarize_model
from zerograd.reporting.notebook import progress_display
from zerograd.reporting.progress import check_progress_mode
from zerograd.reporting.tensorboard import TENSORBOARD_DIR, TensorBoardLogger
from zerograd.state import LoopState

DEFAULT_LOG_EVERY = 50
MODEL_SUMMARY = "model_summary.txt"
LOGGERS = ("tensorboard", "mlflow")  # the names `loggers:` and `--logger` take


def reporting_options(config: dict[str, Any], progress: str | None = None) -> dict[str, Any]:
    """The run-level reporting keys of a config, checked, with their defaults filled in."""
    options = {
        "progress": check_progress_mode(progress if progress is not None else config.get("progress", "bar")),
        "tensorboard": config.get("tensorboard", False),
        "plots": config.get("plots", True),
        "log_every": config.get("log_every", DEFAULT_LOG_EVERY),
    }
    for key in ("tensorboard", "plots"):
        if not isinstance(options[key], bool):
            raise ConfigError(f"{key} must be true or false, got {options[key]!r}")
    every = options["log_every"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ConfigError(f"log_every must be a whole number of steps >= 0 (0: no step records), got {every!r}")
    options["loggers"] = logger_names(config.get("loggers"), tensorboard=options["tensorboard"])
    if "mlflow" in options["loggers"]:
        mlflow_settings(config)
        client_class()  # installed
    return options


def logger_names(value: Any, *, tensorboard: bool = False) -> list[str]:
    """`loggers:` checked: a list of names from LOGGERS (or one text, comma-separated), without
    repeats; `tensorboard: true` adds tensorboard."""
    names = value.split(",") if isinstance(value, str) else value if value is not None else []
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"loggers must be a list of names like [mlflow, tensorboard], got {value!r}")
    chosen: list[str] = []
    for name in [n.strip() for n in names if n.strip()] + (["tensorboard"] if tensorboard else []):
        if name not in LOGGERS:
            raise ConfigError(f'unknown logger "{name}"{did_you_mean(name, LOGGERS)}; loggers: {", ".join(LOGGERS)}')
        if name not in chosen:
            chosen.append(name)
    return chosen


class RunReporters(Callback):
    """The reporting callbacks of one `api.train` run. Use as a context manager around `fit` so
    a live progress bar is taken down even when training fails."""

    def __init__(self, config: dict[str, Any], run_dir: str | Path, experiment: Any, *, quiet: bool = False,
                 progress: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.experiment = experiment
        self.options = reporting_options(config, progress)
        data = experiment.data
        sizes = split_sizes(data.train, data.test, config.get("val_split", 0.0) or 0.0, getattr(data, "val", None))
        # freeze / fine_tune: the frozen layers are marked (a pattern that matches nothing fails here, before training)
        frozen = frozen_names(experiment.model, config.get("freeze"), config.get("fine_tune"))
        self.summary: ModelSummary = summarize_model(experiment.model, sample_batch(data.train), sizes, frozen=frozen,
                                                     unfreeze_after=config.get("unfreeze_after"))
        self.printer: Callback | None = None  # a ProgressPrinter, or in a notebook a NotebookProgress
        if not quiet:
            self.printer = progress_display(self.options["progress"], title=config.get("name", ""),
                                            summary=self.summary, samples_per_epoch=sizes.get("train"))
        self.tensorboard: TensorBoardLogger | None = None
        self.loggers: list[RunLogger] = []  # ended by `finish` with the run's files, not when `fit` ends
        for name in self.options["loggers"]:
            self.loggers.append(self.make_logger(name, config))
            self.loggers[-1].ends_with_fit = False

    def make_logger(self, name: str, config: dict[str, Any]) -> RunLogger:
        every = self.options["log_every"]
        if name == "tensorboard":
            self.tensorboard = TensorBoardLogger(self.run_dir / TENSORBOARD_DIR, every_steps=every)
            return self.tensorboard
        return MLflowLogger(self.run_dir, config=config, every_steps=every, **mlflow_settings(config))

    @property
    def log_every(self) -> int:
        return int(self.options["log_every"])

    @property
    def callbacks(self) -> list[Callback]:
        """This object (it writes model_summary.txt), the printer and the loggers."""
        return [c for c in (self, self.printer, *self.loggers) if c is not None]

    def on_fit_start(self, state: LoopState) -> None:
        if state.is_main:
            write_atomic(self.run_dir / MODEL_SUMMARY, self.summary.to_text())

    def finish(self, model: Any, *, device: str = "auto", summary: dict[str, Any] | None = None) -> list[Path]:
        """After training (main process): metrics.csv, steps.csv and the plots, then the loggers get
        the run's files and `summary` and end; returns the plots. A file that cannot be written here
        only warns: weights and summary are saved already, and these are made again from
        metrics.jsonl and the weights."""
        plots = self.write_files(model, device)
        files = [runs.CONFIG, runs.WEIGHTS, runs.SUMMARY, runs.METRICS, "metrics.csv", "steps.csv", MODEL_SUMMARY,
                 "plots"]
        self.end_loggers(FINISHED, summary, [self.run_dir / name for name in files if (self.run_dir / name).exists()])
        return plots

    def write_files(self, model: Any, device: str) -> list[Path]:
        try:
            runs.export_csv(self.run_dir)
            if runs.load_steps(self.run_dir):
                runs.export_csv(self.run_dir, kind="step")
        except WriteError as error:
            warnings.warn(f"{error}; the run itself is saved (weights, summary, metrics.jsonl, of which the CSV files "
                          "are copies)", ZerogradWarning, stacklevel=2)
            return []  # the plots would fail alike
        if not self.options["plots"]:
            return []
        from zerograd.reporting.plots import write_plots_safely  # matplotlib: imported only when plotting

        return write_plots_safely(self.run_dir, model=model, data=self.experiment.data, device=device)

    def end_loggers(self, status: str, summary: dict[str, Any] | None = None,
                    artifacts: list[Path] | None = None) -> None:
        """End the loggers that are still open (those of the main process): with the run's files and
        summary when it finished, as failed when something stopped it before its files were written."""
        for logger in self.loggers:
            logger.finish(status, summary, artifacts or ())

    def close(self) -> None:
        for callback in (self.printer, *self.loggers):
            if callback is not None:
                callback.close()  # type: ignore[attr-defined]

    def __enter__(self) -> RunReporters:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is not None:
            self.end_loggers(FAILED)
        self.close()
