"""The training loop's state: what callbacks see (`LoopState`), the epoch's running sums
(`EpochTotals`), the per-epoch records (`History`), and what a checkpoint holds (`CheckpointParts`).

Everything here that a checkpoint saves has `state_dict()` / `load_state_dict()`, the way torch's
modules and optimizers do; the checkpoint callback saves and restores them through those methods
and knows nothing else about them.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import Any

import torch
from torch import nn

from zerograd.accelerator import Accelerator, unwrap
from zerograd.metrics import Metric
from zerograd.optim import Schedule
from zerograd.options import FitOptions


@dataclass
class History:
    """Per-epoch records as plain numbers, e.g. `history["test_accuracy"][-1]`."""

    records: list[dict[str, float]] = field(default_factory=list)

    def append(self, logs: dict[str, float]) -> None:
        self.records.append(dict(logs))

    def __getitem__(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, float]:
        return self.records[-1] if self.records else {}

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras-style: one list per key."""
        keys = dict.fromkeys(k for r in self.records for k in r)
        return {k: self[k] for k in keys}

    def _repr_html_(self) -> str:
        """A notebook shows the records as a table (4 significant digits)."""
        keys = list(dict.fromkeys(k for r in self.records for k in r))
        cell = "padding: 2px 8px; text-align: right"
        head = "".join(f'<th style="{cell}">{html.escape(k)}</th>' for k in keys)
        rows = "".join("<tr>" + "".join(f'<td style="{cell}">{_table_number(r.get(k))}</td>' for k in keys) + "</tr>"
                       for r in self.records)
        return f"<table><tr>{head}</tr>{rows}</table>" if self.records else "<p>History: no epoch yet</p>"

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records[:] = state["records"]


def _table_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


