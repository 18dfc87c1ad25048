"""A CSV cut into byte ranges parsed on threads reads bitwise as Arrow's streaming reader and its
whole-file reader read it (the columns, their types, the notes and warnings, the errors), on
awkward files: quotes, empty lines, CRLF, no final newline, missing values, types widened after
the first block, categories, one row, files smaller than a block, a BOM, ragged rows, bad bytes."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zerograd.data.tables import blocks, read
from zerograd.data.tabular import load_table_data
from zerograd.errors import DataError

HEADER = "a,b,c,label\n"


def rows(count: int, start: int = 0, *, text: bool = False) -> str:
    """`count` lines of numbers (some missing, some whole), a category or not, and a class."""
    lines = []
    for i in range(start, start + count):
        a = "" if i % 17 == 3 else f"{(i * 7919 % 1000) / 37:.6g}"
        b = "NA" if i % 23 == 5 else str(i % 50)
        c = ("red", "green", "blue", "")[i % 4] if text else f"{i * 0.001:.4f}"
        lines.append(f"{a},{b},{c},{i % 3}\n")
    return "".join(lines)


def read_with(path: Path, how: str) -> tuple[Any, list[str]]:
    """(the RawTable or the DataError's message, the warnings) of one way to read `path`."""
    with pytest.MonkeyPatch.context() as m, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if how != "ranges":
            m.setattr(read, "read_ranges", lambda *args: None)
        if how == "whole":
            m.setattr(read, "read_blocks", lambda *args: None)
        try:
            found: Any = read.read_csv(path)
        except DataError as error:
            found = f"DataError: {error}"
    return found, [str(w.message) for w in caught]


def assert_same(got: Any, want: Any) -> None:
    assert type(got) is type(want), (got, want)
    if isinstance(want, str):
        assert got == want
        return
    assert got.names == want.names and got.notes == want.notes and got.source == want.source
    for name in want.names:
        a, b = got.columns[name], want.columns[name]
        assert a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            assert a.tobytes() == b.tobytes(), name  # bitwise, NaN included
        else:
            assert a.tolist() == b.tolist(), name


def check(path: Path, monkeypatch: pytest.MonkeyPatch, *, block: int = 256, piece: int = 97,
          cut: bool = True) -> Any:
    """Read `path` in ranges (first block `block` bytes, then about `piece`), as before (Arrow's
    streaming reader in blocks of `block`) and whole: the same. `cut`: whether ranges were used."""
    monkeypatch.setattr(read, "CSV_BLOCK_BYTES", block)
    monkeypatch.setattr(blocks, "RANGE_BYTES", piece)
    gave_up = []
    original = blocks.read_ranges

    def ranges(*args: Any) -> Any:
        found = original(*args)  # an error raised here is an error of the ranges too
        gave_up.append(found is None)
        return found

    monkeypatch.setattr(read, "read_ranges", ranges)
    ranged = read_with(path, "ranges")
    assert gave_up == [] or gave_up == [not cut]
    assert_same(ranged[0], read_with(path, "blocks")[0])
    assert ranged[1] == read_with(path, "blocks")[1]
    whole = read_with(path, "whole")
    assert_same(ranged[0], whole[0])
    assert ranged[1] == whole[1]
    return ranged[0]


def write(tmp_path: Path, text: str | bytes, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("piece", [1, 97, 4096, 1 << 20])
def test_numbers_with_gaps_in_many_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    table = check(write(tmp_path, HEADER + rows(2000)), monkeypatch, piece=piece)
    assert len(table) == 2000 and np.isnan(table.columns["a"]).sum() == len(range(3, 2000, 17))


def test_a_category_column_and_missing_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = check(write(tmp_path, HEADER + rows(1500, text=True)), monkeypatch)
    assert table.columns["c"].dtype == object


@pytest.mark.parametrize("ending", ["\r\n", "\n"])
def test_empty_lines_crlf_and_no_final_newline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str) -> None:
    text = HEADER + rows(300) + "\n\n\n" + rows(5, 300) + "\n" * 200 + rows(400, 305) + ",,,\n" + rows(1, 705)
    table = check(write(tmp_path, text.replace("\n", ending).rstrip(ending)), monkeypatch)
    assert len(table) == 706 and table.notes == ["data: 1 empty row left out"]


def test_a_range_of_nothing_but_empty_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check(write(tmp_path, HEADER + rows(50) + "\n" * 5000 + rows(50, 50)), monkeypatch, piece=1000)


@pytest.mark.parametrize("late", ["2.5", "word", "1e400", "inf"])
def test_a_type_widened_after_the_first_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, late: str) -> None:
    """Whole numbers (b) and an empty column first, then a float or a word: read whole, as before."""
    text = "a,b,e,label\n" + "".join(f"{i / 7:.5f},{i},,{i % 2}\n" for i in range(400))
    text += "".join(f"{i / 7:.5f},{late},{late},{i % 2}\n" for i in range(400, 420))
    check(write(tmp_path, text), monkeypatch)


