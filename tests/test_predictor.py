"""`zerograd.load(RUN_DIR)`: a ready model that prepares raw inputs the way the training data was."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zerograd
from zerograd.api import load_run
from zerograd.cli import main
from zerograd.errors import DataError, RunDirError
from zerograd.predictor import Prediction, Predictor

QUICK = {"device": "cpu", "progress": "none", "plots": False}


@pytest.fixture(scope="module")
def flowers_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two well separated species; the features are on a large scale (hundreds), so an
    unstandardised input would be far off."""
    rng = np.random.default_rng(0)
    lines = ["length,width,colour,species"]
    for i in range(120):
        k = i % 2
        lines.append(f"{300 + 200 * k + rng.normal(0, 20):.1f},{50 + 30 * k + rng.normal(0, 5):.1f},"
                     f"{['red', 'blue'][k]},"
                     f"{['setosa', 'virginica'][k]}")
    path = tmp_path_factory.mktemp("flowers") / "flowers.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def table_run(flowers_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = {"name": "flowers", "data": {"train": str(flowers_csv), "target": "species"},
              "model": [{"linear": 16}, "relu", {"linear": 2}], "epochs": 15, "lr": 0.01, "batch_size": 16, **QUICK}
    return zerograd.train(config, out=tmp_path_factory.mktemp("runs") / "table", quiet=True).dir


@pytest.fixture(scope="module")
def image_run(shapes_run: Path) -> Path:
    return shapes_run  # the small CNN on the shapes folder (tests/conftest.py)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("houses")
    rng = np.random.default_rng(1)
    rows = ["area,rooms,price"] + [f"{a:.1f},{r},{2 * a / 100 + r / 10:.4f}" for a,
                                   r in zip(rng.uniform(30, 200, 200), rng.integers(1, 6, 200))]
    (root / "houses.csv").write_text("\n".join(rows) + "\n")
    config = {"name": "houses", "data": {"train": str(root / "houses.csv"), "target": "price"}, "loss": "mse",
              "model": [{"linear": 16}, "relu", {"linear": 1}], "epochs": 5, **QUICK}
    return zerograd.train(config, out=root / "run", quiet=True).dir


def test_a_table_run_predicts_rows_given_by_column_name(table_run: Path) -> None:
    model = zerograd.load(table_run)
    assert isinstance(model, Predictor) and model.class_names == ["setosa",
                                                                  "virginica"] and model.task == "classification"
    one = model.predict({"length": 310.0, "width": 52.0, "colour": "red"})
    assert isinstance(one, Prediction) and one.label == "setosa" and 0.5 < one.probability <= 1.0
    assert [label for label, _ in one.top] == ["setosa", "virginica"]
    several = model.predict([{"length": 505.0, "width": 79.0, "colour": "blue"},
                             {"length": 290.0, "width": 48.0, "colour": "red"}])
    assert [p.label for p in several] == ["virginica", "setosa"]


def test_table_inputs_are_standardised_with_the_stored_statistics(table_run: Path) -> None:
    preprocessing = json.loads((table_run / "preprocessing.json").read_text())
    length, width, colour = preprocessing["columns"]
    raw = [420.0, 61.0, "blue"]
    expected = torch.tensor([[(420.0 - length["mean"]) / length["std"], (61.0 - width["mean"]) / width["std"],
                              *[1.0 if v == "blue" else 0.0 for v in colour["values"]]]])
    model = zerograd.load(table_run)
    prepared, single = model.prepare(raw)
    assert single and torch.allclose(prepared, expected.float(), atol=1e-5)
    trained, _ = load_run(table_run)  # the same weights through the training code's loader
    with torch.no_grad():
        assert torch.allclose(model.outputs(raw), trained(expected.float()), atol=1e-5)


def test_a_csv_file_predicts_every_row_and_ignores_the_target_column(table_run: Path, flowers_csv: Path) -> None:
    predictions = zerograd.load(table_run).predict(flowers_csv)
    labels = [line.rsplit(",", 1)[1] for line in flowers_csv.read_text().splitlines()[1:]]
    assert len(predictions) == len(labels)
    assert np.mean([p.label == label for p, label in zip(predictions, labels)]) > 0.9


