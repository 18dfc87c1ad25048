"""Reading a table into columns: CSV/TSV files, Parquet and Feather files, pandas DataFrames.

CSV files are parsed by pyarrow's reader (the engine behind pandas' `read_csv(engine="pyarrow")`),
after zerograd has sniffed the delimiter and the encoding from the file's first 64 KB: UTF-8 with
or without a BOM, UTF-16 with its BOM, or the encoding you name. Dates, times and true/false stay
text (zerograd decides what is a category, not the reader). Parquet and Feather files are read by
pyarrow with their own column types. Memory: a CSV is read block by block, its numbers written
straight into their float64 columns, and a Parquet file a column at a time, so loading peaks at
about twice the float64 table, not three to four times (Arrow's whole-file readers). Time: a UTF-8
CSV without quotes is cut into ranges at line ends that are parsed on several threads (blocks.py),
and a Parquet file's columns are read on several threads.
"""
from __future__ import annotations

import codecs
import csv
import io
import math
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zerograd.data.tables.blocks import CsvBlocks, read_blocks, read_ranges, worker_count
from zerograd.data.tables.cells import (
    MISSING,
    CellReport,
    arrow_column,
    column_texts,
    finite_numbers,
    frame_column,
    missing_mask,
)
from zerograd.errors import ConfigError, DataError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
FEATHER_SUFFIXES = (".feather",)
TABLE_FILE_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES + FEATHER_SUFFIXES
DELIMITERS = (",", "\t", ";", "|")
SAMPLE_BYTES = 1 << 16  # the delimiter and encoding are sniffed from this much of the file
SNIFF_ROWS = 200
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
CSV_BLOCK_BYTES = 2 << 20  # a CSV's types are taken from its first block this big (see blocks.py)


@dataclass
class RawTable:
    """Columns by name, each a float64 array (numbers; missing as NaN) or an object array of str
    (text; missing as None or a missing-value word such as "NA")."""

    names: list[str]
    columns: dict[str, np.ndarray]
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def take(self, index: np.ndarray) -> RawTable:
        return RawTable(self.names, {k: v[index] for k, v in self.columns.items()}, self.source, self.notes)


def existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    return path


