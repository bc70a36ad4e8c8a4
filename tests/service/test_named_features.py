"""Named features on /v1 predict: ``records`` and ``columns`` with ``data`` are matched to the model's
feature names by name, in any order; a missing or unknown column is a 422 naming it."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.service.helpers import FlaskCalls, train

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def predict(client, model_id, body):
    return client.post(f"/v1/models/{model_id}/predict", json=body)


def records(rows, names=NAMES):
    return [dict(reversed(list(zip(names, row)))) for row in rows]  # keys in another order than the model's


def test_records_and_columns_in_any_order_answer_as_rows(client, iris_model):
    expected = predict(client, iris_model, {"inputs": ROWS}).json
    by_records = predict(client, iris_model, {"records": records(ROWS)})
    order = [2, 0, 3, 1]
    by_columns = predict(
        client,
        iris_model,
        {"columns": [NAMES[i] for i in order], "data": [[row[i] for i in order] for row in ROWS]},
    )
    assert by_records.status_code == by_columns.status_code == 200
    assert by_records.json == by_columns.json == expected


@pytest.mark.parametrize(
    "body, loc, fragment",
    [
        (
            {"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]},
            "records.0",
            "missing column 'petal_width'",
        ),
        (
            {"records": [dict(zip(NAMES, ROWS[0])), {**dict(zip(NAMES, ROWS[1])), "colour": 1}]},
            "records.1",
            "unknown column 'colour'",
        ),
        ({"columns": NAMES[:3], "data": [ROWS[0][:3]]}, "columns", "missing column 'petal_width'"),
        ({"columns": [*NAMES[:3], "petal_wdith"], "data": [ROWS[0]]}, "columns", "missing column 'petal_width'"),
        ({"columns": [*NAMES, "x"], "data": [[*ROWS[0], 1]]}, "columns", "unknown column 'x'"),
        ({"columns": [*NAMES, "sepal_width"], "data": [[*ROWS[0], 1]]}, "columns", "'sepal_width' is named twice"),
        ({"columns": NAMES, "data": [ROWS[0][:3]]}, "data", "each row must have 4 values"),
        ({"columns": NAMES}, "data", "field required"),
        ({"records": []}, "records", "non-empty list"),
        ({"records": [dict(zip(NAMES, ["a", 1, 2, 3]))]}, "records", "values must be numbers"),
        ({"records": [ROWS[0]]}, "records.0", "must be an object"),
        ({"records": records(ROWS), "inputs": ROWS}, "records", "unknown field"),
    ],
    ids=[
        "missing",
        "unknown",
        "column missing",
        "misspelt",
        "column unknown",
        "twice",
        "width",
        "no data",
        "empty",
        "strings",
        "row not object",
        "two forms",
    ],
)
def test_a_wrong_column_is_a_422_naming_it(client, iris_model, body, loc, fragment):
    response = predict(client, iris_model, body)
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert fragment in response.json["detail"]
    assert response.json["errors"][0]["loc"] == loc or loc in response.json["detail"]


def test_a_model_without_feature_names_refuses_named_columns(client, run_jobs):
    dataset = client.post("/v1/datasets", json={"features": [[0.0, 1.0], [1.0, 0.0]] * 4, "targets": ["a", "b"] * 4})
    assert dataset.status_code == 201, dataset.json
    job = train(
        client,
        run_jobs,
        dataset=dataset.json["id"],
        model={"layers": [{"type": "dense", "units": 2, "activation": "softmax"}]},
    )
    response = predict(client, job["model_id"], {"records": [{"x1": 0.0, "x2": 1.0}]})
    assert response.status_code == 422 and "has no feature names" in response.json["detail"]


def test_named_rows_take_the_fast_path_once_the_model_is_cached(app, client, iris_model):
    first = predict(client, iris_model, {"records": records(ROWS)})
    cache = app.extensions["nnserve"].cache
    wait_until(
        lambda: predict(client, iris_model, {"inputs": ROWS}) and iris_model in cache, timeout=10, what="the cache"
    )
    calls = FlaskCalls(app)

    again = predict(client, iris_model, {"records": records(ROWS)})
    columns = predict(client, iris_model, {"columns": NAMES, "data": ROWS})
    assert calls.count == 0
    assert again.get_data() == columns.get_data() == first.get_data()

    missing = predict(client, iris_model, {"records": records(ROWS, [*NAMES[:3], "x"])})
    assert calls.count == 1  # the error is the route's
    assert missing.status_code == 422 and "missing column 'petal_width'" in missing.json["detail"]
