"""Safe files (loading never runs code) and numerical failures (NaN/Inf) during training."""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from zerograd import engine, fit
from zerograd.api import resume, train
from zerograd.callbacks import Callback, Checkpointer
from zerograd.checkpoint_format import checkpoint_dirs, problem_with
from zerograd.cli import main as cli
from zerograd.errors import CheckpointError, ConfigError, TrainingError, ZerogradWarning
from zerograd.nan_guard import NonFiniteGuard

CONFIG: dict[str, Any] = {
    "name": "sinc-small",
    "data": {"dataset": "sinc", "n": 14},
    "model": {"name": "mlp", "sizes": [2, 24, 1], "activation_fn": "tanh", "flatten": False},
    "loss": "mse", "lr": 0.01, "batch_size": 16, "epochs": 2, "threads": 1, "checkpoint_every": 5,
    "progress": "none", "plots": False, "log_every": 0,
}


class Payload:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(path: Path, marker: Path, *, fix_manifest: bool) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))
    if fix_manifest:  # an attacker who also rewrote the hashes
        manifest_path = path.parent / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["files"][path.name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                        "bytes": path.stat().st_size}
        manifest_path.write_text(json.dumps(manifest))


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state: Any) -> None:
        if state.global_step == self.step:
            raise KeyboardInterrupt


def stopped_run(tmp_path: Path, step: int = 12) -> Path:
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(CONFIG, out=run_dir, quiet=True, callbacks=[StopAt(step)])
    return run_dir


@pytest.mark.parametrize("filename", ["model.safetensors", "state.safetensors"])
def test_a_pickle_in_place_of_a_checkpoint_file_is_refused_unread(tmp_path: Path, filename: str) -> None:
    run_dir = stopped_run(tmp_path, step=7)
    (only,) = checkpoint_dirs(run_dir / "checkpoints")
    marker = tmp_path / "pwned"
    plant_pickle(only / filename, marker, fix_manifest=True)
    assert problem_with(only) is None  # the hashes match: only the content check stands between
    with pytest.raises(CheckpointError, match="is a Python pickle.*refuses to load it.*run any code"):
        resume(run_dir, quiet=True)
    assert not marker.exists()


