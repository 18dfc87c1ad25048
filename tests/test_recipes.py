"""End to end on the real data: each tutorial recipe, trained as shipped, reaches its bar.

These are the suite's long tests (about two minutes together on two CPU cores). MNIST is found
through ZEROGRAD_DATA (tests/conftest.py), Fashion-MNIST in Debian's /usr/share/datasets.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import zerograd

BARS = {  # recipe: (figure in summary["final"], bound, bar), from the foundation issue's table
    "mnist-mlp": ("test_accuracy", ">=", 0.96),
    "linear-regression": ("train_loss", "<=", 0.1),
    "sinc-surface": ("train_loss", "<=", 0.005),
    "fashion-cnn": ("test_accuracy", ">=", 0.84),
    "fashion-mlp": ("test_accuracy", ">=", 0.80),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(BARS))
def test_recipe_reaches_its_bar(recipe: str, tmp_path: Path) -> None:
    run = zerograd.train(recipe, out=tmp_path / recipe, quiet=True)
    figure, bound, bar = BARS[recipe]
    value = run.summary["final"][figure]
    assert run.summary["epochs_completed"] == run.config["epochs"]
    assert value >= bar if bound == ">=" else value <= bar, f"{recipe}: {figure} {value:.4f}, needs {bound} {bar}"
    if recipe == "linear-regression":  # the tutorial's line y = 2x + 1
        assert run.summary["weight"] == pytest.approx(2.0, abs=0.3)
        assert run.summary["bias"] == pytest.approx(1.0, abs=0.6)
