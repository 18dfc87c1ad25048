"""The `zerograd` command: recipes, train, evaluate, predict, and one clear line for every mistake.

The classification runs train on a tiny MNIST-format data set written here (class k is a bright band
at rows 2k..2k+5), so these tests need neither the real data nor more than a second of training.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from zerograd import config as configs
from zerograd.cli import main
from zerograd.runs import read_summary

from helpers import band_image, write_band_idx

RECIPES = ["fashion-cnn", "fashion-mlp", "linear-regression", "mnist-mlp", "sinc-surface"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_band_idx(tmp_path_factory.mktemp("tiny-mnist"), {"train": 600, "t10k": 200})


@pytest.fixture(scope="module")
def mnist_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished classification run (the mnist-mlp recipe, shrunk) on the tiny data set."""
    out = tmp_path_factory.mktemp("runs") / "mnist"
    code = main(["train", "mnist-mlp", "--out", str(out), "--quiet", "--epochs", "3", "--lr", "0.01",
                 "--batch-size", "50", "--seed", "3", "--device", "cpu",
                 "--set", f"data.root={tiny_mnist}", "--set", "model.sizes=[784, 32, 10]"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def line_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "line"
    assert main(["train", "linear-regression", "--out", str(out), "--quiet"]) == 0
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- recipes -----------------------------------------------------------------------------------


def test_recipes_lists_all_five_with_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "recipes")
    lines = out.strip().splitlines()
    assert code == 0 and err == ""
    names = [line.split()[0] for line in lines]
    assert set(RECIPES) <= set(names) and names == sorted(names)
    assert all(len(line.split()) > 3 for line in lines)  # a name and a one-line description
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # each with its description


# --- train -------------------------------------------------------------------------------------


def test_train_linear_regression_writes_the_run_directory(line_run: Path) -> None:
    assert {"config.yaml", "metrics.jsonl", "model.safetensors", "summary.json"} <= {p.name for p in line_run.iterdir()}
    records = [json.loads(line) for line in (line_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 101))  # one line per epoch
    summary = json.loads((line_run / "summary.json").read_text())
    assert summary["recipe"] == "linear-regression"
    assert summary["epochs_completed"] == 100
    assert isinstance(summary["train_seconds"], float) and summary["train_seconds"] >= 0
    assert summary["final"]["train_loss"] == pytest.approx(records[-1]["train_loss"])
    assert summary["final"]["train_loss"] <= 0.1
    assert summary["weight"] == pytest.approx(2.0, abs=0.2) and summary["bias"] == pytest.approx(1.0, abs=0.4)


def test_run_config_is_complete_and_trains_the_same_run(line_run: Path) -> None:
    saved = yaml.safe_load((line_run / "config.yaml").read_text())
    # `threads: null` is written as the count the run used (1 for this tiny model), so it repeats
    assert saved == configs.resolve("linear-regression") | {"threads": 1}
    assert configs.resolve(line_run / "config.yaml") == saved


def test_train_prints_the_learned_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "train", "linear-regression", "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0
    summary = read_summary(tmp_path / "run")
    match = re.search(r"y = (-?[\d.]+) x \+ (-?[\d.]+)", out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(summary["weight"], abs=1e-4)
    assert float(match.group(2)) == pytest.approx(summary["bias"], abs=1e-4)
    assert "epoch 1/" not in out  # --quiet: the summary only


def test_train_of_one_epoch_says_1_epoch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "train", "linear-regression", "--epochs", "1", "--out", str(tmp_path / "r"),
                           "--quiet")
    assert code == 0 and "linear-regression: 1 epoch in " in out, out  # was "1 epochs in"


def test_train_shows_progress_and_final_test_accuracy(capsys: pytest.CaptureFixture[str], tiny_mnist: Path,
                                                      tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "train", "mnist-mlp", "--out", str(tmp_path / "run"), "--epochs", "2",
                             "--batch-size", "100", "--set", f"data.root={tiny_mnist}", "--device", "cpu")
    assert code == 0, err
    assert "epoch 1/2" in out and "epoch 2/2" in out
    accuracy = read_summary(tmp_path / "run")["final"]["test_accuracy"]
    assert f"final test accuracy: {accuracy:.4f}" in out


def test_classification_summary_has_test_metrics(mnist_run: Path) -> None:
    summary = read_summary(mnist_run)
    assert summary["recipe"] == "mnist-mlp" and summary["epochs_completed"] == 3
    assert {"train_loss", "test_loss", "test_accuracy"} <= set(summary["final"])
    assert summary["final"]["test_accuracy"] >= 0.9  # the bands are easy to tell apart
    assert summary["class_names"] == [str(d) for d in range(10)] and summary["input_shape"] == [1, 28, 28]


def test_command_line_flags_land_in_the_saved_config(mnist_run: Path, tiny_mnist: Path) -> None:
    saved = yaml.safe_load((mnist_run / "config.yaml").read_text())
    chosen = (saved["epochs"], saved["lr"], saved["batch_size"], saved["seed"], saved["device"])
    assert chosen == (3, 0.01, 50, 3, "cpu")
    assert saved["data"] == {"dataset": "mnist", "root": str(tiny_mnist)}
    assert saved["model"]["sizes"] == [784, 32, 10]


def test_train_from_a_yaml_file_that_extends_a_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text("extends: linear-regression\nepochs: 5\n")
    code, out, err = run_cli(capsys, "train", str(path), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    summary = read_summary(tmp_path / "run")
    assert summary["recipe"] == "short" and summary["epochs_completed"] == 5


def test_default_run_directory_is_under_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", "linear-regression", "--epochs", "2", "--quiet")
    assert code == 0, err
    [run_dir] = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"linear-regression-\d{8}-\d{6}", run_dir.name)
    assert (run_dir / "summary.json").is_file() and str(run_dir.relative_to(tmp_path)) in out


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluate_reproduces_the_final_test_metrics(capsys: pytest.CaptureFixture[str], mnist_run: Path) -> None:
    code, out, err = run_cli(capsys, "evaluate", str(mnist_run))
    assert code == 0, err
    printed = dict(zip(out.split()[::2], map(float, out.split()[1::2])))
    final = read_summary(mnist_run)["final"]
    assert printed["test_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-4)
    assert printed["test_loss"] == pytest.approx(final["test_loss"], abs=1e-4)


def test_evaluate_a_run_without_a_test_set_reports_the_training_loss(capsys: pytest.CaptureFixture[str],
                                                                     line_run: Path) -> None:
    code, out, err = run_cli(capsys, "evaluate", str(line_run))
    assert code == 0, err
    name, value = out.split()
    assert name == "train_loss" and float(value) <= 0.1


# --- predict -----------------------------------------------------------------------------------


def test_predict_png_images(capsys: pytest.CaptureFixture[str], mnist_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for label in (2, 7):
        path = tmp_path / f"digit{label}.png"
        Image.fromarray(band_image(label, rng), mode="L").save(path)
        paths.append(path)
    big = tmp_path / "big-rgb.png"  # other sizes and colour images are converted like the data
    Image.fromarray(band_image(5, rng), mode="L").resize((56, 56), Image.NEAREST).convert("RGB").save(big)
    paths.append(big)
    code, out, err = run_cli(capsys, "predict", str(mnist_run), *map(str, paths))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line, (path, label) in zip(lines, zip(paths, (2, 7, 5))):
        assert line.startswith(f"{path}: {label}  ("), line
        probabilities = [float(p) for p in re.findall(r"([\d.]+)%", line)]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 100.0 + 1e-6


def test_predict_npy_rows_as_json(capsys: pytest.CaptureFixture[str], mnist_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    labels = [0, 3, 9, 4]
    rows = np.stack([band_image(k, rng) for k in labels]).reshape(4, 784).astype(np.float32) / 255.0
    np.save(tmp_path / "rows.npy", rows)
    code, out, err = run_cli(capsys, "predict", str(mnist_run), str(tmp_path / "rows.npy"), "--json", "--top", "2")
    assert code == 0, err
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["input"] for r in results] == [f"{tmp_path / 'rows.npy'}[{i}]" for i in range(4)]
    assert [r["top"][0]["label"] for r in results] == [str(k) for k in labels]
    assert all(len(r["top"]) == 2 and 0 <= r["top"][1]["probability"] <= r["top"][0]["probability"] <= 1
               for r in results)


def test_predict_regression_prints_the_values(capsys: pytest.CaptureFixture[str], line_run: Path,
                                              tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([[4.0], [0.0]]))
    code, out, err = run_cli(capsys, "predict", str(line_run), str(tmp_path / "x.npy"))
    assert code == 0, err
    summary = read_summary(line_run)
    values = [float(v) for v in re.findall(r"x\.npy\[\d\]: (-?[\d.]+)$", out, flags=re.MULTILINE)]  # 4 digits
    assert values == pytest.approx([4 * summary["weight"] + summary["bias"], summary["bias"]], rel=1e-3, abs=1e-3)


# --- mistakes: one line on stderr, exit code 2 -------------------------------------------------


BAD_ARGUMENTS = {
    "unknown recipe": (["train", "fashion-cn"], 'unknown recipe "fashion-cn" (did you mean "fashion-cnn"?)'),
    "unknown --set key": (["train", "linear-regression", "--set", "lerning_rate=0.1"], 'unknown --set key '
                                                                                       '"lerning_rate"'),
    "--set without =": (["train", "linear-regression", "--set", "epochs"], "--set expects key=value"),
    "lr zero": (["train", "linear-regression", "--lr", "0"], "lr must be > 0"),
    "lr negative": (["train", "linear-regression", "--lr", "-0.1"], "lr must be > 0"),
    "epochs zero": (["train", "linear-regression", "--epochs", "0"], "epochs must be > 0"),
    "batch size zero": (["train", "linear-regression", "--batch-size", "0"], "batch_size must be > 0"),
    "batch size negative": (["train", "linear-regression", "--set", "batch_size=-3"], "batch_size must be > 0"),
    "wrong type": (["train", "linear-regression", "--set", "epochs=many"], "epochs must be int"),
    "missing config file": (["train", "nowhere/none.yaml"], "config file nowhere/none.yaml does not exist"),
    "bad model option": (["train", "linear-regression", "--set", "model.widht=3"],
                         'model linear has no option "widht"'),
    "evaluate missing run": (["evaluate", "no/such/run"], "run directory no/such/run does not exist"),
    "predict missing run": (["predict", "no/such/run", "x.png"], "run directory no/such/run does not exist"),
}


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_give_one_clear_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("zerograd: error: "), err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing half-written for a run that never started


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so cuda is a valid device")
def test_a_device_this_machine_lacks_is_one_line_and_leaves_no_run(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", "linear-regression", "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "was asked for but" in err
    assert not (tmp_path / "runs").exists()


def test_an_incomplete_run_directory_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("name: x\n")
    code, out, err = run_cli(capsys, "evaluate", str(tmp_path / "half"))
    assert code == 2 and "model.safetensors is missing" in err and err.count("\n") == 1


def test_predict_unreadable_inputs_are_one_line(capsys: pytest.CaptureFixture[str], mnist_run: Path,
                                                tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("not an image")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 10), dtype=np.float32))
    for path, message in [(tmp_path / "fake.png", "is not an image"), (tmp_path / "wrong.npy", "has 10 values but the "
                                                                                               "model takes 784"),
                          (tmp_path / "missing.png", "does not exist")]:
        code, out, err = run_cli(capsys, "predict", str(mnist_run), str(path))
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys)
    assert code == 2 and "train" in out and "recipes" in out


# --- the installed command, as a user runs it --------------------------------------------------


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_console_script_lists_recipes() -> None:
    script = Path(sys.executable).with_name("zerograd")
    assert script.is_file(), "the zerograd console script is installed next to the Python that runs the tests"
    result = subprocess.run([str(script), "recipes"], capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert set(RECIPES) <= {line.split()[0] for line in result.stdout.strip().splitlines()}


def test_python_dash_m_trains_and_reports_mistakes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "zerograd", "train", "linear-regression", "--out", str(tmp_path / "run"),
               "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert "learned: y = " in result.stdout and (tmp_path / "run" / "model.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "zerograd", "train", "linear-regresion"], capture_output=True,
                         text=True, timeout=120, env=subprocess_env(), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        'zerograd: error: unknown recipe "linear-regresion" (did you mean "linear-regression"?); '
        'run "zerograd recipes" to list them, or give a .yaml file'
    ]


def test_plot_of_a_run_without_a_finished_epoch_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zerograd.runs import write_config

    write_config(tmp_path, configs.resolve("linear-regression"))  # stopped before its first epoch ended
    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["plot", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "no plots: " in err and "has no finished epoch yet" in err
