"""Limits: rate limits per key or address (shared through Redis), jobs in flight per tenant, the compute
budget, model size, body size, and the job timeout. Each refusal is a problem naming its limit."""

from __future__ import annotations

import math
import threading
import time

import pytest
from pydantic import SecretStr, ValidationError

from nnserve.service import store
from nnserve.service.settings import Rate, Settings
from tests.conftest import wait_until
from tests.service.helpers import IRIS_MODEL, submit, train
from tests.service.test_auth import ALICE, BOB, keyed

TINY = {"epochs": 1}


def from_address(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def assert_429(response, *fragments: str, retry_after: int | None = None):
    assert response.status_code == 429 and response.mimetype == "application/problem+json", response.data
    assert response.json["type"] == "urn:nnserve:problem:too-many-requests" and response.json["status"] == 429
    for fragment in fragments:
        assert fragment in response.json["detail"], response.json["detail"]
    if retry_after is not None:  # the window slides by tenths: a request frees up to a tenth late
        assert 1 <= int(response.headers["Retry-After"]) <= math.ceil(retry_after * 1.1)
        assert response.headers["RateLimit-Reset"] == response.headers["Retry-After"]
        assert response.headers["RateLimit-Remaining"] == "0"


# Rate limits ---------------------------------------------------------------------------------


def test_job_submissions_are_rate_limited(make_app, redis):
    client = make_app(rate_limit_jobs=Rate(2, 60)).test_client()
    assert [submit(client, training=TINY).status_code for _ in range(2)] == [202, 202]
    response = submit(client, training=TINY)
    assert_429(
        response, "at most 2 job submissions per minute per client address", "NNSERVE_RATE_LIMIT_JOBS", retry_after=60
    )
    assert f"try again in {response.headers['Retry-After']} s" in response.json["detail"]
    assert len(client.get("/v1/jobs").json["items"]) == 2  # the refused one created nothing
    assert client.get("/v1/jobs").status_code == 200  # other routes are not limited
    assert 0 < redis.pttl(store.rate_key("jobs", "ip:127.0.0.1")) <= 66_000  # the window and one tenth


def test_the_count_is_shared_by_api_processes(make_app):
    """Two apps stand for two API replicas on one Redis."""
    first, second = (make_app(rate_limit_jobs=Rate(3, 60)).test_client() for _ in range(2))
    assert submit(first, training=TINY).status_code == 202
    assert submit(second, training=TINY).status_code == 202
    assert submit(first, training=TINY).status_code == 202
    assert_429(submit(second, training=TINY))
    assert_429(submit(first, training=TINY))


def test_limits_count_per_key_or_per_address(make_app):
    app = make_app(rate_limit_jobs=Rate(1, 3600))
    assert submit(from_address(app, "10.0.0.1"), training=TINY).status_code == 202
    assert_429(submit(from_address(app, "10.0.0.1"), training=TINY), "per hour per client address")
    assert submit(from_address(app, "10.0.0.2"), training=TINY).status_code == 202

    keyed_app = make_app(rate_limit_jobs=Rate(1, 3600), api_keys=(SecretStr(ALICE), SecretStr(BOB)))
    alice, bob = keyed(keyed_app, ALICE), keyed(keyed_app, BOB)
    alice.environ_base["REMOTE_ADDR"] = bob.environ_base["REMOTE_ADDR"] = "10.0.0.1"  # the same address as above
    assert submit(alice, training=TINY).status_code == 202
    assert_429(submit(alice, training=TINY), "per API key")
    assert submit(bob, training=TINY).status_code == 202
    assert keyed(keyed_app, None).post("/v1/jobs", json={}).status_code == 401  # no key: refused before counting


def test_a_window_ends_and_the_count_starts_again(make_app, redis):
    client = make_app(rate_limit_jobs=Rate(1, 1)).test_client()
    assert submit(client, training=TINY).status_code == 202
    assert_429(submit(client, training=TINY), "per second", retry_after=1)
    wait_until(lambda: not redis.exists(store.rate_key("jobs", "ip:127.0.0.1")), timeout=10, what="the window to end")
    assert submit(client, training=TINY).status_code == 202


def test_forwarded_for_names_the_client_behind_a_trusted_proxy(make_app):
    app = make_app(rate_limit_jobs=Rate(1, 3600), forwarded_hops=1)
    client = app.test_client()
    assert submit(client, training=TINY).status_code == 202
    first = client.post(
        "/v1/jobs",
        json={"dataset": "iris", "model": IRIS_MODEL, "training": TINY},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert first.status_code == 202  # another client than the proxy itself
    again = client.post(
        "/v1/jobs",
        json={"dataset": "iris", "model": IRIS_MODEL, "training": TINY},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert_429(again)


def test_predictions_are_rate_limited(make_app, client, run_jobs):
    model_id = train(client, run_jobs, training=TINY)["model_id"]
    limited = make_app(rate_limit_predict=Rate(3, 60)).test_client()
    for _ in range(3):
        assert limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 200
    response = limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]})
    assert_429(response, "at most 3 predict calls per minute", "NNSERVE_RATE_LIMIT_PREDICT", retry_after=60)
    assert submit(limited, training=TINY).status_code == 202  # job submissions have their own limit (none)


