"""Progress in a Jupyter notebook: an HTML display that updates in place, and a live chart.

In a notebook cell, `zerograd.fit(...)` and `zerograd.train(...)` show (instead of the terminal's
bar, which a notebook cannot redraw):

- one HTML output, updated in place: what trains where, a bar for the epochs and one for the
  batches of the epoch in progress (samples, samples/s, ETA of the epoch and of the run, running
  loss, lr), and a table of the finished epochs (about ten rows for long runs);
- one PNG output below it: the loss and metric curves, train against validation/test (the same
  chart as the run's `plots/curves.png`), drawn again when an epoch ends.

What it costs: on a batch, one integer comparison, except every `refresh_seconds` (0.5 s) when the
running loss is read (one host sync) and the HTML is sent again (a few kB). The chart is drawn at
an epoch's end only, and not more often than every `max(1 s, 50 x the last drawing's time)`, so
drawing is at most 2% of the wall time even for epochs of milliseconds (the sinc surface's 400
epochs); the last epoch is always drawn. `overhead_seconds` and `chart_seconds` hold what the
display cost, measured.

`progress_display(mode)` picks the display for a mode: `bar` (and `notebook`) is this display in
a notebook and the rich bar elsewhere; `auto` (what `zerograd.fit` uses by default) is this display
in a notebook and nothing elsewhere. IPython is imported only when something is shown.
"""
from __future__ import annotations

import base64
import html
import io
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from zerograd.callbacks.base import Callback
from zerograd.console import make_console
from zerograd.errors import ConfigError, ZerogradWarning, did_you_mean
from zerograd.optim import current_lr
from zerograd.performance import busy_cores
from zerograd.reporting.model_summary import ModelSummary, describe_sizes, layer_table_rows
from zerograd.reporting.progress import (
    PROGRESS_MODES,
    SHORT_NAMES,
    SPLIT_NAMES,
    ProgressPrinter,
    busy_note,
    epochs_to_show,
    format_value,
    run_facts,
    split_logs,
)
from zerograd.state import LoopState

