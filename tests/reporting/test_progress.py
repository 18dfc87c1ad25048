"""Terminal progress: the live bar (terminals only), the tutorials' plain text, quiet runs, and a
per-batch hook that stays cheap."""
from __future__ import annotations

import io
import re

import pytest
import torch
from rich.console import Console

import zerograd
from zerograd.accelerator import Accelerator
from zerograd.errors import ConfigError
from zerograd.options import FitOptions
from zerograd.reporting.progress import (
    ProgressPrinter,
    check_progress_mode,
    epochs_to_show,
    format_plain_split,
    plain_batch_interval,
)
from zerograd.state import EpochTotals, LoopState


def console(*, terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=160, highlight=False)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def train_with(printer: ProgressPrinter, data, *, epochs: int = 3, batch_size: int = 10, samples: int = 300) -> None:
    x, y = data[0][:samples], data[1][:samples]
    zerograd.fit(tiny_model(), (x, y), eval_data=(x[:100], y[:100]), epochs=epochs, batch_size=batch_size,
                 lr=0.01, device="cpu", callbacks=[printer])


def test_plain_mode_prints_the_tutorials_text(tiny_classification) -> None:
    out = console(terminal=False)
    train_with(ProgressPrinter(out, mode="plain"), tiny_classification, epochs=2, batch_size=2, samples=200)
    text = out.file.getvalue()
    batch_lines = re.findall(r"^loss: (\d+\.\d{6})  \[\s*(\d+)/(\d+)\]$", text, flags=re.M)
    # 100 batches per epoch: a line after batch 1, 11, 21, ... (the tutorials' `batch % N == 0`)
    assert [int(done) for _, done, _ in batch_lines] == [2 + 20 * i for i in range(10)] * 2
    assert {total for _, _, total in batch_lines} == {"200"}
    tests = re.findall(r"^Test Error: Accuracy: (\d+\.\d)%, Avg loss: (\d+\.\d{6})$", text, flags=re.M)
    assert len(tests) == 2 and "Epoch 1/2\n" in text and "Epoch 2/2\n" in text


def test_format_plain_split_matches_the_tutorial_wording() -> None:
    assert format_plain_split("test",
                              {"loss": 0.41, "accuracy": 0.853}) == "Test Error: Accuracy: 85.3%, Avg loss: 0.410000"
    assert format_plain_split("val", {"loss": 0.5}) == "Validation Error: Avg loss: 0.500000"


def test_bar_mode_without_a_terminal_prints_one_line_per_epoch_and_no_redraws(tiny_classification) -> None:
    out = console(terminal=False)
    train_with(ProgressPrinter(out, mode="bar"), tiny_classification, batch_size=50)
    lines = out.file.getvalue().strip().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert all(re.search(r"train loss [\d.]+ acc [\d.]+%  test loss [\d.]+ acc [\d.]+%  lr 0\.01  [\d.]+ s$", line)
               for line in epoch_lines)
    assert "\r" not in out.file.getvalue() and "━" not in out.file.getvalue() and "samples/s" not in out.file.getvalue()


def test_bar_mode_on_a_terminal_shows_a_live_bar_with_rate_loss_and_lr(tiny_classification) -> None:
    out = console(terminal=True)
    train_with(ProgressPrinter(out, mode="bar", refresh_seconds=0.0), tiny_classification, epochs=1)
    text = out.file.getvalue()
    assert "samples/s" in text and "300/300" in text and "loss" in text and "lr" in text
    assert "epoch 1/1" in text


class CountingPrinter(ProgressPrinter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refreshed_at: list[tuple[int, int]] = []

    def _refresh_bar(self, state: LoopState) -> None:
        self.refreshed_at.append((state.epoch, state.batch))
        super()._refresh_bar(state)


def test_the_bar_refreshes_on_a_few_batches_only_not_every_batch(tiny_classification) -> None:
    printer = CountingPrinter(console(terminal=True), mode="bar", refresh_seconds=3600)
    train_with(printer, tiny_classification, epochs=2, batch_size=1, samples=100)  # 100 batches per epoch
    # while batches come faster than refresh_seconds the stride between refreshes grows x4
    assert printer.refreshed_at == [(epoch, batch) for epoch in (0, 1) for batch in (1, 5, 21, 85)]


def test_only_the_main_process_prints() -> None:
    out = console(terminal=True)
    model = tiny_model()
    totals = EpochTotals("cpu", [])
    totals.record(torch.tensor(1.0), torch.zeros(1), torch.zeros(1))  # a loss of 1.0 so far
    state = LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1),
                      Accelerator(torch.device("cpu"), rank=1, world_size=2), FitOptions(epochs=1), batches_per_epoch=4,
                      totals=totals)
    printer = ProgressPrinter(out, mode="bar")
    printer.on_fit_start(state)
    printer.on_epoch_start(state)
    for batch in range(1, 5):
        state.batch = batch
        printer.on_batch_end(state)
    printer.on_epoch_end(state, {"epoch": 1, "train_loss": 0.5, "seconds": 0.1})
    printer.on_fit_end(state)
    assert out.file.getvalue() == ""


def test_long_runs_print_about_ten_epoch_lines() -> None:
    shown = [e for e in range(1, 401) if e % epochs_to_show(400) == 0 or e in (1, 400)]
    assert len(shown) == 11 and shown[:2] == [1, 40]


def test_plain_batch_interval_gives_at_least_five_lines_per_epoch() -> None:
    assert plain_batch_interval(938) == 100 and plain_batch_interval(6000) == 1000 and plain_batch_interval(469) == 100
    assert plain_batch_interval(150) == 10 and plain_batch_interval(13) == 0  # tiny epochs: no batch lines


def test_unknown_progress_mode_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match='did you mean "bar"'):
        check_progress_mode("bars")


def test_quiet_training_prints_nothing_and_progress_none_prints_only_the_header(capsys, tmp_path) -> None:
    zerograd.train("linear-regression", out=tmp_path / "quiet", quiet=True, overrides={"epochs": 3, "plots": False})
    assert capsys.readouterr().out == ""
    zerograd.train("linear-regression", out=tmp_path / "none", progress="none", overrides={"epochs": 3, "plots": False})
    out = capsys.readouterr().out
    assert "linear-regression: 2 parameters" in out and "total" in out and "epoch 1/3" not in out


def test_progress_from_the_config_file_and_the_argument(capsys, tmp_path) -> None:
    zerograd.train("linear-regression", out=tmp_path / "a",
                   overrides={"epochs": 2, "progress": "plain", "plots": False})
    assert "Train: Avg loss:" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="progress must be one of"):
        zerograd.train("linear-regression", out=tmp_path / "b", overrides={"epochs": 2, "progress": "fancy"})
