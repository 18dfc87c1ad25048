"""Which rows train, which validate, which test: a seeded split, stratified for classes.

The split is returned as row numbers (0-based, counting the table's data rows), so a run can
record exactly which rows went where, and the same seed gives the same split again.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from zerograd.errors import ConfigError

TEST, VAL, TRAIN = 0, 1, 2


def check_fraction(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a fraction in [0, 1), got {value!r}")


def split_rows(n: int, test_split: float, val_split: float, seed: int,
               classes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sorted row indices {"train", "val", "test"}: round(n * test_split) test rows, then
    round(rest * val_split) validation rows, the rest for training.

    With `classes` (a class index per row) each class is cut in its share (largest remainders
    first, ties by the seed), and every class keeps a training row where the sizes allow;
    without, it is a seeded shuffle.
    """
    n_test = int(round(n * test_split))
    n_val = int(round((n - n_test) * val_split))
    if n - n_test - n_val < 1:
        raise ConfigError(f"test_split={test_split} and val_split={val_split} of {n} rows leave no rows to train on")
    rng = np.random.default_rng(seed)
    part = np.full(n, TRAIN, dtype=np.int8)
    if classes is None:
        order = rng.permutation(n)
        part[order[:n_test]] = TEST
        part[order[n_test:n_test + n_val]] = VAL
    else:
        classes = np.asarray(classes, dtype=np.int64)
        rank = _rank_within_class(classes, rng)
        sizes = np.bincount(classes)
        test = _allocate(sizes, n_test, rng)
        val = _allocate(sizes - test, n_val, rng)
        part[rank < (test + val)[classes]] = VAL
        part[rank < test[classes]] = TEST
    return {"test": np.flatnonzero(part == TEST), "val": np.flatnonzero(part == VAL),
            "train": np.flatnonzero(part == TRAIN)}


def _rank_within_class(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's place (0, 1, ...) in a seeded shuffle of its class."""
    n = len(classes)
    shuffled = rng.permutation(n)
    codes = classes[shuffled].astype(np.uint16 if classes.max(initial=0) < 1 << 16 else np.int64)
    by_class = shuffled[np.argsort(codes, kind="stable")]  # a radix sort for small codes
    sizes = np.bincount(classes)
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return rank


def _allocate(sizes: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """`total` rows shared among classes of `sizes` in proportion, largest remainders first, each
    class keeping at least one row back when the total allows it."""
    if total == 0 or sizes.sum() == 0:
        return np.zeros_like(sizes)
    keep = 1 if total <= int(np.maximum(sizes - 1, 0).sum()) else 0
    caps = np.maximum(sizes - keep, 0)
    quota = sizes * (total / sizes.sum())
    counts = np.minimum(np.floor(quota).astype(np.int64), caps)
    order = np.lexsort((rng.random(len(sizes)), -(quota - counts)))
    left = total - int(counts.sum())
    while left > 0:
        for c in order:
            if left and counts[c] < caps[c]:
                counts[c] += 1
                left -= 1
    return counts


def split_counts(classes: np.ndarray, rows: dict[str, np.ndarray], class_names: list[str]) -> dict[str, dict[str, int]]:
    """Rows of each class in each part, e.g. {"test": {"setosa": 10, ...}, ...}."""
    return {part: {name: int(count)
                   for name, count in zip(class_names, np.bincount(classes[index], minlength=len(class_names)))}
            for part, index in rows.items() if len(index)}


PART_CODES = ("train", "val", "test")  # row_parts: the part of each row, as the digit of its index here


def row_parts(rows: dict[str, np.ndarray], n: int) -> str:
    """The part of each of `n` rows as one digit per row ("0" train, "1" val, "2" test): a record
    of a split that takes a byte per row, as opposed to three lists of row numbers."""
    codes = np.zeros(n, dtype=np.uint8)
    for code, part in enumerate(PART_CODES):
        codes[np.asarray(rows.get(part, []), dtype=np.int64)] = code
    return (codes + ord("0")).tobytes().decode("ascii")


def rows_of_parts(text: str) -> dict[str, np.ndarray]:
    """The sorted row numbers of each part, from `row_parts`' text."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")
    return {part: np.flatnonzero(codes == code) for code, part in enumerate(PART_CODES)}
