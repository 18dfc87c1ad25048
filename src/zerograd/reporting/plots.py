"""The pictures of a run, as PNG files in `RUN_DIR/plots/`.

    curves.png               loss and metrics per epoch, train vs validation/test on one chart
    lr.png                   the learning rate over training
    confusion_matrix.png     classification: true vs predicted class, with class names
    predictions.png          image classification: test images with predicted and true labels
    confident_mistakes.png   image classification: the most confidently wrong test images
    surface.png              2-D regression on a grid (sinc): data, true function, network
    fit.png                  1-D regression (line): the data and the fitted line
    predicted_vs_true.png    other regression: predictions against targets

Figures are built as `matplotlib.figure.Figure` objects (no pyplot, so no global figure state and
no GUI backend) with one shared style, and written atomically.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from zerograd import runs
from zerograd.data.loader import in_memory_tensors
from zerograd.engine import predict
from zerograd.errors import RunDirError, WriteError, ZerogradWarning
from zerograd.experiment import build_data, data_spec
from zerograd.files import write_atomic, writing
from zerograd.losses import loss_name, task_of
from zerograd.models import check_trusted
from zerograd.reporting.image_grid import DPI, WRONG_COLOR, plot_image_grid
from zerograd.state import History

PLOTS_DIR = "plots"
SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
SPLIT_LABELS = {"train": "train (in-sample)", "val": "validation", "test": "test (out-of-sample)"}
PERCENT_METRICS = ("accuracy", "top3_accuracy", "top5_accuracy", "precision", "recall", "f1")
STYLE: dict[str, Any] = {
    "font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold", "axes.labelsize": 11,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linestyle": "-",
    "legend.frameon": False, "legend.fontsize": 10, "lines.linewidth": 2.0,
    "figure.facecolor": "white", "savefig.facecolor": "white",
}


@contextmanager
def plot_style() -> Iterator[None]:
    """The shared look of every zerograd figure (rc settings restored afterwards)."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as PNG via a temp file, so a crash never leaves half an image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_atomic(Path(path), buffer.getvalue())
    return Path(path)


def title_case(name: str) -> str:
    special = {"loss": "Loss", "f1": "F1", "mae": "MAE", "rmse": "RMSE", "r2": "R²"}
    return special.get(name, name.replace("_", " ").capitalize())


# -- training curves ---------------------------------------------------------------------------

def curve_quantities(history: History) -> list[str]:
    """The quantities logged per split, loss first: ['loss', 'accuracy', ...]."""
    names: dict[str, None] = {}
    for record in history.records:
        for key in record:
            prefix, _, name = key.partition("_")
            if prefix in SPLIT_COLORS and name:
                names[name] = None
    return sorted(names, key=lambda n: (n != "loss", list(names).index(n)))


def plot_curves(history: History, steps: Sequence[dict[str, Any]] = (), *, best_epoch: int | None = None,
                title: str = "") -> Figure:
    """One chart per quantity (loss, accuracy, ...) with a line per split, against the epoch.
    The every-N-steps train loss, when logged, is drawn faintly behind the epoch values."""
    quantities = curve_quantities(history) or ["loss"]
    figure = new_figure(5.2 * len(quantities) + 0.4, 4.2)
    axes = figure.subplots(1, len(quantities), squeeze=False)[0]
    epochs = history["epoch"]
    for ax, name in zip(axes, quantities):
        if name == "loss" and steps:
            xs = [s["epoch"] for s in steps if s.get("train_loss") is not None]
            ys = [s["train_loss"] for s in steps if s.get("train_loss") is not None]
            every = steps[1]["step"] - steps[0]["step"] if len(steps) > 1 else steps[0]["step"]
            ax.plot(xs, ys, color=SPLIT_COLORS["train"], alpha=0.45, linewidth=1.0, label=f"train, every {every} steps")
        for split, color in SPLIT_COLORS.items():
            key = f"{split}_{name}"
            points = [(r["epoch"], r[key]) for r in history.records if r.get(key) is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=color, label=SPLIT_LABELS[split], marker="o" if len(points) <= 30 else None,
                    markersize=5)
        if best_epoch is not None and len(epochs) > 1 and best_epoch != epochs[-1]:
            ax.axvline(best_epoch, color="#777777", linestyle=":", linewidth=1.5, label=f"best epoch ({best_epoch})")
        finish_curve_axes(ax, name)
        if epochs:  # every panel on the same axis, from the start of training
            ax.set_xlim(0, max(epochs) * 1.03)
    if title:
        figure.suptitle(title, fontsize=14, fontweight="bold")
    return figure


