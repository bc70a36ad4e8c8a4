"""/v1/models: show, predict, evaluate, weights, delete, and the per-process model cache."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest

from nnserve.service import store
from tests.service.helpers import submit, train

LINEAR_MODEL = {"layers": [{"type": "dense", "units": 1}], "input_scaling": "none"}
LINEAR_TRAINING = {"optimizer": {"name": "adam", "learning_rate": 0.1}, "epochs": 400, "batch_size": 4, "seed": 0}


def predict(client, model_id, inputs):
    return client.post(f"/v1/models/{model_id}/predict", json={"inputs": inputs})


def test_show_and_list(client, iris_model):
    model = client.get(f"/v1/models/{iris_model}").json
    assert (
        model["status"] == "ready" and model["dataset_id"] == "iris" and model["n_parameters"] == 4 * 8 + 8 + 8 * 3 + 3
    )
    assert model["input"] == {
        "n_features": 4,
        "sample_shape": [4],
        "feature_names": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
    }
    assert model["output"] == {
        "kind": "classification",
        "classes": ["setosa", "versicolor", "virginica"],
        "n_outputs": 3,
    }
    assert set(model["metrics"]) == {"loss", "accuracy"} and model["metrics"]["accuracy"] > 0.9
    assert model["model"]["layers"][1]["activation"] == "softmax" and model["training"]["epochs"] == 60
    assert [m["id"] for m in client.get("/v1/models").json["items"]] == [iris_model]
    assert client.get("/v1/models/mdl_nope").status_code == 404


def test_predict_returns_species_names_and_probabilities(client, iris_model, redis):
    x, y = store.load_dataset(redis, "iris")
    response = predict(client, iris_model, x.tolist())
    assert response.status_code == 200
    body = response.json
    assert set(body["predictions"]) == {"setosa", "versicolor", "virginica"}
    assert np.mean(np.array(body["predictions"]) == y) > 0.93
    probabilities = np.array(body["probabilities"])
    assert probabilities.shape == (150, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (
            {"inputs": [[1, 2, 3]]},
            422,
            "must have shape (4,) (4 values, nested or as a flat row); received samples of shape (3,)",
        ),
        ({"inputs": [[1, 2, 3, 4], [1, 2]]}, 422, "same number of values"),
        ({"inputs": [["a", "b", "c", "d"]]}, 422, "must be numbers"),
        ({"inputs": [[True, False, True, False]]}, 422, "must be numbers"),
        ({"inputs": [1, 2, 3, 4]}, 422, "list of samples"),
        ({"inputs": [[1, 2, 3, None]]}, 422, "must be numbers"),
        ({"inputs": [[1, 2, 3, 1e300]]}, 422, "float32 range"),
        ({"inputs": []}, 422, "non-empty"),
        ({"rows": [[1, 2, 3, 4]]}, 422, "field required"),
        ({"inputs": [[1, 2, 3, 4]], "extra": 1}, 422, "unknown field"),
    ],
)
def test_predict_rejects_bad_inputs(client, iris_model, body, status, fragment):
    response = client.post(f"/v1/models/{iris_model}/predict", json=body)
    assert response.status_code == status and response.mimetype == "application/problem+json"
    assert fragment in response.json["detail"]


def test_predict_bad_bodies(client, iris_model):
    url = f"/v1/models/{iris_model}/predict"
    assert client.post(url, data="{nope", content_type="application/json").status_code == 400
    assert client.post(url, data="[[1, NaN]]", content_type="application/json").status_code == 400
    assert client.post(url, data="inputs=1", content_type="text/plain").status_code == 415
    assert predict(client, "mdl_nope", [[1, 2, 3, 4]]).status_code == 404


def test_predict_before_training_conflicts(client):
    job = submit(client).json
    response = predict(client, job["model_id"], [[1, 2, 3, 4]])
    assert response.status_code == 409 and "not trained yet" in response.json["detail"]
    assert client.get(f"/v1/models/{job['model_id']}/weights").status_code == 409
    assert client.delete(f"/v1/models/{job['model_id']}").status_code == 409


def test_linear_predicts_ten_at_five(client, run_jobs):
    job = train(client, run_jobs, dataset="linear", model=LINEAR_MODEL, training=LINEAR_TRAINING)
    assert job["status"] == "succeeded"
    model = client.get(f"/v1/models/{job['model_id']}").json
    assert model["output"]["kind"] == "regression" and "classes" not in model["output"]
    body = predict(client, job["model_id"], [[5.0], [1.0]]).json
    assert abs(body["predictions"][0] - 10) < 0.2 and abs(body["predictions"][1] - 2) < 0.2
    assert "probabilities" not in body


def test_evaluate(client, iris_model):
    response = client.post(f"/v1/models/{iris_model}/evaluate", json={"dataset": "iris"})
    assert response.status_code == 200
    body = response.json
    assert body["dataset_id"] == "iris" and body["n_samples"] == 150
    assert body["loss"] < 0.3 and body["metrics"]["accuracy"] > 0.93
    assert client.post(f"/v1/models/{iris_model}/evaluate", json={"dataset": "nope"}).status_code == 422
    response = client.post(f"/v1/models/{iris_model}/evaluate", json={"dataset": "linear"})
    assert response.status_code == 422 and "continuous" in response.json["detail"]
    response = client.post(f"/v1/models/{iris_model}/evaluate", json={"dataset": "blobs"})
    assert response.status_code == 422  # 2 features, the model takes 4
    other = client.post("/v1/datasets", json={"features": [[1, 2, 3, 4]] * 2, "targets": ["rose", "tulip"]}).json
    response = client.post(f"/v1/models/{iris_model}/evaluate", json={"dataset": other["id"]})
    assert response.status_code == 422 and "unknown class" in response.json["detail"]


def test_weights_download(client, iris_model):
    response = client.get(f"/v1/models/{iris_model}/weights")
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    assert f'filename="{iris_model}.npz"' in response.headers["Content-Disposition"]
    with np.load(io.BytesIO(response.data), allow_pickle=False) as archive:
        names = archive.files
        arrays = {name: archive[name] for name in names}
    assert names[:4] == ["metadata", "layers.0.kernel", "layers.0.bias", "layers.1.kernel"] or [
        n for n in names if n != "metadata"
    ] == ["layers.0.kernel", "layers.0.bias", "layers.1.kernel", "layers.1.bias"]
    assert arrays["layers.0.kernel"].shape == (4, 8) and arrays["layers.1.bias"].shape == (3,)
    metadata = json.loads(str(arrays["metadata"]))
    assert metadata["spec"]["layers"][0]["units"] == 8 and metadata["classes"] == ["setosa", "versicolor", "virginica"]


def test_delete(client, iris_model, redis):
    assert predict(client, iris_model, [[5.1, 3.5, 1.4, 0.2]]).status_code == 200
    assert client.delete(f"/v1/models/{iris_model}").status_code == 204
    assert predict(client, iris_model, [[5.1, 3.5, 1.4, 0.2]]).status_code == 404
    assert client.get(f"/v1/models/{iris_model}").status_code == 404
    assert client.delete(f"/v1/models/{iris_model}").status_code == 404
    assert not redis.exists(store.model_key(iris_model), store.weights_key(iris_model))


def test_cache_serves_predictions_without_redis_reads(app, client, iris_model, redis):
    cache = app.extensions["nnserve"].cache
    predict(client, iris_model, [[5.1, 3.5, 1.4, 0.2]])
    wait(lambda: cache.listening)
    predict(client, iris_model, [[5.1, 3.5, 1.4, 0.2]])
    assert iris_model in cache
    before = redis.info("stats")["total_commands_processed"]
    for _ in range(5):
        assert predict(client, iris_model, [[5.1, 3.5, 1.4, 0.2]]).json["predictions"] == ["setosa"]
    # INFO itself is the one command counted in between.
    assert redis.info("stats")["total_commands_processed"] - before <= 1 + 1


def test_deletion_is_honoured_by_another_process_cache(make_app, iris_model):
    """Two apps stand for two API processes: each has its own cache; a delete through one
    reaches the other over pub/sub."""
    first, second = make_app(), make_app()
    a, b = first.test_client(), second.test_client()
    for app, client in ((first, a), (second, b)):
        predict(client, iris_model, [[5.1, 3.5, 1.4, 0.2]])
        wait(lambda: app.extensions["nnserve"].cache.listening)
        predict(client, iris_model, [[5.1, 3.5, 1.4, 0.2]])
        assert iris_model in app.extensions["nnserve"].cache
    assert a.delete(f"/v1/models/{iris_model}").status_code == 204
    wait(lambda: iris_model not in second.extensions["nnserve"].cache)
    assert predict(b, iris_model, [[5.1, 3.5, 1.4, 0.2]]).status_code == 404


def test_cache_is_bounded(make_app, client, run_jobs):
    ids = [train(client, run_jobs, training={"epochs": 1})["model_id"] for _ in range(3)]
    app = make_app(model_cache_size=2)
    c = app.test_client()
    predict(c, ids[0], [[1, 2, 3, 4]])
    wait(lambda: app.extensions["nnserve"].cache.listening)
    for model_id in ids:
        assert predict(c, model_id, [[1, 2, 3, 4]]).status_code == 200
    cache = app.extensions["nnserve"].cache
    assert ids[0] not in cache and ids[1] in cache and ids[2] in cache


def wait(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
