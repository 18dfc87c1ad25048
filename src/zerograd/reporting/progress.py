"""Progress on the terminal while a network trains.

Three modes (`progress:` in a config, `--progress` on the command line):

- `bar`: a live rich progress bar per epoch (samples, samples/s, ETA, running loss, lr) that
  disappears when the epoch ends and leaves one compact line. When the output is not a terminal
  (CI logs, pipes, notebooks) there is no bar, only the per-epoch lines, so logs never fill up
  with redraws.
- `plain`: the PyTorch tutorials' text: `loss: 0.412345  [ 6400/60000]` a few times per epoch
  and `Test Error: Accuracy: 85.3%, Avg loss: 0.410000` after it.
- `none`: only the header (model summary); nothing while training.

The per-batch hook is an integer comparison on almost every batch: the running loss is read
from the device (a host sync) and the bar redrawn only every few batches, about every
`refresh_seconds`.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from zerograd.callbacks.base import Callback
from zerograd.console import make_console, plain
from zerograd.errors import ConfigError, did_you_mean
from zerograd.models import count_parameters
from zerograd.optim import current_lr
from zerograd.performance import busy_cores
from zerograd.reporting.model_summary import ModelSummary, describe_sizes, layer_table_rows
from zerograd.state import LoopState, LossWindow

PROGRESS_MODES = ("bar", "plain", "none", "notebook")
SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}
PLAIN_SPLIT_TITLES = {"train": "Train", "val": "Validation Error", "test": "Test Error"}
PERCENT_METRICS = ("accuracy", "top3_accuracy", "top5_accuracy", "precision", "recall", "f1")
SHORT_NAMES = {"accuracy": "acc", "top3_accuracy": "top3", "top5_accuracy": "top5"}
_NEVER = sys.maxsize


def check_progress_mode(mode: Any) -> str:
    """The mode, or a ConfigError naming the valid ones."""
    if mode not in PROGRESS_MODES:
        raise ConfigError(f'progress must be one of {", ".join(PROGRESS_MODES)}, got {mode!r}'
                          f'{did_you_mean(str(mode), PROGRESS_MODES)}')
    return str(mode)


def format_value(name: str, value: Any) -> str:
    """85.31% for accuracy-like metrics, 4 significant digits for everything else."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if name in PERCENT_METRICS:
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


