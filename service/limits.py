"""Rate limits: job submissions and predict calls per API key (per client address without keys).

Counted in Redis (``store.count_request``: one script, one round trip), so every API process
and replica shares one count. The window slides: at most ``count`` requests in any span of
``seconds``, so no burst across a window's edge can reach twice the count. Every response of a
limited route says where its caller stands (the IETF RateLimit header fields):
``RateLimit-Limit`` (the count), ``RateLimit-Remaining`` (requests left now) and
``RateLimit-Reset`` (seconds until the window frees a request); a 429 adds ``Retry-After``. A
limit that is not set installs nothing: its route makes no Redis call for it.

The other limits are checked where their data is: body size by Flask (413), dataset shape in
``data``, model size and compute budget in ``specs``, jobs in flight per tenant in
``store.create_job``, the time a job may run by RQ in the worker.
"""

from __future__ import annotations

import math

import redis
from flask import Flask, Response, g, request

from . import store
from .context import services
from .errors import TooManyRequests
from .settings import PERIODS, Settings

LIMITED = {
    "jobs.create": ("jobs", "rate_limit_jobs", "job submissions"),
    "sweeps.create": ("jobs", "rate_limit_jobs", "job submissions"),  # a sweep submits jobs
    "models.predict": ("predict", "rate_limit_predict", "predict calls"),
    # The same predictions, over the Open Inference Protocol, TF Serving's API and MLflow's: one count.
    "v2.infer": ("predict", "rate_limit_predict", "predict calls"),
    "tfserving.predict": ("predict", "rate_limit_predict", "predict calls"),
    "mlflow.invocations": ("predict", "rate_limit_predict", "predict calls"),
}
"""endpoint: (scope in the Redis key, the setting, what the message calls the requests)."""

PERIOD_NAMES = {seconds: name for name, seconds in PERIODS.items()}


def client() -> str:
    """Whom the limits count: the API key's tenant, else the client's address."""
    tenant = g.get("tenant")
    return tenant if tenant is not None else f"ip:{request.remote_addr}"


def install(app: Flask, settings: Settings) -> None:
    """Check the configured rate limits before their routes run (nothing to do when none is set)."""
    limits = {
        endpoint: (scope, getattr(settings, field), field, what)
        for endpoint, (scope, field, what) in LIMITED.items()
        if getattr(settings, field) is not None
    }
    if not limits:
        return

    @app.before_request
    def rate_limit() -> None:
        limit = limits.get(request.endpoint or "")
        if limit is None:
            return
        scope, rate, field, what = limit
        try:
            allowed, count, reset = store.count_request(services().redis, scope, client(), rate.count, rate.seconds)
        except redis.exceptions.OutOfMemoryError:
            # A full Redis refuses the counter's write; predictions still work then, so let them through
            # uncounted rather than answer 507 to a request that stores nothing.
            return
        wait = max(1, math.ceil(reset))
        g.rate_limit = {
            "RateLimit-Limit": str(rate.count),
            "RateLimit-Remaining": str(max(0, rate.count - count)),
            "RateLimit-Reset": str(wait),
        }
        if not allowed:
            period = PERIOD_NAMES.get(rate.seconds, f"{rate.seconds} s")
            per = "API key" if "tenant" in g else "client address"
            raise TooManyRequests(
                f"rate limit reached: at most {rate.count} {what} per {period} per {per} "
                f"(NNSERVE_{field.upper()}); try again in {wait} s",
                retry_after=wait,
            )

    @app.after_request
    def rate_limit_headers(response: Response) -> Response:
        # Also on errors and on the 429 itself: Flask runs after_request on every response it renders.
        response.headers.update(g.get("rate_limit", {}))
        return response
