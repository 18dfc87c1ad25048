"""The folds of k-fold cross-validation: which training rows a run holds out (`cv: {folds: 5, fold: 2}`).

The training set's rows are dealt into `folds` parts, seeded by `cv.seed` (0 unless given: apart
from the run's own seed, so runs with other seeds see the same folds) and stratified when the
targets are class indices: the rows of each class are shuffled and dealt round the folds in turn,
so every class is in every fold in its share and the folds' sizes differ by one row at most (what
scikit-learn's StratifiedKFold gives). Run `fold` (1..folds) validates on that fold and trains on
the others; over the `folds` runs every row is validated exactly once. A data set's held-out test
set is not touched: the folds are cut from the training set only.

`take_rows` is the data-layer hook: the rows of a data set as a data set of the same kind, so
in-memory tensors stay in memory and image folders keep their per-batch decoding, with
augmentation for the training part only.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from zerograd.data.cached import CachedImages
from zerograd.data.images import StreamedImages
from zerograd.data.loader import in_memory_tensors
from zerograd.errors import ConfigError, DataError, did_you_mean

CV_KEYS = ("folds", "fold", "seed")
_SALT = 0x63765F66  # keeps the fold order apart from other generators seeded with the same seed


def check_cv(spec: Any) -> dict[str, int]:
    """A `cv:` section, checked: {folds: k >= 2, fold: 1..k, seed: int (default 0)}."""
    if not isinstance(spec, dict):
        raise ConfigError(f"cv must be a mapping like {{folds: 5, fold: 1}} (the runs of `zerograd cv` have one), got "
                          f"{spec!r}")
    for key in spec:
        if key not in CV_KEYS:
            raise ConfigError(f'cv has no option "{key}"{did_you_mean(str(key), CV_KEYS)}; valid: {", ".join(CV_KEYS)}')
    folds, fold, seed = spec.get("folds"), spec.get("fold"), spec.get("seed", 0)
    if not _whole(folds) or folds < 2:
        raise ConfigError(f"cv folds must be a whole number >= 2, got {folds!r}")
    if not _whole(fold) or not 1 <= fold <= folds:
        raise ConfigError(f"cv fold is the fold held out, 1 to {folds}, got {fold!r}")
    if not _whole(seed):
        raise ConfigError(f"cv seed must be a whole number, got {seed!r}")
    return {"folds": folds, "fold": fold, "seed": seed}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def fold_numbers(n: int, folds: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The fold (0-based) of each of `n` rows; stratified by `labels` when given."""
    if n < folds:
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} training samples, the data has {n}; use "
                        "fewer --folds")
    rng = np.random.default_rng([seed % 2**63, folds, _SALT])
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    assignment = np.empty(n, dtype=np.int64)
    dealt = 0
    for members in groups:  # each class shuffled, then dealt on round the folds from where the last left off
        assignment[rng.permutation(members)] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return assignment


def class_labels(dataset: Any) -> np.ndarray | None:
    """The class index of every sample, when the targets are class indices (None otherwise: the
    folds are then not stratified)."""
    if isinstance(dataset, (CachedImages, StreamedImages)):
        labels: Any = dataset.labels if isinstance(dataset, CachedImages) else dataset.raw.labels
    else:
        tensors = in_memory_tensors(dataset)
        if tensors is not None:
            labels = tensors[1] if len(tensors) > 1 else None
        elif isinstance(dataset, Dataset):
            labels = [_target(dataset, i) for i in range(len(dataset))]  # type: ignore[arg-type]
        else:
            labels = None
    if labels is None:
        return None
    if isinstance(labels, list):
        if not all(isinstance(v, (int, np.integer)) or (isinstance(v, torch.Tensor) and v.dim() == 0
                                                          and not v.is_floating_point()) for v in labels):
            return None
        return np.asarray([int(v) for v in labels])
    array = torch.as_tensor(labels)
    return array.numpy() if array.dim() == 1 and not array.is_floating_point() and array.dtype != torch.bool else None


def _target(dataset: Any, index: int) -> Any:
    item = dataset[index]
    return item[1] if isinstance(item, (tuple, list)) and len(item) > 1 else None


def take_rows(dataset: Any, rows: np.ndarray, *, training: bool) -> Any:
    """The samples `rows` of `dataset`, as a data set of the same kind where it can be (see the
    module doc); `training=False` turns an image folder's augmentation off."""
    index = torch.as_tensor(rows, dtype=torch.long)
    if isinstance(dataset, CachedImages):  # an image folder's or MNIST's
        return dataset.take(index, training=training)
    if isinstance(dataset, StreamedImages):
        raw = dataset.raw
        return StreamedImages([raw.files[i] for i in rows], [raw.labels[i] for i in rows], raw.spec, dataset.transform,
                              train=dataset.train and training, workers=dataset.workers, classes=dataset.classes)
    tensors = in_memory_tensors(dataset)
    if tensors is not None:
        part = TensorDataset(*(t[index] for t in tensors))
        if hasattr(dataset, "classes"):
            part.classes = list(dataset.classes)  # type: ignore[attr-defined]  # (MNIST's names)
        return part
    return Subset(dataset, rows.tolist())


def split_fold(dataset: Any, spec: dict[str, int]) -> tuple[Any, Any, str]:
    """(training part, validation fold, a note saying which) of `dataset` for `cv:` `spec`."""
    labels = class_labels(dataset)
    tensors = in_memory_tensors(dataset)
    n = len(tensors[0]) if tensors is not None else len(dataset)
    folds = fold_numbers(n, spec["folds"], spec["seed"], labels)
    held_out = folds == spec["fold"] - 1
    train, val = take_rows(dataset, np.flatnonzero(~held_out), training=True), take_rows(
        dataset, np.flatnonzero(held_out), training=False)
    how = "stratified by class" if labels is not None else "not stratified: the targets are not classes"
    note = (f"cv: fold {spec['fold']} of {spec['folds']} ({int(held_out.sum())} validation samples, "
            f"{int((~held_out).sum())} training; {how}; fold seed {spec['seed']})")
    return train, val, note