def test_an_image_run_takes_paths_pil_images_and_arrays(image_run: Path, shapes_folder: Path) -> None:
    model = zerograd.load(image_run)
    assert model.class_names == ["circle", "square", "triangle"] and model.input_shape == [3, 16, 16]
    path = shapes_folder / "square" / "007.png"
    from_path = model.predict(path)
    from_image = model.predict(Image.open(path))
    from_array = model.predict(np.asarray(Image.open(path)).transpose(2, 0, 1))  # uint8 [C, H, W]
    assert from_path.label == from_image.label == from_array.label == "square"
    assert from_path.output == pytest.approx(from_image.output, abs=1e-5)
    assert from_path.output == pytest.approx(from_array.output, abs=1e-5)
    paths = [shapes_folder / name / "001.png" for name in ("triangle", "circle")]
    assert [p.label for p in model.predict(paths)] == ["triangle", "circle"]
    probabilities = model.predict_proba(paths)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(1), 1.0, atol=1e-5)


def test_a_larger_photo_is_resized_like_the_training_images(image_run: Path, shapes_folder: Path) -> None:
    model = zerograd.load(image_run)
    small = Image.open(shapes_folder / "circle" / "004.png")
    big = small.resize((64, 64), Image.NEAREST)
    assert model.predict(big).label == model.predict(small).label == "circle"


def test_a_regression_run_predicts_values(regression_run: Path) -> None:
    model = zerograd.load(regression_run)
    prediction = model.predict({"area": 100.0, "rooms": 3})
    assert prediction.probability is None and isinstance(prediction.label, float)
    assert prediction.to_dict() == {"label": prediction.label, "output": [prediction.label], "target": "price"}
    assert re.fullmatch(r"price: \d\.\d{1,3}", str(prediction))  # as `zerograd predict` prints it
    with pytest.raises(DataError, match="predict_proba is for classification runs"):
        model.predict_proba([100.0, 3])


