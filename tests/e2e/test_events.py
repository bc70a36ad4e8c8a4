"""GET /v1/jobs/{id}/events through gunicorn (``nnserve api``) while a real ``nnserve worker`` trains:
events arrive live, a reconnect with Last-Event-ID misses and repeats nothing, and open streams leave
the API's other requests answering."""

from __future__ import annotations

import json
import time

import numpy as np
import requests

from tests.conftest import wait_until

READ_TIMEOUT = 30
"""Seconds a read may wait for the next line; streams here send a heartbeat every second."""


class Events:
    """A Server-Sent Events connection: ``next()`` gives the next event as ``{"event", "id", "data"}``."""

    def __init__(self, url: str, headers: dict | None = None):
        self.response = requests.get(url, headers=headers, stream=True, timeout=(10, READ_TIMEOUT))
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.lines = self.response.iter_lines(chunk_size=None, decode_unicode=True)

    def next(self) -> dict:
        fields: dict = {}
        for line in self.lines:
            if line == "":
                if "event" in fields:
                    return fields
                fields = {}  # the retry line, or a heartbeat comment
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value
        raise AssertionError("the stream ended without another event")

    def close(self) -> None:
        self.response.close()


def submit(api: str, body: dict) -> dict:
    response = requests.post(f"{api}/v1/jobs", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def test_events_arrive_live_and_resume_without_repeats(processes):
    api = processes.api(api_workers=2, api_threads=4, stream_heartbeat=1, stream_lifetime=120)
    processes.worker()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).round(3)
    dataset = requests.post(
        f"{api}/v1/datasets", json={"features": x.tolist(), "targets": (x[:, 0] > 0).astype(int).tolist()}, timeout=30
    ).json()
    # Minutes of training: it is still running when the test cancels it, seconds from now.
    job = submit(
        api,
        {
            "dataset": dataset["id"],
            "model": {
                "layers": [
                    {"type": "dense", "units": 128, "activation": "relu"},
                    {"type": "dense", "units": 2, "activation": "softmax"},
                ]
            },
            "training": {"epochs": 10000, "seed": 0},
        },
    )
    url = f"{api}/v1/jobs/{job['id']}/events"

    first = Events(url)
    seen = [first.next() for _ in range(3)]
    first.close()
    assert [e["event"] for e in seen] == ["epoch"] * 3
    assert [e["data"]["epoch"] for e in seen] == [1, 2, 3] and [e["id"] for e in seen] == ["1", "2", "3"]
    assert requests.get(f"{api}/v1/jobs/{job['id']}", timeout=10).json()["status"] == "running"

    resumed = Events(url, headers={"Last-Event-ID": "3"})
    seen += [resumed.next() for _ in range(2)]
    assert [e["data"]["epoch"] for e in seen] == [1, 2, 3, 4, 5]
    assert requests.post(f"{api}/v1/jobs/{job['id']}/cancel", timeout=10).status_code == 202
    while (event := resumed.next())["event"] == "epoch":
        seen.append(event)
    resumed.close()
    assert event["data"] == {"status": "canceled", "model_id": job["model_id"]}
    epochs = [e["data"]["epoch"] for e in seen]
    assert epochs == list(range(1, len(epochs) + 1))

    done = requests.get(f"{api}/v1/jobs/{job['id']}", timeout=10).json()
    assert done["progress"]["epoch"] == len(epochs) and done["history"]["loss"] == [e["data"]["loss"] for e in seen]
    late = Events(url)  # after the end: the whole history again, then the status
    replay = []
    while (event := late.next())["event"] == "epoch":
        replay.append(event)
    late.close()
    assert [e["data"] for e in replay] == [e["data"] for e in seen] and event["data"]["status"] == "canceled"


def test_open_streams_leave_other_requests_answering(processes):
    # One process of 4 threads, at most 2 of them streaming.
    api = processes.api(api_workers=1, api_threads=4, api_streams=2, stream_heartbeat=1, stream_lifetime=120)
    job = submit(
        api,
        {
            "dataset": "iris",
            "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
            "training": {"epochs": 3},
        },
    )
    url = f"{api}/v1/jobs/{job['id']}/events"
    streams = [Events(url) for _ in range(2)]  # the job is queued and no worker runs yet: they stay open

    refused = requests.get(url, timeout=10)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    for _ in range(5):
        for method, path, body in [
            ("get", "/healthz", None),
            ("get", f"/v1/jobs/{job['id']}", None),
            ("get", "/v1/datasets", None),
            ("get", f"/v2/models/{job['model_id']}", None),
            ("post", "/v1/jobs", {"dataset": "iris", "model": {"layers": [{"type": "dense", "units": 3}]}}),
        ]:
            # A starved request would wait for a stream to end: minutes. Answered, it takes milliseconds;
            # the bound leaves room for a busy 2-core machine.
            started = time.monotonic()
            response = requests.request(method, api + path, json=body, timeout=30)
            assert response.status_code in (200, 202), (path, response.text)
            assert time.monotonic() - started < 10, path

    processes.worker()  # now the job trains, and both streams see it to the end
    for stream in streams:
        events = [stream.next() for _ in range(4)]
        stream.close()
        assert [e["event"] for e in events] == ["epoch"] * 3 + ["status"]
        assert events[-1]["data"]["status"] == "succeeded"
    wait_until(lambda: requests.get(url, timeout=10).status_code == 200, timeout=30, what="the stream slots to be free")
