"""/v1/datasets: uploads (JSON and CSV), target-kind inference, built-ins, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

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
    second = client.get("/v1/datasets?offset=4&limit=2")  # the 4 built-ins come first
    assert [d["id"] for d in second.json["items"]] == ids[::-1][:2]
    assert second.json["total"] == 7 and second.json["next"] == "/v1/datasets?offset=6&limit=2"
    assert second.headers["Link"] == (
        '</v1/datasets?offset=0&limit=2>; rel="first", </v1/datasets?offset=2&limit=2>; rel="prev", '
        '</v1/datasets?offset=6&limit=2>; rel="next", </v1/datasets?offset=6&limit=2>; rel="last"'
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


# Streaming uploads: limits and errors met while reading, values exact across chunks ----------------


def post_csv(client, text: str, **form):
    # Encoded here, in memory: the test client spools a large body to a file it never closes.
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(text.encode()), "d.csv"), **form})
    return client.post("/v1/datasets", data=body, content_type=f"multipart/form-data; boundary={boundary}")


def post_raw(client, body: bytes):
    return client.post("/v1/datasets", data=body, content_type="application/json")


@pytest.mark.parametrize("cell", ["x" * 131_073, "1" * 140_000, '"' + "y" * 131_073 + '"'])
def test_csv_cell_over_the_field_limit(client, cell):
    response = post_csv(client, f"a,b\n1,2\n3,{cell}\n4,5\n")
    assert response.status_code == 422, response.json
    assert response.json["detail"] == "file: line 3: a cell is over 131,072 characters"


def test_csv_categorical_labels_are_the_cells_text(client, redis):
    csv = "a,label\n1,1\n2,2\n3,cat\n4,2\n"
    assert "mixes strings and numbers" in post_csv(client, csv).json["detail"]
    body = post_csv(client, csv, target_kind="categorical").json
    assert body["classes"] == ["1", "2", "cat"] and body["class_counts"] == [1, 2, 1]
    assert body["target_kind"] == "categorical" and body["target_kind_inferred"] is False
    assert store.load_dataset(redis, body["id"])[1].tolist() == ["1", "2", "cat", "2"]
    # Integers only are still integer classes; 2 and 02 are one class.
    body = post_csv(client, "a,label\n1,1\n2,2\n3,02\n", target_kind="categorical").json
    assert body["classes"] == [1, 2] and body["class_counts"] == [1, 2]
    assert store.load_dataset(redis, body["id"])[1].tolist() == [1, 2, 2]


def test_csv_errors_name_the_line_in_the_file(client):
    csv = 'a,label\n1,x\n\n2,"two\nlines"\nbad,y\n'
    response = post_csv(client, csv)
    assert response.json["detail"] == "file: line 6, column 'a': 'bad' is not a number"
    response = post_csv(client, "a,label\n" + "1,x\n" * 10 + f"2,{'z' * 201}\n")
    assert response.json["detail"] == "target: line 12: labels are at most 200 characters"
    response = post_csv(client, "a,label\n1,x\n1e39,y\n")
    assert response.json["detail"] == "file: line 3: a value is not finite or beyond float32 range"


def test_csv_rows_over_the_limit(make_app):
    client = make_app(max_rows=3).test_client()
    assert post_csv(client, "a,b\n" + "1,0.5\n" * 3).status_code == 201
    response = post_csv(client, "a,b\n" + "1,0.5\n" * 5)
    assert response.status_code == 422 and response.json["detail"] == "features: has more than 3 rows; the limit is 3"


def test_large_csv_round_trip(client, redis):
    """Several chunks, parsed fast (loadtxt) and exactly (the csv module: quotes, a blank line, a number
    only Python reads): the stored arrays are the values written, and the labels the cells' text."""
    rng = np.random.default_rng(0)
    n = 60_000
    x = rng.normal(size=(n, 6)).round(6)
    labels = rng.choice(["a", "b b", "c"], size=n).tolist()
    labels[30_000] = '"c,d"'  # quoted: this chunk is parsed by the csv module
    lines = ["p,q,label,r,s,t,u"]
    for row, label in zip(x.tolist(), labels):
        lines.append(",".join([*map(repr, row[:2]), label, *map(repr, row[2:])]))
    lines[45_000] = lines[45_000].replace(repr(float(x[44_999, 0])), "1_0", 1)  # Python's float() reads it
    x[44_999, 0] = 10
    lines.insert(50_000, "")
    response = post_csv(client, "\n".join(lines) + "\n", target="label")
    assert response.status_code == 201, response.json
    body = response.json
    assert body["n_samples"] == n and body["feature_names"] == ["p", "q", "r", "s", "t", "u"]
    assert body["classes"] == ["a", "b b", "c", "c,d"]
    features, targets = store.load_dataset(redis, body["id"])
    np.testing.assert_array_equal(features, x.astype(np.float32))
    assert targets.tolist() == [label.strip('"') for label in labels]


