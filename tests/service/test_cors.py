"""CORS: off by default; for the origins in NNSERVE_CORS_ORIGINS, preflights answered and answers readable.
(A real cross-origin fetch from a browser is in tests/e2e/test_dashboard.py.)"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nnserve.service.settings import Settings
from tests.service.helpers import train

APP_ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
}


def test_off_by_default(client):
    response = client.get("/v1/models", headers={"Origin": APP_ORIGIN})
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options("/v1/jobs", headers=PREFLIGHT)
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_a_preflight_from_an_allowed_origin_is_answered(make_app):
    client = make_app(cors_origins=(APP_ORIGIN, "http://localhost:3000")).test_client()
    response = client.options("/v1/jobs", headers=PREFLIGHT)
    assert response.status_code == 204 and response.data == b""
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN and response.headers["Vary"] == "Origin"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "last-event-id", "x-request-id"} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0

    answer = client.get("/v1/jobs", headers={"Origin": APP_ORIGIN})
    assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = answer.headers["Access-Control-Expose-Headers"]
    assert all(h in exposed for h in ("Link", "Location", "X-Request-ID", "RateLimit-Remaining", "Retry-After"))
    problem = client.get("/v1/jobs/job_nope", headers={"Origin": APP_ORIGIN})
    assert problem.status_code == 404 and problem.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_other_origins_get_no_cors_headers(make_app):
    client = make_app(cors_origins=(APP_ORIGIN,)).test_client()
    stranger = {**PREFLIGHT, "Origin": "https://evil.example.net"}
    preflight = client.options("/v1/jobs", headers=stranger)
    assert preflight.status_code != 204 and "Access-Control-Allow-Origin" not in preflight.headers
    answer = client.get("/v1/jobs", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in answer.headers and answer.headers["Vary"] == "Origin"


def test_any_origin_on_predict(make_app, client, run_jobs):
    model_id = train(client, run_jobs, training={"epochs": 1})["model_id"]
    open_client = make_app(cors_origins=("*",)).test_client()
    for _ in range(3):  # through the route, then (the model cached) through the fast path
        response = open_client.post(
            f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]}, headers={"Origin": APP_ORIGIN}
        )
        assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("origins", ["app.example.com", "https://app.example.com/path", "ftp://x"])
def test_origins_must_be_origins(origins):
    with pytest.raises(ValidationError, match="scheme://host"):
        Settings(cors_origins=origins)


def test_origins_setting():
    assert Settings(cors_origins=" https://a.example , http://b.example:8080/ ").cors_origins == (
        "https://a.example",
        "http://b.example:8080",
    )
    assert Settings().cors_origins == ()
