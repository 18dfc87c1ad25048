"""Issue 15, as a newcomer meets it: one test (or more) per numbered problem of the issue, through
the routes a user takes (the CLI, a YAML config naming only its data, `zerograd.fit`)."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import zerograd
from zerograd import own_data
from zerograd.cli import main
from zerograd.data.tabular import rows_of_split
from zerograd.errors import ConfigError, DataError
from zerograd.metrics import build_metrics
from zerograd.reporting.plots import across_classes

QUIET = ["--device", "cpu", "--progress", "none", "--set", "plots=false"]


def write_flowers(path: Path, rows: int = 90, seed: int = 0) -> Path:
    """Three species by two measurements, with an ID column first (unique per row)."""
    rng = np.random.default_rng(seed)
    k = np.arange(rows) % 3
    frame = pd.DataFrame({"id": np.arange(1000, 1000 + rows), "length": 1.5 + 2 * k + rng.normal(0, 0.3, rows),
                          "width": 0.3 + 0.8 * k + rng.normal(0, 0.15, rows), "noise": rng.normal(0, 1, rows),
                          "species": np.array(["setosa", "versicolor", "virginica"])[k]})
    frame.to_csv(path, index=False)
    return path


def write_progression(path: Path, rows: int = 120, seed: int = 0) -> Path:
    """A regression target in the hundreds (like diabetes' progression)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, rows), rng.normal(0, 1, rows)
    pd.DataFrame({"a": a, "b": b, "progression": np.round(150 + 60 * a - 30 * b + rng.normal(0, 5, rows))}).to_csv(
        path, index=False)
    return path


def sizes(run: Path) -> list[int]:
    return yaml.safe_load((run / "config.yaml").read_text())["model"]["sizes"]


# 1. Feature choice on every route; the model sized after it; a YAML with only `data:` trains like --data

def test_features_and_drop_flags_size_the_model(tmp_path: Path) -> None:
    data = write_flowers(tmp_path / "flowers.csv")
    assert main(["train", "--data", str(data), "--features", "length,width", "--epochs", "1", "--out",
                 str(tmp_path / "a"), *QUIET]) == 0
    assert sizes(tmp_path / "a") == [2, 64, 64, 3]
    assert main(["train", "--data", str(data), "--drop", "noise", "--epochs", "1", "--out", str(tmp_path / "b"),
                 *QUIET]) == 0
    assert sizes(tmp_path / "b") == [2, 64, 64, 3]  # the ID column is left out by itself, noise by --drop
    assert main(["train", "--data", str(data), "--set", "data.features=[length]", "--epochs", "1", "--out",
                 str(tmp_path / "c"), *QUIET]) == 0
    assert sizes(tmp_path / "c") == [1, 64, 64, 3]


def test_features_flag_goes_with_data_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "mnist-mlp", "--features", "a"]) == 2
    assert "--features goes with --data PATH" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "error"), [
    (["--features", ""], "--features is empty; name columns, separated by commas (--features a,b)"),
    (["--seed", "-1"], "the seed draws the data split, so it must be a whole number >= 0, got -1"),
])
def test_edge_values_of_the_flags(flags: list[str], error: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = write_flowers(tmp_path / "flowers.csv")
    assert main(["train", "--data", str(data), *flags, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"zerograd: error: {error}"


def test_a_yaml_naming_only_its_data_trains_like_the_data_flag(tmp_path: Path) -> None:
    data = write_flowers(tmp_path / "flowers.csv")
    (tmp_path / "flowers.yaml").write_text("data:\n  train: flowers.csv\n  target: species\n")
    from_yaml, notes = own_data.resolve_config(str(tmp_path / "flowers.yaml"))
    from_flag, _ = own_data.resolve_config(own_data.data_source(data, target="species"))
    assert {**from_yaml, "name": "x"} == {**from_flag, "name": "x"}
    assert from_yaml["model"] == {"name": "mlp", "sizes": [3, 64, 64, 3]}
    assert from_yaml["epochs"] > 10 and from_yaml["early_stopping"]["monitor"] == "val_loss"
    assert any("column 'id'" in note for note in notes)  # the notes are said on this route too


def test_notes_are_said_on_every_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_flowers(tmp_path / "flowers.csv")
    (tmp_path / "full.yaml").write_text("data: {train: flowers.csv, target: species}\nmodel: {name: mlp, sizes: "
                                        "[3, 8, 3]}\nloss: cross_entropy\nbatch_size: 16\nepochs: 1\n")
    assert main(["train", str(tmp_path / "full.yaml"), "--out", str(tmp_path / "run"), *QUIET]) == 0
    assert "column 'id'" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "flowers.csv")
    run = zerograd.train({"name": "frame", "data": {"train": frame, "target": "species"}, "epochs": 1},
                         out=tmp_path / "frame", progress="none")
    assert "column 'id'" in capsys.readouterr().out and run.summary["input_shape"] == [3]
    assert "in-memory DataFrame of shape [90, 5]" in (tmp_path / "frame" / "config.yaml").read_text()


# 2. Regression: metrics in the target's units by default; predict prints `progression: 151.3`

def test_regression_metrics_are_in_the_targets_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_progression(tmp_path / "progression.csv")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "3", "--out", str(run), *QUIET]) == 0
    final = json.loads((run / "summary.json").read_text())["final"]
    assert {"test_r2", "test_rmse", "test_mae"} <= set(final)
    frame = pd.read_csv(data)
    test = frame.iloc[rows_of_split(json.loads((run / "split.json").read_text()))["test"]]
    predicted = np.array([p.label for p in zerograd.load(run).predict(test[["b", "progression", "a"]])])  # by name
    errors = predicted - test["progression"].to_numpy()
    assert final["test_rmse"] == pytest.approx(np.sqrt(np.mean(errors ** 2)), rel=1e-3)
    assert final["test_mae"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-3)
    test[["a", "b"]].head(2).to_csv(tmp_path / "rows.csv", index=False)
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "rows.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r".*rows\.csv\[\d\]: progression: -?\d+\.\d", line) for line in lines)


