"""Redis high availability for real: a primary, a replica and three Sentinels; ``nnserve api`` and
``nnserve worker`` find the primary through the Sentinels (REDIS_SENTINELS, REDIS_SENTINEL_MASTER).
Under load the primary is SIGKILLed: the API answers 503 (never 500) while the Sentinels fail over,
then carries on against the promoted replica, and so does the worker, with no process restarted.

Replication is asynchronous, so what a failover can lose is bounded by the replica's lag: writes
acknowledged in the last moment before the primary died (docs/deployment.md, "Redis high
availability"). The test holds nnserve to that bound: every job acknowledged more than ``LAG_BOUND``
seconds before the kill is there afterwards and succeeds; jobs in flight resume from their checkpoints.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from tests.conftest import Processes, RedisServer, free_port, redis_binary, wait_until
from tests.e2e.test_faults import SMALL

MASTER = "nnserve-primary"
LAG_BOUND = 1.0
"""Seconds: a write acknowledged longer ago than this has reached the replica (it lags by milliseconds)."""


def sentinel_command(config: Path) -> list[str]:
    """Debian's redis-sentinel (.ci/run installs it), else the redis-server we test with, in Sentinel mode."""
    found = shutil.which("redis-sentinel")
    return [found, str(config)] if found else [redis_binary(), str(config), "--sentinel"]


class Sentinels:
    def __init__(self, tmp: Path, primary_port: int, count: int = 3):
        self.ports = [free_port() for _ in range(count)]
        self.processes: list[subprocess.Popen] = []
        for port in self.ports:
            config = tmp / f"sentinel-{port}.conf"  # Sentinel rewrites its own file: one each, writable
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self.processes.append(subprocess.Popen(sentinel_command(config), stdout=subprocess.DEVNULL))
        for port in self.ports:
            client = redis_lib.Redis(port=port)
            wait_until(lambda: _knows_replica(client), timeout=30, what=f"Sentinel {port} to see the replica")

    @property
    def setting(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def primary_port(self) -> int:
        _, port = redis_lib.Redis(port=self.ports[0]).sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)


def _knows_replica(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.sentinel_slaves(MASTER))
    except redis_lib.exceptions.RedisError:
        return False


class Load:
    """Submits a job every ``interval`` seconds from a thread, noting when each was acknowledged, and
    every answer's status."""

    def __init__(self, api: str, interval: float = 0.25):
        self.api, self.interval = api, interval
        self.accepted: list[tuple[float, str]] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        body = {"dataset": "blobs", "model": SMALL, "training": {"epochs": 20, "batch_size": 16, "seed": 2}}
        while not self._stop.wait(self.interval):
            try:
                response = requests.post(f"{self.api}/v1/jobs", json=body, timeout=10)
            except requests.RequestException:
                self.statuses.append(0)
                continue
            self.statuses.append(response.status_code)
            if response.status_code == 202:
                self.accepted.append((time.monotonic(), response.json()["id"]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_primary_failover_under_load_loses_no_acknowledged_job(tmp_path):
    primary = RedisServer(tmp_path / "primary", durable=True)
    primary.start()
    replica = RedisServer(tmp_path / "replica", durable=True, args=("--replicaof", "127.0.0.1", str(primary.port)))
    replica.start()
    sentinels = Sentinels(tmp_path, primary.port)
    processes = Processes(primary.url, tmp_path)
    try:
        settings = {"redis_sentinels": sentinels.setting, "redis_sentinel_master": MASTER, "redis_timeout": 1}
        # The URL's host is not used with Sentinels; it must not be what reaches Redis.
        processes.redis_url = "redis://nowhere.invalid:1/0"
        api = processes.api(**settings, api_workers=1)
        worker = processes.worker(**settings, worker_heartbeat=1, maintenance_interval=1, abandoned_after=10)
        long = requests.post(
            f"{api}/v1/jobs",
            json={"dataset": "blobs", "model": SMALL, "training": {"epochs": 300, "batch_size": 8, "seed": 1}},
            timeout=10,
        ).json()
        load = Load(api)
        wait_until(lambda: len(load.accepted) >= 8, timeout=60, what="load")
        wait_until(lambda: _job(api, long["id"])["progress"]["epoch"] >= 5, timeout=60, what="the long job")

        killed_at = time.monotonic()
        os.kill(primary.process.pid, signal.SIGKILL)
        primary.process.wait()
        wait_until(lambda: sentinels.primary_port() == replica.port, timeout=60, what="the Sentinels to fail over")
        wait_until(lambda: any(t > time.monotonic() - 2 for t, _ in load.accepted), timeout=60, what="202s again")
        time.sleep(2)
        load.stop()

        assert set(load.statuses) <= {202, 503}, sorted(set(load.statuses))  # never a 500, nor a hang
        assert all(process.poll() is None for process in processes.started)  # nothing restarted
        durable = [job_id for acknowledged, job_id in load.accepted if acknowledged < killed_at - LAG_BOUND]
        for job_id in [long["id"], *durable]:
            done = wait_until(
                lambda: (job := _job(api, job_id))["status"] in ("succeeded", "failed", "canceled") and job,
                timeout=180,
                what=f"job {job_id} to end",
                interval=0.3,
            )
            assert done["status"] == "succeeded", done
        assert len(_job(api, long["id"])["history"]["loss"]) == 300
        assert worker.poll() is None
    finally:
        processes.stop_all()
        sentinels.stop()
        for server in (primary, replica):
            if server.process is not None and server.process.poll() is None:
                server.stop()


def _job(api: str, job_id: str) -> dict:
    response = requests.get(f"{api}/v1/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_sentinel_settings_need_a_master_name(tmp_path):
    from nnserve.service.settings import Settings

    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER"):
        Settings(redis_sentinels="127.0.0.1:26379")
    assert Settings(redis_sentinels="a:1, b:2", redis_sentinel_master="m").redis_sentinels == (("a", 1), ("b", 2))
