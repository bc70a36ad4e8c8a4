"""Specs and calls the service tests share."""

from __future__ import annotations

from flask import request_started

IRIS_MODEL = {
    "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
LINEAR = {
    "dataset": "linear",
    "model": {"layers": [{"type": "dense", "units": 1}], "input_scaling": "none"},
    "training": {"optimizer": {"name": "adam", "learning_rate": 0.1}, "epochs": 50, "batch_size": 4, "seed": 0},
}
IRIS_TRAINING = {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 60, "batch_size": 16, "seed": 1}


def submit(client, dataset="iris", model=None, training=None, **extra):
    body = {"dataset": dataset, "model": model or IRIS_MODEL, "training": training or IRIS_TRAINING, **extra}
    return client.post("/v1/jobs", json=body)


def train(client, run_jobs, **kwargs) -> dict:
    """Submit a job, run it, and return the finished job."""
    response = submit(client, **kwargs)
    assert response.status_code == 202, response.json
    run_jobs()
    return client.get(f"/v1/jobs/{response.json['id']}").json


class FlaskCalls:
    """Counts the requests that entered Flask (the predict fast path never sends request_started)."""

    def __init__(self, app):
        self.count = 0
        request_started.connect(self.seen, app, weak=False)

    def seen(self, sender, **extra):
        self.count += 1