def test_metrics_scale_errors_to_the_targets_units() -> None:
    outputs, targets = torch.tensor([[0.5], [-1.0]]), torch.tensor([[0.0], [0.0]])
    spread = torch.tensor([[1.0], [-1.0]])  # R^2 needs targets that vary
    rmse, mae, r2 = build_metrics(["rmse", "mae", "r2"], "regression", unit_scale=[10.0])
    plain = build_metrics(["r2"], "regression")[0]
    for metric in (rmse, mae):
        metric.update(outputs, targets)
    for metric in (r2, plain):
        metric.update(outputs, spread)
    assert rmse.compute() == pytest.approx(10 * np.sqrt((0.25 + 1) / 2))
    assert mae.compute() == pytest.approx(7.5)
    assert r2.compute() == pytest.approx(plain.compute())


# 4. Image folders: a validation split, early stopping that keeps the best epoch, a budget from the data

def test_image_folders_get_a_validation_split_and_early_stopping(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 255, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / "pics" / label / f"{i}.png")
    config, notes = own_data.resolve_config(own_data.data_source(tmp_path / "pics"))
    assert config["data"]["val_split"] == pytest.approx(0.2)
    stopping = config["early_stopping"]
    assert stopping["monitor"] == "val_loss" and stopping["patience"] == own_data.PATIENCE["images"]
    assert config["epochs"] >= 10
    assert any("to validate" in note for note in notes)


# 5. zerograd.save: any fit model can be loaded, predicted with (and so served)

def test_save_a_fit_model_and_load_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    zerograd.fit(model, (x, y), epochs=2, batch_size=16, device="cpu")
    path = zerograd.save(model, tmp_path / "saved", class_names=["low", "high"], input_shape=[4])
    loaded = zerograd.load(path)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x[:3])).softmax(dim=1)
    assert np.allclose(loaded.predict_proba(x[:3]), expected.numpy(), atol=1e-6)
    assert loaded.predict(x[0].tolist()).label in ("low", "high")
    with pytest.raises(ConfigError, match="already holds a run"):
        zerograd.save(model, path, input_shape=[4])


def test_evaluating_a_saved_model_says_it_has_no_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # was: 'unknown dataset "saved"; choose from mnist, ...', a name the user never wrote
    path = zerograd.save(nn.Sequential(nn.Linear(4, 2)), tmp_path / "saved", input_shape=[4])
    assert main(["evaluate", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "zerograd: error: this run was written by zerograd.save (data: {dataset: saved}): it holds a model but no "
        "data to train or evaluate on; predict with it, serve or export it, or name data in its config (data: "
        "{train: file.csv, target: COLUMN})")


def test_save_asks_for_what_it_cannot_tell(tmp_path: Path) -> None:
    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2)

    with pytest.raises(ConfigError, match="defined in a script"):
        zerograd.save(Local(), tmp_path / "a")
    with pytest.raises(ConfigError, match="needs input_shape="):
        zerograd.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "b")


# 6. API errors that say what was wrong (word for word); warnings at the user's line; DataFrames

def fit_error(x: object, y: object, model: nn.Module | None = None) -> str:
    with pytest.raises(DataError) as error:
        zerograd.fit(model or nn.Linear(3, 2), (x, y), epochs=1, batch_size=8, device="cpu")
    return str(error.value)


