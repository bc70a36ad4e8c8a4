"""API keys: with ``NNSERVE_API_KEYS`` set, every versioned route (``/v1/…``, ``/v2/…``)
needs ``Authorization: Bearer <key>``, and the key decides the tenant whose records the
request may see. Health and readiness (``/healthz``, ``/readyz`` and the protocol's
``/v2/health/…``), metrics, the OpenAPI document, its docs page and the dashboard's own files
stay open: they hold no tenant's data, and probes rarely carry keys.

A tenant id is a short hash of its key, so Redis never holds a key, and a key is never
logged: it is read from the header, hashed, and dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from flask import Flask, g, request

from .errors import Unauthorized
from .settings import Settings

PROTECTED = re.compile(r"(?!/v2/health/)/v\d+(/|$)")
"""Paths that need a key: the versioned API, but for the Open Inference Protocol's health probes."""


def protects(path: str) -> bool:
    return PROTECTED.match(path) is not None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def tenant_of(digest: bytes) -> str:
    """The tenant of the key with this SHA-256 ``digest``: ``t_`` and 16 hex digits of it."""
    return f"t_{digest.hex()[:16]}"


class Keys:
    """The configured keys, kept only as SHA-256 digests."""

    def __init__(self, keys: list[str]):
        self._known = [(_digest(key), tenant_of(_digest(key))) for key in keys]

    def tenant(self, presented: str) -> str | None:
        """The tenant of ``presented``, or None when it is no configured key.

        Comparing digests makes every comparison the same length, so the time taken tells
        nothing about the key's length; compare_digest takes the same time however many
        leading bytes match; and every configured key is compared (no early exit), so the
        time does not tell which key, if any, matched either.
        """
        digest, found = _digest(presented), None
        for known, tenant in self._known:
            if hmac.compare_digest(digest, known):
                found = tenant
        return found


def bearer(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None when there is none."""
    scheme, _, presented = (header or "").strip().partition(" ")
    presented = presented.strip()
    return presented if scheme.lower() == "bearer" and presented else None


def keys_of(settings: Settings) -> Keys | None:
    """The configured keys, or None when the API is open."""
    return Keys([key.get_secret_value() for key in settings.api_keys]) if settings.api_keys else None


def install(app: Flask, keys: Keys | None) -> None:
    """Require a key on the versioned API when keys are configured (nothing to do otherwise)."""
    if keys is None:
        return

    @app.before_request
    def authenticate() -> None:
        if not protects(request.path):
            return
        presented = bearer(request.headers.get("Authorization"))
        if presented is None:
            raise Unauthorized("this API needs an API key: send the header 'Authorization: Bearer <key>'")
        tenant = keys.tenant(presented)
        if tenant is None:
            raise Unauthorized("the API key is not valid", error="invalid_token")
        g.tenant = tenant
