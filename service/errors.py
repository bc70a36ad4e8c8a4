"""Every error a client can see, and the one way they are rendered: ``application/problem+json``.

``{"type", "title", "status", "detail", "errors"?, "request_id"}`` (RFC 9457; ``request_id`` is the
request's X-Request-ID, see ``logs``). Routes raise an
:class:`ApiError`; pydantic's ValidationError, the engine's SpecError, werkzeug's HTTP
errors, Redis being unreachable (503) and Redis being full (507) are translated here, in one place, so bad input can
never surface as HTML, a traceback or a 5xx.

On the paths of another protocol the same errors keep their status and headers (a 401's or 403's
``WWW-Authenticate``, a 429's ``Retry-After``) but take that protocol's body, since that is what its
clients read (``dialect_of``): ``{"error": detail}`` on ``/v2`` (the Open Inference Protocol) and on
TF Serving's ``…:predict``; ``{"error_code": "BAD_REQUEST", "message": detail}`` on MLflow's
``…/invocations``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import orjson
import redis
from flask import Flask, Response, has_request_context, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from nnserve.engine import SpecError

from .dialects import paths
from .logs import ENVIRON_KEY

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
OIP_PATH = re.compile(r"/v2(/|$)")
"""Paths of the Open Inference Protocol, whose errors are ``{"error": "..."}``."""

MLFLOW_ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "INVALID_STATE",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    422: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
}
"""MLflow's error codes (its ``databricks_pb2.ErrorCode`` names) for our statuses; others are ``INTERNAL_ERROR``.
Bad input of any kind is ``BAD_REQUEST``, as MLflow's scoring server reports it."""


def dialect_of(path: str) -> str | None:
    """``oip``, ``tfserving`` or ``mlflow`` for a path whose errors take that protocol's shape; else None."""
    if OIP_PATH.match(path):
        return "oip"
    if paths.TF_SERVING.fullmatch(path):
        return "tfserving"
    if paths.MLFLOW.fullmatch(path):
        return "mlflow"
    return None


class ApiError(Exception):
    status = 500
    title = "Internal Server Error"
    slug = "internal"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class BadRequest(ApiError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(ApiError):
    """401 with the ``WWW-Authenticate`` challenge RFC 6750 asks for (``error`` names a key that was refused)."""

    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, error: str | None = None):
        challenge = 'Bearer realm="nnserve"' + (f', error="{error}"' if error else "")
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    """403 for a valid key that lacks the scope a route needs, with RFC 6750's ``insufficient_scope``
    challenge naming the scopes of which it needs one."""

    status, title, slug = 403, "Forbidden", "forbidden"

    def __init__(self, detail: str, scopes: Iterable[str]):
        challenge = f'Bearer realm="nnserve", error="insufficient_scope", scope="{" ".join(scopes)}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class NotFound(ApiError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(ApiError):
    status, title, slug = 409, "Conflict", "conflict"


class RequestTimeout(ApiError):
    status, title, slug = 408, "Request Timeout", "request-timeout"


class ContentTooLarge(ApiError):
    """413 for a body over ``limit`` bytes: from Flask, or from the HTTP worker before the body is read."""

    status, title, slug = 413, "Content Too Large", "content-too-large"

    def __init__(self, limit: int):
        super().__init__(f"the request body is over the server's limit of {limit} bytes (NNSERVE_MAX_BODY_BYTES)")


