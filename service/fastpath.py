"""A fast lane for the hottest request: a prediction from a model already in this process's cache.

For a one-row prediction Flask's request context, routing and response objects cost more than
the prediction itself. This WSGI layer, in front of the Flask app, answers only the plain
success case of a predict route in any dialect — ``POST /v1/models/{id}/predict``, TF Serving's
``POST /v1/models/{id}:predict`` and MLflow's ``POST /v1/models/{id}/invocations`` — when

- the body is of a known length within the body limit,
- the model is in this process's cache (so no Redis call) and the caller's tenant owns it; a
  reference by name (``NAME``, ``NAME@ALIAS``, ``NAME@N``) is resolved from this process's registry
  state (``routing.References``), so it too costs no Redis call once warm,
- the caller's key has a scope the route needs,
- no predict rate limit is set (counting needs Redis and the route's hook),

and it answers it with the functions the Flask route uses: ``Keys.identify`` and ``auth.needs``,
the dialect's ``read`` and ``write`` (``dialects``), ``Monitoring.predict`` (``Entry.prediction``,
counted per model). Everything else — another route, a reference that is not an id, a cache miss,
a missing, wrong or under-scoped key, any error in the body — goes to the Flask app unchanged (with
the body put back), so each error has exactly one rendering: the route's.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import orjson
import redis

from nnserve import engine

from .auth import Keys, needs
from .cache import ModelCache
from .dialects import Dialect, mlflow, paths, tfserving, v1
from .errors import ApiError
from .monitoring import ROUTE_KEY, Monitoring
from .registry import MODEL_ID_PREFIX
from .routing import References, Shadows

VERSION_HEADER = "X-Model-Version"
"""As ``routes.models.VERSION_HEADER`` (the routes import this module's layer, not the other way)."""
ROUTING_ENVIRON = "HTTP_X_ROUTING_KEY"
"""``X-Routing-Key`` (``routes.models.ROUTING_HEADER``) as WSGI names it."""


@dataclass(frozen=True)
class Lane:
    """A predict route the fast path answers: its path (group 1 the model reference; any other group set
    sends the request to Flask), its Flask rule (the request metrics' label), endpoint (whose scopes
    the key must have) and dialect."""

    path: re.Pattern[str]
    route: str
    endpoint: str
    dialect: Dialect


LANES = (
    Lane(re.compile(r"/v1/models/([^/]+)/predict"), "/v1/models/<model_id>/predict", "models.predict", v1),
    Lane(paths.TF_SERVING, "/v1/models/<name>:predict", "tfserving.predict", tfserving),
    Lane(paths.MLFLOW, "/v1/models/<ref>/invocations", "mlflow.invocations", mlflow),
)


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
        self.needed = {lane.endpoint: needs(lane.endpoint, "POST") for lane in LANES}
        self.max_body_bytes = max_body_bytes
        self.enabled = enabled
        self.references = references
        self.shadows = shadows

    def __call__(self, environ, start_response):
        if self.enabled and environ["REQUEST_METHOD"] == "POST":
            path = environ.get("PATH_INFO", "")
            for lane in LANES:
                match = lane.path.fullmatch(path)
                if match is None:
                    continue
                if not any(match.groups()[1:]):
                    answered = self._answer(environ, lane, match.group(1))
                    if answered is not None:
                        body, version = answered
                        environ[ROUTE_KEY] = lane.route
                        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                        if version is not None:
                            headers.append((VERSION_HEADER, str(version)))
                        start_response("200 OK", headers)
                        return [body]
                break
        return self.app(environ, start_response)

    def _answer(self, environ, lane: Lane, ref: str) -> tuple[bytes, int | None] | None:
        """The response body and the version that answered, or None to leave the request to Flask."""
        tenant = self._tenant(environ, lane.endpoint)
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
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= self.max_body_bytes:
            return None
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, should the request go there after all
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        try:
            x, form = lane.dialect.read(raw, mimetype, entry)
            # A failure is left to the route, which counts it among the model's errors.
            prediction = self.monitoring.predict(entry, x, count_failure=False)
        except (ApiError, engine.SpecError):
            return None
        self.monitoring.cache_lookup(hit=True)
        if resolved is not None and resolved.shadow_id is not None and self.shadows is not None:
            self.shadows.submit(resolved, tenant, x, prediction)
        body = orjson.dumps(lane.dialect.write(entry, prediction, form), option=orjson.OPT_SERIALIZE_NUMPY)
        return body, entry.version

    def _tenant(self, environ, endpoint: str) -> str | None:
        """The caller's tenant when its key may call ``endpoint``; None to leave the 401, 403 or 503 to Flask."""
        try:
            access = self.keys.identify(environ.get("HTTP_AUTHORIZATION"))
        except (ApiError, redis.exceptions.RedisError):
            return None
        return access.tenant if access.allows(self.needed[endpoint]) else None
