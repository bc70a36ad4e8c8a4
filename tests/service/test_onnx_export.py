"""GET /v1/models/{ref}/onnx: the graph is checked, pinned to IR 8 and opset 17, and under onnxruntime and
onnx's ReferenceEvaluator reproduces /v1 predict's probabilities (or values) within 1e-5, for every layer
type and activation the engine has."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from tests.service.helpers import IRIS_TRAINING, train

ort = pytest.importorskip("onnxruntime")

EVERY_ACTIVATION = [
    {"type": "dense", "units": 6, "activation": "relu"},
    {"type": "dense", "units": 6, "activation": {"name": "leaky_relu", "alpha": 0.1}},
    {"type": "dense", "units": 6, "activation": {"name": "elu", "alpha": 0.5}},
    {"type": "dropout", "rate": 0.1},
    {"type": "dense", "units": 6, "activation": "selu"},
    {"type": "dense", "units": 6, "activation": "sigmoid"},
    {"type": "dense", "units": 6, "activation": "hard_sigmoid"},
    {"type": "dense", "units": 6, "activation": "tanh"},
    {"type": "dense", "units": 6, "activation": "softplus"},
    {"type": "dense", "units": 6, "activation": "gelu"},
    {"type": "dense", "units": 6, "activation": {"name": "gelu", "approximate": True}},
    {"type": "dense", "units": 6, "use_bias": False},
    {"type": "activation", "activation": "tanh"},
    {"type": "dense", "units": 3, "activation": "softmax"},
]
SHORT = {**IRIS_TRAINING, "epochs": 5}
CASES = {
    "every activation and layer": {"model": {"layers": EVERY_ACTIVATION}, "training": SHORT},
    "logits": {
        "model": {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 3}]},
        "training": {**SHORT, "loss": {"name": "categorical_crossentropy", "from_logits": True}},
    },
    "float64": {
        "model": {
            "layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
            "dtype": "float64",
        },
        "training": SHORT,
    },
    "one sigmoid unit": {
        "dataset": "two classes",
        "model": {
            "layers": [
                {"type": "dense", "units": 4, "activation": "tanh"},
                {"type": "dense", "units": 1, "activation": "sigmoid"},
            ]
        },
        "training": SHORT,
    },
    "regressor, no scaling": {
        "dataset": "linear",
        "model": {
            "layers": [{"type": "dense", "units": 4, "activation": "elu"}, {"type": "dense", "units": 1}],
            "input_scaling": "none",
        },
        "training": SHORT,
    },
}


def onnx_of(client, model_id) -> bytes:
    response = client.get(f"/v1/models/{model_id}/onnx")
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{model_id}.onnx"'
    return response.get_data()


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_and_the_reference_evaluator_reproduce_predict(client, run_jobs, case):
    spec = dict(CASES[case])
    if spec.get("dataset") == "two classes":
        rng = np.random.default_rng(0)
        features = rng.normal(size=(40, 3)).round(3)
        upload = client.post(
            "/v1/datasets",
            json={"features": features.tolist(), "targets": np.where(features[:, 0] > 0, "yes", "no").tolist()},
        )
        spec["dataset"] = upload.json["id"]
    job = train(client, run_jobs, **spec)
    assert job["status"] == "succeeded", job
    model_id = job["model_id"]
    record = client.get(f"/v1/models/{model_id}").json
    n_features = record["input"]["n_features"]
    x = np.random.default_rng(1).normal(size=(50, n_features)) * 2 + (5 if n_features == 4 else 0)
    dtype = np.float64 if case == "float64" else np.float32
    x = x.astype(dtype)
    answer = client.post(f"/v1/models/{model_id}/predict", json={"inputs": x.tolist()}).json
    expected = np.asarray(answer.get("probabilities", answer["predictions"]), dtype=np.float64)

    blob = onnx_of(client, model_id)
    model = onnx.load_model(io.BytesIO(blob))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    output = "probabilities" if "probabilities" in answer else "predictions"
    assert [o.name for o in model.graph.output] == [output]
    props = {p.key: p.value for p in model.metadata_props}
    if output == "probabilities":
        assert json.loads(props["classes"]) == record["output"]["classes"]
    if record["model"].get("input_scaling", "standard") == "standard":
        assert {"Sub", "Div"} <= {node.op_type for node in model.graph.node}

    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (by_runtime,) = session.run(None, {"input": x})
    (by_reference,) = ReferenceEvaluator(model).run(None, {"input": x})
    assert by_runtime.shape == expected.shape and by_runtime.dtype == dtype
    np.testing.assert_allclose(by_runtime, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(by_reference, expected, atol=1e-5, rtol=0)


def test_unknown_is_404_and_untrained_is_409(client):
    assert client.get("/v1/models/mdl_nope/onnx").status_code == 404
    job = client.post(
        "/v1/jobs",
        json={
            "dataset": "iris",
            "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
            "training": SHORT,
        },
    )
    response = client.get(f"/v1/models/{job.json['model_id']}/onnx")
    assert response.status_code == 409 and response.mimetype == "application/problem+json"


def test_a_convolutional_model_is_a_409_naming_the_layer(client, run_jobs):
    cnn = {
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    }
    job = train(client, run_jobs, dataset="digits", model=cnn, training={"epochs": 1, "seed": 0})
    assert job["status"] == "succeeded", job
    response = client.get(f"/v1/models/{job['model_id']}/onnx")
    assert response.status_code == 409 and "'conv2d'" in response.json["detail"]
