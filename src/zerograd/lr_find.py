"""The learning-rate finder (Leslie Smith's range test, as in fastai's `lr_find`).

Train a throw-away copy of the model for a few steps while the learning rate grows exponentially
from `start_lr` to `end_lr`, record the training loss at every step, and stop once the loss
diverges (its running average exceeds `diverge_factor` x its lowest). A good learning rate lies
where the smoothed loss falls fastest: the suggestion is the lr of the steepest descent (most
negative slope against log lr) before the loss's minimum. The curve is smoothed with a centred
moving average, which, unlike fastai's running average, does not lag behind the lr and so does not
shift the suggestion towards the divergence. The caller's model, optimizer and random number
generators are left as they were.

    result = zerograd.lr_find(model, (X, y), loss="cross_entropy", out="lr-find/")
    result.suggested_lr, result.plot    # e.g. 3.1e-03, lr-find/lr_find.png
"""
from __future__ import annotations

import copy
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zerograd import config as configs
from zerograd import runs
from zerograd.accelerator import Accelerator
from zerograd.data.loader import BatchSource, batch_source, split_validation
from zerograd.errors import ConfigError
from zerograd.experiment import build_experiment
from zerograd.files import write_atomic
from zerograd.losses import build_loss
from zerograd.optim import build_optimizer
from zerograd.rng import preserved_rng, seed_everything

PLOT, CURVE = "lr_find.png", "lr_find.json"


