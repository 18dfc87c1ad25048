"""Which column is the target and which columns are the model's inputs.

Without a list of features, every column but the target is an input, except those that cannot
help and would only widen the model, each left out with a note: an ID (a different text in every
row, or a different whole number in every row of a column named like an ID), a text column with
too many different values to be categories, and a column without any value. Naming a column in
`features` uses it anyway; `drop` leaves columns out.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from zerograd.data.tables.cells import column_texts, missing_mask
from zerograd.data.tables.read import RawTable
from zerograd.errors import ConfigError, DataError, did_you_mean

MAX_CATEGORIES = 50  # more distinct texts than this is an ID or free text, not a category
MIN_ID_ROWS = 10  # in fewer rows, a different value in every row says little
ID_NAME = re.compile(r"(?i:^(id|idx|index|key|row|rownum|row[ _]?(id|no|num|number)|unnamed: ?\d+|column\d+|#)$)"
                     r"|(?i:(^|[_\s.\-])id$)|[a-z0-9](Id|ID)$")  # id, Row ID, customer_id, PassengerId


def target_column(table: RawTable, target: str | int | None) -> str:
    """The target's name: the column named (or numbered) `target`, or the last column."""
    if target is None:
        return table.names[-1]
    if isinstance(target, int) and not isinstance(target, bool) and str(target) not in table.columns:
        if not -len(table.names) <= target < len(table.names):
            raise ConfigError(f"target column {target} is out of range: {table.source} has {len(table.names)} columns")
        return table.names[target]
    if str(target) not in table.columns:
        raise ConfigError(f'{table.source} has no column "{target}"{did_you_mean(str(target), table.names)}; '
                          f'its columns: {", ".join(table.names)}')
    return str(target)


def column_list(value: str | Sequence[str] | None, key: str) -> list[str] | None:
    """A list of column names from a list or a comma-separated string ("a,b")."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",") if name.strip()]
    elif isinstance(value, (list, tuple)):
        names = [str(name) for name in value]
    else:
        raise ConfigError(f"{key} is a list of column names, got {value!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # a column twice would be two identical inputs (or a typo for another column)
        raise ConfigError(f"{key} names {', '.join(repr(n) for n in repeated)} more than once; list each column once")
    return names


def choose_features(table: RawTable, target: str, features: str | Sequence[str] | None = None,
                    drop: str | Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(feature names, notes on the columns left out)."""
    chosen, dropped = column_list(features, "features"), column_list(drop, "drop") or []
    for name in [*(chosen or []), *dropped]:
        if name not in table.columns:
            raise ConfigError(f'{table.source} has no column "{name}"{did_you_mean(name, table.names)}; '
                              f'its columns: {", ".join(table.names)}')
    if target in dropped:
        raise ConfigError(f'the target column "{target}" cannot be dropped; give another target to leave it out')
    if chosen is not None and target in chosen:
        raise ConfigError(f'the target column "{target}" cannot also be a feature')
    notes: list[str] = []
    if chosen is None:
        chosen = []
        for name in table.names:
            if name == target or name in dropped:
                continue
            reason = leave_out_reason(name, table.columns[name])
            if reason:
                notes.append(f"column {name!r}: {reason}; left out (name it in features to use it)")
            else:
                chosen.append(name)
    names = [name for name in chosen if name not in dropped]
    if not names:
        left = f" (left out: {', '.join(n for n in table.names if n != target)})" if len(table.names) > 1 else ""
        raise DataError(f"{table.source} has no feature columns besides the target {target!r}{left}")
    return names, notes


def leave_out_reason(name: str, values: np.ndarray) -> str | None:
    """Why a column would not help as an input (None when it would)."""
    n = len(values)
    if values.dtype.kind in "biuf":
        finite = np.isfinite(values)
        if not finite.any():
            return "no value in any row"
        if n >= MIN_ID_ROWS and ID_NAME.search(name) and finite.all() and np.all(values == np.round(values)) \
                and len(np.unique(values)) == n:
            return "a different whole number in every row of a column named like an ID"
        return None
    texts = column_texts(values)
    present = texts[~missing_mask(texts)]
    if len(present) == 0:
        return "no value in any row"
    distinct = int(present.nunique())
    if n >= MIN_ID_ROWS and distinct == n:
        return f"a different text in every row (e.g. {present.iloc[0]!r}: an ID or a name?)"
    if distinct > MAX_CATEGORIES:
        return f"{distinct} different texts in {n} rows, too many for categories (at most {MAX_CATEGORIES})"
    return None


def missing_notes(table: RawTable, features: Sequence[str]) -> list[str]:
    notes = []
    for name in features:
        values = table.columns[name]
        if values.dtype.kind in "biuf":
            gaps = int((~np.isfinite(values)).sum())
            if gaps:
                notes.append(f"column {name!r}: {gaps} missing values filled with the training mean")
    return notes
