"""A validation_split that leaves no training rows, or no validation rows, is a 422 at submission that
names training.validation_split with the numbers; the engine's split refuses it too (a job already
queued fails at once, with no retries)."""

from __future__ import annotations

import numpy as np
import pytest

from nnserve.engine import SpecError
from nnserve.engine.splitting import split, split_sizes
from nnserve.service import store
from tests.service.helpers import IRIS_MODEL, submit

REGRESSION = {"layers": [{"type": "dense", "units": 1}]}


def six_rows_of_three_classes(client) -> str:
    body = {"features": [[float(i)] for i in range(6)], "targets": ["a", "a", "b", "b", "c", "c"]}
    return client.post("/v1/datasets", json=body).json["id"]


def test_a_split_leaving_no_training_rows(client):
    # linear: 4 rows; 0.9 of them rounds to all 4.
    response = submit(client, dataset="linear", model=REGRESSION, training={"validation_split": 0.9, "epochs": 1})
    assert response.status_code == 422
    assert response.json["errors"][0]["loc"] == "training.validation_split"
    assert response.json["detail"] == (
        "training.validation_split: 0.9 of 4 rows leaves no training rows: 0 for training and 4 for validation"
    )
    assert submit(client, dataset="linear", model=REGRESSION, training={"validation_split": 0.5}).status_code == 202


@pytest.mark.parametrize(
    "fraction, detail",
    [
        # 0.2 of each class of 2 rounds to 0: no validation row in any class.
        (0.2, "0.2 of 6 rows leaves no validation rows: 6 for training and 0 for validation"),
        # 0.8 of each class of 2 rounds to 2: every row held out.
        (0.8, "0.8 of 6 rows leaves no training rows: 0 for training and 6 for validation"),
    ],
)
def test_a_stratified_split_is_counted_per_class(client, fraction, detail):
    model = {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}
    response = submit(
        client, dataset=six_rows_of_three_classes(client), model=model, training={"validation_split": fraction}
    )
    assert response.status_code == 422
    assert (
        response.json["detail"]
        == f"training.validation_split: {detail}, {fraction} of each class's rows held out (rounded)"
    )


def test_a_stratified_split_may_leave_a_class_without_validation_rows(client):
    body = {"features": [[float(i)] for i in range(7)], "targets": ["a", "a", "a", "a", "a", "b", "b"]}
    dataset = client.post("/v1/datasets", json=body).json["id"]
    model = {"layers": [{"type": "dense", "units": 2, "activation": "softmax"}]}
    # 0.2 of class a's 5 rows is 1, of class b's 2 rows 0: b has no validation row, and that is fine.
    assert submit(client, dataset=dataset, model=model, training={"validation_split": 0.2}).status_code == 202


def test_a_dataset_without_class_counts_fails_when_the_job_starts(client, run_jobs, redis):
    """Datasets uploaded before class counts were kept: the split is checked by the engine when the
    job starts, and the job fails at once, without retries."""
    dataset = six_rows_of_three_classes(client)
    redis.hdel(store.dataset_key(dataset), "class_counts")
    model = {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}
    response = submit(client, dataset=dataset, model=model, training={"validation_split": 0.8, "epochs": 2})
    assert response.status_code == 202
    run_jobs()
    job = client.get(f"/v1/jobs/{response.json['id']}").json
    assert job["status"] == "failed" and job["error"]["type"] == "SpecError"
    assert "leaves no training rows" in job["error"]["detail"] and "retrying" not in job["error"]["detail"]


def test_engine_split_sizes_match_the_split():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [5, 3, 8])
    for fraction in (0.1, 0.25, 0.5, 0.75):
        train, val = split(len(labels), fraction, np.random.default_rng(1), labels)
        assert (len(train), len(val)) == split_sizes(len(labels), fraction, np.bincount(labels).tolist())
        train, val = split(20, fraction, rng, None)
        assert (len(train), len(val)) == split_sizes(20, fraction)
    with pytest.raises(SpecError, match="leaves no training rows"):
        split(1, 0.5, rng, None)
    with pytest.raises(SpecError, match="leaves no validation rows"):
        split(4, 0.1, rng, np.array([0, 0, 1, 1]))


def test_iris_default_split_is_accepted(client):
    assert submit(client, model=IRIS_MODEL, training={"validation_split": 0.2, "epochs": 1}).status_code == 202
