"""Slow clients as an attacker runs them (slowloris), and the normal predictions they must not slow down.

Used by ``tests/e2e/test_slow_clients.py`` and ``bench/load.py --slow-clients``.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import requests

KINDS = ("headers", "body")
"""``headers``: a request's first header lines, then nothing. ``body``: all the headers of a
1,000-byte body and its first 5 bytes, then nothing."""


def stalled_request(kind: str, path: str, host: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    if kind == "headers":
        return head.encode()
    if kind == "body":
        return f"{head}Content-Length: 1000\r\n\r\n".encode() + b'{"inp'
    raise ValueError(f"kind must be one of {KINDS}; received {kind!r}")


class SlowClients:
    """``count`` connections to ``url`` that each send the start of a ``kind`` request to ``path`` and stall.

    With ``reopen``, a thread reconnects any the server closes (every ``reopen`` seconds), as a real
    attacker does; otherwise ``still_open()`` tells how many the server has kept."""

    def __init__(self, url: str, path: str, kind: str, count: int, reopen: float | None = None):
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)
        self.request = stalled_request(kind, path, parts.netloc)
        self.count = count
        self.sockets: list[socket.socket] = []
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reopen, args=(reopen,), daemon=True) if reopen else None

    def __enter__(self) -> SlowClients:
        self.sockets = [self._connect() for _ in range(self.count)]
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sock in self.sockets:
            sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10)
        sock.sendall(self.request)
        sock.setblocking(False)
        return sock

    def still_open(self) -> int:
        """How many of the connections the server has neither closed nor answered."""
        return sum(_open(sock) for sock in self.sockets)

    def _reopen(self, every: float) -> None:
        while not self._stop.wait(every):
            for i, sock in enumerate(self.sockets):
                if not _open(sock):
                    sock.close()
                    try:
                        self.sockets[i] = self._connect()
                        self.reopened += 1
                    except OSError:
                        pass  # the server is not accepting: try again next round


def _open(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True  # nothing to read and no end of file: the server still waits on us
    except OSError:
        return False  # reset
    return False  # an answer or the end of file: the server is done with it


def predict_latencies(
    url: str,
    model_id: str,
    clients: int,
    requests_each: int | None = None,
    seconds: float | None = None,
    give_up_after: int | None = None,
) -> tuple[list[float], int]:
    """``clients`` threads, each with its own keep-alive session, predicting one iris row again and again
    (``requests_each`` times, or for ``seconds``; a client stops after ``give_up_after`` failures): the
    latencies of the 200 answers, and how many calls failed (another status, or no answer within 5 s)."""
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds if seconds is not None else None

    def client() -> None:
        session = requests.Session()
        done = mine_failed = 0
        while (
            (requests_each is None or done < requests_each)
            and (deadline is None or time.monotonic() < deadline)
            and (give_up_after is None or mine_failed < give_up_after)
        ):
            done += 1
            start = time.monotonic()
            try:
                response = session.post(
                    f"{url}/v1/models/{model_id}/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}, timeout=5
                )
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
                session.close()
                session = requests.Session()
            mine_failed += not ok
            with lock:
                if ok:
                    latencies.append(time.monotonic() - start)
                else:
                    failed[0] += 1
        session.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(latencies), failed[0]


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of sorted values, nearest rank; infinity when there are none."""
    if not sorted_values:
        return float("inf")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
