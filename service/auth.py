"""API keys: who may call the versioned API, for which tenant, with which scopes.

**When keys are needed.** Authentication is on when ``NNSERVE_API_KEYS`` is set, or as soon as a key
has been made with ``nnserve keys create`` (stored in Redis), and it stays on when every stored key is
revoked: revoking the last key must not open the API to everyone. Then every versioned route
(``/v1/…``, ``/v2/…``) needs ``Authorization: Bearer <key>``; the key decides the tenant whose
records the request may see and what it may do. Without keys the API is open and every record
belongs to ``public``. Health and readiness (``/healthz``, ``/readyz`` and the protocol's
``/v2/health/…``), metrics, the OpenAPI document, its docs page and the dashboard's own files stay
open: they hold no tenant's data, and probes rarely carry keys.

**Scopes.** A key has some of ``read``, ``predict``, ``train`` and ``admin`` (one without any named has
them all). ``GRANTS`` says what each one includes, ``NEEDS`` which a route asks for: one visible
table, defaulting by method (reading needs ``read``, anything else ``train``), so a new route is never
open to every key, and ``tests/service/test_auth.py`` pins the whole table. A valid key without the
scope gets a 403 naming the scopes it lacks and those it has.

**Keys are kept as SHA-256 digests**, never as sent: a key is read from the header, hashed, and
dropped; a tenant id is a short hash of its key (or the tenant a stored key was made for), so Redis
never holds a key and none is logged. Keys are looked up by digest in a dict: the time a lookup takes
can only tell something about the digests, and a digest gives no way back to its key.

**Stored keys** (``nnserve keys create | list | revoke``) live in Redis (``store.API_KEYS``). Each API
process keeps the whole table and reloads it whenever a key is created or revoked (``store.KEY_EVENTS``,
as the model cache hears of deletions), so a known key costs no Redis call and a revoked one is refused
by every process as soon as the message arrives (milliseconds). A key the copy does not know is looked
up in Redis, so a new key works from its first request (an unknown key costs one Redis call). While
the subscription is down, every request looks its key up in Redis.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, g, request
from pydantic import SecretStr

from . import store
from .errors import Forbidden, Unauthorized
from .settings import SCOPES, ApiKey, Settings
from .subscription import Subscription

PROTECTED = re.compile(r"(?!/v2/health/)/v\d+(/|$)")
"""Paths that need a key: the versioned API, but for the Open Inference Protocol's health probes."""

ALL = frozenset(SCOPES)

GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "predict": frozenset({"predict"}),
    "train": frozenset({"train", "read"}),  # a client that submits jobs follows them
    "admin": ALL,
}
"""What a key with each scope may do, in terms of the scopes routes ask for."""

READS, WRITES = ("read",), ("train",)
BY_METHOD = {"GET": READS, "HEAD": READS, "OPTIONS": READS}
"""What a route needs unless ``NEEDS`` names it: reading needs ``read``; any other method, ``WRITES``
(uploading, submitting, canceling, deleting)."""

NEEDS: dict[str, tuple[str, ...]] = {
    # Predictions write nothing; evaluate scores a model on a dataset and answers only the figures.
    "models.predict": ("predict",),
    "models.evaluate": ("predict",),
    "v2.infer": ("predict",),
    "tfserving.predict": ("predict",),
    "mlflow.invocations": ("predict",),
    # A client that predicts may read what it predicts with: the models, not the datasets or jobs, nor a
    # model's weights (downloading them takes the model away), which need ``read``.
    "models.index": ("read", "predict"),
    "models.show": ("read", "predict"),
    "v2.server_metadata": ("read", "predict"),
    "v2.model_metadata": ("read", "predict"),
    "v2.model_ready": ("read", "predict"),
    "v2.model_config": ("read", "predict"),
    "v2.repository_index": ("read", "predict"),
    "v2.statistics": ("read", "predict"),
    # The registry is the models' names and versions: as readable as the models.
    "registry.index": ("read", "predict"),
    "registry.show": ("read", "predict"),
}
"""Endpoints that do not need what their method does by default: a key needs one of the scopes listed."""

KEY_PREFIX = "nns_"
"""Keys made by ``nnserve keys create`` begin so, which secret scanners can be taught to look for."""


def needs(endpoint: str, method: str) -> tuple[str, ...]:
    """The scopes of which a key needs one to call ``endpoint`` with ``method``."""
    return NEEDS.get(endpoint) or BY_METHOD.get(method, WRITES)


def protects(path: str) -> bool:
    return PROTECTED.match(path) is not None


def digest(key: str) -> bytes:
    """The SHA-256 of ``key``: all that is ever kept of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def tenant_of(key_digest: bytes) -> str:
    """The tenant of the key with this SHA-256 digest: ``t_`` and 16 hex digits of it."""
    return f"t_{key_digest.hex()[:16]}"


@dataclass(frozen=True)
class Access:
    """What a request may do: act for ``tenant``, with the ``scopes`` its key was given and all that they
    grant (``granted``)."""

    tenant: str
    scopes: frozenset[str]
    granted: frozenset[str]

    @classmethod
    def of(cls, tenant: str, scopes: Iterable[str]) -> Access:
        scopes = frozenset(scopes)
        return cls(tenant, scopes, frozenset().union(*(GRANTS[scope] for scope in scopes)))

    def allows(self, needed: Iterable[str]) -> bool:
        return not self.granted.isdisjoint(needed)


OPEN = Access.of(store.PUBLIC, ALL)
"""Every request's access while no key is needed."""


