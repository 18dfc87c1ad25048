"""The `(X, y)` pairs users hand to `fit`: NumPy arrays, tensors, pandas DataFrames and Series,
plain lists; text where numbers belong is refused with what to do about it."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zerograd.errors import DataError


def is_array_like(value: Any, lists: bool = True) -> bool:
    """Arrays, tensors, pandas' DataFrame / Series (`to_numpy`) and (with `lists`: in an `(X, y)`
    tuple) plain lists of rows / labels."""
    kinds = (torch.Tensor, np.ndarray, list) if lists else (torch.Tensor, np.ndarray)
    return isinstance(value, kinds) or callable(getattr(value, "to_numpy", None))


def as_array(value: Any, what: str) -> Any:
    """`value` as a tensor or NumPy array; text cells are refused with what to do about them."""
    if isinstance(value, torch.Tensor):
        return value
    if callable(getattr(value, "to_numpy", None)):  # pandas: numeric columns as one array; name the text ones
        dtypes = getattr(value, "dtypes", None)
        text = ([str(name) for name, dtype in dtypes.items() if dtype.kind not in "biufc"]
                if dtypes is not None and hasattr(dtypes, "items") else [])
        if text and what == "inputs":
            raise DataError(f"the inputs' column(s) {', '.join(repr(n) for n in text[:5])} hold text, not numbers: "
                            "encode them first (pandas.get_dummies(X)), or train on the table with "
                            "zerograd.train({'data': {'train': 'file.csv', 'target': COLUMN}}) or `zerograd train "
                            "--data`, which encode text columns and keep the encoding for predict")
        numeric_frame = hasattr(dtypes, "items") and not text  # a DataFrame of number (and bool) columns only
        frame, value = value, np.array(value.to_numpy())  # a copy: pandas hands out read-only views
        if value.dtype == object and numeric_frame:  # bool beside number columns: one float array
            value = np.array(frame.to_numpy(dtype=np.float32))
    array = np.asarray(value) if isinstance(value, list) else value
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()  # torch warns about sharing read-only memory (Series.to_numpy() under copy-on-write)
    if isinstance(array, np.ndarray) and array.dtype.kind in "OUS":
        distinct = [repr(str(v)) for v in dict.fromkeys(array.reshape(-1)[:1000].tolist())]
        shown = ", ".join(distinct[:3]) + (", ..." if len(distinct) > 3 else "")
        if what == "targets":
            raise DataError(f"the targets are text labels ({shown}), but losses take numbers: encode them as "
                            "class indices, e.g. classes, y = numpy.unique(labels, return_inverse=True) (classes[i] "
                            "names class i), or train on a table with zerograd.train / `zerograd train --data`, "
                            "which encode them and keep the class names")
        raise DataError(f"the inputs hold text ({shown}), not numbers: encode them first (e.g. one-hot with "
                        "pandas.get_dummies), or train on the table with `zerograd train --data`")
    return array
