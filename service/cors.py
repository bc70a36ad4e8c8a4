"""Cross-origin requests (CORS), so that a browser page served from another origin may call the API:
off unless ``NNSERVE_CORS_ORIGINS`` lists the origins allowed (``https://app.example.com``), or ``*``.

A WSGI layer rather than a Flask hook, so that the predict fast path's answers carry the headers
too. A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin is
answered here, 204 with the methods and request headers the API uses; any other request from an
allowed origin goes on as usual and its answer gains ``Access-Control-Allow-Origin`` and the
response headers a page may read. Requests from other origins get no CORS headers, so their
browsers keep the answer from the page. API keys travel in ``Authorization``, never in cookies,
so credentials are not allowed.
"""

from __future__ import annotations

from typing import Any

ALLOW_METHODS = "GET, POST, PUT, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-ID"
EXPOSE_HEADERS = (
    "Location, Link, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, "
    "X-Request-ID, Idempotent-Replayed"
)
MAX_AGE = 600
"""Seconds a browser may reuse a preflight's answer."""


class Cors:
    def __init__(self, app: Any, origins: tuple[str, ...]):
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        origin: str | None = environ.get("HTTP_ORIGIN")
        # With a list, the answer depends on the Origin header: caches must keep one per origin.
        headers = [] if self.any_origin else [("Vary", "Origin")]
        if origin is not None and (self.any_origin or origin in self.origins):
            headers.append(("Access-Control-Allow-Origin", "*" if self.any_origin else origin))
            if environ["REQUEST_METHOD"] == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
                start_response(
                    "204 No Content",
                    [
                        *headers,
                        ("Access-Control-Allow-Methods", ALLOW_METHODS),
                        ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                        ("Access-Control-Max-Age", str(MAX_AGE)),
                        ("Content-Length", "0"),
                    ],
                )
                return [b""]
            headers.append(("Access-Control-Expose-Headers", EXPOSE_HEADERS))
        if not headers:
            return self.app(environ, start_response)

        def start(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response_headers.extend(headers)
            return start_response(status, response_headers, exc_info)

        return self.app(environ, start)