@pytest.mark.parametrize("size", [1, 3, 40])
def test_tiny_files_smaller_than_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    check(write(tmp_path, HEADER + rows(size)), monkeypatch, block=1 << 20)
    check(write(tmp_path, HEADER + rows(size).rstrip("\n"), "u.csv"), monkeypatch, block=1 << 20)


def test_a_bom_a_semicolon_and_decimal_commas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "x;y;label\n" + "".join(f"{i},{i % 10};{i * 3};{i % 2}\n" for i in range(600))
    table = check(write(tmp_path, b"\xef\xbb\xbf" + text.encode()), monkeypatch)
    assert table.names == ["x", "y", "label"] and table.columns["x"].dtype == np.float64


def test_infinities_are_warned_of_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = HEADER + rows(300) + "inf,1,2,0\n-inf,1,2,1\n" + rows(300, 300)
    check(write(tmp_path, text), monkeypatch)


def test_quotes_in_the_first_block_are_read_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = 'a,note,label\n1,"two\nlines",0\n' + "".join(f'{i},"x, {i}",{i % 2}\n' for i in range(500))
    check(write(tmp_path, text), monkeypatch, cut=False)


@pytest.mark.parametrize("note", ['"a quoted\nnewline"', '"1,5"', 'say "hi"'])
def test_quotes_after_the_sample_are_read_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    note: str) -> None:
    """A quote first seen beyond the 64 KB the options come from: the ranges give up, and the
    streaming reader reads the file as it did (a quoted newline is no newline only where the
    sample showed quotes: so before too)."""
    text = "a,note,label\n" + "".join(f"{i},plain{i},{i % 2}\n" for i in range(8000))
    assert len(text) > read.SAMPLE_BYTES
    text += f"5,{note},1\n" + "".join(f"{i},plain,{i % 2}\n" for i in range(300))
    check(write(tmp_path, text), monkeypatch, block=4096, piece=4096, cut=False)


def test_a_ragged_row_in_a_later_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = HEADER + rows(500) + "1,2\n" + rows(100, 500)
    message = check(write(tmp_path, text), monkeypatch)
    assert message == f"DataError: {tmp_path / 't.csv'}, line 502: 2 values but the header names 4 columns"


def test_bytes_that_are_not_utf8_in_a_later_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (HEADER + rows(500, text=True)).encode() + b"1,2,caf\xe9,0\n" + rows(100, 500, text=True).encode()
    message = check(write(tmp_path, text), monkeypatch)
    assert "line 502: byte 0xe9 is not UTF-8 text" in message


def test_a_header_alone_has_no_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "has no data rows" in check(write(tmp_path, HEADER), monkeypatch)
    assert "has no data rows" in check(write(tmp_path, "a,b,c\n\n\n", "u.csv"), monkeypatch)


def test_a_line_longer_than_the_first_block_is_read_as_before(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a" * 300 + ",label\n" + "".join(f"{i},{i % 2}\n" for i in range(300))
    check(write(tmp_path, text), monkeypatch, block=256, cut=False)  # no line end in the first block
    text = "a,label\n" + "1" * 300 + ",0\n" + "".join(f"{i},{i % 2}\n" for i in range(300))
    check(write(tmp_path, text, "u.csv"), monkeypatch, block=256)  # no row in it: types by the whole file


def test_load_table_data_splits_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, HEADER + rows(3000, text=True))
    monkeypatch.setattr(read, "CSV_BLOCK_BYTES", 4096)
    monkeypatch.setattr(blocks, "RANGE_BYTES", 5000)
    got = load_table_data(path, target="label", val_split=0.1)
    monkeypatch.setattr(read, "read_ranges", lambda *args: None)
    want = load_table_data(path, target="label", val_split=0.1)
    for part in ("train", "val", "test"):
        for x, y in zip(getattr(got, part).tensors, getattr(want, part).tensors):
            assert x.dtype == y.dtype and x.numpy().tobytes() == y.numpy().tobytes()
    assert got.preprocessing() == want.preprocessing() and got.notes == want.notes
