"""The project's own bounded chaos test: real processes under load, SIGKILLed at random, then the
invariants that must hold whatever was killed.

``nnserve api`` (two gunicorn workers), two ``nnserve worker`` processes and a redis-server with an
append-only file take a steady load: job submissions (each with an ``Idempotency-Key``, retried
until acknowledged, as a careful client does), dataset uploads and predictions. Every few seconds
one of them is SIGKILLed: a worker (then started again, as a supervisor would), a work horse, a
gunicorn worker (its master starts another) or Redis itself (started again on its data). Then:

- every acknowledged job ends (succeeded, or failed after its retries), none lost, none duplicated:
  exactly one job per idempotency key;
- every succeeded job's model predicts;
- every acknowledged dataset is there, whole;
- ``/metrics`` counts exactly the jobs the records hold, per status.

60 seconds of chaos by default (CI); ``NNSERVE_CHAOS_SECONDS=180 pytest -m chaos`` for a full run.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests

from tests.conftest import Processes, RedisServer, wait_until
from tests.e2e.test_faults import SMALL

pytestmark = pytest.mark.chaos

SECONDS = float(os.environ.get("NNSERVE_CHAOS_SECONDS", "60"))
KILL_EVERY = (3.0, 7.0)
"""Seconds between two kills, drawn uniformly."""
TERMINAL = ("succeeded", "failed", "canceled")
WORKER_SETTINGS = {"worker_heartbeat": 1, "maintenance_interval": 1, "abandoned_after": 3, "redis_retry_window": 30}


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True).stdout
    return [int(child) for child in out.split()]


class Cluster:
    def __init__(self, tmp_path):
        self.redis = RedisServer(tmp_path / "redis", durable=True)
        self.redis.start()
        self.processes = Processes(self.redis.url, tmp_path)
        self.api_process: subprocess.Popen | None = None
        self.api = ""
        self.workers: list[subprocess.Popen] = []
        self.kills: collections.Counter[str] = collections.Counter()

    def start(self) -> None:
        settings = {"api_workers": 2, "job_retries": 20, "checkpoint_every": 3, "redis_timeout": 1}
        self.api = self.processes.api(**settings)
        self.api_process = self.processes.started[-1]
        self.workers = [self.processes.worker(**WORKER_SETTINGS) for _ in range(2)]

    def kill_one(self, rng: random.Random) -> None:
        victim = rng.choice(["worker", "work horse", "gunicorn worker", "redis"])
        if victim == "worker":
            i = rng.randrange(len(self.workers))
            os.killpg(self.workers[i].pid, signal.SIGKILL)  # the worker and its work horse
            self.workers[i].wait()
            self.workers[i] = self.processes.worker(**WORKER_SETTINGS)
        elif victim == "work horse":
            horses = [horse for worker in self.workers for horse in children(worker.pid)]
            if not horses:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(horses), signal.SIGKILL)
        elif victim == "gunicorn worker":
            assert self.api_process is not None
            masters = children(self.api_process.pid)
            workers = [worker for master in masters for worker in children(master)]
            if not workers:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(workers), signal.SIGKILL)
        else:
            assert self.redis.process is not None
            self.redis.process.kill()
            self.redis.process.wait()
            self.redis.process = None
            time.sleep(rng.uniform(0.2, 2.0))
            self.redis.start()
        self.kills[victim] += 1

    def stop(self) -> None:
        self.processes.stop_all()
        if self.redis.process is not None:
            self.redis.stop()


class Load:
    """Clients that retry until they get an answer: jobs by idempotency key, datasets likewise."""

    def __init__(self, api: str):
        self.api = api
        self.jobs: dict[str, str] = {}  # idempotency key -> job id
        self.datasets: dict[str, int] = {}  # dataset id -> rows
        self.statuses: collections.Counter[int] = collections.Counter()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._jobs, daemon=True), threading.Thread(target=self._data)]
        for thread in self.threads:
            thread.start()

    def _post(self, path: str, key: str, body: dict) -> dict:
        """POST until acknowledged: a 409, a 503 or a dropped connection is retried with the same key, so
        a request that was carried out but whose answer was lost gets its replay, never a second resource."""
        while True:
            try:
                response = requests.post(f"{self.api}{path}", json=body, headers={"Idempotency-Key": key}, timeout=15)
                self.statuses[response.status_code] += 1
                if response.status_code in (201, 202):
                    return response.json()
                assert response.status_code in (409, 503), response.text  # in flight elsewhere, or Redis away
            except requests.RequestException:
                self.statuses[0] += 1
            time.sleep(0.2)

    def _jobs(self) -> None:
        rng = random.Random(1)
        while not self.stopping.is_set():
            key = str(uuid.uuid4())
            epochs = rng.randint(5, 25)
            body = {"dataset": "blobs", "model": SMALL, "training": {"epochs": epochs, "batch_size": 16, "seed": 1}}
            self.jobs[key] = self._post("/v1/jobs", key, body)["id"]
            time.sleep(0.3)

    def _data(self) -> None:
        rng = random.Random(2)
        while not self.stopping.is_set():
            rows = rng.randint(10, 200)
            features = [[float(i), float(i % 5)] for i in range(rows)]
            body = {"features": features, "targets": [float(i % 3) for i in range(rows)], "target_kind": "continuous"}
            self.datasets[self._post("/v1/datasets", str(uuid.uuid4()), body)["id"]] = rows
            time.sleep(1.0)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)


def get(api: str, path: str) -> requests.Response:
    """GET until the API answers (it may be restarting a worker, or waiting for Redis)."""
    return wait_until(lambda: _answer(f"{api}{path}"), timeout=60, what=f"GET {path} to be answered", interval=0.3)


def _answer(url: str) -> requests.Response | None:
    with contextlib.suppress(requests.RequestException):
        response = requests.get(url, timeout=10)
        if response.status_code < 500:
            return response
    return None


def test_chaos(tmp_path):
    rng = random.Random(int(os.environ.get("NNSERVE_CHAOS_SEED", "14")))
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        load = Load(cluster.api)
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(*KILL_EVERY))
            cluster.kill_one(rng)
        load.stop()
        api = cluster.api
        assert sum(cluster.kills.values()) >= SECONDS / KILL_EVERY[1] - 1, cluster.kills
        assert load.jobs and load.datasets, (load.jobs, load.datasets, load.statuses)
        assert not set(load.statuses) - {0, 201, 202, 409, 503}, load.statuses

        records = {}
        for key, job_id in load.jobs.items():
            records[key] = wait_until(
                lambda: (job := get(api, f"/v1/jobs/{job_id}").json()).get("status") in TERMINAL and job,
                timeout=300,
                what=f"job {job_id} to end",
                interval=0.5,
            )
        # None lost, none duplicated: the tenant's jobs are exactly the acknowledged ones, one per key.
        listed = get(api, "/v1/jobs?limit=1000").json()["items"]
        assert sorted(job["id"] for job in listed) == sorted(load.jobs.values())
        for job in records.values():
            assert job["status"] in ("succeeded", "failed"), job
            if job["status"] == "succeeded":
                assert len(job["history"]["loss"]) == job["progress"]["epochs"], job
                response = requests.post(
                    f"{api}/v1/models/{job['model_id']}/predict", json={"inputs": [[0.1, 0.2]]}, timeout=10
                )
                assert response.status_code == 200, response.text
            else:
                assert job["error"]["type"] == "WorkerLost", job  # only its retries running out
        assert sum(job["status"] == "succeeded" for job in records.values()) >= len(records) * 0.9

        for dataset_id, rows in load.datasets.items():
            assert get(api, f"/v1/datasets/{dataset_id}").json()["n_samples"] == rows

        counts = collections.Counter(job["status"] for job in records.values())
        metrics = get(api, "/metrics").text
        for status in ("queued", "running", "succeeded", "failed", "canceled"):
            found = re.search(rf'^nnserve_jobs{{status="{status}"}} (\S+)$', metrics, re.M)
            assert found and float(found.group(1)) == counts.get(status, 0), (status, counts, found)
    finally:
        cluster.stop()
