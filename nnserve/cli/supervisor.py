"""The process supervisor of ``nnserve up`` and ``nnserve api``: children started together, stopped together."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

STOP_GRACE = 15.0
"""Seconds children get to stop after SIGTERM before they are killed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nnserve: nothing answered on port {port} within {timeout:.0f} s")


class Supervisor:
    """Children started together and stopped together: on SIGINT/SIGTERM, or when one that is
    not restartable exits, every child gets SIGTERM (Redis last, after the others are gone)."""

    def __init__(self):
        self.children: list[dict] = []
        self.cleanup: list = []
        self.stopping = False

    def __enter__(self) -> Supervisor:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for step in reversed(self.cleanup):
            step()

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def start(
        self, name: str, command: list[str], env: dict[str, str], restart: bool = False, stdout=None, last=False
    ) -> None:
        # Own sessions: a terminal's Ctrl-C reaches only us, and we stop the children in order.
        process = subprocess.Popen(command, env=env, stdout=stdout, start_new_session=True)
        self.children.append(
            {
                "name": name,
                "command": command,
                "env": env,
                "restart": restart,
                "stdout": stdout,
                "last": last,
                "process": process,
            }
        )

    def wait(self) -> int:
        """Until a signal, or a child that may not be restarted exits; returns the exit code."""
        while not self.stopping:
            for child in self.children:
                code = child["process"].poll()
                if code is None:
                    continue
                if child["restart"]:
                    print(f"nnserve: {child['name']} exited ({code}); restarting it", file=sys.stderr, flush=True)
                    child["process"] = subprocess.Popen(
                        child["command"], env=child["env"], stdout=child["stdout"], start_new_session=True
                    )
                else:
                    print(f"nnserve: {child['name']} exited ({code}); stopping", file=sys.stderr, flush=True)
                    return code or 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        self.stopping = True
        for group in ([c for c in self.children if not c["last"]], [c for c in self.children if c["last"]]):
            for child in group:
                if child["process"].poll() is None:
                    child["process"].terminate()
            deadline = time.monotonic() + STOP_GRACE
            for child in group:
                try:
                    child["process"].wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child["process"].kill()
                    child["process"].wait()
