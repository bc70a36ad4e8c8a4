"""/v2: the Open Inference Protocol (KServe v2 REST) in process: health, metadata, inference in JSON and
in the binary tensor extension, equal to /v1's predictions, and errors in the protocol's form."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from pydantic import SecretStr

from nnserve.service.builtin import load
from tests.service.helpers import submit, train

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
LINEAR = {
    "dataset": "linear",
    "model": {"layers": [{"type": "dense", "units": 1}], "input_scaling": "none"},
    "training": {"optimizer": {"name": "adam", "learning_rate": 0.1}, "epochs": 50, "batch_size": 4, "seed": 0},
}


def tensor(rows, name="input", datatype="FP32", flat=False):
    data = np.asarray(rows).ravel().tolist() if flat else rows
    return {"name": name, "shape": list(np.shape(rows)), "datatype": datatype, "data": data}


def infer(client, model_id, body, **kwargs):
    return client.post(f"/v2/models/{model_id}/infer", json=body, **kwargs)


def binary_request(rows, outputs=None, parameters=None) -> tuple[bytes, dict[str, str]]:
    """A request as tritonclient builds it by default: FP32 rows after the JSON, no Content-Type."""
    raw = np.asarray(rows, dtype="<f4").tobytes()
    head = {
        "inputs": [
            {
                "name": "input",
                "shape": list(np.shape(rows)),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    if outputs is not None:
        head["outputs"] = outputs
    if parameters is not None:
        head["parameters"] = parameters
    text = json.dumps(head).encode()
    return text + raw, {"Inference-Header-Content-Length": str(len(text))}


def decode_binary(response) -> tuple[dict, dict[str, np.ndarray]]:
    """Split a binary-extension response by hand: the JSON, then each output's bytes in order."""
    length = int(response.headers["Inference-Header-Content-Length"])
    body = response.get_data()
    head, rest = json.loads(body[:length]), body[length:]
    arrays = {}
    for output in head["outputs"]:
        if "data" in output:
            continue
        size = output["parameters"]["binary_data_size"]
        chunk, rest = rest[:size], rest[size:]
        if output["datatype"] == "BYTES":
            items = []
            while chunk:
                (n,) = struct.unpack("<I", chunk[:4])
                items.append(chunk[4 : 4 + n].decode())
                chunk = chunk[4 + n :]
            arrays[output["name"]] = np.array(items, dtype=object)
        else:
            arrays[output["name"]] = np.frombuffer(chunk, dtype="<f4").reshape(output["shape"])
    assert rest == b""
    return head, arrays


def v1_predict(client, model_id, rows):
    response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": rows})
    assert response.status_code == 200
    return response.json


def assert_error(response, status: int, fragment: str):
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json" and set(response.json) == {"error"}, response.data
    assert fragment in response.json["error"], response.json


# Health and metadata ---------------------------------------------------------------------------


def test_health_and_server_metadata(client):
    for path in ("/v2/health/live", "/v2/health/ready"):
        response = client.get(path)
        assert response.status_code == 200 and response.data == b""
    assert client.get("/v2").json == {
        "name": "nnserve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "classification", "model_repository", "model_configuration", "statistics"],
    }


def test_server_not_ready_without_redis(make_app, redis_server):
    app = make_app(redis_url="redis://127.0.0.1:1/0", redis_timeout=0.2)
    response = app.test_client().get("/v2/health/ready")
    assert_error(response, 503, "Redis")
    assert response.headers["Retry-After"] == "5"


