"""Shared test set-up: real data sets are found through ZEROGRAD_DATA (set by `make test`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def pytest_configure(config: pytest.Config) -> None:
    # `pytest` run by hand finds MNIST as `make test` does; an explicit ZEROGRAD_DATA wins.
    if "ZEROGRAD_DATA" not in os.environ and (SHARED_DATA / "mnist").is_dir():
        os.environ["ZEROGRAD_DATA"] = str(SHARED_DATA)
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tiny_classification():
    """A small, learnable 3-class problem held in memory (inputs [300, 8], labels [300])."""
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=generator)
    y = (x[:, 0] > 0.5).long() + (x[:, 1] > 0).long()
    return x, y
