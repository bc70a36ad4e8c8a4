"""Shared fixtures: a real redis-server on a free port, a fresh app per test, in-process RQ workers,
and helpers to start ``nnserve api`` / ``nnserve worker`` as real processes.

Nothing here is autouse: the engine's tests never start Redis.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import redis as redis_lib

from nnserve.cli.server import redis_binary
from nnserve.cli.supervisor import free_port

ROOT = Path(__file__).resolve().parents[1]


class RedisServer:
    """A redis-server of the tests' own on a free port, which a test may stop, pause and start again
    on the same port and data, as an operator restarting Redis would. ``durable`` keeps an
    append-only file fsynced every second, as ``nnserve up`` does; otherwise nothing is persisted.
    ``args`` go to redis-server as they are (``("--maxmemory", "20mb")``)."""

    def __init__(self, data: Path, durable: bool = False, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.args = args
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data = data
        self.durable = durable
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.durable else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data),
                "--save",
                "",
                *persistence,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis_lib.Redis(port=self.port)
        wait_until(lambda: _pings(client), timeout=20, what="redis-server to answer")
        client.close()

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file, if any, and exits, as on a clean restart."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)  # connections open, nothing answered: a hung server

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis_lib.exceptions.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server):
    """A client of the session's Redis, emptied before each test."""
    if redis_server.process is None:  # a test stopped it
        redis_server.start()
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis, redis_server):
    from nnserve.service.settings import Settings

    return Settings(
        redis_url=redis_server.url,
        checkpoint_every=2,
        worker_heartbeat=1,
        abandoned_after=2,
        maintenance_interval=1,
        redis_timeout=1.0,
    )


@pytest.fixture
def make_app(settings):
    """``make_app(**overrides)``: another app on the same Redis, with some settings changed."""
    from nnserve.service.app import create_app

    def make(**overrides):
        app = create_app(settings.model_copy(update=overrides))
        app.config["TESTING"] = True
        return app

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def run_jobs(settings):
    """Run every queued job in this process (RQ's SimpleWorker, burst mode)."""
    from nnserve.worker.main import SimpleWorker, make_worker

    def run() -> None:
        make_worker(settings, SimpleWorker).work(burst=True, with_scheduler=False)

    return run


# Real processes ----------------------------------------------------------------------------


class Processes:
    """``nnserve`` subprocesses started by a test, all stopped at its end."""

    def __init__(self, redis_url: str, tmp: Path):
        self.redis_url = redis_url
        self.tmp = tmp
        self.started: list[subprocess.Popen] = []

    def env(self, **settings) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
        env.update(REDIS_URL=self.redis_url, NNSERVE_LOG_LEVEL="WARNING")
        env.update({f"NNSERVE_{k.upper()}": str(v) for k, v in settings.items()})
        return env

    def start(self, *args: str, **settings) -> subprocess.Popen:
        with open(self.tmp / f"{args[0]}-{len(self.started)}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "nnserve", *args],
                env=self.env(**settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def api(self, **settings) -> str:
        port = free_port()
        self.start("api", "--port", str(port), **settings)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url + "/healthz"), timeout=30, what="nnserve api to answer")
        return url

    def worker(self, **settings) -> subprocess.Popen:
        return self.start("worker", **settings)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or gunicorn's workers still booting
        return False


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_in_terminal(command: list[str], columns: int, timeout: float = 120, env: dict | None = None) -> str:
    """What ``command`` writes to a pseudo-terminal ``columns`` wide (stdout and stderr both)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=ROOT)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        out += chunk
    process.wait(timeout=max(1.0, deadline - time.monotonic()))
    os.close(leader)
    return out.decode().replace("\r\n", "\n")


@pytest.fixture
def processes(redis, redis_server, tmp_path):
    running = Processes(redis_server.url, tmp_path)
    yield running
    running.stop_all()
