"""Datasets of shaped samples: JSON nested lists or flat rows with a shape, CSV with a shape, binary
.npz uploads, the ``digits`` built-in, blobs stored in pieces, and predictions reshaped to the model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import redis as redis_lib

from nnserve.service import json_upload, store
from nnserve.service.settings import Settings
from tests.conftest import RedisServer

IMAGES = np.arange(5 * 3 * 2 * 1, dtype=np.float32).reshape(5, 3, 2, 1)
LABELS = [0, 1, 0, 1, 0]


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_compressed(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def post_file(client, content: bytes, filename: str = "d.npz", **form):
    data = {"file": (io.BytesIO(content), filename), **form}
    return client.post("/v1/datasets", data=data, content_type="multipart/form-data")


# JSON -------------------------------------------------------------------------------------------


def test_json_nested_samples_are_stored_in_their_shape(client, redis):
    response = client.post(
        "/v1/datasets", json={"features": IMAGES.tolist(), "targets": LABELS, "target_kind": "categorical"}
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["sample_shape"] == [3, 2, 1] and body["n_features"] == 6 and body["n_samples"] == 5
    assert client.get(f"/v1/datasets/{body['id']}").json["sample_shape"] == [3, 2, 1]
    x, _ = store.load_dataset(redis, body["id"])
    assert x.dtype == np.float32 and x.shape == (5, 3, 2, 1) and np.array_equal(x, IMAGES)


def test_json_rows_report_their_shape(client):
    body = client.post("/v1/datasets", json={"features": [[1, 2], [3, 4]], "targets": [0.5, 1.5]}).json
    assert body["sample_shape"] == [2]


def test_json_flat_rows_with_a_shape(client, redis):
    rows = IMAGES.reshape(5, -1).tolist()
    body = client.post("/v1/datasets", json={"features": rows, "targets": LABELS, "shape": [3, 2, 1]}).json
    assert body["sample_shape"] == [3, 2, 1]
    assert np.array_equal(store.load_dataset(redis, body["id"])[0], IMAGES)  # row-major


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            {"shape": [4, 2, 1]},
            "is [4, 2, 1] (8 values a sample) but the samples of features have shape (6,) (6 values)",
        ),
        ({"shape": [0, 6]}, "shape"),
        ({"shape": [1, 1, 1, 1, 6]}, "shape"),
    ],
)
def test_json_shape_that_does_not_fit(client, extra, message):
    rows = IMAGES.reshape(5, -1).tolist()
    response = client.post("/v1/datasets", json={"features": rows, "targets": LABELS, **extra})
    assert response.status_code == 422
    assert response.json["errors"][0]["loc"].startswith("shape") and message in response.json["detail"]


def test_json_nested_samples_given_another_shape(client, redis):
    """Samples take a shape of as many values (row-major); another size is refused naming both."""
    response = client.post("/v1/datasets", json={"features": IMAGES.tolist(), "targets": LABELS, "shape": [6, 1]})
    assert response.status_code == 201 and response.json["sample_shape"] == [6, 1]
    assert np.array_equal(store.load_dataset(redis, response.json["id"])[0], IMAGES.reshape(5, 6, 1))
    response = client.post("/v1/datasets", json={"features": IMAGES.tolist(), "targets": LABELS, "shape": [7]})
    assert response.status_code == 422
    assert response.json["errors"][0]["loc"] == "shape" and "have shape (3, 2, 1) (6 values)" in response.json["detail"]


@pytest.mark.parametrize(
    "bad, loc, message",
    [
        ([[1], [2]], "features.3", "has shape (2, 1) but sample 0 has (3, 2, 1)"),
        ([[[1], [2]], [[3]], [[5], [6]]], "features.3", "is ragged"),
        ([[[1], [2]], [[3], [4]], [[5], ["x"]]], "features.3", "only numbers"),
        (7, "features.3", "valid list"),
        ([[[1], [2]], [[3], [4]], [[5], [1e39]]], "features.3", "not finite or beyond float32"),
    ],
)
def test_json_ragged_and_bad_samples_are_named_by_index(client, bad, loc, message):
    features = IMAGES.tolist()
    features[3] = bad
    response = client.post("/v1/datasets", json={"features": features, "targets": LABELS})
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["loc"] == loc and message in response.json["detail"]


def test_json_samples_read_across_windows(settings):
    """Many samples through a small window: runs of whole samples are cut at any byte, the ragged
    one is still named by its index."""
    images = np.random.default_rng(0).integers(0, 16, size=(300, 4, 4, 1)).astype(np.float32)
    labels = ",".join(str(i % 3) for i in range(300))
    body = f'{{"features": {images.tolist()}, "targets": [{labels}]}}'.encode()
    dataset = json_upload.read(io.BytesIO(body), settings, window=97)
    assert dataset.meta["sample_shape"] == [4, 4, 1] and dataset.meta["n_samples"] == 300
    stored = np.concatenate([piece.reshape(-1) for piece in dataset.features.pieces]).reshape(300, 4, 4, 1)
    assert np.array_equal(stored, images)

    ragged = images.tolist()
    ragged[217][2] = [[1], [2]]
    body = f'{{"features": {ragged}, "targets": [{labels}]}}'.encode()
    with pytest.raises(Exception) as error:
        json_upload.read(io.BytesIO(body), settings, window=97)
    assert error.value.errors[0]["loc"] == "features.217" and "ragged" in error.value.errors[0]["msg"]


def test_json_sample_limits(make_app):
    client = make_app(max_features=5).test_client()
    response = client.post("/v1/datasets", json={"features": IMAGES.tolist(), "targets": LABELS})
    assert response.status_code == 422 and "have 6 values; between 1 and 5" in response.json["detail"]
    deep = np.zeros((2, 1, 1, 1, 1, 1)).tolist()
    response = client.post("/v1/datasets", json={"features": deep, "targets": [0.5, 1.5]})
    assert response.status_code == 422 and "5 dimensions; at most 4" in response.json["detail"]


# CSV --------------------------------------------------------------------------------------------


def test_csv_with_a_shape(client, redis):
    header = ",".join(f"p{i}" for i in range(6)) + ",label\n"
    rows = "".join(",".join(str(v) for v in image.reshape(-1)) + f",{y}\n" for image, y in zip(IMAGES, LABELS))
    response = post_file(client, (header + rows).encode(), "d.csv", shape="[3, 2, 1]")
    assert response.status_code == 201, response.json
    assert response.json["sample_shape"] == [3, 2, 1] and response.json["feature_names"][0] == "p0"
    assert np.array_equal(store.load_dataset(redis, response.json["id"])[0], IMAGES)
    for shape, text in (("[2, 2]", "is [2, 2] (4 values a sample)"), ("8x8", "JSON array"), ("[8, -1]", "positive")):
        response = post_file(client, (header + rows).encode(), "d.csv", shape=shape)
        assert response.status_code == 422 and response.json["errors"][0]["loc"] == "shape"
        assert text in response.json["detail"]


# npz --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pack", [npz, npz_compressed])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int16])
def test_npz_upload(client, redis, pack, dtype):
    response = post_file(client, pack(x=IMAGES.astype(dtype), y=np.array(LABELS)), name="tiny")
    assert response.status_code == 201, response.json
    body = response.json
    assert body["name"] == "tiny" and body["sample_shape"] == [3, 2, 1] and body["classes"] == [0, 1]
    x, y = store.load_dataset(redis, body["id"])
    assert x.dtype == np.float32 and np.array_equal(x, IMAGES) and y.tolist() == LABELS


def test_npz_upload_labels_names_and_flat_rows(client, redis):
    labels = np.array(["cat", "dog", "cat", "dog", "cat"])
    response = post_file(
        client,
        npz(x=IMAGES.reshape(5, 6), y=labels),
        shape="[3, 2, 1]",
        feature_names='["a", "b", "c", "d", "e", "f"]',
    )
    assert response.status_code == 201, response.json
    assert response.json["sample_shape"] == [3, 2, 1] and response.json["classes"] == ["cat", "dog"]
    assert response.json["feature_names"] == ["a", "b", "c", "d", "e", "f"] and response.json["name"] == "d"
    assert np.array_equal(store.load_dataset(redis, response.json["id"])[0], IMAGES)
    continuous = post_file(client, npz(x=IMAGES, y=np.linspace(0, 1, 10).reshape(5, 2)))
    assert continuous.status_code == 201 and continuous.json["n_targets"] == 2
    assert continuous.json["target_kind"] == "continuous"


@pytest.mark.parametrize(
    "arrays, loc, message",
    [
        ({"x": np.array([{"a": 1}] * 5, dtype=object).reshape(5, 1), "y": np.arange(5)}, "x", "only pickle"),
        ({"x": IMAGES, "y": np.array([[1], "a", None, 2, 3], dtype=object)}, "y", "only pickle"),
        ({"x": IMAGES}, "file", "exactly the arrays 'x' and 'y'"),
        ({"x": IMAGES, "y": np.arange(5), "w": np.ones(5)}, "file", "exactly the arrays"),
        ({"x": np.arange(5.0), "y": np.arange(5)}, "x", "samples along its first axis"),
        ({"x": IMAGES, "y": np.arange(4)}, "y", "one target"),
        ({"x": IMAGES.astype(str), "y": np.arange(5)}, "x", "must hold numbers"),
        ({"x": np.where(IMAGES == 13, np.inf, IMAGES), "y": np.arange(5)}, "x.2", "not finite"),
        ({"x": np.asfortranarray(IMAGES.reshape(5, 6)), "y": np.arange(5)}, "x", "Fortran order"),
    ],
)
def test_npz_upload_errors(client, arrays, loc, message):
    response = post_file(client, npz(**arrays))
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["loc"] == loc and message in response.json["detail"]


def test_npz_that_is_not_one(client):
    response = post_file(client, b"PK\x03\x04 but no zip follows")
    assert response.status_code == 422 and "not a readable .npz" in response.json["detail"]
    whole = npz(x=IMAGES, y=np.arange(5))
    response = post_file(client, whole[: len(whole) // 2])
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "file"


def test_npz_limits_are_checked_before_reading(make_app):
    """A deflated archive of zeros is tiny; its header says what it would unpack to, and that is refused."""
    client = make_app(max_dataset_bytes=1_000_000).test_client()
    zeros = np.zeros((100_000, 8, 8, 1), dtype=np.uint8)
    content = npz_compressed(x=zeros, y=np.arange(100_000) % 10)
    assert len(content) < 200_000
    response = post_file(client, content)
    assert response.status_code == 422 and "the limit is 1,000,000 bytes" in response.json["detail"]
    response = make_app(max_rows=1000).test_client()
    response = post_file(make_app(max_rows=1000).test_client(), content)
    assert response.status_code == 422 and "between 1 and 1000" in response.json["detail"]


# digits -----------------------------------------------------------------------------------------


def test_digits_is_built_in(client, redis):
    body = client.get("/v1/datasets/digits").json
    assert body["builtin"] is True and body["n_samples"] == 1797 and body["sample_shape"] == [8, 8, 1]
    assert body["classes"] == list(range(10)) and sum(body["class_counts"]) == 1797
    x, y = store.load_dataset(redis, "digits")
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32 and x.min() == 0 and x.max() == 16
    assert np.bincount(y).tolist() == body["class_counts"]
    assert client.delete("/v1/datasets/digits").status_code == 409


# Stored in pieces -------------------------------------------------------------------------------


def test_a_blob_over_the_string_limit_is_stored_in_pieces(tmp_path, monkeypatch):
    """A real Redis that refuses strings over 1 MiB (as any refuses them over 512 MiB) stores a 3 MB
    dataset as a list of pieces, and gives it back whole."""
    server = RedisServer(tmp_path, args=("--proto-max-bulk-len", "1mb"))
    server.start()
    try:
        r = redis_lib.Redis(port=server.port)
        x = np.random.default_rng(0).normal(size=(1000, 28, 28, 1)).astype(np.float32)
        y = np.arange(1000) % 10
        meta = {"id": "ds_big", "tenant": "public", "created_at": store.now(), "n_features": 784}
        with pytest.raises(redis_lib.exceptions.RedisError):  # as one string: refused (the connection dropped)
            store.save_dataset(r, meta, x, y)
        monkeypatch.setattr(store, "BLOB_PIECE_BYTES", 1024 * 1024)
        store.save_dataset(r, meta, x, y)
        assert r.type(store.arrays_key("ds_big")) == b"list" and r.llen(store.arrays_key("ds_big")) == 3
        features, targets = store.load_dataset(r, "ds_big")
        assert np.array_equal(features, x) and np.array_equal(targets, y)
        # Backups read and write it in pieces too.
        family = store.FAMILIES[0]
        parts = store.read_record(r, family, "public", "ds_big")
        r.delete(store.arrays_key("ds_big"))
        store.restore_record(r, family, "public", "ds_big", parts, 1.0)
        assert np.array_equal(store.load_dataset(r, "ds_big")[0], x)
        store.delete_dataset(r, meta)
        assert not r.exists(store.arrays_key("ds_big"))
        r.close()
    finally:
        server.stop()


# Models and predictions -------------------------------------------------------------------------

DIGITS_DENSE = {
    "layers": [
        {"type": "dense", "units": 32, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
}
DIGITS_TRAINING = {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 5, "batch_size": 64, "seed": 0}


@pytest.fixture
def digits_model(client, run_jobs, redis) -> str:
    response = client.post("/v1/jobs", json={"dataset": "digits", "model": DIGITS_DENSE, "training": DIGITS_TRAINING})
    assert response.status_code == 202, response.json
    run_jobs()
    job = client.get(f"/v1/jobs/{response.json['id']}").json
    assert job["status"] == "succeeded", job
    return job["model_id"]


def test_predict_takes_nested_samples_or_flat_rows(client, redis, digits_model):
    x, y = store.load_dataset(redis, "digits")
    nested = client.post(f"/v1/models/{digits_model}/predict", json={"inputs": x[:20].tolist()})
    flat = client.post(f"/v1/models/{digits_model}/predict", json={"inputs": x[:20].reshape(20, 64).tolist()})
    assert nested.status_code == flat.status_code == 200, nested.json
    assert nested.json == flat.json
    assert np.mean(np.array(nested.json["predictions"]) == y[:20]) >= 0.7
    wrong = client.post(f"/v1/models/{digits_model}/predict", json={"inputs": np.zeros((2, 7, 7, 1)).tolist()})
    assert wrong.status_code == 422 and wrong.json["errors"][0]["loc"] == "inputs"
    assert "(7, 7, 1)" in wrong.json["detail"] and "(64,)" in wrong.json["detail"]
    ragged = client.post(f"/v1/models/{digits_model}/predict", json={"inputs": [[[1], [2]], [[1]]]})
    assert ragged.status_code == 422 and "same shape" in ragged.json["detail"]
    model = client.get(f"/v1/models/{digits_model}").json
    assert model["input"]["sample_shape"] == [8, 8, 1] and model["input"]["n_features"] == 64
    scores = client.post(f"/v1/models/{digits_model}/evaluate", json={"dataset": "digits"})
    assert scores.status_code == 200 and scores.json["n_samples"] == 1797


def test_v2_metadata_and_infer_of_images(client, redis, digits_model):
    meta = client.get(f"/v2/models/{digits_model}").json
    assert meta["inputs"][0]["shape"] == [-1, 8, 8, 1]
    x, _ = store.load_dataset(redis, "digits")
    v1 = client.post(f"/v1/models/{digits_model}/predict", json={"inputs": x[:3].tolist()}).json
    for shape in ([3, 8, 8, 1], [3, 64]):
        body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": x[:3].reshape(-1).tolist()}]}
        response = client.post(f"/v2/models/{digits_model}/infer", json=body)
        assert response.status_code == 200, response.json
        probabilities = next(o for o in response.json["outputs"] if o["name"] == "probabilities")
        assert np.allclose(np.reshape(probabilities["data"], (3, 10)), v1["probabilities"], atol=1e-6)
    body = {"inputs": [{"name": "input", "shape": [1, 9, 9, 1], "datatype": "FP32", "data": [0.0] * 81}]}
    response = client.post(f"/v2/models/{digits_model}/infer", json=body)
    assert response.status_code == 400 and "(9, 9, 1)" in response.json["error"]


def test_old_dataset_records_read_as_rows(client, redis):
    """A record stored before sample shapes has none: it reads as rows of n_features."""
    body = client.post("/v1/datasets", json={"features": [[1, 2], [3, 4]], "targets": [0.5, 1.5]}).json
    redis.hdel(store.dataset_key(body["id"]), "sample_shape")
    assert client.get(f"/v1/datasets/{body['id']}").json["sample_shape"] == [2]


def test_settings_name_the_dataset_limit_in_bytes():
    assert "bytes" in Settings.model_fields["max_dataset_bytes"].description
