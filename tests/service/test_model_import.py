"""POST /v1/models: a model trained elsewhere becomes a ready model. With the real keras package: a model built
and trained in Keras, saved as .keras (or as to_json() with .weights.h5, or an .npz of get_weights()), predicts
what keras_model.predict does within 1e-5; an nnserve .npz moves between servers; hostile archives are 4xx."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from nnserve.service.builtin import load
from tests.conftest import ROOT
from tests.keras_models import ARRAY_COPY_WARNING, keras

pytestmark = ARRAY_COPY_WARNING

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def upload(client, **parts):
    data = {}
    for name, value in parts.items():
        data[name] = (io.BytesIO(value), f"{name}.bin") if isinstance(value, bytes) else value
    return client.post("/v1/models", data=data, content_type="multipart/form-data")


TRAIN_IN_KERAS = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"  # the NumPy backend cannot fit
import numpy as np
sys.path.insert(0, os.getcwd())
from tests.keras_models import iris_keras_model, keras
from nnserve.service.builtin import load

_, x, labels = load("iris")
_, y = np.unique(labels, return_inverse=True)  # setosa, versicolor, virginica -> 0, 1, 2
keras.utils.set_random_seed(0)
model = iris_keras_model()
model.fit(x, y, epochs=5, batch_size=16, verbose=0)
folder = sys.argv[1]
model.save(f"{folder}/iris.keras")
model.save_weights(f"{folder}/iris.weights.h5")
np.savez(f"{folder}/iris.npz", *model.get_weights())
with open(f"{folder}/iris.json", "w") as f:
    f.write(model.to_json())
"""


@pytest.fixture(scope="module")
def trained_keras(tmp_path_factory):
    """The iris Keras model trained by Keras (in a process of its own, on the JAX backend), its three saved
    forms, and the model loaded back here to predict with."""
    folder = tmp_path_factory.mktemp("keras")
    subprocess.run([sys.executable, "-c", TRAIN_IN_KERAS, str(folder)], check=True, cwd=ROOT, timeout=240)
    model = keras.saving.load_model(folder / "iris.keras")
    _, x, _ = load("iris")
    return (
        model,
        x.astype(np.float32),
        {
            "keras": (folder / "iris.keras").read_bytes(),
            "json": (folder / "iris.json").read_text(),
            "h5": (folder / "iris.weights.h5").read_bytes(),
            "npz": (folder / "iris.npz").read_bytes(),
        },
    )


@pytest.mark.parametrize("form", ["keras", "json and h5", "json and npz"])
def test_a_keras_model_predicts_as_keras_does(client, trained_keras, form):
    model, x, saved = trained_keras
    if form == "keras":
        parts = {"file": saved["keras"]}
    else:
        parts = {"model": saved["json"], "weights": saved["h5" if "h5" in form else "npz"]}
    response = upload(
        client,
        **parts,
        classes='["setosa", "versicolor", "virginica"]',
        feature_names=json.dumps(NAMES),
        name="iris-keras",
    )
    assert response.status_code == 201, response.json
    record = response.json
    assert response.headers["Location"] == f"/v1/models/{record['id']}"
    assert record["status"] == "ready" and "job_id" not in record and record["source"] == "keras"
    assert record["output"]["classes"] == ["setosa", "versicolor", "virginica"] and record["name"] == "iris-keras"

    answer = client.post(f"/v1/models/{record['id']}/predict", json={"inputs": x.tolist()}).json
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.float32(answer["probabilities"]), expected, atol=1e-5, rtol=0)
    assert answer["predictions"] == np.array(["setosa", "versicolor", "virginica"])[expected.argmax(axis=1)].tolist()
    named = client.post(f"/v1/models/{record['id']}/predict", json={"records": [dict(zip(NAMES, x[0].tolist()))]})
    assert named.json["predictions"][0] == answer["predictions"][0]
    # The name registers it: the next version of iris-keras, made current, and the name predicts with it.
    registered = client.get("/v1/registry/iris-keras").json
    assert registered["versions"][-1]["model_id"] == record["id"] == client.get("/v1/models/iris-keras").json["id"]
    assert record["version"] == registered["aliases"]["current"] == registered["aliases"]["latest"]


