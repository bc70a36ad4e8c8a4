"""A running service for tests that talk to it as a user would: ``nnserve api`` (gunicorn) and one
``nnserve worker`` as real processes on the session's redis-server, shared by a module's tests.

Starting gunicorn and a worker costs a few seconds, so modules whose tests do not disturb each
other (each works with its own ids) share one stack instead of starting one per test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import redis as redis_lib

from tests.conftest import Processes


@contextlib.contextmanager
def stack(redis_url: str, tmp: Path, workers: int = 1, flush: bool = True, **settings) -> Iterator[str]:
    """The API's base URL while the API (with ``settings``, as ``NNSERVE_*`` variables) and ``workers``
    workers run; on an emptied Redis unless ``flush`` is false (another stack's API beside this one)."""
    if flush:
        client = redis_lib.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
    processes = Processes(redis_url, tmp)
    try:
        url = processes.api(api_workers=1, api_threads=8, **settings)
        for _ in range(workers):
            processes.worker()
        yield url
    finally:
        processes.stop_all()
