"""Warm start (``initial_model``): training continues from a model's weights, scaling and labels, to a
lower loss than it had; the architecture is copied or must match layer for layer; the data must fit it."""

from __future__ import annotations

import numpy as np
import pytest

from nnserve.service import builtin
from tests.service.helpers import IRIS_MODEL, submit, train

SHORT = {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 5, "batch_size": 16, "seed": 1}


@pytest.fixture
def initial(client, run_jobs) -> dict:
    """A briefly trained iris job (5 epochs): far from its best loss."""
    job = train(client, run_jobs, training=SHORT)
    assert job["status"] == "succeeded"
    return job


def warm(client, run_jobs, initial_model, training, **extra) -> dict:
    """Submit a warm start without a model (its architecture copied), run it, return the finished job."""
    body = {"dataset": "iris", "training": training, "initial_model": initial_model, **extra}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.json
    run_jobs()
    return client.get(f"/v1/jobs/{response.json['id']}").json


def loss_on_iris(client, model_id) -> float:
    return client.post(f"/v1/models/{model_id}/evaluate", json={"dataset": "iris"}).json["loss"]


def test_a_warm_start_continues_to_a_lower_loss_and_keeps_the_labels(client, run_jobs, initial):
    job = warm(client, run_jobs, initial["model_id"], {**SHORT, "epochs": 30})
    assert job["status"] == "succeeded", job
    assert job["initial_model"] == initial["model_id"] and job["initial_epoch"] == 5
    assert job["model"] == initial["model"]  # copied
    # It continued: its first epoch already starts near where the initial model ended, far below a fresh start.
    assert job["history"]["loss"][0] < initial["history"]["loss"][0]
    assert abs(job["history"]["loss"][0] - initial["history"]["loss"][-1]) < abs(
        initial["history"]["loss"][0] - initial["history"]["loss"][-1]
    )
    assert loss_on_iris(client, job["model_id"]) < loss_on_iris(client, initial["model_id"])
    model = client.get(f"/v1/models/{job['model_id']}").json
    assert model["initial_model"] == initial["model_id"] and model["initial_epoch"] == 5
    assert model["epochs_trained"] == 35
    assert model["output"]["classes"] == ["setosa", "versicolor", "virginica"]
    # Chained: the next warm start counts every epoch behind the weights.
    again = warm(client, run_jobs, job["model_id"], SHORT)
    assert again["initial_epoch"] == 35 and again["status"] == "succeeded"
    assert client.get(f"/v1/models/{again['model_id']}").json["epochs_trained"] == 40


def test_a_dataset_with_some_of_the_classes_keeps_every_label(client, run_jobs, initial):
    _, features, targets = builtin.load("iris")
    two = targets != "virginica"
    body = {"features": features[two].tolist(), "targets": targets[two].tolist()}
    dataset = client.post("/v1/datasets", json=body).json["id"]
    job = train(client, run_jobs, dataset=dataset, model=IRIS_MODEL, training=SHORT, initial_model=initial["model_id"])
    assert job["status"] == "succeeded", job
    model = client.get(f"/v1/models/{job['model_id']}").json
    assert model["output"]["classes"] == ["setosa", "versicolor", "virginica"]
    prediction = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": [[6.7, 3.0, 5.2, 2.3]]}).json
    assert len(prediction["probabilities"][0]) == 3
    assert set(prediction["predictions"]) <= {"setosa", "versicolor", "virginica"}


def small_dataset(client, targets) -> str:
    features = np.linspace(0, 1, 4 * len(targets)).reshape(len(targets), 4).tolist()
    return client.post("/v1/datasets", json={"features": features, "targets": targets}).json["id"]


@pytest.mark.parametrize(
    "change, loc, detail",
    [
        (
            {"model": {"layers": [{"type": "dense", "units": 16, "activation": "relu"}, IRIS_MODEL["layers"][1]]}},
            "model.layers.0.units",
            "is 16; layer 0 of initial_model",
        ),
        (
            {"model": {"layers": [{"type": "dense", "units": 8, "activation": "tanh"}, IRIS_MODEL["layers"][1]]}},
            "model.layers.0.activation",
            "is 'tanh'",
        ),
        (
            {"model": {"layers": [*IRIS_MODEL["layers"], {"type": "dropout", "rate": 0.1}]}},
            "model.layers",
            "has 3 layers; initial_model",
        ),
        ({"model": {**IRIS_MODEL, "input_scaling": "none"}}, "model.input_scaling", "is 'none'"),
        ({"initial_model": "mdl_0000000000000000"}, "initial_model", "no model 'mdl_0000000000000000'"),
        ({"dataset": "linear"}, "initial_model", "is a classification model; dataset 'linear' has continuous"),
        ({"dataset": "blobs"}, "initial_model", "takes 4 features; dataset 'blobs' has 2"),
        (
            {"dataset": lambda client: small_dataset(client, ["setosa", "tulip"])},
            "dataset",
            "has the class 'tulip', which initial_model",
        ),
    ],
)
def test_a_warm_start_that_does_not_fit_is_a_422_naming_the_first_mismatch(client, initial, change, loc, detail):
    body = {"model": None, "training": SHORT, "initial_model": initial["model_id"], **change}
    if callable(body.get("dataset")):
        body["dataset"] = body["dataset"](client)
    response = client.post("/v1/jobs", json={"dataset": "iris", **body})
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["loc"] == loc
    assert detail in response.json["detail"]


def test_a_model_is_required_without_an_initial_model(client):
    response = client.post("/v1/jobs", json={"dataset": "iris", "training": SHORT})
    assert response.status_code == 422
    assert response.json["errors"][0]["loc"] == "model"


def test_a_model_still_training_cannot_start_another(client):
    pending = submit(client, training=SHORT).json["model_id"]
    response = client.post("/v1/jobs", json={"dataset": "iris", "training": SHORT, "initial_model": pending})
    assert response.status_code == 422
    assert "has no weights: its job is pending" in response.json["detail"]
