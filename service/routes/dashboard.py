"""The web dashboard: the page at ``/`` and its assets under ``/static/``, shipped in the package.

Plain HTML, CSS and JavaScript calling the same ``/v1`` API as any client; no build step,
no CDN. Not part of the OpenAPI document: these are pages, not API operations.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

bp = Blueprint("dashboard", __name__)

STATIC = Path(__file__).resolve().parent.parent / "static"

# Explicit types: the system's mimetypes table varies (application/javascript, or no entry for .svg).
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
                 ".svg": "image/svg+xml", ".png": "image/png"}

VENDOR_MAX_AGE = 365 * 24 * 3600
"""Seconds a browser keeps a vendored file: their directories carry the version, so they never change."""

# Everything the page loads comes from this origin; the API is called with fetch and EventSource.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@bp.get("/")
def index():
    """The dashboard page."""
    response = _send("index.html")
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response


@bp.get("/static/<path:filename>")
def static(filename: str):
    """A dashboard asset; 404 (problem+json) for anything else."""
    return _send(filename)


def _send(filename: str) -> Response:
    # send_from_directory refuses paths that leave STATIC and answers conditional requests (304).
    # Our own files change with each release and carry no version in their names: revalidated on each use.
    vendored = filename.startswith("vendor/")
    mimetype = CONTENT_TYPES.get(Path(filename).suffix, "application/octet-stream")
    response = send_from_directory(STATIC, filename, mimetype=mimetype, max_age=VENDOR_MAX_AGE if vendored else None)
    if vendored:
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