def bearer(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None when there is none."""
    scheme, _, presented = (header or "").strip().partition(" ")
    presented = presented.strip()
    return presented if scheme.lower() == "bearer" and presented else None


class StoredKeys:
    """The keys made by ``nnserve keys create``: this process's copy of Redis's table while the
    subscription to its changes is up, else Redis itself."""

    def __init__(self, r: redis.Redis, connect: Callable[[], redis.Redis]):
        self._redis = r
        # (whether any key was ever stored, the access of each active one by digest), swapped whole.
        self._state: tuple[bool, dict[bytes, Access]] = (False, {})
        self._subscription = Subscription(connect, store.KEY_EVENTS, self, "API keys")

    def lookup(self, key_digest: bytes | None) -> tuple[bool, Access | None]:
        """``(whether any key was ever stored, the access of the active key with this digest, or None)``."""
        self._subscription.ensure_started()
        if self._subscription.listening:
            stored, table = self._state
            found = table.get(key_digest) if key_digest is not None else None
            if found is not None or key_digest is None:
                return stored, found
        # Not listening, or a key this copy does not know: perhaps made a moment ago, so Redis decides. (The
        # copy is not updated from here: a revocation heard meanwhile could be undone.)
        stored, record = store.find_api_key(self._redis, key_digest.hex() if key_digest is not None else None)
        return stored, _active(record)

    @property
    def listening(self) -> bool:
        return self._subscription.listening

    # The subscription's listener: every message is the digest of a key created or revoked.

    def on_subscribed(self) -> None:
        self._reload()

    def on_message(self, data: bytes) -> None:
        # Drop the key at once (a revoked one must not pass while the table reloads), then reload.
        self._state[1].pop(bytes.fromhex(data.decode()), None)
        self._reload()

    def on_lost(self) -> None:
        """Nothing to drop: lookups go to Redis until the table is loaded again."""

    def _reload(self) -> None:
        records = store.api_keys(self._redis)
        table = {bytes.fromhex(d): access for d, record in records.items() if (access := _active(record)) is not None}
        self._state = (bool(records), table)


def _active(record: dict[str, Any] | None) -> Access | None:
    if record is None or record.get("revoked_at") is not None:
        return None
    return Access.of(record["tenant"], record["scopes"])


class Keys:
    """Every key the API accepts: those of ``NNSERVE_API_KEYS`` and the stored ones."""

    def __init__(self, configured: Iterable[SecretStr], stored: StoredKeys):
        self._configured: dict[bytes, Access] = {}
        for key in configured:
            key_digest = digest(key.get_secret_value())
            scopes = key.scopes if isinstance(key, ApiKey) else ALL
            self._configured[key_digest] = Access.of(tenant_of(key_digest), scopes)
        self.stored = stored

    def identify(self, header: str | None) -> Access:
        """The access an ``Authorization`` header gives: its key's, or OPEN while no key is needed.
        Raises Unauthorized for a missing or unknown key when keys are needed."""
        presented = bearer(header)
        key_digest = digest(presented) if presented is not None else None
        found = self._configured.get(key_digest) if key_digest is not None else None
        if found is not None:
            return found
        any_stored, found = self.stored.lookup(key_digest)
        if found is not None:
            return found
        if not self._configured and not any_stored:
            return OPEN
        if presented is None:
            raise Unauthorized("this API needs an API key: send the header 'Authorization: Bearer <key>'")
        raise Unauthorized("the API key is not valid", error="invalid_token")


def authorize(access: Access, endpoint: str, method: str) -> None:
    """Raises Forbidden, naming the scopes needed and held, when ``access`` may not call ``endpoint``."""
    needed = needs(endpoint, method)
    if not access.allows(needed):
        held = " and ".join(f"'{scope}'" for scope in SCOPES if scope in access.scopes)
        raise Forbidden(
            f"{method} {request.path} needs an API key with the {' or '.join(repr(s) for s in needed)} scope; "
            f"this key has {held}",
            needed,
        )


def keys_of(settings: Settings, r: redis.Redis, connect: Callable[[], redis.Redis]) -> Keys:
    """The configured keys and the stored ones (read through ``r``; ``connect`` makes the subscriber's client)."""
    return Keys(settings.api_keys, StoredKeys(r, connect))


def install(app: Flask, keys: Keys) -> None:
    """Identify the key of every request to the versioned API and check its scope before the route runs."""

    @app.before_request
    def authenticate() -> None:
        if not protects(request.path):
            return
        access = keys.identify(request.headers.get("Authorization"))
        if access is not OPEN:
            g.tenant = access.tenant
        if request.endpoint is not None:  # else a 404 or 405 follows
            authorize(access, request.endpoint, request.method)


def create_key(r: redis.Redis, scopes: Iterable[str], tenant: str | None = None) -> tuple[str, dict[str, Any]]:
    """Make and store a key with ``scopes`` for ``tenant`` (default: a new tenant, named from the key as
    those of NNSERVE_API_KEYS are); returns the secret, which is not kept anywhere, and the stored record."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_digest = digest(secret)
    record = {
        "id": store.new_id("key"),
        "tenant": tenant or tenant_of(key_digest),
        "scopes": [scope for scope in SCOPES if scope in set(scopes)],
        "created_at": store.now(),
        "revoked_at": None,
    }
    store.save_api_key(r, key_digest.hex(), record)
    return secret, record
