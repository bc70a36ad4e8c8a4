"""Request parsing below the routes: JSON bodies into pydantic models, the predict rows, the paging query.

Each parser raises the API's own errors (415, 400, 422 naming the field), so a route only parses,
calls and responds. ``inputs_array`` skips pydantic because predict is the hot path (the fast path
in ``fastpath.py`` calls it too).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import IO, Any, cast

import numpy as np
import orjson
from flask import request
from pydantic import BaseModel, ValidationError

from .dialects import features
from .errors import BadRequest, Invalid, RequestValidationError, UnsupportedMediaType


def is_json() -> bool:
    return request.mimetype == "application/json" or request.mimetype.endswith("+json")


def read_json() -> Any:
    """The request body as JSON; 415 for another content type, 400 when it does not parse."""
    if not is_json():
        raise UnsupportedMediaType(
            f"send the body as application/json; received {request.mimetype or 'no content type'!r}"
        )
    try:
        return orjson.loads(request.get_data())
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None


def body_stream() -> IO[bytes]:
    """The request body as a stream to read once, for a body too large to hold as Python objects
    (a dataset). If something already read it whole (the Idempotency-Key fingerprint), those bytes."""
    # werkzeug keeps a body read by get_data() here, and its stream is then spent.
    cached = getattr(request, "_cached_data", None)
    if cached is not None:
        return io.BytesIO(cached)
    # Buffered: werkzeug's stream takes a read of 0 bytes (as parsers probe a stream's type with)
    # for a client that went away.
    return io.BufferedReader(cast(io.RawIOBase, request.stream))


def parse(model: type[BaseModel], data: Any = None) -> Any:
    """``model`` from the JSON body (or from ``data``); a ValidationError becomes a 422 naming each field."""
    data = read_json() if data is None else data
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error, data) from None


def parse_inputs(feature_names: Sequence[str] | None = None) -> np.ndarray:
    """The rows of the predict body; see ``inputs_array``. 415/400 for a body that is not JSON."""
    return inputs_array(read_json(), feature_names)


PREDICT_FORMS = (
    'send {"inputs": [[number, ...], ...]}, {"records": [{"feature": number, ...}, ...]} '
    'or {"columns": ["feature", ...], "data": [[number, ...], ...]}'
)


def inputs_array(data: Any, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """The rows of a parsed predict body as a 2-D array of numbers, checked without pydantic for
    speed: ``inputs`` (rows in the training order), ``records`` (an object per row) or ``columns``
    and ``data`` (named columns, rows in their order); named features are matched to the model's
    ``feature_names`` (``dialects.features``). Else Invalid (422). The model checks the rest
    (width, finiteness, range) and raises SpecError."""
    if not isinstance(data, dict):
        raise Invalid("inputs", f"field required: {PREDICT_FORMS}", "missing")
    if "inputs" in data:
        _only(data, {"inputs"})
        return features.rows_array(data["inputs"], "inputs")
    if "records" in data:
        _only(data, {"records"})
        return features.from_records(data["records"], feature_names, "records")
    if "columns" in data or "data" in data:
        _only(data, {"columns", "data"})
        if "data" not in data or "columns" not in data:
            missing = "data" if "columns" in data else "columns"
            raise Invalid(missing, "field required: columns and data come together", "missing")
        return features.from_columns(data["columns"], data["data"], feature_names, "columns", "data")
    raise Invalid("inputs", f"field required: {PREDICT_FORMS}", "missing")


def _only(data: dict[str, Any], fields: set[str]) -> None:
    extra = set(data) - fields
    if extra:
        raise Invalid(sorted(extra)[0], "unknown field", "extra_forbidden")


def page() -> tuple[int, int]:
    """``(offset, limit)`` from the query string: ``?offset=0&limit=100`` (limit at most 1000)."""
    values = {}
    for name, default, low, high in (("offset", 0, 0, 10**9), ("limit", 100, 1, 1000)):
        raw = request.args.get(name, default)
        try:
            values[name] = int(raw)
        except ValueError:
            raise Invalid(name, f"must be an integer; received {raw!r}") from None
        if not low <= values[name] <= high:
            raise Invalid(name, f"must be between {low} and {high}; received {values[name]}")
    return values["offset"], values["limit"]
