"""The process supervisor of ``nnserve up`` and ``nnserve api``: children started together, stopped together.

- Stopping: SIGINT, SIGTERM or SIGHUP (a closed terminal), or a child that may not be restarted
  exiting, sends every child SIGTERM, Redis last, after the others are gone.
- Dying: each child is started with a parent-death signal (Linux's ``PR_SET_PDEATHSIG``), so a
  supervisor killed outright (``kill -9``, the OOM killer) takes its children with it instead of
  leaving a Redis, a gunicorn and workers running on ports and data that a new ``nnserve up`` needs.
- Restarting: a restartable child that exits is started again after a delay that doubles with each
  exit in a row (``RESTART_DELAY`` up to ``RESTART_DELAY_CAP``); one that then runs for
  ``STABLE_AFTER`` seconds starts the count afresh. A child crashing at start-up thus costs a
  retry every half a minute, not five a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

STOP_GRACE = 15.0
"""Seconds children get to stop after SIGTERM before they are killed."""
RESTART_DELAY = 0.5
"""Seconds before a restartable child that exited is started again, the first time."""
RESTART_DELAY_CAP = 30.0
"""The longest wait before a restart, in seconds, however often the child has exited."""
STABLE_AFTER = 60.0
"""Seconds a restarted child must run before its exits stop counting as a series."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(host: str, port: int, option: str) -> None:
    """Exit with one line naming ``option`` when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn and Redis bind
        try:
            sock.bind((host, port))
        except OSError as error:
            raise SystemExit(
                f"nnserve: cannot listen on {host}:{port} ({error.strerror}); stop what uses it or choose another {option}"
            ) from None


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nnserve: nothing answered on port {port} within {timeout:.0f} s")


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive SIGTERM when ``parent`` dies."""

    def arm() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: children outlive a killed supervisor there
            return
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    restart: bool
    stdout: IO[bytes] | None
    last: bool
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restart_at: float | None = field(default=None)

    def launch(self) -> None:
        # Own sessions: a terminal's Ctrl-C or hang-up reaches only the supervisor, which stops the
        # children in order.
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self.stdout,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 (the supervisor runs no threads)
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Children started together and stopped together (see the module docstring)."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.cleanup: list[Callable[[], None]] = []
        self.stopping = False

    def __enter__(self) -> Supervisor:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for step in reversed(self.cleanup):
            step()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        restart: bool = False,
        stdout: IO[bytes] | None = None,
        last: bool = False,
    ) -> Child:
        child = Child(name, command, env, restart, stdout, last)
        child.launch()
        self.children.append(child)
        return child

    def poll(self) -> int | None:
        """Look after the children once: restart those that are due; returns an exit code when one that
        may not be restarted has exited (the supervisor then stops), else None."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.launch()
                continue
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            if not child.restart:
                print(f"nnserve: {child.name} exited ({code}); stopping", file=sys.stderr, flush=True)
                return code or 1
            if now - child.started_at >= STABLE_AFTER:
                child.exits_in_a_row = 0
            delay = min(RESTART_DELAY * 2**child.exits_in_a_row, RESTART_DELAY_CAP)
            child.exits_in_a_row += 1
            child.restart_at = now + delay
            print(f"nnserve: {child.name} exited ({code}); restarting it in {delay:.1f} s", file=sys.stderr, flush=True)
        return None

    def wait(self) -> int:
        """Until a stop signal, or a child that may not be restarted exits; returns the exit code."""
        while not self.stopping:
            code = self.poll()
            if code is not None:
                return code
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        self.stopping = True
        for group in ([c for c in self.children if not c.last], [c for c in self.children if c.last]):
            for child in group:
                child.restart_at = None
                if child.running():
                    assert child.process is not None
                    child.process.terminate()
            deadline = time.monotonic() + STOP_GRACE
            for child in group:
                if child.process is None:
                    continue
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