def test_api_errors_say_what_was_wrong() -> None:
    x, y = np.zeros((20, 3), np.float32), np.arange(20) % 2
    assert fit_error(np.zeros(20, np.float32), y).startswith(
        "the inputs are 1-D (a batch of them is [8]): one number per sample, with no feature axis, but the model's "
        "first layer is Linear(3, 2), which takes rows [N, features]: give X of shape [N, 1] (X.reshape(-1, 1)) for "
        "one input value per sample")
    assert fit_error(x, np.array(["cat", "dog"] * 10)) == (
        "the targets are text labels ('cat', 'dog'), but losses take numbers: encode them as class indices, e.g. "
        "classes, y = numpy.unique(labels, return_inverse=True) (classes[i] names class i), or train on a table "
        "with zerograd.train / `zerograd train --data`, which encode them and keep the class names")
    assert fit_error(x, y.astype(np.float64)) == (
        "cross_entropy takes class indices as integers (int64), but the targets are float64; convert them with "
        "y.astype('int64')")
    assert fit_error(x, y[:10]) == "inputs have 20 rows but targets have 10; give one target per input row"
    assert fit_error(pd.DataFrame({"a": ["x"] * 20}), y).startswith(
        "the inputs' column(s) 'a' hold text, not numbers: encode them first (pandas.get_dummies(X))")


def test_fit_takes_lists_and_dataframes() -> None:
    x, y = np.random.default_rng(0).normal(0, 1, (20, 3)).astype(np.float32), np.arange(20) % 2
    assert len(zerograd.fit(nn.Linear(3, 2), (x.tolist(), y.tolist()), epochs=1, batch_size=8, device="cpu")) == 1
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(t=y)
    history = zerograd.fit(nn.Linear(3, 2), (frame[["a", "b", "c"]], frame["t"]), epochs=1, batch_size=8,
                           device="cpu")
    assert len(history) == 1


def test_float64_warning_points_at_the_users_line() -> None:
    x, y = np.zeros((20, 3)), np.arange(20) % 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zerograd.fit(nn.Linear(3, 2), (x, y), epochs=1, batch_size=8, device="cpu")
    float64 = [w for w in caught if "float64" in str(w.message)]
    assert float64 and all(w.filename == __file__ for w in float64)


# 7. The table split: stratified, recorded in the run directory, moved by --seed

def test_the_split_is_stratified_recorded_and_seeded(tmp_path: Path) -> None:
    data = write_flowers(tmp_path / "flowers.csv")
    records = []
    for seed in ("1", "2"):
        run = tmp_path / f"seed{seed}"
        assert main(["train", "--data", str(data), "--seed", seed, "--epochs", "1", "--out", str(run), *QUIET]) == 0
        records.append(json.loads((run / "split.json").read_text()))
    first, second = records
    assert first["seed"] == 1 and second["seed"] == 2 and first["stratified"]
    assert first["row_parts"] != second["row_parts"] and len(first["row_parts"]) == 90
    assert first["counts"]["test"] == 18 and sum(first["counts"].values()) == 90
    assert set(first["class_counts"]["test"].values()) == {6}  # 18 test rows: 6 of each species


# 8. Things that used to pass without a word

def test_classify_on_a_continuous_target_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_progression(tmp_path / "progression.csv")
    assert main(["train", "--data", str(data), "--task", "classify", "--epochs", "1", "--out", str(tmp_path / "r"),
                 *QUIET]) == 2
    assert "(--task classify --max-classes 100)" in capsys.readouterr().err


