"""TF Serving's and MLflow's request formats against ``nnserve api`` (gunicorn) and a worker as real
processes, posted with plain ``requests`` exactly as those systems document them (``curl -d`` bodies
for TF Serving, ``requests.post(..., json=...)`` and ``text/csv`` for MLflow): the answers are ``/v1``'s
predictions, the errors each protocol's own shape."""

from __future__ import annotations

import numpy as np
import requests

from tests.e2e.test_http import train
from tests.e2e.test_tritonclient import IRIS

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def test_tf_serving_and_mlflow_clients_get_v1s_predictions(processes):
    api = processes.api(api_workers=2, api_threads=4)
    processes.worker()
    model_id = train(api, "iris", *IRIS)["model_id"]
    v1 = requests.post(f"{api}/v1/models/{model_id}/predict", json={"inputs": ROWS}, timeout=10).json()
    probabilities = np.float32(v1["probabilities"])

    # TF Serving: curl -d '{"instances": ...}' -X POST http://host:8501/v1/models/NAME:predict
    for _ in range(3):  # the first answers may come from Flask, the rest from the fast path
        tf = requests.post(f"{api}/v1/models/{model_id}:predict", data=f'{{"instances": {ROWS}}}', timeout=10)
        assert tf.status_code == 200, tf.text
        np.testing.assert_allclose(np.float32(tf.json()["predictions"]), probabilities, atol=1e-6)
    columnar = requests.post(
        f"{api}/v1/models/{model_id}:predict",
        json={"inputs": {name: [row[i] for row in ROWS] for i, name in enumerate(NAMES)}},
        timeout=10,
    )
    np.testing.assert_allclose(np.float32(columnar.json()["outputs"]), probabilities, atol=1e-6)
    empty = requests.post(f"{api}/v1/models/{model_id}:predict", json={"instances": []}, timeout=10)
    assert empty.status_code == 422 and list(empty.json()) == ["error"]

    # MLflow: requests.post(url + "/invocations", json={"dataframe_split": df.to_dict(orient="split")})
    split = {"columns": NAMES[::-1], "data": [row[::-1] for row in ROWS]}
    for _ in range(3):
        mlflow = requests.post(f"{api}/v1/models/{model_id}/invocations", json={"dataframe_split": split}, timeout=10)
        assert mlflow.status_code == 200, mlflow.text
        assert mlflow.json() == {"predictions": v1["predictions"]}
    csv = ",".join(NAMES) + "\n" + "\n".join(",".join(map(str, row)) for row in ROWS)
    by_csv = requests.post(
        f"{api}/v1/models/{model_id}/invocations", data=csv, headers={"Content-Type": "text/csv"}, timeout=10
    )
    assert by_csv.json() == {"predictions": v1["predictions"]}
    missing = requests.post(
        f"{api}/v1/models/{model_id}/invocations", json={"dataframe_records": [{"sepal_length": 5.1}]}, timeout=10
    )
    assert missing.status_code == 422
    assert missing.json()["error_code"] == "BAD_REQUEST" and "missing column 'sepal_width'" in missing.json()["message"]

    # Named features on /v1 itself.
    records = [dict(zip(NAMES, row)) for row in ROWS]
    named = requests.post(f"{api}/v1/models/{model_id}/predict", json={"records": records}, timeout=10)
    assert named.json() == v1
