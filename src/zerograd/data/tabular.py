"""Your own table: a CSV file or NumPy arrays (.npy / .npz) as a training set.

    data: {train: houses.csv, target: price}                     # test split held out: 20%
    data: {train: train.csv, test: test.csv, target: species}
    data: {train: features.npy, target: -1}                      # the last column is the target
    data: {train: mnist.npz}                                     # keys x/y or x_train/y_train/x_test/y_test

Numeric feature columns are standardised (mean 0, std 1) with statistics fitted on the training
split only; text columns with few distinct values become one-hot categories. The fitted
`TableEncoder` is stored with the run (preprocessing.json), so predictions on new rows are
preprocessed exactly like the training rows.
"""
from __future__ import annotations

import csv
import math
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from zerograd.errors import ConfigError, DataError, ZerogradWarning, did_you_mean

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".npy", ".npz")
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
MAX_CATEGORIES = 50  # more distinct texts than this is an id or free text, not a category
MAX_CLASSES_INFERRED = 20  # integer targets with at most this many values look like classes
X_KEYS = ("x", "inputs", "features", "data", "images")
Y_KEYS = ("y", "targets", "target", "labels", "label")
TASKS = ("auto", "classification", "regression")
# "binary" is losses.task_of's task for bce_with_logits: its 0/1 targets are read as float values.
TASK_ALIASES = {"classify": "classification", "regress": "regression", "binary": "regression"}


@dataclass
class RawTable:
    """Columns by name, each a float64 array (numeric) or an object array of str (text)."""

    names: list[str]
    columns: dict[str, np.ndarray]
    source: str

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def take(self, index: np.ndarray) -> RawTable:
        return RawTable(self.names, {k: v[index] for k, v in self.columns.items()}, self.source)


# -- reading --------------------------------------------------------------------------------------

def read_csv(path: str | Path) -> RawTable:
    """A CSV (or TSV) file with a header row; the delimiter is sniffed (`,` `;` tab `|`)."""
    path = _existing(path)
    text = _read_text(path)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if path.suffix == ".tsv" else csv.excel
    rows = [row for row in csv.reader(text.splitlines(), dialect) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataError(f"{path} has no data rows; a CSV needs a header row and at least one row of values")
    header = [name.strip() or f"column{i}" for i, name in enumerate(rows[0])]
    if all(_is_number(cell) for cell in header):
        raise DataError(f"{path} has no header row (its first row is all numbers); add a first line naming the columns")
    _check_unique(header, path)
    width = len(header)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise DataError(f"{path}, line {line}: {len(row)} values but the header names {width} columns")
    cells = list(zip(*rows[1:]))
    columns = {}
    for name, values in zip(header, cells):
        columns[name], infinite = _parse_column(values)
        if infinite:  # inf is no value to standardise or learn from: like an empty cell, said out loud
            warnings.warn(f"{path}: column {name!r} holds {infinite} infinite value{'s' * (infinite > 1)} (inf/-inf); "
                          "they are read as missing values (filled with the training mean)", ZerogradWarning, stacklevel=2)
    return RawTable(header, columns, str(path))


def _read_text(path: Path) -> str:
    """The file's text: UTF-8 (with or without a BOM) or UTF-16 with its BOM (Excel's "Unicode
    text"); any other bytes are an error rather than characters silently replaced."""
    data = path.read_bytes()
    encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: byte 0x{data[error.start]:02x} is not {encoding.removesuffix('-sig').upper()} "
                        "text; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)") from None


def _check_unique(header: list[str], path: Path) -> None:
    """Two columns of one name: one would silently shadow the other."""
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        where = "; ".join(f"{name!r} in columns {', '.join(str(i + 1) for i, n in enumerate(header) if n == name)}"
                          for name in repeated)
        raise DataError(f"{path}: the header names the same column more than once ({where}); give every column "
                        "its own name")


def _parse_column(values: Sequence[str]) -> tuple[np.ndarray, int]:
    """(numbers, how many were inf/-inf) when every present cell is a number, missing cells and
    infinities as NaN; else (the texts, 0)."""
    stripped = [v.strip() for v in values]
    present = [v for v in stripped if v.lower() not in MISSING]
    if present and all(_parses(v) for v in present):
        numbers = np.array([float(v) if v.lower() not in MISSING else math.nan for v in stripped], dtype=np.float64)
        infinite = np.isinf(numbers)
        numbers[infinite] = math.nan
        return numbers, int(infinite.sum())
    return np.array(stripped, dtype=object), 0