def test_large_json_round_trip(client, redis):
    """Rows and labels over several windows, labels with escapes and other alphabets."""
    rng = np.random.default_rng(1)
    n = 50_000
    x = rng.normal(size=(n, 4))
    names = ["plain", 'quote " and \\ backslash', "naïve", "日本", "tab\tnew\nline"]
    labels = [names[i] for i in rng.integers(0, len(names), size=n)]
    response = upload(client, features=x.tolist(), targets=labels)
    assert response.status_code == 201, response.json
    assert response.json["classes"] == sorted(names) and sum(response.json["class_counts"]) == n
    features, targets = store.load_dataset(redis, response.json["id"])
    np.testing.assert_array_equal(features, x.astype(np.float32))
    assert targets.tolist() == labels


def test_json_rows_longer_than_a_window(make_app):
    row = "[" + ",".join(["0.123456789012345"] * 150_000) + "]"  # 2.6 MB: longer than the 1 MiB window
    body = f'{{"features": [{row}, {row}], "targets": [0.5, 1.5]}}'.encode()
    response = post_raw(make_app(max_features=200_000).test_client(), body)
    assert response.status_code == 201 and response.json["n_features"] == 150_000
    response = post_raw(make_app(max_features=100_000).test_client(), body)
    assert response.json["detail"] == "features: has 150000 columns; between 1 and 100000 are allowed"
    body = f'{{"features": [[1, 2], {row}], "targets": [0.5, 1.5]}}'.encode()
    response = post_raw(make_app(max_features=200_000).test_client(), body)
    assert response.json["detail"] == "features.1: has 150000 values but row 0 has 2"


@pytest.mark.parametrize(
    "body, detail",
    [
        (
            b'{"features": [[1, 2], [3, 4], [5, 6], [7]], "targets": [1, 2, 3, 4]}',
            "features.3: has 1 values but row 0 has 2",
        ),
        (b'{"features": [[1], [2, null]], "targets": [1, 2]}', "features.1.1: Input should be a valid number"),
        (b'{"features": [[1], [2, [3]]], "targets": [1, 2]}', "features.1.1: Input should be a valid number"),
        (b'{"features": [[1], 2], "targets": [1, 2]}', "features.1: Input should be a valid list"),
        (b'{"features": [[1], [2]], "targets": [1, null]}', "targets.1: must be a label"),
        (b'{"features": [[1], [2]], "targets": ["a", "' + b"b" * 201 + b'"]}', "targets.1: labels are at most 200"),
        (b'{"features": [[1], [2]], "features": [[1], [2]], "targets": [1, 2]}', "features: appears more than once"),
        (
            b'{"targets": [1, 2], "colour": [[1], [2]], "features": [[1], [2]]}',
            "colour: Extra inputs are not permitted",
        ),
        (b'{"features": [[1], [2]], "targets": [[1], [2, 3]]}', "targets.1: has 2 values but row 0 has 1"),
        (
            b'{"features": [[1], [2]], "targets": [[1], [2]], "target_kind": "categorical"}',
            "targets: categorical targets must be a flat list",
        ),
        (b"[[1], [2]]", "the body must be a JSON object"),
    ],
)
def test_json_errors_while_reading(client, body, detail):
    response = post_raw(client, body)
    assert response.status_code == 422, response.json
    assert response.json["detail"].startswith(detail), response.json


@pytest.mark.parametrize(
    "body",
    [
        b'{"features": [[1,]], "targets": [1]}',
        b'{"features": [[1.2.3]], "targets": [1]}',
        b'{"features": [[+1]], "targets": [1]}',
        b'{"features": [[1], [2]], "targets": [1, 2]} x',
        b'{"features": [[1], [2]], "targets": [1, 2]',
        b'{"features": [[1], [2]], "targets": [1, 2], }',
        b'{"features": [[1], [2]], "targets": ["a\x01", "b"]}',
        b'{"features": [[1e400], [2]], "targets": [1, 2]}',
    ],
)
def test_json_syntax_errors(client, body):
    response = post_raw(client, body)
    assert response.status_code == 400 and "not valid JSON" in response.json["detail"], response.json


def test_distinct_labels_limit(client):
    labels = [f"label {i}" for i in range(10_001)]
    response = upload(client, features=[[1.0]] * len(labels), targets=labels)
    assert response.status_code == 422
    assert response.json["detail"] == "targets: has more than 10000 distinct labels; the limit is 10000"


def test_class_counts(client):
    assert client.get("/v1/datasets/iris").json["class_counts"] == [50, 50, 50]
    body = upload(client, features=[[1], [2], [3]], targets=[True, False, True]).json
    assert body["classes"] == [False, True] and body["class_counts"] == [1, 2]
    assert "class_counts" not in upload(client, features=[[1], [2]], targets=[0.5, 1.5]).json


def test_json_upload_with_an_idempotency_key_reads_the_kept_body(client, redis):
    headers = {"Idempotency-Key": "upload-big"}
    features = np.arange(200_000, dtype=np.float64).reshape(-1, 2)  # 1.4 MB of body
    targets = [float(i % 7) + 0.5 for i in range(len(features))]
    first = client.post("/v1/datasets", json={"features": features.tolist(), "targets": targets}, headers=headers)
    assert first.status_code == 201, first.json
    again = client.post("/v1/datasets", json={"features": features.tolist(), "targets": targets}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json["id"] == first.json["id"]
    np.testing.assert_array_equal(store.load_dataset(redis, first.json["id"])[0], features.astype(np.float32))
