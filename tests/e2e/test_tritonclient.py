"""The Open Inference Protocol against the real ``tritonclient.http`` client, with its defaults, talking to
``nnserve api`` (gunicorn) and a worker as real processes: its answers equal ``/v1/models/{id}/predict``."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from nnserve.service.builtin import load
from tests.conftest import wait_until
from tests.e2e.test_http import train

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

KEY = "triton-key-0123456789abcdef"
IRIS = (
    {
        "layers": [
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    },
    {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 60, "batch_size": 16, "seed": 0},
)


@pytest.fixture
def iris(processes):
    """``(api url, model id)``: the iris model trained through the API."""
    api = processes.api(api_workers=2, api_threads=4)
    processes.worker()
    return api, train(api, "iris", *IRIS)["model_id"]


def v1_predict(api, model_id, x, headers=None):
    response = requests.post(
        f"{api}/v1/models/{model_id}/predict", json={"inputs": x.tolist()}, headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return np.float32(body["probabilities"]), body["predictions"]


def input_tensor(x: np.ndarray, binary_data: bool = True):
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_data)
    return tensor


def test_tritonclient_with_its_defaults_gets_v1s_predictions(iris):
    api, model_id = iris
    _, features, _ = load("iris")
    x = features.astype(np.float32)
    client = httpclient.InferenceServerClient(api.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model_id)
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        metadata = client.get_model_metadata(model_id)
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "predicted_labels"]
        probabilities, labels = v1_predict(api, model_id, x)

        # The defaults: the input as binary data, no Content-Type, every output asked for in binary.
        result = client.infer(model_id, [input_tensor(x)])
        np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
        assert [label.decode() for label in result.as_numpy("predicted_labels")] == labels
        assert result.get_response()["model_version"] == "1"

        # Outputs asked for one by one, in binary and in JSON; the input in JSON too.
        for binary_data in (True, False):
            outputs = [
                httpclient.InferRequestedOutput("probabilities", binary_data=binary_data),
                httpclient.InferRequestedOutput("predicted_labels", binary_data=binary_data),
            ]
            for tensor in (input_tensor(x), input_tensor(x, binary_data=False)):
                result = client.infer(model_id, [tensor], outputs=outputs, request_id="7", model_version="1")
                np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
                assert [
                    label.decode() if isinstance(label, bytes) else label
                    for label in result.as_numpy("predicted_labels")
                ] == labels
                assert result.get_response()["id"] == "7"

        with pytest.raises(InferenceServerException) as refused:
            client.infer(model_id, [input_tensor(x[:, :3])])
        assert refused.value.status() == "400" and "shape (4,)" in refused.value.message()
        with pytest.raises(InferenceServerException) as missing:
            client.get_model_metadata("mdl_nope")
        assert missing.value.status() == "404" and "no model 'mdl_nope'" in missing.value.message()
        assert not client.is_model_ready("mdl_nope")
    finally:
        client.close()


def test_tritonclient_with_an_api_key(processes):
    api = processes.api(api_workers=1, api_threads=4, api_keys=KEY)
    processes.worker()
    bearer = {"Authorization": f"Bearer {KEY}"}
    response = requests.post(
        f"{api}/v1/jobs",
        json={"dataset": "iris", "model": IRIS[0], "training": {**IRIS[1], "epochs": 5}},
        headers=bearer,
        timeout=10,
    )
    model_id = response.json()["model_id"]
    client = httpclient.InferenceServerClient(api.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes need no key
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata(model_id)
        assert refused.value.status() == "401" and "API key" in refused.value.message()
        assert client.get_model_metadata(model_id, headers=bearer)["name"] == model_id
        x = np.float32([[5.1, 3.5, 1.4, 0.2]])
        wait_until(lambda: client.is_model_ready(model_id, headers=bearer), timeout=120, what="training", interval=0.2)
        result = client.infer(model_id, [input_tensor(x)], headers=dict(bearer))  # it adds its own headers to the dict
        np.testing.assert_array_equal(result.as_numpy("probabilities"), v1_predict(api, model_id, x, bearer)[0])
    finally:
        client.close()


def test_tritonclient_sends_images_in_their_shape(processes):
    """A model trained on the digits images: its metadata says ``[-1, 8, 8, 1]``, and tritonclient's
    binary tensor of that shape (or of flat rows) gets /v1's probabilities."""
    api = processes.api(api_workers=1, api_threads=4)
    processes.worker()
    dense = {
        "layers": [
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    }
    model_id = train(api, "digits", dense, {"epochs": 3, "batch_size": 64, "seed": 0})["model_id"]
    _, features, _ = load("digits")
    x = np.ascontiguousarray(features[:50], dtype=np.float32)
    client = httpclient.InferenceServerClient(api.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata(model_id)
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
        probabilities, labels = v1_predict(api, model_id, x)
        for tensor in (input_tensor(x), input_tensor(x.reshape(50, 64)), input_tensor(x, binary_data=False)):
            result = client.infer(model_id, [tensor])
            np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
            assert [label.decode() for label in result.as_numpy("predicted_labels")] == list(map(str, labels))
        with pytest.raises(InferenceServerException) as refused:
            client.infer(model_id, [input_tensor(np.zeros((2, 7, 7, 1), np.float32))])
        assert refused.value.status() == "400" and "(7, 7, 1)" in refused.value.message()
    finally:
        client.close()


def test_tritonclient_repository_config_statistics_and_classification(iris, processes):
    """The rest of the protocol tritonclient calls: the repository index, Triton's model configuration, the
    inference statistics (summed over both API processes) and the classification extension."""
    api, model_id = iris
    _, features, _ = load("iris")
    x = features[:7].astype(np.float32)
    client = httpclient.InferenceServerClient(api.removeprefix("http://"))
    try:
        extensions = client.get_server_metadata()["extensions"]
        assert {"classification", "model_repository", "model_configuration", "statistics"} <= set(extensions)
        assert client.get_model_repository_index() == [{"name": model_id, "version": "1", "state": "READY"}]

        config = client.get_model_config(model_id)
        assert config["name"] == model_id and config["max_batch_size"] == 0
        assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}]
        assert [(o["name"], o["data_type"]) for o in config["output"]] == [
            ("probabilities", "TYPE_FP32"),
            ("predicted_labels", "TYPE_STRING"),
        ]
        assert client.get_model_config(model_id, model_version="1") == config

        probabilities, labels = v1_predict(api, model_id, x)
        outputs = [httpclient.InferRequestedOutput("probabilities", class_count=2)]
        for _ in range(6):  # two gunicorn processes answer, and the statistics sum them
            result = client.infer(model_id, [input_tensor(x)], outputs=outputs, model_version="1")
        top = result.as_numpy("probabilities")
        assert top.shape == (7, 2)
        for row, expected, label in zip(top, probabilities, labels):
            score, index, name = row[0].decode().split(":")
            assert name == label and int(index) == int(expected.argmax())
            assert abs(float(score) - expected.max()) < 1e-6
            assert int(row[1].decode().split(":")[1]) == int(np.argsort(-expected)[1])
        with pytest.raises(InferenceServerException):
            client.infer(model_id, [input_tensor(x[:, :3])])

        (stats,) = client.get_inference_statistics(model_id)["model_stats"]
        assert stats["name"] == model_id and stats["version"] == "1"
        assert stats["inference_stats"]["success"]["count"] == 6 and stats["inference_count"] == 42
        assert stats["inference_stats"]["fail"]["count"] == 1
        assert stats["inference_stats"]["success"]["ns"] > 0 and stats["last_inference"] > 0
        assert client.get_inference_statistics()["model_stats"] == [stats]
        assert client.get_inference_statistics(model_id, model_version="1")["model_stats"] == [stats]
    finally:
        client.close()
