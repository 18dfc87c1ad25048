"""Training that fails without a word: a loss that explodes but stays finite, an epoch that
`on_nan: skip` left mostly out, NaN weights under `on_nan: skip`; and no false alarms on runs that
learn (losses that start high, summed losses, a first sample the untrained model fits by luck)."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from zerograd import fit
from zerograd.callbacks import Callback
from zerograd.cli import main
from zerograd.errors import TrainingError, ZerogradWarning


def classes(n: int = 640, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=generator)
    return x, (x[:, :4].argmax(dim=1))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


# --- a loss that explodes but stays finite ------------------------------------------------------

def test_adam_at_a_huge_lr_stops_with_a_divergence_error_although_the_loss_stays_finite() -> None:
    with pytest.raises(TrainingError) as caught:
        fit(mlp(), classes(), optimizer="adam", lr=1e6, batch_size=10, epochs=1, threads=1)
    message = str(caught.value)
    assert message.startswith("training diverged: the loss became ") and "times its start" in message
    assert "epoch 1, batches 1-" in message and "lr 1e+06: try 100000" in message and "clip_grad_norm" in message


def test_the_explosion_is_seen_at_the_end_of_an_epoch_shorter_than_a_window() -> None:
    """Full-batch training (one batch an epoch): the epoch's end looks, every epoch."""
    x, y = classes(64)
    with pytest.raises(TrainingError, match=r"training diverged: the loss became .* times its start"):
        fit(mlp(), (x, y), optimizer="sgd", lr=1e3, batch_size=64, epochs=30, threads=1)


def test_a_diverging_csv_run_on_the_cli_exits_2_with_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    lines = ["a,b,c,label"] + [f"{a:.4f},{b:.4f},{c:.4f},{int(a + b > 0)}" for a, b, c in x]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    code = main(["train", "--data", str(tmp_path / "t.csv"), "--lr", "1e6", "--batch-size", "4", "--epochs", "2",
                 "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu", "--set", "plots=false"])
    err = capsys.readouterr().err.strip()
    assert (code == 2 and err.startswith("zerograd: error: training diverged: the loss became")
            and len(err.splitlines()) == 1)


def test_no_false_alarm_when_the_first_sample_happens_to_be_fitted_already() -> None:
    """Batches of one sample, the first of which the untrained model predicts exactly (loss 0):
    the start is averaged over several samples, so the ordinary losses after it are no blow-up."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    y = 10 * x.sum(dim=1, keepdim=True)
    with torch.no_grad():
        y[0] = model(x[:1])[0]  # the first batch's loss is exactly 0
    history = fit(model, (x, y), loss="mse", optimizer="sgd", lr=1e-3, batch_size=1, shuffle=False, epochs=2, threads=1)
    assert history["train_loss"][-1] < history["train_loss"][0]


@pytest.mark.parametrize("loss", ["mse", {"name": "mse", "reduction": "sum"}])
def test_no_false_alarm_for_a_loss_that_starts_high_and_falls(loss: Any) -> None:
    """Targets on a scale of thousands: the loss starts near 1e7 and falls by orders of magnitude."""
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(2))
    y = 3000 * x[:, :1] + 500
    torch.manual_seed(0)
    history = fit(nn.Linear(3, 1), (x, y), loss=loss, optimizer="adam", lr=50.0, batch_size=8, epochs=8, threads=1)
    assert history["train_loss"][-1] < history["train_loss"][0] / 100


# --- on_nan: skip -------------------------------------------------------------------------------

def nan_rows(batches: list[int], n: int = 160, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1, keepdim=True)
    for batch in batches:
        x[batch * batch_size, 0] = math.nan
    return x, y


def test_on_nan_skip_fails_an_epoch_that_left_out_most_of_its_batches() -> None:
    x, y = nan_rows(list(range(6)))  # 6 of 10 batches hold a NaN
    with pytest.raises(TrainingError) as caught:
        fit(nn.Linear(4, 1), (x, y), loss="mse", batch_size=16, shuffle=False, on_nan="skip", preflight=False,
            threads=1)
    message = str(caught.value)
    assert "of 6 of the epoch's 10 batches, more than half, became NaN/Inf at epoch 1, batch 6 " in message
    assert "Skipping batches cannot help" in message


def test_on_nan_skip_warns_when_a_noticeable_share_was_left_out() -> None:
    x, y = nan_rows([2, 7])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(nn.Linear(4, 1), (x, y), loss="mse", batch_size=16, shuffle=False, on_nan="skip",
                      preflight=False, threads=1)
    assert history["skipped_batches"] == [2]
    texts = [str(w.message) for w in caught if issubclass(w.category, ZerogradWarning)]
    assert any("epoch 1: on_nan: skip left out 2 of 10 batches (20%)" in text for text in texts)


class InfWeightsAtTheEnd(Callback):
    """A step that overflows the weights on the very last batch (a finite loss, finite gradients)."""

    def on_batch_end(self, state: Any) -> None:
        if state.epoch == state.options.epochs - 1 and state.batch == state.batches_per_epoch:
            with torch.no_grad():
                next(state.raw_model.parameters()).fill_(math.inf)


def test_on_nan_skip_does_not_finish_a_run_with_inf_weights() -> None:
    x, y = nan_rows([])
    with pytest.raises(TrainingError, match=r"the weights became NaN/Inf at epoch 2 .*once the weights themselves"):
        fit(nn.Linear(4, 1), (x, y), loss="mse", batch_size=16, epochs=2, on_nan="skip", threads=1,
            callbacks=[InfWeightsAtTheEnd()])
