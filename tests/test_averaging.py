"""Weight averaging: `ema` and `swa` (callbacks/averaging.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.optim.swa_utils import update_bn

from zerograd import fast
from zerograd.api import train
from zerograd.callbacks import Callback, Checkpointer, ResumeFrom
from zerograd.engine import fit
from zerograd.errors import ConfigError
from zerograd.fast.averaging import lerp_

OPTIONS = dict(epochs=3, batch_size=16, lr=0.05, seed=5, threads=1, optimizer="adam")


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(120, 6, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def classifier(batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(3)
    norm = [nn.BatchNorm1d(16)] if batch_norm else []
    return nn.Sequential(nn.Linear(6, 16), *norm, nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


class Trace(Callback):
    """The model's own (trained) weights after every batch and at each epoch end, and at fit end
    before the averaging callback (order -60) puts the averages in."""

    order: ClassVar[int] = -70

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.epochs: list[dict[str, torch.Tensor]] = []
        self.start: dict[str, torch.Tensor] = {}
        self.end: dict[str, torch.Tensor] = {}
        self.seen = 0

    def on_fit_start(self, state: Any) -> None:
        self.start = {k: v.clone() for k, v in state.raw_model.state_dict().items()}

    def on_batch_end(self, state: Any) -> None:
        if state.global_step != self.seen:
            self.seen = state.global_step
            self.steps.append({k: v.clone() for k, v in state.raw_model.state_dict().items()})

    def on_epoch_end(self, state: Any, logs: dict[str, Any]) -> None:
        self.epochs.append({k: v.clone() for k, v in state.raw_model.state_dict().items()})

    def on_fit_end(self, state: Any) -> None:
        self.end = {k: v.clone() for k, v in state.raw_model.state_dict().items()}


def accuracy(model: nn.Module) -> float:
    model.eval()
    x, y = data()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_ema_weights_differ_from_the_trained_ones_and_are_what_is_evaluated_and_kept() -> None:
    model, trace = classifier(), Trace()
    history = fit(model, data(), eval_data=data(), callbacks=[trace], ema={"decay": 0.9}, **OPTIONS)
    expected = {k: v.clone() for k, v in trace.start.items()}
    for n, weights in enumerate(trace.steps):  # the average of the weights after every step, with warm-up
        decay = min(0.9, (1 + n) / (10 + n))
        for name in expected:
            expected[name].lerp_(weights[name], 1 - decay)
    final = model.state_dict()
    assert len(trace.steps) == 24
    assert all(torch.equal(final[k], expected[k]) for k in final)
    assert not torch.equal(final["0.weight"], trace.end["0.weight"])
    assert history.records[-1]["test_accuracy"] == pytest.approx(accuracy(model))


def test_swa_keeps_the_mean_of_the_epoch_end_weights_from_its_start_epoch() -> None:
    model, trace = classifier(), Trace()
    fit(model, data(), callbacks=[trace], swa={"start_epoch": 2, "lr": 0.01}, **(OPTIONS | {"epochs": 4}))
    final = model.state_dict()
    for name in final:
        mean = torch.stack([epoch[name] for epoch in trace.epochs[1:]]).mean(0)
        torch.testing.assert_close(final[name], mean)
    assert not torch.equal(final["0.weight"], trace.end["0.weight"])


def test_swa_recomputes_the_batch_norm_statistics_of_the_averaged_weights() -> None:
    model, trace = classifier(batch_norm=True), Trace()
    fit(model, data(), callbacks=[trace], swa=True, **(OPTIONS | {"epochs": 4}))
    recomputed = classifier(batch_norm=True)
    recomputed.load_state_dict(model.state_dict())
    update_bn([data()], recomputed)  # one batch: the whole set (eval_batch_size 1000)
    for name in ("1.running_mean", "1.running_var"):
        torch.testing.assert_close(model.state_dict()[name], recomputed.state_dict()[name])
        assert not torch.allclose(model.state_dict()[name], trace.end[name])


class Crash(Exception):
    pass


class CrashAt(Callback):
    def on_batch_end(self, state: Any) -> None:
        if (state.epoch, state.batch) == (1, 5):  # in epoch 2, after a checkpoint at step 3k
            raise Crash


@pytest.mark.parametrize("changes", [
    {"ema": True},
    {"ema": {"decay": 0.95, "warmup": False}, "accumulate": 3},
    {"swa": {"start_epoch": 2, "lr": 0.01, "anneal_epochs": 2}, "schedule": "onecycle", "epochs": 4},
    {"swa": {"start_epoch": 1}, "val_split": 0.2, "early_stopping": {"monitor": "val_loss", "patience": 5}},
])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_resume_is_exact_with_weight_averaging(tmp_path: Path, changes: dict, batch_norm: bool) -> None:
    options = OPTIONS | changes
    reference = classifier(batch_norm)
    expected = fit(reference, data(), eval_data=data(), **options)
    with pytest.raises(Crash):
        fit(classifier(batch_norm), data(), eval_data=data(), callbacks=[CrashAt(), Checkpointer(tmp_path, every=2)],
            **options)
    resumed = classifier(batch_norm)
    history = fit(resumed, data(), eval_data=data(), callbacks=[ResumeFrom(tmp_path)], **options)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h.records]  # noqa: E731
    assert strip(history) == strip(expected)


CONFIG: dict[str, Any] = {
    "name": "sinc-small", "data": {"dataset": "sinc", "n": 12},
    "model": {"name": "mlp", "sizes": [2, 16, 1], "activation_fn": "tanh", "flatten": False},
    "loss": "mse", "lr": 0.01, "batch_size": 16, "epochs": 2, "threads": 1, "progress": "none", "plots": False,
    "log_every": 0, "checkpoint_every": "off",
}


def test_a_run_with_ema_saves_the_averaged_weights_and_says_so(tmp_path: Path) -> None:
    trace = Trace()
    run = train(CONFIG | {"ema": {"decay": 0.99}}, out=tmp_path / "run", quiet=True, callbacks=[trace])
    assert run.summary["weights"] == "ema (decay 0.99, 18 updates)"
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert not torch.equal(saved["0.weight"], trace.end["0.weight"])
    assert all(torch.equal(saved[k], v) for k, v in run.model.state_dict().items())
    assert run.config["ema"] == {"decay": 0.99}


@pytest.mark.parametrize(("options", "message"), [
    ({"ema": True, "swa": True}, "choose one of them"),
    ({"ema": {"decay": 1.0}}, r"ema decay must be a number in \(0, 1\)"),
    ({"ema": {"rate": 0.9}}, 'ema has no option "rate"'),
    ({"swa": {"start_epoch": 9}}, r"swa start_epoch must be an epoch from 1 to epochs \(3\)"),
    ({"swa": {"lr": 0}}, "swa lr must be a number > 0"),
])
def test_bad_averaging_options_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit(classifier(), data(), **(OPTIONS | options))


def test_the_foreach_ema_update_is_bitwise_the_plain_one(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(7, 5, generator=generator), torch.randn(3, generator=generator)]
    fused = [torch.randn(7, 5, generator=generator), torch.randn(3, generator=generator)]
    plain = [t.clone() for t in fused]
    lerp_(fused, weights, 0.01)
    monkeypatch.setattr(fast, "enabled", lambda: False)
    lerp_(plain, weights, 0.01)
    assert all(torch.equal(a, b) for a, b in zip(fused, plain))
