"""Raw columns -> float32 model inputs, and regression targets -> standardised values and back.

Numeric columns are standardised (mean 0, std 1) with statistics of the training rows only; a
missing number becomes the training mean (0 after standardising). Text columns become one-hot
categories; a value never seen in training becomes all zeros, with a warning naming it. The fitted
`TableEncoder` is plain JSON (`to_dict` / `from_dict`), stored with the run as preprocessing.json,
so new rows are prepared exactly like the training rows without pickling anything.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zerograd.data.tables.blocks import worker_count
from zerograd.data.tables.cells import NUMBER_PATTERN, column_texts, count_numbers, missing_mask
from zerograd.data.tables.read import RawTable
from zerograd.errors import DataError, ZerogradWarning

MAX_CATEGORIES = 1000  # one input per category: more than this is no category, even when asked for
BLOCK_ROWS = 1 << 14  # rows encoded at a time: [BLOCK_ROWS, width] float32 fits a CPU cache


@dataclass
class Column:
    """How one raw feature column becomes model inputs: a standardised number or a one-hot category."""

    name: str
    kind: str  # "number" | "category"
    mean: float = 0.0
    std: float = 1.0
    values: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return len(self.values) if self.kind == "category" else 1


@dataclass
class TableEncoder:
    """Raw rows -> float32 model inputs, fitted on the training split (and stored with the run).

    `columns` is used for tables (CSV, Parquet, DataFrames, 2-D arrays). Arrays with more
    dimensions (e.g. images in an .npz) are scaled with one `mean`/`std` for all values instead.
    `target_mean`/`target_std` (one per output) are set when regression targets were standardised:
    the model then learns standardised values and `decode_outputs` turns its outputs back into
    the target's own units.
    """

    columns: list[Column] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    input_shape: list[int] = field(default_factory=list)
    target_mean: list[float] | None = None
    target_std: list[float] | None = None

    # -- fitting -----------------------------------------------------------------------------------

    @classmethod
    def fit(cls, table: RawTable, features: Sequence[str], *, standardize: bool = True,
            rows: np.ndarray | None = None) -> TableEncoder:
        """Fitted on `rows` of `table` (all rows when None): the training rows. Number columns
        are fitted on several threads for a big table (each column's steps are those of one thread);
        text columns in order on this one (their warnings come from here)."""
        def fitted(name: str) -> Column:
            return _fit_column(name, table.columns[name] if rows is None else table.columns[name][rows], table.source,
                               standardize)

        numbers = [name for name in features if table.columns[name].dtype.kind in "biuf"]
        threads = worker_count(min(len(numbers), (len(table) if rows is None else len(rows)) // BLOCK_ROWS))
        if threads == 1:
            columns = [fitted(name) for name in features]
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="zerograd-encode") as pool:
                found = {name: pool.submit(fitted, name) for name in numbers}
                columns = [found[name].result() if name in found else fitted(name) for name in features]
        return cls(columns=columns, input_shape=[sum(c.width for c in columns)])

    @classmethod
    def fit_transform(cls, table: RawTable, features: Sequence[str], rows: np.ndarray, n_train: int, *,
                      standardize: bool = True) -> tuple[TableEncoder, np.ndarray]:
        """(encoder fitted on the first `n_train` of `rows`, [len(rows), width] float32 inputs of
        all `rows` in that order): the training rows first, then the others, in one array."""
        encoder = cls.fit(table, features, standardize=standardize, rows=rows[:n_train])
        return encoder, encoder.transform(table, rows)

    @classmethod
    def fit_array(cls, inputs: np.ndarray, *, standardize: bool = True) -> TableEncoder:
        values = np.asarray(inputs)
        if values.ndim == 2:
            names = [f"x{i}" for i in range(values.shape[1])]
            table = RawTable(names, {name: values[:, i].astype(np.float64) for i, name in enumerate(names)}, "array")
            return cls.fit(table, names, standardize=standardize)
        finite = values[np.isfinite(values)]  # a NaN pixel is the pre-flight check's to report, not to spread
        mean, std = (float(finite.mean()), float(finite.std()) or 1.0) if standardize and finite.size else (0.0, 1.0)
        return cls(mean=mean, std=std, input_shape=list(values.shape[1:]))

    def fit_targets(self, targets: np.ndarray) -> None:
        """Standardise regression targets from now on, with the mean and std of `targets` (the
        training rows' values, [N] or [N, outputs])."""
        values = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        std = values.std(axis=0)
        self.target_mean = [float(v) for v in values.mean(axis=0)]
        self.target_std = [float(v) if v > 0 else 1.0 for v in std]

    # -- applying ----------------------------------------------------------------------------------

    def transform(self, table: RawTable, rows: np.ndarray | None = None) -> np.ndarray:
        """[N, width] float32 inputs for `rows` of `table` (all rows when None), in that order."""
        n = len(table) if rows is None else len(rows)
        out = np.zeros((n, sum(c.width for c in self.columns)), dtype=np.float32)
        numbers, offset = [], 0
        for column in self.columns:
            values = table.columns[column.name]
            if column.kind == "category":
                _one_hot(column, values if rows is None else values[rows], out, offset, table.source)
            else:  # numbers written as text (a form, a dict of strings) are parsed first
                values = values if values.dtype.kind in "biuf" else _parse_numbers(column, values)
                numbers.append((offset, column, values.astype(np.float64, copy=False)))
            offset += column.width
        if numbers:
            _standardise_into(out, numbers, rows, n)
        return out

    def transform_array(self, inputs: Any) -> np.ndarray:
        """Rows of raw values in feature order (numbers, or texts for category columns)."""
        if not self.columns:
            values = np.asarray(inputs, dtype=np.float64)
            return ((values - self.mean) / self.std).astype(np.float32)
        try:
            rows = np.asarray(inputs, dtype=object if any(c.kind == "category" for c in self.columns) else np.float64)
        except (TypeError, ValueError) as error:
            raise DataError(f"the rows must hold numbers ({', '.join(self.feature_names)}): {error}") from None
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != len(self.columns):
            raise DataError(f"each row needs {len(self.columns)} values ({', '.join(self.feature_names)}), "
                            f"got shape {list(rows.shape)}")
        table = RawTable(self.feature_names, {c.name: rows[:, i] for i, c in enumerate(self.columns)}, "input")
        return self.transform(table)

    def scale_targets(self, targets: np.ndarray) -> np.ndarray:
        """Regression targets [N, outputs] as the model learns them (standardised when fitted)."""
        values = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        if self.target_mean is not None and self.target_std is not None:
            values = (values - np.asarray(self.target_mean)) / np.asarray(self.target_std)
        return values.astype(np.float32)

    def decode_outputs(self, outputs: Any) -> Any:
        """A regression model's outputs ([N, outputs] or [N]; NumPy or torch) in the target's own
        units: the inverse of `scale_targets` (unchanged when the targets were not standardised)."""
        if self.target_mean is None or self.target_std is None:
            return outputs
        mean, std = np.asarray(self.target_mean, np.float32), np.asarray(self.target_std, np.float32)
        if hasattr(outputs, "new_tensor"):  # a torch tensor, kept one (without importing torch here)
            return outputs * outputs.new_tensor(std) + outputs.new_tensor(mean)
        return np.asarray(outputs) * std + mean

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    # -- JSON --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        if self.columns:
            data: dict[str, Any] = {"columns": [_column_dict(c) for c in self.columns], "input_shape": self.input_shape}
        else:
            data = {"mean": self.mean, "std": self.std, "input_shape": self.input_shape}
        if self.target_mean is not None:
            data["target_scale"] = {"mean": self.target_mean, "std": self.target_std}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableEncoder:
        """Also reads the preprocessing.json of runs written before target scaling existed."""
        columns = [Column(**c) for c in data.get("columns", [])]
        scale = data.get("target_scale") or {}
        return cls(columns, float(data.get("mean", 0.0)), float(data.get("std", 1.0)),
                   list(data.get("input_shape", [])),
                   [float(v) for v in scale["mean"]] if scale else None,
                   [float(v) for v in scale["std"]] if scale else None)


def _column_dict(column: Column) -> dict[str, Any]:
    if column.kind == "category":
        return {"name": column.name, "kind": "category", "values": column.values}
    return {"name": column.name, "kind": "number", "mean": column.mean, "std": column.std}


def _fit_column(name: str, values: np.ndarray, source: str, standardize: bool) -> Column:
    if values.dtype.kind in "biuf":
        finite = np.isfinite(values)
        present = values if finite.all() else values[finite]  # NaN and inf are missing values (filled with the mean)
        if len(present) == 0:
            raise DataError(f"{source}: column {name!r} has no values in the training split")
        if not standardize:
            return Column(name, "number", mean=0.0, std=1.0)
        std = float(present.std())
        return Column(name, "number", mean=float(present.mean()), std=std if std > 0 else 1.0)
    texts = column_texts(values)
    present = texts[~missing_mask(texts)]
    categories = sorted(present.unique().tolist())
    if len(categories) > MAX_CATEGORIES:
        raise DataError(f"{source}: column {name!r} holds {len(categories)} different texts "
                        f"(e.g. {categories[0]!r}), too many for a category (one input each); leave it out (drop it, "
                        "or list the features to use)")
    words = len(present) - count_numbers(present)
    if 0 < words <= len(present) // 2:  # mostly numbers: a few stray words made it text
        example = present[~present.str.fullmatch(NUMBER_PATTERN).fillna(False)].iloc[0]
        warnings.warn(f"{source}: column {name!r} is read as {len(categories)} categories, not as numbers, because "
                      f"{words} of its {len(present)} values are not numbers (e.g. {example!r}); if it holds "
                      "numbers, empty or fix those cells", ZerogradWarning, stacklevel=4)
    return Column(name, "category", values=categories)


def _standardise_into(out: np.ndarray, numbers: list[tuple[int, Column, np.ndarray]], rows: np.ndarray | None,
                      n: int) -> None:
    """Standardised numbers into their places in `out` (missing ones: 0, the training mean), a
    block of rows at a time: the block's rows stay in the CPU cache while every column is written
    into them (one column down a million rows touches a cache line per value). The blocks are
    shared among threads (NumPy lets go of the GIL in each step); each value takes the same
    steps whichever thread does it, so the bits do not depend on the threads."""
    places = [offset for offset, _, _ in numbers]
    # Numbers side by side (the usual table) are written through a slice, not a fancy index.
    target = slice(places[0], places[0] + len(places)) if places == list(range(places[0], places[0] + len(places))) \
        else places
    mean = np.array([column.mean for _, column, _ in numbers])[:, None]
    std = np.array([column.std for _, column, _ in numbers])[:, None]
    columns = [values for _, _, values in numbers]

    def blocks(first: int, last: int) -> None:
        buffer = np.empty((len(numbers), min(last - first, BLOCK_ROWS)))
        for start in range(first, last, BLOCK_ROWS):
            stop = min(last, start + BLOCK_ROWS)
            scaled = buffer[:, :stop - start]
            for j, values in enumerate(columns):
                if rows is None:
                    scaled[j] = values[start:stop]
                else:  # "clip": unbuffered (row numbers are in range); "raise" copies through a buffer
                    np.take(values, rows[start:stop], out=scaled[j], mode="clip")
            scaled -= mean
            scaled /= std
            gaps = ~np.isfinite(scaled)
            if gaps.any():
                scaled[gaps] = 0.0
            out[start:stop, target] = scaled.T

    spans = np.linspace(0, n, worker_count(n // BLOCK_ROWS) + 1).astype(int)
    if len(spans) == 2:
        blocks(0, n)
        return
    with ThreadPoolExecutor(len(spans) - 1, thread_name_prefix="zerograd-encode") as pool:
        for done in [pool.submit(blocks, int(a), int(b)) for a, b in zip(spans, spans[1:])]:
            done.result()


def _parse_numbers(column: Column, values: np.ndarray) -> np.ndarray:
    import pandas as pd

    texts = column_texts(values)
    missing = missing_mask(texts)
    numbers = pd.to_numeric(texts.where(~missing), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    wrong = np.isnan(numbers) & ~missing & ~texts.str.fullmatch("(?i)[+-]?nan").fillna(False).to_numpy(dtype=bool)
    if wrong.any():
        raise DataError(f"column {column.name!r} should hold numbers, got {texts[wrong].tolist()[:3]!r}")
    return numbers


def _one_hot(column: Column, values: np.ndarray, out: np.ndarray, offset: int, source: str) -> None:
    import pandas as pd

    texts = column_texts(values)
    codes = pd.Index(column.values, dtype=object).get_indexer(texts.astype(object)).astype(np.int64)
    found = np.flatnonzero(codes >= 0)
    out[found, offset + codes[found]] = 1.0
    if len(found) == len(codes):
        return
    others = texts[codes < 0]
    unseen = others[~missing_mask(others)]
    if len(unseen):  # missing values stay all-zero quietly; an unknown value is probably a mistake
        counts = unseen.value_counts()
        shown = ", ".join(repr(v) for v in counts.index[:5]) + (", ..." if len(counts) > 5 else "")
        where = "" if source == "input" else f"{source}: "
        known = ", ".join(map(repr, column.values[:10])) + (", ..." if len(column.values) > 10 else "")
        warnings.warn(f"{where}column {column.name!r} holds {len(counts)} value{'s' * (len(counts) > 1)} not seen in "
                      f"training ({shown}; {len(unseen)} row{'s' * (len(unseen) > 1)}); encoded as no category (all "
                      f"zeros). Known: {known}",
                      ZerogradWarning, stacklevel=4)

