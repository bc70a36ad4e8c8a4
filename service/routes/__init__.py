"""One blueprint per resource, and the few helpers every route uses."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app, g, request
from pydantic import BaseModel

from .. import store
from ..errors import Invalid


def services():
    return current_app.extensions["nnserve"]


def tenant() -> str:
    """Whose records this request may see: the API key's tenant (``g.tenant``, set by ``auth``), else ``public``."""
    return g.get("tenant", store.PUBLIC)


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


def respond(
    body: BaseModel | dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response (orjson; NumPy arrays allowed in dicts); None gives an empty body."""
    if body is None:
        response = Response(status=status, headers=headers)
        del response.headers["Content-Type"]  # Flask's default, text/html, for a body that is not there
        return response
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json", exclude_none=True)
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        headers=headers,
        mimetype="application/json",
    )
