"""Shared test set-up: real data sets are found through ZEROGRAD_DATA (set by `make test`)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def pytest_configure(config: pytest.Config) -> None:
    # `pytest` run by hand finds MNIST as `make test` does; an explicit ZEROGRAD_DATA wins.
    if "ZEROGRAD_DATA" not in os.environ and (SHARED_DATA / "mnist").is_dir():
        os.environ["ZEROGRAD_DATA"] = str(SHARED_DATA)
    os.environ.setdefault("MPLBACKEND", "Agg")
    # parsed data sets are cached (zerograd.data.idx); the tests' caches never reach the user's
    os.environ.setdefault("ZEROGRAD_PARSED_CACHE", tempfile.mkdtemp(prefix="zerograd-test-parsed-"))


@pytest.fixture
def tiny_classification():
    """A small, learnable 3-class problem held in memory (inputs [300, 8], labels [300])."""
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=generator)
    y = (x[:, 0] > 0.5).long() + (x[:, 1] > 0).long()
    return x, y


SHAPE_COLOURS = {"circle": (220, 40, 40), "square": (40, 170, 40), "triangle": (40, 60, 220)}


def make_shapes_folder(root: Path, *, per_class: int = 20, size: int = 16, seed: int = 0) -> Path:
    """An image folder `root/<shape>/NNN.png`: a red circle, green square or blue triangle of random
    size and place on a random light background, `per_class` images per class."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for name, colour in SHAPE_COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = Image.new("RGB", (size, size), tuple(rng.randint(190, 255) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            radius = rng.randint(size // 5, size // 3)
            x, y = rng.randint(radius, size - radius - 1), rng.randint(radius, size - radius - 1)
            box = [x - radius, y - radius, x + radius, y + radius]
            if name == "circle":
                draw.ellipse(box, fill=colour)
            elif name == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=colour)
            image.save(root / name / f"{index:03d}.png")
    return root


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 3-class image folder (see `make_shapes_folder`), made once per test session."""
    return make_shapes_folder(tmp_path_factory.mktemp("shapes") / "shapes")


def draw_digit(digit: str, *, size: int = 280, width: int = 22, ink: str = "black", paper: str = "white"):
    """A hand-drawn-looking digit ("0", "1", "4" or "7") as a PIL image much larger than 28x28."""
    from PIL import Image, ImageDraw

    strokes = {
        "1": [(150, 40), (140, 240)],
        "7": [(70, 50), (210, 50), (120, 240)],
        "4": [(170, 240), (170, 40), (70, 170), (220, 170)],
    }
    image = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(image)
    scale = size / 280
    if digit == "0":
        draw.ellipse([80 * scale, 40 * scale, 200 * scale, 240 * scale], outline=ink, width=width)
    else:
        draw.line([(x * scale, y * scale) for x, y in strokes[digit]], fill=ink, width=width, joint="curve")
    return image


@pytest.fixture(scope="session")
def shapes_run(shapes_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN (a layer list) trained for a few seconds on `shapes_folder`: an image run whose
    answers are right for the shapes."""
    import zerograd

    config = {"name": "shapes", "data": {"images": str(shapes_folder)},
              "model": [{"conv2d": 8}, "relu", {"maxpool2d": 2}, {"linear": 3}], "epochs": 10, "lr": 0.01,
              "batch_size": 16, "device": "cpu", "progress": "none", "plots": False}
    return zerograd.train(config, out=tmp_path_factory.mktemp("shapes-run") / "run", quiet=True).dir


@pytest.fixture(scope="session")
def mnist_mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the real MNIST: the mnist-mlp recipe for 1 epoch at batch 128 (about 93%
    test accuracy), shared by the predict, serve and export tests that need real digits."""
    import zerograd

    out = tmp_path_factory.mktemp("mnist-mlp") / "run"
    zerograd.train("mnist-mlp", overrides={"epochs": 1, "batch_size": 128, "device": "cpu", "progress": "none"},
                   out=out, quiet=True)
    return out


@pytest.fixture(scope="session")
def digit_drawing():
    """`draw_digit` for tests: `digit_drawing("7", width=4)` -> a PIL image of a drawn 7."""
    return draw_digit


@pytest.fixture(scope="session")
def shapes_maker():
    """`make_shapes_folder` for tests that need their own variant of the shapes folder."""
    return make_shapes_folder


@pytest.fixture(scope="session")
def digit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that prepares pictures the MNIST way (style "digit") without needing MNIST: a small
    MLP trained in seconds on 28x28 white-on-black drawn 0s and 1s in a folder of PNGs."""
    import numpy as np

    import zerograd

    root = tmp_path_factory.mktemp("digit-folder") / "digits"
    rng = np.random.default_rng(0)
    for digit in ("0", "1"):
        (root / digit).mkdir(parents=True)
        for index in range(16):
            side = int(rng.integers(200, 300))
            drawn = draw_digit(digit, size=side, width=int(rng.integers(15, 30)), ink="white", paper="black")
            drawn.convert("L").resize((28, 28)).save(root / digit / f"{index:02d}.png")
    config = {"name": "digits", "data": {"images": str(root)}, "model": [{"linear": 32}, "relu", {"linear": 2}],
              "epochs": 10,
              "lr": 0.01, "batch_size": 8, "device": "cpu", "progress": "none", "plots": False}
    return zerograd.train(config, out=tmp_path_factory.mktemp("digit-run") / "run", quiet=True).dir
