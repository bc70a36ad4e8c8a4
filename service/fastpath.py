"""A fast lane for the hottest request: a prediction from a model already in this process's cache.

For a one-row prediction Flask's request context, routing and response objects cost more than
the prediction itself. This WSGI layer, in front of the Flask app, answers only the plain
success case, ``POST /v1/models/{id}/predict`` when

- the body is JSON of a known length within the body limit,
- the model is in this process's cache (so no Redis call) and the caller's tenant owns it; a
  reference by name (``NAME``, ``NAME@ALIAS``, ``NAME@N``) is resolved from this process's registry
  state (``routing.References``), so it too costs no Redis call once warm,
- the caller's key has a scope the route needs,
- no predict rate limit is set (counting needs Redis and the route's hook),

and it answers it with the functions the Flask route uses: ``Keys.identify`` and ``auth.needs``,
``parsing.inputs_array``, ``Monitoring.predict`` (``Entry.prediction``, counted per model). Everything
else — another route, a cache miss, a missing, wrong or under-scoped key, any error in the body — goes
to the Flask app unchanged (with the body put back), so each error has exactly one rendering: the route's.
"""

from __future__ import annotations

import io
import re

import orjson
import redis

from nnserve import engine

from .auth import Keys, needs
from .cache import ModelCache
from .errors import ApiError, Invalid
from .monitoring import ROUTE_KEY, Monitoring
from .parsing import inputs_array
from .registry import MODEL_ID_PREFIX
from .routing import References, Shadows

PREDICT = re.compile(r"/v1/models/([^/]+)/predict")
ROUTE = "/v1/models/<model_id>/predict"
"""The Flask rule this lane stands in for, as the request metrics label it."""
VERSION_HEADER = "X-Model-Version"
"""As ``routes.models.VERSION_HEADER`` (the routes import this module's layer, not the other way)."""
ROUTING_ENVIRON = "HTTP_X_ROUTING_KEY"
"""``X-Routing-Key`` (``routes.models.ROUTING_HEADER``) as WSGI names it."""
ENDPOINT = "models.predict"
"""Its endpoint, whose scopes the key must have."""


class PredictFastPath:
    def __init__(
        self,
        app,
        cache: ModelCache,
        monitoring: Monitoring,
        keys: Keys,
        max_body_bytes: int,
        enabled: bool = True,
        references: References | None = None,
        shadows: Shadows | None = None,
    ):
        self.app = app
        self.cache = cache
        self.monitoring = monitoring
        self.keys = keys
        self.needed = needs(ENDPOINT, "POST")
        self.max_body_bytes = max_body_bytes
        self.enabled = enabled
        self.references = references
        self.shadows = shadows

    def __call__(self, environ, start_response):
        if self.enabled and environ["REQUEST_METHOD"] == "POST":
            match = PREDICT.fullmatch(environ.get("PATH_INFO", ""))
            if match is not None:
                answered = self._answer(environ, match.group(1))
                if answered is not None:
                    body, version = answered
                    environ[ROUTE_KEY] = ROUTE
                    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                    if version is not None:
                        headers.append((VERSION_HEADER, str(version)))
                    start_response("200 OK", headers)
                    return [body]
        return self.app(environ, start_response)

    def _answer(self, environ, ref: str) -> tuple[bytes, int | None] | None:
        """The response body and the version that answered, or None to leave the request to Flask."""
        tenant = self._tenant(environ)
        if tenant is None:
            return None
        resolved = None
        if self.references is not None and not ref.startswith(MODEL_ID_PREFIX):
            key = environ.get(ROUTING_ENVIRON) or environ.get("HTTP_AUTHORIZATION") or environ.get("REMOTE_ADDR", "")
            resolved = self.references.resolve_cached(tenant, ref, key)
            if resolved is None:
                return None
            ref = resolved.model_id
        entry = self.cache.peek(ref)
        if entry is None or entry.tenant != tenant:
            return None
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= self.max_body_bytes:
            return None
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, should the request go there after all
        try:
            # A failure is left to the route, which counts it among the model's errors.
            x = inputs_array(orjson.loads(raw))
            response = self.monitoring.predict(entry, x, count_failure=False)
        except (orjson.JSONDecodeError, Invalid, engine.SpecError):
            return None
        self.monitoring.cache_lookup(hit=True)
        if entry.version is not None:
            response["model_version"] = entry.version
        if resolved is not None and resolved.shadow_id is not None and self.shadows is not None:
            self.shadows.submit(resolved, tenant, x, response)
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), entry.version

    def _tenant(self, environ) -> str | None:
        """The caller's tenant when its key may predict; None to leave the 401, 403 or 503 to Flask."""
        try:
            access = self.keys.identify(environ.get("HTTP_AUTHORIZATION"))
        except (ApiError, redis.exceptions.RedisError):
            return None
        return access.tenant if access.allows(self.needed) else None
