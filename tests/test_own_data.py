"""Your own data end to end: `zerograd train --data PATH`, YAML configs with own files and own
models, and NumPy arrays straight into `fit`."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import zerograd
from zerograd.cli import main
from zerograd.errors import ZerogradWarning
from zerograd.runs import read_summary

QUIET = ["--device", "cpu", "--progress", "none", "--set", "plots=false"]


def write_flowers(path: Path, rows: int = 150, seed: int = 0) -> Path:
    """Three species told apart by petal length and width (on a scale of centimetres) and colour."""
    rng = np.random.default_rng(seed)
    lines = ["petal_length,petal_width,colour,species"]
    for i in range(rows):
        k = i % 3
        colour = ["white", "blue", "purple"][k] if rng.random() < 0.8 else str(rng.choice(["white", "blue", "purple"]))
        lines.append(f"{1.5 + 2 * k + rng.normal(0, 0.3):.2f},{0.3 + 0.8 * k + rng.normal(0, 0.15):.2f},{colour},"
                     f"{['setosa', 'versicolor', 'virginica'][k]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_houses(path: Path, rows: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["area,rooms,price"]
    for area, rooms in zip(rng.uniform(30, 200, rows), rng.integers(1, 6, rows)):
        lines.append(f"{area:.1f},{rooms},{(2 * area + 10 * rooms) / 100 + rng.normal(0, 0.05):.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_on_an_image_folder_end_to_end(shapes_maker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's my-images example: a folder per class in, a model that knows the classes out."""
    folder = shapes_maker(tmp_path / "my-images", per_class=20, size=16, seed=1)
    code = main(["train", "--data", str(folder), "--epochs", "8", "--lr", "0.003", "--out", str(tmp_path / "run"),
                 *QUIET])
    out = capsys.readouterr().out
    assert code == 0
    assert "3 classes (circle, square, triangle)" in out and "model: layer list of 11 layers (2 conv2d, 2 linear" in out
    assert "loss: cross_entropy" in out
    summary = read_summary(tmp_path / "run")
    assert summary["class_names"] == ["circle", "square", "triangle"] and summary["input_shape"] == [3, 16, 16]
    assert summary["final"]["test_accuracy"] >= 0.8  # chance is 1/3 (12 held-out images, 4 per class)
    preprocessing = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert preprocessing["kind"] == "image" and preprocessing["mode"] == "rgb" and len(preprocessing["mean"]) == 3

    new = shapes_maker(tmp_path / "new", per_class=3, size=40,
                       seed=99)  # unseen pictures, larger than the training ones
    files = sorted(new.glob("*/*.png"))
    assert main(["predict", str(tmp_path / "run"), *map(str, files), "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    right = [answer["label"] == Path(answer["input"]).parent.name for answer in answers]
    assert sum(right) >= 7, answers  # of 9

    assert main(["evaluate", str(tmp_path / "run")]) == 0  # the run re-builds its data from config.yaml
    measured = dict(zip(*[iter(capsys.readouterr().out.split())] * 2))
    assert float(measured["test_accuracy"]) == pytest.approx(summary["final"]["test_accuracy"], abs=1e-6)


def test_a_csv_classification_says_what_it_inferred(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_flowers(tmp_path / "flowers.csv")
    assert main(["train", "--data", str(csv), "--target", "species", "--epochs", "30", "--out", str(tmp_path / "run"),
                 *QUIET]) == 0
    out = capsys.readouterr().out
    assert "task: classification (inferred: the target holds text labels (3 distinct)" in out
    assert "model: mlp (sizes=[5, 64, 64, 3])" in out  # 2 numbers + 3 colours in, 3 species out
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["loss"] == "cross_entropy" and config["data"]["target"] == "species"
    assert config["data"]["task"] == "classification"
    assert read_summary(tmp_path / "run")["final"]["test_accuracy"] >= 0.9
    model = zerograd.load(tmp_path / "run")
    assert model.predict({"petal_length": 5.4, "petal_width": 1.9, "colour": "purple"}).label == "virginica"


def test_a_numeric_target_is_inferred_as_regression_with_mse(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_houses(tmp_path / "houses.csv")
    assert main(["train", "--data", str(csv), "--epochs", "30", "--lr", "0.01", "--out", str(tmp_path / "run"),
                 *QUIET]) == 0
    out = capsys.readouterr().out
    assert "task: regression (inferred: the target holds" in out and "loss: mse" in out
    summary = read_summary(tmp_path / "run")
    prices = np.loadtxt(csv, delimiter=",", skiprows=1)[:, 2]
    assert summary["task"] == "regression"
    assert summary["final"]["test_loss"] < 0.1 * prices.var()  # far better than the mean
    prediction = zerograd.load(tmp_path / "run").predict({"area": 100.0, "rooms": 3})
    assert prediction.label == pytest.approx(2.3, abs=0.5)


def test_task_and_model_can_be_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "counts.csv"  # whole-number targets with few values: classes unless told otherwise
    csv.write_text("x,y\n" + "\n".join(f"{i},{i % 4}" for i in range(60)) + "\n")
    assert main(["train", "--data", str(csv), "--task", "regress", "--model", "linear", "--epochs", "2",
                 "--out", str(tmp_path / "run"), *QUIET]) == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["loss"] == "mse" and config["model"] == [{"linear": 1}] and "inferred" not in capsys.readouterr().out


def test_a_yaml_config_with_own_files_a_layer_list_and_a_validation_split(tmp_path: Path) -> None:
    write_flowers(tmp_path / "train.csv", rows=120, seed=0)
    write_flowers(tmp_path / "test.csv", rows=30, seed=1)
    (tmp_path / "flowers.yaml").write_text(textwrap.dedent(f"""
        data: {{train: {tmp_path / 'train.csv'}, test: {tmp_path / 'test.csv'}, target: species, val_split: 0.25}}
        model: [{{linear: 32}}, relu, {{dropout: 0.1}}, {{linear: 3}}]
        epochs: 25
        lr: 0.01
        batch_size: 16
        device: cpu
        progress: none
        plots: false
    """))
    run = zerograd.train(tmp_path / "flowers.yaml", out=tmp_path / "run", quiet=True)
    assert {"val_accuracy", "test_accuracy"} <= set(run.summary["final"])
    assert run.summary["final"]["test_accuracy"] >= 0.9
    preprocessing = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert preprocessing["class_names"] == ["setosa", "versicolor", "virginica"]
    model, _ = zerograd.load_run(tmp_path / "run")  # the layer list is sized again from the stored input shape
    assert model[0].in_features == 5


def test_a_yaml_config_with_the_users_own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        from torch import nn

        class Net(nn.Module):
            def __init__(self, in_features, num_classes, hidden=16):
                super().__init__()
                self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))

            def forward(self, x):
                return self.layers(x)
    """))
    write_flowers(tmp_path / "flowers.csv")
    monkeypatch.chdir(tmp_path)
    config = {"data": {"train": "flowers.csv", "target": "species"}, "epochs": 20, "lr": 0.01, "device": "cpu",
              "progress": "none", "plots": False,
              "model": {"name": "mynet.py:Net", "in_features": 5, "num_classes": 3, "hidden": 8}}
    run = zerograd.train(config, out=tmp_path / "run", quiet=True)
    assert type(run.model).__name__ == "Net" and run.summary["final"]["test_accuracy"] >= 0.9
    with pytest.raises(zerograd.ConfigError, match="mynet.py.*trust_code=True"):  # the run's config names code
        zerograd.load(tmp_path / "run")
    predictor = zerograd.load(tmp_path / "run", trust_code=True)
    assert predictor.predict({"petal_length": 1.4, "petal_width": 0.2, "colour": "white"}).label == "setosa"


def test_the_shortcut_sizes_a_users_class_from_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nets.py").write_text(textwrap.dedent("""
        from torch import nn

        def wide(in_features, num_classes):
            return nn.Linear(in_features, num_classes)
    """))
    write_flowers(tmp_path / "flowers.csv")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "flowers.csv", "--model", "nets:wide", "--epochs", "2", "--out", "run",
                 *QUIET]) == 0
    saved = yaml.safe_load(Path("run/config.yaml").read_text())["model"]
    assert saved == {"name": "nets:wide", "in_features": 5, "num_classes": 3}


def test_a_model_that_does_not_fit_the_data_fails_before_training(tmp_path: Path) -> None:
    write_flowers(tmp_path / "flowers.csv")
    config = {"data": {"train": str(tmp_path / "flowers.csv"), "target": "species"}, "model": [{"linear": 2}],
              "device": "cpu", "progress": "none"}
    with pytest.raises(zerograd.ConfigError, match="the model outputs 2 values per sample but the data has 3 classes"):
        zerograd.train(config, out=tmp_path / "run", quiet=True)
    config["model"] = {"name": "mlp", "sizes": [784, 10]}
    with pytest.raises(zerograd.ConfigError, match=r"the inputs have 5 values per sample .* which takes 784"):
        zerograd.train(config, out=tmp_path / "run", quiet=True)


def test_numpy_arrays_go_straight_into_fit() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))  # float64
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)  # int32 labels (NumPy's default on Windows)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.warns(ZerogradWarning, match="float64"):  # converted, with a note on how to skip the copy
        history = zerograd.fit(model, (x[:240], y[:240]), eval_data=(x[240:], y[240:]), epochs=15, lr=0.01,
                               device="cpu")
    assert history["test_accuracy"][-1] >= 0.9


BAD_ARGUMENTS = {
    "target without data": (["train", "mnist-mlp", "--target", "y"], "--target goes with --data PATH"),
    "recipe and data": (["train", "mnist-mlp", "--data", "x.csv"], "give a recipe or config (mnist-mlp) or --data "
                                                                   "PATH, not both"),
    "nothing to train": (["train"], "give a recipe or config file to train"),
    "missing data": (["train", "--data", "nowhere.csv"], "data file nowhere.csv does not exist"),
    "unknown model": (["train", "--data", "{shapes}", "--model", "cnnn"], 'unknown model "cnnn" (did you mean "cnn"?)'),
    "images regress": (["train", "--data", "{shapes}", "--task", "regress"], "an image folder is classification data"),
}


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_own_data_mistakes_are_one_line(argv: list[str], message: str, shapes_folder: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main([arg.replace("{shapes}", str(shapes_folder)) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_folder_of_digit_pngs_trains_and_recognises_drawn_digits(tmp_path: Path, digit_drawing,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Real MNIST digits saved as PNG files, one folder per digit (the layout of an own data set):
    the run detects that they are MNIST-like and prepares drawn digits the MNIST way."""
    from PIL import Image

    from zerograd.data import MNIST

    images, labels = MNIST(train=True).tensors
    counts = dict.fromkeys(range(10), 0)
    for image, label in zip(images, labels.tolist()):
        if counts[label] < 250:
            folder = tmp_path / "digits" / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image[0] * 255).round().byte().numpy()).save(folder / f"{counts[label]}.png")
            counts[label] += 1
        if min(counts.values()) == 250:
            break
    assert main(["train", "--data", str(tmp_path / "digits"), "--model", "mlp", "--epochs", "15", "--lr", "0.003",
                 "--out", str(tmp_path / "run"), *QUIET]) == 0
    assert read_summary(tmp_path / "run")["final"]["test_accuracy"] >= 0.85
    assert json.loads((tmp_path / "run" / "preprocessing.json").read_text())["style"] == "digit"
    capsys.readouterr()
    drawn = []
    for digit in ("0", "1", "7"):
        digit_drawing(digit).save(tmp_path / f"drawn-{digit}.png")
        drawn.append(str(tmp_path / f"drawn-{digit}.png"))
    assert main(["predict", str(tmp_path / "run"), *drawn, "--json"]) == 0
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.strip().splitlines()] == ["0", "1", "7"]


