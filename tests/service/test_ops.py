"""Operations routes and the error paths every route shares: health, readiness, metrics,
OpenAPI, docs, unknown routes, unexpected errors, Redis down."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import wait_until
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


def test_metrics_per_model_cache_and_job_durations(make_app, client, run_jobs):
    named = train(client, run_jobs, training={"epochs": 1}, name="iris-small")["model_id"]
    unnamed = train(client, run_jobs, training={"epochs": 1})["model_id"]
    app = make_app()
    api = app.test_client()
    row = [5.1, 3.5, 1.4, 0.2]
    assert api.post(f"/v1/models/{named}/predict", json={"inputs": [row] * 2}).status_code == 200
    wait_until(lambda: app.extensions["nnserve"].cache.listening, timeout=5, what="the cache to listen")
    for _ in range(2):  # the model is cached by the first; the second is a hit (the fast path's)
        assert api.post(f"/v1/models/{named}/predict", json={"inputs": [row] * 3}).status_code == 200
    assert api.post(f"/v1/models/{named}/predict", json={"inputs": [[1.0]]}).status_code == 422
    assert api.post(f"/v2/models/{unnamed}/infer", json=_infer([row])).status_code == 200

    text = api.get("/metrics").get_data(as_text=True)
    # a named job's model is version 1 of its registered name
    assert 'nnserve_model_requests_total{model="iris-small",version="1"} 4.0' in text
    assert 'nnserve_model_rows_total{model="iris-small",version="1"} 8.0' in text
    assert 'nnserve_model_errors_total{model="iris-small",version="1"} 1.0' in text
    assert 'nnserve_model_predict_duration_seconds_count{model="iris-small",version="1"} 3.0' in text
    assert 'nnserve_model_requests_total{model="unnamed",version=""} 1.0' in text
    assert unnamed not in text and named not in text  # ids are never label values
    hits, misses = (_sample(text, f'nnserve_model_cache_lookups_total{{result="{r}"}}') for r in ("hit", "miss"))
    assert hits >= 1 and misses >= 1 and hits + misses == 5
    assert 'nnserve_job_duration_seconds_count{status="succeeded"} 2.0' in text
    assert 'nnserve_job_duration_seconds_bucket{le="+Inf",status="succeeded"} 2.0' in text
    assert _sample(text, 'nnserve_job_duration_seconds_bucket{le="86400.0",status="succeeded"}') == 2


def _infer(rows):
    return {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}


def _sample(text: str, series: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(series + " ")))


def test_openapi_covers_every_route(app, client):
    document = client.get("/openapi.json").json
    assert document["openapi"] == "3.1.0"
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
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
    # pydantic's JSON Schema 2020-12 as it is: null is a type, not 3.0's "nullable".
    assert "nullable" not in str(document)
    assert {"type": "null"} in schemas["JobPublic"]["properties"]["started_at"]["anyOf"]
    listing = schemas["JobList"]
    assert set(listing["required"]) >= {"items", "total", "next"}


def test_docs_are_swagger_ui_5_served_locally(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http" not in html.replace("/openapi.json", "")  # no CDN
    assets = re.findall(r'(?:src|href)="(/static/vendor/swagger-ui-(5\.[0-9.]+)/[^"]+)"', html)
    assert {path.rsplit("/", 1)[1] for path, _ in assets} == {"swagger-ui-bundle.js", "swagger-ui.css"}
    for path, version in assets:
        with client.get(path) as response:
            assert response.status_code == 200 and len(response.data) > 100_000
            assert response.headers["Cache-Control"].startswith("public, max-age=31536000")
            if path.endswith(".js"):  # the bundle names its own version
                assert f'PACKAGE_VERSION:"{version}"' in response.get_data(as_text=True)
    with client.get(assets[0][0].rsplit("/", 1)[0] + "/LICENSE") as licence:
        assert licence.status_code == 200 and "Apache License" in licence.get_data(as_text=True)


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
