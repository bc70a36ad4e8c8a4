"""End to end over HTTP: ``nnserve api`` (gunicorn, 2 processes) and ``nnserve worker`` as real processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from nnserve.service.builtin import load
from tests.conftest import Processes, free_port, wait_until


@pytest.fixture
def api(processes):
    url = processes.api(api_workers=2, api_threads=4)
    processes.worker()
    return url


def train(api, dataset, model, training) -> dict:
    response = requests.post(
        f"{api}/v1/jobs", json={"dataset": dataset, "model": model, "training": training}, timeout=10
    )
    assert response.status_code == 202, response.text
    job_url = api + response.headers["Location"]

    def finished():
        job = requests.get(job_url, timeout=10).json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    job = wait_until(finished, timeout=120, what="training", interval=0.1)
    assert job["status"] == "succeeded", job
    return job


def predict(api, model_id, inputs) -> dict:
    response = requests.post(f"{api}/v1/models/{model_id}/predict", json={"inputs": inputs}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_iris_trains_to_093_and_predicts_species(api):
    job = train(
        api,
        "iris",
        {
            "layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 100, "batch_size": 16, "seed": 0},
    )
    _, x, y = load("iris")
    body = predict(api, job["model_id"], x.tolist())
    accuracy = np.mean(np.array(body["predictions"]) == y)
    assert accuracy >= 0.93, accuracy
    assert set(body["predictions"]) == {"setosa", "versicolor", "virginica"}
    evaluation = requests.post(
        f"{api}/v1/models/{job['model_id']}/evaluate", json={"dataset": "iris"}, timeout=10
    ).json()
    assert evaluation["metrics"]["accuracy"] >= 0.93


def test_blobs_trains_and_predicts(api):
    job = train(
        api,
        "blobs",
        {
            "layers": [
                {"type": "dense", "units": 8, "activation": "tanh"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        {"optimizer": "adam", "epochs": 20, "seed": 0},
    )
    body = predict(api, job["model_id"], [[0, -2], [2, 2], [-2, 2]])
    assert body["predictions"] == [0, 1, 2]


def test_linear_predicts_ten_at_five(api):
    job = train(
        api,
        "linear",
        {"layers": [{"type": "dense", "units": 1}], "input_scaling": "none"},
        {"optimizer": {"name": "adam", "learning_rate": 0.1}, "epochs": 400, "batch_size": 4, "seed": 0},
    )
    assert abs(predict(api, job["model_id"], [[5]])["predictions"][0] - 10) < 0.2


def test_csv_upload_then_train(api):
    csv = "a,b,kind\n" + "".join(f"{i % 7},{(i * 3) % 5},{'odd' if i % 2 else 'even'}\n" for i in range(40))
    response = requests.post(f"{api}/v1/datasets", files={"file": ("points.csv", csv)}, timeout=10)
    assert response.status_code == 201 and response.json()["classes"] == ["even", "odd"]
    job = train(
        api, response.json()["id"], {"layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]}, {"epochs": 2}
    )
    assert predict(api, job["model_id"], [[1, 2]])["predictions"][0] in ("even", "odd")


def test_errors_over_http(api):
    response = requests.post(f"{api}/v1/models/mdl_nope/predict", json={"inputs": [[1]]}, timeout=10)
    assert response.status_code == 404 and response.headers["Content-Type"] == "application/problem+json"
    response = requests.post(f"{api}/v1/jobs", data="{", headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and response.json()["status"] == 400
    response = requests.get(f"{api}/nowhere", timeout=10)
    assert response.status_code == 404 and response.json()["title"] == "Not Found"


def test_metrics_add_up_across_gunicorn_processes(api):
    for _ in range(20):  # spread over both gunicorn workers by the kernel's accept queue
        requests.get(f"{api}/healthz", timeout=10)
    text = requests.get(f"{api}/metrics", timeout=10).text
    line = next(
        row for row in text.splitlines() if row.startswith('nnserve_http_requests_total{method="GET",route="/healthz"')
    )
    assert float(line.split()[-1]) >= 20


def test_request_ids_reach_the_json_log_lines(tmp_path):
    """gunicorn with NNSERVE_LOG_FORMAT=json on a Redis that is not there: each request's warning is a
    JSON line carrying the request's id, the id the client sent comes back in the header and the
    problem body, and every line of the log (gunicorn's own included) is JSON."""
    dead = Processes(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    try:
        api = dead.api(log_format="json", log_level="INFO")
        response = requests.get(f"{api}/v1/models", headers={"X-Request-ID": "trace-me-7"}, timeout=30)
        assert response.status_code == 503 and response.headers["X-Request-ID"] == "trace-me-7"
        assert response.json()["request_id"] == "trace-me-7"
        made = requests.get(f"{api}/v1/jobs", timeout=30)
        log = tmp_path / "api-0.log"
        wait_until(lambda: made.headers["X-Request-ID"] in log.read_text(), timeout=10, what="the log line")
    finally:
        dead.stop_all()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["logger"].startswith("gunicorn") for line in lines)  # gunicorn's own, as JSON
    warnings = {line.get("request_id"): line for line in lines if "Redis unreachable" in line["message"]}
    assert set(warnings) == {"trace-me-7", made.headers["X-Request-ID"]}
    assert warnings["trace-me-7"]["level"] == "WARNING"
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert access and all(line.get("request_id") for line in access)  # a line per request, with its id
    assert any(line["request_id"] == "trace-me-7" and "/v1/models" in line["message"] for line in access)