def test_an_image_folder_is_named_as_the_user_gave_it_like_a_table(shapes_folder: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # was the resolved absolute path ("data: image folder /tmp/.../shapes"), where a table says "data: iris.csv"
    assert main(["train", "--data", str(shapes_folder), "--epochs", "1", "--out", str(tmp_path / "run"),
                 "--progress", "none", "--set", "plots=false"]) == 0
    out = capsys.readouterr().out
    assert "data: image folder shapes with 3 classes (" in out, out


def test_a_regression_table_says_its_target_is_1_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # was "target price: 1 value(s)"
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a:.3f},{b:.3f},{3 * a - b + 0.1 * rng.normal():.4f}" for a, b in rng.normal(size=(60, 2)))
    (tmp_path / "houses.csv").write_text("size,age,price\n" + rows + "\n")
    assert main(["train", "--data", str(tmp_path / "houses.csv"), "--epochs", "1", "--out", str(tmp_path / "run"),
                 "--progress", "none", "--set", "plots=false"]) == 0
    assert "data: houses.csv with 2 input values per row; target price: 1 value\n" in capsys.readouterr().out


def test_a_table_too_small_to_validate_trains_a_fixed_schedule(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # 3 rows: 2 to train, 1 to test, none to validate; the early stopping zerograd would choose
    # could watch nothing
    (tmp_path / "tiny.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n")
    code = main(["train", "--data", str(tmp_path / "tiny.csv"), "--target", "y", "--epochs", "3",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    assert "2 training rows leave none to validate on, so no early stopping" in capsys.readouterr().out
    assert read_summary(tmp_path / "run")["epochs_completed"] == 3
