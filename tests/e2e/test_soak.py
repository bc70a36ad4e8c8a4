"""Soak: 200 small jobs submitted at once over HTTP to ``nnserve api`` with two ``nnserve worker``
processes. Every job ends ``succeeded``, exactly once: none lost, none run twice.

Marked ``soak`` (``pytest -m soak`` runs it alone, ``-m 'not soak'`` leaves it out); it takes
well under a minute.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from nnserve.service import store
from tests.conftest import wait_until

pytestmark = pytest.mark.soak

JOBS = 200
TINY = {"dataset": "linear", "model": {"layers": [{"type": "dense", "units": 1}]}, "training": {"epochs": 2, "seed": 0}}


def test_200_jobs_at_once_all_succeed_exactly_once(processes, redis):
    api = processes.api(api_workers=2, api_threads=8)
    for _ in range(2):
        processes.worker()
    local = threading.local()  # a keep-alive session per submitting thread

    def submit(_) -> str:
        local.session = getattr(local, "session", None) or requests.Session()
        response = local.session.post(f"{api}/v1/jobs", json=TINY, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        submitted = list(pool.map(submit, range(JOBS)))
    assert len(set(submitted)) == JOBS

    def all_ended():
        jobs = requests.get(f"{api}/v1/jobs", params={"limit": 1000}, timeout=30).json()["items"]
        return jobs if all(job["status"] in ("succeeded", "failed", "canceled") for job in jobs) else None

    jobs = wait_until(all_ended, timeout=240, what=f"{JOBS} jobs to end", interval=0.5)
    assert sorted(job["id"] for job in jobs) == sorted(submitted)  # none lost, none extra
    assert all(job["status"] == "succeeded" and job["attempts"] == 1 for job in jobs), [
        job for job in jobs if job["status"] != "succeeded" or job["attempts"] != 1
    ][:3]
    assert store.job_counts(redis) == {"queued": 0, "running": 0, "succeeded": JOBS}
    # RQ's side: nothing left queued, started or failed, and the workers ran 200 jobs between them, not more.
    assert redis.llen("rq:queue:nnserve") == 0 and redis.zcard("rq:wip:nnserve") == 0
    assert redis.zcard("rq:failed:nnserve") == 0
    runs = sum(
        int(redis.hget(key, "successful_job_count") or 0)
        for key in redis.keys("rq:worker:*")
        if not key.endswith(b":executions")
    )
    assert runs == JOBS
    assert all(redis.llen(store.history_key(job_id)) == 2 for job_id in submitted)
    assert all(redis.exists(store.weights_key(job["model_id"])) for job in jobs)
