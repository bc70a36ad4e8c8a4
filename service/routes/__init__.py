"""One blueprint per resource; ``respond`` builds their JSON answers.

What a route needs besides: ``context`` (the app's services, the tenant) and ``parsing`` (bodies,
predict rows, paging), both below the routes so that the request hooks (auth, limits,
idempotency) can use them too.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from pydantic import BaseModel


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