def finish_curve_axes(ax: Any, name: str) -> None:
    ax.set_title(title_case(name))
    ax.set_xlabel("epoch")
    ax.set_ylabel(title_case(name))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if name in PERCENT_METRICS:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    values = [v for line in ax.get_lines() for v in np.asarray(line.get_ydata(), dtype=float) if np.isfinite(v)]
    if name in ("loss", "mae", "rmse") and values and min(values) > 0 and max(values) / min(values) > 50:
        ax.set_yscale("log")  # a loss that falls by decades is unreadable on a linear axis
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_lr(history: History, steps: Sequence[dict[str, Any]] = ()) -> Figure | None:
    """The learning rate against the epoch: every N steps when logged, else once per epoch."""
    if steps and any("lr" in s for s in steps):
        points = [(s["epoch"], s["lr"]) for s in steps if s.get("lr") is not None]
        # the epoch records hold the lr at each epoch's start; they fill in before the first step record
        points = sorted(points + [(r["epoch"] - 1, r["lr"]) for r in history.records if r.get("lr") is not None])
    else:
        points = [(r["epoch"] - 1, r["lr"]) for r in history.records if r.get("lr") is not None]
    if not points:
        return None
    xs, ys = zip(*points)
    figure = new_figure(6.4, 3.4)
    ax = figure.subplots()
    ax.plot(xs, ys, color="#8172B3", drawstyle="steps-post" if len(points) <= 30 else "default")
    ax.set_title("Learning rate")
    ax.set_xlabel("epoch")
    ax.set_ylabel("lr")
    positive = [y for y in ys if y > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    elif max(ys) == min(ys):
        ax.set_ylim(0, max(ys) * 1.5 if max(ys) > 0 else 1)
        ax.text(0.5, 0.55, f"constant lr = {ys[0]:.3g}", transform=ax.transAxes, ha="center", color="#555555")
    return figure


# -- classification ----------------------------------------------------------------------------

def confusion_matrix(targets: torch.Tensor, predicted: torch.Tensor, classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    index = targets.long() * classes + predicted.long()
    return torch.bincount(index, minlength=classes * classes).view(classes, classes).numpy()


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], *, title: str = "Confusion matrix") -> Figure:
    """Counts in each cell, coloured by the share of the true class (so rare classes show too)."""
    classes = len(class_names)
    size = max(5.5, 0.62 * classes + 2.8)
    figure = new_figure(size + 1.0, size)
    ax = figure.subplots()
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    ax.set_xticks(range(classes), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(classes), labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{title} (accuracy {100 * accuracy:.1f}%)")
    if classes <= 30:
        fontsize = 9 if classes <= 12 else 7
        for i in range(classes):
            for j in range(classes):
                if matrix[i, j]:
                    ax.text(j, i, f"{matrix[i, j]:,}", ha="center", va="center", fontsize=fontsize,
                            color="white" if shares[i, j] > 0.5 else "#222222")
    colorbar = figure.colorbar(image, ax=ax, shrink=0.8, format=PercentFormatter(xmax=1.0, decimals=0))
    colorbar.set_label("share of the true class")
    return figure


def as_images(inputs: torch.Tensor, mean: float | None = None, std: float | None = None) -> np.ndarray | None:
    """[N, H, W] or [N, H, W, 3] arrays for display, or None when the inputs are not images.
    Normalized inputs are mapped back with the data set's mean and std."""
    x = inputs.detach().float().cpu()
    if x.dim() == 4 and x.shape[1] in (1, 3):
        x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    elif x.dim() != 3:
        return None
    if x.shape[1] < 8 or x.shape[2] < 8:
        return None
    if mean is not None and std is not None:
        x = x * std + mean
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:  # not in [0, 1]: stretch for display
        x = (x - low) / max(high - low, 1e-12)
    return x.numpy()


# -- regression --------------------------------------------------------------------------------

def plot_surface(inputs: np.ndarray, targets: np.ndarray, predictions: np.ndarray, grid_shape: Sequence[int]) -> Figure:
    """The tutorial's three panels: the training data, the true function and the network's
    surface, on the same axes and colour scale."""
    rows, cols = int(grid_shape[0]), int(grid_shape[1])
    gx, gy = inputs[:, 0].reshape(rows, cols), inputs[:, 1].reshape(rows, cols)
    truth, fitted = targets.reshape(rows, cols), predictions.reshape(rows, cols)
    low, high = float(min(truth.min(), fitted.min())), float(max(truth.max(), fitted.max()))
    rmse = float(np.sqrt(np.mean((fitted - truth) ** 2)))
    figure = Figure(figsize=(16, 5.6))  # constrained layout crops 3-D titles; place the panels by hand
    figure.subplots_adjust(left=0.01, right=0.97, bottom=0.04, top=0.88, wspace=0.08)
    panels = [("Training data", None), ("True function", truth), (f"Network (RMSE {rmse:.4f})", fitted)]
    for index, (name, z) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, 3, index, projection="3d")
        if z is None:
            step = max(1, rows // 18)  # every point of a 50x50 grid is a blur; a sub-grid reads better
            ax.scatter(gx[::step, ::step], gy[::step, ::step], truth[::step, ::step], c=truth[::step, ::step],
                       cmap="viridis", vmin=low, vmax=high, s=10, depthshade=False)
        else:
            ax.plot_surface(gx, gy, z, cmap="viridis", vmin=low, vmax=high, linewidth=0, antialiased=True,
                            rcount=min(rows, 60), ccount=min(cols, 60))
        ax.set_zlim(low, high)
        ax.set_title(name, pad=0)
        for axis, label in ((ax.xaxis, "x"), (ax.yaxis, "y"), (ax.zaxis, "z")):
            axis.set_major_locator(MaxNLocator(5))
            axis.set_label_text(label)
        ax.tick_params(labelsize=9, pad=0)
        ax.view_init(elev=28, azim=-60)
    figure.suptitle("Fitting a surface: data, true function and network", fontsize=14, fontweight="bold")
    return figure


def plot_line_fit(x: np.ndarray, y: np.ndarray, x_line: np.ndarray, y_line: np.ndarray, *,
                  label: str = "network") -> Figure:
    figure = new_figure(6.4, 4.6)
    ax = figure.subplots()
    ax.plot(x_line, y_line, color=SPLIT_COLORS["train"], label=label, zorder=1)
    ax.scatter(x, y, color=WRONG_COLOR, s=60, zorder=2, label="data")
    ax.set_title("Data and fitted line")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()
    return figure


def plot_predicted_vs_true(targets: np.ndarray, predictions: np.ndarray, *, split: str = "test") -> Figure:
    figure = new_figure(5.6, 5.2)
    ax = figure.subplots()
    ax.scatter(targets, predictions, s=10, alpha=0.5,
               color=SPLIT_COLORS.get({"validation": "val", "training": "train"}.get(split, split), "#4C72B0"))
    low, high = float(min(targets.min(), predictions.min())), float(max(targets.max(), predictions.max()))
    ax.plot([low, high], [low, high], color="#555555", linestyle="--", linewidth=1.2, label="perfect prediction")
    ax.set_title(f"Predicted vs true ({split} set)")
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    ax.legend()
    return figure


# -- a whole run -------------------------------------------------------------------------------

@dataclass
class RunInputs:
    """What the plots of one run are drawn from; the model and data are loaded only if needed."""

    run_dir: Path
    config: dict[str, Any]
    history: History
    steps: list[dict[str, Any]]
    summary: dict[str, Any]
    model: Any = None
    data: Any = None
    trust_code: bool = False  # may import a model class of the user's own that the config names


def write_plots(run_dir: str | Path, *, model: Any = None, data: Any = None, device: str = "auto",
                out_dir: str | Path | None = None, trust_code: bool = False) -> list[Path]:
    """Draw every plot that fits the run into `out_dir` (default RUN_DIR/plots/); returns the paths.

    `model` and `data` (a `DataBundle`) are the trained model and its data when the caller has
    them in memory; otherwise they are re-loaded from the run directory and its config. A run
    without weights (an interrupted or pruned one) gets its curves only. Re-loading a model class
    of the user's own (`module:Class`) runs its code, so it needs `trust_code=True`; without it the
    call fails before any plot is drawn.
    """
    inputs = _read_run(Path(run_dir), model, data)
    inputs.trust_code = trust_code
    if model is None and (inputs.run_dir / runs.WEIGHTS).is_file():
        check_trusted(inputs.config["model"], trust_code=trust_code, origin=inputs.run_dir / runs.CONFIG)
    out = Path(out_dir) if out_dir is not None else inputs.run_dir / PLOTS_DIR
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with plot_style():
        for name, figure in _run_figures(inputs, device):
            written.append(save_figure(figure, out / f"{name}.png"))
    return written


def _read_run(run_dir: Path, model: Any, data: Any) -> RunInputs:
    if not (run_dir / runs.CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not a zerograd run directory ({runs.CONFIG} is missing)")
    config = runs.read_config(run_dir)
    history = runs.load_history(run_dir)
    return RunInputs(run_dir, config, history, runs.load_steps(run_dir), runs.read_summary(run_dir), model, data)


def _run_figures(run: RunInputs, device: str) -> Iterator[tuple[str, Figure]]:
    """(file stem, figure) for each plot this run supports, drawn one at a time."""
    if len(run.history):
        best = run.summary.get("best_epoch") if run.summary.get("stop_reason") == "early_stopping" else None
        yield "curves", plot_curves(run.history, run.steps, best_epoch=best, title=run.config.get("name", ""))
        lr_figure = plot_lr(run.history, run.steps)
        if lr_figure is not None:
            yield "lr", lr_figure
    if not _load_model_and_data(run):
        return
    if task_of(run.config["loss"]) == "classification":
        yield from _classification_figures(run, device)
    else:
        yield from _regression_figures(run, device)


def _load_model_and_data(run: RunInputs) -> bool:
    """Fill in the model and data from the run directory; False when the weights are missing."""
    if run.model is None:
        if not (run.run_dir / runs.WEIGHTS).is_file():
            return False
        run.model, _ = runs.load_run(run.run_dir, trust_code=run.trust_code)
    if run.data is None:
        run.data = build_data(data_spec(run.config))
    return True


def _evaluation_split(run: RunInputs) -> tuple[str, Any]:
    data = run.data
    if data.test is not None:
        return "test", data.test
    if getattr(data, "val", None) is not None:
        return "validation", data.val
    return "training", data.train


def _targets(dataset: Any) -> torch.Tensor:
    """The targets alone: uint8 image sets (data.cached) hand over their labels without converting
    every image to float (a test set's 31 MB for MNIST, most of what the plots added to a run's peak)."""
    if callable(getattr(dataset, "take", None)) and isinstance(getattr(dataset, "labels", None), torch.Tensor):
        return dataset.labels
    return _inputs_and_targets(dataset)[1]


def _inputs_at(dataset: Any, index: torch.Tensor) -> torch.Tensor:
    """The model inputs of the samples `index` (in that order), converting only those."""
    if callable(getattr(dataset, "take", None)):
        part = in_memory_tensors(dataset.take(index, training=False))
        if part is not None:
            return part[0]
    tensors = in_memory_tensors(dataset)
    if tensors is not None:
        return tensors[0][index]
    return torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in index])


