"""TF Serving's REST predict API (and KServe v1's) on ``/v1/models/{name}:predict``: golden bodies from
TF Serving's REST API documentation (``g3doc/api/rest.md``), answered with ``/v1``'s predictions."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import wait_until
from tests.service.helpers import FlaskCalls

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def tf_predict(client, model_id, body, suffix=""):
    return client.post(f"/v1/models/{model_id}{suffix}:predict", json=body)


def probabilities(client, model_id, rows=ROWS):
    return client.post(f"/v1/models/{model_id}/predict", json={"inputs": rows}).json["probabilities"]


# The row format -----------------------------------------------------------------------------


def test_row_format_answers_predictions_the_probabilities(client, iris_model):
    body = {"signature_name": "serving_default", "instances": ROWS}
    response = tf_predict(client, iris_model, body)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert list(response.json) == ["predictions"]
    assert response.json["predictions"] == probabilities(client, iris_model)


def test_row_format_with_an_object_per_instance_matches_names(client, iris_model):
    instances = [dict(reversed(list(zip(NAMES, row)))) for row in ROWS]
    response = tf_predict(client, iris_model, {"instances": instances})
    assert response.json == {"predictions": probabilities(client, iris_model)}


def test_the_input_tensor_by_name(client, iris_model):
    by_row = tf_predict(client, iris_model, {"instances": [{"input": row} for row in ROWS]})
    by_column = tf_predict(client, iris_model, {"inputs": {"input": ROWS}})
    assert by_row.json["predictions"] == by_column.json["outputs"] == probabilities(client, iris_model)


def test_a_curl_form_content_type_is_read_as_json(client, iris_model):
    """TF Serving's own examples post with ``curl -d``, which says application/x-www-form-urlencoded."""
    response = client.post(
        f"/v1/models/{iris_model}:predict",
        data='{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200 and len(response.json["predictions"]) == 1


# The columnar format ------------------------------------------------------------------------


def test_columnar_format_answers_outputs(client, iris_model):
    as_rows = tf_predict(client, iris_model, {"inputs": ROWS})
    as_columns = tf_predict(
        client, iris_model, {"inputs": {name: [row[i] for row in ROWS] for i, name in enumerate(NAMES)}}
    )
    assert as_rows.json == as_columns.json == {"outputs": probabilities(client, iris_model)}


# A regressor: TF Serving's half_plus_two example, as a one-feature model -----------------------


def test_half_plus_two_style_scalars_answer_scalars(client, linear_model):
    values = client.post(f"/v1/models/{linear_model}/predict", json={"inputs": [[1.0], [2.0], [5.0]]}).json
    scalars = tf_predict(client, linear_model, {"instances": [1.0, 2.0, 5.0]})
    rows = tf_predict(client, linear_model, {"instances": [[1.0], [2.0], [5.0]]})
    columns = tf_predict(client, linear_model, {"inputs": {"x": [1.0, 2.0, 5.0]}})
    assert scalars.status_code == rows.status_code == columns.status_code == 200
    np.testing.assert_array_equal(scalars.json["predictions"], values["predictions"])
    assert rows.json["predictions"] == columns.json["outputs"] == [[v] for v in values["predictions"]]


# Errors: TF Serving's {"error": "..."} with a 4xx ------------------------------------------------


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"instances": []}, 422, "instances: must be a non-empty list"),
        ({"instances": ROWS, "inputs": ROWS}, 422, "not both"),
        ({"rows": ROWS}, 422, "rows: unknown field"),
        ({}, 422, "field required"),
        ({"instances": [[5.1, 3.5]]}, 422, "must have shape (4,)"),
        ({"instances": [{"sepal_length": 5.1}]}, 422, "missing column 'sepal_width'"),
        ({"inputs": {"sepal_length": [5.1], "colour": [1]}}, 422, "missing column 'sepal_width'"),
        ({"instances": ROWS, "signature_name": "classify"}, 422, "only signature is 'serving_default'"),
        ([1, 2], 400, "JSON object"),
    ],
    ids=[
        "empty",
        "both",
        "unknown field",
        "nothing",
        "width",
        "missing",
        "columnar missing",
        "signature",
        "not object",
    ],
)
def test_errors_are_tf_servings_shape(client, iris_model, body, status, fragment):
    response = tf_predict(client, iris_model, body)
    assert response.status_code == status and response.mimetype == "application/json"
    assert list(response.json) == ["error"] and fragment in response.json["error"], response.json


def test_broken_json_unknown_models_versions_and_labels(client, iris_model):
    broken = client.post(f"/v1/models/{iris_model}:predict", data="{", content_type="application/json")
    assert broken.status_code == 400 and "not valid JSON" in broken.json["error"]
    for path in (
        "/v1/models/mdl_nope:predict",
        f"/v1/models/{iris_model}/versions/2:predict",
        f"/v1/models/{iris_model}/labels/stable:predict",
    ):
        response = client.post(path, json={"instances": ROWS})
        assert response.status_code == 404 and list(response.json) == ["error"], path


def test_versions_and_labels_are_the_registrys(client, run_jobs):
    """TF Serving's ``/versions/{n}`` is the registered name's version n and ``/labels/{alias}`` its alias;
    each answer says which version answered, in the header every dialect carries."""
    from tests.service.helpers import train

    first, second = (train(client, run_jobs, name="iris-tf", training={"epochs": 2, "seed": s}) for s in (1, 2))
    assert client.put("/v1/registry/iris-tf/aliases/stable", json={"version": 1}).status_code == 200
    for path, version, model_id in (
        ("/v1/models/iris-tf:predict", "2", second["model_id"]),
        ("/v1/models/iris-tf/versions/1:predict", "1", first["model_id"]),
        ("/v1/models/iris-tf/labels/stable:predict", "1", first["model_id"]),
    ):
        response = client.post(path, json={"instances": ROWS})
        assert response.status_code == 200 and response.headers["X-Model-Version"] == version, path
        expected = client.post(f"/v1/models/{model_id}/predict", json={"inputs": ROWS}).json["probabilities"]
        np.testing.assert_allclose(response.json["predictions"], expected)
    missing = client.post("/v1/models/iris-tf/versions/9:predict", json={"instances": ROWS})
    assert missing.status_code == 404 and "no version 9" in missing.json["error"]


def test_the_model_routes_beside_it_are_unchanged(client, iris_model):
    assert client.get(f"/v1/models/{iris_model}").json["id"] == iris_model
    assert client.post(f"/v1/models/{iris_model}/predict", json={"inputs": ROWS}).status_code == 200
    assert client.get(f"/v1/models/{iris_model}:predict").status_code in (404, 405)  # no GET on a predict route


# The fast path ---------------------------------------------------------------------------------


def test_a_cached_model_answers_without_flask_and_the_same(app, client, iris_model):
    body = {"instances": [dict(zip(NAMES, row)) for row in ROWS]}
    first = tf_predict(client, iris_model, body)
    cache = app.extensions["nnserve"].cache
    wait_until(lambda: tf_predict(client, iris_model, body) and iris_model in cache, timeout=10, what="the cache")
    calls = FlaskCalls(app)
    again = tf_predict(client, iris_model, body)
    columnar = tf_predict(client, iris_model, {"inputs": ROWS})
    assert calls.count == 0
    assert again.get_data() == first.get_data()
    assert columnar.json == {"outputs": first.json["predictions"]}
    refused = tf_predict(client, iris_model, {"instances": []})
    assert calls.count == 1 and refused.status_code == 422 and list(refused.json) == ["error"]
