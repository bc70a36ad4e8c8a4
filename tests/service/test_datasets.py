"""/v1/datasets: uploads (JSON and CSV), target-kind inference, built-ins, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from nnserve.service import store


def upload(client, **body):
    return client.post("/v1/datasets", json=body)


def test_json_upload_round_trip(client, redis):
    response = upload(
        client,
        name="xor",
        features=[[0, 0], [0, 1], [1, 0], [1, 1]] * 3,
        targets=["a", "b", "b", "a"] * 3,
        feature_names=["p", "q"],
    )
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/v1/datasets/{body['id']}"
    assert body["n_samples"] == 12 and body["n_features"] == 2 and body["classes"] == ["a", "b"]
    assert body["target_kind"] == "categorical" and body["target_kind_inferred"] is True and "strings" in body["note"]
    assert client.get(f"/v1/datasets/{body['id']}").json == body
    # Stored compactly: float32 features in npz, not JSON.
    x, y = store.load_dataset(redis, body["id"])
    assert x.dtype == np.float32 and x.shape == (12, 2) and y.tolist() == ["a", "b", "b", "a"] * 3
    assert redis.get(store.arrays_key(body["id"]))[:2] == b"PK"


@pytest.mark.parametrize(
    "targets, kind, inferred_note",
    [
        ([0.5, 1.5, 2.5, 3.5], "continuous", "fractional"),
        ([1, 2, 1, 2, 1, 2], "categorical", "2 distinct values in 6 rows: taken as class labels"),
        ([2, 4, 6, 8], "continuous", "4 distinct values in 4 rows: taken as continuous"),
        ([True, False, True, False], "categorical", "true/false"),
    ],
)
def test_target_kind_inference(client, targets, kind, inferred_note):
    body = upload(client, features=[[float(i)] for i in range(len(targets))], targets=targets).json
    assert body["target_kind"] == kind and body["target_kind_inferred"] is True
    assert inferred_note in body["note"]


def test_target_kind_given_by_the_client(client):
    body = upload(client, features=[[1], [2], [3], [4]], targets=[1, 2, 1, 2], target_kind="continuous").json
    assert body["target_kind"] == "continuous" and body["target_kind_inferred"] is False and "note" not in body
    body = upload(client, features=[[1], [2], [3], [4]], targets=[[1, 2], [3, 4], [5, 6], [7, 8]]).json
    assert body["target_kind"] == "continuous" and body["n_targets"] == 2


def test_csv_upload(client, redis):
    csv = "a,b,label,c\n1,2,x,3\n4,5,y,6\n7,8.5,x,9\n\n"
    response = client.post(
        "/v1/datasets",
        data={"file": (io.BytesIO(csv.encode()), "points.csv"), "target": "label"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["name"] == "points" and body["feature_names"] == ["a", "b", "c"] and body["target_name"] == "label"
    assert body["classes"] == ["x", "y"] and body["n_samples"] == 3
    x, _ = store.load_dataset(redis, body["id"])
    assert x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8.5, 9]]


def test_csv_defaults_to_last_column_and_infers_numbers(client):
    csv = "x,y\n1,0.5\n2,1.5\n3,2.5\n"
    response = client.post(
        "/v1/datasets",
        data={"file": (io.BytesIO(csv.encode()), "l.csv"), "name": "lin"},
        content_type="multipart/form-data",
    )
    assert response.json["name"] == "lin" and response.json["target_kind"] == "continuous"
    assert response.json["target_name"] == "y"


@pytest.mark.parametrize(
    "csv, form, loc, fragment",
    [
        ("a,b\n1,x\n", {"target": "a"}, "file", "'x' is not a number"),
        ("a,b\n1,2\n", {"target": "zzz"}, "target", "no column 'zzz'"),
        ("a,b\n1,2,3\n", {}, "file", "line 2 has 3 values"),
        ("a,b\n", {}, "file", "header row and at least one data row"),
        ("a,b\n1,x\n2,3\n", {}, "target", "mixes strings and numbers"),
    ],
)
def test_csv_errors(client, csv, form, loc, fragment):
    response = client.post(
        "/v1/datasets", data={"file": (io.BytesIO(csv.encode()), "d.csv"), **form}, content_type="multipart/form-data"
    )
    assert response.status_code == 422
    assert response.json["errors"][0]["loc"] == loc and fragment in response.json["detail"]


def test_csv_without_file(client):
    response = client.post("/v1/datasets", data={"target": "a"}, content_type="multipart/form-data")
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "file"


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"features": [[1, 2], [3]], "targets": [1, 2]}, "features.1"),
        ({"features": [[1], [2]], "targets": [1]}, "targets"),
        ({"features": [[1], ["x"]], "targets": [1, 2]}, "features.1.0"),
        ({"features": [[1], [True]], "targets": [1, 2]}, "features.1.0"),
        ({"features": [[1], [1e39]], "targets": [1, 2]}, "features.1"),
        ({"features": [[1], [2]], "targets": ["a", 1]}, "targets"),
        ({"features": [[1], [2]], "targets": [1, 1]}, "targets"),
        ({"features": [], "targets": []}, "features"),
        ({"features": [[1], [2]]}, "targets"),
        ({"features": [[1], [2]], "targets": [1, 2], "colour": "red"}, "colour"),
        ({"features": [[1], [2]], "targets": [1, 2], "target_kind": "ordinal"}, "target_kind"),
        ({"features": [[1], [2]], "targets": ["a", "b"], "target_kind": "continuous"}, "targets"),
    ],
)
def test_json_upload_errors(client, body, loc):
    response = upload(client, **body)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    assert loc in [e["loc"] for e in response.json["errors"]], response.json


def test_limits(make_app):
    response = upload(make_app(max_rows=3).test_client(), features=[[1]] * 4, targets=[1, 2, 1, 2])
    assert response.status_code == 422 and "the limit is 3" in response.json["detail"]


def test_builtins(client):
    items = client.get("/v1/datasets").json["items"]
    assert [d["id"] for d in items[:3]] == ["iris", "blobs", "linear"]
    iris = client.get("/v1/datasets/iris").json
    assert iris["n_samples"] == 150 and iris["classes"] == ["setosa", "versicolor", "virginica"] and iris["builtin"]
    blobs = client.get("/v1/datasets/blobs").json
    assert blobs["n_samples"] == 1500 and blobs["n_features"] == 2 and blobs["classes"] == [0, 1, 2]
    linear = client.get("/v1/datasets/linear").json
    assert linear["target_kind"] == "continuous" and linear["n_samples"] == 4


def test_builtin_data(redis):
    x, y = store.load_dataset(redis, "blobs")
    centres = [x[y == k].mean(axis=0) for k in range(3)]
    np.testing.assert_allclose(centres, [(0, -2), (2, 2), (-2, 2)], atol=0.15)
    x, y = store.load_dataset(redis, "linear")
    assert x[:, 0].tolist() == [1, 2, 3, 4] and y.tolist() == [2, 4, 6, 8]


def test_builtins_are_read_only(client):
    response = client.delete("/v1/datasets/iris")
    assert response.status_code == 409 and "built-in" in response.json["detail"]


def test_delete(client, redis):
    dataset_id = upload(client, features=[[1], [2]], targets=[0.5, 1.5]).json["id"]
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 404
    assert not redis.exists(store.dataset_key(dataset_id), store.arrays_key(dataset_id))


def test_listing_pages(client):
    ids = [upload(client, features=[[1], [2]], targets=[0.5, i + 0.5]).json["id"] for i in range(3)]
    second = client.get("/v1/datasets?offset=3&limit=2")  # the 3 built-ins come first
    assert [d["id"] for d in second.json["items"]] == ids[::-1][:2]
    assert second.json["total"] == 6 and second.json["next"] == "/v1/datasets?offset=5&limit=2"
    assert second.headers["Link"] == (
        '</v1/datasets?offset=0&limit=2>; rel="first", </v1/datasets?offset=1&limit=2>; rel="prev", '
        '</v1/datasets?offset=5&limit=2>; rel="next", </v1/datasets?offset=4&limit=2>; rel="last"'
    )
    last = client.get(second.json["next"])
    assert [d["id"] for d in last.json["items"]] == ids[:1]
    assert last.json["next"] is None and 'rel="next"' not in last.headers["Link"]
    assert client.get("/v1/datasets?limit=0").status_code == 422
    assert client.get("/v1/datasets?offset=x").json["errors"][0]["loc"] == "offset"


def test_wrong_content_type_and_bad_json(client):
    response = client.post("/v1/datasets", data="a,b", content_type="text/csv")
    assert response.status_code == 415 and response.mimetype == "application/problem+json"
    response = client.post("/v1/datasets", data="{not json", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.json["detail"]
    response = client.post("/v1/datasets", data="", content_type="application/json")
    assert response.status_code == 400


def test_body_too_large(make_app):
    client = make_app(max_body_bytes=1000).test_client()
    response = client.post("/v1/datasets", json={"features": [[1.0]] * 500, "targets": [1] * 500})
    assert response.status_code == 413 and response.mimetype == "application/problem+json"
