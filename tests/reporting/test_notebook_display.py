"""The notebook's progress display and the results' HTML, without a kernel: which display a mode picks
outside a notebook (nothing changes there), what the display sends to its handles, the chart's
pacing, a display closed by a failing run, and the tables results show. tests/test_notebooks.py
runs the same in a real Jupyter kernel."""
from __future__ import annotations

from typing import Any

import pytest
import torch

import zerograd
from zerograd.callbacks import Callback
from zerograd.errors import ConfigError
from zerograd.reporting.notebook import PROGRESS_CLASS, NotebookProgress, format_duration, progress_display
from zerograd.reporting.progress import ProgressPrinter
from zerograd.state import History


class Handle:
    """What IPython's `display(..., display_id=True)` returns: every bundle it was shown."""

    def __init__(self, bundle: dict[str, str]) -> None:
        self.bundles = [bundle]

    def update(self, bundle: dict[str, str], raw: bool = False) -> None:
        assert raw
        self.bundles.append(bundle)


class Screen:
    """A fake notebook: the displays shown, in order."""

    def __init__(self) -> None:
        self.handles: list[Handle] = []

    def __call__(self, bundle: dict[str, str]) -> Handle:
        self.handles.append(Handle(bundle))
        return self.handles[-1]


def data(samples: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(samples, 4)
    return x, (x[:, 0] > 0).long()


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_outside_a_notebook_nothing_changes() -> None:
    assert progress_display("auto") is None  # zerograd.fit's default prints nothing in a script, as before
    for mode in ("bar", "plain", "none", "notebook"):
        assert isinstance(progress_display(mode), ProgressPrinter)
    with pytest.raises(ConfigError, match="progress must be one of auto, bar, plain, none, notebook"):
        progress_display("notebok")
    with pytest.raises(ConfigError, match="progress must be one of"):
        zerograd.fit(model(), data(), epochs=1, progress="fancy")


def test_the_display_updates_in_place_and_charts_the_epochs() -> None:
    screen = Screen()
    display = NotebookProgress(title="tiny", display=screen)
    x, y = data()
    zerograd.fit(model(), (x, y), eval_data=(x[:50], y[:50]), epochs=3, batch_size=10, metrics=["accuracy"],
                 device="cpu", callbacks=[display])

    progress, chart = screen.handles  # one HTML display and one chart, each updated in place
    first, last = progress.bundles[0]["text/html"], progress.bundles[-1]["text/html"]
    assert PROGRESS_CLASS in first and "<b>tiny</b>" in first and "parameters on cpu" in first
    assert len(progress.bundles) >= 7  # shown, then every epoch's start and end at least
    assert "done: 3 epochs in 0:0" in last and "test acc" in last and "<progress" in last
    assert last.count("<tr><td") >= 3 + 1  # a row per finished epoch, and the epochs' bar
    assert "tiny: 3/3 epochs (done" in progress.bundles[-1]["text/plain"]
    assert all(set(b) == {"image/png", "text/plain"} for b in chart.bundles)
    assert chart.bundles[-1]["text/plain"] == "<training curves, 3 epochs>"  # the last epoch is always drawn
    assert display.overhead_seconds > 0 and len(display.chart_seconds) == len(chart.bundles)


def test_batch_progress_shows_speed_eta_and_running_loss() -> None:
    class Peek(Callback):
        """Reads the display's text in the middle of the first epoch."""

        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_batch_end(self, state: Any) -> None:
            if state.epoch == 0 and state.batch == 15:
                self.seen.append(screen.handles[0].bundles[-1]["text/html"])

    screen = Screen()
    peek = Peek()
    display = NotebookProgress(display=screen, refresh_seconds=0.0, chart=False)  # read the loss every batch
    zerograd.fit(model(), data(), epochs=2, batch_size=10, device="cpu", callbacks=[display, peek])
    assert len(screen.handles) == 1  # chart=False: no image
    during = peek.seen[0]
    assert "samples/s" in during and "ETA" in during and "loss " in during and "lr 0.001" in during
    assert "epoch 1" in during and "150/200" in during  # the epoch's bar counts samples


def test_the_chart_is_drawn_at_most_about_once_a_second_for_fast_epochs() -> None:
    screen = Screen()
    display = NotebookProgress(display=screen)
    zerograd.fit(model(), data(40), epochs=40, batch_size=40, device="cpu", callbacks=[display])
    chart = screen.handles[1]
    assert len(chart.bundles) < 20  # 40 epochs of milliseconds: not a drawing per epoch
    assert chart.bundles[-1]["text/plain"] == "<training curves, 40 epochs>"
    assert "40 epochs of 1 batch</div>" in screen.handles[0].bundles[-1]["text/html"]  # not "1 batches"


def test_a_run_that_fails_leaves_the_display_saying_where_it_stopped() -> None:
    class Boom(Callback):
        def on_epoch_end(self, state: Any, logs: dict[str, float]) -> None:
            if state.epoch == 1:
                raise RuntimeError("boom")

    screen = Screen()
    display = NotebookProgress(display=screen, chart=False)
    with pytest.raises(RuntimeError, match="boom"), display:
        zerograd.fit(model(), data(), epochs=3, batch_size=10, device="cpu", callbacks=[display, Boom()])
    assert "stopped at epoch 2" in screen.handles[0].bundles[-1]["text/html"]
    assert "done" not in screen.handles[0].bundles[-1]["text/html"]


def test_history_shows_its_table() -> None:
    history = History([{"epoch": 1, "train_loss": 0.123456, "note": "<b>"}, {"epoch": 2, "train_loss": 0.05}])
    shown = history._repr_html_()
    assert shown.startswith("<table>") and shown.count("<tr>") == 3
    assert "0.1235" in shown and "&lt;b&gt;" in shown and "<th" in shown
    assert "no epoch yet" in History()._repr_html_()


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (7.4, "0:07"), (724, "12:04"), (3723, "1:02:03")])
def test_durations_read_as_clock_times(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
