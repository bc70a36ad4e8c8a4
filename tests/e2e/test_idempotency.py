"""An API process that dies while it handles a request with an ``Idempotency-Key`` leaves the key
reserved; the reservation is a short lease, so a retry goes through within seconds (it used to get
409 for five minutes)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

import requests

from nnserve.service import idempotency, store
from tests.conftest import wait_until


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, the deepest first: gunicorn runs in a session of its
    own under ``nnserve api``, and a master told of its parent's death would let its worker finish the
    request gracefully, which is not the death this test is about."""
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    children = listed.stdout
    for child in map(int, children.split()):
        kill_tree(child)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_key_held_by_a_dead_api_process_is_free_within_the_lease(processes, redis):
    settings = {"max_rows": 20_000_000, "max_body_bytes": 64 * 1024 * 1024, "api_workers": 1}
    api = processes.api(**settings)
    # 60 MB, 10 million rows: seconds of parsing, time enough to kill the process mid-request.
    body = "a,b,label\n" + "1,2,0\n3,4,1\n" * 5_000_000
    headers = {"Idempotency-Key": "dies-with-its-process"}
    key = store.idempotency_key(store.PUBLIC, "dies-with-its-process")

    def upload() -> None:
        with contextlib.suppress(requests.ConnectionError):  # its process is killed under it
            requests.post(f"{api}/v1/datasets", files={"file": ("big.csv", body)}, headers=headers, timeout=60)

    first = threading.Thread(target=upload)
    first.start()
    wait_until(lambda: redis.exists(key), timeout=30, what="the key to be reserved")
    kill_tree(processes.started[-1].pid)  # nnserve api, gunicorn's master and its worker, mid-request
    first.join()
    assert b"reservation" in redis.get(key) and redis.pttl(key) <= idempotency.LEASE * 1000
    killed_at = time.monotonic()

    api = processes.api(**settings)
    answer = wait_until(
        lambda: (
            (
                r := requests.post(f"{api}/v1/datasets", files={"file": ("big.csv", body)}, headers=headers, timeout=60)
            ).status_code
            != 409
            and r
        ),
        timeout=idempotency.LEASE + 20,
        what="the retry to be accepted",
        interval=0.5,
    )
    assert answer.status_code == 201, answer.text
    assert time.monotonic() - killed_at < idempotency.LEASE + 20