@dataclass
class LRFindResult:
    """The sweep: one entry per step taken, the suggestion, and why the sweep ended."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested_lr: float | None
    stop_reason: str  # "diverged" (the loss blew up) or "completed" (reached end_lr)
    plot: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggested_lr": self.suggested_lr,
            "stop_reason": self.stop_reason,
            "lr": self.lrs,
            "loss": [_finite_or_none(v) for v in self.losses],
            "smoothed_loss": [_finite_or_none(v) for v in self.smoothed],
            **self.extras,
        }


def lr_find(
    model: nn.Module,
    data: Any,
    *,
    loss: str | dict | nn.Module = "cross_entropy",
    optimizer: str | dict = "adam",
    momentum: float = 0.0,
    weight_decay: float | None = None,
    batch_size: int = 64,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.9,
    diverge_factor: float = 4.0,
    device: str = "auto",
    precision: str = "fp32",
    clip_grad_norm: float | None = None,
    clip_grad_value: float | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    title: str = "",
) -> LRFindResult:
    """Sweep the learning rate exponentially over `steps` training steps on a copy of `model`.

    `data` is what `fit` takes (an `(X, y)` pair, a Dataset or a DataLoader); batches cycle
    through it as often as needed. The sweep stops early when the running average of the loss
    (factor `smoothing`) exceeds `diverge_factor` x its minimum, or is not finite. With `out`, writes `out/lr_find.png`
    (loss against lr, log axis, suggestion marked) and `out/lr_find.json` (the curve).
    """
    _check_sweep(start_lr, end_lr, steps, smoothing, diverge_factor)
    acc = Accelerator.create(device, precision)
    with preserved_rng(acc.device):  # dropout masks and shuffles drawn here change nothing the caller does next
        torch.manual_seed(seed)
        probe = copy.deepcopy(model).to(acc.device).train()  # the caller's model is never touched
        loss_fn = build_loss(loss).to(acc.device)
        source = batch_source(data, batch_size, shuffle=True, seed=seed, training=True, device=acc.device)
        opt = build_optimizer(probe.parameters(), optimizer, lr=start_lr, momentum=momentum,
                              weight_decay=weight_decay, device=acc.device)
        lrs, losses, stop_reason = _sweep(
            probe, loss_fn, opt, acc, _endless(source), lr_steps(start_lr, end_lr, steps),
            smoothing, diverge_factor, clip_grad_norm, clip_grad_value,
        )
    smoothed = smooth_curve(losses, window=max(3, steps // 10))
    result = LRFindResult(lrs, losses, smoothed, suggest_lr(lrs, smoothed), stop_reason)
    result.extras = {"start_lr": start_lr, "end_lr": end_lr, "steps": steps, "batch_size": batch_size,
                     "rule": "steepest descent of the smoothed loss (against log lr) before its minimum"}
    if out is not None:
        out = Path(out)
        result.plot = plot_lr_find(result, out / PLOT, title=title)
        write_atomic(out / CURVE, json.dumps(result.to_dict(), indent=1) + "\n")  # a WriteError names the file
    return result


def lr_steps(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """`steps` learning rates growing by the same factor each step, from start_lr to end_lr."""
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (steps - 1)) for i in range(steps)]


def _sweep(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, acc: Accelerator,
           batches: Iterator[tuple[torch.Tensor, ...]], schedule: list[float], smoothing: float,
           diverge_factor: float, clip_grad_norm: float | None,
           clip_grad_value: float | None) -> tuple[list[float], list[float], str]:
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    for step, lr in enumerate(schedule):
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = acc.to_device(next(batches))
        optimizer.zero_grad(set_to_none=True)
        with acc.autocast():
            loss = loss_fn(model(inputs), targets)
        acc.backward(loss)
        acc.step(optimizer, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)
        value = float(loss.detach())  # one host sync per step: fine for a 100-step sweep
        average = smoothing * average + (1 - smoothing) * value
        debiased = average / (1 - smoothing ** (step + 1))  # Adam-style bias correction of the start
        lrs.append(lr)
        losses.append(value)
        if not math.isfinite(debiased) or debiased > diverge_factor * best:
            return lrs, losses, "diverged"
        best = min(best, debiased)
    return lrs, losses, "completed"


def smooth_curve(losses: list[float], window: int) -> list[float]:
    """Centred moving average (odd `window`, edges padded with the end values); a non-finite
    loss (the step that diverged) stays as it is and is left out of its neighbours' averages."""
    values = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(values)
    half = max(1, window // 2)
    padded = np.pad(np.where(finite, values, 0.0), half, mode="edge")
    weights = np.pad(finite.astype(np.float64), half, mode="edge")
    kernel = np.ones(2 * half + 1)
    sums = np.convolve(padded, kernel, mode="valid")
    counts = np.convolve(weights, kernel, mode="valid")
    smoothed = np.where(finite, sums / np.maximum(counts, 1), values)
    return [float(v) for v in smoothed]


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float | None:
    """The lr where the smoothed loss falls fastest against log(lr), looking only between the
    first tenth of the sweep (noisy warm-up) and the loss's minimum. None when it never fell."""
    values = np.asarray(smoothed, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return None
    lowest = int(np.nanargmin(np.where(finite, values, np.nan)))
    start = min(len(values) // 10, max(0, lowest - 2))
    window = slice(start, lowest + 1)
    log_lr = np.log10(np.asarray(lrs, dtype=np.float64))[window]
    if len(log_lr) < 3:
        return None
    slopes = np.gradient(values[window], log_lr)
    steepest = int(np.argmin(slopes))
    if slopes[steepest] >= 0:
        return None
    return float(lrs[start + steepest])


def plot_lr_find(result: LRFindResult, path: Path, *, title: str = "") -> Path:
    """Loss against learning rate (log x axis), raw and smoothed, with the suggestion marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # Agg: renders to PNG without a display
    axes = figure.add_subplot()
    axes.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss per step")
    axes.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    if result.suggested_lr is not None:
        index = result.lrs.index(result.suggested_lr)
        axes.axvline(result.suggested_lr, color="tab:red", linestyle="--", linewidth=1)
        axes.plot([result.suggested_lr], [result.smoothed[index]], "o", color="tab:red",
                  label=f"suggested lr {result.suggested_lr:.2e}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)", fontsize=11)
    axes.set_ylabel("training loss", fontsize=11)
    axes.set_title(f"Learning-rate finder{': ' + title if title else ''}", fontsize=12)
    _clip_y_to_smoothed(axes, result)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(Path(path), buffer.getvalue())
    return path


def _clip_y_to_smoothed(axes: Any, result: LRFindResult) -> None:
    """Scale the y axis to the part of the curve before its minimum, so the diverging tail runs
    off the top instead of squashing the interesting part flat."""
    smooth = np.asarray(result.smoothed, dtype=np.float64)
    finite = smooth[np.isfinite(smooth)]
    if finite.size == 0:
        return
    low = float(finite.min())
    before_min = smooth[: int(np.nanargmin(np.where(np.isfinite(smooth), smooth, np.nan))) + 1]
    high = float(before_min[np.isfinite(before_min)].max())
    span = (high - low) or abs(high) or 1.0
    axes.set_ylim(low - 0.1 * span, high + 0.5 * span)


def lr_find_config(
    source: str | Path | dict[str, Any],
    *,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
) -> tuple[LRFindResult, Path]:
    """Run the finder on a recipe or YAML config: its model, training data, loss, optimizer,
    batch size, device, precision and seed. Returns the result and the output folder."""
    config = configs.resolve(source, overrides)
    seed_everything(config["seed"])  # the same initial weights `zerograd train` would start from
    experiment = build_experiment(config)
    train_data, _ = split_validation(experiment.data.train, None, config["val_split"], config["seed"])
    folder = Path(out) if out else runs.new_run_dir(f"{config['name']}-lr-find")
    result = lr_find(
        experiment.model, train_data, loss=config["loss"], optimizer=config["optimizer"],
        momentum=config["momentum"], weight_decay=config["weight_decay"], batch_size=config["batch_size"],
        start_lr=start_lr, end_lr=end_lr, steps=steps, device=config["device"], precision=config["precision"],
        clip_grad_norm=config["clip_grad_norm"], clip_grad_value=config["clip_grad_value"],
        seed=config["seed"], out=folder, title=config["name"],
    )
    return result, folder


def _check_sweep(start_lr: float, end_lr: float, steps: int, smoothing: float, diverge_factor: float) -> None:
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find needs 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if steps < 5:
        raise ConfigError(f"lr-find needs at least 5 steps to draw a curve, got steps={steps}")
    if not 0 <= smoothing < 1:
        raise ConfigError(f"lr-find smoothing must be in [0, 1), got {smoothing}")
    if diverge_factor <= 1:
        raise ConfigError(f"lr-find diverge_factor must be > 1, got {diverge_factor}")


def _endless(source: BatchSource) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches forever: a new shuffle order each pass over the data."""
    epoch = 0
    while True:
        yielded = False
        for batch in source.batches(epoch):
            yielded = True
            yield tuple(batch)
        if not yielded:
            raise ConfigError("lr-find got a loader that yields no batches")
        epoch += 1


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