def split_logs(logs: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """({'train': {'loss': ..}, 'test': {..}}, {other keys}) from a flat epoch record."""
    splits: dict[str, dict[str, Any]] = {}
    rest: dict[str, Any] = {}
    for key, value in logs.items():
        prefix, _, name = key.partition("_")
        if prefix in SPLIT_NAMES and name:
            splits.setdefault(prefix, {})[name] = value
        elif key not in ("epoch", "seconds"):
            rest[key] = value
    return splits, rest


def format_epoch_line(logs: dict[str, Any], epochs: int) -> str:
    """`epoch 2/3  train loss 0.4123 acc 85.31%  test loss 0.41 acc 85.30%  lr 0.001  4.1 s`
    with rich markup (dim labels); rich drops the markup on non-terminals."""
    parts = [f"[bold]epoch {int(logs['epoch'])}/{epochs}[/]"]
    splits, rest = split_logs(logs)
    for split, values in splits.items():
        shown = " ".join(f"[dim]{SHORT_NAMES.get(k, k)}[/] {format_value(k, v)}" for k, v in values.items())
        parts.append(f"[cyan]{split}[/] {shown}")
    parts += [f"[dim]{k}[/] {format_value(k, v)}" for k, v in rest.items()]
    if "seconds" in logs:
        parts.append(f"{logs['seconds']:.1f} s")
    return "  ".join(parts)


def format_plain_split(split: str, values: dict[str, Any]) -> str:
    """`Test Error: Accuracy: 85.3%, Avg loss: 0.410000` (the tutorials' wording)."""
    parts = []
    for name, value in values.items():
        if name == "loss":
            continue
        label = name.replace("_", " ").capitalize() if name != "f1" else "F1"
        parts.append(f"{label}: {100 * value:.1f}%" if name in PERCENT_METRICS else f"{label}: {value:.4g}")
    if "loss" in values:
        parts.append(f"Avg loss: {values['loss']:.6f}")
    return f"{PLAIN_SPLIT_TITLES.get(split, split)}: " + ", ".join(parts)


def plain_batch_interval(batches_per_epoch: int) -> int:
    """Print a batch line every 1, 10, 100, 1000... batches: the largest giving >= 5 lines per
    epoch (the tutorials print every 100). Epochs of fewer than 20 batches get no batch lines."""
    if batches_per_epoch < 20:
        return 0
    interval = 1
    while (batches_per_epoch - 1) // (interval * 10) + 1 >= 5:  # lines after batch 1, 1 + k, 1 + 2k, ...
        interval *= 10
    return interval


def busy_note(busy: int, threads: int) -> str:
    """The header's warning when other processes keep some of the run's cores busy."""
    return (f"note: {busy} of the {threads} cores this run uses {'is' if busy == 1 else 'are'} busy with other "
            "processes: "
            f"training is slower (it can be many times slower), the results stay the same; --set "
            f"threads={max(1, threads - busy)} runs faster on a busy machine, with numbers that can differ from "
            f"{threads} threads' in the last bits")


def run_facts(state: LoopState) -> str:
    """`55,050 parameters on cpu (2 threads), precision fp32, 3 epochs of 6000 batches`: the header's facts."""
    acc = state.accelerator
    threads = torch.get_num_threads()
    where = f"{acc.device}" + (f" x{acc.world_size} processes" if acc.distributed else "")
    if acc.device.type == "cpu":
        where += f" ({threads} thread{'s' if threads != 1 else ''}{' each' if acc.distributed else ''})"
    return (f"{count_parameters(state.raw_model):,} parameters on {where}, precision {acc.precision}, "
            f"{state.options.epochs} epoch{'s' if state.options.epochs != 1 else ''} of {state.batches_per_epoch} "
            f"batch{'es' if state.batches_per_epoch != 1 else ''}")


def epochs_to_show(epochs: int) -> int:
    """Long runs print about ten epoch lines (every k-th, plus the first and last), not hundreds."""
    return max(1, epochs // 10) if epochs > 20 else 1


class ProgressPrinter(Callback):
    """The header (what trains where, model summary, data sizes), live progress and one line per
    epoch. Only the main process prints. Use it as a context manager (or call `close()`) so the
    live bar is taken down even when training fails."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        title: str = "",
        mode: str = "bar",
        summary: ModelSummary | None = None,
        samples_per_epoch: int | None = None,
        refresh_seconds: float = 0.15,
    ) -> None:
        self.console = console or make_console()
        self.title = title
        # `notebook` asks for the notebook's HTML display (reporting/notebook.py); a terminal printer shows the bar
        self.requested_mode = "bar" if check_progress_mode(mode) == "notebook" else mode
        self.summary = summary
        self.samples_per_epoch = samples_per_epoch
        self.refresh_seconds = refresh_seconds
        self.mode = self.requested_mode
        self._active = False
        self._next_check = _NEVER
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._stride = 1
        self._epoch_started = self._last_check_time = 0.0
        self._start_batch = self._last_check_batch = 0
        self._window = LossWindow()

    # -- the hooks ---------------------------------------------------------------------------

    def on_fit_start(self, state: LoopState) -> None:
        self._active = state.is_main
        if not self._active:
            return
        self.mode = self.effective_mode()
        self.print_header(state)
        if self.mode == "bar":
            self._progress = self._make_progress()
            self._progress.start()

    def on_epoch_start(self, state: LoopState) -> None:
        if not self._active:
            return
        now = time.perf_counter()
        self._epoch_started = self._last_check_time = now
        self._start_batch = self._last_check_batch = state.batch
        self._stride = 1
        self._next_check = _NEVER
        if self.mode == "bar" and self._progress is not None:
            self._task = self._progress.add_task(
                self._epoch_label(state), total=self._epoch_samples(state),
                completed=self._samples_done(state), rate="", loss="…", lr=f"{current_lr(state.optimizer):.3g}",
            )
            self._next_check = state.batch + 1
        elif self.mode == "plain" and self._shows_epoch(state.epoch + 1, state.options.epochs):
            self.console.print(f"Epoch {state.epoch + 1}/{state.options.epochs}\n" + "-" * 31)
            interval = plain_batch_interval(state.batches_per_epoch)
            if interval:
                self._window = LossWindow()  # the first line averages the epoch so far
                # the tutorials print after batch 1, 101, 201, ... (their `batch % 100 == 0`)
                self._next_check = ((state.batch - 1) // interval + 1) * interval + 1

    def on_batch_end(self, state: LoopState) -> None:
        if state.batch < self._next_check:  # the common case: one integer comparison
            return
        if self.mode == "bar":
            self._refresh_bar(state)
        else:
            self._print_batch_line(state)

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        if not self._active:
            return
        self._next_check = _NEVER
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
            self._progress.refresh()
        epoch, epochs = int(logs["epoch"]), state.options.epochs
        if self.mode == "none" or not self._shows_epoch(epoch, epochs):
            return
        if self.mode == "plain":
            self._print_plain_epoch(logs)
        else:
            self.console.print(format_epoch_line(logs, epochs), soft_wrap=True)

    def on_fit_end(self, state: LoopState) -> None:
        self.close()

    def close(self) -> None:
        """Take the live bar down (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._next_check = _NEVER

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what is printed ---------------------------------------------------------------------

    def effective_mode(self) -> str:
        """`bar` only on an interactive terminal; elsewhere per-epoch lines (mode 'epochs')."""
        if self.requested_mode == "bar" and not (self.console.is_terminal and not self.console.is_dumb_terminal):
            return "epochs"
        return self.requested_mode

    def print_header(self, state: LoopState) -> None:
        acc = state.accelerator
        threads = torch.get_num_threads()
        self.console.print(f"[bold]{plain(self.title or 'training')}[/]: {plain(run_facts(state))}", soft_wrap=True)
        busy = busy_cores(threads) if acc.device.type == "cpu" else 0
        if busy:
            self.console.print(busy_note(busy, threads), soft_wrap=True)
        if self.summary is not None:
            self.console.print(self.layer_table())
            if self.summary.frozen_note:
                self.console.print(self.summary.frozen_note, soft_wrap=True)
            if self.summary.data_sizes:
                self.console.print(f"data: {describe_sizes(self.summary.data_sizes)}"
                                   + (f"  (inputs {self.summary.input_shape})" if self.summary.input_shape else ""))

    def layer_table(self) -> Table:
        assert self.summary is not None
        table = Table(box=None, pad_edge=False, header_style="bold dim", show_footer=True)
        table.add_column("layer", footer="total")
        table.add_column("type")
        table.add_column("output shape")
        table.add_column("parameters", justify="right", footer=f"{self.summary.total_parameters:,}")
        marks = any(row.frozen for row in self.summary.layers)
        if marks:  # a column of its own, so the counts stay right-aligned
            table.add_column("", no_wrap=True)
        for row in layer_table_rows(self.summary):
            if row is None:
                table.add_row("…", "", "", "", *([""] if marks else []))
            else:
                cells = [plain(row.name), plain(row.kind), plain(row.output_shape), f"{row.parameters:,}"]
                table.add_row(*cells, *(["frozen" if row.frozen else ""] if marks else []))
        return table

    def _print_plain_epoch(self, logs: dict[str, Any]) -> None:
        splits, _ = split_logs(logs)
        for split, values in splits.items():
            line = format_plain_split(split, values)
            if split == "train":
                line += f"  ({logs.get('seconds', 0.0):.1f} s, lr {logs.get('lr', float('nan')):.3g})"
            self.console.print(line, soft_wrap=True)
        self.console.print()

    def _print_batch_line(self, state: LoopState) -> None:
        interval = plain_batch_interval(state.batches_per_epoch)
        self._next_check = state.batch + interval
        window = self._window.read(state)  # the mean loss since the previous line
        size = self._epoch_samples(state)
        width = len(str(size))
        self.console.print(f"loss: {window:>7f}  [{self._samples_done(state):>{width}d}/{size:>{width}d}]",
                           soft_wrap=True)

    def _refresh_bar(self, state: LoopState) -> None:
        now = time.perf_counter()
        since, elapsed = state.batch - self._last_check_batch, now - self._last_check_time
        # the next check comes about refresh_seconds from now, at this epoch's pace
        wanted = int(since * self.refresh_seconds / elapsed) if elapsed > 0 else self._stride * 2
        self._stride = max(1, min(wanted, 4 * self._stride))
        self._next_check = state.batch + self._stride
        self._last_check_batch, self._last_check_time = state.batch, now
        if self._progress is None or self._task is None:
            return
        loss = state.running_loss()
        done = self._samples_done(state)
        seconds = now - self._epoch_started
        rate = (state.batch - self._start_batch) * state.options.batch_size / seconds if seconds > 0 else 0.0
        self._progress.update(self._task, completed=done, rate=f"{rate:,.0f} samples/s",
                              loss=f"{loss:.4g}", lr=f"{current_lr(state.optimizer):.3g}")
        self._progress.refresh()

    # -- helpers -----------------------------------------------------------------------------

    def _make_progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            TextColumn("{task.completed:>,.0f}/{task.total:,.0f}"),
            TextColumn("[dim]{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("loss [bold]{task.fields[loss]}[/]  [dim]lr[/] {task.fields[lr]}"),
            console=self.console,
            transient=True,
            auto_refresh=False,  # no refresh thread competing with the training loop
            expand=True,
        )

    def _epoch_label(self, state: LoopState) -> str:
        epochs = state.options.epochs
        return f"epoch {state.epoch + 1:>{len(str(epochs))}}/{epochs}"

    def _epoch_samples(self, state: LoopState) -> int:
        if self.samples_per_epoch:
            return self.samples_per_epoch
        return state.batches_per_epoch * state.options.batch_size

    def _samples_done(self, state: LoopState) -> int:
        return min(state.batch * state.options.batch_size, self._epoch_samples(state))

    @staticmethod
    def _shows_epoch(epoch: int, epochs: int) -> bool:
        return epoch % epochs_to_show(epochs) == 0 or epoch in (1, epochs)