class UnsupportedMediaType(ApiError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Invalid(ApiError):
    """422; ``loc`` (dotted, like ``model.layers.2.units``) names the field at fault."""

    status, title, slug = 422, "Unprocessable Content", "validation"

    def __init__(self, loc: str, msg: str, type: str = "value_error"):
        super().__init__(f"{loc}: {msg}" if loc else msg, [{"loc": loc, "msg": msg, "type": type}])


class TooManyRequests(ApiError):
    """429; ``retry_after`` (seconds), when known, becomes the ``Retry-After`` header."""

    status, title, slug = 429, "Too Many Requests", "too-many-requests"

    def __init__(self, detail: str, retry_after: int | None = None):
        super().__init__(detail, headers={"Retry-After": str(retry_after)} if retry_after is not None else None)


class Unavailable(ApiError):
    status, title, slug = 503, "Service Unavailable", "unavailable"


class StorageFull(ApiError):
    """507: Redis refused a write because it is at its ``maxmemory`` (its policy is ``noeviction``)."""

    status, title, slug = 507, "Insufficient Storage", "storage-full"


STORAGE_FULL_DETAIL = (
    "the data store (Redis) is full: it reached its maxmemory and refuses new data; nothing stored "
    "before is lost and reads, predictions and deletes still work. Delete datasets or models you no "
    "longer need, or give Redis more memory (its maxmemory setting), then try again"
)


def problem(status: int, title: str, detail: str, slug: str, errors: list | None = None) -> Response:
    dialect = dialect_of(request.path) if has_request_context() else None
    if dialect == "mlflow":
        code = MLFLOW_ERROR_CODES.get(status, "INTERNAL_ERROR")
        return Response(
            orjson.dumps({"error_code": code, "message": detail}), status=status, mimetype="application/json"
        )
    if dialect is not None:
        return Response(orjson.dumps({"error": detail}), status=status, mimetype="application/json")
    body: dict[str, Any] = {"type": f"urn:nnserve:problem:{slug}", "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    if has_request_context() and ENVIRON_KEY in request.environ:
        body["request_id"] = request.environ[ENVIRON_KEY]
    return Response(orjson.dumps(body), status=status, mimetype=PROBLEM_JSON)


def spec_error(error: SpecError, root: str = "model") -> Invalid:
    """The engine's SpecError as a 422. Its loc is relative to the model spec, or starts with
    ``training`` for training fields; model-spec locs are prefixed with ``root``."""
    parts = [str(p) for p in error.loc]
    if parts and parts[0] != "training" and root:
        parts.insert(0, root)
    return Invalid(".".join(parts), error.message, "spec_error")


def validation_errors(error: ValidationError, data: Any) -> list[dict[str, Any]]:
    """pydantic's errors with ``loc`` as a dotted path into the request as the client wrote it.

    pydantic puts union member names and discriminator tags (``dense``, ``literal[...]``) into its
    locs; we keep only the parts that are keys or indices of the input (plus a final missing key),
    and report the first error per location, since every member of a failed union reports one.
    """
    seen: dict[str, dict[str, Any]] = {}
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        node, parts = data, []
        loc = item["loc"]
        for i, part in enumerate(loc):
            if isinstance(node, dict) and part in node:  # noqa: SIM114 (apart, each index is type-checked)
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            elif isinstance(node, dict) and i == len(loc) - 1:
                pass  # the name of a missing field
            else:
                continue
            parts.append(str(part))
        dotted = ".".join(parts)
        seen.setdefault(dotted, {"loc": dotted, "msg": item["msg"], "type": item["type"]})
    return list(seen.values())


class RequestValidationError(ApiError):
    status, title, slug = 422, "Unprocessable Content", "validation"

    def __init__(self, error: ValidationError, data: Any):
        errors = validation_errors(error, data)
        detail = "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors[:5])
        super().__init__(detail, errors)


def register(app: Flask) -> None:
    """Install the handlers. Order does not matter: Flask picks the most specific class."""

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        response = problem(error.status, error.title, error.detail, error.slug, error.errors)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(SpecError)
    def engine_spec_error(error: SpecError):
        return api_error(spec_error(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # Keep werkzeug's status (404 unknown route, 405, 413, ...) but never its HTML page.
        slug = (error.name or "error").lower().replace(" ", "-")
        response = problem(error.code or 500, error.name, error.description or error.name, slug)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        return api_error(ContentTooLarge(app.config["MAX_CONTENT_LENGTH"]))

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(redis.exceptions.ReadOnlyError)  # a replica, or a primary demoted by a failover
    def redis_down(error: Exception):
        log.warning("Redis unreachable: %s", error)
        response = api_error(Unavailable("the data store (Redis) is unreachable; try again shortly"))
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(redis.exceptions.OutOfMemoryError)
    def redis_full(error: Exception):
        log.warning("Redis is full (maxmemory): %s", error)
        return api_error(StorageFull(STORAGE_FULL_DETAIL))

    @app.errorhandler(Exception)
    def internal(error: Exception):
        log.exception("unhandled error")
        return problem(500, "Internal Server Error", "an unexpected error occurred; it has been logged", "internal")
