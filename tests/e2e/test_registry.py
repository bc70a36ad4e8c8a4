"""The registry with real processes: versions under concurrent finishes, alias moves racing deletes, and a
rollback that answers the very next request on another API process."""

from __future__ import annotations

import multiprocessing

import pytest
import redis as redis_lib
import requests

from nnserve.service import lifecycle, store
from tests.conftest import wait_until

NAME = "racer"
TINY = {
    "layers": [
        {"type": "dense", "units": 4, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
ROWS = [[5.1, 3.5, 1.4, 0.2]]


def _running_job(r, index: int) -> dict:
    """A job record held by the lease ``lease-<index>``, running, with a pending model (what a worker has
    when its training ends)."""
    job = {"id": f"job_{index}", "tenant": store.PUBLIC, "name": NAME, "model_id": f"mdl_{index}", "lease": "x"}
    r.hset(store.job_key(job["id"]), mapping=store._encode({**job, "status": lifecycle.JobStatus.running}))
    r.hset(store.job_key(job["id"]), "lease", store.orjson.dumps(f"lease-{index}"))
    r.hset(store.model_key(job["model_id"]), mapping=store._encode({"id": job["model_id"], "tenant": store.PUBLIC}))
    return job


def _register(url: str, jobs: list[dict], start, results) -> None:
    r = redis_lib.Redis.from_url(url)
    start.wait()
    for job in jobs:
        index = int(job["id"].split("_")[1])
        results.put(store.register_version(r, job, f"lease-{index}", lifecycle.JobStatus.running, "promote", None))


def test_jobs_finishing_together_under_one_name_get_distinct_versions(redis, redis_server):
    processes, per_process = 8, 25
    jobs = [_running_job(redis, i) for i in range(processes * per_process)]
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_register, args=(redis_server.url, jobs[i::processes], start, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.set()
    versions = [results.get(timeout=60) for _ in jobs]
    for worker in workers:
        worker.join(30)
    assert sorted(versions) == list(range(1, len(jobs) + 1))
    state = store.registry_state(redis, store.PUBLIC, NAME)
    assert sorted(state.versions) == sorted(versions)
    assert {state.versions[v] for v in versions} == {job["model_id"] for job in jobs}
    for job in jobs:  # each job, and its model, says which version it became
        assert (
            store.get_job(redis, job["id"])["version"] == store.get_model(redis, job["model_id"], "public")["version"]
        )


def _move_aliases(url: str, rounds: int, start) -> None:
    r = redis_lib.Redis.from_url(url)
    start.wait()
    for i in range(rounds):
        version = 2 + i % 40
        store.set_alias(r, store.PUBLIC, NAME, "staging", {"split": {"1": 50, str(version): 50}}, [1, version], "api")
        store.set_alias(r, store.PUBLIC, NAME, "current", version, [version], "api")


def _delete_versions(url: str, start) -> None:
    r = redis_lib.Redis.from_url(url)
    start.wait()
    for version in range(2, 42):
        model = {"tenant": store.PUBLIC, "name": NAME, "id": f"mdl_{version - 1}", "version": version}
        for attempt in range(100):  # refused while an alias points at it: try again, forcing it in the end
            deleted, _ = store.delete_version(r, model, attempt == 99 or version % 3 == 0, "api")
            if deleted is not False:
                break


def test_alias_moves_racing_deletes_never_leave_an_alias_pointing_at_nothing(redis, redis_server):
    jobs = [_running_job(redis, i) for i in range(41)]
    for index, job in enumerate(jobs):
        store.register_version(redis, job, f"lease-{index}", lifecycle.JobStatus.running, "promote", None)
    context = multiprocessing.get_context("fork")
    start = context.Event()
    movers = [context.Process(target=_move_aliases, args=(redis_server.url, 200, start)) for _ in range(2)]
    deleter = context.Process(target=_delete_versions, args=(redis_server.url, start))
    for process in (*movers, deleter):
        process.start()
    start.set()
    deleter.join(120)
    for mover in movers:
        mover.join(120)
    state = store.registry_state(redis, store.PUBLIC, NAME)
    assert sorted(state.versions) == [1]
    for alias, target in state.aliases.items():
        named = [target] if isinstance(target, int) else [int(v) for v in target.get("split", {})]
        assert set(named) <= set(state.versions), (alias, target)


@pytest.fixture
def two_apis(processes):
    """Two API servers (gunicorn, one process each, so every request reaches the one process) and a worker."""
    first = processes.api(api_workers=1, api_threads=2)
    second = processes.api(api_workers=1, api_threads=2)
    processes.worker()
    return first, second


def _train(api: str, seed: int) -> dict:
    body = {"dataset": "iris", "name": "flowers", "model": TINY, "training": {"epochs": 2, "seed": seed}}
    response = requests.post(f"{api}/v1/jobs", json=body, timeout=10)
    assert response.status_code == 202, response.text
    url = api + response.headers["Location"]
    job = wait_until(
        lambda: (j := requests.get(url, timeout=10).json())["status"] not in ("queued", "running") and j,
        timeout=120,
        what="training",
        interval=0.1,
    )
    assert job["status"] == "succeeded", job
    return job


def test_a_rollback_answers_the_very_next_request_on_another_api_process(two_apis):
    first, second = two_apis
    assert _train(first, 1)["version"] == 1
    assert _train(first, 2)["version"] == 2

    def version_on(api: str) -> int:
        response = requests.post(f"{api}/v1/models/flowers/predict", json={"inputs": ROWS}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == str(response.json()["model_version"])
        return response.json()["model_version"]

    for _ in range(3):  # warm: the second process holds the name's state and both models
        assert version_on(second) == 2
    for target in (1, 2, 1, 2, 1):
        response = requests.put(f"{first}/v1/registry/flowers/aliases/current", json={"version": target}, timeout=10)
        assert response.status_code == 200, response.text
        assert version_on(second) == target  # the very next request, on the other process
    # rollback by `previous`, as `nnserve rollback` does
    previous = requests.get(f"{first}/v1/registry/flowers", timeout=10).json()["aliases"]["previous"]
    requests.put(f"{first}/v1/registry/flowers/aliases/current", json={"version": previous}, timeout=10)
    assert version_on(second) == previous == 2


def test_real_workers_finishing_jobs_under_one_name_number_them_one_to_n(processes, client):
    """Three ``nnserve worker`` processes train six jobs under one name at once: six distinct versions."""
    for _ in range(3):
        processes.worker()
    ids = []
    for seed in range(6):
        body = {"dataset": "iris", "name": "together", "model": TINY, "training": {"epochs": 3, "seed": seed}}
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.json
        ids.append(response.json["id"])

    def finished():
        jobs = [client.get(f"/v1/jobs/{job_id}").json for job_id in ids]
        return jobs if all(job["status"] not in ("queued", "running") for job in jobs) else None

    jobs = wait_until(finished, timeout=180, what="six jobs", interval=0.2)
    assert all(job["status"] == "succeeded" for job in jobs), jobs
    assert sorted(job["version"] for job in jobs) == [1, 2, 3, 4, 5, 6]
    detail = client.get("/v1/registry/together").json
    assert {v["version"]: v["model_id"] for v in detail["versions"]} == {j["version"]: j["model_id"] for j in jobs}
    assert detail["aliases"]["latest"] == 6 and detail["aliases"]["current"] in range(1, 7)