def test_every_limited_response_says_where_its_caller_stands(make_app, client, run_jobs):
    model_id = train(client, run_jobs, training=TINY)["model_id"]
    limited = make_app(rate_limit_predict=Rate(3, 60)).test_client()
    invalid = limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1]]})
    assert invalid.status_code == 422  # an error of a limited route counts and says so too
    headers = [invalid.headers]
    for _ in range(2):
        response = limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]})
        assert response.status_code == 200
        headers.append(response.headers)
    assert [h["RateLimit-Remaining"] for h in headers] == ["2", "1", "0"]
    assert {h["RateLimit-Limit"] for h in headers} == {"3"}
    assert all(1 <= int(h["RateLimit-Reset"]) <= 66 for h in headers)
    assert "Retry-After" not in headers[-1]
    assert_429(limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]}), retry_after=60)
    unlimited = limited.get("/v1/models")
    assert unlimited.status_code == 200 and "RateLimit-Limit" not in unlimited.headers


def test_the_window_slides_so_no_burst_doubles_the_limit_across_its_edge(make_app):
    """3 requests per 4 s: one at 0 s, two at 2 s, then a burst at 4.8 s. A fixed window opened by the
    first request would have ended at 4 s and let three more through (six within 2.8 s); the sliding
    window lets through only the one that the request at 0 s freed."""
    client = make_app(rate_limit_jobs=Rate(3, 4)).test_client()
    start = time.monotonic()

    def at(seconds: float) -> None:
        time.sleep(max(0.0, start + seconds - time.monotonic()))

    assert submit(client, training=TINY).status_code == 202
    at(2.0)
    assert [submit(client, training=TINY).status_code for _ in range(2)] == [202, 202]
    assert_429(submit(client, training=TINY))
    # The request made by 0.2 s leaves the window by 4.6 s (the window's tenths, 0.4 s, err late);
    # those made after 2 s stay in it until 6 s.
    at(4.8)
    burst = [submit(client, training=TINY) for _ in range(4)]
    assert time.monotonic() - start < 6.0, "too slow to test the edge"
    assert [r.status_code for r in burst] == [202, 429, 429, 429]
    assert burst[0].headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(burst[1].headers["Retry-After"]) <= 2  # the requests at 2 s leave at about 6 s


def test_predict_makes_no_redis_call_without_a_predict_limit(make_app, client, run_jobs, redis):
    model_id = train(client, run_jobs, training=TINY)["model_id"]
    app = make_app(rate_limit_jobs=Rate(100, 60))  # a limit on jobs only
    limited = app.test_client()
    cache = app.extensions["nnserve"].cache
    limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]})
    wait_until(lambda: cache.listening, timeout=5, what="the cache to listen")
    limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]})
    assert model_id in cache
    before = redis.info("stats")["total_commands_processed"]
    for _ in range(5):
        assert limited.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 200
    assert redis.info("stats")["total_commands_processed"] - before <= 1 + 1  # INFO itself, once


@pytest.mark.parametrize(
    "text, rate",
    [
        ("30/minute", Rate(30, 60)),
        (" 1 / Second ", Rate(1, 1)),
        ("6000/hour", Rate(6000, 3600)),
        ("2/day", Rate(2, 86400)),
        ("", None),
        ("off", None),
    ],
)
def test_rate_settings(text, rate):
    assert Settings(rate_limit_jobs=text).rate_limit_jobs == rate


@pytest.mark.parametrize("text", ["30", "30/fortnight", "0/minute", "-1/minute", "x/minute", "30/minute/2"])
def test_bad_rate_settings_fail_at_start_up(text):
    with pytest.raises(ValidationError, match="like '30/minute'"):
        Settings(rate_limit_predict=text)


# Jobs in flight per tenant ---------------------------------------------------------------------


