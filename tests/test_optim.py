"""Learning-rate schedules: the lr each optimizer step actually used, and the lr logged per epoch,
follow the schedule's formula; plateau cuts the lr when the monitored metric stalls."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zerograd.callbacks import Callback
from zerograd.engine import fit
from zerograd.errors import ConfigError
from zerograd.optim import build_optimizer, build_schedule, check_schedule
from zerograd.options import FitOptions

BATCH = 4


class StepLRs(Callback):
    """Records the lr of every optimizer step (`Schedule.last_lr`) and the momentum at the end."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.final_group: dict = {}

    def on_batch_end(self, state) -> None:
        self.lrs.append(state.schedule.last_lr)

    def on_fit_end(self, state) -> None:
        self.final_group = dict(state.optimizer.param_groups[0])


def run(schedule, *, epochs: int = 3, steps_per_epoch: int = 8, lr: float = 0.1, optimizer="sgd", **options):
    """Fit a linear model on random data and return (per-step lrs, per-epoch logged lrs, recorder)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(steps_per_epoch * BATCH, 2, generator=generator)
    y = torch.randn(steps_per_epoch * BATCH, 1, generator=generator)
    recorder = StepLRs()
    history = fit(nn.Linear(2, 1), (x, y), loss="mse", optimizer=optimizer, lr=lr, batch_size=BATCH,
                  epochs=epochs, schedule=schedule, device="cpu", callbacks=[recorder], **options)
    return recorder.lrs, history["lr"], recorder


def epoch_starts(step_lrs: list[float], steps_per_epoch: int) -> list[float]:
    return step_lrs[::steps_per_epoch]


def test_step_decay_multiplies_by_gamma_every_step_size_epochs():
    steps, logged, _ = run({"name": "step", "step_size": 2, "gamma": 0.5}, epochs=5)
    expected = [0.1 * 0.5 ** (epoch // 2) for epoch in range(5)]
    assert logged == pytest.approx(expected)
    assert steps == pytest.approx([lr for lr in expected for _ in range(8)])


def test_exponential_decay_per_epoch():
    steps, logged, _ = run({"name": "exponential", "gamma": 0.7}, epochs=4)
    expected = [0.1 * 0.7**epoch for epoch in range(4)]
    assert logged == pytest.approx(expected)
    assert steps == pytest.approx([lr for lr in expected for _ in range(8)])


def test_cosine_anneals_per_step_over_the_whole_run():
    steps, logged, _ = run({"name": "cosine", "min_lr": 0.01}, epochs=3)
    total = 3 * 8
    expected = [0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    assert steps == pytest.approx(expected)
    assert logged == pytest.approx(epoch_starts(expected, 8))


def test_cosine_counts_optimizer_steps_not_batches_under_accumulation():
    steps, _, _ = run({"name": "cosine"}, epochs=2, accumulate=2)
    total = 2 * 8 // 2  # 4 updates per epoch
    expected = [0.1 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    # on_batch_end sees each step's lr twice (two batches per update)
    assert steps[1::2] == pytest.approx(expected)


def test_warmup_cosine_ramps_up_linearly_then_anneals():
    steps, _, _ = run({"name": "warmup_cosine", "warmup_steps": 4}, epochs=2)
    total, warmup = 16, 4
    expected = [0.1 * (t + 1) / warmup for t in range(warmup)]
    expected += [0.1 * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) for t in range(warmup, total)]
    assert steps == pytest.approx(expected)
    assert steps[:warmup] == sorted(steps[:warmup]) and max(steps) == pytest.approx(0.1)


def test_onecycle_rises_to_max_lr_then_falls_far_below_the_start():
    steps, logged, recorder = run({"name": "onecycle", "max_lr": 0.2, "pct_start": 0.25}, epochs=4)
    total = 32
    peak = steps.index(max(steps))
    assert steps[0] == pytest.approx(0.2 / 25)  # max_lr / div_factor
    assert max(steps) == pytest.approx(0.2)
    assert peak == round(0.25 * total) - 1
    assert all(a < b for a, b in zip(steps[:peak], steps[1:peak + 1]))  # strictly up
    assert all(a > b for a, b in zip(steps[peak:-1], steps[peak + 1:]))  # strictly down
    assert steps[-1] == pytest.approx(0.2 / 25 / 1e4, rel=1e-3)  # ... / final_div_factor
    assert logged == pytest.approx(epoch_starts(steps, 8))
    # plain SGD (momentum 0) must not be given momentum by the cycle
    assert recorder.final_group["momentum"] == 0


def test_onecycle_cycles_adam_betas():
    _, _, recorder = run({"name": "onecycle"}, epochs=1, optimizer="adam")
    assert recorder.final_group["betas"][0] != 0.9  # cycled between 0.85 and 0.95


def test_plateau_cuts_lr_after_patience_epochs_of_a_stalled_val_loss():
    # Inputs are all zero and there is no bias: the output is 0 whatever the weight, so the
    # validation loss is exactly the same every epoch (a stalled metric).
    x, y = torch.zeros(40, 1), torch.randn(40, 1, generator=torch.Generator().manual_seed(1))
    history = fit(nn.Linear(1, 1, bias=False), (x, y), loss="mse", optimizer="sgd", lr=0.1, batch_size=10,
                  epochs=7, val_split=0.25, device="cpu",
                  schedule={"name": "plateau", "monitor": "val_loss", "patience": 1, "factor": 0.5})
    assert len(set(history["val_loss"])) == 1
    # epoch 1 sets the best; epochs 2 and 3 do not improve: more than patience=1 -> cut (for epoch 4), ...
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_plateau_keeps_lr_while_the_metric_improves():
    optimizer = build_optimizer([nn.Parameter(torch.zeros(1))], "sgd", lr=1.0)
    schedule = build_schedule(optimizer, {"name": "plateau", "patience": 0}, steps_per_epoch=1, epochs=1)
    for value in [1.0, 0.9, 0.8, 0.7]:
        schedule.after_epoch({"val_loss": value})
    assert optimizer.param_groups[0]["lr"] == 1.0
    schedule.after_epoch({"val_loss": 0.7})  # stalled
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_plateau_on_accuracy_watches_for_a_rise():
    optimizer = build_optimizer([nn.Parameter(torch.zeros(1))], "sgd", lr=1.0)
    schedule = build_schedule(optimizer, {"name": "plateau", "monitor": "val_accuracy", "patience": 0},
                              steps_per_epoch=1, epochs=1)
    for value in [0.5, 0.6, 0.7]:  # rising accuracy is progress ("auto" mode -> max)
        schedule.after_epoch({"val_accuracy": value})
    assert optimizer.param_groups[0]["lr"] == 1.0


def test_plateau_on_a_metric_the_run_does_not_log_is_a_clear_error():
    with pytest.raises(ConfigError, match='monitors "val_loss".*logged: '):
        run({"name": "plateau"}, epochs=1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "cosin"}, 'unknown schedule "cosin" \\(did you mean "cosine"\\?\\)'),
        ({"name": "step", "gama": 0.5}, 'schedule step has no option "gama" \\(did you mean "gamma"\\?\\)'),
        ({"name": "onecycle", "pct_start": 2.0}, "bad options for schedule onecycle"),
        ({"name": "plateau", "mode": "up"}, 'schedule plateau mode must be "min", "max" or "auto"'),
    ],
)
def test_bad_schedules_fail_at_config_time(spec, message):
    with pytest.raises(ConfigError, match=message):
        FitOptions.from_kwargs({"schedule": spec})


def test_check_schedule_accepts_every_named_schedule():
    for name in ("step", "exponential", "cosine", "onecycle", "warmup_cosine", "plateau"):
        check_schedule(name, lr=0.01, epochs=3)