def test_zero_epochs_fail_before_anything_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_flowers(tmp_path / "flowers.csv")
    assert main(["train", "--data", str(data), "--epochs", "0", "--out", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "epochs" in captured.err and not (tmp_path / "r").exists()


def test_prediction_samples_cover_every_class() -> None:
    sorted_targets = torch.tensor([0] * 20 + [1] * 20 + [2] * 20)
    picked = across_classes(sorted_targets, 9)
    assert sorted_targets[picked].tolist() == [0, 1, 2] * 3
    assert len(across_classes(sorted_targets, 100)) == 60


# 9. Paths in a config file resolve against the file first

def test_config_paths_resolve_beside_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_flowers(project / "flowers.csv")
    (project / "net.py").write_text("from torch import nn\n\nclass Net(nn.Sequential):\n"
                                    "    def __init__(self, in_features: int, num_classes: int) -> None:\n"
                                    "        super().__init__(nn.Linear(in_features, num_classes))\n")
    (project / "run.yaml").write_text("data: {train: flowers.csv, target: species}\nmodel: net.py:Net\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", str(project / "run.yaml"), "--epochs", "1", "--out", "run", *QUIET]) == 0
    model = yaml.safe_load((elsewhere / "run" / "config.yaml").read_text())["model"]
    assert model["name"] == f"{project / 'net.py'}:Net" and model["in_features"] == 3


def test_loss_curves_spanning_decades_get_a_log_axis() -> None:
    from matplotlib.figure import Figure

    from zerograd.reporting.plots import finish_curve_axes

    for values, scale in (([3e4, 900.0, 40.0, 2.0], "log"), ([1.0, 0.8, 0.6], "linear")):
        ax = Figure().subplots()
        ax.plot(range(len(values)), values)
        finish_curve_axes(ax, "loss")
        assert ax.get_yscale() == scale


def test_save_keeps_a_tables_preprocessing(tmp_path: Path) -> None:
    from zerograd.data.tabular import load_table_data

    splits = load_table_data(write_flowers(tmp_path / "flowers.csv"), target="species")
    model = nn.Sequential(nn.Linear(splits.input_shape[0], 8), nn.ReLU(), nn.Linear(8, 3))
    zerograd.fit(model, splits.train, epochs=2, batch_size=16, device="cpu")
    loaded = zerograd.load(zerograd.save(model, tmp_path / "saved", preprocessing=splits.preprocessing()))
    row = {"id": 5, "length": 5.4, "width": 1.9, "noise": 0.1}
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(splits.encoder.transform_array(np.array([[5.4, 1.9, 0.1]]))))
        expected = expected.softmax(dim=1)
    assert loaded.predict(row).label == splits.class_names[int(expected.argmax())]
    assert np.allclose(loaded.predict_proba([row]), expected.numpy(), atol=1e-6)


def test_cv_of_own_data_trains_like_train_does(tmp_path: Path) -> None:
    # `zerograd cv --data FILE` (in README) was refused with 'the config has no "model" section'
    data = write_flowers(tmp_path / "flowers.csv")
    assert main(["cv", "--data", str(data), "--target", "species", "--folds", "3", "--epochs", "3", "--quiet",
                 "--out", str(tmp_path / "cv"), *QUIET]) == 0
    fold = yaml.safe_load((tmp_path / "cv" / "fold1" / "config.yaml").read_text())
    assert fold["model"]["sizes"] == [3, 64, 64, 3] and fold["cv"] == {"folds": 3, "fold": 1, "seed": 0}
    assert fold["data"]["val_split"] == 0 and fold["early_stopping"]["monitor"] == "val_loss"
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["status"] == "complete" and len(saved["runs"]) == 3
    assert saved["command"].startswith(f"zerograd cv --data {data} --target species --folds 3 ")


def test_sweep_of_a_yaml_naming_only_its_data(tmp_path: Path) -> None:
    # was refused with 'the config has no "model" section', though `train` takes the same file
    (tmp_path / "flowers.yaml").write_text("data: {train: flowers.csv, target: species}\n")
    write_flowers(tmp_path / "flowers.csv")
    assert main(["sweep", str(tmp_path / "flowers.yaml"), "--grid", "lr=0.001,0.01", "--epochs", "2", "--quiet",
                 "--out", str(tmp_path / "sweep"), *QUIET]) == 0
    best = yaml.safe_load((tmp_path / "sweep" / "best.yaml").read_text())
    assert best["model"]["sizes"] == [3, 64, 64, 3] and best["data"]["target"] == "species"


def test_the_model_note_counts_one_layer_in_the_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_flowers(tmp_path / "flowers.csv")
    assert main(["train", "--data", str(data), "--model", "linear", "--epochs", "1", "--out", str(tmp_path / "run"),
                 *QUIET]) == 0
    assert "model: layer list of 1 layer (1 linear; all in config.yaml)" in capsys.readouterr().out  # was "1 layers"


def test_warnings_of_parallel_folds_are_one_line_each(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # the worker processes of --jobs 2 printed Python's two-line form ("read.py:67: ZerogradWarning: ...")
    frame = pd.read_csv(write_flowers(tmp_path / "flowers.csv"))
    frame.to_csv(tmp_path / "comma.csv", sep=";", decimal=",", index=False)
    assert main(["cv", "--data", str(tmp_path / "comma.csv"), "--target", "species", "--folds", "2", "--jobs", "2",
                 "--epochs", "1", "--quiet", "--out", str(tmp_path / "cv"), *QUIET]) == 0
    err = capfd.readouterr().err
    assert "decimal comma" in err and "ZerogradWarning" not in err
    assert all(line.startswith("zerograd: warning: ") for line in err.splitlines() if line.strip())
