"""TensorBoard event files (`--tensorboard`): scalars and the lr, readable by TensorBoard itself."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import zerograd
from zerograd.cli import main
from zerograd.errors import ConfigError
from zerograd.reporting.tensorboard import TensorBoardLogger, scalar_tag


def test_training_with_tensorboard_writes_the_epoch_scalars_and_the_lr(tmp_path: Path) -> None:
    run = zerograd.train("linear-regression", out=tmp_path / "run", quiet=True,
                         overrides={"epochs": 6, "tensorboard": True, "plots": False})
    event_files = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "lr", "epoch", "time/epoch_seconds"} <= tags
    losses = events.Scalars("loss/train")
    assert [e.step for e in losses] == list(range(1, 7))  # one optimizer step per epoch here
    assert [e.value for e in losses] == pytest.approx(run.history["train_loss"], rel=1e-6)
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([0.01] * 6)


def test_step_lr_is_logged_every_n_steps(tmp_path: Path, tiny_classification) -> None:
    x, y = tiny_classification
    logger = TensorBoardLogger(tmp_path / "tb", every_steps=10)
    zerograd.fit(__import__("torch").nn.Linear(8, 3), (x, y), epochs=2, batch_size=10, device="cpu",
                 schedule={"name": "cosine"}, callbacks=[logger])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    lrs = events.Scalars("lr/step")
    assert [e.step for e in lrs] == [10, 20, 30, 40, 50, 60]
    assert all(a.value > b.value for a, b in zip(lrs, lrs[1:]))  # the cosine schedule falls


def test_tags_group_each_quantity_by_split() -> None:
    assert scalar_tag("test_accuracy") == "accuracy/test" and scalar_tag("val_loss") == "loss/val"
    assert scalar_tag("lr") == "lr"


def test_a_missing_tensorboard_package_is_a_clear_error(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'zerograd\[tensorboard\]'"):
        TensorBoardLogger(tmp_path)
    assert main(["train", "linear-regression", "--tensorboard", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "tensorboard" in err and len(err.strip().splitlines()) == 1
