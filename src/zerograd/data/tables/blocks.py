"""A CSV file's number columns written straight into float64 arrays, block by block.

Two readers fill the same `CsvBlocks`: `read_ranges` cuts a UTF-8 file into byte ranges at line
ends and parses them on several threads (Arrow releases the GIL while it parses), and
`read_blocks` takes the blocks of Arrow's streaming reader, which parses on one thread. Both take
the column types from the file's first block, as Arrow's streaming reader does, and both give up
(None) when a later block holds a value those types cannot hold: the whole-file reader widens the
type then. Neither ever holds an Arrow table of the whole file beside the float64 columns (reading
the file whole peaks at about three times the table).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zerograd.cores import usable_cores
from zerograd.data.tables.cells import is_number_type

RANGE_BYTES = 4 << 20  # the byte ranges after the first block: big enough that each costs little Python
RELEASE_EVERY = 8  # blocks between handing Arrow's freed memory back (not when its allocator decides)


def worker_count(tasks: int | None = None) -> int:
    """Threads for work that lets go of the GIL: the cores this process may use (its share under
    `zerograd train --nproc N`), at most 4 (and at most `tasks`, at least 1)."""
    count = max(1, min(4, usable_cores()))
    return max(1, min(count, tasks)) if tasks is not None else count


@dataclass
class CsvBlocks:
    """A CSV file's columns as read block by block: number columns already in float64 arrays
    (`capacity` long, the first `rows` filled), the others as lists of Arrow arrays."""

    kinds: list[Any]
    columns: list[Any]
    rows: int = 0
    capacity: int = 0

    @classmethod
    def of(cls, kinds: list[Any]) -> CsvBlocks:
        return cls(kinds, [np.empty(0) if is_number_type(kind) else [] for kind in kinds])

    def append(self, count: int, columns: list[Any], guess: int) -> None:
        """`count` rows more: float64 arrays for the number columns, Arrow arrays (or lists of
        them) for the others. `guess`: the capacity to take when this is the first block."""
        if self.rows + count > self.capacity:  # first a guess from the file's size, then 25% more at a time
            grow(self, max(self.rows + count, guess if self.rows == 0 else self.capacity * 5 // 4))
        for i, values in enumerate(columns):
            if isinstance(self.columns[i], np.ndarray):
                self.columns[i][self.rows:self.rows + count] = values
            elif isinstance(values, list):
                self.columns[i].extend(values)
            else:
                self.columns[i].append(values)
        self.rows += count


def grow(blocks: CsvBlocks, capacity: int) -> None:
    for i, column in enumerate(blocks.columns):
        if isinstance(column, np.ndarray):
            grown = np.empty(capacity)
            grown[:blocks.rows] = column[:blocks.rows]
            blocks.columns[i] = grown
    blocks.capacity = capacity


def read_blocks(reader: Any, size: int, block_bytes: int) -> CsvBlocks | None:
    """Every block of an open Arrow CSV reader (blocks of `block_bytes` of a file of `size`)."""
    import pyarrow as pa

    blocks = CsvBlocks.of(list(reader.schema.types))
    try:
        for number, batch in enumerate(reader):
            if number % RELEASE_EVERY == RELEASE_EVERY - 1:
                pa.default_memory_pool().release_unused()
            count = batch.num_rows
            blocks.append(count, [_numbers(column) if is_number_type(column.type) else column
                                  for column in batch.columns], count * size // block_bytes + count)
    except pa.ArrowInvalid as error:
        if "conversion error" in str(error):
            return None
        raise
    pa.default_memory_pool().release_unused()
    return blocks


def _numbers(column: Any) -> np.ndarray:
    import pyarrow as pa

    return column.cast(pa.float64()).to_numpy(zero_copy_only=False)


class _Uncuttable(Exception):
    """A range holds a quote: a quoted value may hold a line end, so a cut there is no row's end."""


