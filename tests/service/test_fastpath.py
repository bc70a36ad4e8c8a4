"""The predict fast path: cache hits are answered without entering Flask, with the same response;
everything else reaches the Flask route and gets its one rendering."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from nnserve.service.settings import Rate
from tests.conftest import wait_until
from tests.service.helpers import FlaskCalls, train

ROW = [5.1, 3.5, 1.4, 0.2]
ALICE, BOB = "alice-key-0123456789", "bob-key-0123456789ab"


def cached(app, client, iris_model, headers=None):
    """Predict until this process's cache holds the model (its invalidation listener must be up first)."""
    cache = app.extensions["nnserve"].cache

    def loaded():
        client.post(f"/v1/models/{iris_model}/predict", json={"inputs": [ROW]}, headers=headers)
        return iris_model in cache

    wait_until(loaded, timeout=10, what="the model in the cache")


def test_a_cached_prediction_skips_flask_and_answers_the_same(app, client, iris_model):
    first = client.post(f"/v1/models/{iris_model}/predict", json={"inputs": [ROW, ROW]})
    cached(app, client, iris_model)
    calls = FlaskCalls(app)

    again = client.post(f"/v1/models/{iris_model}/predict", json={"inputs": [ROW, ROW]})

    assert calls.count == 0
    assert again.status_code == 200 and again.mimetype == "application/json"
    assert again.get_data() == first.get_data()
    assert again.json["predictions"] == ["setosa", "setosa"]


@pytest.mark.parametrize(
    "body, content_type, status, detail",
    [
        ('{"inputs": [[5.1, 3.5]]}', "application/json", 422, "each sample must have shape (4,)"),
        ('{"inputs": [[5.1, 3.5, 1.4, "x"]]}', "application/json", 422, "values must be numbers"),
        ('{"inputs": [[5.1, 3.5, 1.4, 1e39]]}', "application/json", 422, "float32 range"),
        ('{"rows": [[5.1, 3.5, 1.4, 0.2]]}', "application/json", 422, "inputs"),
        ('{"inputs": [[5.1, 3.5', "application/json", 400, "not valid JSON"),
        ('{"inputs": [[5.1, 3.5, 1.4, 0.2]]}', "text/csv", 415, "application/json"),
    ],
    ids=["width", "strings", "range", "field", "broken JSON", "content type"],
)
def test_errors_on_a_cached_model_are_the_routes_own(app, client, iris_model, body, content_type, status, detail):
    cached(app, client, iris_model)
    calls = FlaskCalls(app)

    response = client.post(f"/v1/models/{iris_model}/predict", data=body, content_type=content_type)

    assert calls.count == 1
    assert response.status_code == status and response.mimetype == "application/problem+json"
    assert detail in response.json["detail"]


def test_the_body_limit_holds_on_the_fast_path(make_app, run_jobs):
    app = make_app(max_body_bytes=1000)
    client = app.test_client()
    model_id = train(client, run_jobs)["model_id"]
    cached(app, client, model_id)

    response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [ROW] * 60})

    assert response.status_code == 413


def test_a_deleted_model_is_not_served_from_the_fast_path(app, client, iris_model):
    cached(app, client, iris_model)
    assert client.delete(f"/v1/models/{iris_model}").status_code == 204

    response = client.post(f"/v1/models/{iris_model}/predict", json={"inputs": [ROW]})

    assert response.status_code == 404


def test_keys_and_tenants_hold_on_the_fast_path(make_app, run_jobs):
    app = make_app(api_keys=(SecretStr(ALICE), SecretStr(BOB)))
    client = app.test_client()
    alice = {"Authorization": f"Bearer {ALICE}"}
    job = client.post(
        "/v1/jobs",
        headers=alice,
        json={
            "dataset": "iris",
            "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
            "training": {"optimizer": "adam", "epochs": 5, "seed": 0},
        },
    ).json
    run_jobs()
    cached(app, client, job["model_id"], headers=alice)
    calls = FlaskCalls(app)
    url = f"/v1/models/{job['model_id']}/predict"

    assert client.post(url, json={"inputs": [ROW]}, headers=alice).status_code == 200
    assert calls.count == 0
    assert client.post(url, json={"inputs": [ROW]}).status_code == 401
    assert (
        client.post(url, json={"inputs": [ROW]}, headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code
        == 401
    )
    assert client.post(url, json={"inputs": [ROW]}, headers={"Authorization": f"Bearer {BOB}"}).status_code == 404
    assert calls.count == 3


def test_a_predict_rate_limit_turns_the_fast_path_off(make_app, run_jobs):
    app = make_app(rate_limit_predict=Rate(3, 60))
    client = app.test_client()
    model_id = train(client, run_jobs)["model_id"]
    calls = FlaskCalls(app)

    statuses = [client.post(f"/v1/models/{model_id}/predict", json={"inputs": [ROW]}).status_code for _ in range(5)]

    assert statuses == [200, 200, 200, 429, 429]
    assert calls.count == 5


def test_metrics_count_fast_path_answers_under_the_predict_route(app, client, iris_model):
    cached(app, client, iris_model)
    calls = FlaskCalls(app)
    for _ in range(3):
        client.post(f"/v1/models/{iris_model}/predict", json={"inputs": [ROW]})
    assert calls.count == 0

    text = client.get("/metrics").get_data(as_text=True)

    line = next(
        row
        for row in text.splitlines()
        if row.startswith(
            'nnserve_http_requests_total{method="POST",route="/v1/models/<model_id>/predict",status="200"}'
        )
    )
    assert float(line.split()[-1]) >= 3
