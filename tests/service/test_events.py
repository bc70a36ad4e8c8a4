"""GET /v1/jobs/{id}/events in process: replay for late clients, Last-Event-ID, the final status, errors,
tenants, the per-process stream limit, heartbeats and the bounded lifetime. Live streaming through
gunicorn while a real worker trains is in tests/e2e/test_events.py."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from tests.service.helpers import IRIS_MODEL, submit, train

TRAINING = {"optimizer": "adam", "epochs": 5, "validation_split": 0.2, "seed": 0}


def parse(text: str) -> list[dict]:
    """SSE text as a list of ``{"event", "id", "data"}`` (comments as ``{"comment"}``, ``retry`` as ``{"retry"}``)."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "":
                fields["comment"] = value
            elif name == "data":
                fields["data"] = json.loads(value)
            else:
                fields[name] = value
        events.append(fields)
    return events


def stream(client, job_id: str, **kwargs) -> list[dict]:
    response = client.get(f"/v1/jobs/{job_id}/events", **kwargs)
    assert response.status_code == 200 and response.mimetype == "text/event-stream", response.data
    assert response.headers["Cache-Control"] == "no-cache"
    return parse(response.get_data(as_text=True))


@pytest.fixture
def finished(client, run_jobs) -> dict:
    job = train(client, run_jobs, training=TRAINING)
    assert job["status"] == "succeeded"
    return job


def test_a_late_client_gets_every_epoch_then_the_status(client, finished):
    events = stream(client, finished["id"])
    assert events[0] == {"retry": "2000"}
    epochs = [e for e in events if e.get("event") == "epoch"]
    assert [e["id"] for e in epochs] == ["1", "2", "3", "4", "5"]
    assert [e["data"]["epoch"] for e in epochs] == [1, 2, 3, 4, 5]
    assert [e["data"]["loss"] for e in epochs] == finished["history"]["loss"]
    assert set(epochs[0]["data"]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert events[-1] == {"event": "status", "data": {"status": "succeeded", "model_id": finished["model_id"]}}
    assert len(events) == 1 + 5 + 1


@pytest.mark.parametrize("how", ["header", "query"])
def test_last_event_id_resumes_without_repeats(client, finished, how):
    kwargs = {"headers": {"Last-Event-ID": "3"}} if how == "header" else {"query_string": {"last_event_id": "3"}}
    events = stream(client, finished["id"], **kwargs)
    assert [e["id"] for e in events if e.get("event") == "epoch"] == ["4", "5"]
    assert events[-1]["event"] == "status"
    assert [e.get("event") for e in stream(client, finished["id"], headers={"Last-Event-ID": "5"})] == [None, "status"]


def test_a_failed_job_ends_with_its_error(client, run_jobs):
    dataset = client.post("/v1/datasets", json={"features": [[0.0], [1.0], [2.0], [3.0]], "targets": [0, 1, 0, 1]}).json
    job = submit(
        client,
        dataset=dataset["id"],
        model={"layers": [{"type": "dense", "units": 2, "activation": "softmax"}]},
        training={"epochs": 2},
    ).json
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    run_jobs()
    status = stream(client, job["id"])[-1]
    assert status["event"] == "status" and status["data"]["status"] == "failed"
    assert status["data"]["error"]["type"] == "JobError" and "deleted" in status["data"]["error"]["detail"]


def test_a_canceled_job_ends_canceled(client):
    job = submit(client).json
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert stream(client, job["id"])[1:] == [
        {"event": "status", "data": {"status": "canceled", "model_id": job["model_id"]}}
    ]


def test_bad_requests(client, finished):
    response = client.get("/v1/jobs/job_nope/events")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    for bad in ("x", "-1", "1.5", "²", "9" * 12):
        response = client.get(f"/v1/jobs/{finished['id']}/events", headers={"Last-Event-ID": bad})
        assert response.status_code == 422 and response.json["errors"][0]["loc"] == "last_event_id", bad


ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef-long"


def test_only_the_jobs_tenant_can_follow_it(make_app, run_jobs):
    app = make_app(api_keys=(SecretStr(ALICE), SecretStr(BOB)))
    alice, bob = app.test_client(), app.test_client()
    alice.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ALICE}"
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {BOB}"
    job = train(alice, run_jobs, training=TRAINING)
    assert stream(alice, job["id"])[-1]["data"]["status"] == "succeeded"
    assert bob.get(f"/v1/jobs/{job['id']}/events").status_code == 404
    assert app.test_client().get(f"/v1/jobs/{job['id']}/events").status_code == 401


def test_a_process_serves_a_limited_number_of_streams(make_app):
    app = make_app(api_threads=4, api_streams=1)
    client = app.test_client()
    job = submit(client, model=IRIS_MODEL).json  # queued, and no worker: its stream stays open
    first = client.get(f"/v1/jobs/{job['id']}/events", buffered=False)
    assert first.status_code == 200 and next(first.response) == b"retry: 2000\n\n"
    refused = client.get(f"/v1/jobs/{job['id']}/events")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert "NNSERVE_API_STREAMS" in refused.json["detail"]
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # other routes are not limited
    first.close()  # as the WSGI server does when the client goes away
    again = client.get(f"/v1/jobs/{job['id']}/events", buffered=False)
    assert again.status_code == 200
    again.close()


def test_an_idle_stream_sends_heartbeats_and_ends_after_its_lifetime(make_app):
    app = make_app(stream_heartbeat=0.2, stream_lifetime=1.5)
    client = app.test_client()
    job = submit(client).json
    events = stream(client, job["id"])  # returns once the lifetime is over: no status, so a client reconnects
    assert {"comment": "keep-alive"} in events
    assert all("event" not in e for e in events)


def test_stream_settings():
    from nnserve.service.settings import Settings

    assert Settings().stream_limit == 4 and Settings(api_threads=5).stream_limit == 2
    assert Settings(api_threads=4, api_streams=3).stream_limit == 3
    with pytest.raises(ValueError, match=r"api_streams .4. must be below api_threads .4."):
        Settings(api_threads=4, api_streams=4)
