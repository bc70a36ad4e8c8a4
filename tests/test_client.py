"""``nnserve.client.Client`` against a running service: ``nnserve api`` and ``nnserve worker`` processes."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from werkzeug.serving import make_server

from nnserve import engine
from nnserve.client import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    JobFailed,
    NnserveError,
    NotFoundError,
    Prediction,
    ProgressBar,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
)
from nnserve.service.builtin import load
from tests.conftest import free_port
from tests.service.helpers import IRIS_MODEL, IRIS_TRAINING
from tests.stack import stack

WAIT = 180  # seconds: generous, the machine is shared with other test runs
KEY = "client-test-key-0123456789"


@pytest.fixture(scope="module")
def url(redis_server, tmp_path_factory):
    with stack(redis_server.url, tmp_path_factory.mktemp("client")) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_url(url, redis_server, tmp_path_factory):
    """A second API on the same Redis (the first stack's worker trains for both), with API keys and a
    predict limit of 2 a minute."""
    with stack(
        redis_server.url,
        tmp_path_factory.mktemp("keyed"),
        workers=0,
        flush=False,
        api_keys=KEY,
        rate_limit_predict="2/minute",
    ) as base:
        yield base


@pytest.fixture
def nn(url):
    with Client(url, timeout=30) as client:
        yield client


def test_datasets_from_arrays_and_csv(nn, tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.array(["a", "b"] * 3)
    uploaded = nn.upload_dataset(x, y, name="pairs", feature_names=["p", "q"])
    assert (uploaded["name"], uploaded["n_samples"], uploaded["n_features"]) == ("pairs", 6, 2)
    assert uploaded["classes"] == ["a", "b"]
    assert nn.get_dataset(uploaded["id"]) == uploaded
    assert uploaded["id"] in [d["id"] for d in nn.list_datasets()]

    csv = tmp_path / "heights.csv"
    csv.write_text("height,age,weight\n" + "".join(f"{150 + i},{20 + i % 7},{50.5 + i}\n" for i in range(30)))
    from_csv = nn.upload_csv(csv, target="height", target_kind="continuous")
    assert from_csv["name"] == "heights" and from_csv["feature_names"] == ["age", "weight"]
    assert from_csv["target_name"] == "height" and from_csv["target_kind"] == "continuous"

    nn.delete_dataset(uploaded["id"])
    with pytest.raises(NotFoundError) as raised:
        nn.get_dataset(uploaded["id"])
    assert raised.value.status == 404 and raised.value.problem["status"] == 404
    assert uploaded["id"] in raised.value.problem["detail"]


def test_train_wait_predict_evaluate_and_weights(nn):
    job = nn.train("iris", IRIS_MODEL, IRIS_TRAINING, name="iris from the client")
    assert job["status"] == "queued" and job["name"] == "iris from the client"
    progress = io.StringIO()
    done = nn.wait(job["id"], progress=progress, timeout=WAIT)
    assert done["status"] == "succeeded"
    assert len(done["history"]["loss"]) == IRIS_TRAINING["epochs"]
    lines = progress.getvalue().splitlines()
    assert lines[-1].startswith(f"epoch {IRIS_TRAINING['epochs']}/{IRIS_TRAINING['epochs']} [") and "loss" in lines[-1]

    _, x, y = load("iris")
    prediction = nn.predict(done["model_id"], x)
    assert isinstance(prediction, Prediction)
    labels, probabilities = prediction
    assert labels.shape == (150,) and labels.dtype.kind == "U"
    assert probabilities.shape == (150, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.mean(labels == y) >= 0.93

    model = nn.get_model(done["model_id"])
    assert model["status"] == "ready" and model["output"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert done["model_id"] in [m["id"] for m in nn.list_models()]
    assert job["id"] in [j["id"] for j in nn.list_jobs()]
    evaluation = nn.evaluate(done["model_id"], "iris")
    assert evaluation["n_samples"] == 150 and evaluation["metrics"]["accuracy"] >= 0.93

    blob = nn.weights(done["model_id"])
    assert isinstance(blob, bytes) and blob[:2] == b"PK"  # an npz is a zip archive
    local = nn.load_model(done["model_id"])
    np.testing.assert_allclose(local.predict_proba(x), probabilities, atol=1e-6)
    assert engine.loads(blob).n_features == 4

    nn.delete_model(done["model_id"])
    with pytest.raises(NotFoundError):
        nn.predict(done["model_id"], x[:1])


def test_regressor_predictions_are_values(nn):
    job = nn.wait(
        nn.train(
            "linear",
            {"layers": [{"type": "dense", "units": 1}], "input_scaling": "none"},
            {"optimizer": {"name": "adam", "learning_rate": 0.1}, "epochs": 300, "batch_size": 4, "seed": 0},
        )["id"],
        progress=False,
        timeout=WAIT,
    )
    values, probabilities = nn.predict(job["model_id"], [[5.0], [6.0]])
    assert probabilities is None
    assert values.dtype == np.float64 and np.allclose(values, [10.0, 12.0], atol=0.3)


def test_errors_are_typed_and_carry_the_problem(nn, url):
    with pytest.raises(ValidationFailed) as raised:
        nn.train("iris", {"layers": [{"type": "dense", "units": 0}]})
    assert raised.value.status == 422
    assert raised.value.errors[0]["loc"] == "model.layers.0.units"
    assert raised.value.problem["type"].startswith("urn:nnserve:problem:")

    with pytest.raises(ValidationFailed) as raised:
        nn.train("no-such-dataset", IRIS_MODEL)
    assert raised.value.errors[0]["loc"] == "dataset"

    with pytest.raises(ConflictError) as raised:
        nn.delete_dataset("iris")
    assert raised.value.status == 409 and "built-in" in raised.value.detail

    with pytest.raises(NotFoundError):
        nn.get_job("job_missing")
    with pytest.raises(NnserveError) as raised:  # every error is an NnserveError
        nn.get_model("mdl_missing")
    assert isinstance(raised.value, NotFoundError)

    with pytest.raises(ValueError, match="JSON"):  # NaN cannot travel in JSON: refused before sending
        nn.predict("mdl_missing", [[float("nan")]])

    with Client(f"http://127.0.0.1:{free_port()}", timeout=5) as nobody, pytest.raises(ServiceUnavailable) as raised:
        nobody.list_models()
    assert raised.value.status is None and "no answer" in str(raised.value)


def test_a_file_that_is_not_text_is_a_bad_request(nn, tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("caf\xe9,x\n1,2\n".encode("latin-1"))
    with pytest.raises(BadRequestError) as raised:
        nn.upload_csv(latin1)
    assert raised.value.status == 400 and "UTF-8" in raised.value.detail


def test_wait_raises_job_failed_for_a_canceled_job(nn):
    job = nn.train("blobs", IRIS_MODEL, {"epochs": 5000, "seed": 0})
    nn.cancel(job["id"])
    with pytest.raises(JobFailed) as raised:
        nn.wait(job["id"], progress=False, timeout=WAIT)
    assert raised.value.job["status"] == "canceled" and raised.value.job["id"] == job["id"]
    assert "canceled" in str(raised.value)


def test_wait_gives_up_after_its_timeout(nn):
    job = nn.train("blobs", IRIS_MODEL, {"epochs": 5000, "seed": 0})
    try:
        with pytest.raises(TimeoutError):
            nn.wait(job["id"], progress=False, timeout=0.5)
    finally:
        nn.cancel(job["id"])
        with pytest.raises(JobFailed):
            nn.wait(job["id"], progress=False, timeout=WAIT)


def test_wait_polls_behind_a_proxy_that_drops_event_streams(url, redis_server):
    """The same service behind a server that answers 404 for event streams: ``wait`` polls instead."""
    from nnserve.service.app import create_app
    from nnserve.service.settings import Settings

    app = create_app(Settings(redis_url=redis_server.url, log_level="WARNING"))

    def no_streams(environ, start_response):
        if environ["PATH_INFO"].endswith("/events"):
            start_response("404 Not Found", [("Content-Type", "application/problem+json")])
            return [b'{"status": 404, "title": "Not Found", "detail": "no streams here"}']
        return app(environ, start_response)

    server = make_server("127.0.0.1", free_port(), no_streams, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{server.server_port}") as nn:
            assert list(nn.events("job_anything")) == []
            job = nn.train("iris", IRIS_MODEL, {**IRIS_TRAINING, "epochs": 30})
            progress = io.StringIO()
            done = nn.wait(job["id"], progress=progress, timeout=WAIT, interval=0.1)
    finally:
        server.shutdown()
        thread.join()
    assert done["status"] == "succeeded" and len(done["history"]["loss"]) == 30
    assert progress.getvalue().splitlines()[-1].startswith("epoch 30/30 [")


def test_api_keys_and_rate_limits(keyed_url):
    with Client(keyed_url) as anonymous, pytest.raises(AuthenticationError) as raised:
        anonymous.list_models()
    assert raised.value.status == 401 and raised.value.problem["title"] == "Unauthorized"
    with Client(keyed_url, api_key="not-the-key-0123456789") as stranger, pytest.raises(AuthenticationError):
        stranger.list_datasets()

    with Client(keyed_url, api_key=KEY) as nn:
        job = nn.wait(
            nn.train("iris", IRIS_MODEL, {**IRIS_TRAINING, "epochs": 20})["id"], progress=io.StringIO(), timeout=WAIT
        )
        assert [m["id"] for m in nn.list_models()] == [job["model_id"]]  # this key's tenant sees only its own
        for _ in range(2):
            nn.predict(job["model_id"], [[5.1, 3.5, 1.4, 0.2]])
        with pytest.raises(RateLimited) as raised:
            nn.predict(job["model_id"], [[5.1, 3.5, 1.4, 0.2]])
    assert raised.value.status == 429 and 0 < raised.value.retry_after <= 60


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_one_line_on_a_terminal():
    screen = Terminal()
    bar = ProgressBar(screen, epochs=4)
    for epoch in (1, 2, 2, 4):  # a repeated epoch (a resumed stream) is drawn once
        bar.update({"epoch": epoch, "loss": 1 / epoch, "val_loss": 2 / epoch, "accuracy": 0.5, "learning_rate": 0.01})
    bar.close()
    frames = screen.getvalue().split("\r\033[K")[1:]
    assert frames == [
        "epoch 1/4 [######..................]  loss 1  val_loss 2  accuracy 0.5",
        "epoch 2/4 [############............]  loss 0.5  val_loss 1  accuracy 0.5",
        "epoch 4/4 [########################]  loss 0.25  val_loss 0.5  accuracy 0.5\n",
    ]


def test_bad_url_is_refused():
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:8000")
