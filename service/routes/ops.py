"""Operations: health, readiness, Prometheus metrics, the OpenAPI document and its docs page."""

from __future__ import annotations

import functools

from flask import Blueprint, Response, current_app

from nnserve import __version__

from .. import store
from ..context import services
from ..errors import STORAGE_FULL_DETAIL
from ..lifecycle import ServiceStatus
from ..openapi import doc, document
from ..schemas import Health, Readiness, RedisMemory
from . import respond

bp = Blueprint("ops", __name__)

SWAGGER_UI = "/static/vendor/swagger-ui-5.35.0"
"""Swagger UI 5, shipped in the package with the dashboard's other vendored files (service/static/vendor)."""
DOCS_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nnserve API</title>
<link rel="stylesheet" href="{SWAGGER_UI}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{SWAGGER_UI}/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui"}});</script>
</body></html>
"""


@bp.get("/healthz")
@doc(responses={200: Health})
def healthz():
    """Liveness: the process answers."""
    return respond(Health(status="ok"))


@bp.get("/readyz")
@doc(responses={200: Readiness, 503: Readiness})
def readyz():
    """Readiness: 200 when Redis answers and keeps what it is given, else 503. A full Redis stays
    ready (predictions and reads still work; writes get 507) and is reported under ``memory``."""
    ctx = services()
    try:
        memory = store.memory(ctx.redis)
    except store.TRANSIENT_ERRORS:
        return respond(Readiness(status=ServiceStatus.unavailable, redis=False), 503)
    warnings = [store.eviction_warning(memory.policy)] if memory.evicting else []
    if memory.full:
        warnings.append(STORAGE_FULL_DETAIL)
    ready = not memory.evicting or ctx.settings.allow_eviction
    body = Readiness(
        status=ServiceStatus.ready if ready else ServiceStatus.unavailable,
        redis=True,
        memory=RedisMemory(
            used_bytes=memory.used, max_bytes=memory.limit, full=memory.full, eviction_policy=memory.policy
        ),
        warnings=warnings,
    )
    return respond(body, 200 if ready else 503)


@bp.get("/metrics")
@doc(responses={200: "text/plain; Prometheus exposition format"})
def metrics():
    """Prometheus metrics: requests, latencies, jobs by status, queue depth, Redis memory."""
    ctx = services()
    text, content_type = ctx.monitoring.render(ctx.redis, ctx.queue)
    return Response(text, content_type=content_type)


@bp.get("/openapi.json")
@doc(responses={200: "application/json; the OpenAPI 3.1 document"})
def openapi():
    """This API's OpenAPI document."""
    # The app itself, not the per-request proxy: the cache below is keyed by it.
    return respond(_document(current_app._get_current_object()))  # type: ignore[attr-defined]


@functools.cache
def _document(app) -> dict:
    return document(app, "nnserve", __version__)


@bp.get("/docs")
@doc(responses={200: "text/html; Swagger UI"})
def docs():
    """Interactive API docs (Swagger UI, served from the package: no CDN)."""
    return Response(DOCS_PAGE, mimetype="text/html")
