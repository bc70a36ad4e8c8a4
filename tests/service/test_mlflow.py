"""MLflow's scoring protocol on ``/v1/models/{ref}/invocations``: golden bodies from MLflow's documentation
of its local inference server (split and records DataFrames, instances, inputs, CSV), answered as an
MLflow pyfunc answers (labels or values), errors in MLflow's ``{"error_code", "message"}`` shape."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import wait_until
from tests.service.helpers import FlaskCalls
from tests.service.test_tfserving import NAMES

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def invoke(client, model_id, body=None, **kwargs):
    if body is not None:
        kwargs["json"] = body
    return client.post(f"/v1/models/{model_id}/invocations", **kwargs)


def labels(client, model_id, rows=ROWS):
    return client.post(f"/v1/models/{model_id}/predict", json={"inputs": rows}).json["predictions"]


def csv_of(names, rows):
    return "\n".join([",".join(names), *(",".join(str(v) for v in row) for row in rows)]) + "\n"


def test_every_documented_body_answers_the_labels(client, iris_model):
    order = [3, 1, 0, 2]  # columns in another order than the model's
    columns = [NAMES[i] for i in order]
    reordered = [[row[i] for i in order] for row in ROWS]
    records = [dict(zip(columns, row)) for row in reordered]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": reordered}},
        "dataframe_split with index": {"dataframe_split": {"index": [0, 1, 2], "columns": columns, "data": reordered}},
        "dataframe_records": {"dataframe_records": records},
        "instances as rows": {"instances": ROWS},
        "instances as objects": {"instances": records},
        "inputs as rows": {"inputs": ROWS},
        "inputs as columns": {"inputs": {name: [row[i] for row in ROWS] for i, name in enumerate(NAMES)}},
        "with params": {"dataframe_records": records, "params": {}},
    }
    expected = {"predictions": labels(client, iris_model)}
    for name, body in bodies.items():
        response = invoke(client, iris_model, body)
        assert response.status_code == 200 and response.mimetype == "application/json", (name, response.json)
        assert response.json == expected, name


def test_a_csv_body_with_a_header_row(client, iris_model):
    order = [2, 3, 0, 1]
    text = csv_of([NAMES[i] for i in order], [[row[i] for i in order] for row in ROWS])
    response = invoke(client, iris_model, data=text, content_type="text/csv; charset=utf-8")
    assert response.status_code == 200, response.json
    assert response.json == {"predictions": labels(client, iris_model)}


def test_a_regressor_answers_values(client, linear_model):
    values = client.post(f"/v1/models/{linear_model}/predict", json={"inputs": [[1.0], [2.0]]}).json["predictions"]
    response = invoke(client, linear_model, {"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.0]]}})
    np.testing.assert_array_equal(response.json["predictions"], values)


@pytest.mark.parametrize(
    "kwargs, status, code, fragment",
    [
        (
            {"json": {"dataframe_split": {"columns": NAMES, "data": ROWS}, "instances": ROWS}},
            400,
            "BAD_REQUEST",
            "exactly one of the input fields",
        ),
        ({"json": {"data": ROWS}}, 400, "BAD_REQUEST", "exactly one of the input fields"),
        ({"json": {"dataframe_records": [{"sepal_length": 5.1}]}}, 422, "BAD_REQUEST", "missing column 'sepal_width'"),
        (
            {"json": {"dataframe_split": {"columns": [*NAMES, "x"], "data": [[*ROWS[0], 1]]}}},
            422,
            "BAD_REQUEST",
            "unknown column 'x'",
        ),
        ({"json": {"inputs": [[5.1, 3.5]]}}, 422, "BAD_REQUEST", "must have shape (4,)"),
        ({"json": {"instances": ROWS, "params": 3}}, 422, "BAD_REQUEST", "params: must be an object"),
        (
            {"data": csv_of(NAMES[:3], [r[:3] for r in ROWS]), "content_type": "text/csv"},
            422,
            "BAD_REQUEST",
            "missing column 'petal_width'",
        ),
        (
            {"data": csv_of(NAMES, [[5.1, "x", 1, 2]]), "content_type": "text/csv"},
            422,
            "BAD_REQUEST",
            "line 2: values must be numbers",
        ),
        ({"data": "a,b\n", "content_type": "text/csv"}, 422, "BAD_REQUEST", "at least one row"),
        ({"data": "{", "content_type": "application/json"}, 400, "BAD_REQUEST", "not valid JSON"),
        ({"data": "x", "content_type": "text/plain"}, 415, "BAD_REQUEST", "application/json, text/csv"),
    ],
    ids=[
        "two fields",
        "no field",
        "missing",
        "unknown",
        "width",
        "params",
        "csv missing",
        "csv text",
        "csv empty",
        "broken",
        "content type",
    ],
)
def test_errors_are_mlflows_shape(client, iris_model, kwargs, status, code, fragment):
    response = invoke(client, iris_model, **kwargs)
    assert response.status_code == status and response.mimetype == "application/json"
    assert sorted(response.json) == ["error_code", "message"]
    assert response.json["error_code"] == code and fragment in response.json["message"], response.json


def test_an_unknown_model_is_resource_does_not_exist(client):
    response = invoke(client, "mdl_nope", {"instances": ROWS})
    assert response.status_code == 404 and response.json["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_a_cached_model_answers_without_flask(app, client, iris_model):
    body = {"dataframe_split": {"columns": NAMES, "data": ROWS}}
    first = invoke(client, iris_model, body)
    cache = app.extensions["nnserve"].cache
    wait_until(lambda: invoke(client, iris_model, body) and iris_model in cache, timeout=10, what="the cache")
    calls = FlaskCalls(app)
    again = invoke(client, iris_model, body)
    csv = invoke(client, iris_model, data=csv_of(NAMES, ROWS), content_type="text/csv")
    assert calls.count == 0
    assert again.get_data() == first.get_data() and csv.json == first.json
