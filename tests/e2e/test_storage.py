"""A full or evicting Redis, with real processes: ``redis-server --maxmemory`` under a running
``nnserve api`` and ``nnserve worker``.

Full (``noeviction``, the only policy nnserve accepts by default): writes answer 507 problem+json,
reads and predictions go on, deletes still work (they are how an operator frees memory), a job that
cannot save waits with backoff and then fails as ``StorageFull`` (not retried), and the worker
process lives on and takes new work once there is room. Evicting (any other policy): the API and the
worker refuse to start, unless told to allow it, and then say so in ``/readyz``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import redis as redis_lib
import requests

from tests.conftest import Processes, RedisServer, wait_until
from tests.e2e.test_faults import SMALL, ended, get_job, predict, submit

ROWS = [[0.1, 0.2], [1.5, -0.3]]


def fill(client: redis_lib.Redis) -> None:
    """Make Redis full: its memory limit becomes a little less than what it uses now (a margin, since
    what it uses moves a little as the processes around it work)."""
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 256 * 1024)


def upload(api: str, rows: int = 40) -> requests.Response:
    features = [[float(i % 7), float(i % 3)] for i in range(rows)]
    return requests.post(f"{api}/v1/datasets", json={"features": features, "targets": [i % 2 for i in range(rows)]})


def assert_full(response: requests.Response) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 507 and "full" in body["detail"] and "maxmemory" in body["detail"], body


def test_a_full_redis_answers_507_keeps_serving_and_never_kills_a_worker(tmp_path):
    server = RedisServer(tmp_path / "redis", args=("--maxmemory-policy", "noeviction"))
    server.start()
    admin = redis_lib.Redis(port=server.port)
    processes = Processes(server.url, tmp_path)
    try:
        api = processes.api(redis_timeout=1, api_workers=1)
        worker = processes.worker(
            worker_heartbeat=1, maintenance_interval=1, abandoned_after=30, redis_retry_window=3, checkpoint_every=5
        )
        trained = ended(api, submit(api, epochs=3)["id"])
        assert trained["status"] == "succeeded"
        expected = predict(api, trained["model_id"], ROWS)
        spare = upload(api).json()["id"]
        running = submit(api, epochs=10_000)
        wait_until(lambda: get_job(api, running["id"])["progress"]["epoch"] >= 3, timeout=60, what="training")

        fill(admin)
        full_at = time.monotonic()
        assert_full(upload(api))
        assert_full(requests.post(f"{api}/v1/jobs", json={"dataset": "blobs", "model": SMALL}, timeout=10))
        ready = requests.get(f"{api}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text  # serving predictions is still possible
        memory = ready.json()["memory"]
        assert memory["full"] is True and memory["used_bytes"] >= memory["max_bytes"] > 0, memory
        metrics = requests.get(f"{api}/metrics", timeout=10).text
        assert "nnserve_redis_memory_max_bytes" in metrics and "nnserve_redis_memory_used_bytes" in metrics
        assert predict(api, trained["model_id"], ROWS) == expected  # everything stored before is still there
        assert requests.get(f"{api}/v1/datasets/{spare}", timeout=10).status_code == 200

        failed = ended(api, running["id"], timeout=60)
        assert failed["status"] == "failed" and failed["error"]["type"] == "StorageFull", failed
        assert "full" in failed["error"]["detail"] and failed["attempts"] == 1, failed
        assert time.monotonic() - full_at >= 3  # it waited (redis_retry_window) before giving up
        assert worker.poll() is None

        fill(admin)  # still full: deleting is how room is made, so it must work
        assert requests.delete(f"{api}/v1/datasets/{spare}", timeout=10).status_code == 204
        assert requests.delete(f"{api}/v1/models/{failed['model_id']}", timeout=10).status_code == 204
        admin.config_set("maxmemory", 0)
        later = ended(api, submit(api, epochs=3)["id"], timeout=60)
        assert later["status"] == "succeeded", later  # the same worker took it
        assert worker.poll() is None
        assert predict(api, trained["model_id"], ROWS) == expected
    finally:
        processes.stop_all()
        server.stop()


def test_a_running_job_waits_out_a_full_redis_that_is_freed_in_time(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    admin = redis_lib.Redis(port=server.port)
    processes = Processes(server.url, tmp_path)
    try:
        api = processes.api(redis_timeout=1, api_workers=1)
        worker = processes.worker(worker_heartbeat=1, maintenance_interval=1, abandoned_after=30, redis_retry_window=30)
        running = submit(api, epochs=400)
        wait_until(lambda: get_job(api, running["id"])["progress"]["epoch"] >= 3, timeout=60, what="training")
        fill(admin)
        time.sleep(3)
        admin.config_set("maxmemory", 0)
        done = ended(api, running["id"], timeout=120)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        assert len(done["history"]["loss"]) == 400
        assert worker.poll() is None
    finally:
        processes.stop_all()
        server.stop()


def start(processes: Processes, verb: str, **settings) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nnserve", verb, *(["--port", "0"] if verb == "api" else [])],
        env=processes.env(**settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=processes.tmp,
    )


def test_an_evicting_redis_is_refused_unless_allowed(tmp_path):
    server = RedisServer(tmp_path / "redis", args=("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"))
    server.start()
    processes = Processes(server.url, tmp_path)
    try:
        for verb in ("api", "worker"):
            refused = start(processes, verb)
            output = refused.communicate(timeout=60)[0].decode()
            assert refused.returncode != 0, output
            assert "allkeys-lru" in output and "noeviction" in output and "NNSERVE_ALLOW_EVICTION" in output, output
            assert "Traceback" not in output, output

        api = processes.api(allow_eviction=1, api_workers=1)
        ready = requests.get(f"{api}/readyz", timeout=10).json()
        assert ready["memory"]["eviction_policy"] == "allkeys-lru" and ready["warnings"], ready
        assert "evict" in ready["warnings"][0]
        metrics = requests.get(f"{api}/metrics", timeout=10).text
        assert "nnserve_redis_evicting 1.0" in metrics
        worker = processes.worker(allow_eviction=1)
        assert ended(api, submit(api, epochs=2)["id"], timeout=60)["status"] == "succeeded"
        assert worker.poll() is None

        redis_lib.Redis(port=server.port).config_set("maxmemory-policy", "noeviction")
        ready = requests.get(f"{api}/readyz", timeout=10).json()
        assert ready["memory"]["eviction_policy"] == "noeviction" and ready["warnings"] == [], ready
    finally:
        processes.stop_all()
        server.stop()


def test_readyz_turns_unready_when_the_policy_changes_to_evicting_at_run_time(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    processes = Processes(server.url, tmp_path)
    try:
        api = processes.api(api_workers=1)
        assert requests.get(f"{api}/readyz", timeout=10).status_code == 200
        redis_lib.Redis(port=server.port).config_set("maxmemory-policy", "volatile-lru")
        ready = requests.get(f"{api}/readyz", timeout=10)
        assert ready.status_code == 503 and "volatile-lru" in ready.json()["warnings"][0], ready.text
    finally:
        processes.stop_all()
        server.stop()
