"""Your own table as a training set: a CSV, Parquet or Feather file, a pandas DataFrame (or an
(X, y) pair), or NumPy arrays (.npy / .npz).

    data: {train: houses.csv, target: price}                     # test split held out: 20%
    data: {train: train.parquet, test: test.parquet, target: species}
    data: {train: features.npy, target: -1}                      # the last column is the target
    data: {train: mnist.npz}                                     # keys x/y or x_train/y_train/x_test/y_test
    load_table_data(frame, target="species")                     # a DataFrame; or (X, y)

Numeric feature columns are standardised (mean 0, std 1) with statistics fitted on the training
split only; text columns with few distinct values become one-hot categories; ID columns are left
out with a note. Regression targets are standardised too (the model learns values of scale 1;
`TableEncoder.decode_outputs` gives back the target's units). The split is seeded, stratified by
class for classification, and returned as row numbers (`TableSplits.rows`) for the run to record.
The fitted `TableEncoder` is stored with the run (preprocessing.json), so predictions on new rows
are preprocessed exactly like the training rows.

The engine lives in `zerograd.data.tables` (read, choose, encode, targets, split, arrays); this
module is its public face.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from zerograd.data.tables.arrays import ARRAY_SUFFIXES, array_gaps, load_numpy, read_arrays
from zerograd.data.tables.cells import MISSING
from zerograd.data.tables.choose import choose_features, missing_notes, target_column
from zerograd.data.tables.encode import Column, TableEncoder
from zerograd.data.tables.read import (
    TABLE_FILE_SUFFIXES,
    RawTable,
    from_frame,
    from_inputs_and_targets,
    read_csv,
    read_table_file,
)
from zerograd.data.tables.split import (
    PART_CODES,
    check_fraction,
    row_parts,
    rows_of_parts,
    split_counts,
    split_rows,
)
from zerograd.data.tables.targets import (
    TASK_ALIASES,
    TASKS,
    check_class_count,
    class_indices,
    encode_targets,
    infer_task,
    regression_values,
    resolve_task,
)
from zerograd.errors import ConfigError, DataError

TABLE_SUFFIXES = TABLE_FILE_SUFFIXES + ARRAY_SUFFIXES

__all__ = [
    "MISSING", "TABLE_FILE_SUFFIXES", "TABLE_SUFFIXES", "TASKS", "TASK_ALIASES", "Column", "RawTable", "TableEncoder",
    "TableDataset", "TableSplits", "encode_targets", "from_frame", "infer_task", "load_numpy", "load_table_data",
    "read_arrays", "read_csv", "read_table_file", "rows_of_split",
]


class TableDataset(TensorDataset):
    """A table's (inputs, targets) tensors; `target_scale` is the (mean, std) per output of
    standardised regression targets (else None), so the loop can report errors in the target's
    own units."""

    def __init__(self, *tensors: torch.Tensor, target_scale: tuple[list[float], list[float]] | None = None) -> None:
        super().__init__(*tensors)
        self.target_scale = target_scale


@dataclass
class TableSplits:
    """Train / validation / test tensors of a table, with everything needed to preprocess new rows
    and to record the split: `rows` are the training source's row numbers (0-based data rows, int64
    arrays) in each part, in the order of the tensors; the test part's rows are those of a
    separate test file when one was given."""

    train: TableDataset
    val: TableDataset | None
    test: TableDataset | None
    task: str
    class_names: list[str] | None
    encoder: TableEncoder
    target: str | None
    notes: list[str]
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    stratified: bool = False
    source: str = ""
    test_source: str | None = None
    class_counts: dict[str, dict[str, int]] | None = None

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            data = getattr(self, part)
            if data is not None:
                setattr(self, part, TableDataset(*data.tensors, target_scale=self.target_scale))

    @property
    def input_shape(self) -> list[int]:
        return list(self.encoder.input_shape)

    @property
    def target_scale(self) -> tuple[list[float], list[float]] | None:
        """(mean, std) per output of standardised regression targets, else None. Errors of the
        standardised outputs times std are errors in the target's own units (RMSE, MAE); R^2 is
        the same in both."""
        if self.encoder.target_mean is None or self.encoder.target_std is None:
            return None
        return list(self.encoder.target_mean), list(self.encoder.target_std)

    def preprocessing(self) -> dict[str, Any]:
        return {"kind": "table", "task": self.task, "target": self.target, "class_names": self.class_names,
                **self.encoder.to_dict()}

    def split_record(self) -> dict[str, Any]:
        """Which rows went where, and how (JSON-ready: the run directory's split.json). The rows
        are the training source's data rows, 0-based; `row_parts` holds one digit per row (0 train,
        1 validation, 2 test: `rows_of_split` reads it back)."""
        n = sum(len(index) for part, index in self.rows.items() if part != "test" or self.test_source is None)
        kept = {part: index for part, index in self.rows.items() if part != "test" or self.test_source is None}
        record: dict[str, Any] = {"source": self.source, "seed": self.seed, "stratified": self.stratified,
                                  "counts": {part: len(index) for part, index in self.rows.items()},
                                  "part_codes": list(PART_CODES), "row_parts": row_parts(kept, n)}
        if self.test_source is not None:
            record["test_source"] = self.test_source
        if self.class_counts is not None:
            record["class_counts"] = self.class_counts
        return record


def rows_of_split(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """The sorted row numbers of the train, val and test parts of a run's split.json (the test
    part is empty when the test rows came from a file of their own)."""
    return rows_of_parts(record["row_parts"])


def load_table_data(
    train: Any,
    *,
    target: str | int | None = None,
    test: Any = None,
    features: str | Sequence[str] | None = None,
    drop: str | Sequence[str] | None = None,
    task: str = "auto",
    standardize: bool = True,
    standardize_target: bool = True,
    test_split: float = 0.2,
    val_split: float = 0.0,
    seed: int = 0,
    max_classes: int | None = None,
    encoding: str = "auto",
) -> TableSplits:
    """Read a table (a CSV / TSV / Parquet / Feather / .npy / .npz file, a pandas DataFrame, or an
    (X, y) pair) and an optional test table into tensors.

    Without a `test` table, `test_split` of the rows is held out as the test set, then `val_split`
    of the rest for validation: seeded by `seed`, stratified by class for classification. All
    fitting (standardisation, categories, target scaling) uses the training rows only.
    `features` / `drop` choose the input columns (lists, or "a,b" strings); without `features`,
    ID columns, texts too varied to be categories and empty columns are left out with a note.
    `task`: auto | classification | regression (or classify, regress; "binary": 0/1 values kept
    as they are). A classification with implausibly many classes is refused unless the task is
    given as classification with `max_classes`. `encoding` is for CSV files (auto: UTF-8 or a BOM's).
    """
    check_fraction("test_split", test_split)
    check_fraction("val_split", val_split)
    asked = TASK_ALIASES.get(task, task) == "classification"
    scale_targets = standardize_target and task != "binary"
    task = resolve_task(task)
    if isinstance(train, (str, Path)) and Path(train).suffix.lower() in ARRAY_SUFFIXES:
        return _array_splits(train, target, test, task, standardize, scale_targets, test_split, val_split, seed,
                             asked, max_classes)
    table, target = _read_source(train, target, encoding)
    target_name = target_column(table, target)
    feature_names, notes = choose_features(table, target_name, features, drop)
    notes = table.notes + notes
    targets = table.columns[target_name]
    task, task_notes = _task(task, targets, f"column {target_name!r}")
    notes += task_notes
    test_table = None
    if test is not None:
        if isinstance(test, tuple) and len(test) == 2:  # y of a test pair is the training target, whatever its name
            test = (test[0], _named(test[1], target_name))
        test_table, _ = _read_source(test, None, encoding)
        missing = [name for name in [*feature_names, target_name] if name not in test_table.columns]
        if missing:
            raise DataError(f"{test_table.source}: columns {missing} of the training data are missing")
    classes, class_names = None, None
    if task == "classification":
        # The classes are those of the whole training table: a rare class may miss the training part.
        classes, class_names = class_indices(targets, None, table.source)
        check_class_count(len(class_names), len(table), target_name, table.source, asked=asked,
                          max_classes=max_classes)
    parts = split_rows(len(table), test_split if test_table is None else 0.0, val_split, seed, classes)
    order = np.concatenate([parts["train"], parts["val"], parts["test"]])
    encoder, inputs = TableEncoder.fit_transform(table, feature_names, order, len(parts["train"]),
                                                 standardize=standardize)
    notes += missing_notes(table, feature_names)
    if task == "regression":
        values = regression_values(targets, table.source)
        if scale_targets:
            encoder.fit_targets(values[parts["train"]])
        y_ordered = torch.from_numpy(encoder.scale_targets(values[order]))
    else:
        y_ordered = torch.from_numpy(classes[order])
    sets = _cut(torch.from_numpy(inputs), y_ordered, len(parts["train"]), len(parts["val"]))
    if test_table is not None:
        y_test = (torch.from_numpy(class_indices(test_table.columns[target_name], class_names, test_table.source)[0])
                  if task == "classification" else
                  torch.from_numpy(encoder.scale_targets(regression_values(test_table.columns[target_name],
                                                                           test_table.source))))
        sets[2] = TensorDataset(torch.from_numpy(encoder.transform(test_table)), y_test)
    train_set, val_set, test_set = sets
    stratified = classes is not None and (len(parts["val"]) > 0 or len(parts["test"]) > 0)
    notes.append(_split_note(train_set, val_set, test_set, test_table is not None, stratified, seed))
    rows = dict(parts)
    if test_table is not None:
        rows["test"] = np.arange(len(test_table))
    counts = split_counts(classes, parts, class_names) if classes is not None and class_names is not None else None
    return TableSplits(train_set, val_set, test_set, task, class_names, encoder, target_name, notes, rows, seed,
                       stratified, table.source, test_table.source if test_table is not None else None, counts)


def _read_source(source: Any, target: str | int | None, encoding: str) -> tuple[RawTable, str | int | None]:
    """(table, target) from a file path, a DataFrame or an (X, y) pair (whose target is y)."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return from_frame(source), target
    if isinstance(source, tuple) and len(source) == 2:
        table, name = from_inputs_and_targets(*source)
        if target is not None and str(target) != name:
            raise ConfigError(f'the target of an (X, y) pair is y ("{name}"); drop target="{target}" or rename y')
        return table, name
    if not isinstance(source, (str, Path)):
        raise DataError(f"a table is a file path, a pandas DataFrame or an (X, y) pair, not a {type(source).__name__}")
    if Path(source).suffix.lower() not in TABLE_FILE_SUFFIXES:
        raise DataError(f"{source}: zerograd reads tables from {', '.join(TABLE_SUFFIXES)} files")
    return read_table_file(source, encoding=encoding), target


def _named(values: Any, name: str) -> Any:
    import pandas as pd

    return pd.Series(np.asarray(values), name=name)


def _task(task: str, targets: np.ndarray, name: str) -> tuple[str, list[str]]:
    if task != "auto":
        return task, []
    inferred, why = infer_task(targets)
    return inferred, [f"task: {inferred} (inferred: {why} in {name}; set it with --task or the loss)"]


def _cut(inputs: torch.Tensor, targets: torch.Tensor, n_train: int, n_val: int) -> list[TensorDataset | None]:
    """Train / validation / test datasets as views of one tensor laid out in that order (no copies)."""
    bounds = [0, n_train, n_train + n_val, len(inputs)]
    return [TensorDataset(inputs[a:b], targets[a:b]) if b > a or i == 0 else None
            for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def _array_splits(train: str | Path, target: str | int | None, test: str | Path | None, task: str, standardize: bool,
                  scale_targets: bool, test_split: float, val_split: float, seed: int, asked: bool,
                  max_classes: int | None) -> TableSplits:
    inputs, targets, test_arrays = read_arrays(train, target)
    if targets is None:
        raise DataError(f"{train} holds no targets")
    if test is not None:
        test_x, test_y, _ = read_arrays(test, target)
        test_arrays = (test_x, test_y) if test_y is not None else None
    if inputs.dtype.kind not in "biuf":
        raise DataError(f"{train}: the inputs are {inputs.dtype}; zerograd needs numbers")
    if len(inputs) != len(targets):
        raise DataError(f"{train}: {len(inputs)} input rows but {len(targets)} targets")
    task, notes = _task(task, targets, "the targets")
    notes += array_gaps(inputs, train)
    classes, class_names = None, None
    if task == "classification":
        classes, class_names = class_indices(targets, None, str(train))
        check_class_count(len(class_names), len(targets), "the targets", str(train), asked=asked,
                          max_classes=max_classes)
    parts = split_rows(len(inputs), test_split if test_arrays is None else 0.0, val_split, seed, classes)
    encoder = TableEncoder.fit_array(inputs[parts["train"]], standardize=standardize)
    if task == "regression" and scale_targets:
        encoder.fit_targets(regression_values(targets[parts["train"]], str(train)))

    def dataset(x: np.ndarray, y: np.ndarray, source: str) -> TensorDataset:
        if task == "classification":
            encoded = torch.from_numpy(class_indices(y, class_names, source)[0])
        else:
            encoded = torch.from_numpy(encoder.scale_targets(regression_values(y, source)))
        return TensorDataset(torch.from_numpy(encoder.transform_array(x)), encoded)

    train_set = dataset(inputs[parts["train"]], targets[parts["train"]], str(train))
    val_set = dataset(inputs[parts["val"]], targets[parts["val"]], str(train)) if len(parts["val"]) else None
    if test_arrays is not None:
        test_set = dataset(*test_arrays, str(test or train))
    else:
        test_set = dataset(inputs[parts["test"]], targets[parts["test"]], str(train)) if len(parts["test"]) else None
    stratified = classes is not None and (len(parts["val"]) > 0 or len(parts["test"]) > 0)
    notes.append(_split_note(train_set, val_set, test_set, test_arrays is not None, stratified, seed))
    rows = dict(parts)
    if test_arrays is not None:
        rows["test"] = np.arange(len(test_arrays[0]))
    counts = split_counts(classes, parts, class_names) if classes is not None and class_names is not None else None
    target_name = None if target is None else str(target)
    return TableSplits(train_set, val_set, test_set, task, class_names, encoder, target_name, notes, rows, seed,
                       stratified, str(train),
                       str(test) if test is not None else (str(train) if test_arrays is not None else None), counts)


def _split_note(train: TensorDataset, val: TensorDataset | None, test: TensorDataset | None, test_file: bool,
                stratified: bool, seed: int) -> str:
    sizes = [f"{len(train)} training rows"]
    if val is not None:
        sizes.append(f"{len(val)} validation rows")
    if test is not None:
        sizes.append(f"{len(test)} test rows" + ("" if test_file else " held out"))
    held_out = val is not None or (test is not None and not test_file)
    how = f" (seed {seed}{', stratified by class' if stratified else ''})" if held_out else ""
    return "data: " + ", ".join(sizes) + how