def test_model_metadata_and_readiness(client, iris_model):
    expected = {
        "name": iris_model,
        "versions": ["1"],
        "platform": "nnserve_numpy",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "predicted_labels", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert client.get(f"/v2/models/{iris_model}").json == expected
    assert client.get(f"/v2/models/{iris_model}/versions/1").json == expected
    for path in (f"/v2/models/{iris_model}/ready", f"/v2/models/{iris_model}/versions/1/ready"):
        response = client.get(path)
        assert response.status_code == 200 and response.data == b""


def test_a_model_not_trained_yet_has_metadata_but_is_not_ready(client):
    job = submit(client).json
    assert client.get(f"/v2/models/{job['model_id']}").json["inputs"][0]["shape"] == [-1, 4]
    assert_error(client.get(f"/v2/models/{job['model_id']}/ready"), 409, "not trained yet")
    assert_error(infer(client, job["model_id"], {"inputs": [tensor(ROWS)]}), 409, "not trained yet")


# Inference ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True])
def test_json_inference_equals_v1_predict(client, iris_model, flat):
    response = infer(client, iris_model, {"id": "42", "inputs": [tensor(ROWS, flat=flat)]})
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.json
    assert body["model_name"] == iris_model and body["model_version"] == "1" and body["id"] == "42"
    outputs = {output["name"]: output for output in body["outputs"]}
    assert list(outputs) == ["probabilities", "predicted_labels"]
    assert outputs["probabilities"]["shape"] == [3, 3] and outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["predicted_labels"] == {
        "name": "predicted_labels",
        "shape": [3],
        "datatype": "BYTES",
        "data": ["setosa", "virginica", "versicolor"],
    }
    v1 = v1_predict(client, iris_model, ROWS)
    probabilities = np.float32(outputs["probabilities"]["data"]).reshape(3, 3)
    np.testing.assert_array_equal(probabilities, np.float32(v1["probabilities"]))
    assert outputs["predicted_labels"]["data"] == v1["predictions"]


def test_binary_inference_without_content_type_equals_v1_predict(client, iris_model):
    _, x, _ = load("iris")
    body, headers = binary_request(x.tolist(), parameters={"binary_data_output": True})
    response = client.post(f"/v2/models/{iris_model}/infer", data=body, headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    head, arrays = decode_binary(response)
    assert [o["datatype"] for o in head["outputs"]] == ["FP32", "BYTES"]
    v1 = v1_predict(client, iris_model, x.tolist())
    np.testing.assert_array_equal(arrays["probabilities"], np.float32(v1["probabilities"]))
    assert arrays["predicted_labels"].tolist() == v1["predictions"]


def test_requested_outputs_mix_binary_and_json_in_their_order(client, iris_model):
    body, headers = binary_request(
        ROWS,
        outputs=[
            {"name": "predicted_labels", "parameters": {"binary_data": False}},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    )
    response = client.post(f"/v2/models/{iris_model}/versions/1/infer", data=body, headers=headers)
    head, arrays = decode_binary(response)
    assert [o["name"] for o in head["outputs"]] == ["predicted_labels", "probabilities"]
    assert head["outputs"][0]["data"] == v1_predict(client, iris_model, ROWS)["predictions"]
    assert arrays["probabilities"].shape == (3, 3)
    only = infer(client, iris_model, {"inputs": [tensor(ROWS)], "outputs": [{"name": "predicted_labels"}]}).json
    assert [o["name"] for o in only["outputs"]] == ["predicted_labels"] and "id" not in only


def test_other_numeric_datatypes_are_converted(client, iris_model):
    rows = [[5, 3, 1, 0], [7, 3, 5, 2]]
    ints = infer(client, iris_model, {"inputs": [tensor(rows, datatype="INT64")]}).json
    floats = infer(client, iris_model, {"inputs": [tensor(rows, datatype="FP32")]}).json
    assert ints["outputs"] == floats["outputs"]


def test_regression_predictions(client, run_jobs):
    response = client.post("/v1/jobs", json=LINEAR)
    run_jobs()
    model_id = response.json["model_id"]
    metadata = client.get(f"/v2/models/{model_id}").json
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1]}]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
    output = infer(client, model_id, {"inputs": [tensor([[5.0], [1.0]])]}).json["outputs"][0]
    assert output["name"] == "predictions" and output["shape"] == [2]
    np.testing.assert_array_equal(
        np.float32(output["data"]), np.float32(v1_predict(client, model_id, [[5.0], [1.0]])["predictions"])
    )


# Errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        ({"inputs": [tensor(ROWS, name="x")]}, "one input, 'input'; received ['x']"),
        ({"inputs": [tensor(ROWS), tensor(ROWS)]}, "one input"),
        ({"inputs": [tensor(ROWS, datatype="BYTES")]}, "datatype 'BYTES' is not numeric"),
        ({"inputs": [{**tensor(ROWS), "shape": [12]}]}, "shape must be [samples, *sample_shape]"),
        ({"inputs": [{**tensor(ROWS), "shape": [0, 4]}]}, "with at least one sample"),
        ({"inputs": [{**tensor(ROWS), "shape": [4, 4]}]}, "must be 16 numbers for shape [4, 4]"),
        ({"inputs": [{**tensor(ROWS), "shape": [4, 3]}]}, "must be 12 numbers for shape [4, 3]"),
        ({"inputs": [{**tensor(ROWS), "data": [["a", "b", "c", "d"]] * 3}]}, "not all numbers"),
        ({"inputs": [{**tensor(ROWS), "data": [[1, 2], [3, 4, 5]]}]}, "flat or nested as the shape says"),
        ({"inputs": [{**tensor(ROWS), "data": None}]}, "send 'data'"),
        (
            {"inputs": [tensor([[1.0, 2.0]])]},
            "each sample must have shape (4,) (4 values, nested or as a flat row); received samples of shape (2,)",
        ),
        ({"inputs": [{**tensor(ROWS), "shape": "3x4"}]}, "inputs.0.shape"),
        ({"inputs": [{**tensor(ROWS), "colour": 1}]}, "inputs.0.colour: Extra inputs"),
        (
            {"inputs": [tensor(ROWS)], "outputs": [{"name": "logits"}]},
            "outputs are ['probabilities', 'predicted_labels']",
        ),
        (
            {"inputs": [tensor(ROWS)], "outputs": [{"name": "predicted_labels", "parameters": {"classification": 2}}]},
            "applies to a classifier's 'probabilities'",
        ),
        ({"inputs": [tensor(ROWS)], "parameters": {"binary_data_output": "yes"}}, "binary_data must be true or false"),
        (
            {"inputs": [tensor(ROWS)], "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}]},
            "classification must be a positive integer",
        ),
    ],
)
def test_bad_inference_requests_are_400s(client, iris_model, body, fragment):
    assert_error(infer(client, iris_model, body), 400, fragment)


def test_bad_binary_requests_are_400s(client, iris_model):
    body, headers = binary_request(ROWS)
    url = f"/v2/models/{iris_model}/infer"
    assert_error(client.post(url, data=body[:-4], headers=headers), 400, "is 48 bytes; binary_data_size says 48 and 44")
    assert_error(
        client.post(url, data=body, headers={"Inference-Header-Content-Length": "x"}), 400, "must be the length"
    )
    assert_error(client.post(url, data=body, headers={"Inference-Header-Content-Length": "10"}), 400, "not valid JSON")
    assert_error(client.post(url, data=body), 400, "need the Inference-Header-Content-Length header")
    nan, headers = binary_request([[np.nan, 1, 2, 3]])
    assert_error(client.post(url, data=nan, headers=headers), 400, "NaN")
    assert_error(client.post(url, data=body, headers={**headers, "Content-Encoding": "gzip"}), 415, "'gzip'")


def test_unknown_models_versions_and_routes_are_404s(client, iris_model):
    for path in ("/v2/models/mdl_nope", "/v2/models/mdl_nope/ready"):
        assert_error(client.get(path), 404, "no model 'mdl_nope'")
    assert_error(infer(client, "mdl_nope", {"inputs": [tensor(ROWS)]}), 404, "no model 'mdl_nope'")
    assert_error(client.get(f"/v2/models/{iris_model}/versions/2"), 404, "its only version is '1'")
    assert_error(
        client.post(f"/v2/models/{iris_model}/versions/2/infer", json={"inputs": [tensor(ROWS)]}), 404, "version"
    )
    assert_error(client.get("/v2/repository/index"), 405, "not allowed")  # it is a POST
    assert_error(client.get("/v2/repository/models/x/load"), 404, "not found")  # no loading or unloading
    assert_error(client.get(f"/v2/models/{iris_model}/infer"), 405, "not allowed")


def test_body_over_the_limit_is_a_413(make_app, client, iris_model):
    small = make_app(max_body_bytes=100).test_client()
    assert_error(infer(small, iris_model, {"inputs": [tensor(ROWS * 10)]}), 413, "NNSERVE_MAX_BODY_BYTES")


ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef-long"


def test_keys_tenants_and_rate_limits_answer_in_the_protocol_form(make_app, run_jobs):
    from nnserve.service.settings import Rate

    app = make_app(api_keys=(SecretStr(ALICE), SecretStr(BOB)), rate_limit_predict=Rate(2, 60))
    alice, bob, anonymous = app.test_client(), app.test_client(), app.test_client()
    alice.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ALICE}"
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {BOB}"
    model_id = train(alice, run_jobs)["model_id"]

    assert anonymous.get("/v2/health/live").status_code == 200 and anonymous.get("/v2/health/ready").status_code == 200
    for response in (anonymous.get("/v2"), anonymous.get(f"/v2/models/{model_id}")):
        assert_error(response, 401, "API key")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(bob.get(f"/v2/models/{model_id}"), 404, "no model")
    assert_error(infer(bob, model_id, {"inputs": [tensor(ROWS)]}), 404, "no model")
    assert alice.get(f"/v2/models/{model_id}/ready").status_code == 200

    for _ in range(2):
        assert infer(alice, model_id, {"inputs": [tensor(ROWS)]}).status_code == 200
    limited = infer(alice, model_id, {"inputs": [tensor(ROWS)]})
    assert_error(limited, 429, "NNSERVE_RATE_LIMIT_PREDICT")
    assert int(limited.headers["Retry-After"]) >= 1


