"""MLflow's scoring protocol, as ``mlflow models serve`` answers it, under a model: ``POST /v1/models/{ref}/invocations``.

Bodies, per MLflow's documentation of its REST scoring API ("Deploy MLflow models", local REST server):

- ``application/json`` with exactly one of ``dataframe_split`` (``{"columns": [...], "data": [[...]]}``,
  pandas' ``split`` orient; ``index`` is ignored), ``dataframe_records`` (pandas' ``records`` orient),
  ``instances`` (rows, or one object per row) or ``inputs`` (rows, or an object of columns); and optionally
  ``params``, which this model has none of and ignores, as a pyfunc without a params schema does;
- ``text/csv``: a header row naming the columns, then a row of numbers per line.

Columns are matched to the model's ``feature_names`` by name (``features``). The answer is
``{"predictions": [...]}``: class labels for a classifier, values for a regressor, as an MLflow
pyfunc's ``predict`` gives. Errors are ``{"error_code": "BAD_REQUEST", "message": "..."}`` with their
4xx status (``errors.problem``).
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ..cache import Entry
from ..errors import BadRequest, Invalid, UnsupportedMediaType
from . import features
from .common import json_body, rows_or_columns, rows_or_records

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES = ("application/json", "text/csv")


class MLflowRequest(BaseModel):
    """Exactly one of the four input fields, and optionally ``params``."""

    dataframe_split: dict[str, list[Any]] | None = Field(
        None, description='pandas\' split orient: {"columns": [...], "data": [[...], ...]}'
    )
    dataframe_records: list[dict[str, float]] | None = Field(None, description="pandas' records orient.")
    instances: list[list[float] | dict[str, float]] | None = Field(None, description="Rows, or an object per row.")
    inputs: list[list[float]] | dict[str, list[float]] | None = Field(
        None, description="Rows, or an object of columns."
    )
    params: dict[str, Any] | None = Field(None, description="Inference parameters; this model takes none.")


class MLflowResponse(BaseModel):
    predictions: list[str | int | float | list[float]] = Field(
        description="Class labels (classification) or values, one per row."
    )


class MLflowError(BaseModel):
    """MLflow's error form, used by every error on ``/invocations``."""

    error_code: str
    message: str


def read(body: bytes, mimetype: str, entry: Entry) -> tuple[np.ndarray, None]:
    """The rows of an MLflow scoring body."""
    if mimetype == "text/csv":
        return _csv_rows(body, entry.feature_names), None
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as one of {', '.join(CONTENT_TYPES)}; received {mimetype or 'no content type'!r}"
        )
    data = json_body(body)
    fields = sorted(data) if isinstance(data, dict) else []
    given = [name for name in fields if name in FORMATS]
    if not isinstance(data, dict) or len(given) != 1 or len(fields) > 1 + ("params" in data):
        raise BadRequest(
            f"the input must be a JSON object with exactly one of the input fields {list(FORMATS)} "
            f"(and optionally 'params'); received {'the fields ' + str(fields) if isinstance(data, dict) else 'no object'}"
        )
    if data.get("params") is not None and not isinstance(data["params"], dict):
        raise Invalid("params", "must be an object")
    names, values = entry.feature_names, data[given[0]]
    if given[0] == "dataframe_split":
        return _split_rows(values, names), None
    if given[0] == "dataframe_records":
        return features.from_records(values, names, "dataframe_records"), None
    if given[0] == "instances":
        return rows_or_records(values, names, "instances"), None
    return rows_or_columns(values, names, "inputs"), None


def _split_rows(split: Any, names: features.Names) -> np.ndarray:
    if not isinstance(split, dict) or "data" not in split:
        raise Invalid("dataframe_split", 'must be an object: {"columns": [...], "data": [[...], ...]}', "dict_type")
    extra = sorted(set(split) - {"columns", "data", "index"})
    if extra:
        raise Invalid(f"dataframe_split.{extra[0]}", "unknown field", "extra_forbidden")
    if "columns" not in split:  # pandas numbers the columns then: the rows are in the training order
        return features.rows_array(split["data"], "dataframe_split.data")
    return features.from_columns(
        split["columns"], split["data"], names, "dataframe_split.columns", "dataframe_split.data"
    )


def _csv_rows(body: bytes, names: features.Names) -> np.ndarray:
    """A CSV body: a header row of column names, then a row of numbers per line."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the CSV body is not UTF-8 text") from None
    lines = [row for row in csv.reader(io.StringIO(text)) if row]
    if len(lines) < 2:
        raise Invalid("csv", "send a header row naming the columns, then at least one row of values")
    header = [name.strip() for name in lines[0]]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            rows.append([float(value) for value in line])
        except ValueError:
            raise Invalid(f"csv.line {number}", "values must be numbers", "float_type") from None
    return features.from_columns(header, rows, names, "csv.header", "csv")


def write(entry: Entry, prediction: dict[str, Any], form: None) -> dict[str, Any]:
    """``{"predictions": [...]}``: the labels of a classifier (not its probabilities), a regressor's values."""
    return {"predictions": prediction["predictions"]}
