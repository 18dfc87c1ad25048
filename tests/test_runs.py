"""The run directory and the one-call API: files written safely, read back, and runs reproducible."""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import zerograd
from zerograd import runs
from zerograd.data import sinc_data
from zerograd.errors import RunDirError
from zerograd.files import write_atomic

TIMING_KEYS = {"train_seconds"}


# --- files -------------------------------------------------------------------------------------


def test_new_run_dir_is_named_after_the_recipe_and_never_reused(tmp_path: Path) -> None:
    first = runs.new_run_dir("mnist-mlp", base=tmp_path)
    assert first.parent == tmp_path and first.name.startswith("mnist-mlp-")
    first.mkdir()
    second = runs.new_run_dir("mnist-mlp", base=tmp_path)
    assert second != first and not second.exists()


def test_write_atomic_writes_text_and_bytes_and_leaves_no_temp_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "deep" / "a.txt", "hello")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "deep" / "a.txt").read_text() == "hello"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.txt", "b.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_atomic(target, "old")
    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]  # fails while writing
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_run_files_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "config.yaml", "a: 1\n")
        runs.save_weights(nn.Linear(2, 1), tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    for name in ("config.yaml", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()(torch.randn(8, 3))  # give the batch-norm buffers non-default values
    path = tmp_path / "model.safetensors"
    runs.save_weights(model, path)
    header_size = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8:8 + header_size])  # a JSON header, no pickle
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    fresh = runs.load_weights(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)), path)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_require_run_dir_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        runs.require_run_dir(tmp_path / "nope")
    (tmp_path / "run").mkdir()
    with pytest.raises(RunDirError, match="config.yaml is missing"):
        runs.require_run_dir(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("name: x\n")
    with pytest.raises(RunDirError, match="model.safetensors is missing"):
        runs.require_run_dir(tmp_path / "run")


def test_load_history_reads_epoch_records_only(tmp_path: Path) -> None:
    lines = [
        {"epoch": 1, "train_loss": 0.5},
        {"kind": "step", "step": 10, "epoch": 1.5, "train_loss": 0.4},
        {"epoch": 2, "train_loss": 0.3},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    history = zerograd.load_history(tmp_path)
    assert history.records == [lines[0], lines[2]]
    with pytest.raises(RunDirError, match="does not exist"):
        zerograd.load_history(tmp_path / "elsewhere")


def test_summary_is_plain_json_with_nan_as_null(tmp_path: Path) -> None:
    runs.write_summary(tmp_path, {"loss": float("nan"), "best": torch.tensor(0.5), "n": np.int64(3),
                                  "shape": (1, 28), "nested": {"inf": math.inf, "values": torch.tensor([1, 2])}})
    assert json.loads((tmp_path / "summary.json").read_text()) == {
        "loss": None, "best": 0.5, "n": 3, "shape": [1, 28], "nested": {"inf": None, "values": [1, 2]}}


# --- train() and the run it leaves -------------------------------------------------------------


def without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def test_train_returns_the_run_and_writes_the_same_figures(tmp_path: Path) -> None:
    run = zerograd.train("linear-regression", overrides={"epochs": 20}, out=tmp_path / "run", quiet=True)
    assert run.dir == tmp_path / "run" and run.config["epochs"] == 20
    assert zerograd.load_history(run.dir).records == json.loads(json.dumps(run.history.records))
    assert runs.read_summary(run.dir) == json.loads(json.dumps(run.summary))
    assert run.summary["final"]["train_loss"] == run.history.last["train_loss"]
    assert run.summary["weight"] == pytest.approx(run.model.weight.item())
    assert run.summary["stop_reason"] == "completed" and run.summary["epochs_completed"] == 20


def test_load_run_gives_back_the_trained_model(tmp_path: Path) -> None:
    run = zerograd.train("sinc-surface", overrides={"epochs": 2}, out=tmp_path / "run", quiet=True)
    model, config = zerograd.load_run(run.dir)
    assert config == run.config and not model.training
    for key, value in run.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.cpu())
    expected = zerograd.evaluate(run.model, sinc_data()[0], loss="mse", device="cpu")["loss"]
    assert zerograd.evaluate_run(run.dir, device="cpu") == {"train_loss": pytest.approx(expected, rel=1e-6)}


def test_evaluate_run_computes_in_the_run_s_precision_and_repeats_its_final_figures(tmp_path: Path) -> None:
    # a bf16 run evaluated in fp32 printed other figures than its summary (fashion-mlp: 0.7121 vs 0.7127)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(240, 6))
    labels = (features @ rng.normal(size=6) > 0).astype(int)
    table = tmp_path / "rows.csv"
    table.write_text("a,b,c,d,e,f,y\n" + "\n".join(",".join(f"{v:.6f}" for v in row) + f",{label}"
                                                  for row, label in zip(features, labels)))
    run = zerograd.train({"data": {"train": str(table), "target": "y"}}, out=tmp_path / "run", quiet=True,
                         overrides={"epochs": 3, "precision": "bf16", "val_split": 0, "early_stopping": None})
    final = run.summary["final"]
    assert zerograd.evaluate_run(run.dir, device="cpu") == {k: final[k] for k in ("test_loss", "test_accuracy")}


def test_the_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    """Initial weights and batch order both come from the seed: the whole run repeats exactly."""
    a = zerograd.train("sinc-surface", overrides={"epochs": 2}, out=tmp_path / "a", quiet=True)
    b = zerograd.train("sinc-surface", overrides={"epochs": 2}, out=tmp_path / "b", quiet=True)
    c = zerograd.train("sinc-surface", overrides={"epochs": 2, "seed": 1}, out=tmp_path / "c", quiet=True)
    assert without_timing(a.summary) == without_timing(b.summary)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a.summary["final"]["train_loss"] != c.summary["final"]["train_loss"]


def test_initial_weights_do_not_depend_on_what_ran_before(tmp_path: Path) -> None:
    torch.manual_seed(999)  # global RNG state left behind by other code must not leak into a run
    torch.randn(10)
    a = zerograd.train("linear-regression", overrides={"epochs": 1}, out=tmp_path / "a", quiet=True)
    torch.manual_seed(5)
    b = zerograd.train("linear-regression", overrides={"epochs": 1}, out=tmp_path / "b", quiet=True)
    assert without_timing(a.summary) == without_timing(b.summary)


def test_a_resume_refuses_data_that_splits_otherwise(tmp_path: Path) -> None:
    from zerograd.data.tabular import load_table_data
    from zerograd.errors import DataError
    from zerograd.runs import check_same_split, write_split

    table = tmp_path / "t.csv"
    table.write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    def split() -> dict:
        return load_table_data(table, target="y", val_split=0.2, seed=0).split_record()

    write_split(tmp_path, split())
    check_same_split(tmp_path, split())  # unchanged: fine
    table.write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(38)))  # two rows fewer
    wanted = r"the data changed since .* now splits into 24 / 6 / 8 train / val / test rows, against 26 / 6 / 8"
    with pytest.raises(DataError, match=wanted):
        check_same_split(tmp_path, split())
    check_same_split(tmp_path / "no-run-yet", None)  # nothing recorded, nothing to compare
