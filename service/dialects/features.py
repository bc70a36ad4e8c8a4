"""Rows of numbers from named features: records, columns with rows, or a mapping of columns.

Every format that names its values (``/v1``'s ``records`` and ``columns``/``data``, TF Serving's
instances as objects and columnar ``inputs``, MLflow's ``dataframe_split``, ``dataframe_records``
and CSV) comes here, so that columns are matched to the model's ``feature_names`` by name, in any
order, in one way. A missing or unknown column is a 422 naming it: a client that sends its columns
in another order gets the right answer or an error, never a silent wrong one.

``loc`` is where the values sit in the request (``records``, ``dataframe_split.columns``), for the
error's location. The model checks the rest of the rows (finite, in range) itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import Invalid

Names = Sequence[str] | None


def rows_array(rows: Any, loc: str) -> np.ndarray:
    """``rows`` (a non-empty list of samples of one shape: rows of numbers, or lists nested deeper for
    images) as an array with the samples along its first axis; else Invalid. ``shapes.fit_to_model`` and
    the model check the rest (the sample's size, finiteness, range)."""
    if not isinstance(rows, list) or not rows:
        raise Invalid(loc, "must be a non-empty list of rows", "list_type")
    try:
        x = np.array(rows)
    except ValueError:
        raise Invalid(loc, "samples must all have the same shape (rows the same number of values)") from None
    if x.ndim < 2:
        raise Invalid(
            loc, "must be a list of samples, each a list of numbers or of lists: [[1.0, 2.0], ...]", "value_error"
        )
    if x.dtype.kind not in "iuf":
        raise Invalid(loc, "values must be numbers", "float_type")
    return x


def from_records(records: Any, names: Names, loc: str) -> np.ndarray:
    """``[{"name": value, ...}, ...]``: one object per row, a value for each feature."""
    names = _names(names, loc)
    if not isinstance(records, list) or not records:
        raise Invalid(loc, 'must be a non-empty list of objects: [{"feature": value, ...}, ...]', "list_type")
    expected = set(names)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise Invalid(f"{loc}.{i}", 'must be an object: {"feature": value, ...}', "dict_type")
        if record.keys() != expected:
            _mismatch(list(record), names, f"{loc}.{i}")
    return _numbers([[record[name] for name in names] for record in records], loc)


def from_columns(columns: Any, rows: Any, names: Names, loc: str, rows_loc: str) -> np.ndarray:
    """``columns`` (names, each once) and ``rows`` (lists of values in the order of ``columns``)."""
    names = _names(names, loc)
    if not isinstance(columns, list):
        raise Invalid(loc, "must be a list of column names", "list_type")
    in_order = columns == list(names)  # the usual case, and the cheapest: no checks or reordering left
    if not in_order:
        if not all(isinstance(column, str) for column in columns):
            raise Invalid(loc, "must be a list of column names", "list_type")
        if len(set(columns)) != len(columns):
            twice = next(column for column in columns if columns.count(column) > 1)
            raise Invalid(loc, f"column {twice!r} is named twice", "value_error")
        if set(columns) != set(names):
            _mismatch(columns, names, loc)
    x = rows_array(rows, rows_loc)
    if x.shape[1] != len(columns):
        raise Invalid(rows_loc, f"each row must have {len(columns)} values, one per column; received {x.shape[1]}")
    return x if in_order else x[:, [columns.index(name) for name in names]]


def from_mapping(mapping: dict[str, Any], names: Names, loc: str) -> np.ndarray:
    """``{"name": [value per row], ...}``: one list of values per feature, all equally long."""
    names = _names(names, loc)
    if mapping.keys() != set(names):
        _mismatch(list(mapping), names, loc)
    lengths = {len(values) if isinstance(values, list) else -1 for values in mapping.values()}
    if -1 in lengths or 0 in lengths:
        raise Invalid(loc, "each column must be a non-empty list of values, one per row", "list_type")
    if len(lengths) != 1:
        raise Invalid(loc, "columns must all have the same number of values", "value_error")
    return _numbers([mapping[name] for name in names], loc).T


def _names(names: Names, loc: str) -> Sequence[str]:
    if not names:
        raise Invalid(
            loc,
            "this model has no feature names (its dataset had none), so columns cannot be matched by name; "
            "send rows of numbers in the training order",
        )
    return names


def _mismatch(received: list[str], names: Sequence[str], loc: str) -> None:
    """Raise the 422 naming the first missing column, else the first unknown one."""
    missing = [name for name in names if name not in received]
    if missing:
        raise Invalid(loc, f"missing column {missing[0]!r}; the model's features are {list(names)}", "missing")
    unknown = next(column for column in received if column not in names)
    raise Invalid(loc, f"unknown column {unknown!r}; the model's features are {list(names)}", "extra_forbidden")


def _numbers(values: list[Any], loc: str) -> np.ndarray:
    try:
        x = np.array(values)
    except ValueError:
        raise Invalid(loc, "values must be numbers", "float_type") from None
    if x.ndim != 2 or x.dtype.kind not in "iuf":
        raise Invalid(loc, "values must be numbers", "float_type")
    return x
