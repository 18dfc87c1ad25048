"""Issue 15's done-when test: tables and image folders that nobody here prepared (scikit-learn's
bundled iris, wine, breast cancer, diabetes and digits, exported to CSV files and PNG folders as a
newcomer would have them), trained with zerograd's defaults from the CLI (`--data`) and from a YAML
config that names only the files and the target. Each must reach at least the median of
scikit-learn's default LogisticRegression, MLPClassifier and RandomForest on the same split (the
rows the run's split.json records; scikit-learn fits the training and validation rows), and for
regression at least Ridge's R^2 minus 0.03. The side-by-side table is printed (`pytest -s`)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from zerograd import cli
from zerograd.data.tabular import rows_of_split

sklearn = pytest.importorskip("sklearn")
from sklearn import datasets  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

pytestmark = pytest.mark.slow

TABLES = {"iris": (datasets.load_iris, "species"), "wine": (datasets.load_wine, "cultivar"),
          "breast_cancer": (datasets.load_breast_cancer, "diagnosis"),
          "diabetes": (datasets.load_diabetes, "progression")}
RESULTS: dict[str, dict[str, float]] = {}


def export_table(name: str, folder: Path) -> tuple[Path, str, np.ndarray, np.ndarray]:
    """The set as a CSV with its real column names (class names as text, as people's files have
    them), and its (inputs, targets) in file order for scikit-learn."""
    loader, target = TABLES[name]
    bunch = loader(as_frame=True, scaled=False) if name == "diabetes" else loader(as_frame=True)
    frame = bunch.frame.rename(columns={"target": target})
    if name != "diabetes":
        frame[target] = [str(bunch.target_names[i]) for i in frame[target]]
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path, target, frame.drop(columns=[target]).to_numpy(float), frame[target].to_numpy()


def export_digits(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """digits (8x8, 0..16) as PNG files in one folder per class; the arrays in the order a run's
    split.json lists the files (class folders by name, files by path)."""
    bunch = datasets.load_digits()
    root = folder / "digits"
    order = []
    for index, (image, label) in enumerate(zip(bunch.images, bunch.target)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").save(root / str(label) / f"{index:04d}.png")
        order.append((str(label), f"{index:04d}", index))
    index = np.array([i for _, _, i in sorted(order)])
    return root, bunch.data[index] / 16.0, bunch.target[index]


def train(argv: list[str], out: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    assert cli.main([*argv, "--out", str(out), "--quiet"]) == 0
    return (json.loads((out / "summary.json").read_text()), json.loads((out / "split.json").read_text()),
            (out / "config.yaml").read_text())


def baselines(inputs: np.ndarray, targets: np.ndarray, split: dict[str, Any], regression: bool) -> dict[str, float]:
    rows = rows_of_split(split)
    fit_rows = np.sort(np.concatenate([rows["train"], rows["val"]]))
    x, y, x_test, y_test = inputs[fit_rows], targets[fit_rows], inputs[rows["test"]], targets[rows["test"]]
    if regression:
        model = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
        return {"Ridge": r2_score(y_test, model.predict(x_test))}
    models = {"LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression()),
              "MLPClassifier": make_pipeline(StandardScaler(), MLPClassifier(random_state=0)),
              "RandomForest": RandomForestClassifier(random_state=0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the defaults, as they are
        return {name: accuracy_score(y_test, model.fit(x, y).predict(x_test)) for name, model in models.items()}


def check(name: str, cli_summary: dict[str, Any], yaml_summary: dict[str, Any], split: dict[str, Any],
          inputs: np.ndarray, targets: np.ndarray) -> None:
    regression = cli_summary["task"] == "regression"
    metric = "test_r2" if regression else "test_accuracy"
    scores = baselines(inputs, targets, split, regression)
    bar = scores["Ridge"] - 0.03 if regression else float(np.median(list(scores.values())))
    ours = {"zerograd --data": cli_summary["final"][metric], "zerograd YAML": yaml_summary["final"][metric]}
    RESULTS[name] = {**ours, **scores, "bar": bar}
    print(f"\n{name} ({metric}, {split['counts']['test']} test rows): "
          + "  ".join(f"{k} {v:.3f}" for k, v in RESULTS[name].items()))
    for route, value in ours.items():
        assert value >= bar, f"{name}: {route} {value:.3f} < {bar:.3f} ({scores})"


@pytest.mark.parametrize("name", list(TABLES))
def test_tables_reach_sklearn(name: str, tmp_path: Path) -> None:
    path, target, inputs, targets = export_table(name, tmp_path)
    cli_summary, split, cli_config = train(["train", "--data", str(path), "--target", target], tmp_path / "cli")
    config = tmp_path / "own.yaml"
    config.write_text(f"data:\n  train: {path.name}\n  target: {target}\n")  # a path beside the config file
    yaml_summary, yaml_split, yaml_config = train(["train", str(config)], tmp_path / "yaml")
    assert yaml_split["row_parts"] == split["row_parts"]  # the same split ...
    assert yaml_config.replace("name: own", f"name: {name}") == cli_config  # ... and the same defaults
    check(name, cli_summary, yaml_summary, split, inputs, targets)


def test_digit_folders_reach_sklearn(tmp_path: Path) -> None:
    root, inputs, targets = export_digits(tmp_path)
    cli_summary, split, cli_config = train(["train", "--data", str(root)], tmp_path / "cli")
    config = tmp_path / "own.yaml"
    config.write_text("data:\n  images: digits\n")
    yaml_summary, yaml_split, yaml_config = train(["train", str(config)], tmp_path / "yaml")
    assert yaml_split["row_parts"] == split["row_parts"]
    assert yaml_config.replace("name: own", "name: digits") == cli_config
    check("digits", cli_summary, yaml_summary, split, inputs, targets.astype(str))
