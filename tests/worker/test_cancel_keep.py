"""A cancel that keeps what was learned, with a real worker process: ``keep: "best"`` or ``"last"`` ends
the job ``canceled`` with a ready, partial model holding that epoch's weights, which predicts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import wait_until
from tests.service.helpers import submit
from tests.worker.test_jobs import BLOBS_MODEL, finished, job, started_worker


def running_job(client, **training) -> dict:
    """A blobs job of thousands of epochs with a validation split, seen past its 5th epoch."""
    body = {"optimizer": "sgd", "epochs": 3000, "batch_size": 8, "seed": 3, "validation_split": 0.2, **training}
    submitted = submit(client, dataset="blobs", model=BLOBS_MODEL, training=body).json
    wait_until(lambda: job(client, submitted["id"])["progress"]["epoch"] >= 5, timeout=30, what="training to start")
    return submitted


@pytest.mark.parametrize("keep", ["best", "last"])
def test_a_cancel_keeping_weights_leaves_a_ready_partial_model_that_predicts(client, processes, redis, keep):
    started_worker(processes, redis)
    submitted = running_job(client)
    response = client.post(f"/v1/jobs/{submitted['id']}/cancel", json={"keep": keep})
    assert response.status_code == 202, response.json
    assert response.json["cancel_keep"] == keep
    done = finished(client, submitted["id"])
    assert done["status"] == "canceled"
    model = client.get(f"/v1/models/{submitted['model_id']}").json
    assert model["status"] == "ready" and model["partial"] is True and model["kept"] == keep
    stopped = done["progress"]["epoch"]
    assert model["stopped_epoch"] == stopped == len(done["history"]["loss"]) < 3000
    val_loss = done["history"]["val_loss"]
    expected = int(np.argmin(val_loss)) + 1 if keep == "best" else stopped
    assert model["kept_epoch"] == expected
    # The weights are that epoch's: the report on the same held-out rows gives that epoch's val_loss.
    assert model["evaluation"]["on"] == "validation"
    assert model["evaluation"]["log_loss"] == pytest.approx(val_loss[expected - 1], rel=1e-4)
    assert model["metrics"]["val_loss"] == val_loss[expected - 1]
    prediction = client.post(f"/v1/models/{submitted['model_id']}/predict", json={"inputs": [[0.0, 0.0], [3.0, 3.0]]})
    assert prediction.status_code == 200 and len(prediction.json["predictions"]) == 2


def test_a_cancel_keeping_nothing_cancels_the_model_as_before(client, processes, redis):
    started_worker(processes, redis)
    submitted = running_job(client)
    assert client.post(f"/v1/jobs/{submitted['id']}/cancel", json={"keep": "none"}).status_code == 202
    assert finished(client, submitted["id"])["status"] == "canceled"
    model = client.get(f"/v1/models/{submitted['model_id']}").json
    assert model["status"] == "canceled" and "partial" not in model


def test_keep_must_be_best_last_or_none(client):
    submitted = submit(client, training={"epochs": 5}).json
    response = client.post(f"/v1/jobs/{submitted['id']}/cancel", json={"keep": "everything"})
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "keep"
    # Refused before anything moved: the job is still queued.
    assert job(client, submitted["id"])["status"] == "queued"


def test_a_named_job_canceled_keeping_weights_becomes_a_version_but_not_current(client, processes, redis, run_jobs):
    """The kept model is the name's next version (it predicts through NAME@N), and ``current`` stays on the
    version a finished run made: a canceled run is promoted only by a person."""
    first = submit(client, dataset="blobs", model=BLOBS_MODEL, training={"epochs": 2, "seed": 1}, name="blobs-clf")
    assert first.status_code == 202, first.json
    run_jobs()
    started_worker(processes, redis)
    body = {"optimizer": "sgd", "epochs": 3000, "batch_size": 8, "seed": 3, "validation_split": 0.2}
    submitted = submit(client, dataset="blobs", model=BLOBS_MODEL, training=body, name="blobs-clf").json
    wait_until(lambda: job(client, submitted["id"])["progress"]["epoch"] >= 5, timeout=30, what="training to start")
    assert client.post(f"/v1/jobs/{submitted['id']}/cancel", json={"keep": "last"}).status_code == 202
    assert finished(client, submitted["id"])["status"] == "canceled"
    registered = client.get("/v1/registry/blobs-clf").json
    versions = {v["version"]: v["model_id"] for v in registered["versions"]}
    assert versions == {1: first.json["model_id"], 2: submitted["model_id"]}
    assert registered["aliases"]["current"] == 1 and registered["aliases"]["latest"] == 2
    answer = client.post("/v1/models/blobs-clf@2/predict", json={"inputs": [[0.0, 0.0]]})
    assert answer.status_code == 200 and answer.json["model_version"] == 2
