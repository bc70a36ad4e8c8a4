"""Evaluation reports over HTTP: stored on the model when its job ends (on its held-out rows, or saying it
has none), the same report from /evaluate, and ``training.validation_data`` as the held-out rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from nnserve import engine
from nnserve.service import builtin, store
from tests.service.helpers import IRIS_MODEL, IRIS_TRAINING, submit, train

REGRESSION = {"layers": [{"type": "dense", "units": 1}]}


def upload(client, features, targets) -> str:
    response = client.post("/v1/datasets", json={"features": features, "targets": targets})
    assert response.status_code == 201, response.json
    return response.json["id"]


def iris_rows(rows) -> tuple[list[list[float]], list[str]]:
    _, features, targets = builtin.load("iris")
    return features[rows].tolist(), targets[rows].tolist()


def test_a_model_stores_its_report_on_the_validation_split(client, run_jobs, redis):
    job = train(client, run_jobs, training={**IRIS_TRAINING, "validation_split": 0.2})
    model = client.get(f"/v1/models/{job['model_id']}").json
    report = model["evaluation"]
    assert report["on"] == "validation" and report["rows"] == 30
    assert report["labels"] == ["setosa", "versicolor", "virginica"]
    assert np.sum(report["confusion_matrix"]) == 30 and report["per_class"]["setosa"]["support"] == 10
    # The stored accuracy is the job's own last val_accuracy: the same rows, the same weights.
    assert report["accuracy"] == pytest.approx(job["history"]["val_accuracy"][-1])
    assert report["log_loss"] == pytest.approx(job["history"]["val_loss"][-1], rel=1e-4)
    assert set(report["calibration"]) == {"bins", "ece"} and len(report["calibration"]["bins"]) == 10
    # Three classes: the top label's confidence is at least 1/3, so the first bins are empty, with null figures.
    assert report["calibration"]["bins"][0] == {"mean_predicted": None, "observed": None, "count": 0}
    assert 0.5 <= report["roc_auc"] <= 1.0


def test_a_model_without_held_out_rows_says_so(client, iris_model):
    report = client.get(f"/v1/models/{iris_model}").json["evaluation"]
    assert report == {"rows": 0, "note": "no held-out rows: the job had neither a validation_split nor validation_data"}


def test_evaluate_returns_the_same_report_as_the_engine(client, iris_model, redis):
    response = client.post(f"/v1/models/{iris_model}/evaluate", json={"dataset": "iris"})
    assert response.status_code == 200, response.json
    body = response.json
    model = engine.loads(store.load_weights(redis, iris_model))
    _, features, targets = builtin.load("iris")
    expected = engine.reports.report(model, features, targets)
    report = body["evaluation"]
    assert report["on"] == "dataset iris" and report["rows"] == 150
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["accuracy"] == body["metrics"]["accuracy"] == expected["accuracy"]
    predictions = client.post(f"/v1/models/{iris_model}/predict", json={"inputs": features.tolist()}).json
    labels = report["labels"]
    assert report["confusion_matrix"] == confusion_matrix(targets, predictions["predictions"], labels=labels).tolist()


def test_a_regression_report(client, run_jobs):
    job = train(
        client,
        run_jobs,
        dataset="linear",
        model=REGRESSION,
        training={"optimizer": {"name": "adam", "learning_rate": 0.1}, "epochs": 50, "seed": 0},
    )
    body = client.post(f"/v1/models/{job['model_id']}/evaluate", json={"dataset": "linear"}).json
    report = body["evaluation"]
    assert report["mae"] == pytest.approx(body["metrics"]["mae"])
    assert set(report) == {"on", "rows", "mae", "rmse", "r2", "residual_quantiles"}
    assert list(report["residual_quantiles"]) == ["5", "25", "50", "75", "95"]


def test_validation_data_are_the_held_out_rows(client, run_jobs):
    rows = np.arange(150)
    held_out = rows % 5 == 0
    train_id = upload(client, *iris_rows(rows[~held_out]))
    validation_id = upload(client, *iris_rows(rows[held_out]))
    training = {
        **IRIS_TRAINING,
        "validation_data": validation_id,
        "early_stopping": {"monitor": "val_loss", "patience": 100},
    }
    job = train(client, run_jobs, dataset=train_id, training=training)
    assert job["status"] == "succeeded", job
    assert job["validation_data"] == validation_id and "validation_data" not in job["training"]
    assert "val_accuracy" in job["history"]
    report = client.get(f"/v1/models/{job['model_id']}").json["evaluation"]
    assert report["on"] == f"dataset {validation_id}" and report["rows"] == 30
    # The report on those rows is what /evaluate gives for that dataset.
    evaluated = client.post(f"/v1/models/{job['model_id']}/evaluate", json={"dataset": validation_id}).json
    assert evaluated["evaluation"]["confusion_matrix"] == report["confusion_matrix"]
    assert evaluated["evaluation"]["accuracy"] == pytest.approx(job["history"]["val_accuracy"][-1])


@pytest.mark.parametrize(
    "make, training, detail",
    [
        (lambda c: "nope", {}, "no dataset 'nope'"),
        (lambda c: 7, {}, "must be the id of a dataset; received 7"),
        (lambda c: "linear", {}, "'linear' has 1 features; the training data has 4"),
        (lambda c: "iris", {"validation_split": 0.2}, "give validation_split or validation_data, not both"),
        (
            lambda c: upload(c, [[1.0, 2.0, 3.0, 4.0]], [1.5]),
            {},
            "has continuous targets; the training data has categorical",
        ),
        (
            lambda c: upload(c, [[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]], ["setosa", "tulip"]),
            {},
            "has the class 'tulip', which the model will not know; it knows ['setosa', 'versicolor', 'virginica']",
        ),
    ],
)
def test_validation_data_that_cannot_validate_is_a_422_naming_it(client, make, training, detail):
    value = make(client)
    response = submit(client, training={**IRIS_TRAINING, **training, "validation_data": value})
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["loc"] == "training.validation_data"
    assert detail in response.json["detail"]


def test_a_val_monitor_needs_held_out_rows_and_validation_data_gives_them(client):
    stopping = {**IRIS_TRAINING, "early_stopping": {"monitor": "val_loss"}}
    assert submit(client, training=stopping).status_code == 422
    assert submit(client, training={**stopping, "validation_data": "iris"}).status_code == 202
    assert submit(client, model=IRIS_MODEL, training={**stopping, "validation_data": None}).status_code == 422


def test_the_openapi_document_describes_the_new_fields(client):
    document = client.get("/openapi.json").json
    schemas = document["components"]["schemas"]
    assert schemas["EvaluateResponse"]["properties"]["evaluation"]["$ref"] == "#/components/schemas/Evaluation"
    evaluation = schemas["Evaluation"]["properties"]
    assert {"on", "rows", "labels", "confusion_matrix", "per_class", "roc_auc", "calibration", "r2"} <= set(evaluation)
    model = schemas["ModelPublic"]["properties"]
    assert {"evaluation", "partial", "kept", "kept_epoch", "stopped_epoch", "initial_model", "initial_epoch"} <= set(
        model
    )
    assert {"initial_model", "initial_epoch", "validation_data", "cancel_keep"} <= set(
        schemas["JobPublic"]["properties"]
    )
    assert "initial_model" in schemas["JobCreate"]["properties"] and "model" not in schemas["JobCreate"]["required"]
    assert "validation_data" in schemas["TrainingSpec"]["properties"]
    cancel = document["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["requestBody"]
    assert cancel["required"] is False
    assert cancel["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CancelRequest"}
    assert schemas["CancelRequest"]["properties"]["keep"]["enum"] == ["none", "best", "last"]
