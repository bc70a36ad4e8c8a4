"""Idempotency-Key on POST /v1/jobs and /v1/datasets: replays, reuse with another body, keys freed by
requests that created nothing, tenants, expiry, and concurrent duplicates."""

from __future__ import annotations

import io
import threading
import time

import orjson
import pytest
from pydantic import SecretStr

from nnserve.service import idempotency, store
from tests.conftest import wait_until
from tests.service.helpers import IRIS_MODEL, IRIS_TRAINING
from tests.service.test_auth import ALICE, BOB, keyed

JOB = {"dataset": "iris", "model": IRIS_MODEL, "training": {**IRIS_TRAINING, "epochs": 2}}
DATASET = {"features": [[0.0], [1.0], [2.0], [3.0]], "targets": [0.5, 1.5, 2.5, 3.5]}


def post(client, path, body, key, **kwargs):
    return client.post(path, json=body, headers={"Idempotency-Key": key}, **kwargs)


def test_a_retried_job_submission_returns_the_first_job(client, run_jobs, redis):
    first = post(client, "/v1/jobs", JOB, "retry-1")
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    run_jobs()  # the job moves on; the replay is still the response the first request got
    again = post(client, "/v1/jobs", JOB, "retry-1")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json and again.headers["Location"] == first.headers["Location"]
    assert again.mimetype == "application/json"
    assert len(client.get("/v1/jobs").json["items"]) == 1 and store.job_counts(redis) == {
        "queued": 0,
        "running": 0,
        "succeeded": 1,
    }
    assert post(client, "/v1/jobs", JOB, "retry-2").json["id"] != first.json["id"]  # a new key: a new job
    assert client.post("/v1/jobs", json=JOB).json["id"] != first.json["id"]  # no key: as ever


def test_a_retried_upload_returns_the_first_dataset(client):
    first = post(client, "/v1/datasets", DATASET, "upload-1")
    again = post(client, "/v1/datasets", DATASET, "upload-1")
    assert (first.status_code, again.status_code) == (201, 201) and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Location"] == first.headers["Location"]
    assert len(client.get("/v1/datasets").json["items"]) == 4 + 1  # the built-ins and the upload


def test_a_retried_csv_upload_matches_despite_a_new_multipart_boundary(client):
    def upload():
        return client.post(
            "/v1/datasets",
            data={"file": (io.BytesIO(b"x,y\n1,a\n2,b\n3,a\n"), "points.csv")},
            headers={"Idempotency-Key": "csv-1"},
        )

    first, again = upload(), upload()
    assert first.status_code == 201 and again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
    assert first.json["name"] == "points"
    other = client.post(
        "/v1/datasets",
        data={"file": (io.BytesIO(b"x,y\n1,a\n2,b\n9,a\n"), "points.csv")},
        headers={"Idempotency-Key": "csv-1"},
    )
    assert other.status_code == 422


def test_the_key_with_another_body_or_route_is_refused(client):
    assert post(client, "/v1/jobs", JOB, "k").status_code == 202
    for path, body in [("/v1/jobs", {**JOB, "name": "other"}), ("/v1/datasets", DATASET)]:
        response = post(client, path, body, "k")
        assert response.status_code == 422 and response.mimetype == "application/problem+json"
        assert response.json["errors"] == [
            {"loc": "Idempotency-Key", "type": "idempotency_key_reused", "msg": response.json["errors"][0]["msg"]}
        ]
        assert "different request" in response.json["detail"]
    assert len(client.get("/v1/jobs").json["items"]) == 1


def test_a_request_that_created_nothing_frees_its_key(make_app, run_jobs):
    client = make_app(max_active_jobs=1).test_client()
    bad = post(client, "/v1/jobs", {**JOB, "training": {"epochs": 0}}, "fix-me")
    assert bad.status_code == 422
    assert post(client, "/v1/jobs", JOB, "fix-me").status_code == 202  # the corrected request goes through

    refused = post(client, "/v1/jobs", JOB, "later")
    assert refused.status_code == 429  # one job in flight already
    run_jobs()
    retried = post(client, "/v1/jobs", JOB, "later")
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert len(client.get("/v1/jobs").json["items"]) == 2


