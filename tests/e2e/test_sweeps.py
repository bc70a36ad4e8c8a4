"""Sweeps with real processes (``nnserve api``, ``nnserve worker``, redis-server): a sweep survives the
loss of everything at once, and a job submitted during a sweep does not wait behind its trials."""

from __future__ import annotations

import os
import signal
from datetime import datetime

import redis as redis_lib
import requests
from optuna.trial import TrialState

from nnserve.service import store, sweeps
from tests.conftest import Processes, RedisServer, wait_until

SMALL = {
    "layers": [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
WORKER = {"worker_heartbeat": 1, "abandoned_after": 2, "maintenance_interval": 1, "checkpoint_every": 5}


def sweep_spec(epochs: int, **extra) -> dict:
    return {
        "dataset": "blobs",
        "model": SMALL,
        "training": {
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "epochs": epochs,
            "batch_size": 16,
            "seed": 1,
        },
        "search_space": {
            "training.optimizer.learning_rate": {"log_uniform": [0.001, 0.05]},
            "model.layers.0.units": {"int": [4, 16]},
        },
        "strategy": "random",
        "seed": 11,
        **extra,
    }


def post_sweep(api: str, spec: dict) -> dict:
    response = requests.post(f"{api}/v1/sweeps", json=spec, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def get(api: str, path: str) -> dict:
    response = requests.get(f"{api}{path}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def kill_group(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def test_a_sweep_resumes_after_the_api_the_workers_and_redis_are_killed(tmp_path):
    server = RedisServer(tmp_path / "redis", durable=True)
    server.start()
    processes = Processes(server.url, tmp_path)
    try:
        api = processes.api(**WORKER)
        workers = [processes.worker(**WORKER) for _ in range(2)]
        spec = sweep_spec(epochs=150, trials=6, parallelism=2)
        sweep_id = post_sweep(api, spec)["id"]

        def mid_sweep():
            sweep = get(api, f"/v1/sweeps/{sweep_id}")
            running = [t for t in sweep["trials"] if t["status"] == "running" and t["epochs"] >= 10]
            return sweep["counts"]["succeeded"] >= 1 and running and sweep

        before = wait_until(mid_sweep, timeout=240, what="a finished trial and a running one", interval=0.2)
        interrupted = {t["job_id"] for t in before["trials"] if t["status"] == "running"}
        # Everything at once, with no warning: the API, both workers (and their work horses), Redis.
        for process in [processes.started[0], *workers]:
            kill_group(process)
        server.process.kill()
        server.process.wait(10)
        server.process = None

        server.start()  # the same port and append-only file
        # A trial seen running may have ended between that look and the kill: the interrupted ones are
        # those the restarted Redis still holds running.
        still = redis_lib.Redis.from_url(server.url)
        interrupted = {job_id for job_id in interrupted if store.get_job(still, job_id)["status"] == "running"}
        processes.started.clear()
        api = processes.api(**WORKER)
        for _ in range(2):
            processes.worker(**WORKER)
        after = wait_until(
            lambda: (sweep := get(api, f"/v1/sweeps/{sweep_id}"))["status"] != "running" and sweep,
            timeout=300,
            what="the sweep to end",
            interval=0.5,
        )
        # Every trial ran once and to its end: none lost, none repeated.
        assert after["status"] == "succeeded" and after["counts"]["succeeded"] == 6, after
        assert [t["number"] for t in after["trials"]] == list(range(6))
        assert len({t["job_id"] for t in after["trials"]}) == 6
        assert all(t["epochs"] == 150 for t in after["trials"])
        # The ones running at the kill went on from their checkpoints in a second attempt.
        for job_id in interrupted:
            job = get(api, f"/v1/jobs/{job_id}")
            assert job["status"] == "succeeded" and job["attempts"] >= 2 and len(job["history"]["loss"]) == 150
        # The sampler's state survived: Optuna's study has the six trials, each told once, and the seeded
        # trials are those the same seed asks for (the trials before the kill are unchanged).
        client = redis_lib.Redis.from_url(server.url)
        study = sweeps.load_study(client, get(api, f"/v1/sweeps/{sweep_id}"))
        assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 6
        assert [t.params for t in study.get_trials()] == [t["parameters"] for t in after["trials"]]
        assert [t["parameters"] for t in after["trials"][: len(before["trials"])]] == [
            t["parameters"] for t in before["trials"]
        ]
        assert after["best"]["objective"] == min(t["objective"] for t in after["trials"])
        client.close()
    finally:
        processes.stop_all()
        server.stop()


def test_a_job_submitted_during_a_sweep_starts_before_its_waiting_trials(tmp_path):
    """One worker, a sweep with three trials queued at once: a job submitted while the first runs is
    taken next, within one trial's duration, ahead of the two trials that were queued before it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    processes = Processes(server.url, tmp_path)
    try:
        api = processes.api(**WORKER)
        processes.worker(**WORKER)
        sweep_id = post_sweep(api, sweep_spec(epochs=150, trials=3, parallelism=3))["id"]
        wait_until(
            lambda: any(t["status"] == "running" for t in get(api, f"/v1/sweeps/{sweep_id}")["trials"]),
            timeout=120,
            what="the first trial to start",
        )
        job = requests.post(
            f"{api}/v1/jobs",
            json={"dataset": "iris", "model": SMALL, "training": {"epochs": 5, "seed": 1}},
            timeout=30,
        ).json()
        sweep = wait_until(
            lambda: (s := get(api, f"/v1/sweeps/{sweep_id}"))["status"] != "running" and s,
            timeout=300,
            what="the sweep to end",
            interval=0.5,
        )
        done = get(api, f"/v1/jobs/{job['id']}")
        assert done["status"] == "succeeded"
        trials = [get(api, f"/v1/jobs/{t['job_id']}") for t in sweep["trials"]]
        first, waiting = trials[0], trials[1:]
        started = datetime.fromisoformat(done["started_at"])
        assert datetime.fromisoformat(first["finished_at"]) <= started
        assert all(started < datetime.fromisoformat(t["started_at"]) for t in waiting)
        one_trial = max(t["duration_s"] for t in sweep["trials"])
        waited = (started - datetime.fromisoformat(done["created_at"])).total_seconds()
        assert waited <= one_trial + 1.0, (waited, one_trial)
    finally:
        processes.stop_all()
        server.stop()
