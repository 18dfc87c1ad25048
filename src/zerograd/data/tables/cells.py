"""Cells to columns: an Arrow column of numbers or texts becomes a NumPy column zerograd can encode.

A column is numbers (float64, missing cells and infinities as NaN) when every present cell is a
number; numbers written with a decimal comma (`5,1` in a `;` file) or with thousands separators
(`"1,234"` in a `,` file) are read as numbers too, with a warning naming the columns. Any other
column is text: an object array of stripped strings, None where a cell is missing.
All of it is vectorised (Arrow compute kernels), so a million rows take no Python loop.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zerograd.errors import ZerogradWarning

# Cells that mean "no value" (compared without case and surrounding spaces).
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
# A number as Python's float() reads it (after stripping); used to count stray words in a column.
NUMBER_PATTERN = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"
# 5,1  -3,25  1.234,5  12 (whole numbers mix in): numbers of a locale with a decimal comma.
DECIMAL_COMMA_PATTERN = r"^[+-]?(\d+|\d{1,3}(\.\d{3})+)(,\d+)?$"
# 1,234  12,345.5  7: numbers with thousands separators.
THOUSANDS_COMMA_PATTERN = r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$"


@dataclass
class CellReport:
    """What reading the cells of one table found that the user should hear about."""

    infinite: dict[str, int] = field(default_factory=dict)
    decimal_comma: list[tuple[str, str]] = field(default_factory=list)  # (column, example cell)
    thousands: list[tuple[str, str]] = field(default_factory=list)

    def warn(self, source: str, stacklevel: int = 3) -> None:
        for name, count in self.infinite.items():  # inf is no value to standardise or learn from
            warnings.warn(f"{source}: column {name!r} holds {count} infinite value{'s' * (count > 1)} (inf/-inf); "
                          "they are read as missing values (filled with the training mean)", ZerogradWarning,
                          stacklevel=stacklevel)
        if self.decimal_comma:
            names, example = _listed(self.decimal_comma)
            value = example.replace(".", "").replace(",", ".")
            warnings.warn(f"{source}: {names} hold{'s' * (len(self.decimal_comma) == 1)} numbers written with a "
                          f"decimal comma (e.g. {example!r}); they are read as decimal numbers ({example!r} = {value})",
                          ZerogradWarning, stacklevel=stacklevel)
        if self.thousands:
            names, example = _listed(self.thousands)
            warnings.warn(f"{source}: {names} hold{'s' * (len(self.thousands) == 1)} numbers written with thousands "
                          f"separators (e.g. {example!r}); they are read as {example.replace(',', '')}",
                          ZerogradWarning, stacklevel=stacklevel)


def _listed(found: Sequence[tuple[str, str]]) -> tuple[str, str]:
    names = ", ".join(repr(name) for name, _ in found)
    return f"column{'s' * (len(found) > 1)} {names}", found[0][1]


def arrow_column(name: str, array: Any, report: CellReport, *, comma_is_decimal: bool) -> np.ndarray:
    """A NumPy column from an Arrow (chunked) array: float64 numbers or an object array of texts.
    `comma_is_decimal`: whether `1,234` means 1.234 (a `;`- or tab-separated file) or 1234."""
    import pyarrow as pa

    kind = array.type
    if is_number_type(kind):
        return finite_numbers(name, array.cast(pa.float64()).to_numpy(zero_copy_only=False), report)
    if pa.types.is_null(kind):  # no value in any row
        return np.full(len(array), np.nan)
    if pa.types.is_dictionary(kind):
        array = array.cast(kind.value_type)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = array.cast(pa.string())  # booleans, dates, times: their text
    return _text_or_numbers(name, array, report, comma_is_decimal)


def is_number_type(kind: Any) -> bool:
    """Whether an Arrow column of type `kind` becomes float64 numbers by a plain cast."""
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))


def finite_numbers(name: str, values: np.ndarray, report: CellReport) -> np.ndarray:
    """`values` with infinities as missing (NaN), counted in `report`."""
    infinite = np.isinf(values)
    if infinite.any():
        report.infinite[name] = int(infinite.sum())
        values = np.where(infinite, np.nan, values)
    return values


def _text_or_numbers(name: str, array: Any, report: CellReport, comma_is_decimal: bool) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = pc.utf8_trim_whitespace(array)
    missing = pc.or_(pc.is_null(texts), pc.is_in(pc.utf8_lower(texts), value_set=pa.array(sorted(MISSING))))
    texts = pc.if_else(missing, pa.scalar(None, texts.type), texts)
    present = pc.drop_null(texts)
    if len(present) == 0:
        return np.full(len(array), np.nan)
    try:
        numbers = texts.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    else:
        return finite_numbers(name, numbers.to_numpy(zero_copy_only=False), report)
    with_comma = pc.match_substring(present, ",")
    if not pc.any(with_comma).as_py():
        return texts.to_numpy(zero_copy_only=False)
    patterns = [(DECIMAL_COMMA_PATTERN, report.decimal_comma), (THOUSANDS_COMMA_PATTERN, report.thousands)]
    for pattern, found in patterns if comma_is_decimal else patterns[::-1]:
        if pc.all(pc.match_substring_regex(present, pattern)).as_py():
            example = pc.filter(present, with_comma)[0].as_py()
            found.append((name, example))
            plain = pc.replace_substring(texts, ",", "") if found is report.thousands else \
                pc.replace_substring(pc.replace_substring(texts, ".", ""), ",", ".")
            return finite_numbers(name, plain.cast(pa.float64()).to_numpy(zero_copy_only=False), report)
    return texts.to_numpy(zero_copy_only=False)


def column_texts(values: np.ndarray) -> Any:
    """A column's cells as a pandas string Series (stripped; missing cells NaN) for vectorised text
    work. Numbers become their usual text: whole numbers without `.0` (as they were written)."""
    import pandas as pd

    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        numbers = values.astype(np.float64)
        finite = np.isfinite(numbers)
        whole = finite & (numbers == np.round(numbers))
        texts = np.where(whole, np.where(whole, numbers, 0).astype(np.int64).astype(str), numbers.astype(str))
        return pd.Series(texts, dtype="str").where(finite)
    return pd.Series(values, dtype=object).astype("str").str.strip()


def missing_mask(texts: Any) -> np.ndarray:
    """True where a text cell (see `column_texts`) means no value."""
    return (texts.isna() | texts.str.lower().isin(MISSING)).to_numpy(dtype=bool)


def count_numbers(texts: Any) -> int:
    """How many of the present text cells are numbers."""
    return int(texts.str.fullmatch(NUMBER_PATTERN).fillna(False).sum())


def frame_column(series: Any, name: str, report: CellReport) -> np.ndarray:
    """One pandas column as `arrow_column` makes it: numbers stay numbers (nullable integers and
    floats included), everything else goes through the text rules (a `;`-file's decimal commas
    read into a DataFrame as text are numbers here too)."""
    import pandas as pd
    import pyarrow as pa

    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype) \
            and not pd.api.types.is_complex_dtype(series.dtype):
        return finite_numbers(name, series.to_numpy(dtype=np.float64, na_value=np.nan), report)
    return _text_or_numbers(name, pa.array(series.astype("str")), report, comma_is_decimal=False)
