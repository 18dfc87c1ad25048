"""Weights that do not fit the model a run's config builds (the config was edited, or the weights
copied from another run): every command that loads them says so in one line, naming the tensors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from zerograd import api, fit, runs
from zerograd.callbacks import Checkpointer, ResumeFrom
from zerograd.cli import main as cli
from zerograd.errors import CheckpointError, WeightsMismatchError

CONFIG: dict[str, Any] = {
    "name": "line", "data": {"dataset": "line"}, "model": {"name": "linear", "in_features": 1, "out_features": 1},
    "loss": {"name": "mse", "reduction": "sum"}, "optimizer": "sgd", "lr": 0.01, "batch_size": 3, "epochs": 3,
    "shuffle": False, "progress": "none", "plots": False, "log_every": 0, "checkpoint_every": None,
}


@pytest.fixture(scope="module")
def edited_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run whose config.yaml was edited afterwards to a wider model."""
    run_dir = tmp_path_factory.mktemp("edited") / "run"
    api.train(CONFIG, out=run_dir, quiet=True)
    runs.write_config(run_dir, runs.read_config(run_dir) | {"model": {"name": "mlp", "sizes": [1, 4, 1]}})
    return run_dir


EXPLANATION = ("{run}/model.safetensors does not fit the model {run}/config.yaml describes (missing from the file: "
               "1.weight, 1.bias, 3.weight and 1 more; not in the model: bias, weight); was the "
               "config edited after training, or the weights copied from another run? Put back the config the "
               "weights were trained with")


@pytest.mark.parametrize("command", [
    ["evaluate", "{run}"],
    ["plot", "{run}", "--out", "{tmp}/plots"],
    ["report", "{run}", "--replot", "--out", "{tmp}/report.html"],
    ["predict", "{run}", "{tmp}/rows.csv"],
    ["export", "{run}", "--format", "torchscript", "--out", "{tmp}/model.pt"],
])
def test_every_command_that_loads_the_weights_explains_a_mismatch(
        edited_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    assert cli([part.format(run=edited_run, tmp=tmp_path) for part in command]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err
    assert err == "zerograd: error: " + EXPLANATION.format(run=edited_run)


def test_load_run_names_the_tensors_of_other_sizes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    api.train(CONFIG, out=run_dir, quiet=True)
    runs.write_config(run_dir, runs.read_config(run_dir) | {"model": CONFIG["model"] | {"out_features": 2}})
    with pytest.raises(WeightsMismatchError, match=r"\(weight: \[1, 1\] in the file, \[2, 1\] in the model; "
                                                   r"bias: \[1\] in the file, \[2\] in the model\)"):
        api.load_run(run_dir)


def test_a_checkpoint_of_another_model_names_what_differs(tmp_path: Path) -> None:
    x, y = torch.randn(12, 3), torch.randn(12, 1)
    fit(nn.Linear(3, 1), (x, y), loss="mse", epochs=1, batch_size=4,
        callbacks=[Checkpointer(tmp_path / "ckpt", every="epoch")])
    with pytest.raises(CheckpointError, match=r"does not fit this model \(weight: \[1, 3\] in the file, \[1, 2\] in "
                                              r"the model\); resume with the config the run started with"):
        fit(nn.Linear(2, 1), (x[:, :2], y), loss="mse", epochs=1, batch_size=4,
            callbacks=[ResumeFrom(tmp_path / "ckpt")])


@pytest.mark.parametrize(("name", "damage", "expected"), [
    ("config.yaml", "model: {name: [linear\n", "config.yaml is not valid YAML"),
    ("config.yaml", "", "config.yaml holds a NoneType, not a mapping of config keys"),
    ("preprocessing.json", '{"kind": "tab', "preprocessing.json is not valid JSON (Unterminated string"),
    ("summary.json", "[1, 2]", "summary.json holds a JSON list, not an object"),
])
def test_a_damaged_run_file_is_named_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                                  damage: str, expected: str) -> None:
    run_dir = tmp_path / "run"
    api.train(CONFIG, out=run_dir, quiet=True)
    (run_dir / name).write_text(damage)
    command = ["plot", str(run_dir)] if name == "summary.json" else ["evaluate", str(run_dir)]
    assert cli(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zerograd: error: {run_dir / name}{expected.removeprefix(name)}") and "\n" not in err
