"""Idempotency keys: a ``POST /v1/jobs`` or ``POST /v1/datasets`` sent with an ``Idempotency-Key``
header creates its resource at most once per key and tenant, however often it is retried.

1. Before anything is created the key is reserved atomically (``store.reserve_idempotency_key``,
   SET NX in effect), so of two concurrent requests with one key only one goes on; the other
   gets 409 and retries. The reservation is a lease of ``LEASE`` seconds, renewed by a thread
   while the request runs (``_Lease``): if the API process dies mid-request, the key is free
   again within seconds, not blocked until a long expiry.
2. The response is written over the reservation in the very transaction that creates the
   resource (``remember``), so no resource exists without its record, even when the process
   dies a moment later.
3. A request that creates nothing (an invalid body, a limit) frees the key again, so a
   corrected retry may use it.

A retry with the key gets the stored status and body again, with ``Idempotent-Replayed: true``;
the key sent with another body or to another route is a 422. Records live
``NNSERVE_IDEMPOTENCY_TTL`` seconds.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import Callable
from typing import Any

import orjson
import redis
from flask import Response, g, request

from . import store
from .context import services, tenant
from .errors import BadRequest, Conflict, Invalid

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
IDEMPOTENCY_HEADER = {
    HEADER: "Any unique string (a UUID): a retry with the same key returns the first "
    "response instead of creating another resource"
}
"""The header as the OpenAPI document describes it."""
LEASE = 10.0
"""Seconds a reservation outlives the process holding it (renewed every third of that while its
request runs): what a retry waits, at most, after the API process handling the first request died."""


class _Lease:
    """Renews a reservation every ``LEASE / 3`` seconds from a daemon thread until ``stop``: a
    request may run longer than the lease (a large upload), but a dead process renews nothing."""

    def __init__(self, r: redis.Redis, key: str, record: bytes):
        self._r, self._key, self._record = r, key, record
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="idempotency-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stopped.wait(LEASE / 3):
            try:
                if not store.renew_idempotency_key(self._r, self._key, self._record, LEASE):
                    return  # the response replaced the reservation, or the lease lapsed
            except redis.exceptions.RedisError as error:  # Redis away: the lease lapses; nothing is lost
                log.warning("idempotency lease: not renewed (%s)", error)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def idempotent(view: Callable[..., Response]) -> Callable[..., Response]:
    """Make a creating route honour ``Idempotency-Key``; it must pass ``remember(response)`` to the
    store call that creates the resource."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not VALID_KEY.fullmatch(key):
            raise BadRequest(f"the {HEADER} header must be 1 to 255 visible ASCII characters, such as a UUID")
        r = services().redis
        redis_key, fingerprint = store.idempotency_key(tenant(), key), _fingerprint()
        reservation = orjson.dumps({"fingerprint": fingerprint, "reservation": secrets.token_hex(8)})
        held = store.reserve_idempotency_key(r, redis_key, reservation, LEASE)
        if held is not None:
            return _replay(orjson.loads(held), fingerprint)
        g.idempotency = (redis_key, fingerprint)
        lease = _Lease(r, redis_key, reservation)
        created = False
        try:
            response = view(*args, **kwargs)
            created = response.status_code < 300
            return response
        finally:
            lease.stop()
            if not created:
                store.release_idempotency_key(r, redis_key, reservation)

    return wrapper


def remember(response: Response) -> Callable[[Any], None] | None:
    """The commands that keep ``response`` under this request's key, for the store call that creates
    the resource to run in its transaction; None when the request has no key."""
    held = g.get("idempotency")
    if held is None:
        return None
    redis_key, fingerprint = held
    record = orjson.dumps(
        {
            "fingerprint": fingerprint,
            "status": response.status_code,
            "body": response.get_data(as_text=True),
            "location": response.headers.get("Location"),
        }
    )
    return functools.partial(
        store.keep_idempotent_response, key=redis_key, record=record, seconds=services().settings.idempotency_ttl
    )


def _replay(record: dict[str, Any], fingerprint: str) -> Response:
    if record["fingerprint"] != fingerprint:
        raise Invalid(
            HEADER,
            "was already used for a different request (another body or route); send a new key with a new request",
            "idempotency_key_reused",
        )
    if "status" not in record:
        raise Conflict(
            f"a request with this {HEADER} is still being processed; retry shortly", headers={"Retry-After": "1"}
        )
    headers = {"Idempotent-Replayed": "true"}
    if record["location"]:
        headers["Location"] = record["location"]
    return Response(record["body"], status=record["status"], headers=headers, mimetype="application/json")


def _fingerprint() -> str:
    """A hash of what the request asks for: route, content type and body. A multipart body counts
    by its fields and files, not its bytes, because a client that retries draws a new boundary."""
    digest = hashlib.sha256(f"{request.method} {request.path} {request.mimetype}\n".encode())
    if request.mimetype == "multipart/form-data":
        for name, value in sorted(request.form.items(multi=True)):
            digest.update(orjson.dumps(["field", name, value]))
        for name, upload in sorted(request.files.items(multi=True), key=lambda item: item[0]):
            digest.update(orjson.dumps(["file", name, upload.filename]))
            content = hashlib.sha256()
            for chunk in iter(functools.partial(upload.read, 1 << 20), b""):
                content.update(chunk)
            digest.update(content.digest())
            upload.seek(0)
    else:
        digest.update(request.get_data())
    return digest.hexdigest()
