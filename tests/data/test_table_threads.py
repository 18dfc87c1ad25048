"""Work shared among threads gives bitwise what one thread gives: the standardised inputs (against
the plain formula), the fitted statistics, and the columns of a Parquet file read on threads."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from zerograd.data.tables import blocks, encode, read
from zerograd.data.tables.encode import TableEncoder
from zerograd.data.tables.read import RawTable

ROWS = 5000


def table() -> RawTable:
    """Numbers with gaps and huge values (whose squares overflow: std inf), a category between
    the numbers, and a text of numbers."""
    rng = np.random.default_rng(3)
    columns = {f"x{i}": rng.normal(size=ROWS) * 10.0 ** i for i in range(5)}
    columns["x1"][rng.choice(ROWS, 40, replace=False)] = np.nan
    columns["x2"][[5, 9]] = [1e300, -1e300]
    columns["x3"][11] = 1.7e308
    columns["colour"] = rng.choice(np.array(["red", "green", None], dtype=object), ROWS)
    columns["typed"] = np.array([str(v) for v in rng.integers(0, 9, ROWS)], dtype=object)
    columns["x5"] = rng.integers(0, 100, ROWS).astype(np.float64)
    names = ["x0", "x1", "colour", "x2", "x3", "x4", "typed", "x5"]
    return RawTable(names, {name: columns[name] for name in names}, "t")


def plain(table: RawTable, encoder: TableEncoder, rows: np.ndarray) -> np.ndarray:
    """The standardised number columns by the formula, one column at a time."""
    found = []
    for column in encoder.columns:
        if column.kind == "number":
            values = table.columns[column.name]
            values = values if values.dtype.kind == "f" else values.astype(float)
            scaled = (values[rows] - column.mean) / column.std
            scaled[~np.isfinite(scaled)] = 0.0
            found.append(scaled.astype(np.float32))
    return np.stack(found, axis=1)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_threads_standardise_bitwise_as_the_formula(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    monkeypatch.setattr(encode, "BLOCK_ROWS", 64)
    monkeypatch.setattr(encode, "worker_count", lambda tasks=None: max(1, min(threads, tasks or threads)))
    data = table()
    rows = np.random.default_rng(0).permutation(ROWS)
    names = [n for n in data.names if n != "typed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder, inputs = TableEncoder.fit_transform(data, names, rows, 4000)
        every = encoder.transform(data)
    numbers = [i for i, c in enumerate(encoder.columns) if c.kind == "number"]
    places = [sum(c.width for c in encoder.columns[:i]) for i in numbers]
    assert inputs[:, places].tobytes() == plain(data, encoder, rows).tobytes()
    assert every[:, places].tobytes() == plain(data, encoder, np.arange(ROWS)).tobytes()
    one = encoder.columns[2]
    assert one.kind == "category" and inputs[:, 2:2 + one.width].sum() == sum(data.columns["colour"][rows] != None)  # noqa: E711


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_fit_the_same_statistics(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    monkeypatch.setattr(encode, "BLOCK_ROWS", 64)
    data, rows = table(), np.arange(0, ROWS, 2)
    with warnings.catch_warnings(record=True) as one:
        warnings.simplefilter("always")
        want = TableEncoder.fit(data, data.names, rows=rows).to_dict()
    monkeypatch.setattr(encode, "worker_count", lambda tasks=None: max(1, min(threads, tasks or threads)))
    with warnings.catch_warnings(record=True) as many:
        warnings.simplefilter("always")
        got = TableEncoder.fit(data, data.names, rows=rows).to_dict()
    assert got == want and [str(w.message) for w in many] == [str(w.message) for w in one]


def test_a_parquet_file_read_on_threads_is_the_file_read_on_one(tmp_path: object,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = table()
    frame = pd.DataFrame(data.columns)
    path = tmp_path / "t.parquet"  # type: ignore[operator]
    frame.to_parquet(path, row_group_size=700)
    monkeypatch.setattr(read, "worker_count", lambda tasks=None: 4)
    got = read.read_parquet(path)
    monkeypatch.setattr(read, "worker_count", lambda tasks=None: 1)
    want = read.read_parquet(path)
    for name in want.names:
        a, b = got.columns[name], want.columns[name]
        assert a.dtype == b.dtype and (a.tobytes() == b.tobytes() if a.dtype.kind == "f" else a.tolist() == b.tolist())
    assert blocks.worker_count(1) == 1 and 1 <= blocks.worker_count() <= 4