def _parses(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_number(text: str) -> bool:
    """A finite number (a header cell like "inf" or "nan" is a name, not a value)."""
    return _parses(text) and math.isfinite(float(text))


def read_arrays(path: str | Path, target: str | int | None) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """(inputs, targets, optional (test inputs, test targets)) from a .npy or .npz file.

    A .npy file is one 2-D array whose `target` column (default: the last) holds the targets.
    A .npz file holds x/y arrays (also: inputs/targets, features/labels, x_train/y_train with
    x_test/y_test); `target` names the targets' key when it is not one of those.
    """
    path = _existing(path)
    loaded = load_numpy(path)
    if isinstance(loaded, np.ndarray):
        return (*_split_target_column(loaded, target, path), None)
    arrays = loaded
    lower = {key.lower(): key for key in arrays}
    if "x_train" in lower and "y_train" in lower:
        test = None
        if "x_test" in lower and "y_test" in lower:
            test = (arrays[lower["x_test"]], arrays[lower["y_test"]])
        return arrays[lower["x_train"]], arrays[lower["y_train"]], test
    if len(arrays) == 1:
        return (*_split_target_column(next(iter(arrays.values())), target, path), None)
    y_key = str(target) if target is not None else next((lower[k] for k in Y_KEYS if k in lower), None)
    if y_key not in arrays:
        wanted = f'the target key "{target}"' if target is not None else "a targets array (y, targets or labels)"
        raise DataError(f"{path} holds {', '.join(arrays)} but not {wanted}; give target: KEY{did_you_mean(str(target), arrays) if target is not None else ''}")
    others = [k for k in arrays if k != y_key]
    x_key = next((lower[k] for k in X_KEYS if k in lower and lower[k] != y_key), others[0] if len(others) == 1 else None)
    if x_key is None:
        raise DataError(f"{path} holds {', '.join(arrays)}; zerograd cannot tell which array holds the inputs; name it x")
    return arrays[x_key], arrays[y_key], None


def load_numpy(path: str | Path) -> np.ndarray | dict[str, np.ndarray]:
    """The array of an .npy file, or the arrays of an .npz file by name, whatever the file is
    called; pickles (and object arrays, which are pickles) are refused unread."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        with path.open("rb") as handle:
            head = handle.read(6)
        if "Object arrays" in str(error) or head.startswith(b"\x80"):  # pickle protocol 2+
            detail = "it holds Python objects (a pickle), which zerograd never loads"
        elif not head.startswith((b"\x93NUMPY", b"PK")):  # NumPy would call any other bytes a pickle too
            detail = "it is neither an .npy nor an .npz file"
        else:
            detail = str(error).split(". ")[0].strip().rstrip(".")
        raise DataError(f"{path} is not a NumPy file of numbers zerograd can read ({detail}); save numeric arrays "
                        "with np.save (one array) or np.savez (several)") from None


def _split_target_column(array: np.ndarray, target: str | int | None, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if array.ndim != 2:
        raise DataError(f"{path} holds one array of shape {list(array.shape)}; a single array must be 2-D (rows of features with a target column), or use an .npz with x and y")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path} holds {array.dtype} values; zerograd reads numeric arrays (allow_pickle is off)")
    try:
        column = -1 if target is None else int(target)
    except ValueError:
        raise ConfigError(f"target for a .npy file is a column number (e.g. -1 for the last), got {target!r}") from None
    width = array.shape[1]
    if not -width <= column < width:
        raise ConfigError(f"target column {column} is out of range: {path} has {width} columns")
    column %= width
    inputs = np.delete(array, column, axis=1)
    return inputs, array[:, column]


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    return path


# -- encoding -------------------------------------------------------------------------------------

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

    `columns` is used for tables (CSV, 2-D arrays). Arrays with more dimensions (e.g. images in an
    .npz) are scaled with one `mean`/`std` for all values instead.
    """

    columns: list[Column] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    input_shape: list[int] = field(default_factory=list)

    @classmethod
    def fit(cls, table: RawTable, features: Sequence[str], *, standardize: bool = True) -> TableEncoder:
        columns = [_fit_column(name, table.columns[name], table.source, standardize) for name in features]
        return cls(columns=columns, input_shape=[sum(c.width for c in columns)])

    @classmethod
    def fit_array(cls, inputs: np.ndarray, *, standardize: bool = True) -> TableEncoder:
        values = np.asarray(inputs, dtype=np.float64)
        if values.ndim == 2:
            table = RawTable([f"x{i}" for i in range(values.shape[1])], {f"x{i}": values[:, i] for i in range(values.shape[1])}, "array")
            return cls.fit(table, table.names, standardize=standardize)
        finite = values[np.isfinite(values)]  # a NaN pixel is the pre-flight check's to report, not to spread
        mean, std = (float(finite.mean()), float(finite.std()) or 1.0) if standardize and finite.size else (0.0, 1.0)
        return cls(mean=mean, std=std, input_shape=list(values.shape[1:]))

    def transform(self, table: RawTable) -> np.ndarray:
        parts = [_encode_column(column, table.columns[column.name]) for column in self.columns]
        return np.concatenate(parts, axis=1).astype(np.float32)

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
            raise DataError(f"each row needs {len(self.columns)} values ({', '.join(self.feature_names)}), got shape {list(rows.shape)}")
        table = RawTable(self.feature_names, {c.name: _raw_column(rows[:, i], c) for i, c in enumerate(self.columns)}, "input")
        return self.transform(table)

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        if self.columns:
            return {"columns": [_column_dict(c) for c in self.columns], "input_shape": self.input_shape}
        return {"mean": self.mean, "std": self.std, "input_shape": self.input_shape}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableEncoder:
        columns = [Column(**c) for c in data.get("columns", [])]
        return cls(columns, float(data.get("mean", 0.0)), float(data.get("std", 1.0)), list(data.get("input_shape", [])))


def _column_dict(column: Column) -> dict[str, Any]:
    if column.kind == "category":
        return {"name": column.name, "kind": "category", "values": column.values}
    return {"name": column.name, "kind": "number", "mean": column.mean, "std": column.std}


def _fit_column(name: str, values: np.ndarray, source: str, standardize: bool) -> Column:
    if values.dtype != object:
        present = values[np.isfinite(values)]  # NaN and inf are missing values (filled with the mean)
        if len(present) == 0:
            raise DataError(f"{source}: column {name!r} has no values in the training split")
        if not standardize:
            return Column(name, "number", mean=0.0, std=1.0)
        std = float(present.std())
        return Column(name, "number", mean=float(present.mean()), std=std if std > 0 else 1.0)
    present_texts = [str(v).strip() for v in values if str(v).strip().lower() not in MISSING]
    categories = sorted(set(present_texts))
    if len(categories) > MAX_CATEGORIES:
        raise DataError(
            f"{source}: column {name!r} holds {len(categories)} different texts (e.g. {categories[0]!r}), too many for a "
            f"category; leave it out by listing the columns to use: features: [...]"
        )
    words = [v for v in present_texts if not _parses(v)]
    if 0 < len(words) <= len(present_texts) // 2:  # mostly numbers: a few stray words made it text
        warnings.warn(f"{source}: column {name!r} is read as {len(categories)} categories, not as numbers, because "
                      f"{len(words)} of its {len(present_texts)} values are not numbers (e.g. {words[0]!r}); if it holds "
                      "numbers, empty or fix those cells", ZerogradWarning, stacklevel=4)
    return Column(name, "category", values=categories)


def _encode_column(column: Column, values: np.ndarray) -> np.ndarray:
    if column.kind == "category":
        index = {v: i for i, v in enumerate(column.values)}
        encoded = np.zeros((len(values), len(column.values)), dtype=np.float32)
        for row, value in enumerate(values):  # unseen and missing categories stay all-zero
            position = index.get(str(value))
            if position is not None:
                encoded[row, position] = 1.0
        return encoded
    if values.dtype == object:  # numbers written as text (a form, a dict of strings)
        values = _raw_column(values, column)
    # A missing (or infinite) number becomes the training mean, i.e. 0 after standardisation.
    filled = np.where(np.isfinite(values), values, column.mean)
    return ((filled - column.mean) / column.std).astype(np.float32)[:, None]


def _raw_column(values: np.ndarray, column: Column) -> np.ndarray:
    if column.kind == "category":
        return np.array([str(v) for v in values], dtype=object)
    try:
        return np.array([math.nan if v is None or str(v).strip().lower() in MISSING else float(v) for v in values])
    except (TypeError, ValueError):
        raise DataError(f"column {column.name!r} should hold numbers, got {list(values)[:3]!r}") from None


# -- targets and the task -------------------------------------------------------------------------

def infer_task(targets: np.ndarray) -> tuple[str, str]:
    """('classification' | 'regression', why) from the target values."""
    values = np.asarray(targets)
    if values.dtype == object or values.dtype.kind in "USb":
        distinct = len({str(v) for v in values})
        return "classification", f"the target holds text labels ({distinct} distinct)"
    numbers = values.astype(np.float64)
    numbers = numbers[np.isfinite(numbers)]
    distinct = len(np.unique(numbers))
    if np.all(numbers == np.round(numbers)) and distinct <= MAX_CLASSES_INFERRED:
        return "classification", f"the target holds {distinct} distinct whole numbers"
    kind = "whole numbers" if np.all(numbers == np.round(numbers)) else "fractional numbers"
    return "regression", f"the target holds {distinct} distinct {kind}"


def encode_targets(targets: np.ndarray, task: str, class_names: list[str] | None, source: str) -> tuple[torch.Tensor, list[str] | None]:
    """Class indices (int64, [N]) and the class names, or float32 values [N, k] for regression."""
    values = np.asarray(targets)
    if task == "regression":
        if values.dtype == object or values.dtype.kind in "USb":
            example = next(iter(values), "")
            raise DataError(f"{source}: the target holds text ({example!r}), which cannot be regressed; use classification (loss: cross_entropy)")
        numbers = values.astype(np.float32)
        if not np.isfinite(numbers).all():
            raise DataError(f"{source}: the target is missing in {int((~np.isfinite(numbers)).sum())} rows (empty, NaN or inf); "
                            "fill or drop them")
        return torch.from_numpy(numbers.reshape(len(numbers), -1).copy()), None
    if values.ndim != 1:
        raise DataError(f"{source}: class targets must be one label per row, got shape {list(values.shape)}")
    labels = _label_texts(values, source)
    if class_names is None:
        class_names = _sorted_labels(labels)
        if len(class_names) == 1:  # it would train to 100% accuracy and learn nothing
            raise DataError(f"{source}: the target holds one class only ({class_names[0]!r}, in all {len(labels)} rows); "
                            "a classifier needs at least two classes: check the target column (--target, data.target) "
                            "and the file")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise DataError(f"{source}: target values {unknown[:5]} do not occur in the training data (its classes: {', '.join(class_names[:10])})")
    return torch.tensor([index[label] for label in labels], dtype=torch.long), class_names


def _label_texts(values: np.ndarray, source: str) -> list[str]:
    if values.dtype == object or values.dtype.kind in "USb":
        labels = [str(v).strip() for v in values]
        missing = sum(1 for label in labels if label.lower() in MISSING)
    else:
        numbers = values.astype(np.float64)
        missing = int((~np.isfinite(numbers)).sum())
        if not missing and not np.all(numbers == np.round(numbers)):
            raise DataError(
                f"{source}: the target holds fractional numbers ({numbers[numbers != np.round(numbers)][0]:g}), which are not "
                "classes; for regression use loss: mse (or --task regress)"
            )
        labels = [str(int(v)) if math.isfinite(v) else "" for v in numbers]
    if missing:
        raise DataError(f"{source}: the target is missing in {missing} rows (empty, NaN or inf); fill or drop them")
    return labels


def _sorted_labels(labels: Iterable[str]) -> list[str]:
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


# -- the data set ---------------------------------------------------------------------------------

@dataclass
class TableSplits:
    """Train / validation / test tensors of a table, with everything needed to preprocess new rows."""

    train: TensorDataset
    val: TensorDataset | None
    test: TensorDataset | None
    task: str
    class_names: list[str] | None
    encoder: TableEncoder
    target: str | None
    notes: list[str]

    @property
    def input_shape(self) -> list[int]:
        return list(self.encoder.input_shape)

    def preprocessing(self) -> dict[str, Any]:
        return {"kind": "table", "task": self.task, "target": self.target, "class_names": self.class_names, **self.encoder.to_dict()}


def load_table_data(
    train: str | Path,
    *,
    target: str | int | None = None,
    test: str | Path | None = None,
    features: Sequence[str] | None = None,
    task: str = "auto",
    standardize: bool = True,
    test_split: float = 0.2,
    val_split: float = 0.0,
    seed: int = 0,
) -> TableSplits:
    """Read a CSV / .npy / .npz training file (and an optional test file) into tensors.

    Without a `test` file, `test_split` of the rows is held out as the test set. The
    standardisation is fitted on the rows left for training only (not validation or test).
    """
    _check_fraction("test_split", test_split)
    _check_fraction("val_split", val_split)
    task = TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise ConfigError(f'data task must be one of {", ".join(TASKS)}, got "{task}"{did_you_mean(task, TASKS)}')
    suffix = Path(train).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{train}: zerograd reads tables from {', '.join(TABLE_SUFFIXES)} files")
    if suffix in (".npy", ".npz"):
        return _array_splits(train, target, test, task, standardize, test_split, val_split, seed)
    return _csv_splits(train, target, test, features, task, standardize, test_split, val_split, seed)


def _csv_splits(train: str | Path, target: str | int | None, test: str | Path | None, features: Sequence[str] | None,
                task: str, standardize: bool, test_split: float, val_split: float, seed: int) -> TableSplits:
    table = read_csv(train)
    target_name = _target_column(table, target)
    feature_names = _feature_columns(table, target_name, features)
    task, notes = _resolve_task(task, table.columns[target_name], f"column {target_name!r}")
    test_table = read_csv(test) if test is not None else None
    if test_table is not None:
        missing = [name for name in [*feature_names, target_name] if name not in test_table.columns]
        if missing:
            raise DataError(f"{test}: columns {missing} of the training file are missing")
    parts = _split_rows(len(table), test_split if test_table is None else 0.0, val_split, seed)
    train_part = table.take(parts["train"])
    encoder = TableEncoder.fit(train_part, feature_names, standardize=standardize)
    notes += _missing_notes(train_part, feature_names)
    # The classes are those of the whole training file: a rare class may miss the training part.
    _, class_names = encode_targets(table.columns[target_name], task, None, f"{train}")
    y_train, _ = encode_targets(train_part.columns[target_name], task, class_names, f"{train}")

    def dataset(part: RawTable, source: str) -> TensorDataset:
        y, _ = encode_targets(part.columns[target_name], task, class_names, source)
        return TensorDataset(torch.from_numpy(encoder.transform(part)), y)

    train_set = TensorDataset(torch.from_numpy(encoder.transform(train_part)), y_train)
    val_set = dataset(table.take(parts["val"]), f"{train}") if len(parts["val"]) else None
    if test_table is not None:
        test_set = dataset(test_table, str(test))
    else:
        test_set = dataset(table.take(parts["test"]), f"{train}") if len(parts["test"]) else None
    notes.append(_split_note(train_set, val_set, test_set, test is not None))
    return TableSplits(train_set, val_set, test_set, task, class_names, encoder, target_name, notes)


def _array_splits(train: str | Path, target: str | int | None, test: str | Path | None, task: str,
                  standardize: bool, test_split: float, val_split: float, seed: int) -> TableSplits:
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
    task, notes = _resolve_task(task, targets, "the targets")
    notes += _array_gaps(inputs, train)
    parts = _split_rows(len(inputs), test_split if test_arrays is None else 0.0, val_split, seed)
    encoder = TableEncoder.fit_array(inputs[parts["train"]], standardize=standardize)
    _, class_names = encode_targets(targets, task, None, str(train))
    y_train, _ = encode_targets(targets[parts["train"]], task, class_names, str(train))

    def dataset(x: np.ndarray, y: np.ndarray, source: str) -> TensorDataset:
        encoded, _ = encode_targets(y, task, class_names, source)
        return TensorDataset(torch.from_numpy(encoder.transform_array(x)), encoded)

    train_set = TensorDataset(torch.from_numpy(encoder.transform_array(inputs[parts["train"]])), y_train)
    val_set = dataset(inputs[parts["val"]], targets[parts["val"]], str(train)) if len(parts["val"]) else None
    if test_arrays is not None:
        test_set = dataset(*test_arrays, str(test or train))
    else:
        test_set = dataset(inputs[parts["test"]], targets[parts["test"]], str(train)) if len(parts["test"]) else None
    notes.append(_split_note(train_set, val_set, test_set, test_arrays is not None))
    target_name = None if target is None else str(target)
    return TableSplits(train_set, val_set, test_set, task, class_names, encoder, target_name, notes)


def _array_gaps(inputs: np.ndarray, source: str | Path) -> list[str]:
    """NaN and inf in a table of numbers are missing values (filled with the training mean), as
    in a CSV file: a note for them, and a warning for the infinities, which are rarely meant."""
    if inputs.ndim != 2 or inputs.dtype.kind != "f":
        return []
    gaps = ~np.isfinite(inputs)
    if not gaps.any():
        return []
    named = _column_names(gaps)
    infinite = np.isinf(inputs)
    if infinite.any():
        count = int(infinite.sum())
        warnings.warn(f"{source}: {count} input value{'s are' if count > 1 else ' is'} inf/-inf ({_column_names(infinite)}); "
                      "they are read as missing values (filled with the training mean)", ZerogradWarning, stacklevel=4)
    return [f"{named}: {int(gaps.sum())} missing values filled with the training mean"]


def _column_names(mask: np.ndarray) -> str:
    """'column x3' or 'columns x0, x1, ...': the columns of a 2-D mask with any True."""
    columns = [f"x{i}" for i in np.flatnonzero(mask.any(axis=0))]
    return f"column{'s' * (len(columns) > 1)} " + ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")


def _target_column(table: RawTable, target: str | int | None) -> str:
    if target is None:
        name = table.names[-1]
        return name
    if isinstance(target, int) and str(target) not in table.columns:
        if not -len(table.names) <= target < len(table.names):
            raise ConfigError(f"target column {target} is out of range: {table.source} has {len(table.names)} columns")
        return table.names[target]
    if str(target) not in table.columns:
        raise ConfigError(f'{table.source} has no column "{target}"{did_you_mean(str(target), table.names)}; its columns: {", ".join(table.names)}')
    return str(target)


def _feature_columns(table: RawTable, target: str, features: Sequence[str] | None) -> list[str]:
    names = [n for n in table.names if n != target] if features is None else [str(f) for f in features]
    for name in names:
        if name not in table.columns:
            raise ConfigError(f'{table.source} has no column "{name}"{did_you_mean(name, table.names)}; its columns: {", ".join(table.names)}')
    if target in names:
        raise ConfigError(f'the target column "{target}" cannot also be a feature')
    if not names:
        raise DataError(f"{table.source} has no feature columns besides the target {target!r}")
    return names


def _resolve_task(task: str, targets: np.ndarray, name: str) -> tuple[str, list[str]]:
    if task != "auto":
        return task, []
    inferred, why = infer_task(targets)
    return inferred, [f"task: {inferred} (inferred: {why} in {name}; set it with --task or the loss)"]


def _missing_notes(table: RawTable, features: Sequence[str]) -> list[str]:
    notes = []
    for name in features:
        values = table.columns[name]
        if values.dtype != object and not np.isfinite(values).all():
            notes.append(f"column {name!r}: {int((~np.isfinite(values)).sum())} missing values filled with the training mean")
    return notes


def _split_rows(n: int, test_split: float, val_split: float, seed: int) -> dict[str, np.ndarray]:
    """Row indices of the test, validation and training parts: a seeded shuffle, cut in three."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_split))
    n_val = int(round((n - n_test) * val_split))
    if n - n_test - n_val < 1:
        raise ConfigError(f"test_split={test_split} and val_split={val_split} of {n} rows leave no rows to train on")
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]), "train": np.sort(order[n_test + n_val:])}


def _split_note(train: TensorDataset, val: TensorDataset | None, test: TensorDataset | None, test_file: bool) -> str:
    sizes = [f"{len(train)} training rows"]
    if val is not None:
        sizes.append(f"{len(val)} validation rows")
    if test is not None:
        sizes.append(f"{len(test)} test rows" + ("" if test_file else " (held out)"))
    return "data: " + ", ".join(sizes)


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a fraction in [0, 1), got {value!r}")
