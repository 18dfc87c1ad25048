"""EarlyStopping: stops at the right epoch (patience, min_delta, mode), puts the best weights
back, and tells the loop which epoch was best and why training stopped."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from zerograd.callbacks import Callback, EarlyStopping, early_stopping_from
from zerograd.engine import fit, run_fit
from zerograd.errors import ConfigError


def scripted(stopper: EarlyStopping, values: list[float], monitor: str = "val_loss") -> tuple[int, SimpleNamespace]:
    """Feed one monitored value per epoch; return the epoch after which training stopped (or the
    number of epochs when it never stopped) and the fake loop state, with the best epoch the
    stopper found."""
    model = nn.Linear(1, 1)
    state = SimpleNamespace(raw_model=model, best_epoch=None, stop_reason="completed", stopped=False,
                            evaluated_weights=model.state_dict)  # LoopState's: the weights the evaluation saw
    state.request_stop = lambda reason: (setattr(state, "stopped", True), setattr(state, "stop_reason", reason))
    stopped_after = len(values)
    for epoch, value in enumerate(values, start=1):
        stopper.on_epoch_end(state, {"epoch": epoch, monitor: value})
        if state.stopped:
            stopped_after = epoch
            break
    state.best_epoch = stopper.best_epoch
    return stopped_after, state


def test_stops_after_patience_epochs_without_improvement():
    stopped_after, state = scripted(EarlyStopping(patience=3), [1.0, 0.9, 0.95, 0.93, 0.91, 0.5, 0.4])
    assert stopped_after == 5  # best at 2, then 3 epochs without a new best
    assert state.best_epoch == 2 and state.stop_reason == "early_stopping"


def test_an_improvement_resets_the_patience():
    stopped_after, state = scripted(EarlyStopping(patience=2), [1.0, 1.1, 0.8, 0.9, 0.7, 0.75, 0.76, 0.1])
    assert stopped_after == 7 and state.best_epoch == 5


def test_patience_zero_stops_at_the_first_epoch_without_improvement():
    stopped_after, state = scripted(EarlyStopping(patience=0), [1.0, 0.9, 0.9])
    assert stopped_after == 3 and state.best_epoch == 2


def test_improvements_smaller_than_min_delta_do_not_count():
    values = [1.0, 0.995, 0.99, 0.985, 0.98]
    assert scripted(EarlyStopping(patience=2, min_delta=0.02), values)[0] == 3
    assert scripted(EarlyStopping(patience=2, min_delta=0.0), values)[0] == 5  # never stops
    assert scripted(EarlyStopping(patience=2, min_delta=0.0), values)[1].stop_reason == "completed"


def test_accuracy_is_watched_for_a_rise():
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)
    assert stopper.mode == "max"
    stopped_after, state = scripted(stopper, [0.5, 0.7, 0.8, 0.75], monitor="val_accuracy")
    assert stopped_after == 4 and state.best_epoch == 3


def test_nan_never_counts_as_an_improvement():
    stopped_after, state = scripted(EarlyStopping(patience=1), [1.0, float("nan"), 0.5])
    assert stopped_after == 2 and state.best_epoch == 1


class WeightsPerEpoch(Callback):
    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, state, logs) -> None:
        self.weights.append(copy.deepcopy(state.raw_model.state_dict()))


def diverging_validation() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Train on y = x, validate on y = -x: as the weight moves from 0 towards 1, the validation
    loss (w + 1)^2 E[x^2] rises every epoch, so the best validation epoch is the first."""
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    return (x, x.clone()), (x, -x)


def test_fit_stops_at_the_right_epoch_and_restores_the_best_weights():
    train, val = diverging_validation()
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    weights = WeightsPerEpoch()
    final = run_fit(model, train, val_data=val, loss="mse", optimizer="sgd", lr=0.05, batch_size=8, epochs=20,
                    early_stopping={"monitor": "val_loss", "patience": 2}, device="cpu", callbacks=[weights])
    history = final.history
    losses = history["val_loss"]
    assert all(a < b for a, b in zip(losses, losses[1:]))  # rising, as designed
    assert len(history) == 3  # best at 1, then 2 epochs without improvement
    assert final.stop_reason == "early_stopping"
    assert final.best_epoch == 1 and final.restored_epoch == 1
    assert torch.equal(model.weight, weights.weights[0]["weight"])  # epoch 1's weights are back
    assert not torch.equal(model.weight, weights.weights[-1]["weight"])


def test_fit_that_keeps_improving_runs_to_the_end():
    train, val = diverging_validation()
    final = run_fit(nn.Linear(1, 1, bias=False), train, val_data=val, loss="mse", optimizer="sgd", lr=0.05,
                    batch_size=8, epochs=4, early_stopping={"monitor": "train_loss", "patience": 1}, device="cpu")
    assert len(final.history) == 4
    assert final.stop_reason == "completed" and final.best_epoch == 4


def test_monitoring_a_metric_that_is_not_logged_is_a_clear_error():
    train, _ = diverging_validation()
    with pytest.raises(ConfigError, match='early_stopping monitors "val_loss", which this run does not log.*logged: '):
        fit(nn.Linear(1, 1), train, loss="mse", epochs=2, early_stopping={"patience": 1}, device="cpu")


def test_early_stopping_config_errors():
    with pytest.raises(ConfigError, match='early_stopping has no option "patiense" \\(did you mean "patience"\\?\\)'):
        early_stopping_from({"patiense": 2})
    with pytest.raises(ConfigError, match='early_stopping mode must be "min", "max" or "auto"'):
        early_stopping_from({"mode": "lowest"})
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        early_stopping_from({"patience": -1})
    assert early_stopping_from(True).monitor == "val_loss"
    assert early_stopping_from(None) is None and early_stopping_from({}) is None