def read_ranges(path: Path, block_bytes: int, parse_options: Any, convert: dict[str, Any],
                threads: int | None = None) -> tuple[Any, CsvBlocks | None] | None:
    """(schema, blocks) of a UTF-8 CSV file parsed in byte ranges cut after a newline, on
    `threads` threads (default: the CPUs, at most 4); blocks None when a later range holds a value
    the first block's types cannot hold. `convert`: the keywords of Arrow's ConvertOptions.
    None when the file cannot be cut so: a quote anywhere (a quoted value may hold a newline), no
    newline in the first block, or a column name twice (the types are given by name); Arrow's
    streaming reader reads it then.

    The first range is the first `block_bytes` of the file up to its last newline, which is the
    first block of Arrow's streaming reader (of that block size), so the types are the same; the
    values are those of parsing the file in any blocks (a cell's value depends on its text only).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    threads = threads or worker_count()
    size = path.stat().st_size
    with path.open("rb") as handle:
        data = handle.read(block_bytes)
        first, rest = _cut(data, at_end=len(data) < block_bytes)
        if not first or b'"' in first:
            return None
        table = pacsv.read_csv(pa.py_buffer(first), parse_options=parse_options,
                               convert_options=pacsv.ConvertOptions(**convert),
                               read_options=pacsv.ReadOptions(use_threads=False, block_size=len(first) + 1))
        schema, count = table.schema, table.num_rows
        if len(set(schema.names)) < len(schema.names):
            return None
        blocks = CsvBlocks.of(list(schema.types))
        guess = count * size // block_bytes + count
        blocks.append(count, _columns(table), guess)
        del table
        later = _Ranges(schema.names, parse_options,
                        pacsv.ConvertOptions(**convert, column_types=dict(zip(schema.names, schema.types))))
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="zerograd-csv") as pool:
                pending: deque[Future] = deque()
                try:
                    for number, piece in enumerate(_pieces(handle, rest)):
                        pending.append(pool.submit(later.parse, piece))
                        if len(pending) > threads:
                            blocks.append(*pending.popleft().result(), guess)
                        if number % RELEASE_EVERY == RELEASE_EVERY - 1:
                            pa.default_memory_pool().release_unused()
                    while pending:
                        blocks.append(*pending.popleft().result(), guess)
                finally:
                    for future in pending:  # on an error: the ranges not started are not parsed
                        future.cancel()
        except _Uncuttable:
            return None
        except pa.ArrowInvalid as error:
            if "conversion error" in str(error):
                return schema, None
            raise
    pa.default_memory_pool().release_unused()
    return schema, blocks


def _cut(data: bytes, *, at_end: bool) -> tuple[bytes, bytes]:
    """(the whole lines of `data`, the rest): all of it at the end of the file."""
    if at_end:
        return data, b""
    end = data.rfind(b"\n") + 1
    return data[:end], data[end:]


def _pieces(handle: Any, rest: bytes) -> Any:
    """The file from where `rest` was read on, in ranges of whole lines of about RANGE_BYTES:
    views of a buffer read into after `rest`, so no range's bytes are copied again."""
    while True:
        buffer = bytearray(len(rest) + RANGE_BYTES)
        buffer[:len(rest)] = rest
        got = handle.readinto(memoryview(buffer)[len(rest):])
        filled = len(rest) + got
        at_end = got < RANGE_BYTES  # a file's reader fills the buffer unless the file ends
        end = filled if at_end else buffer.rfind(b"\n", 0, filled) + 1
        if buffer.find(b'"', 0, end) >= 0:
            raise _Uncuttable
        rest = bytes(buffer[end:filled])
        if end:  # no newline in the range: its line goes on in the next one
            yield memoryview(buffer)[:end]
        if at_end:
            return


@dataclass
class _Ranges:
    """How a range after the first is parsed: by the header's names, as the first block's types."""

    names: list[str]
    parse_options: Any
    convert_options: Any

    def parse(self, piece: memoryview) -> tuple[int, list[Any]]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(pa.py_buffer(piece), parse_options=self.parse_options,
                               convert_options=self.convert_options,
                               read_options=pacsv.ReadOptions(use_threads=False, block_size=len(piece) + 1,
                                                              column_names=self.names))
        return table.num_rows, _columns(table)


def _columns(table: Any) -> list[Any]:
    return [_numbers(column) if is_number_type(column.type) else list(column.chunks) for column in table.columns]
