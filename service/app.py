"""The app factory: ``create_app(settings)`` builds the Flask app and everything it hangs on.

Nothing happens at import time: no settings read, no Redis connection, no file opened.
gunicorn calls ``service.app:create_app()`` in each worker process.
"""

from __future__ import annotations

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from redis import Redis
from werkzeug.middleware.proxy_fix import ProxyFix

from . import auth, errors, limits, logs, store
from .cache import ModelCache, ready_entry
from .context import Services
from .cors import Cors
from .events import Streams
from .fastpath import PredictFastPath
from .monitoring import Monitoring
from .queue import make_queue
from .routing import References, Shadows
from .settings import Settings


class OrderedJSON(DefaultJSONProvider):
    sort_keys = False


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__, static_folder=None)  # service/static is the dashboard's; its blueprint serves it
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Our answers are built by ``respond`` (orjson); Flask's own JSON provider serves its test client,
    # which should send a body's keys in the order they were written, as any HTTP client does.
    app.json = OrderedJSON(app)
    if settings.forwarded_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.forwarded_hops)  # type: ignore[method-assign]

    connection = store.connect(settings)

    def subscriber() -> Redis:  # each pub/sub listener (model cache, stored keys) holds a client of its own
        return store.connect(settings)

    monitoring = Monitoring(app, settings)
    cache = ModelCache(subscriber, settings.model_cache_size, on_lookup=monitoring.cache_lookup)
    app.extensions["nnserve"] = services = Services(
        settings=settings,
        redis=connection,
        queue=make_queue(connection),
        cache=cache,
        monitoring=monitoring,
        streams=Streams(settings.stream_limit, settings.stream_lifetime, settings.stream_heartbeat),
        keys=auth.keys_of(settings, connection, subscriber),
        references=References(subscriber, settings.model_cache_size),
        shadows=Shadows(subscriber, lambda r, owner, model_id: cache.get(model_id, lambda: ready_entry(r, model_id))),
    )

    from .routes import dashboard, datasets, jobs, mlflow, models, ops, registry, sweeps, tfserving, v2

    for blueprint in (
        datasets.bp,
        jobs.bp,
        sweeps.bp,
        models.bp,
        registry.bp,
        tfserving.bp,
        mlflow.bp,
        v2.bp,
        ops.bp,
        dashboard.bp,
    ):
        app.register_blueprint(blueprint)

    # Keys first: the rate limits count per key.
    auth.install(app, services.keys)
    limits.install(app, settings)
    errors.register(app)

    # The WSGI stack, outermost first: request ids; CORS (when origins are set); request metrics;
    # the predict fast path, which answers cache hits without entering Flask and leaves everything
    # else to it (off while a predict rate limit must be counted); (ProxyFix); Flask.
    fast = PredictFastPath(
        app.wsgi_app,
        services.cache,
        monitoring,
        services.keys,
        settings.max_body_bytes,
        references=services.references,
        shadows=services.shadows,
        enabled=settings.rate_limit_predict is None,
    )
    outer = monitoring.wrap(fast)
    if settings.cors_origins:
        outer = Cors(outer, settings.cors_origins)
    # Flask's documented way to wrap its WSGI callable in middleware.
    app.wsgi_app = logs.RequestIds(outer)  # type: ignore[method-assign]
    return app
