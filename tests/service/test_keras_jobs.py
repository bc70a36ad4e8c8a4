"""Keras documents as the ``model`` of ``POST /v1/jobs``, checked against the real keras package (NumPy
backend): a model trained from a document exports weights that load into the same Keras model with
``set_weights()`` and predict what ``/v1/models/{id}/predict`` predicts; what nnserve cannot honour is a
422 naming the place in the document."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from nnserve.service.builtin import load
from tests.keras_models import ARRAY_COPY_WARNING, iris_keras_model, keras

pytestmark = ARRAY_COPY_WARNING

TRAINING = {"epochs": 40, "batch_size": 16, "seed": 0}


def post(client, model, training=None, dataset="iris"):
    return client.post("/v1/jobs", json={"dataset": dataset, "model": model, "training": training or TRAINING})


def weights_of(client, model_id: str) -> list[np.ndarray]:
    """The arrays of ``GET /v1/models/{id}/weights`` in the order its metadata lists (Keras's get_weights order)."""
    response = client.get(f"/v1/models/{model_id}/weights")
    assert response.status_code == 200
    with np.load(io.BytesIO(response.data), allow_pickle=False) as archive:
        metadata = json.loads(str(archive["metadata"]))
        return [archive[name] for name in metadata["weights"]]


@pytest.mark.parametrize("form", ["json text", "object"])
def test_weights_load_into_keras_and_predict_the_same(client, run_jobs, form):
    keras_model = iris_keras_model()
    document = keras_model.to_json() if form == "json text" else json.loads(keras_model.to_json())
    response = post(client, document)
    assert response.status_code == 202, response.json
    job = response.json
    # Stored: the converted nnserve spec, Keras semantics (no input scaling), compile_config's training.
    assert [layer["type"] for layer in job["model"]["layers"]] == ["dense", "dropout", "dense", "activation"]
    assert job["model"]["input_scaling"] == "none" and job["model"]["layers"][0]["kernel_regularizer"] == {
        "l1": 0.0,
        "l2": 0.001,
    }
    assert job["training"]["optimizer"]["name"] == "adam" and job["training"]["optimizer"]["learning_rate"] == 0.02
    assert job["training"]["loss"] == "sparse_categorical_crossentropy" and job["training"]["epochs"] == 40
    run_jobs()
    assert client.get(f"/v1/jobs/{job['id']}").json["status"] == "succeeded"

    keras_model.set_weights(weights_of(client, job["model_id"]))

    _, x, y = load("iris")
    ours = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": x.tolist()}).json
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), np.array(ours["probabilities"]), atol=1e-4)
    assert np.mean(np.array(ours["predictions"]) == y) > 0.9


def test_options_form_opts_into_scaling_and_training_fields_win(client):
    document = iris_keras_model().to_json()
    job = post(
        client,
        {"keras": document, "input_scaling": "standard"},
        training={"optimizer": {"name": "sgd", "learning_rate": 0.1}, "epochs": 2, "metrics": []},
    ).json
    assert job["model"]["input_scaling"] == "standard"
    assert job["training"]["optimizer"]["name"] == "sgd" and job["training"]["optimizer"]["learning_rate"] == 0.1
    assert job["training"]["loss"] == "sparse_categorical_crossentropy" and job["training"]["metrics"] == []
    assert post(client, {"keras": json.loads(document)}).json["model"]["input_scaling"] == "none"


def test_a_document_without_compile_config_takes_the_usual_defaults(client):
    document = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]).to_json()
    job = post(client, document, training={"epochs": 1}).json
    assert job["training"]["optimizer"]["name"] == "rmsprop" and job["training"]["metrics"] == ["accuracy"]


def sequential(*layers, input_shape=(4,), **compile_args) -> str:
    model = keras.Sequential([keras.Input(input_shape), *layers])
    if compile_args:
        model.compile(**compile_args)
    return model.to_json()


@pytest.mark.parametrize(
    "model, loc, fragment",
    [
        (
            lambda: sequential(
                keras.layers.UpSampling2D(), keras.layers.Flatten(), keras.layers.Dense(3), input_shape=(8, 8, 1)
            ),
            "model.config.layers.1.class_name",
            "unsupported Keras layer 'UpSampling2D'",
        ),
        (
            lambda: sequential(keras.layers.Dense(3, bias_regularizer="l2")),
            "model.config.layers.1.config.bias_regularizer",
            "bias_regularizer=",
        ),
        (
            lambda: sequential(keras.layers.Dense(3, kernel_constraint="non_neg")),
            "model.config.layers.1.config.kernel_constraint",
            "kernel_constraint=",
        ),
        (
            lambda: sequential(keras.layers.Dense(8), keras.layers.Dense(2, activation="softmax")),
            "model.config.layers.2.config.units",
            "needs one per class: 3",
        ),
        (
            lambda: sequential(keras.layers.Dense(3, activation="softmax"), input_shape=(5,)),
            "model.config.layers.0.config.batch_shape",
            "the model takes 5 features; the dataset has 4",
        ),
        (
            lambda: sequential(
                keras.layers.Dense(3, activation="softmax"),
                loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=0),
            ),
            "model.compile_config.loss.ignore_class",
            "not supported",
        ),
        (
            lambda: sequential(keras.layers.Dense(3, activation="softmax"), loss="kl_divergence"),
            "model.compile_config.loss",
            "unknown 'kl_divergence'",
        ),
        (
            lambda: sequential(
                keras.layers.Dense(3, activation="softmax"),
                loss="mse",
                optimizer=keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)),
            ),
            "model.compile_config.optimizer.learning_rate",
            "schedule objects are not supported",
        ),
        (
            lambda: {"keras": sequential(keras.layers.Dense(3, activation="softmax"), input_shape=(2,))},
            "model.keras.config.layers.0.config.batch_shape",
            "the model takes 2 features",
        ),
        (lambda: {"class_name": "Functional", "config": {}}, "model.class_name", "only Keras Sequential models"),
        (lambda: "{not json", "model", "is not valid JSON"),
        (lambda: {"keras": "[]"}, "model.keras.class_name", "only Keras Sequential models"),
        (
            lambda: {"keras": sequential(keras.layers.Dense(3)), "input_scaling": "minmax"},
            "model.input_scaling",
            "'standard' or 'none'",
        ),
        (lambda: {"keras": sequential(keras.layers.Dense(3)), "dtype": "float64"}, "model.dtype", "Extra inputs"),
    ],
)
def test_what_nnserve_cannot_honour_is_a_422_naming_it(client, model, loc, fragment):
    response = post(client, model())
    assert response.status_code == 422, response.json
    error = response.json["errors"][0]
    assert error["loc"] == loc and fragment in error["msg"], error


def test_openapi_shows_both_forms_of_model(client):
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    forms = schemas["JobCreate"]["properties"]["model"]["oneOf"]
    assert {"$ref": "#/components/schemas/ModelSpec"} in forms and {"$ref": "#/components/schemas/KerasModel"} in forms
    assert "Sequential" in json.dumps(forms)
