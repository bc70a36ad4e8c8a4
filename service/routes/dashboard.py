"""The web dashboard: the page at ``/`` and its assets under ``/static/``, shipped in the package.

Plain HTML, CSS and JavaScript calling the same ``/v1`` API as any client; no build step, no CDN.
The names its lists offer (layer types, activations, optimizers) come from the engine at
``/choices.json``, so the page never re-types them.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from nnserve.engine import reference

from ..openapi import doc
from . import respond

bp = Blueprint("dashboard", __name__)

STATIC = Path(__file__).resolve().parent.parent / "static"

# Explicit types: the system's mimetypes table varies (application/javascript, or no entry for .svg).
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".md": "text/plain",
    ".txt": "text/plain",
    "": "text/plain",
}  # "": LICENSE, NOTICE

VENDOR_MAX_AGE = 365 * 24 * 3600
"""Seconds a browser keeps a vendored file: their directories carry the version, so they never change."""

# Everything the page loads comes from this origin; the API is called with fetch and EventSource.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@bp.get("/")
@doc(responses={200: "text/html; the dashboard"})
def index():
    """The dashboard page."""
    response = _send("index.html", max_age=None)
    response.cache_control.no_cache = True
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response


@bp.get("/sweeps")
@doc(
    responses={
        200: "text/html; the sweeps page (`?id=` one sweep: its trials, best-so-far curve, objective per parameter)"
    }
)
def sweeps_page():
    """The sweeps page."""
    response = _send("sweeps.html", max_age=None)
    response.cache_control.no_cache = True
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response


@bp.get("/choices.json")
@doc(responses={200: "application/json; layers, activations, optimizers... by name, each with its parameters"})
def choices() -> Response:
    """What the dashboard's lists offer: the engine's own registries."""
    response = respond(reference.choices())
    response.cache_control.no_cache = True
    return response


@bp.get("/static/<filename>")
@doc(responses={200: "*/*; the dashboard's script, style sheet, presets or icon"}, errors=(404,))
def asset(filename: str):
    """A file of the dashboard."""
    # Our own files change with each release and carry no version in their names: revalidated on each use.
    response = _send(filename, max_age=None)
    response.cache_control.no_cache = True
    return response


@bp.get("/static/vendor/<library>/<filename>")
@doc(responses={200: "*/*; a file of a vendored library (its directory names its version)"}, errors=(404,))
def vendored(library: str, filename: str):
    """A file of a library the dashboard uses."""
    response = _send(f"vendor/{library}/{filename}", max_age=VENDOR_MAX_AGE)
    response.cache_control.immutable = True
    return response


def _send(filename: str, max_age: int | None) -> Response:
    # send_from_directory refuses paths that leave STATIC and answers conditional requests (304).
    mimetype = CONTENT_TYPES.get(Path(filename).suffix, "application/octet-stream")
    response = send_from_directory(STATIC, filename, mimetype=mimetype, max_age=max_age)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
