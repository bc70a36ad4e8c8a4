"""An alias kept for existing scripts: the client now lives outside the server, in ``nnserve.client``.

Write ``from nnserve import Client``; this module re-exports the same objects and will go away.
"""

from nnserve.client import *  # noqa: F403
from nnserve.client import __all__  # noqa: F401
