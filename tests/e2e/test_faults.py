"""Faults around Redis, with real processes: a Redis that hangs or stops under a running ``nnserve api``
and ``nnserve worker`` (503s while it is away, then recovery with no process restarted and no job
lost), and a ``kill -9`` of the embedded Redis of ``nnserve up`` (AOF everysec: trained models survive).

Workers dying (SIGKILL) and warm shutdown (SIGTERM) are in tests/worker/test_jobs.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import Processes, RedisServer, free_port, wait_until

SMALL = {
    "layers": [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
TERMINAL = ("succeeded", "failed", "canceled")


def submit(api: str, epochs: int, dataset: str = "blobs") -> dict:
    response = requests.post(
        f"{api}/v1/jobs",
        json={
            "dataset": dataset,
            "model": SMALL,
            "training": {"optimizer": "sgd", "epochs": epochs, "batch_size": 8, "seed": 1},
        },
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()


def get_job(api: str, job_id: str) -> dict:
    response = requests.get(f"{api}/v1/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def ended(api: str, job_id: str, timeout: float = 120) -> dict:
    return wait_until(
        lambda: (job := get_job(api, job_id))["status"] in TERMINAL and job,
        timeout=timeout,
        what=f"job {job_id} to end",
        interval=0.2,
    )


def timed(method: str, url: str, **kwargs) -> tuple[requests.Response, float]:
    start = time.monotonic()
    response = requests.request(method, url, timeout=30, **kwargs)
    return response, time.monotonic() - start


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/problem+json" and response.json()["status"] == 503


def test_redis_outage_answers_503_then_everything_carries_on(tmp_path):
    server = RedisServer(tmp_path / "redis", durable=True)
    server.start()
    processes = Processes(server.url, tmp_path)
    try:
        api = processes.api(redis_timeout=1, api_workers=1)
        processes.worker(worker_heartbeat=1, maintenance_interval=1, abandoned_after=30)
        running = submit(api, epochs=1000)
        waiting = submit(api, epochs=20)  # queued behind it: one worker
        wait_until(lambda: get_job(api, running["id"])["progress"]["epoch"] >= 5, timeout=60, what="training")

        server.pause()  # hung: every call must still end within the client timeouts (1 s, one retry)
        try:
            response, seconds = timed("GET", f"{api}/v1/jobs/{running['id']}")
            assert_unavailable(response)
            assert seconds < 10, seconds
            response, seconds = timed("GET", f"{api}/readyz")
            assert response.status_code == 503 and response.json()["redis"] is False and seconds < 10, seconds
        finally:
            server.resume()
        wait_until(lambda: requests.get(f"{api}/readyz", timeout=10).status_code == 200, 30, "the API to recover")

        assert get_job(api, running["id"])["status"] == "running"  # the outage catches it mid-training
        server.stop()  # gone: connections refused, so the answer is immediate
        for method, path in (("GET", f"/v1/jobs/{running['id']}"), ("POST", "/v1/jobs"), ("GET", "/readyz")):
            response, seconds = timed(method, api + path, json={"dataset": "iris", "model": SMALL})
            assert response.status_code == 503 and seconds < 10, (path, response.status_code, seconds)
        assert_unavailable(requests.get(f"{api}/v1/models", timeout=10))
        time.sleep(3)  # an outage of a few seconds, while the job is mid-training
        server.start()

        wait_until(lambda: requests.get(f"{api}/readyz", timeout=10).status_code == 200, 30, "the API to recover")
        done = ended(api, running["id"])
        assert done["status"] == "succeeded" and done["attempts"] == 1, done  # paused, not retried
        assert len(done["history"]["loss"]) == 1000
        assert ended(api, waiting["id"])["status"] == "succeeded"
        after = ended(api, submit(api, epochs=5)["id"])  # and the worker takes new work
        assert after["status"] == "succeeded"
        assert all(process.poll() is None for process in processes.started)  # nothing was restarted
    finally:
        processes.stop_all()
        if server.process.poll() is None:
            server.resume()
            server.stop()


def test_a_worker_outlives_an_outage_longer_than_its_retry_window(tmp_path):
    """Past ``redis_retry_window`` the worker drops its job and waits for Redis in the same process;
    then its abandoned-job sweep retries the job, which resumes from its checkpoint."""
    server = RedisServer(tmp_path / "redis", durable=True)
    server.start()
    processes = Processes(server.url, tmp_path)
    try:
        api = processes.api(redis_timeout=1, api_workers=1, checkpoint_every=5)
        worker = processes.worker(worker_heartbeat=1, maintenance_interval=1, abandoned_after=2, redis_retry_window=1)
        running = submit(api, epochs=600)
        wait_until(lambda: get_job(api, running["id"])["progress"]["epoch"] >= 10, timeout=60, what="training")
        server.stop()
        time.sleep(6)  # well past the worker's 1 s of retries and the job's 3 s heartbeat
        server.start()
        done = ended(api, running["id"])
        assert done["status"] == "succeeded" and done["attempts"] == 2 and "error" not in done, done
        assert len(done["history"]["loss"]) == 600
        assert worker.poll() is None  # the same process throughout
    finally:
        processes.stop_all()
        if server.process.poll() is None:
            server.stop()


def test_models_survive_a_kill_9_of_the_embedded_redis(tmp_path):
    """``nnserve up`` persists with an append-only file fsynced every second: a model reported trained
    more than a second before Redis is killed is there afterwards, both when ``nnserve up`` restarts
    its Redis by itself and after ``nnserve up`` itself is restarted on the same data directory."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    up = start_up(tmp_path, port)
    try:
        job = ended(api, submit(api, epochs=3, dataset="iris")["id"], timeout=60)
        assert job["status"] == "succeeded"
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        expected = predict(api, job["model_id"], rows)
        time.sleep(1.5)  # appendfsync everysec: what was acknowledged a second ago is on disk

        redis_pid = child_named(up.pid, "redis-server")
        os.kill(redis_pid, signal.SIGKILL)
        restarted = wait_until(
            lambda: (pid := child_named(up.pid, "redis-server")) not in (None, redis_pid) and pid,
            timeout=30,
            what="nnserve up to start Redis again",
        )
        assert restarted and up.poll() is None
        wait_until(lambda: _ready(api), timeout=30, what="the API to reach the new Redis")
        assert predict(api, job["model_id"], rows) == expected
        assert get_job(api, job["id"])["status"] == "succeeded"
        later = ended(api, submit(api, epochs=2, dataset="iris")["id"], timeout=60)  # workers carry on
        assert later["status"] == "succeeded"
    finally:
        stop_up(up)

    up = start_up(tmp_path, port)  # the same data directory, from cold
    try:
        assert predict(api, job["model_id"], rows) == expected
        assert get_job(api, later["id"])["status"] == "succeeded"
    finally:
        stop_up(up)


def start_up(cwd: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("NNSERVE_")}
    env.update(NNSERVE_LOG_LEVEL="WARNING")
    with open(cwd / "up.log", "ab") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "nnserve", "up", "--port", str(port), "--workers", "1"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), timeout=60, what="nnserve up")
    return up


def stop_up(up: subprocess.Popen) -> None:
    up.send_signal(signal.SIGTERM)
    try:
        assert up.wait(40) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def child_named(parent: int, name: str) -> int | None:
    for pid in subprocess.run(["pgrep", "-P", str(parent)], check=False, capture_output=True, text=True).stdout.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                return int(pid)
        except OSError:
            continue
    return None


def predict(api: str, model_id: str, rows: list) -> list:
    response = requests.post(f"{api}/v1/models/{model_id}/predict", json={"inputs": rows}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def _ready(api: str) -> bool:
    try:
        return requests.get(f"{api}/readyz", timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or gunicorn's workers still booting
        return False