def test_keys_belong_to_a_tenant(make_app):
    app = make_app(api_keys=(SecretStr(ALICE), SecretStr(BOB)))
    alice, bob = keyed(app, ALICE), keyed(app, BOB)
    mine, theirs = post(alice, "/v1/jobs", JOB, "shared"), post(bob, "/v1/jobs", JOB, "shared")
    assert mine.status_code == theirs.status_code == 202 and mine.json["id"] != theirs.json["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    assert post(alice, "/v1/jobs", JOB, "shared").json["id"] == mine.json["id"]


def test_keys_are_stored_hashed_and_expire(make_app, redis):
    client = make_app(idempotency_ttl=1).test_client()
    first = post(client, "/v1/jobs", JOB, "short-lived-key")
    key = store.idempotency_key(store.PUBLIC, "short-lived-key")
    assert 0 < redis.pttl(key) <= 1000 and not redis.keys(b"*short-lived-key*")
    record = orjson.loads(redis.get(key))
    assert record["status"] == 202 and orjson.loads(record["body"]) == first.json
    wait_until(lambda: not redis.exists(key), timeout=10, what="the key to expire")
    assert post(client, "/v1/jobs", JOB, "short-lived-key").json["id"] != first.json["id"]
    default = post(make_app().test_client(), "/v1/jobs", JOB, "day-long-key")
    assert 23 * 3600 < redis.ttl(store.idempotency_key(store.PUBLIC, "day-long-key")) <= 24 * 3600
    assert default.status_code == 202


def test_a_request_in_flight_makes_its_duplicate_wait(app, client, redis):
    """While the first request holds the key (reserved, not yet answered) a duplicate gets 409."""
    with app.test_request_context("/v1/jobs", method="POST", json=JOB):
        fingerprint = idempotency._fingerprint()
    reservation = orjson.dumps({"fingerprint": fingerprint, "reservation": "r"})
    key = store.idempotency_key(store.PUBLIC, "in-flight")
    assert store.reserve_idempotency_key(redis, key, reservation, 60) is None
    response = post(client, "/v1/jobs", JOB, "in-flight")
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "1" and "still being processed" in response.json["detail"]
    assert client.get("/v1/jobs").json["items"] == []
    assert redis.get(key) == reservation  # the duplicate did not free the first request's reservation
    assert 0 < redis.pttl(key) <= 60_000


def test_concurrent_duplicates_create_one_job(app, redis):
    responses, start = [], threading.Barrier(8)

    def send():
        client = app.test_client()
        start.wait()
        responses.append(post(client, "/v1/jobs", JOB, "stampede"))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = [r for r in responses if r.status_code == 202 and "Idempotent-Replayed" not in r.headers]
    assert len(created) == 1
    for response in responses:
        if response.status_code == 202:
            assert response.json == created[0].json
        else:
            assert response.status_code == 409 and response.headers["Retry-After"] == "1"
    assert redis.zcard(store.index_key(store.PUBLIC, store.JOBS)) == 1 and store.job_counts(redis)["queued"] == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "has space", "tab\there"])
def test_malformed_keys_are_a_400(client, key):
    response = post(client, "/v1/jobs", JOB, key)
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert "Idempotency-Key" in response.json["detail"]
    assert client.get("/v1/jobs").json["items"] == []


def test_openapi_documents_the_header(client):
    paths = client.get("/openapi.json").json["paths"]
    for path in ("/v1/jobs", "/v1/datasets"):
        parameters = paths[path]["post"]["parameters"]
        assert [p["name"] for p in parameters if p["in"] == "header"] == ["Idempotency-Key"]
        assert "409" in paths[path]["post"]["responses"]


def test_a_reservation_is_a_lease_renewed_while_its_request_runs(redis, monkeypatch):
    """The reservation lives LEASE seconds unless renewed; a request that runs longer keeps renewing it."""
    monkeypatch.setattr(idempotency, "LEASE", 0.6)
    key, record = store.idempotency_key(store.PUBLIC, "slow"), b"reserved"
    assert store.reserve_idempotency_key(redis, key, record, idempotency.LEASE) is None
    lease = idempotency._Lease(redis, key, record)
    try:
        time.sleep(2.0)  # over three leases
        assert redis.get(key) == record and 0 < redis.pttl(key) <= 600
    finally:
        lease.stop()
    wait_until(lambda: not redis.exists(key), timeout=5, what="the unrenewed lease to lapse")
