"""NumPy files as tables: one 2-D .npy array with a target column, or an .npz of x/y arrays.

Pickles (and object arrays, which are pickles) are refused unread; NaN and inf in a table of
numbers are missing values (filled with the training mean), said in a note, infinities warned of.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from zerograd.data.tables.read import existing
from zerograd.errors import ConfigError, DataError, ZerogradWarning, did_you_mean

ARRAY_SUFFIXES = (".npy", ".npz")
X_KEYS = ("x", "inputs", "features", "data", "images")
Y_KEYS = ("y", "targets", "target", "labels", "label")


def read_arrays(path: str | Path,
                target: str | int | None) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """(inputs, targets, optional (test inputs, test targets)) from a .npy or .npz file.

    A .npy file is one 2-D array whose `target` column (default: the last) holds the targets.
    A .npz file holds x/y arrays (also: inputs/targets, features/labels, x_train/y_train with
    x_test/y_test); `target` names the targets' key when it is not one of those.
    """
    path = existing(path)
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
        hint = did_you_mean(str(target), arrays) if target is not None else ""
        raise DataError(f"{path} holds {', '.join(arrays)} but not {wanted}; give target: KEY{hint}")
    others = [k for k in arrays if k != y_key]
    x_key = next((lower[k] for k in X_KEYS if k in lower and lower[k] != y_key),
                 others[0] if len(others) == 1 else None)
    if x_key is None:
        raise DataError(f"{path} holds {', '.join(arrays)}; zerograd cannot tell which array holds the inputs; "
                        "name it x")
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


def _split_target_column(array: np.ndarray, target: str | int | None,
                         path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if array.ndim != 2:
        raise DataError(f"{path} holds one array of shape {list(array.shape)}; a single array must be 2-D (rows of "
                        "features with a target column), or use an .npz with x and y")
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


def array_gaps(inputs: np.ndarray, source: str | Path) -> list[str]:
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
        warnings.warn(f"{source}: {count} input value{'s are' if count > 1 else ' is'} inf/-inf "
                      f"({_column_names(infinite)}); they are read as missing values (filled with the training mean)",
                      ZerogradWarning, stacklevel=4)
    return [f"{named}: {int(gaps.sum())} missing values filled with the training mean"]


def _column_names(mask: np.ndarray) -> str:
    """'column x3' or 'columns x0, x1, ...': the columns of a 2-D mask with any True."""
    columns = [f"x{i}" for i in np.flatnonzero(mask.any(axis=0))]
    return f"column{'s' * (len(columns) > 1)} " + ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
