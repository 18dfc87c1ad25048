"""The plots of a run: which ones each kind of run gets, and that they show the right things."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zerograd
from zerograd import runs
from zerograd.cli import main
from zerograd.errors import RunDirError
from zerograd.reporting import image_grid, plots

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle "
                                                                                                             "boot"]
CLASSIFICATION_PLOTS = {"curves.png", "lr.png", "confusion_matrix.png", "predictions.png", "confident_mistakes.png"}


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_an_image_classification_run_gets_all_its_plots(image_run: Path) -> None:
    assert {p.name for p in (image_run / "plots").iterdir()} == CLASSIFICATION_PLOTS
    width, height = png_size(image_run / "plots" / "confusion_matrix.png")
    assert width >= 600 and height >= 600  # readable: ten class names on each axis


def test_plot_command_redraws_from_the_run_directory(image_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "again"
    assert main(["plot", str(image_run), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.split()
    assert {Path(p).name for p in printed} == CLASSIFICATION_PLOTS
    assert {p.name for p in out.iterdir()} == CLASSIFICATION_PLOTS


def test_curves_have_one_line_per_split_and_the_step_losses() -> None:
    history = zerograd.History([
        {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.45,
         "test_loss": 1.2, "test_accuracy": 0.4},
        {"epoch": 2, "lr": 0.1, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.7, "val_accuracy": 0.7,
         "test_loss": 0.8, "test_accuracy": 0.68},
    ])
    steps = [{"kind": "step", "step": 10 * k, "epoch": k / 2, "train_loss": 1.5 / k, "lr": 0.1} for k in range(1, 5)]
    figure = plots.plot_curves(history, steps)
    loss_axes, accuracy_axes = figure.axes
    assert [line.get_label() for line in loss_axes.get_lines()] == [
        "train, every 10 steps", "train (in-sample)", "validation", "test (out-of-sample)"]
    assert [line.get_label() for line in accuracy_axes.get_lines()] == ["train (in-sample)", "validation", "test "
                                                                                                           "(out-of-sample)"]
    assert list(accuracy_axes.get_lines()[2].get_ydata()) == [0.4, 0.68]
    assert loss_axes.get_title() == "Loss" and accuracy_axes.get_title() == "Accuracy"


def test_confusion_matrix_counts_true_against_predicted() -> None:
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_matrix_list(targets, predicted) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def confusion_matrix_list(targets: torch.Tensor, predicted: torch.Tensor) -> list[list[int]]:
    return plots.confusion_matrix(targets, predicted, 3).tolist()


def test_confusion_matrix_plot_names_the_ten_fashion_classes() -> None:
    matrix = np.diag(np.full(10, 90)) + 1
    figure = plots.plot_confusion_matrix(matrix, FASHION_NAMES)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == FASHION_NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == FASHION_NAMES
    assert "accuracy 91.0%" in ax.get_title()  # 10 x 91 of 1000 on the diagonal


def test_prediction_grid_marks_the_wrong_ones_in_red_with_the_true_label() -> None:
    images = np.zeros((4, 28, 28))
    figure = plots.plot_image_grid(images, [0, 1, 2, 9], [0, 3, 2, 8], FASHION_NAMES, columns=4)
    labels = figure.texts
    assert [t.get_text() for t in labels] == ["T-shirt/top", "Trouser\ntrue: Dress", "Pullover",
                                              "Ankle boot\ntrue: Bag"]
    wrong = [t.get_color() == plots.WRONG_COLOR for t in labels]
    assert wrong == [False, True, False, True]
    # one image holds the tiles; a wrong one is framed in red, a right one is not
    pixels = grid_pixels(figure)
    red = np.array([int(plots.WRONG_COLOR[i:i + 2], 16) for i in (1, 3, 5)])
    cell = pixels.shape[1] // 4
    top = image_grid.LABEL_PX + 1  # the frame's top edge, just below each label
    framed = [bool(np.all(pixels[top, k * cell + cell // 2, :3] == red)) for k in range(4)]
    assert framed == [False, True, False, True]
    # the labels sit above their own tile, left to right
    xs = [t.get_position()[0] for t in labels]
    assert xs == sorted(xs) and all(abs(x - (k + 0.5) / 4) < 0.01 for k, x in enumerate(xs))


def test_prediction_grid_draws_the_images_themselves_at_one_scale() -> None:
    ink = np.zeros((2, 28, 28))
    ink[1, 10:18, 10:18] = 1.0  # a black square in the second image (gray_r: 1 is ink)
    figure = plots.plot_image_grid(ink, [0, 1], [0, 1], FASHION_NAMES, columns=2, title="Two")
    pixels = grid_pixels(figure)
    width, height = figure.get_size_inches() * figure.dpi
    assert (round(width), round(height)) == (pixels.shape[1], pixels.shape[0] + image_grid.TITLE_PX)  # pixel for pixel
    dark = np.argwhere(pixels[..., :3].sum(axis=-1) == 0)
    scale = image_grid.TILE_PX // 28
    assert len(dark) == (8 * scale) ** 2 and dark[:, 1].min() > pixels.shape[1] // 2  # in the second tile only
    big = plots.plot_image_grid(np.zeros((1, 500, 300, 3)), [0], [0], FASHION_NAMES)
    assert grid_pixels(big).shape[0] < 2 * image_grid.TILE_PX  # large photos are shrunk (one row)
    lone = plots.plot_image_grid(np.zeros((1, 28, 28)), [1], [0], FASHION_NAMES, title="The 1 most confidently wrong")
    assert lone.get_size_inches()[0] > 10  # eight columns wide, as with 32 images: room for the title


def grid_pixels(figure) -> np.ndarray:
    (grid,) = [a for a in figure.artists if isinstance(a, image_grid.Pixels)]
    return grid.rgba


def test_images_are_shown_unnormalized() -> None:
    raw = torch.rand(3, 1, 28, 28)
    shown = plots.as_images((raw - 0.2860) / 0.3530, mean=0.2860, std=0.3530)
    assert shown.shape == (3, 28, 28) and np.allclose(shown, raw[:, 0].numpy(), atol=1e-5)
    assert plots.as_images(torch.zeros(3, 8)) is None  # table rows are not images


def test_sinc_run_gets_the_three_panel_surface(sinc_run: Path) -> None:
    assert {p.name for p in (sinc_run / "plots").iterdir()} == {"curves.png", "lr.png", "surface.png"}
    width, height = png_size(sinc_run / "plots" / "surface.png")
    assert width > 2.5 * height  # three panels side by side


def test_surface_plot_panels_share_the_data_scale() -> None:
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)), axis=-1).reshape(-1, 2)
    truth = grid[:, 0] ** 2
    figure = plots.plot_surface(grid, truth, truth * 0.5, (5, 5))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:2] == ["Training data", "True function"] and titles[2].startswith("Network (RMSE ")
    assert all(ax.get_zlim() == figure.axes[0].get_zlim() for ax in figure.axes)


def test_line_run_gets_the_data_and_fitted_line_with_the_learned_equation(line_runs: list[Path]) -> None:
    run = line_runs[1]
    assert {p.name for p in (run / "plots").iterdir()} == {"curves.png", "lr.png", "fit.png"}
    model, _ = zerograd.load_run(run)
    summary = runs.read_summary(run)
    assert plots._line_label(model) == f"fit: y = {summary['weight']:.3f} x + {summary['bias']:.3f}"


def test_a_run_without_weights_gets_its_curves_only(line_runs: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "pruned"
    shutil.copytree(line_runs[0], copy, ignore=shutil.ignore_patterns("model.safetensors", "plots"))
    assert {p.name for p in plots.write_plots(copy)} == {"curves.png", "lr.png"}


def test_plots_false_skips_them(tmp_path: Path) -> None:
    zerograd.train("linear-regression", out=tmp_path / "run", quiet=True, overrides={"epochs": 2, "plots": False})
    assert not (tmp_path / "run" / "plots").exists() and (tmp_path / "run" / "metrics.csv").is_file()


def test_plot_of_a_missing_run_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["plot", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zerograd: error: ") and "config.yaml" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(RunDirError):
        plots.write_plots(tmp_path)


def test_lr_plot_follows_a_schedule(tmp_path: Path) -> None:
    history = zerograd.History([{"epoch": e, "lr": 0.1 * 0.5 ** (e - 1), "train_loss": 1.0} for e in range(1, 6)])
    ax = plots.plot_lr(history).axes[0]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.1, 0.05, 0.025, 0.0125, 0.00625])


def test_other_regression_gets_predicted_against_true(tmp_path: Path) -> None:
    from torch.utils.data import TensorDataset

    from zerograd.experiment import DataBundle

    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = torch.nn.Linear(3, 1)
    runs.write_config(tmp_path,
                      {"name": "table", "loss": "mse", "data": {"train": "rows.csv"}, "model": {"name": "linear"}})
    zerograd.fit(model, (x, y), epochs=3, batch_size=20, lr=0.05, loss="mse", device="cpu",
                 callbacks=[runs.MetricsWriter(tmp_path)])
    data = DataBundle(TensorDataset(x[:150], y[:150]), TensorDataset(x[150:], y[150:]), input_shape=[3])
    written = plots.write_plots(tmp_path, model=model, data=data, device="cpu")
    assert [p.name for p in written] == ["curves.png", "lr.png", "predicted_vs_true.png"]
    figure = plots.plot_predicted_vs_true(np.array([1.0, 2.0]), np.array([1.5, 2.5]), split="test")
    assert figure.axes[0].get_title() == "Predicted vs true (test set)"