def _inputs_and_targets(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = in_memory_tensors(dataset)
    if tensors is not None:
        return tensors[0], tensors[1]
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([torch.as_tensor(i[0]) for i in items]), torch.stack([torch.as_tensor(i[1]) for i in items])


def across_classes(targets: torch.Tensor, count: int) -> torch.Tensor:
    """Up to `count` sample indices taking each class in turn: a sorted folder shows every class."""
    groups = [torch.nonzero(targets == label).flatten() for label in torch.unique(targets)]
    order = [g[i] for i in range(max((len(g) for g in groups), default=0)) for g in groups if i < len(g)]
    return torch.stack(order[:count]) if order else torch.zeros(0, dtype=torch.long)


def _classification_figures(run: RunInputs, device: str) -> Iterator[tuple[str, Figure]]:
    split, dataset = _evaluation_split(run)
    outputs = predict(run.model, dataset, batch_size=1000, device=device)
    targets = _targets(dataset)
    targets = targets.argmax(dim=1) if targets.dim() > 1 else targets.long()
    classes = outputs.shape[1]
    names = list(run.data.class_names or run.summary.get("class_names") or [str(i) for i in range(classes)])
    if len(names) != classes:
        names = [str(i) for i in range(classes)]
    probabilities = outputs.exp() if loss_name(run.config["loss"]) == "nll" else outputs.softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    yield "confusion_matrix", plot_confusion_matrix(confusion_matrix(targets, predicted, classes), names,
                                                    title=f"Confusion matrix, {split} set")
    info = run.data.info or {}
    picked = across_classes(targets, 32)  # a folder's test images come sorted by class: not all of the first one
    images = as_images(_inputs_at(dataset, picked), info.get("mean"), info.get("std"))
    if images is None:
        return
    wrong_count = int((predicted[picked] != targets[picked]).sum())
    yield "predictions", plot_image_grid(images, predicted[picked].tolist(), targets[picked].tolist(), names,
                                         title=f"{len(images)} {split} images across the classes: predicted label "
                                               f"({wrong_count} wrong, in red)")
    wrong = torch.nonzero(predicted != targets).flatten()
    if len(wrong):
        order = wrong[confidence[wrong].argsort(descending=True)][:16]
        mistakes = as_images(_inputs_at(dataset, order), info.get("mean"), info.get("std"))
        if mistakes is not None:
            yield "confident_mistakes", plot_image_grid(
                mistakes, predicted[order].tolist(), targets[order].tolist(), names,
                confidences=confidence[order].tolist(),
                title=f"The {len(order)} most confidently wrong {split} images (of {len(wrong):,} wrong)")


def _regression_figures(run: RunInputs, device: str) -> Iterator[tuple[str, Figure]]:
    data, info = run.data, run.data.info or {}
    split, dataset = _evaluation_split(run)
    x, y = _inputs_and_targets(data.train)
    if x.dim() == 2 and x.shape[1] == 2 and "grid_shape" in info and y.numel() == int(np.prod(info["grid_shape"])):
        predictions = predict(run.model, x, device=device).numpy().reshape(-1)
        points = x.numpy() * np.asarray(info.get("std", 1.0)) + np.asarray(info.get("mean", 0.0))
        yield "surface", plot_surface(points, y.numpy().reshape(-1), predictions, info["grid_shape"])
    elif x.dim() == 2 and x.shape[1] == 1 and y.reshape(len(y), -1).shape[1] == 1:
        xs = x.numpy().reshape(-1)
        margin = 0.25 * max(float(xs.max() - xs.min()), 1.0)
        x_line = np.linspace(xs.min() - margin, xs.max() + margin, 200, dtype=np.float32)
        y_line = predict(run.model, torch.from_numpy(x_line[:, None]), device=device).numpy().reshape(-1)
        yield "fit", plot_line_fit(xs, y.numpy().reshape(-1), x_line, y_line, label=_line_label(run.model))
    else:
        inputs, targets = _inputs_and_targets(dataset)
        predictions = predict(run.model, inputs, device=device)
        if predictions[0].numel() == 1 and targets[0].numel() == 1:
            yield "predicted_vs_true", plot_predicted_vs_true(targets.numpy().reshape(-1),
                                                              predictions.numpy().reshape(-1),
                                                              split=split)


def _line_label(model: Any) -> str:
    """'fit: y = 2.000 x + 1.000' for a single Linear(1, 1), else 'network'."""
    weight, bias = getattr(model, "weight", None), getattr(model, "bias", None)
    one_number = [isinstance(t, torch.Tensor) and t.numel() == 1 for t in (weight, bias)]
    if all(one_number):
        return f"fit: y = {float(weight.detach()):.3f} x + {float(bias.detach()):.3f}"
    return "network"


def write_plots_safely(run_dir: str | Path, **kwargs: Any) -> list[Path]:
    """`write_plots` for the end of training: a plotting failure warns (the run itself is saved
    already) instead of turning a finished run into an error."""
    try:
        return write_plots(run_dir, **kwargs)
    except WriteError as error:  # a full disk or read-only folder: the weights and summary are written already
        warnings.warn(f"{error}; the run itself is saved: draw its plots later with `zerograd plot {run_dir}`",
                      ZerogradWarning, stacklevel=2)
    except Exception as error:  # plotting must not fail a finished training run
        warnings.warn(f"could not draw the plots of {run_dir} ({type(error).__name__}: {error}); "
                      f"try again with: zerograd plot {run_dir}", ZerogradWarning, stacklevel=2)
    return []
