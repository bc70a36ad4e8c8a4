"""One blueprint per resource; ``respond`` builds their JSON answers.

What a route needs besides: ``context`` (the app's services, the tenant) and ``parsing`` (bodies,
predict rows, paging), both below the routes so that the request hooks (auth, limits,
idempotency) can use them too.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request
from pydantic import BaseModel

from ..schemas import Page


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


def listing(model: type[Page], items: list[Any], total: int, offset: int, limit: int) -> Response:
    """One page of a list: ``items``, ``total`` and ``next`` (null on the last page) in the body, and an
    RFC 8288 ``Link`` header to the ``first``, ``prev``, ``next`` and ``last`` pages. The URLs are
    relative (path and query), so they stay right behind a proxy that rewrites the host."""
    base = request.script_root + request.path

    def url(start: int) -> str:
        return f"{base}?offset={start}&limit={limit}"

    following = url(offset + limit) if offset + limit < total else None
    links = {"first": url(0)}
    if offset > 0:
        links["prev"] = url(max(0, min(offset, total) - limit))
    if following is not None:
        links["next"] = following
    links["last"] = url(max(0, (total - 1) // limit * limit))
    body = model(items=items, total=total, next=following).model_dump(mode="json", exclude_none=True)
    body["next"] = following  # null on the last page, not left out
    return respond(body, headers={"Link": ", ".join(f'<{link}>; rel="{rel}"' for rel, link in links.items())})