PROGRESS_CLASS = "zerograd-progress"  # the HTML display's outer element (tests look for it)
CHART_DPI = 80
CHART_MIN_SECONDS = 1.0  # the chart is drawn again at most this often ...
CHART_COST_FACTOR = 50  # ... and at most once per this many times its own drawing time
_NEVER = sys.maxsize
_STYLE = "font: 13px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1f2430"
_CELL = "padding: 1px 8px; text-align: right; border-bottom: 1px solid #e3e6ec; white-space: nowrap"


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab), where HTML output shows;
    False in a terminal, a pipe, plain `python` or a terminal IPython (rich's test)."""
    return make_console().is_jupyter


def progress_display(mode: str, *, title: str = "", summary: ModelSummary | None = None,
                     samples_per_epoch: int | None = None) -> Callback | None:
    """The live progress callback a run shows for `mode` (None: nothing at all).

    `bar` and `notebook`: this module's HTML display in a notebook, rich's bar in a terminal (and
    per-epoch lines in a pipe); `plain` and `none` as in `ProgressPrinter`; `auto`: the HTML display
    in a notebook, nothing elsewhere (`zerograd.fit`'s default, so a script prints what it did)."""
    if mode == "auto":
        if not in_notebook():
            return None
        mode = "notebook"
    elif mode not in PROGRESS_MODES:
        modes = ("auto", *PROGRESS_MODES)
        raise ConfigError(f'progress must be one of {", ".join(modes)}, got {mode!r}{did_you_mean(str(mode), modes)}')
    if mode in ("bar", "notebook") and in_notebook():
        return NotebookProgress(title=title, summary=summary, samples_per_epoch=samples_per_epoch)
    return ProgressPrinter(title=title, mode=mode, summary=summary, samples_per_epoch=samples_per_epoch)


def format_duration(seconds: float) -> str:
    """`0:07`, `12:04`, `1:02:03`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def png_bundle(png: bytes, text: str) -> dict[str, str]:
    """A PNG as a display bundle (base64, as Jupyter stores images)."""
    return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text}


def draw_chart(history: Any) -> bytes:
    """The live chart: loss and metrics per epoch, train vs validation/test, as PNG bytes."""
    from zerograd.reporting.plots import plot_curves, plot_style  # matplotlib: only once something is drawn

    with plot_style():
        figure = plot_curves(history)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=CHART_DPI)
    return buffer.getvalue()


def ipython_display(bundle: dict[str, str]) -> Any:
    """Show a display bundle in the notebook; the handle's `update(bundle, raw=True)` redraws it in place."""
    from IPython.display import display  # only in a notebook, where IPython is loaded already

    return display(bundle, raw=True, display_id=True)


class NotebookProgress(Callback):
    """The notebook's live progress display and chart (see the module's text). Only the main process
    shows anything. `display` shows a mime bundle and returns a handle with `update(bundle, raw=True)`
    (IPython's `display(..., display_id=True)` by default)."""

    def __init__(self, *, title: str = "", summary: ModelSummary | None = None, samples_per_epoch: int | None = None,
                 refresh_seconds: float = 0.5, chart: bool = True,
                 display: Callable[[dict[str, str]], Any] | None = None) -> None:
        self.title = title
        self.summary = summary
        self.samples_per_epoch = samples_per_epoch
        self.refresh_seconds = refresh_seconds
        self.chart = chart
        self.display = display or ipython_display
        self.overhead_seconds = 0.0  # time spent in this display's hooks, drawing included
        self.chart_seconds: list[float] = []  # each drawing of the chart
        self._active = False
        self._handle: Any = None
        self._chart_handle: Any = None
        self._header = ""
        self._rows: list[dict[str, Any]] = []
        self._status = ""
        self._batch_line = ""
        self._next_check = _NEVER
        self._stride = 1
        self._fit_started = self._epoch_started = self._last_check_time = self._last_chart = 0.0
        self._start_batch = self._last_check_batch = 0
        self._epoch_seconds: list[float] = []
        self._charted_epochs = 0
        self._finished = False
        self._state: LoopState | None = None

    # -- the hooks ---------------------------------------------------------------------------

    def on_fit_start(self, state: LoopState) -> None:
        self._active = state.is_main
        if not self._active:
            return
        started = time.perf_counter()
        self._state = state
        self._fit_started = started
        self._header = self._header_html(state)
        self._handle = self.display(self._bundle(state))
        self._charge(started)

    def on_epoch_start(self, state: LoopState) -> None:
        if not self._active:
            return
        started = time.perf_counter()
        self._epoch_started = self._last_check_time = started
        self._start_batch = self._last_check_batch = state.batch
        self._stride = 1
        self._next_check = state.batch + 1
        self._batch_line = "starting…"
        self._update(state)
        self._charge(started)

    def on_batch_end(self, state: LoopState) -> None:
        if state.batch < self._next_check:  # the common case: one integer comparison
            return
        started = time.perf_counter()
        since, elapsed = state.batch - self._last_check_batch, started - self._last_check_time
        # the next look comes about refresh_seconds from now, at this epoch's pace
        wanted = int(since * self.refresh_seconds / elapsed) if elapsed > 0 else self._stride * 2
        self._stride = max(1, min(wanted, 4 * self._stride))
        self._next_check = state.batch + self._stride
        self._last_check_batch, self._last_check_time = state.batch, started
        self._batch_line = self._batch_text(state, started)
        self._update(state)
        self._charge(started)

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        if not self._active:
            return
        started = time.perf_counter()
        self._next_check = _NEVER
        self._epoch_seconds.append(started - self._epoch_started)
        self._rows.append(dict(logs))
        self._batch_line = ""
        self._update(state)
        if self.chart and self._chart_due(state, started):
            self._draw_chart(state)
        self._charge(started)

    def on_fit_end(self, state: LoopState) -> None:
        if not self._active:
            return
        started = time.perf_counter()
        if self.chart and self._charted_epochs != len(state.history) and len(state.history):
            self._draw_chart(state)  # the last epoch is always drawn
        seconds = started - self._fit_started
        reason = state.stop_reason.replace("_", " ")
        done = f"{len(state.history)} epoch{'s' if len(state.history) != 1 else ''} in {format_duration(seconds)}"
        self._status = (f"done: {done}" if state.stop_reason == "completed" and not state.stop_requested
                        else f"stopped by {reason} after {done}")
        self._finished = True
        self._update(state)
        self._charge(started)
        self._active = False

    def close(self) -> None:
        """Mark the display as stopped when training ended without `on_fit_end` (an error, Ctrl-C)."""
        state = self._state
        if self._active and not self._finished and state is not None and self._handle is not None:
            self._status = f"stopped at epoch {state.epoch + 1}, batch {state.batch}"
            self._batch_line = ""
            self._update(state)
        self._active = False
        self._next_check = _NEVER

    def __enter__(self) -> NotebookProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what is shown -----------------------------------------------------------------------

    def _update(self, state: LoopState) -> None:
        if self._handle is not None:
            self._handle.update(self._bundle(state), raw=True)

    def _bundle(self, state: LoopState) -> dict[str, str]:
        return {"text/html": self._html(state), "text/plain": self._text(state)}

    def _html(self, state: LoopState) -> str:
        epochs = state.options.epochs
        done = len(state.history)
        parts = [f'<div class="{PROGRESS_CLASS}" style="{_STYLE}">', self._header]
        elapsed = time.perf_counter() - self._fit_started
        overall = [f"{done}/{epochs} epochs", f"elapsed {format_duration(elapsed)}"]
        if self._status:
            overall = [html.escape(self._status)]
        elif done or self._batch_line:
            remaining = self._remaining_seconds(state)
            if remaining is not None:
                overall.append(f"ETA {format_duration(remaining)}")
        rows = [_bar_row("epochs", done, epochs, " · ".join(overall))]
        if self._batch_line and not self._status:
            samples, total = self._samples_done(state), self._epoch_samples(state)
            rows.append(_bar_row(f"epoch {state.epoch + 1}", samples, total, html.escape(self._batch_line)))
        parts.append(f'<table style="border-collapse: collapse; margin: 4px 0">{"".join(rows)}</table>')
        parts.append(self._epochs_table(epochs))
        parts.append("</div>")
        return "".join(parts)

    def _text(self, state: LoopState) -> str:
        """What a front end without HTML shows (and `print` of the output)."""
        lines = [f"{self.title or 'training'}: {len(state.history)}/{state.options.epochs} epochs"
                 + (f" ({self._status})" if self._status else "")]
        if self._batch_line and not self._status:
            lines.append(f"epoch {state.epoch + 1}: {self._batch_line}")
        if self._rows:
            last = self._rows[-1]
            splits, _ = split_logs(last)
            lines.append(f"epoch {int(last['epoch'])}: " + "  ".join(
                f"{split} {SHORT_NAMES.get(k, k)} {format_value(k, v)}" for split, values in splits.items()
                for k, v in values.items()))
        return "\n".join(lines)

    def _header_html(self, state: LoopState) -> str:
        title = html.escape(self.title or "training")
        parts = [f"<div><b>{title}</b>: {html.escape(run_facts(state))}</div>"]
        threads = torch.get_num_threads()
        busy = busy_cores(threads) if state.accelerator.device.type == "cpu" else 0
        if busy:
            parts.append(f'<div style="color: #9a6700">{html.escape(busy_note(busy, threads))}</div>')
        summary = self.summary
        if summary is not None and summary.layers:
            rows = "".join(
                f'<tr><td style="{_CELL}; text-align: left">…</td><td></td><td></td><td></td></tr>' if row is None else
                f'<tr><td style="{_CELL}; text-align: left">{html.escape(row.name)}</td>'
                f'<td style="{_CELL}; text-align: left">{html.escape(row.kind)}</td>'
                f'<td style="{_CELL}; text-align: left">{html.escape(row.output_shape)}</td>'
                f'<td style="{_CELL}">{row.parameters:,}</td></tr>' for row in layer_table_rows(summary))
            data = f"; data: {html.escape(describe_sizes(summary.data_sizes))}" if summary.data_sizes else ""
            parts.append(f"<details><summary>model: {len(summary.layers)} layers, {summary.total_parameters:,} "
                         f"parameters{data}</summary><table style=\"border-collapse: collapse\"><tr>"
                         + "".join(f'<th style="{_CELL}">{h}</th>' for h in ("layer", "type", "output shape",
                                                                              "parameters"))
                         + f"</tr>{rows}</table></details>")
        return "".join(parts)

    def _epochs_table(self, epochs: int) -> str:
        if not self._rows:
            return ""
        every = epochs_to_show(epochs)
        shown = [r for r in self._rows if int(r["epoch"]) % every == 0 or int(r["epoch"]) in (1, epochs)]
        if shown[-1] is not self._rows[-1]:
            shown.append(self._rows[-1])  # the latest epoch, always
        columns: list[tuple[str, str]] = []  # (key, heading)
        for record in shown:
            splits, rest = split_logs(record)
            for split, values in splits.items():
                columns += [(f"{split}_{k}", f"{split} {SHORT_NAMES.get(k, k)}") for k in values]
            columns += [(k, k) for k in rest]
        columns = list(dict.fromkeys(columns))
        head = "".join(f'<th style="{_CELL}">{html.escape(h)}</th>' for h in ("epoch", *(h for _, h in columns),
                                                                              "time"))
        body = []
        for record in shown:
            cells = [str(int(record["epoch"]))]
            cells += [format_value(_metric_name(k), record[k]) if k in record else "" for k, _ in columns]
            cells.append(f"{record.get('seconds', 0.0):.1f} s")
            body.append("<tr>" + "".join(f'<td style="{_CELL}">{html.escape(c)}</td>' for c in cells) + "</tr>")
        return f'<table style="border-collapse: collapse; margin-top: 4px"><tr>{head}</tr>{"".join(body)}</table>'

    def _batch_text(self, state: LoopState, now: float) -> str:
        loss = state.running_loss()
        seconds = now - self._epoch_started
        batches = state.batch - self._start_batch
        rate = batches * state.options.batch_size / seconds if seconds > 0 else 0.0
        left = state.batches_per_epoch - state.batch
        eta = f" · ETA {format_duration(left * seconds / batches)}" if batches and seconds > 0 else ""
        return f"{rate:,.0f} samples/s{eta} · loss {loss:.4g} · lr {current_lr(state.optimizer):.3g}"

    def _remaining_seconds(self, state: LoopState) -> float | None:
        """The run's time left: the epoch in progress at its pace, the others as long as the finished
        ones took on average (evaluation included), or as this one will before any has finished."""
        epochs_left = state.options.epochs - len(state.history)
        now = time.perf_counter()
        batches = state.batch - self._start_batch
        in_epoch = now - self._epoch_started
        this_epoch = None
        if self._batch_line and batches > 0 and in_epoch > 0:
            this_epoch = (state.batches_per_epoch - state.batch) * in_epoch / batches
            epochs_left -= 1
        if self._epoch_seconds:
            per_epoch = sum(self._epoch_seconds) / len(self._epoch_seconds)
        elif this_epoch is not None:
            per_epoch = in_epoch * state.batches_per_epoch / batches
        else:
            return None
        return (this_epoch or 0.0) + max(0, epochs_left) * per_epoch

    # -- the chart -----------------------------------------------------------------------------

    def _chart_due(self, state: LoopState, now: float) -> bool:
        if not self.chart_seconds or len(state.history) >= state.options.epochs:
            return True  # the first and the last epoch
        gap = max(CHART_MIN_SECONDS, CHART_COST_FACTOR * self.chart_seconds[-1])
        return now - self._last_chart >= gap

    def _draw_chart(self, state: LoopState) -> None:
        started = time.perf_counter()
        try:
            png = draw_chart(state.history)
        except Exception as error:  # a chart must never stop training
            warnings.warn(f"the live chart could not be drawn ({type(error).__name__}: {error}); training goes on "
                          "without it", ZerogradWarning, stacklevel=2)
            self.chart = False
            return
        bundle = png_bundle(png, f"<training curves, {len(state.history)} epochs>")
        if self._chart_handle is None:
            self._chart_handle = self.display(bundle)
        else:
            self._chart_handle.update(bundle, raw=True)
        self._charted_epochs = len(state.history)
        self._last_chart = time.perf_counter()
        self.chart_seconds.append(self._last_chart - started)

    # -- helpers -------------------------------------------------------------------------------

    def _charge(self, started: float) -> None:
        self.overhead_seconds += time.perf_counter() - started

    def _epoch_samples(self, state: LoopState) -> int:
        if self.samples_per_epoch:
            return self.samples_per_epoch
        return state.batches_per_epoch * state.options.batch_size

    def _samples_done(self, state: LoopState) -> int:
        return min(state.batch * state.options.batch_size, self._epoch_samples(state))


def _bar_row(label: str, value: int, total: int, text: str) -> str:
    total = max(total, 1)
    return (f'<tr><td style="padding: 1px 8px 1px 0; white-space: nowrap"><b>{html.escape(label)}</b></td>'
            f'<td><progress value="{value}" max="{total}" style="width: 16em; height: 0.9em"></progress></td>'
            f'<td style="{_CELL}; border: none">{value:,}/{total:,}</td>'
            f'<td style="padding: 1px 8px; white-space: nowrap">{text}</td></tr>')


def _metric_name(key: str) -> str:
    """`accuracy` for `test_accuracy` (how it is formatted), the key itself for `lr` and the like."""
    split, _, name = key.partition("_")
    return name if split in SPLIT_NAMES and name else key
