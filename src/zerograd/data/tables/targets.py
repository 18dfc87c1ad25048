"""Targets and the task: classes or values, read from the target column, refused when they cannot be.

Classification targets become class indices with the class names (whole numbers sorted as
numbers, texts alphabetically); regression targets become float values. A "classification" of a
target with more distinct values than a table has classes for (a measurement, a price, an ID)
is refused unless asked for explicitly (`max_classes`).
"""
from __future__ import annotations

import numpy as np
import torch

from zerograd.data.tables.cells import column_texts, missing_mask
from zerograd.errors import ConfigError, DataError, did_you_mean

TASKS = ("auto", "classification", "regression")
# "binary" is losses.task_of's task for bce_with_logits: its 0/1 targets are read as float values
# (and, unlike a regression's, never standardised).
TASK_ALIASES = {"classify": "classification", "regress": "regression", "binary": "regression"}
MAX_CLASSES_INFERRED = 20  # integer targets with at most this many values look like classes
MAX_CLASSES = 50  # more distinct values than this is a measurement, a count or an ID, not classes
FEW_CLASSES = 10  # up to this many classes are fine however few the rows (a small table)


def resolve_task(task: str) -> str:
    """'auto' | 'classification' | 'regression' from a task or its alias (classify, regress, binary)."""
    resolved = TASK_ALIASES.get(task, task)
    if resolved not in TASKS:
        raise ConfigError(f'data task must be one of {", ".join(TASKS)}, got "{task}"{did_you_mean(str(task), TASKS)}')
    return resolved


def infer_task(targets: np.ndarray) -> tuple[str, str]:
    """('classification' | 'regression', why) from the target values."""
    values = np.asarray(targets)
    if values.dtype.kind not in "biuf":
        texts = column_texts(values)
        distinct = int(texts[~missing_mask(texts)].nunique())
        return "classification", f"the target holds text labels ({distinct} distinct)"
    import pandas as pd

    numbers = values.astype(np.float64)
    numbers = numbers[np.isfinite(numbers)]
    distinct = len(pd.unique(numbers))
    whole = bool(np.all(numbers == np.round(numbers)))
    if whole and distinct <= MAX_CLASSES_INFERRED:
        return "classification", f"the target holds {distinct} distinct whole numbers"
    return "regression", f"the target holds {distinct} distinct {'whole' if whole else 'fractional'} numbers"


def class_indices(targets: np.ndarray, class_names: list[str] | None, source: str) -> tuple[np.ndarray, list[str]]:
    """(class index per row [N] int64, class names): the names found in `targets` when
    `class_names` is None (refusing a single class), else indices into the given names."""
    values = np.asarray(targets)
    if values.ndim != 1:
        raise DataError(f"{source}: class targets must be one label per row, got shape {list(values.shape)}")
    codes, found = _labels(values, source)
    if class_names is None:
        order = _sorted_labels(found)
        if len(order) == 1:  # it would train to 100% accuracy and learn nothing
            raise DataError(f"{source}: the target holds one class only ({order[0]!r}, in all {len(values)} rows); "
                            "a classifier needs at least two classes: check the target column (--target, data.target) "
                            "and the file")
        class_names = order
    position = {name: i for i, name in enumerate(class_names)}
    remap = np.array([position.get(label, -1) for label in found], dtype=np.int64)
    indices = remap[codes] if len(codes) else codes
    unknown = [label for label, index in zip(found, remap) if index < 0]
    if unknown:
        raise DataError(f"{source}: target values {sorted(unknown)[:5]} do not occur in the training data "
                        f"(its classes: {', '.join(class_names[:10])})")
    return indices, class_names


def _labels(values: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """(code per row, the distinct labels as texts), vectorised: whole numbers are written as
    integers ("3", not "3.0")."""
    import pandas as pd

    if values.dtype.kind in "biuf":
        numbers = values.astype(np.float64)
        missing = int((~np.isfinite(numbers)).sum())
        if not missing and not np.all(numbers == np.round(numbers)):
            raise DataError(
                f"{source}: the target holds fractional numbers ({numbers[numbers != np.round(numbers)][0]:g}), "
                "which are not classes; for regression use loss: mse (or --task regress)")
        if missing:
            raise _missing_targets(source, missing)
        codes, distinct = pd.factorize(numbers, sort=True)
        return codes.astype(np.int64), [str(int(v)) for v in distinct]
    texts = column_texts(values)
    missing = int(missing_mask(texts).sum())
    if missing:
        raise _missing_targets(source, missing)
    codes, distinct = pd.factorize(texts)
    return codes.astype(np.int64), [str(v) for v in distinct]


def _missing_targets(source: str, count: int) -> DataError:
    return DataError(f"{source}: the target is missing in {count} rows (empty, NaN or inf); fill or drop them")


def _sorted_labels(labels: list[str]) -> list[str]:
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def check_class_count(classes: int, rows: int, target: str, source: str, *, asked: bool,
                      max_classes: int | None) -> None:
    """Refuse a classification with more classes than a table of `rows` rows has room for (more
    than MAX_CLASSES, or more than FEW_CLASSES that are most of the rows), unless `asked` (the task
    was given as classification) with `max_classes` at least `classes`."""
    if max_classes is not None and (isinstance(max_classes, bool) or not isinstance(max_classes, int)
                                    or max_classes < 2):
        raise ConfigError(f"max_classes must be a whole number of at least 2, got {max_classes!r}")
    plausible = classes <= MAX_CLASSES and not (classes > FEW_CLASSES and classes > rows / 2)
    allowed = classes <= max_classes if max_classes is not None else plausible
    if allowed and (plausible or asked):
        return
    if max_classes is not None and classes > max_classes:
        raise DataError(f"{source}: the target {target!r} holds {classes} classes, more than max_classes={max_classes}")
    raise DataError(f"{source}: the target {target!r} holds {classes} different values in {rows} rows, too many to be "
                    f"classes (a measurement, a count or an ID?); to predict the values use regression "
                    f"(--task regress, loss: mse), or to train a classifier on {classes} classes anyway give task: "
                    f"classification with max_classes: {classes} (--task classify --max-classes {classes})")


def regression_values(targets: np.ndarray, source: str) -> np.ndarray:
    """Float64 targets [N, outputs]; text and missing values are refused."""
    values = np.asarray(targets)
    if values.dtype.kind not in "biuf":
        example = next((v for v in values if v is not None), "")
        raise DataError(f"{source}: the target holds text ({example!r}), which cannot be regressed; use classification "
                        "(loss: cross_entropy)")
    numbers = values.astype(np.float64).reshape(len(values), -1)
    gaps = int((~np.isfinite(numbers)).any(axis=1).sum())
    if gaps:
        raise _missing_targets(source, gaps)
    return numbers


def encode_targets(targets: np.ndarray, task: str, class_names: list[str] | None,
                   source: str) -> tuple[torch.Tensor, list[str] | None]:
    """Class indices (int64 tensor [N]) and the class names, or float32 values [N, k] for regression
    (not standardised: see `TableEncoder.scale_targets`)."""
    if task == "regression":
        return torch.from_numpy(regression_values(targets, source).astype(np.float32)), None
    indices, names = class_indices(targets, class_names, source)
    return torch.from_numpy(indices), names
