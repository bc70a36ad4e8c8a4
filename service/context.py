"""What a request runs with: the app's services and the tenant it acts for (helpers below the routes)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g
from redis import Redis
from rq import Queue

from . import store
from .auth import Keys
from .cache import ModelCache
from .events import Streams
from .monitoring import Monitoring
from .routing import References, Shadows
from .settings import Settings


@dataclass
class Services:
    """What the routes use, built by ``create_app`` and found at ``app.extensions["nnserve"]``."""

    settings: Settings
    redis: Redis
    queue: Queue
    cache: ModelCache
    monitoring: Monitoring
    streams: Streams
    keys: Keys
    references: References
    shadows: Shadows


def services() -> Services:
    """The store, queue, cache and settings of the app handling this request (``app.extensions``)."""
    services: Services = current_app.extensions["nnserve"]
    return services


def tenant() -> str:
    """Whose records this request may see: the API key's tenant (``g.tenant``, set by ``auth``), else ``public``."""
    who: str = g.get("tenant", store.PUBLIC)
    return who
