"""Uploaded data to arrays: a JSON body or a CSV file becomes float32 features, targets, and a target kind.

The target kind decides the task: ``categorical`` targets train a classifier,
``continuous`` ones a regressor. When the client does not say, it is inferred and the
response says how (``target_kind_inferred`` and ``note``): strings and booleans are
categorical, fractional numbers continuous, and integers categorical only when there
are few distinct values for the number of rows.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from .errors import Invalid
from .schemas import DatasetCreate
from .settings import Settings

MAX_CLASSES_INFERRED = 20
"""More distinct integer targets than this are taken as continuous unless the client says otherwise."""


def from_json(body: DatasetCreate, settings: Settings) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """``(metadata, features, targets)`` from a validated JSON upload. Raises Invalid."""
    widths = {len(row) for row in body.features}
    if len(widths) != 1:
        first = len(body.features[0])
        bad = next(i for i, row in enumerate(body.features) if len(row) != first)
        raise Invalid(f"features.{bad}", f"has {len(body.features[bad])} values but row 0 has {first}")
    features = np.array(body.features, dtype=np.float64)
    if len(body.targets) != len(features):
        raise Invalid("targets", f"has {len(body.targets)} values but features has {len(features)} rows")
    if isinstance(body.targets[0], list):
        if len({len(row) for row in body.targets}) != 1 or not body.targets[0]:
            raise Invalid("targets", "rows of targets must all have the same, non-zero number of values")
        if body.target_kind == "categorical":
            raise Invalid("targets", "categorical targets must be a flat list of labels, one per row")
        targets, kind, note = np.array(body.targets, dtype=np.float32), "continuous", None
    else:
        targets, kind, note = infer(body.targets, body.target_kind, "targets")
    return _finish(
        features, targets, kind, note, body.target_kind is None, body.feature_names, None, body.name, settings
    )


def from_csv(
    text: str, target: str | None, target_kind: str | None, name: str | None, settings: Settings
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """``(metadata, features, targets)`` from CSV text with a header row; ``target`` names the target
    column (the last one by default) and every other column must be numeric. Raises Invalid."""
    if target_kind not in (None, "categorical", "continuous"):
        raise Invalid("target_kind", f"must be 'categorical' or 'continuous'; received {target_kind!r}")
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise Invalid("file", "needs a header row and at least one data row")
    header, data = [h.strip() for h in rows[0]], rows[1:]
    if len(header) < 2:
        raise Invalid("file", "needs at least two columns: features and a target")
    for line, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise Invalid("file", f"line {line} has {len(row)} values; the header has {len(header)}")
    column = len(header) - 1 if not target else _column(header, target)
    feature_columns = [i for i in range(len(header)) if i != column]
    cells = np.array(data, dtype=object)
    try:
        features = cells[:, feature_columns].astype(np.float64)
    except ValueError:
        for line, row in enumerate(data, start=2):
            for i in feature_columns:
                try:
                    float(row[i])
                except ValueError:
                    raise Invalid("file", f"line {line}, column {header[i]!r}: {row[i]!r} is not a number") from None
        raise
    labels = [cell.strip() for cell in cells[:, column]]
    targets, kind, note = infer([_number(label) for label in labels], target_kind, "target")
    return _finish(
        features,
        targets,
        kind,
        note,
        target_kind is None,
        [header[i] for i in feature_columns],
        header[column],
        name,
        settings,
    )


def _column(header: list[str], target: str) -> int:
    if target not in header:
        raise Invalid("target", f"no column {target!r}; the columns are {', '.join(map(repr, header))}")
    return header.index(target)


def _number(cell: str) -> Any:
    """A CSV cell as an int, a float, or the string itself."""
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def infer(labels: list[Any], kind: str | None, loc: str) -> tuple[np.ndarray, str, str | None]:
    """``(targets array, target kind, note)`` for a flat list of labels; ``kind`` is the client's, if given."""
    types = {type(v) for v in labels}
    if str in types and types != {str}:
        raise Invalid(loc, "mixes strings and numbers; use one or the other")
    if bool in types and types != {bool}:
        raise Invalid(loc, "mixes true/false and numbers; use one or the other")
    numeric = not types & {str, bool}
    if kind == "continuous":
        if not numeric:
            raise Invalid(loc, "continuous targets must be numbers")
        return _continuous(labels, loc), kind, None
    if kind == "categorical":
        return np.array(labels), kind, None
    if not numeric:
        return (
            np.array(labels),
            "categorical",
            f"{'strings' if str in types else 'true/false values'}: taken as class labels",
        )
    if float in types:
        return (
            _continuous(labels, loc),
            "continuous",
            ('fractional numbers: taken as continuous values; send "target_kind": "categorical" if they are labels'),
        )
    distinct = len(set(labels))
    if distinct <= MAX_CLASSES_INFERRED and 2 * distinct <= len(labels):
        note = (
            f"integers with {distinct} distinct values in {len(labels)} rows: taken as class labels; "
            'send "target_kind": "continuous" if they are quantities'
        )
        return np.array(labels, dtype=np.int64), "categorical", note
    note = (
        f"integers with {distinct} distinct values in {len(labels)} rows: taken as continuous values; "
        'send "target_kind": "categorical" if they are labels'
    )
    return _continuous(labels, loc), "continuous", note


def _continuous(labels: list[Any], loc: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        values = np.array(labels, dtype=np.float64).astype(np.float32)
    if not np.isfinite(values).all():
        raise Invalid(loc, "values must be finite and within float32 range")
    return values


def _finish(features, targets, kind, note, inferred, feature_names, target_name, name, settings):
    n, d = features.shape
    if n > settings.max_rows:
        raise Invalid("features", f"has {n} rows; the limit is {settings.max_rows}")
    if d == 0 or d > settings.max_features:
        raise Invalid("features", f"has {d} columns; between 1 and {settings.max_features} are allowed")
    if feature_names is not None and len(feature_names) != d:
        raise Invalid("feature_names", f"has {len(feature_names)} names for {d} feature columns")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, reported just below
        features = features.astype(np.float32)
    if not np.isfinite(features).all():
        row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise Invalid(f"features.{row}", "contains a value that is not finite or beyond float32 range")
    if kind == "categorical" and len(np.unique(targets)) < 2:
        raise Invalid("targets", "categorical targets need at least 2 distinct classes")
    meta = {
        "name": name,
        "n_samples": int(n),
        "n_features": int(d),
        "n_targets": 1 if targets.ndim == 1 else int(targets.shape[1]),
        "target_kind": kind,
        "target_kind_inferred": inferred,
        "note": note if inferred else None,
        "classes": np.unique(targets).tolist() if kind == "categorical" else None,
        "feature_names": feature_names,
        "target_name": target_name,
        "builtin": False,
    }
    return meta, features, targets
