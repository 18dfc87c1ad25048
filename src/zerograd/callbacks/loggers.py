"""One interface for everything that records a run: the run's own files (metrics.jsonl and the
CSV copies, `runs.MetricsWriter`), TensorBoard, MLflow, and a logger of your own.

A logger is a `RunLogger`: five methods, each a no-op unless overridden,

    start(run)                          the run begins or resumes (`RunInfo`: what is trained already)
    log_params(params)                  the resolved config (or the fit options), flat dotted keys
    log_metrics(metrics, step, kind)    an epoch's record at its optimizer step (kind "epoch"), and
                                        every `every_steps` steps a step record (kind "step")
    log_artifacts(paths)                the files of a finished run (config, weights, plots)
    end(status, summary)                "finished" (with the summary), "interrupted" or "failed"

and the loop hooks that call them: it is a `Callback`, so `fit(..., callbacks=[MyLogger()])` drives
it. Only the main process (rank 0) logs. Used on its own with `fit`, a logger ends when training
does; in `zerograd.train` (`loggers: [mlflow, tensorboard]`) the run ends it after writing its files,
with the artifacts and the summary.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerograd.cadence import StepGrid
from zerograd.callbacks.base import Callback
from zerograd.optim import current_lr
from zerograd.state import LoopState, LossWindow

FINISHED, INTERRUPTED, FAILED = "finished", "interrupted", "failed"


@dataclass
class RunInfo:
    """What a logger is told at the start: whether the run resumes, and what is trained already
    (the epoch records of the checkpoint it resumed from, and its optimizer step)."""

    resumed: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0


class RunLogger(Callback):
    """Base class of the loggers: override any of the five methods; the loop hooks call them.

    `every_steps`: also a step record (step, fractional epoch, the train loss since the previous
    record, lr) every that many optimizer steps; 0 (the default) for epoch records only. A step
    record reads the loss from the device, a host sync once per `every_steps` steps.
    `config`: the params `log_params` gets (flattened); without one, the fit options."""

    def __init__(self, *, every_steps: int = 0, config: Mapping[str, Any] | None = None) -> None:
        self.every_steps = every_steps
        self.config = config
        self.ends_with_fit = True  # `zerograd.train` sets False: it ends the logger after the run's files
        self.active = False  # started on this process (the main one), not ended yet
        self._steps = StepGrid(every_steps)
        self._window = LossWindow()

    # --- the protocol -----------------------------------------------------------------------
    def start(self, run: RunInfo) -> None: ...

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None: ...

    def log_artifacts(self, paths: Sequence[Path]) -> None: ...

    def end(self, status: str, summary: Mapping[str, Any] | None = None) -> None: ...

    def close(self) -> None:
        """Release what the logger holds open (files, connections), also when the run failed."""

    # --- driven by the loop -----------------------------------------------------------------
    def finish(self, status: str, summary: Mapping[str, Any] | None = None, artifacts: Sequence[Path] = ()) -> None:
        """Log `artifacts`, then `end`, once: a second call, or one on a process that did not
        start the logger (not the main one), does nothing."""
        if not self.active:
            return
        self.active = False
        if artifacts:
            self.log_artifacts(artifacts)
        self.end(status, summary)

    def on_fit_start(self, state: LoopState) -> None:
        self._steps.stop()
        self.active = False
        if not state.is_main:
            return
        # callbacks that restore a checkpoint run first, so the history and step are the restored ones
        history = [dict(r) for r in state.history.records]
        self.start(RunInfo(resumed=state.global_step > 0 or bool(history), history=history,
                           global_step=state.global_step))
        self.active = True  # a logger that could not start has nothing to end
        self.log_params(flatten(self.config if self.config is not None else state.options.to_dict()))
        steps_per_epoch = -(-state.batches_per_epoch // max(1, state.options.accumulate))
        if 0 < self.every_steps <= steps_per_epoch:  # shorter epochs: the epoch records are finer already
            self._steps.start(state.global_step)

    def on_epoch_start(self, state: LoopState) -> None:
        if self._steps.next == math.inf:
            return
        # a resumed run keeps to the same grid of steps and measures its first window from where it restarted
        self._steps.start(state.global_step)
        if state.batch:
            self._window.start(state)

    def on_batch_end(self, state: LoopState) -> None:
        if not self._steps.due(state.global_step):  # the common case: one comparison
            return
        self.log_metrics({
            "step": state.global_step,
            "epoch": state.epoch + state.batch / max(1, state.batches_per_epoch),
            "train_loss": self._window.read(state),  # as the epoch's train_loss: per sample ("mean"), per batch ("sum")
            "lr": current_lr(state.optimizer),
        }, state.global_step, "step")

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        if state.is_main:
            self.log_metrics(logs, state.global_step)

    def on_fit_end(self, state: LoopState) -> None:
        if state.stop_reason == "interrupted":  # an interrupted run writes no final files to wait for
            self.finish(INTERRUPTED)
        elif self.ends_with_fit:
            self.finish(FINISHED)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`{"model": {"sizes": [784, 10]}}` -> `{"model.sizes": "[784, 10]"}`):
    numbers, text, booleans and None as they are, lists as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple, Mapping)):
            flat[name] = json.dumps(value, default=str)
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