def test_jobs_queued_or_running_per_tenant(make_app, run_jobs, redis):
    client = make_app(max_active_jobs=2).test_client()
    first, second = (submit(client, training=TINY).json for _ in range(2))
    response = submit(client, training=TINY)
    assert_429(response, "you have 2 jobs queued or running; the limit is 2", "NNSERVE_MAX_ACTIVE_JOBS")
    assert len(client.get("/v1/jobs").json["items"]) == 2

    assert client.post(f"/v1/jobs/{first['id']}/cancel").status_code == 202  # a canceled job frees its place
    third = submit(client, training=TINY)
    assert third.status_code == 202
    assert_429(submit(client, training=TINY))
    run_jobs()  # and so do finished ones
    assert {client.get(f"/v1/jobs/{j}").json["status"] for j in (second["id"], third.json["id"])} == {"succeeded"}
    assert [submit(client, training=TINY).status_code for _ in range(3)] == [202, 202, 429]
    assert redis.scard(store.active_jobs_key(store.PUBLIC)) == 2  # the finished ones were dropped from the count


def test_jobs_in_flight_are_counted_per_key(make_app):
    app = make_app(max_active_jobs=1, api_keys=(SecretStr(ALICE), SecretStr(BOB)))
    alice, bob = keyed(app, ALICE), keyed(app, BOB)
    assert submit(alice, training=TINY).status_code == 202
    assert_429(submit(alice, training=TINY), "the limit is 1")
    assert submit(bob, training=TINY).status_code == 202


def test_concurrent_submissions_cannot_overshoot_the_limit(make_app, redis):
    app = make_app(max_active_jobs=3)
    statuses, start = [], threading.Barrier(8)

    def post():
        client = app.test_client()
        start.wait()
        statuses.append(submit(client, training=TINY).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * 3 + [429] * 5
    assert store.job_counts(redis)["queued"] == 3 and redis.zcard(store.index_key(store.PUBLIC, store.JOBS)) == 3


# Size and compute ----------------------------------------------------------------------------------


def test_compute_budget(make_app):
    client = make_app(max_compute=100_000).test_client()
    # iris: 150 rows x 20% for validation = 120 training rows; 4-8-3 = 67 parameters.
    response = submit(client, training={"epochs": 13, "validation_split": 0.2})
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert response.json["errors"][0]["loc"] == "training.epochs"
    detail = response.json["detail"]
    assert "13 epochs x 120 training rows x 67 parameters = 1.05e+05" in detail
    assert "compute budget of 1e+05" in detail and "NNSERVE_MAX_COMPUTE" in detail
    assert submit(client, training={"epochs": 12, "validation_split": 0.2}).status_code == 202
    assert submit(client, training={"epochs": 12}).status_code == 422  # all 150 rows train


def test_parameter_limit(make_app):
    response = submit(make_app(max_parameters=66).test_client())
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "model.layers"
    assert "67 parameters; the server's limit is 66" in response.json["detail"]


def test_body_size_limit_names_the_limit(make_app):
    client = make_app(max_body_bytes=1000).test_client()
    for path in ("/v1/datasets", "/v1/jobs"):
        response = client.post(path, json={"features": [[1.0]] * 500, "targets": [1] * 500})
        assert response.status_code == 413 and response.mimetype == "application/problem+json"
        assert "limit of 1000 bytes (NNSERVE_MAX_BODY_BYTES)" in response.json["detail"]


def test_dataset_width_limit(make_app):
    """(The row limit is tested with the dataset routes.)"""
    client = make_app(max_features=2).test_client()
    response = client.post("/v1/datasets", json={"features": [[1, 2, 3]] * 2, "targets": [1, 2]})
    assert response.status_code == 422 and "between 1 and 2 are allowed" in response.json["detail"]


# The job timeout ----------------------------------------------------------------------------------


def test_a_job_over_its_time_limit_fails_with_the_reason(make_app, processes):
    """A real worker: RQ's death penalty interrupts the forked work horse, and the job is not retried."""
    client = make_app(job_timeout=1).test_client()
    submitted = submit(client, dataset="blobs", training={"optimizer": "sgd", "epochs": 10_000, "batch_size": 8}).json
    processes.worker()

    def ended():
        job = client.get(f"/v1/jobs/{submitted['id']}").json
        return job if job["status"] not in ("queued", "running") else None

    job = wait_until(ended, timeout=120, what="the job to end")
    assert job["status"] == "failed" and job["attempts"] == 1, job
    assert job["error"]["type"] == "JobTimeoutException" and "timeout" in job["error"]["detail"], job["error"]
    assert 0 < job["progress"]["epoch"] < 10_000
    assert client.get(f"/v1/models/{submitted['model_id']}").json["status"] == "failed"
