"""What the dialects share: reading a JSON body whatever its content type says, and rows from a
list that is either plain rows or one object per row."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ..errors import BadRequest
from . import features
from .features import Names


def json_body(body: bytes) -> Any:
    """``body`` parsed as JSON; BadRequest (400) when it is not."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None


def rows_or_records(values: Any, names: Names, loc: str) -> np.ndarray:
    """A list of rows (``[[1.0, 2.0], ...]``, in the training order) or of objects (``[{"feature": 1.0}, ...]``,
    matched by name): TF Serving's and MLflow's ``instances``, a list ``inputs``."""
    if isinstance(values, list) and values and isinstance(values[0], dict):
        return features.from_records(values, names, loc)  # which refuses any row that is not an object
    return features.rows_array(values, loc)


def rows_or_columns(values: Any, names: Names, loc: str) -> np.ndarray:
    """A list of rows, or an object of columns (``{"feature": [value per row], ...}``, matched by name):
    the columnar ``inputs`` of TF Serving and MLflow."""
    if isinstance(values, dict):
        return features.from_mapping(values, names, loc)
    return features.rows_array(values, loc)
