"""Operations routes and the error paths every route shares: health, readiness, metrics,
OpenAPI, docs, unknown routes, unexpected errors, Redis down."""

from __future__ import annotations

import time

import pytest

from tests.service.helpers import train


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz(client):
    body = client.get("/readyz").json
    assert {k: body[k] for k in ("status", "redis", "warnings")} == {"status": "ready", "redis": True, "warnings": []}
    memory = body["memory"]
    assert memory["eviction_policy"] == "noeviction" and memory["full"] is False and memory["used_bytes"] > 0


def test_metrics(client, run_jobs):
    train(client, run_jobs, training={"epochs": 1})
    client.get("/v1/jobs/nope")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'nnserve_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text
    assert 'nnserve_http_requests_total{method="GET",route="/v1/jobs/<job_id>",status="404"} 1.0' in text
    assert 'nnserve_http_request_duration_seconds_count{route="/v1/jobs"} 1.0' in text
    assert 'nnserve_jobs{status="succeeded"} 1.0' in text and 'nnserve_jobs{status="running"} 0.0' in text
    assert "nnserve_queue_depth 0.0" in text and "nnserve_redis_up 1.0" in text
    assert "nnserve_redis_evicting 0.0" in text and "nnserve_redis_memory_max_bytes 0.0" in text


def test_openapi_covers_every_route(app, client):
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.0")
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "ops.docs_static"):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
    create = document["paths"]["/v1/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
    assert create["responses"]["422"]["content"]["application/problem+json"]
    upload = document["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert set(upload) == {"application/json", "multipart/form-data"}
    schemas = document["components"]["schemas"]
    assert "DenseLayer" in schemas and "relu" in str(schemas)
    assert '"type": "null"' not in str(document).replace("'", '"')  # converted to OpenAPI 3.0's nullable


def test_docs_are_served_locally(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http" not in html.replace("/openapi.json", "")  # no CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        with client.get(f"/docs/static/{asset}") as response:
            assert response.status_code == 200 and len(response.data) > 1000


def test_unknown_route_and_method(client):
    response = client.get("/v1/nothing")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert response.json["status"] == 404
    response = client.put("/v1/datasets")
    assert response.status_code == 405 and response.mimetype == "application/problem+json"
    assert "GET" in response.headers["Allow"]


def test_unexpected_errors_become_a_plain_500(app, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    assert "secret" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)
    assert "secret internals" in caplog.text  # logged with its traceback


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/v1/datasets", None),
        ("get", "/v1/datasets/ds_x", None),
        ("post", "/v1/jobs", {"dataset": "iris", "model": {"layers": [{"type": "dense", "units": 3}]}}),
        ("get", "/v1/jobs", None),
        ("get", "/v1/models/mdl_x", None),
        ("post", "/v1/models/mdl_x/predict", {"inputs": [[1]]}),
    ],
)
def test_redis_down_is_a_fast_503(make_app, redis_server, method, path, body):
    client = make_app().test_client()
    redis_server.stop()
    try:
        started = time.monotonic()
        response = getattr(client, method)(path, json=body)
        assert response.status_code == 503 and response.mimetype == "application/problem+json"
        assert response.headers["Retry-After"] and "Redis" in response.json["detail"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
        assert "nnserve_redis_up 0.0" in client.get("/metrics").get_data(as_text=True)
        assert time.monotonic() - started < 5
    finally:
        redis_server.start()


def test_openapi_document_is_valid(client):
    from openapi_spec_validator import validate

    validate(client.get("/openapi.json").json)