def test_a_keras_regressor_without_classes(client):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, *model.get_weights())
    response = upload(client, model=model.to_json(), weights=buffer.getvalue())
    assert response.status_code == 201, response.json
    assert response.json["output"]["kind"] == "regression"
    answer = client.post(f"/v1/models/{response.json['id']}/predict", json={"inputs": x.tolist()}).json
    np.testing.assert_allclose(np.float32(answer["predictions"]), model.predict(x, verbose=0), atol=1e-5, rtol=0)


def test_an_nnserve_npz_moves_between_servers(client, iris_model):
    """With its scaler, labels and feature names: named rows work on the copy with no form fields at all."""
    blob = client.get(f"/v1/models/{iris_model}/weights").get_data()
    response = upload(client, file=blob)
    assert response.status_code == 201, response.json
    assert response.json["source"] == "nnserve" and response.json["output"]["classes"] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    before = client.post(f"/v1/models/{iris_model}/predict", json={"inputs": rows}).json
    after = client.post(f"/v1/models/{response.json['id']}/predict", json={"inputs": rows}).json
    assert after == before
    assert response.json["input"]["feature_names"] == NAMES
    named = client.post(
        f"/v1/models/{response.json['id']}/predict", json={"records": [dict(zip(NAMES, row)) for row in rows]}
    )
    assert named.json == before


def zip_of(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_wrong_weights_name_the_layer_and_shapes(client, trained_keras):
    _, _, saved = trained_keras
    weights = np.load(io.BytesIO(saved["npz"]))
    arrays = [weights[f"arr_{i}"] for i in range(len(weights.files))]
    arrays[2] = arrays[2][:, :2]  # the second dense kernel, 8x3 -> 8x2
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    response = upload(client, model=saved["json"], weights=buffer.getvalue())
    assert response.status_code == 422
    assert "layer 'dense_1' (Dense) kernel: expected float shape (8, 3); received (8, 2)" in response.json["detail"]
    few = upload(client, model=saved["json"], weights=zip_of({}))
    assert few.status_code == 422 and "4 weight arrays" in few.json["detail"]


@pytest.mark.parametrize(
    "parts, status, fragment",
    [
        ({"file": b"not a zip"}, 422, "not a zip archive"),
        ({"file": zip_of({"../../etc/passwd": b"x"})}, 422, "leaves the archive"),
        ({"file": zip_of({"a.txt": b"x"})}, 422, "not a Keras .keras archive"),
        ({"file": zip_of({"config.json": b"{", "model.weights.h5": b"x"})}, 422, "not valid JSON"),
        (
            {
                "file": zip_of(
                    {
                        "metadata.npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }".ljust(
                            128, b" "
                        )[:127]
                        + b"\n"
                    }
                )
            },
            422,
            "promises",
        ),
        (
            {"file": zip_of({"config.json": b"0" * 5_000_000, "model.weights.h5": b""}, zipfile.ZIP_DEFLATED)},
            413,
            "limit",
        ),
        ({"model": '{"class_name": "Functional"}', "weights": zip_of({})}, 422, "Sequential"),
        ({"weights": zip_of({})}, 422, "model"),
        ({}, 422, "send a file"),
        ({"name": "mdl_copy", "model": "{}"}, 422, "must not start with 'mdl_'"),
    ],
    ids=[
        "not zip",
        "traversal",
        "unknown archive",
        "broken config",
        "npy header bomb",
        "zip bomb",
        "functional",
        "no model",
        "nothing",
        "a model id as name",
    ],
)
def test_hostile_or_wrong_uploads_are_4xx(make_app, parts, status, fragment):
    client = make_app(max_body_bytes=1_000_000).test_client()
    response = upload(client, **parts)
    assert response.status_code == status, response.json
    assert fragment in response.json["detail"]


def test_a_model_over_the_parameter_limit_is_refused_before_it_is_allocated(client):
    """A document declaring a billion weights (and no weights to speak of) is a 422, not an allocation."""
    document = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 100000]}},
                {"class_name": "Dense", "config": {"units": 100000}},
            ]
        },
    }
    response = upload(client, model=json.dumps(document), weights=zip_of({}))
    assert response.status_code == 422 and "the server's limit is" in response.json["detail"]


def test_json_bodies_are_415(client):
    response = client.post("/v1/models", json={"model": {}})
    assert response.status_code == 415
