"""Table runs end to end with the table engine: regression predictions in the target's own units,
Parquet/Feather files to predict from, unseen categories said at predict time, and run
directories written before the engine (their preprocessing.json) still predicting."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_diabetes

import zerograd
from zerograd.cli import main

QUICK = {"device": "cpu", "progress": "none", "plots": False}


@pytest.fixture(scope="module")
def diabetes_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    root = tmp_path_factory.mktemp("diabetes")
    frame.to_csv(root / "diabetes.csv", index=False)
    config = {"name": "diabetes", "data": {"train": str(root / "diabetes.csv"), "target": "target"}, "loss": "mse",
              "model": [{"linear": 32}, "relu", {"linear": 1}], "epochs": 40, "lr": 0.01, "batch_size": 32, **QUICK}
    torch.manual_seed(0)
    return zerograd.train(config, out=root / "run", quiet=True).dir, frame


def test_a_regression_run_predicts_in_the_targets_own_units(diabetes_run: tuple[Path, pd.DataFrame]) -> None:
    run, frame = diabetes_run
    scale = json.loads((run / "preprocessing.json").read_text())["target_scale"]
    assert scale["mean"][0] == pytest.approx(frame["target"].mean(), rel=0.05)  # of the training rows
    model = zerograd.load(run)
    rows = frame.drop(columns="target")
    predictions = np.array([p.label for p in model.predict(rows.to_dict("records"))])
    assert predictions.mean() == pytest.approx(frame["target"].mean(), rel=0.1)  # units of the target (~150), not ~0
    r2 = 1 - ((predictions - frame["target"]) ** 2).sum() / ((frame["target"] - frame["target"].mean()) ** 2).sum()
    assert r2 > 0.3  # far better than the mean (diabetes is a noisy data set: linear models reach ~0.5)
    raw = model.outputs(rows.iloc[0].to_dict())  # the model's own output: standardised
    assert float(raw[0, 0]) * scale["std"][0] + scale["mean"][0] == pytest.approx(predictions[0], rel=1e-5)


def test_a_run_written_before_target_scaling_still_predicts(diabetes_run: tuple[Path, pd.DataFrame],
                                                            tmp_path: Path) -> None:
    """A preprocessing.json without target_scale (the old encoder's keys): the model's outputs are
    the prediction, as they were."""
    import shutil

    run, frame = diabetes_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    stored = json.loads((old / "preprocessing.json").read_text())
    del stored["target_scale"]
    (old / "preprocessing.json").write_text(json.dumps(stored))
    model = zerograd.load(old)
    row = frame.drop(columns="target").iloc[0].to_dict()
    expected = torch.tensor([[(row[c["name"]] - c["mean"]) / c["std"] for c in stored["columns"]]], dtype=torch.float32)
    assert torch.allclose(model.prepare(row)[0], expected, atol=1e-5)
    assert model.predict(row).label == pytest.approx(float(model.outputs(row)[0, 0]), rel=1e-6)


@pytest.mark.parametrize("kind", ["parquet", "feather"])
def test_predict_reads_parquet_and_feather_rows(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"length": rng.normal(size=80) + 3 * (np.arange(80) % 2), "colour": ["red", "blue"] * 40,
                          "species": ["setosa", "virginica"] * 40})
    getattr(frame, f"to_{kind}")(tmp_path / f"flowers.{kind}")
    config = {"data": {"train": str(tmp_path / f"flowers.{kind}"), "target": "species"}, "model": [{"linear": 2}],
              "epochs": 20, "lr": 0.05, **QUICK}
    run = zerograd.train(config, out=tmp_path / "run", quiet=True).dir
    new = pd.DataFrame({"length": [0.0, 3.0, 3.0], "colour": ["red", "blue", "green"]})
    getattr(new, f"to_{kind}")(tmp_path / f"new.{kind}")
    assert main(["predict", str(run), str(tmp_path / f"new.{kind}"), "--json"]) == 0
    captured = capsys.readouterr()
    labels = [json.loads(line)["label"] for line in captured.out.strip().splitlines()]
    assert labels[:2] == ["setosa", "virginica"] and len(labels) == 3
    assert "column 'colour' holds 1 value not seen in training ('green'; 1 row)" in captured.err


def test_a_misspelt_column_at_predict_time_gets_a_did_you_mean(diabetes_run: tuple[Path, pd.DataFrame],
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run, frame = diabetes_run
    frame.drop(columns="target").rename(columns={"bmi": "bmii"}).head(2).to_csv(tmp_path / "rows.csv", index=False)
    assert main(["predict", str(run), str(tmp_path / "rows.csv")]) == 2
    err = capsys.readouterr().err
    assert "columns ['bmi'] are missing" in err and '("bmii" is there: did you mean "bmi"?)' in err


def test_predict_on_a_folder_says_it_is_a_folder(diabetes_run: tuple[Path, pd.DataFrame], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = diabetes_run
    assert main(["predict", str(run), str(tmp_path)]) == 2  # was: "input file ... does not exist"
    assert capsys.readouterr().err.strip() == (f"zerograd: error: {tmp_path} is a folder; give predict the files in "
                                               f"it (e.g. {tmp_path}/*)")
