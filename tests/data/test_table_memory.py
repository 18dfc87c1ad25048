"""A CSV read block by block and a Parquet file read a column at a time give bitwise the tensors,
notes and encoder of reading each file whole (Arrow's `read_csv` / `read_table`, as before)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pytest
import torch

from zerograd.data.tables import blocks, read
from zerograd.data.tabular import TableSplits, load_table_data

ROWS = 3000


def frame(rows: int = ROWS) -> pd.DataFrame:
    """Numbers (some missing, some infinite), integers, categories, numbers written as text with a
    decimal comma, and a class target."""
    rng = np.random.default_rng(1)
    data = pd.DataFrame(rng.normal(size=(rows, 4)) * [1, 10, 1e6, 1e-3], columns=["a", "b", "c", "d"])
    data.loc[rng.choice(rows, 50, replace=False), "b"] = np.nan
    data.loc[[7, rows - 3], "c"] = np.inf
    data["count"] = rng.integers(0, 1000, rows)
    data["colour"] = rng.choice(["red", "green", "blue", None], rows)
    data["label"] = (data["a"] > 0).astype(int)
    return data


def whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make zerograd read files whole, as it did before reading them in blocks / columns."""
    monkeypatch.setattr(read, "read_ranges", lambda *args: None)
    monkeypatch.setattr(read, "read_blocks", lambda reader, size, block_bytes: None)
    by_column = read.read_parquet
    monkeypatch.setattr(read, "read_parquet", lambda path: by_column(path, by_column=False))


def assert_same_splits(got: TableSplits, want: TableSplits) -> None:
    for part in ("train", "val", "test"):
        a, b = getattr(got, part), getattr(want, part)
        assert (a is None) == (b is None)
        if a is not None:
            assert all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a.tensors, b.tensors)), part
    assert got.notes == want.notes and got.preprocessing() == want.preprocessing()
    assert all(np.array_equal(got.rows[k], want.rows[k]) for k in want.rows)


def load(path: Path, **options: object) -> TableSplits:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_table_data(path, target="label", val_split=0.1, **options)
    splits.notes.extend(str(w.message) for w in caught)  # the warnings (infinite values) must match too
    return splits


def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make zerograd read a CSV with Arrow's streaming reader, as it did before byte ranges."""
    monkeypatch.setattr(read, "read_ranges", lambda *args: None)


@pytest.mark.parametrize("ranges", [True, False])
@pytest.mark.parametrize("block_bytes", [4096, 1 << 20])
def test_a_csv_read_in_blocks_is_bitwise_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        block_bytes: int, ranges: bool) -> None:
    path = tmp_path / "t.csv"
    frame().to_csv(path, index=False)
    monkeypatch.setattr(read, "CSV_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(blocks, "RANGE_BYTES", 8192)
    if not ranges:
        one_thread(monkeypatch)
    seen = []
    reader = "read_ranges" if ranges else "read_blocks"
    original = getattr(read, reader)
    monkeypatch.setattr(read, reader, lambda *args: seen.append(1) or original(*args))
    got = load(path)
    assert seen and got.train.tensors[0].dtype == torch.float32
    with monkeypatch.context() as m:
        whole_file(m)
        assert_same_splits(got, load(path))


@pytest.mark.parametrize("ranges", [True, False])
def test_more_rows_than_the_first_block_promised_grow_the_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  ranges: bool) -> None:
    """Long rows first, short rows after: more rows than guessed from the first block."""
    data = frame()
    data.loc[:200, "colour"] = "a very long name of a colour, " * 8
    path = tmp_path / "t.csv"
    data.to_csv(path, index=False)
    monkeypatch.setattr(read, "CSV_BLOCK_BYTES", 16384)
    if not ranges:
        one_thread(monkeypatch)
    grown = []
    original = blocks.grow
    monkeypatch.setattr(blocks, "grow", lambda found, capacity: grown.append(found.rows) or original(found, capacity))
    got = load(path)
    assert len(grown) > 1 and grown[0] == 0  # the first guess, then grown
    with monkeypatch.context() as m:
        whole_file(m)
        assert_same_splits(got, load(path))


def test_a_type_that_changes_after_the_first_block_is_read_whole(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A column empty (or whole numbers) in the first block and not later: Arrow's block reader
    cannot widen the type it took from the first block; the whole-file reader can."""
    data = frame()
    data["late"] = [None] * (ROWS - 10) + [1.5] * 10
    data["widening"] = [1] * (ROWS - 10) + [2.5] * 10
    path = tmp_path / "t.csv"
    data.to_csv(path, index=False)
    monkeypatch.setattr(read, "CSV_BLOCK_BYTES", 4096)
    assert read.read_blocks(pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=4096)), 1, 4096) is None
    got = load(path)
    assert got.encoder.feature_names[-2:] == ["late", "widening"]
    with monkeypatch.context() as m:
        whole_file(m)
        assert_same_splits(got, load(path))


def test_a_type_that_changes_after_the_first_range_is_read_whole(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = frame()
    data["late"] = [None] * (ROWS - 10) + [1.5] * 10
    path = tmp_path / "t.csv"
    data.to_csv(path, index=False)
    parse, convert = pacsv.ParseOptions(), {"null_values": read.NULL_VALUES, "strings_can_be_null": True}
    schema, found = blocks.read_ranges(path, 4096, parse, convert)
    assert found is None and str(schema.field("late").type) == "null"


@pytest.mark.parametrize("index", [False, True])
def test_a_parquet_file_read_by_column_is_bitwise_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 index: bool) -> None:
    path = tmp_path / "t.parquet"
    data = frame()
    (data.set_index("count") if index else data).to_parquet(path, index=index)
    got = load(path)
    with monkeypatch.context() as m:
        whole_file(m)
        assert_same_splits(got, load(path))
