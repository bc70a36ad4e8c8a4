"""Keys managed at run time, end to end: two ``nnserve api`` processes (two gunicorn processes each) that
are never restarted, while ``nnserve keys`` creates, lists and revokes a key in their Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.service.helpers import train

ROW = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
REQUESTS_PER_API = 12
"""Enough that each of an API's two gunicorn processes (new connection each time) gets some."""


def nnserve(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
    env["REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "nnserve", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=60)


def statuses(urls: list[str], method: str, path: str, key: str | None = None, body=None) -> set[int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return {
        requests.request(
            method, url + path, json=body, headers={**headers, "Connection": "close"}, timeout=10
        ).status_code
        for url in urls
        for _ in range(REQUESTS_PER_API)
    }


def test_a_key_created_listed_and_revoked_without_restarting_any_api(client, run_jobs, processes, redis):
    model_id = train(client, run_jobs)["model_id"]  # made while the API is open: tenant public
    apis = [processes.api(api_workers=2, api_threads=4) for _ in range(2)]
    predict = f"/v1/models/{model_id}/predict"
    assert statuses(apis, "GET", "/v1/models") == {200}

    created = nnserve(processes.redis_url, "keys", "create", "--scope", "predict", "--tenant", "public")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    key_id = created.stderr.split()[1]
    assert secret.startswith("nns_") and key_id.startswith("key_") and "shown this once" in created.stderr

    # On at once, in every process: no key is a 401; the key predicts (the fast path once cached) but not more.
    assert statuses(apis, "GET", "/v1/models") == {401}
    assert statuses(apis, "POST", predict, secret, ROW) == {200}
    assert statuses(apis, "POST", predict, secret, ROW) == {200}
    refused = requests.post(
        apis[0] + "/v1/jobs", json={"dataset": "iris"}, headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    assert refused.status_code == 403 and "'train' scope; this key has 'predict'" in refused.json()["detail"]

    listed = nnserve(processes.redis_url, "keys", "list")
    assert listed.returncode == 0 and key_id in listed.stdout and "public" in listed.stdout
    assert "predict" in listed.stdout and secret not in listed.stdout + listed.stderr

    revoked = nnserve(processes.redis_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    # The very next requests, on every process of both APIs.
    assert statuses(apis, "POST", predict, secret, ROW) == {401}
    assert statuses(apis, "GET", "/v1/models") == {401}  # revoking the last key does not open the API

    again = nnserve(processes.redis_url, "keys", "revoke", "key_0000000000000000")
    assert again.returncode == 1 and "no stored key" in again.stderr
    processes.stop_all()
    for log in processes.tmp.glob("api-*.log"):
        assert secret not in log.read_text()
