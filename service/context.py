"""What a request runs with: the app's services and the tenant it acts for (helpers below the routes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, g

from . import store

if TYPE_CHECKING:
    from .app import Services


def services() -> Services:
    """The store, queue, cache and settings of the app handling this request (``app.extensions``)."""
    services: Services = current_app.extensions["nnserve"]
    return services


def tenant() -> str:
    """Whose records this request may see: the API key's tenant (``g.tenant``, set by ``auth``), else ``public``."""
    who: str = g.get("tenant", store.PUBLIC)
    return who