def test_runs_without_preprocessing_json_still_load(table_run: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(table_run, old)
    (old / "preprocessing.json").unlink()
    model = zerograd.load(old)  # class names and input shape come from summary.json
    assert model.class_names == ["setosa", "virginica"] and model.input_shape == [4]
    assert model.predict(torch.zeros(4)).label in model.class_names  # inputs taken as model-ready


def test_mistakes_are_clear_errors(image_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        zerograd.load(tmp_path / "nowhere")
    model = zerograd.load(image_run)
    with pytest.raises(DataError, match=r"each input has 10 values but the model takes 768 \(3x16x16\)"):
        model.predict(np.zeros((2, 10), np.float32))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="notes.png is not an image zerograd can read"):
        model.predict(tmp_path / "notes.png")


@pytest.mark.slow
def test_predict_recognises_drawn_digits_with_a_real_mnist_model(mnist_mlp_run: Path, digit_drawing, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for digit in ("0", "1", "7"):
        path = tmp_path / f"drawn-{digit}.png"
        digit_drawing(digit).save(path)  # dark ink on a white 280x280 page, as a person would draw it
        paths.append(path)
    assert main(["predict", str(mnist_mlp_run), *map(str, paths), "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["label"] for r in results] == ["0", "1", "7"]
    for result in results:
        probabilities = [entry["probability"] for entry in result["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities,
                                                                   reverse=True) and probabilities[0] > 0.5
    assert main(["predict", str(mnist_mlp_run), str(paths[1])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{paths[1]}: 1  (1 ") and line.count("%") == 3


@pytest.mark.slow
def test_without_the_digit_preparation_the_drawing_is_not_recognised(mnist_mlp_run: Path, digit_drawing) -> None:
    """Why the preparation matters: the same drawing, only shrunk to 28x28, looks like nothing MNIST has."""
    model = zerograd.load(mnist_mlp_run)
    drawing = digit_drawing("7")
    assert model.predict(drawing).label == "7"
    naive = np.asarray(drawing.convert("L").resize((28, 28)),
                       dtype=np.float32) / 255  # black on white, not centred in 20x20
    assert model.predict(naive).probability < model.predict(drawing).probability


def phone_photo(path: Path) -> Path:
    """A 3000x4000 JPEG like a phone's picture of a digit: a thick dark 1 on grey, noisy paper."""
    from PIL import ImageDraw

    image = Image.new("RGB", (3000, 4000), (170, 165, 160))
    ImageDraw.Draw(image).line([(1500, 800), (1400, 3200)], fill=(60, 60, 70), width=120)
    noisy = np.asarray(image, np.int16) + np.random.default_rng(0).integers(-6, 7, (4000, 3000, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=85)
    return path


def test_a_phone_photo_is_decoded_at_reduced_size(digit_run: Path, image_run: Path, tmp_path: Path) -> None:
    from zerograd.predictor import open_image

    photo = phone_photo(tmp_path / "photo.jpg")
    assert open_image(photo, size=512).size == (750, 1000)  # 1/4 scale: still more than the 512 px asked for
    digits = zerograd.load(digit_run).read_image(photo)
    assert digits.size == (375, 500) and digits.mode == "L"  # then shrunk to the digit preparation's 512 px at most
    shapes = zerograd.load(image_run).read_image(photo)
    assert shapes.size == (375, 500) and shapes.mode == "RGB"  # 1/8 scale: the run takes 16x16


def test_predict_on_a_phone_photo_and_a_huge_scan_finishes(digit_run: Path, tmp_path: Path) -> None:
    """`zerograd predict` on a 3000x4000 photo and a 6000x6000 one-pixel-line PNG: each used to
    take minutes to hours in the digit preparation; the command is given a minute in all."""
    import subprocess
    import sys

    from PIL import ImageDraw

    photo = phone_photo(tmp_path / "photo.jpg")
    scan = Image.new("1", (6000, 6000), 1)
    ImageDraw.Draw(scan).line([(3000, 600), (2700, 5400)], fill=0, width=1)
    scan.save(tmp_path / "scan.png")
    command = [sys.executable, "-m", "zerograd", "predict", str(digit_run), str(photo), str(tmp_path / "scan.png"),
               "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["label"] for line in done.stdout.splitlines()] == ["1", "1"]


def test_a_16_bit_png_predicts_like_its_8_bit_twin(digit_run: Path, digit_drawing, tmp_path: Path) -> None:
    """A 16-bit mid-grey digit used to decode as white (Pillow clips 32768 to 255): "looks blank"."""
    eight_bit = np.asarray(digit_drawing("0", ink=(128, 128, 128)).convert("L"))
    sixteen = eight_bit.astype(np.uint16) * 257
    sixteen[eight_bit == 128] = 32768
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    Image.fromarray(eight_bit).save(tmp_path / "eight.png")
    model = zerograd.load(digit_run)
    from_16, from_8 = model.predict(tmp_path / "sixteen.png"), model.predict(tmp_path / "eight.png")
    assert from_16.label == from_8.label == "0" and from_16.output == pytest.approx(from_8.output, abs=1e-3)
    as_array = model.predict(np.full((28, 28), 65535, np.uint16))  # uint16 arrays are 0..65535 as well
    assert as_array.output == pytest.approx(model.predict(np.ones((28, 28), np.float32)).output, abs=1e-5)


def test_predict_names_the_file_a_mistake_is_in(digit_run: Path, digit_drawing, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    digit_drawing("1").save(tmp_path / "one.png")
    Image.new("L", (300, 300), 255).save(tmp_path / "blank.png")
    assert main(["predict", str(digit_run), str(tmp_path / "one.png"), str(tmp_path / "blank.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tmp_path / 'one.png'}: 1")
    assert captured.err.strip() == (f"zerograd: error: {tmp_path / 'blank.png'}: the image looks blank: no strokes "
                                    "stand out from the background; draw or photograph a digit")
