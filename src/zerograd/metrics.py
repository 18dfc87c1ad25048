"""Metrics computed over a whole epoch.

Each metric keeps running sums as tensors on the device (no `.item()` per batch, so no host sync
in the hot loop) and turns them into one number at the end of the epoch. Precision, recall and F1
come from the epoch's confusion matrix, not from averaging per-batch values.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

from zerograd.errors import ConfigError, DataError, did_you_mean


class Metric:
    """Base: `update(output, target)` each batch, `compute()` once per epoch."""

    name = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    # True: the running sums are integer counts, the same whichever batches they are summed over,
    # so updates may wait and run on several batches at once (EpochTotals' `grouped`)
    sums_are_counts = False

    def state(self) -> list[torch.Tensor]:
        """The running sums, for summing across ranks."""
        return list(self.state_dict().values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The running sums by name, for checkpoints (a mid-epoch resume goes on with them)."""
        return {name: value for name, value in vars(self).items() if isinstance(value, torch.Tensor)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in state.items():
            setattr(self, name, tensor)


class Accuracy(Metric):
    """Top-k accuracy for class-index targets (k=1: plain accuracy)."""

    reads_classes = True
    sums_are_counts = True

    def __init__(self, k: int = 1) -> None:
        if k < 1:
            raise ConfigError(f"top-k accuracy needs k >= 1, got {k}")
        self.k = k
        self.name = "accuracy" if k == 1 else f"top{k}_accuracy"
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros((), dtype=torch.long)
        self.count = torch.zeros((), dtype=torch.long)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        labels = _class_targets(target)
        # count_nonzero, not sum: the same count in half the time of a sum over bools (a batch of 10
        # pays ~1.5 us per op, and this runs after every step)
        if self.k == 1:
            hits = torch.count_nonzero(torch.eq(output.argmax(dim=1), labels))
        elif self.k > output.shape[1]:
            raise ConfigError(f"metric {self.name} needs at least {self.k} classes, but the model outputs "
                              f"{output.shape[1]}")
        else:
            topk = output.topk(self.k, dim=1).indices
            hits = torch.count_nonzero((topk == labels.unsqueeze(1)).any(dim=1))
        if self.correct.device != hits.device:  # the sums live where the outputs are
            self.correct, self.count = self.correct.to(hits.device), self.count.to(hits.device)
        self.correct.add_(hits)  # in place: no new tensors per batch
        self.count.add_(labels.shape[0])

    def compute(self) -> float:
        return float(self.correct) / max(1, int(self.count))


class _ConfusionMetric(Metric):
    """Macro-averaged precision / recall / F1 from the epoch's confusion matrix (a class never
    predicted has precision 0, as in scikit-learn's `zero_division=0`)."""

    reads_classes = True
    sums_are_counts = True

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = kind
        self.reset()

    def reset(self) -> None:
        self.matrix = torch.zeros((0, 0), dtype=torch.long)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        classes = output.shape[1]
        labels = _class_targets(target)
        if self.matrix.shape[0] != classes:
            self.matrix = torch.zeros((classes, classes), dtype=torch.long, device=output.device)
        index = labels * classes + output.argmax(dim=1)
        self.matrix += torch.bincount(index, minlength=classes * classes).view(classes, classes)

    def compute(self) -> float:
        matrix = self.matrix.double()
        true_pos = matrix.diag()
        precision = true_pos / matrix.sum(0).clamp(min=1)
        recall = true_pos / matrix.sum(1).clamp(min=1)
        if self.kind == "precision":
            return float(precision.mean())
        if self.kind == "recall":
            return float(recall.mean())
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        return float(f1.mean())


class _RegressionMetric(Metric):
    """MAE, RMSE and R^2 from sums of errors and targets over the epoch. With `unit_scale` (the
    std per output of standardised targets) errors are in the target's own units (R^2 is the same
    in both)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = kind
        self.unit_scale: tuple[float, ...] | None = None  # a tuple, not a tensor: not a running sum (`state`)
        self.reset()

    def in_units(self, scale: Sequence[float]) -> None:
        self.unit_scale = tuple(float(s) for s in scale)

    def reset(self) -> None:
        self.sums = torch.zeros(5, dtype=torch.float64)  # n, sum|e|, sum e^2, sum y, sum y^2

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        if output.numel() != target.numel():
            raise DataError(
                f"{self.name} compares outputs and targets value by value, but the outputs have shape "
                f"{list(output.shape)} and the targets {list(target.shape)}"
            )
        # Flatten both: comparing [N, 1] with [N] must not broadcast to an [N, N] table.
        y = target.detach().double().reshape(-1)
        error = output.detach().double().reshape(-1) - y
        if self.unit_scale is not None and y.numel() % len(self.unit_scale) == 0:
            scale = torch.tensor(self.unit_scale, dtype=torch.float64, device=y.device).repeat(
                y.numel() // len(self.unit_scale))  # the values are [N, outputs] row by row
            y, error = y * scale, error * scale
        batch = torch.stack([
            torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device),
            error.abs().sum(), (error * error).sum(), y.sum(), (y * y).sum(),
        ])
        self.sums = self.sums.to(batch.device) + batch

    def compute(self) -> float:
        n, abs_sum, sq_sum, y_sum, y_sq = (float(v) for v in self.sums)
        if n == 0:
            return float("nan")
        if self.kind == "mae":
            return abs_sum / n
        if self.kind == "rmse":
            return (sq_sum / n) ** 0.5
        total = y_sq - y_sum * y_sum / n
        return 1.0 - sq_sum / total if total > 0 else float("nan")


class BinaryOutputs(Metric):
    """Runs a class metric on binary outputs: one logit per sample ([N] or [N, 1]) is class 1
    when > 0, and a 0/1 (or soft) target is class 1 when > 0.5."""

    def __init__(self, inner: Metric, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or inner.name

    def reset(self) -> None:
        self.inner.reset()

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        logits = output.reshape(output.shape[0], -1)
        if logits.shape[1] != 1:
            raise DataError(
                f"binary metric {self.name} needs one logit per sample (outputs [N] or [N, 1]), got outputs of shape "
                f"{list(output.shape)}; for several classes use cross_entropy"
            )
        # Two columns [0, z]: argmax picks class 1 exactly when z > 0.
        two_class = torch.cat([torch.zeros_like(logits), logits], dim=1)
        labels = (target.reshape(-1) > 0.5).long()
        self.inner.update(two_class, labels)

    @property
    def sums_are_counts(self) -> bool:  # type: ignore[override]
        return self.inner.sums_are_counts

    def compute(self) -> float:
        return self.inner.compute()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.inner.load_state_dict(state)


def _class_targets(target: torch.Tensor) -> torch.Tensor:
    """Class indices from index targets, or from one-hot / soft targets by argmax."""
    return target.argmax(dim=1) if target.dim() > 1 else target


METRICS: dict[str, Callable[[], Metric]] = {
    "accuracy": Accuracy,
    "binary_accuracy": lambda: BinaryOutputs(Accuracy(), name="binary_accuracy"),
    "top3_accuracy": lambda: Accuracy(3),
    "top5_accuracy": lambda: Accuracy(5),
    "precision": lambda: _ConfusionMetric("precision"),
    "recall": lambda: _ConfusionMetric("recall"),
    "f1": lambda: _ConfusionMetric("f1"),
    "mae": lambda: _RegressionMetric("mae"),
    "rmse": lambda: _RegressionMetric("rmse"),
    "r2": lambda: _RegressionMetric("r2"),
}

DEFAULT_METRICS = {"classification": ("accuracy",), "binary": ("accuracy",), "regression": ()}
_TOP_K = re.compile(r"top(\d+)_accuracy")


def build_metrics(names: Sequence[str] | None, task: str, *,
                  unit_scale: Sequence[float] | None = None) -> list[Metric]:
    """Metric objects for `names` (None: the task's defaults). `topK_accuracy` works for any K.
    For the "binary" task, class metrics (accuracy, precision, ...) read the outputs as logits.
    `unit_scale`: the std per output of standardised regression targets, so MAE and RMSE are in
    the target's own units."""
    chosen = DEFAULT_METRICS.get(task, ()) if names is None else names
    metrics = []
    for name in chosen:
        metric = _metric_named(name)
        if task == "binary" and getattr(metric, "reads_classes", False):
            metric = BinaryOutputs(metric)
        if unit_scale is not None and isinstance(metric, _RegressionMetric):
            metric.in_units(unit_scale)
        metrics.append(metric)
    return metrics


def _metric_named(name: str) -> Metric:
    if name in METRICS:
        return METRICS[name]()
    top_k = _TOP_K.fullmatch(str(name))
    if top_k:
        return Accuracy(int(top_k.group(1)))
    raise ConfigError(f'unknown metric "{name}"{did_you_mean(str(name), METRICS)}; choose from {", ".join(METRICS)} '
                      '(or topK_accuracy)')


# Logged names containing one of these are better when higher; everything else (losses, errors) when lower.
HIGHER_IS_BETTER = ("accuracy", "f1", "precision", "recall", "r2")


def resolve_mode(mode: str, monitor: str, *, what: str = "mode") -> str:
    """'min' or 'max' for watching `monitor`; 'auto' decides by the metric's name."""
    if mode == "auto":
        return "max" if any(word in monitor for word in HIGHER_IS_BETTER) else "min"
    if mode not in ("min", "max"):
        raise ConfigError(f'{what} must be "min", "max" or "auto", got "{mode}"')
    return mode