def test_a_planted_pickle_fails_its_hash_and_the_previous_checkpoint_is_used(tmp_path: Path) -> None:
    run_dir = stopped_run(tmp_path)
    newest, previous = checkpoint_dirs(run_dir / "checkpoints")[:2]
    marker = tmp_path / "pwned"
    plant_pickle(newest / "model.safetensors", marker, fix_manifest=False)
    with pytest.warns(ZerogradWarning, match=f"{newest.name} is damaged.*replaced.*{previous.name}"):
        resume(run_dir, quiet=True)
    assert not marker.exists() and (run_dir / "summary.json").is_file()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_finished_runs_weights_replaced_by_a_pickle_are_refused_on_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    train(CONFIG | {"epochs": 1}, out=tmp_path / "run", quiet=True)
    weights, marker = tmp_path / "run" / "model.safetensors", tmp_path / "pwned"
    if kind == "pickle":
        weights.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, weights)
    assert cli(["evaluate", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerograd: error: ") and "pickle" in err and len(err.splitlines()) == 1
    assert not marker.exists()


def test_yaml_configs_cannot_run_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text('extends: linear-regression\nname: !!python/object/apply:os.system ["touch '
                                        f'{marker}"]\n')
    assert cli(["train", str(tmp_path / "evil.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "is not a plain config: it holds a Python tag" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------
# NaN / Inf

def test_a_diverging_lr_stops_with_where_why_and_the_last_good_checkpoint(tmp_path: Path) -> None:
    config = CONFIG | {"lr": 50.0, "optimizer": "sgd", "epochs": 5, "checkpoint_every": 1}
    with pytest.raises(TrainingError) as caught:
        train(config, out=tmp_path / "run", quiet=True)
    message = str(caught.value)
    assert message.startswith("training diverged: the loss became")
    assert "epoch 1, batch" in message or "epoch 2, batch" in message
    assert "lr 50: try 5" in message and "inputs" in message and "on_nan: skip" in message
    newest = checkpoint_dirs(tmp_path / "run" / "checkpoints")[0]
    assert f"checkpoint, written before this was seen, is {newest}" in message
    weights = load_file(newest / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())  # good indeed


def test_a_diverging_run_on_the_cli_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["train", "linear-regression", "--lr", "10", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("zerograd: error: training diverged") and len(err.splitlines()) == 1
    assert "no checkpoint was written before it" in err


def regression_data(n: int = 160) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


def test_on_nan_skip_leaves_bad_batches_out_and_counts_them() -> None:
    x, y = regression_data()
    x = x[:96]
    y = y[:96]
    x[5, 0] = float("nan")  # sample 5 is in batch 0 (no shuffling): one bad batch per epoch
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    history = fit(model, (x, y), loss="mse", epochs=3, batch_size=16, shuffle=False, on_nan="skip", preflight=False)
    assert history["skipped_batches"] == [1, 1, 1]
    assert all(math.isfinite(v) for v in history["train_loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())

    torch.manual_seed(0)
    without = nn.Linear(4, 1)  # the same run on the data minus that batch
    fit(without, (x[16:], y[16:]), loss="mse", epochs=3, batch_size=16, shuffle=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), without.parameters()))


class NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


class BadAt(nn.Module):
    """A linear model whose call number `bad_call` gives a NaN output ("loss") or NaN gradients."""

    def __init__(self, bad_call: int, what: str) -> None:
        super().__init__()
        self.linear, self.calls, self.bad_call, self.what = nn.Linear(4, 1), 0, bad_call, what

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.linear(x)
        if self.calls == self.bad_call:
            out = out * float("nan") if self.what == "loss" else NaNGradient.apply(out)
        return out


def test_on_nan_skip_also_skips_a_step_with_nan_gradients() -> None:
    model = BadAt(bad_call=4, what="gradients")
    history = fit(model, regression_data(), loss="mse", epochs=1, batch_size=16, on_nan="skip", preflight=False,
                  threads=1)
    assert history["skipped_batches"] == [1]
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(("bad_call", "message"), [
    (5, "the loss became NaN at epoch 1, batch 6 "),          # the next batch's loss shows it
    (6, r"the weights became NaN/Inf at epoch 1 \(after 6"),   # the checkpoint of step 6 looks first
    (10, r"the weights became NaN/Inf at epoch 1 \(after 10"),  # the epoch's last step: the epoch-end check
])
def test_on_nan_error_catches_nan_gradients_before_they_reach_a_checkpoint(tmp_path: Path, bad_call: int,
                                                                          message: str) -> None:
    model = BadAt(bad_call=bad_call, what="gradients")  # a finite loss, then NaN weights
    with pytest.raises(TrainingError, match=message):
        fit(model, regression_data(), loss="mse", epochs=2, batch_size=16, preflight=False, threads=1,
            callbacks=[Checkpointer(tmp_path, every=2)])
    newest = checkpoint_dirs(tmp_path)[0]
    assert newest.name == {5: "step-00000004", 6: "step-00000004", 10: "step-00000008"}[bad_call]
    assert all(torch.isfinite(t).all() for t in load_file(newest / "model.safetensors").values())


@pytest.fixture
def deferred_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an accelerator run does: NaN checks recorded on the device, looked at every 4 batches."""
    monkeypatch.setattr(engine, "NonFiniteGuard", functools.partial(NonFiniteGuard, check_every=4, every_batch=False))


@pytest.mark.parametrize(("bad_call", "every", "newest"), [(3, 100, None), (6, 1, "step-00000005")])
def test_deferred_nan_checks_still_name_the_exact_batch_and_never_checkpoint_nan(
        tmp_path: Path, bad_call: int, every: int, newest: str | None, deferred_checks: None) -> None:
    model = BadAt(bad_call=bad_call, what="loss")
    with pytest.raises(TrainingError, match=f"epoch 1, batch {bad_call} "):
        fit(model, regression_data(), loss="mse", epochs=1, batch_size=16, preflight=False, threads=1,
            callbacks=[Checkpointer(tmp_path, every=every)])
    found = checkpoint_dirs(tmp_path)
    assert (found[0].name if found else None) == newest
    for path in found:
        assert all(torch.isfinite(t).all() for t in load_file(path / "model.safetensors").values())


def test_on_nan_must_be_error_or_skip() -> None:
    with pytest.raises(ConfigError, match='on_nan must be "error"'):
        fit(nn.Linear(4, 1), regression_data(), loss="mse", on_nan="ignore")
