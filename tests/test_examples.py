"""The spec files in examples/: each is accepted by ``POST /v1/jobs`` on data of its shape, and
iris, blobs and linear train to the quality examples/README.md promises, through the client
against ``nnserve api`` and ``nnserve worker`` processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnserve import Client
from tests.conftest import ROOT
from tests.stack import stack

EXAMPLES = ROOT / "examples"
WAIT = 180  # seconds: generous, the machine is shared with other test runs


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def test_every_example_is_a_spec_file():
    names = sorted(path.stem for path in EXAMPLES.glob("*.json"))
    assert names == ["blobs", "iris", "linear", "mnist_784_64_10"]
    for name in names:
        assert set(example(name)) == {"model", "training"}, name


@pytest.mark.parametrize("name", ["iris", "blobs", "linear"])
def test_builtin_examples_are_accepted(client, name):
    spec = example(name)
    response = client.post("/v1/jobs", json={"dataset": name, **spec})
    assert response.status_code == 202, response.json
    assert response.json["training"]["epochs"] == spec["training"]["epochs"]
    assert [layer.get("units") for layer in response.json["model"]["layers"]] == [
        layer.get("units") for layer in spec["model"]["layers"]
    ]


def test_mnist_example_trains_on_784_pixel_rows(client, run_jobs):
    """No MNIST here (no downloads): 40 random 28x28 "images" of ten classes check the shapes and a run."""
    rng = np.random.default_rng(0)
    upload = client.post(
        "/v1/datasets", json={"features": rng.random((40, 784)).tolist(), "targets": [i % 10 for i in range(40)]}
    )
    assert upload.status_code == 201 and upload.json["n_features"] == 784 and len(upload.json["classes"]) == 10
    spec = example("mnist_784_64_10")
    spec["training"]["epochs"] = 1
    response = client.post("/v1/jobs", json={"dataset": upload.json["id"], **spec})
    assert response.status_code == 202, response.json
    run_jobs()
    job = client.get(f"/v1/jobs/{response.json['id']}").json
    assert job["status"] == "succeeded", job
    model = client.get(f"/v1/models/{job['model_id']}").json
    assert model["n_parameters"] == 784 * 64 + 64 + 64 * 10 + 10
    assert model["training"]["optimizer"]["name"] == "adam"
    assert model["training"]["loss"] == "sparse_categorical_crossentropy"


def test_the_iris_grid_sweep_example_runs_its_nine_trials(client, run_jobs):
    spec = json.loads((EXAMPLES / "sweeps" / "iris_grid.json").read_text())
    spec["training"]["epochs"] = 2
    response = client.post("/v1/sweeps", json=spec)
    assert response.status_code == 202, response.json
    run_jobs()
    sweep = client.get(f"/v1/sweeps/{response.json['id']}").json
    assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 9


def test_the_digits_sweep_example_is_accepted_on_64_pixel_rows(client):
    rng = np.random.default_rng(0)
    upload = client.post(
        "/v1/datasets", json={"features": rng.random((100, 64)).tolist(), "targets": [i % 10 for i in range(100)]}
    )
    spec = json.loads((EXAMPLES / "sweeps" / "digits_tpe_asha.json").read_text())
    response = client.post("/v1/sweeps", json={**spec, "dataset": upload.json["id"]})
    assert response.status_code == 202, response.json
    assert response.json["strategy"] == "tpe" and response.json["pruner"]["name"] == "asha"


@pytest.fixture(scope="module")
def nn(redis_server, tmp_path_factory):
    with stack(redis_server.url, tmp_path_factory.mktemp("examples")) as url, Client(url) as client:
        yield client


def train(nn: Client, name: str) -> dict:
    job = nn.train(name, **example(name))
    return nn.wait(job["id"], progress=False, timeout=WAIT)


def test_iris_example_reaches_095(nn):
    job = train(nn, "iris")
    assert job["history"]["val_accuracy"][-1] >= 0.9
    assert nn.evaluate(job["model_id"], "iris")["metrics"]["accuracy"] >= 0.95


def test_blobs_example_reaches_095(nn):
    job = train(nn, "blobs")
    assert nn.evaluate(job["model_id"], "blobs")["metrics"]["accuracy"] >= 0.95
    labels, _ = nn.predict(job["model_id"], [[0, -2], [2, 2], [-2, 2]])  # the three centres
    assert labels.tolist() == [0, 1, 2]


def test_linear_example_learns_y_equals_2x(nn):
    job = train(nn, "linear")
    values, _ = nn.predict(job["model_id"], [[5.0], [-1.0]])
    np.testing.assert_allclose(values, [10.0, -2.0], atol=0.1)
    weights = nn.load_model(job["model_id"]).get_weights()
    np.testing.assert_allclose([weights[0].item(), weights[1].item()], [2.0, 0.0], atol=0.05)
