"""Small finished runs for the reporting tests, trained once per session.

The image run uses a tiny Fashion-MNIST-format data set written here (class k is a bright band at
rows 2k..2k+5 with a little noise), so the plots get the real ten Fashion-MNIST class names
without the real data or more than a few seconds of training.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import zerograd

from helpers import write_band_idx


@pytest.fixture(scope="session")
def tiny_fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_band_idx(tmp_path_factory.mktemp("tiny-fashion"), {"train": 500, "t10k": 200}, noise=90, bright=None)


@pytest.fixture(scope="session")
def image_run(tiny_fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fashion-mlp, shrunk: 2 epochs of 8 steps with a validation split and a step record every 2 steps."""
    out = tmp_path_factory.mktemp("runs") / "fashion"
    zerograd.train("fashion-mlp", out=out, quiet=True, overrides={
        "data.root": str(tiny_fashion), "model.sizes": [784, 16, 10], "epochs": 2, "batch_size": 50,
        "lr": 0.02, "val_split": 0.2, "log_every": 2, "device": "cpu",
    })
    return out


@pytest.fixture(scope="session")
def sinc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sinc"
    zerograd.train("sinc-surface", out=out, quiet=True, overrides={"epochs": 3, "data.n": 20, "device": "cpu"})
    return out


@pytest.fixture(scope="session")
def line_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The line recipe with three learning rates, in one folder (like a small sweep)."""
    folder = tmp_path_factory.mktemp("line-runs")
    result = []
    for lr in (0.001, 0.02, 0.01):
        out = folder / f"line-lr{lr}"
        zerograd.train("linear-regression", out=out, quiet=True, overrides={"lr": lr, "epochs": 30, "device": "cpu"})
        result.append(out)
    return result


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for binary in (CHROMIUM, CHROMEDRIVER):
        assert Path(binary).is_file(), (f"{binary} is missing: install Debian's chromium and chromium-driver "
                                        "(make test-deps)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
