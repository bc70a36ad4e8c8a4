"""nnserve: train neural networks and serve their predictions over HTTP.

Everything installed lives under this one name, in layers that import only downwards:
``nnserve.engine`` (the NumPy engine) ← ``nnserve.service`` (the API, the Redis store, the queue)
← ``nnserve.worker`` (the RQ job functions) ← ``nnserve.cli`` (the ``nnserve`` command). The Python
client, ``nnserve.client``, stands apart: it speaks HTTP and imports neither the service nor the worker.

    from nnserve import Client
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

__version__ = version("nnserve")
"""The installed distribution's version: pyproject.toml is its one source."""

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # The client is imported on first use, so ``import nnserve`` (done by every server process on
    # its way to nnserve.service) costs nothing more.
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'nnserve' has no attribute {name!r}")
