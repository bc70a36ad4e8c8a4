"""Live job progress as Server-Sent Events, for ``GET /v1/jobs/{id}/events``.

A stream sends one ``epoch`` event per finished epoch (``id:`` the epoch number, ``data:`` its
logged values), then one ``status`` event when the job ends (``{status, error?, model_id}``), and
closes. It starts after the epoch named by ``Last-Event-ID`` (0: from the first), so a client that
connects late gets the epochs already done, and one that reconnects gets no repeats.

Where the events come from: the job's history list in Redis, which the worker appends to after
every epoch (``store.record_epoch``). The stream polls it every ``POLL_INTERVAL`` seconds, reading
only the new entries and the job's status in one round trip, on a pooled connection it gives back
between polls. Pub/sub would deliver an epoch sooner, but needs a connection held per stream (or a
subscriber thread per process), a publish from the worker, and the list anyway for late clients;
at two cheap reads a second a stream, polling costs Redis little. After a retry the history is cut
back to its checkpoint and the epochs are recorded again with the same values (training resumes
bit-identically), so a stream simply waits until the list is longer than what it has sent.

Each open stream holds a gunicorn thread (gthread). So a process serves at most
``Settings.stream_limit`` of them, fewer than its threads, and answers more with 503 and
``Retry-After``: streams can never take every thread from the other routes. A stream also
ends after ``stream_lifetime`` seconds (EventSource reconnects with ``Last-Event-ID``) and sends a
comment every ``stream_heartbeat`` seconds while idle, so proxies keep it open and a client that
went away is noticed at the next write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import redis

from . import store
from .errors import Unavailable
from .lifecycle import FINISHED, SweepStatus

ACTIVE_SWEEP = frozenset({SweepStatus.running})

POLL_INTERVAL = 0.5
"""Seconds between reads of a job's history by an open stream."""
RECONNECT_MS = 2000
"""The ``retry:`` a stream asks EventSource to wait before reconnecting, in milliseconds."""


def event(kind: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


class Streams:
    """The event streams of one API process: at most ``limit`` open at once."""

    def __init__(self, limit: int, lifetime: float, heartbeat: float):
        self.limit, self.lifetime, self.heartbeat = limit, lifetime, heartbeat
        self._slots = threading.BoundedSemaphore(limit) if limit else None

    def open(self, r: redis.Redis, job_id: str, after: int) -> Stream:
        """A stream of the job's events after epoch ``after``; raises Unavailable (503) when this
        process already serves ``limit`` streams."""
        if self._slots is None or not self._slots.acquire(blocking=False):
            raise Unavailable(
                f"this server process already streams {self.limit} jobs' events (NNSERVE_API_STREAMS); "
                f"try again shortly, or poll GET /v1/jobs/{job_id}",
                headers={"Retry-After": "5"},
            )
        return Stream(self, r, job_id, after)

    def open_sweep(self, r: redis.Redis, sweep_id: str, read: Callable[[], dict[str, Any] | None]) -> SweepStream:
        """A stream of a sweep's events (``read()``: the sweep as ``service.sweeps.summary`` shows it, None
        once deleted); raises Unavailable (503) as ``open`` does: sweeps' streams share the slots."""
        if self._slots is None or not self._slots.acquire(blocking=False):
            raise Unavailable(
                f"this server process already streams {self.limit} jobs' or sweeps' events (NNSERVE_API_STREAMS); "
                f"try again shortly, or poll GET /v1/sweeps/{sweep_id}",
                headers={"Retry-After": "5"},
            )
        return SweepStream(self, r, sweep_id, read)

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()


class Stream:
    """The response body of one stream. WSGI servers call ``close()`` when it ends or the client
    is gone, even if it never started; that gives its slot back, once."""

    def __init__(self, streams: Streams, r: redis.Redis, job_id: str, after: int):
        self._streams, self._r, self._job_id, self._sent = streams, r, job_id, after
        self._open = True
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[bytes]:
        yield f"retry: {RECONNECT_MS}\n\n".encode()
        deadline = time.monotonic() + self._streams.lifetime
        last_write = time.monotonic()
        while True:
            try:
                epochs, job = store.history_since(self._r, self._job_id, self._sent)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                return  # the client reconnects with Last-Event-ID once Redis is back
            for logs in epochs:
                self._sent += 1
                yield event("epoch", {"epoch": self._sent, **logs}, self._sent)
                last_write = time.monotonic()
            if job["status"] in FINISHED:
                done = {"status": job["status"], "model_id": job["model_id"]}
                if job["error"] is not None:
                    done["error"] = job["error"]
                yield event("status", done)
                return
            if time.monotonic() - last_write >= self._streams.heartbeat:
                yield b": keep-alive\n\n"
                last_write = time.monotonic()
            if time.monotonic() >= deadline:
                return
            time.sleep(POLL_INTERVAL)

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                self._streams._release()


class SweepStream(Stream):
    """A sweep's events, by polling the sweep (``read``) every POLL_INTERVAL seconds: a ``trial`` event
    whenever a trial's row changes (it was queued, started, reported an epoch, was pruned or ended; the
    row as ``GET /v1/sweeps/{id}`` shows it), a ``best`` event whenever the best so far changes, and a
    ``status`` event (``{status, best, winner}``) when the sweep ends, then the stream closes. A client
    that connects late or again gets every trial's current row first."""

    def __init__(self, streams: Streams, r: redis.Redis, sweep_id: str, read: Callable[[], dict[str, Any] | None]):
        super().__init__(streams, r, sweep_id, 0)
        self._read = read

    def __iter__(self) -> Iterator[bytes]:
        yield f"retry: {RECONNECT_MS}\n\n".encode()
        deadline = time.monotonic() + self._streams.lifetime
        last_write = time.monotonic()
        rows: dict[int, tuple[Any, ...]] = {}
        best: Any = None
        while True:
            try:
                sweep = self._read()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                return  # the client reconnects once Redis is back
            if sweep is None:
                return
            for row in sweep["trials"]:
                seen = (row["status"], row["epochs"], row["objective"])
                if rows.get(row["number"]) != seen:
                    rows[row["number"]] = seen
                    yield event("trial", row)
                    last_write = time.monotonic()
            if sweep["best"] != best:
                best = sweep["best"]
                yield event("best", best)
            if sweep["status"] not in ACTIVE_SWEEP:
                yield event("status", {"status": sweep["status"], "best": sweep["best"], "winner": sweep.get("winner")})
                return
            if time.monotonic() - last_write >= self._streams.heartbeat:
                yield b": keep-alive\n\n"
                last_write = time.monotonic()
            if time.monotonic() >= deadline:
                return
            time.sleep(POLL_INTERVAL)