class EpochTotals:
    """Running sums of one epoch's loss and metrics, kept on the device (no host sync per batch).

    `summed`: the loss is reduced by "sum" (the epoch's loss is then the total, not the mean per
    sample). One object serves the whole run: `reset()` starts each epoch.

    `grouped`: metrics whose sums are counts (accuracy, the confusion matrix) are updated once per
    group of up to `GROUP_BATCHES` small batches instead of after every batch. A count is the same
    whichever batches it is summed over, so the figures are too, to the last bit; at batch 10 the
    four small ops an update costs were ~5% of a step. Only for batches nothing changes after the
    step (zerograd's own in-memory batches, the CPU): the outputs and targets are kept until then."""

    GROUP_BATCHES = 256
    GROUP_OUTPUTS = 4096  # values per batch's outputs up to which its update waits (larger: at once)

    def __init__(self, device: torch.device | str, metrics: list[Metric], *, summed: bool = False,
                 grouped: bool = False) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.count = 0
        self.metrics = metrics
        self.summed = summed
        self._grouped = [m for m in metrics if getattr(m, "sums_are_counts", False)] if grouped else []
        self._direct = [m for m in metrics if not any(m is g for g in self._grouped)]
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._checked = False  # the first batch goes straight through: a metric's error shows at once

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.count = 0
        self._pending.clear()
        for metric in self.metrics:
            metric.reset()

    def record(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch. `loss` and `outputs` may still be in autograd's graph: they are read, not kept."""
        n = targets.shape[0]
        if n == 0:  # an empty rank share of a tiny tail batch (its mean loss is NaN)
            return
        if loss.requires_grad:  # autograd's step; the hand-derived one makes none (a detach is a new tensor each batch)
            loss, outputs = loss.detach(), outputs.detach()
        self.loss_sum.add_(loss, alpha=1 if self.summed else n)  # one in-place op, no temporary
        self.count += n
        for metric in self._direct:
            metric.update(outputs, targets)
        if self._grouped:
            self._group(outputs, targets)

    def _group(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        pending = self._pending
        if pending and (outputs.shape[1:] != pending[0][0].shape[1:] or targets.shape[1:] != pending[0][1].shape[1:]):
            self.settle()  # torch.cat needs the same shape past the batch dimension
        if not self._checked or outputs.numel() > self.GROUP_OUTPUTS:
            self._checked = True
            for metric in self._grouped:
                metric.update(outputs, targets)
            return
        pending.append((outputs, targets))
        if len(pending) >= self.GROUP_BATCHES:
            self.settle()

    def settle(self) -> None:
        """Bring the grouped metrics up to date (before they are read or saved)."""
        pending = self._pending
        if not pending:
            return
        outputs = pending[0][0] if len(pending) == 1 else torch.cat([o for o, _ in pending])
        targets = pending[0][1] if len(pending) == 1 else torch.cat([t for _, t in pending])
        pending.clear()
        for metric in self._grouped:
            metric.update(outputs, targets)

    def loss(self) -> float:
        """The loss so far as the epoch record reports it: per sample, or the total of a summed
        loss (a host sync; NaN before the first batch)."""
        if not self.count:
            return float("nan")
        return float(self.loss_sum) if self.summed else float(self.loss_sum) / self.count

    def state_dict(self) -> dict[str, Any]:
        self.settle()
        metrics = [{"name": m.name, "tensors": {k: v.detach().cpu() for k, v in m.state_dict().items()}}
                   for m in self.metrics]
        return {"loss_sum": self.loss_sum.detach().cpu(), "count": self.count, "metrics": metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum.copy_(state["loss_sum"])
        self.count = state["count"]
        self._pending.clear()
        for metric, saved in zip(self.metrics, state["metrics"]):
            metric.load_state_dict({name: tensor.to(self.loss_sum.device) for name, tensor in saved["tensors"].items()})


@dataclass
class CheckpointParts:
    """What a checkpoint holds, by owner: every value has `state_dict()` / `load_state_dict()`
    (None: nothing to save, e.g. no schedule). `shared` is the same on every rank (rank 0's is
    written); `per_rank` is each rank's own (RNG states, the epoch's running sums); restoring goes
    through both in order, so the RNG states, listed last, are put back last. `verify` runs
    before every save: no checkpoint may hold NaN weights."""

    model: nn.Module
    shared: dict[str, Any]
    per_rank: dict[str, Any]
    verify: Callable[[], None] = lambda: None


@dataclass(eq=False)
class LoopState:
    """What callbacks see: the live model and optimizer, where the loop is, and a few controls.

    Read: `model` (as trained: maybe DDP- or compile-wrapped), `raw_model` (the user's module),
    `optimizer`, `schedule` (None without one; `schedule.last_lr` is the lr of the latest step),
    `accelerator` (device, precision, rank: `is_main` is rank 0), `options`,
    `history`, `epoch` (0-based; the epoch in progress), `batch` (batches done in this epoch),
    `batches_per_epoch`, `global_step` (optimizer steps so far), `train_seconds`,
    `running_loss()` (the epoch's training loss so far), `last_checkpoint`, `evaluated_weights()`
    (the weights evaluations see: the model's, or with ema/swa the averaged ones).
    Act: `request_stop(reason)` stops training after this batch or epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    options: FitOptions
    schedule: Schedule | None = None
    history: History = field(default_factory=History)
    epoch: int = 0
    batch: int = 0
    batches_per_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    stop_reason: str = "completed"
    stop_requested: bool = False
    epoch_logs: dict[str, Any] | None = None  # the epoch's record as it started (epoch, lr), for a mid-epoch resume
    last_checkpoint: str | None = None  # set by the checkpoint callbacks; named in error messages
    checkpoint: CheckpointParts | None = field(default=None, repr=False)  # what a checkpoint saves (the engine's)
    # ema/swa: the averaged weights the evaluations see (None: the model's own; see callbacks/averaging.py)
    averaged: Callable[[], dict[str, torch.Tensor] | None] | None = field(default=None, repr=False)
    totals: InitVar[EpochTotals | None] = None

    def __post_init__(self, totals: EpochTotals | None) -> None:
        self._totals = totals

    @property
    def raw_model(self) -> nn.Module:
        """The user's module, unwrapped from DDP / torch.compile."""
        return unwrap(self.model)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and in a single process): the one that prints and writes files."""
        return self.accelerator.is_main

    def evaluated_weights(self) -> dict[str, torch.Tensor]:
        """The weights the epoch's evaluation saw: the model's, or with ema/swa the averaged ones."""
        averaged = self.averaged() if self.averaged is not None else None
        return averaged if averaged is not None else self.raw_model.state_dict()

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True
        self.stop_reason = reason

    def running_loss(self) -> float:
        """The epoch's training loss so far, as the epoch record will report it (one host sync)."""
        return self._totals.loss() if self._totals is not None else float("nan")

    def loss_sums(self) -> tuple[float, float]:
        """(loss summed over the epoch's batches so far, what it is averaged over): samples for a
        mean loss, batches for a summed one (a host sync). For windows of the running loss."""
        totals = self._totals
        if totals is None:
            return 0.0, 0.0
        return float(totals.loss_sum), float(self.batch if totals.summed else totals.count)

    _POSITION = ("epoch", "batch", "global_step", "batches_per_epoch", "train_seconds", "stop_requested", "stop_reason",
                 "epoch_logs")

    def state_dict(self) -> dict[str, Any]:
        """Where the loop is (a checkpoint's "position")."""
        return {key: getattr(self, key) for key in self._POSITION}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self._POSITION:
            if key != "batches_per_epoch":  # the data's, checked against the checkpoint, not restored
                setattr(self, key, state[key])


class LossWindow:
    """The mean training loss over a window of batches: from the epoch's start (or `start()`) to
    the first `read`, then from each `read` to the next. What a progress line and a step record
    show; each `read` is one host sync. A new epoch starts a new window by itself."""

    def __init__(self) -> None:
        self._epoch = -1
        self._base = (0.0, 0.0)

    def start(self, state: LoopState) -> None:
        """Begin the window here (e.g. where a resumed run restarted, inside an epoch)."""
        self._epoch, self._base = state.epoch, state.loss_sums()

    def read(self, state: LoopState) -> float:
        loss_sum, units = state.loss_sums()
        base_sum, base_units = self._base if state.epoch == self._epoch else (0.0, 0.0)
        self._epoch, self._base = state.epoch, (loss_sum, units)
        return (loss_sum - base_sum) / max(1.0, units - base_units)
