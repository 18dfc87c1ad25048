"""Everything a training run shows and leaves behind besides weights and metrics, in one object
that `api.train` hooks into the loop:

- the header and live progress (`progress: bar|plain|none|notebook`, nothing with `quiet`; in a Jupyter
  notebook `bar` is the notebook's HTML display and live chart, reporting/notebook.py),
- `model_summary.txt` (layers, output shapes, parameter counts, data sizes),
- TensorBoard event files (`tensorboard: true`),
- at the end, `metrics.csv` (and `steps.csv`) and the plots in `plots/` (`plots: false` skips them).

The run-level config keys it reads: progress, tensorboard, plots, log_every (a `"kind": "step"`
record in metrics.jsonl every `log_every` optimizer steps; 0 for none).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from zerograd import runs
from zerograd.callbacks.base import Callback
from zerograd.errors import ConfigError, WriteError, ZerogradWarning
from zerograd.files import write_atomic
from zerograd.reporting.model_summary import ModelSummary, sample_batch, split_sizes, summarize_model
from zerograd.reporting.notebook import progress_display
from zerograd.reporting.progress import check_progress_mode
from zerograd.reporting.tensorboard import TENSORBOARD_DIR, TensorBoardLogger
from zerograd.state import LoopState

DEFAULT_LOG_EVERY = 50
MODEL_SUMMARY = "model_summary.txt"


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
    return options


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
        self.summary: ModelSummary = summarize_model(experiment.model, sample_batch(data.train), sizes)
        self.printer: Callback | None = None  # a ProgressPrinter, or in a notebook a NotebookProgress
        if not quiet:
            self.printer = progress_display(self.options["progress"], title=config.get("name", ""),
                                            summary=self.summary, samples_per_epoch=sizes.get("train"))
        self.tensorboard: Callback | None = None
        if self.options["tensorboard"]:
            self.tensorboard = TensorBoardLogger(self.run_dir / TENSORBOARD_DIR, every_steps=self.options["log_every"])

    @property
    def log_every(self) -> int:
        return int(self.options["log_every"])

    @property
    def callbacks(self) -> list[Callback]:
        """This object (it writes model_summary.txt), the printer and the TensorBoard logger."""
        return [c for c in (self, self.printer, self.tensorboard) if c is not None]

    def on_fit_start(self, state: LoopState) -> None:
        if state.is_main:
            write_atomic(self.run_dir / MODEL_SUMMARY, self.summary.to_text())

    def finish(self, model: Any, *, device: str = "auto") -> list[Path]:
        """After training (main process): metrics.csv, steps.csv and the plots; returns the plots.
        A file that cannot be written here only warns: weights and summary are saved already, and
        these are made again from metrics.jsonl and the weights."""
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

    def close(self) -> None:
        for callback in (self.printer, self.tensorboard):
            if callback is not None:
                callback.close()  # type: ignore[attr-defined]

    def __enter__(self) -> RunReporters:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
