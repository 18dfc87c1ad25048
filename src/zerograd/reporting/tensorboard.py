"""TensorBoard event files for a run (`loggers: [tensorboard]`, `tensorboard: true` or
`--tensorboard`), an optional extra.

Scalars are tagged by quantity then split (`loss/train`, `loss/test`, `accuracy/val`), so
TensorBoard shows train and test side by side; every scalar is logged at the optimizer step,
so all charts share one x axis. View with `tensorboard --logdir RUN_DIR/tensorboard`.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zerograd.callbacks.loggers import RunInfo, RunLogger
from zerograd.errors import ConfigError, ZerogradWarning

TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install 'zerograd[tensorboard]'"


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or a ConfigError saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ConfigError(f"tensorboard: true needs the tensorboard package ({error}); "
                          f"install it with: {INSTALL_HINT}") from None
    return SummaryWriter


def scalar_tag(key: str) -> str:
    """`train_loss` -> `loss/train`, `test_accuracy` -> `accuracy/test`, `lr` -> `lr`."""
    prefix, _, name = key.partition("_")
    if prefix in ("train", "val", "test") and name:
        return f"{name}/{prefix}"
    return key


class TensorBoardLogger(RunLogger):
    """Writes each epoch's record, and the lr every `every_steps` optimizer steps, as scalars
    under `log_dir` (a `callbacks.loggers.RunLogger`). Only the main process writes. TensorBoard is
    an extra view of metrics.jsonl, so when its files cannot be written (full disk, read-only
    folder) it warns once and stops logging, and training goes on."""

    def __init__(self, log_dir: str | Path, *, every_steps: int = 50) -> None:
        super().__init__(every_steps=every_steps)
        self.writer_class = summary_writer_class()  # fail before training, not after an epoch
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def start(self, run: RunInfo) -> None:
        try:
            self.writer = self.writer_class(log_dir=str(self.log_dir))
        except OSError as error:
            self._give_up(error)

    def log_metrics(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None:
        if self.writer is None:
            return
        try:
            if kind == "step":
                self.writer.add_scalar("lr/step", metrics["lr"], step)
                return
            for key, value in metrics.items():
                if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                self.writer.add_scalar(scalar_tag(key) if key != "seconds" else "time/epoch_seconds", value, step)
            self.writer.add_scalar("epoch", metrics["epoch"], step)
            self.writer.flush()
        except OSError as error:
            self._give_up(error)

    def end(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except OSError as error:
                self._give_up(error)

    def _give_up(self, error: OSError) -> None:
        self.writer = None  # (a writer that failed is not closed: closing writes again)
        self._steps.stop()
        reason = error.strerror or str(error)
        warnings.warn(f"could not write TensorBoard files in {self.log_dir}: {reason}; TensorBoard logging stopped, "
                      "training goes on (metrics.jsonl has the same numbers)", ZerogradWarning, stacklevel=2)
