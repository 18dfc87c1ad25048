"""Output that is not a terminal (a pipe, a file, a CI log) is never wrapped or cut, and names are
printed as they are (never read as rich markup): the commands run here as a user runs
`zerograd ... | cat` or `> out.txt`, with long run names, long metric names and long paths."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zerograd

ROOT = Path(__file__).resolve().parents[2]
LONG = "a-rather-long-run-name-for-the-plain-baseline-with-every-option-spelled-out"


def piped(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`zerograd ARGS | cat`: stdout and stderr are pipes; COLUMNS=80 as many CI systems set it."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env |= {"PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-m", "zerograd", *args], capture_output=True, text=True, timeout=300,
                            env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def write_flowers(path: Path, rows: int = 120) -> Path:
    rng = np.random.default_rng(0)
    lines = ["petal_length_in_centimetres,petal_width_in_centimetres,species"]
    for i in range(rows):
        k = i % 2
        lines.append(f"{1.5 + 2 * k + rng.normal(0, 0.3):.2f},{0.3 + 0.8 * k + rng.normal(0, 0.15):.2f},"
                     f"{['setosa', 'virginica'][k]}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def flower_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two classification runs (train/test loss and accuracy) whose names are long, one with brackets."""
    folder = tmp_path_factory.mktemp("piped")
    data = write_flowers(folder / "flowers.csv")
    result = []
    for name, lr in ((LONG, 0.01), ("another-experiment-with-a-long-name[lr=0.05]-and-more-words-after-it", 0.05)):
        config = {"name": "flowers", "data": {"train": str(data), "target": "species"},
                  "model": [{"linear": 8}, "relu", {"linear": 2}],
                  "epochs": 2, "lr": lr, "batch_size": 16, "device": "cpu", "progress": "none", "plots": False}
        result.append(zerograd.train(config, out=folder / name, quiet=True).dir)
    return result


def test_compare_into_a_file_keeps_names_and_headers_whole(flower_runs: list[Path], tmp_path: Path) -> None:
    out = piped("compare", *map(str, flower_runs), "--out", str(tmp_path / "c.png"), cwd=tmp_path).stdout
    lines = out.splitlines()
    assert any(LONG in line for line in lines), out
    assert any("another-experiment-with-a-long-name[lr=0.05]-and-more-words-after-it" in line for line in lines), out
    header = next(line for line in lines if " run " in line)
    for name in ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "epochs done"):
        assert name in header, header
    assert "…" not in out and "\x1b[" not in out  # nothing cut, no colour codes


def test_train_piped_prints_each_figure_on_one_line(tmp_path: Path) -> None:
    data = write_flowers(tmp_path / "flowers.csv")
    run_dir = tmp_path / ("runs-with-a-long-folder-name-so-the-path-passes-eighty-columns" * 2) / "flowers"
    out = piped("train", "--data", str(data), "--target", "species", "--epochs", "2", "--out", str(run_dir),
                "--device", "cpu", "--set", "plots=false", cwd=tmp_path).stdout
    summary = next(line for line in out.splitlines() if line.startswith("flowers: 2 epochs in"))
    figures = (r"train_loss \d+\.\d{4}  train_accuracy \d\.\d{4}  val_loss \d+\.\d{4}  val_accuracy \d\.\d{4}  "
               r"test_loss \d+\.\d{4}  test_accuracy \d\.\d{4}$")
    assert re.search(figures, summary), out
    assert f"run directory: {run_dir}" in out.splitlines(), out
    epoch = [line for line in out.splitlines() if line.startswith("epoch 2/2")]
    line = r"train loss \S+ acc \S+%  val loss \S+ acc \S+%  test loss \S+ acc \S+%  lr 0\.001  \d"
    assert epoch and re.search(line, epoch[0]), out