def read_table_file(path: str | Path, *, encoding: str = "auto") -> RawTable:
    """A table file by its suffix: CSV/TSV/TXT, Parquet (.parquet, .pq) or Feather (.feather)."""
    suffix = Path(path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return read_parquet(path)
    if suffix in FEATHER_SUFFIXES:
        return read_feather(path)
    return read_csv(path, encoding=encoding)


# -- CSV ------------------------------------------------------------------------------------------

def read_csv(path: str | Path, *, encoding: str = "auto") -> RawTable:
    """A CSV (or TSV) file with a header row; the delimiter is sniffed (`,` `;` tab `|`).

    `encoding`: "auto" reads UTF-8 (with or without a BOM) and UTF-16 with its BOM, and refuses
    other bytes naming the line; name any other encoding Python knows (e.g. "latin-1", "cp1252").
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = existing(path)
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    codec = choose_encoding(head, encoding)
    complete = len(head) < SAMPLE_BYTES
    try:
        sample = codecs.getincrementaldecoder(codec)().decode(head, final=complete)
    except UnicodeDecodeError:
        raise not_text_error(path, codec) from None
    if not sample.strip():
        raise _no_rows(path)
    delimiter = sniff_delimiter(sample, complete, path.suffix.lower())
    # No invalid_row_handler: a Python callable held by Arrow's reader can outlive Arrow at exit
    # and abort the interpreter ("terminate called without an active exception").
    convert = {"null_values": NULL_VALUES, "strings_can_be_null": True, "true_values": [], "false_values": [],
               "timestamp_parsers": []}
    options = {"parse_options": pacsv.ParseOptions(delimiter=delimiter, newlines_in_values='"' in sample),
               "convert_options": pacsv.ConvertOptions(**convert)}
    encoding = "utf8" if codec in ("utf-8", "utf-8-sig") else codec
    try:
        # UTF-8 without quotes (a quoted value may hold a newline) is cut at line ends and parsed on
        # several threads; other files by Arrow's streaming reader, on one thread.
        ranged = read_ranges(path, CSV_BLOCK_BYTES, options["parse_options"], convert) \
            if encoding == "utf8" and _cuttable(sample) else None
        if ranged is not None:
            schema, blocks = ranged
        else:
            reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(encoding=encoding,
                                                                         block_size=CSV_BLOCK_BYTES), **options)
            schema, blocks = reader.schema, read_blocks(reader, path.stat().st_size, CSV_BLOCK_BYTES)
        table = None if blocks is not None else pacsv.read_csv(path, read_options=pacsv.ReadOptions(encoding=encoding),
                                                               **options)
    except pa.ArrowInvalid as error:
        if "Empty CSV" in str(error):
            raise _no_rows(path) from None
        if "columns, got" in str(error):
            raise _ragged_error(path, codec, delimiter) from None
        raise DataError(f"{path} is not a CSV file zerograd can read ({str(error).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise not_text_error(path, codec) from None
    schema = schema if blocks is not None else table.schema  # type: ignore[union-attr]
    if (blocks.rows if blocks is not None else table.num_rows) == 0:  # type: ignore[union-attr]
        raise _no_rows(path)
    names = header_names(list(schema.names), path)
    if all(_is_number(name) for name in names):
        raise DataError(f"{path} has no header row (its first row is all numbers); add a first line naming the columns")
    if any(pa.types.is_binary(kind) for kind in schema.types):  # bytes that are not UTF-8 text
        raise not_text_error(path, codec)
    if blocks is not None:
        return _from_blocks(blocks, names, str(path), comma_is_decimal=delimiter != ",")
    arrays = table.columns  # type: ignore[union-attr]
    del table  # each Arrow column is let go once converted (see _from_arrow): the table is never held twice
    return _from_arrow(arrays, names, str(path), comma_is_decimal=delimiter != ",")


def _cuttable(sample: str) -> bool:
    """Whether the file sampled may be cut after any newline: no quotes (the ranges check the rest
    of the file), and no line ended by a carriage return alone (a Mac file of old has no newline)."""
    return '"' not in sample and sample.count("\r") == sample.count("\r\n")


def _from_blocks(blocks: CsvBlocks, names: list[str], source: str, *, comma_is_decimal: bool) -> RawTable:
    """The columns of `read_blocks`, as `_from_arrow` makes them of the whole file's table."""
    import pyarrow as pa

    report = CellReport()
    columns = {}
    for i, name in enumerate(names):
        column, blocks.columns[i] = blocks.columns[i], None
        if isinstance(column, np.ndarray):
            values = column[:blocks.rows]
            columns[name] = finite_numbers(name, values.copy() if blocks.capacity > blocks.rows * 17 // 16 else values,
                                           report)
        else:
            columns[name] = arrow_column(name, pa.chunked_array(column, type=blocks.kinds[i]), report,
                                         comma_is_decimal=comma_is_decimal)
    report.warn(source, stacklevel=4)
    return _without_empty_rows(RawTable(names, columns, source))


# Besides zerograd's missing-value words in any case, the markers pandas and spreadsheets write.
NULL_VALUES = sorted({spelling for word in MISSING for spelling in (word, word.upper(), word.title())}
                     | {"#N/A", "#NA", "<NA>", "-NaN", "-nan", "1.#QNAN", "-1.#QNAN", "1.#IND", "-1.#IND"})


def _no_rows(path: Path) -> DataError:
    return DataError(f"{path} has no data rows; a CSV needs a header row and at least one row of values")


def _ragged_error(path: Path, codec: str, delimiter: str) -> DataError:
    """The first row whose number of values differs from the header's, by its line (counting
    the non-empty rows, the header being line 1): found by reading the file once more with
    Python's csv module, on this error only (Arrow's parallel reader knows no line numbers)."""
    with path.open(encoding=codec, newline="") as handle:
        rows = (row for row in csv.reader(handle, delimiter=delimiter) if any(cell.strip() for cell in row))
        width = len(next(rows, []))
        for line, row in enumerate(rows, start=2):
            if len(row) != width:
                return DataError(f"{path}, line {line}: {len(row)} values but the header names {width} columns")
    return DataError(f"{path}: a row has another number of values than the header names columns")


def choose_encoding(head: bytes, encoding: str) -> str:
    """The Python codec name to read a file with: from its BOM when `encoding` is "auto"."""
    if encoding == "auto":
        if head.startswith(UTF16_BOMS):
            return "utf-16"
        return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ConfigError(f"unknown encoding {encoding!r}; give one Python knows, e.g. utf-8, latin-1, cp1252, "
                          "utf-16") from None


def not_text_error(path: Path, codec: str) -> DataError:
    """Bytes that are not text in `codec`, by line (the whole file is read, on this error only)."""
    data = path.read_bytes()
    try:
        data.decode(codec)
    except UnicodeDecodeError as error:
        line = data[:error.start].decode(codec, errors="replace").count("\n") + 1
        name = codec.removesuffix("-sig").upper()
        advice = ("save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv) or name its encoding "
                  "(--encoding latin-1; in a config data.encoding: latin-1)" if name == "UTF-8"
                  else "name the encoding it was saved in (--encoding NAME; in a config data.encoding: NAME)")
        return DataError(f"{path}, line {line}: byte 0x{data[error.start]:02x} is not {name} text; {advice}")
    return DataError(f"{path} holds bytes that are not {codec.upper()} text; save the file as UTF-8")


def sniff_delimiter(sample: str, complete: bool, suffix: str) -> str:
    """The delimiter that splits the header and the rows after it into the same number of fields
    (and more than one). Unlike csv.Sniffer, a `;` file of decimal commas (`5,1;3,5`) is `;`: its
    header has no commas."""
    if not complete:  # the last line may be cut in the middle
        sample = sample[:sample.rfind("\n") + 1] or sample
    best, best_score = ("\t" if suffix == ".tsv" else ","), (0.0, 1)
    for delimiter in DELIMITERS:
        widths = []
        for row in csv.reader(io.StringIO(sample), delimiter=delimiter):
            if any(cell.strip() for cell in row):
                widths.append(len(row))
            if len(widths) >= SNIFF_ROWS:
                break
        if not widths or widths[0] < 2:
            continue
        score = (sum(width == widths[0] for width in widths) / len(widths), widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def header_names(names: Sequence[str], source: str | Path) -> list[str]:
    """Column names stripped, blanks named `column<i>`; two columns of one name are refused (one
    would silently shadow the other)."""
    header = [str(name).strip() or f"column{i}" for i, name in enumerate(names)]
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        where = "; ".join(f"{name!r} in columns {', '.join(str(i + 1) for i, n in enumerate(header) if n == name)}"
                          for name in repeated)
        raise DataError(f"{source}: the header names the same column more than once ({where}); give every column "
                        "its own name")
    return header


def _is_number(text: str) -> bool:
    """A finite number (a header cell like "inf" or "nan" is a name, not a value)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# -- Parquet, Feather, Arrow ----------------------------------------------------------------------

def read_parquet(path: str | Path, *, by_column: bool = True) -> RawTable:
    """A Parquet file (as pandas' `to_parquet` writes it; its index columns are left out), read a
    column at a time (`by_column`): reading the whole table at once peaks at twice its size and more."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def columns_read(file: Path) -> Any:
        parquet = pq.ParquetFile(file)
        schema = parquet.schema_arrow
        if len(set(schema.names)) < len(schema.names) or len(schema.names) != len(parquet.schema.names):
            return pq.read_table(file)  # repeated or nested columns: no column-by-column read
        opened = threading.local()

        def column(name: str) -> Any:  # a ParquetFile per thread: one is not to be shared
            if not hasattr(opened, "file"):
                opened.file = pq.ParquetFile(file)
            return opened.file.read(columns=[name], use_threads=False).column(0)

        # Columns on several threads (Arrow lets go of the GIL as it decodes), at most one per thread at a time
        with ThreadPoolExecutor(worker_count(len(schema.names)), thread_name_prefix="zerograd-parquet") as pool:
            columns = list(pool.map(column, schema.names))
        return pa.Table.from_arrays(columns, names=schema.names).replace_schema_metadata(schema.metadata)

    return _read_arrow_file(path, "Parquet", columns_read if by_column else pq.read_table)


def read_feather(path: str | Path) -> RawTable:
    """A Feather (Arrow IPC) file, as pandas' `to_feather` writes it."""
    import pyarrow.feather as feather

    return _read_arrow_file(path, "Feather", feather.read_table)


def _read_arrow_file(path: str | Path, kind: str, reader: Any) -> RawTable:
    import pyarrow as pa

    path = existing(path)
    try:
        table = reader(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path} is not a {kind} file zerograd can read ({detail}); write it with pandas' "
                        f"to_{kind.lower()} or pyarrow") from None
    # pandas stores a named or non-default index as a column; a RangeIndex only as metadata (a dict)
    index = {name for name in (table.schema.pandas_metadata or {}).get("index_columns", []) if isinstance(name, str)}
    keep = [i for i, name in enumerate(table.column_names) if name not in index]
    table = table.select(keep)
    if table.num_rows == 0 or table.num_columns == 0:
        raise DataError(f"{path} has no data rows; a table needs named columns and at least one row")
    names, arrays = header_names(table.column_names, path), table.columns
    del table
    return _from_arrow(arrays, names, str(path), comma_is_decimal=False)


def _from_arrow(arrays: list[Any], names: list[str], source: str, *, comma_is_decimal: bool) -> RawTable:
    """Columns from Arrow arrays; each array is dropped from `arrays` once converted, so the
    Arrow memory is given back column by column (the caller holds no table)."""
    import pyarrow as pa

    report = CellReport()
    columns = {}
    for i, name in enumerate(names):
        columns[name] = arrow_column(name, arrays[i], report, comma_is_decimal=comma_is_decimal)
        arrays[i] = None
        if i % 8 == 7:  # the freed columns' memory goes back to the OS now, not when the pool decides
            pa.default_memory_pool().release_unused()
    report.warn(source, stacklevel=4)
    return _without_empty_rows(RawTable(names, columns, source))


# -- pandas ---------------------------------------------------------------------------------------

def from_frame(frame: Any, source: str = "the DataFrame") -> RawTable:
    """A pandas DataFrame's columns (its index is not a column: `reset_index()` makes it one)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{source} is a {type(frame).__name__}, not a pandas DataFrame")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"{source} has no data rows; a table needs named columns and at least one row")
    names = header_names([str(name) for name in frame.columns], source)
    report = CellReport()
    columns = {name: frame_column(frame.iloc[:, i], name, report) for i, name in enumerate(names)}
    report.warn(source, stacklevel=4)
    return _without_empty_rows(RawTable(names, columns, source))


def from_inputs_and_targets(inputs: Any, targets: Any, source: str = "the (X, y) data") -> tuple[RawTable, str]:
    """(table, target name) from X (a DataFrame or a 2-D array) and y (a Series, array or list):
    the target is y's name, or "target"."""
    import pandas as pd

    frame = inputs if isinstance(inputs, pd.DataFrame) else None
    if frame is None:
        array = np.asarray(inputs)
        if array.ndim != 2:
            raise DataError(f"{source}: X must be a DataFrame or a 2-D array of rows, got shape {list(array.shape)}")
        frame = pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])
    series = targets if isinstance(targets, pd.Series) else pd.Series(np.asarray(targets))
    if series.ndim != 1 or len(series) != len(frame):
        raise DataError(f"{source}: X has {len(frame)} rows but y has {len(series)} values; give one target per row")
    name = str(series.name) if series.name is not None else "target"
    if name in [str(c) for c in frame.columns]:
        raise DataError(f"{source}: y is named {name!r} like a column of X; rename one of them")
    joined = frame.reset_index(drop=True).assign(**{name: series.reset_index(drop=True).to_numpy()})
    return from_frame(joined, source), name


def _without_empty_rows(table: RawTable) -> RawTable:
    """Rows with no value in any column (a spreadsheet's trailing `,,,` lines) are left out, said in
    a note; the row numbers of a split count the rows that are left."""
    empty = None
    for values in table.columns.values():
        missing = np.isnan(values) if values.dtype.kind == "f" else missing_mask(column_texts(values))
        empty = missing if empty is None else empty & missing
        if not empty.any():
            return table
    assert empty is not None
    kept = RawTable(table.names, {k: v[~empty] for k, v in table.columns.items()}, table.source, list(table.notes))
    if len(kept) == 0:
        raise DataError(f"{table.source} has no data rows; every row is empty")
    kept.notes.append(f"data: {int(empty.sum())} empty row{'s' * (int(empty.sum()) > 1)} left out")
    return kept

