"""`max_steps`: a training budget in optimizer steps, so a run can end inside an epoch (the fast
recipes train 1.5 epochs, say); the epoch it ends in is evaluated like a whole one, and a
schedule is sized to the steps that are taken."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from zerograd import config as configs
from zerograd.callbacks import Callback, Checkpointer, ResumeFrom
from zerograd.cli import main
from zerograd.engine import run_fit
from zerograd.errors import ConfigError


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def toy_data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


class StopAtStep(Callback):
    """What a user could do before `max_steps`: ask the loop to stop after the K-th step."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_batch_end(self, state) -> None:
        if state.global_step >= self.steps:
            state.request_stop("steps")


OPTIONS = {"batch_size": 8, "epochs": 3, "lr": 0.05, "threads": 1, "device": "cpu"}  # 6 steps an epoch


def test_max_steps_stops_inside_an_epoch_with_the_weights_of_that_many_steps():
    data = toy_data()
    budget = run_fit(mlp(), data, eval_data=data, max_steps=9, **OPTIONS)
    stopped = run_fit(mlp(), data, callbacks=[StopAtStep(9)], **OPTIONS)
    assert budget.global_step == stopped.global_step == 9
    for a, b in zip(budget.model.parameters(), stopped.model.parameters()):
        assert torch.equal(a, b)
    # the cut epoch (2nd) ends like a whole one: trained, evaluated, counted; no third epoch
    assert budget.history["epoch"] == [1, 2]
    assert budget.epoch == 2 and budget.batch == 0 and budget.stop_reason == "completed"
    assert "test_accuracy" in budget.history.last and "train_loss" in budget.history.last


def test_max_steps_beyond_the_run_changes_nothing():
    data = toy_data()
    plain = run_fit(mlp(), data, **OPTIONS)
    budget = run_fit(mlp(), data, max_steps=1000, **OPTIONS)
    assert plain.global_step == budget.global_step == 18
    for a, b in zip(plain.model.parameters(), budget.model.parameters()):
        assert torch.equal(a, b)


def test_max_steps_counts_optimizer_steps_under_accumulation():
    result = run_fit(mlp(), toy_data(), max_steps=4, accumulate=2, **OPTIONS)  # 3 steps an epoch
    assert result.global_step == 4 and len(result.history) == 2


class LrSeen(Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_batch_end(self, state) -> None:
        self.seen.append(state.optimizer.param_groups[0]["lr"])


def test_a_step_schedule_is_sized_to_max_steps():
    schedule = {"name": "onecycle", "max_lr": 0.1, "div_factor": 10.0, "final_div_factor": 100.0, "pct_start": 0.3}
    lrs = LrSeen()
    run_fit(mlp(), toy_data(), max_steps=9, schedule=schedule, callbacks=[lrs], **OPTIONS)
    # the whole cycle in the 9 steps taken: up to max_lr and down to its end (sized to the 18 steps
    # of 3 epochs, it would stop half-way, near max_lr)
    assert len(lrs.seen) == 9
    assert max(lrs.seen) == pytest.approx(0.1, rel=0.2)
    # seen after each step: the lr of the next one, so the 9th step took seen[-2], the cycle's last
    assert lrs.seen[-2] == pytest.approx(0.1 / 10.0 / 100.0)


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "ten"])
def test_bad_max_steps_fail_before_training(value):
    with pytest.raises(ConfigError, match="max_steps"):
        run_fit(mlp(), toy_data(), max_steps=value, **OPTIONS)


def test_max_steps_is_a_config_and_set_key_and_a_bad_one_is_one_line(tmp_path: Path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "description": "tiny sinc", "data": {"dataset": "sinc", "n": 10},
        "model": {"name": "mlp", "sizes": [2, 16, 1], "activation_fn": "tanh", "flatten": False},
        "loss": "mse", "optimizer": "adam", "lr": 0.01, "batch_size": 20, "epochs": 3, "device": "cpu"}))
    assert configs.resolve(str(path), dict([configs.parse_assignment("max_steps=7")]))["max_steps"] == 7
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--set", "max_steps=0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_steps must be > 0" in err[0]


def test_a_checkpoint_is_not_resumed_with_another_max_steps(tmp_path: Path):
    """max_steps sizes the schedule and ends the run: changing it is changing the computation."""
    run_fit(mlp(), toy_data(), max_steps=9, callbacks=[Checkpointer(tmp_path, every=2)], **OPTIONS)
    with pytest.raises(ConfigError, match="max_steps 9 -> 12"):
        run_fit(mlp(), toy_data(), max_steps=12, callbacks=[ResumeFrom(tmp_path)], **OPTIONS)