def test_openapi_documents_the_protocol_and_its_error_form(client):
    paths = client.get("/openapi.json").json["paths"]
    operation = paths["/v2/models/{model_name}/infer"]["post"]
    assert (
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/InferenceRequest"
    )
    assert operation["responses"]["400"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceError"}}
    }
    assert "401" in operation["responses"] and "401" not in paths["/v2/health/live"]["get"]["responses"]


def test_repository_index_config_statistics_and_classification(client, iris_model, run_jobs):
    pending = client.post(
        "/v1/jobs", json={"dataset": "iris", "model": {"layers": [{"type": "dense", "units": 3}]}}
    ).json["model_id"]
    index = client.post("/v2/repository/index").json
    assert {"name": iris_model, "version": "1", "state": "READY"} in index
    assert any(e["name"] == pending and e["state"] == "UNAVAILABLE" for e in index)
    assert client.post("/v2/repository/index", json={"ready": True}).json == [
        {"name": iris_model, "version": "1", "state": "READY"}
    ]
    assert_error(client.post("/v2/repository/index", data="{", content_type="application/json"), 400, "JSON")
    config = client.get(f"/v2/models/{iris_model}/config").json
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}]

    body = {"inputs": [tensor(ROWS)], "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}]}
    top = infer(client, iris_model, body).json["outputs"][0]
    assert top["datatype"] == "BYTES" and top["shape"] == [len(ROWS), 3]  # at most the model's classes
    probabilities = v1_predict(client, iris_model, ROWS)["probabilities"]
    for row, expected in zip(np.array(top["data"]).reshape(len(ROWS), 3), probabilities):
        order = np.argsort(-np.float32(expected))
        assert [int(item.split(":")[1]) for item in row] == order.tolist()
        assert float(row[0].split(":")[0]) == pytest.approx(max(expected), abs=1e-6)

    infer(client, iris_model, {"inputs": [tensor([[1.0, 2.0]])]})  # refused: counted as a failure
    (stats,) = client.get(f"/v2/models/{iris_model}/stats").json["model_stats"]
    assert stats["inference_stats"]["success"]["count"] == 1 and stats["inference_count"] == len(ROWS)
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert_error(client.get("/v2/models/mdl_nope/stats"), 404, "no model")
    client.delete(f"/v1/models/{iris_model}")
    assert client.get("/v2/models/stats").json["model_stats"][0]["inference_count"] == 0  # the pending model


def test_registered_versions_are_named_by_their_name_and_number(client, run_jobs):
    """A registered name's versions are the protocol's versions: the repository index lists NAME 1 and 2,
    and config and statistics take ``versions/N``; the bare name is ``current``."""
    for seed in (1, 2):
        train(client, run_jobs, name="iris-oip", training={"epochs": 2, "seed": seed})
    index = client.post("/v2/repository/index", json={"ready": True}).json
    assert [e for e in index if e["name"] == "iris-oip"] == [
        {"name": "iris-oip", "version": "1", "state": "READY"},
        {"name": "iris-oip", "version": "2", "state": "READY"},
    ]
    assert client.get("/v2/models/iris-oip/versions/1/config").json["name"] == "iris-oip"
    for path in ("/v2/models/iris-oip", "/v2/models/iris-oip/versions/1"):
        metadata = client.get(path).json
        assert metadata["name"] == "iris-oip" and metadata["versions"] == ["1", "2"], path
    infer(client, "iris-oip", {"inputs": [tensor(ROWS)]})
    (current,) = client.get("/v2/models/iris-oip/stats").json["model_stats"]
    assert current["version"] == "2" and current["inference_count"] == len(ROWS)
    (first,) = client.get("/v2/models/iris-oip/versions/1/stats").json["model_stats"]
    assert first["version"] == "1" and first["inference_count"] == 0
    assert_error(client.get("/v2/models/iris-oip/versions/3/stats"), 404, "no version 3")
