"""``nnserve.client.Client`` against a running service: ``nnserve api`` and ``nnserve worker`` processes;
retries, proxies and TLS against the real app served by werkzeug behind a fault injector, a forwarding
proxy or TLS."""

from __future__ import annotations

import http.server
import io
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from typing import ClassVar

import numpy as np
import orjson
import pandas as pd
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
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
)
from nnserve.service.builtin import load
from tests.conftest import free_port, run_in_terminal
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


def test_upload_images(nn, tmp_path):
    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    labels = np.array([0, 1] * 3)
    nested = nn.upload_dataset(images[..., None], labels, name="nested")
    assert nested["sample_shape"] == [4, 4, 1] and nested["n_features"] == 16
    flat = nn.upload_dataset(images.reshape(6, 16), labels, shape=[4, 4, 1])
    assert flat["sample_shape"] == [4, 4, 1]
    arrays = nn.upload_arrays(images, labels, name="arrays", shape=[4, 4, 1], target_kind="categorical")
    assert (arrays["name"], arrays["sample_shape"], arrays["classes"]) == ("arrays", [4, 4, 1], [0, 1])
    path = tmp_path / "tiny.npz"
    np.savez_compressed(path, x=images, y=labels)
    from_file = nn.upload_npz(path, feature_names=[f"p{i}" for i in range(16)])
    assert from_file["name"] == "tiny" and from_file["sample_shape"] == [4, 4]
    with pytest.raises(ValidationFailed) as raised:
        nn.upload_npz(path, shape=[5, 5])
    assert raised.value.status == 422 and "[5, 5]" in raised.value.detail


def test_train_wait_predict_evaluate_and_weights(nn):
    job = nn.train("iris", IRIS_MODEL, IRIS_TRAINING, name="iris-from-the-client")
    assert job["status"] == "queued" and job["name"] == "iris-from-the-client"
    progress = io.StringIO()
    done = nn.wait(job["id"], progress=progress, timeout=WAIT)
    assert done["status"] == "succeeded"
    assert len(done["history"]["loss"]) == IRIS_TRAINING["epochs"]
    assert progress.getvalue() == ""  # not a terminal: no bar drawn

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

    with pytest.raises(ConflictError):  # the first version of its name: `current` points at it
        nn.delete_model(done["model_id"])
    nn.delete_model(done["model_id"], force=True)
    with pytest.raises(NotFoundError):
        nn.predict(done["model_id"], x[:1])


def test_registry_verbs_versions_aliases_rollback(nn):
    quick = {**IRIS_TRAINING, "epochs": 3, "validation_split": 0.2}
    jobs = [nn.wait(nn.train("iris", IRIS_MODEL, quick, name="client-reg")["id"], timeout=WAIT) for _ in range(2)]
    assert [job["version"] for job in jobs] == [1, 2]
    [item] = [n for n in nn.list_registry() if n["name"] == "client-reg"]
    assert item["aliases"] == {"current": 2, "previous": 1, "latest": 2}
    assert nn.predict("client-reg", [[5.1, 3.5, 1.4, 0.2]]).model_version == 2
    assert nn.rollback("client-reg") == {"current": 1, "previous": 2, "latest": 2}
    assert nn.predict("client-reg", [[5.1, 3.5, 1.4, 0.2]]).model_version == 1
    assert nn.rollback("client-reg", 2)["current"] == 2
    assert nn.set_alias("client-reg", "canary", split={1: 90, 2: 10})["canary"] == {"split": {"1": 90, "2": 10}}
    assert nn.set_alias("client-reg", "shadowed", 1, shadow=2, sample=0.5)["shadowed"]["shadow"] == 2
    nn.delete_alias("client-reg", "canary")
    detail = nn.get_registered("client-reg")
    assert [v["version"] for v in detail["versions"]] == [2, 1] and "canary" not in detail["aliases"]
    assert nn.get_model("client-reg@1")["id"] == jobs[0]["model_id"]
    with pytest.raises(NotFoundError, match="has no version 9"):
        nn.get_model("client-reg@9")
    nn.delete_registered("client-reg")
    with pytest.raises(NotFoundError):
        nn.get_registered("client-reg")


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
    assert raised.value.status == 429 and 0 < raised.value.retry_after <= 66  # the window and one tenth


def test_bad_url_is_refused():
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:8000")


@pytest.fixture(scope="module")
def iris_model(url):
    with Client(url) as nn:
        return nn.wait(nn.train("iris", IRIS_MODEL, IRIS_TRAINING)["id"], timeout=WAIT)["model_id"]


def test_report_warm_start_and_a_cancel_that_keeps(nn, iris_model):
    stored = nn.report(iris_model)
    assert stored == {"rows": 0, "note": "no held-out rows: the job had neither a validation_split nor validation_data"}
    report = nn.report(iris_model, "iris")
    assert report["on"] == "dataset iris" and report["rows"] == 150 and len(report["confusion_matrix"]) == 3
    assert report["accuracy"] == nn.evaluate(iris_model, "iris")["metrics"]["accuracy"]

    warm = nn.wait(nn.train("iris", training={"epochs": 3}, initial_model=iris_model)["id"], timeout=WAIT)
    assert warm["status"] == "succeeded" and warm["initial_model"] == iris_model
    assert warm["initial_epoch"] == IRIS_TRAINING["epochs"]

    long = nn.train("iris", IRIS_MODEL, {**IRIS_TRAINING, "epochs": 10_000, "batch_size": 1})
    deadline = time.monotonic() + WAIT
    while nn.get_job(long["id"])["progress"]["epoch"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert nn.cancel(long["id"], keep="last")["cancel_keep"] == "last"
    with pytest.raises(JobFailed):
        nn.wait(long["id"], timeout=WAIT)
    model = nn.get_model(long["model_id"])
    assert model["status"] == "ready" and model["partial"] and model["kept_epoch"] == model["stopped_epoch"] >= 1


def test_one_client_is_shared_by_threads(url, iris_model):
    """4 threads, 20 calls each, on one client (one connection pool): every call answers right."""
    _, x, y = load("iris")
    failures, start = [], threading.Barrier(4)

    def calls(nn: Client, seed: int) -> None:
        start.wait()
        for i in range(20):
            try:
                if i % 3 == 0:
                    assert nn.get_model(iris_model)["id"] == iris_model
                elif i % 3 == 1:
                    rows = slice(seed * 10 + i, seed * 10 + i + 5)
                    labels, _ = nn.predict(iris_model, x[rows])
                    assert labels.shape == (5,) and set(labels) <= set(y)
                else:
                    assert any(m["id"] == iris_model for m in nn.list_models())
            except Exception as error:  # every failure is collected and shown
                failures.append(repr(error))

    with Client(url) as nn:
        threads = [threading.Thread(target=calls, args=(nn, seed)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_predict_takes_a_dataframe_by_column_name_an_array_or_lists(nn, iris_model):
    _, x, _ = load("iris")
    expected = nn.predict(iris_model, x[:10].tolist())
    names = nn.get_model(iris_model)["input"]["feature_names"]
    frame = pd.DataFrame(x[:10], columns=names)
    shuffled = frame[names[::-1]].assign(species="ignored")  # columns in another order, and one more
    for inputs in (shuffled, frame, x[:10], np.asarray(x[:10], dtype=np.float64)):
        labels, probabilities = nn.predict(iris_model, inputs)
        assert labels.tolist() == expected.predictions.tolist()
        np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="no column 'petal_width'"):
        nn.predict(iris_model, frame.drop(columns="petal_width"))


def test_pages_are_iterated(nn):
    before = {job["id"] for job in nn.iter_jobs()}
    ids = [nn.train("linear", {"layers": [{"type": "dense", "units": 1}]}, {"epochs": 1})["id"] for _ in range(5)]
    paged = [job["id"] for job in nn.iter_jobs(page_size=2)]
    assert paged[:5] == ids[::-1] and set(paged[5:]) == before
    assert [d["id"] for d in nn.iter_datasets(page_size=1)][:3] == ["iris", "blobs", "linear"]


def test_importing_the_client_loads_no_server_library():
    code = (
        "import sys, nnserve.client; "
        "print(sorted(m for m in ('flask', 'rq', 'gunicorn', 'prometheus_client', 'redis') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout.strip() == "[]"


# Retries, proxies and TLS: the real app served in this process --------------------------------------


class Faults:
    """The app behind a server that answers chosen requests with an error instead, each once. With
    ``lost``, the app serves the request first and its answer is lost on the way back."""

    def __init__(self, app):
        self.app = app
        self.planned: list[tuple[str, str, int, str | None, bool]] = []
        self.seen: list[tuple[str, str, str | None, float]] = []

    def plan(self, method: str, path: str, status: int, retry_after: str | None = None, lost: bool = False) -> None:
        self.planned.append((method, path, status, retry_after, lost))

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        self.seen.append((method, path, environ.get("HTTP_IDEMPOTENCY_KEY"), time.monotonic()))
        for i, (m, p, status, retry_after, lost) in enumerate(self.planned):
            if (m, p) == (method, path):
                del self.planned[i]
                if lost:
                    body = self.app(environ, lambda *args: lambda data: None)
                    b"".join(body)
                    getattr(body, "close", lambda: None)()
                headers = [("Content-Type", "application/problem+json")]
                if retry_after is not None:
                    headers.append(("Retry-After", retry_after))
                start_response(f"{status} Fault", headers)
                return [orjson.dumps({"status": status, "title": "Fault", "detail": f"planned {status}"})]
        return self.app(environ, start_response)


def serve(app, ssl_context=None):
    server = make_server("127.0.0.1", free_port(), app, threaded=True, ssl_context=ssl_context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def faults(url, redis_server):
    from nnserve.service.app import create_app
    from nnserve.service.settings import Settings

    faulty = Faults(create_app(Settings(redis_url=redis_server.url, log_level="WARNING")))
    server, thread = serve(faulty)
    faulty.url = f"http://127.0.0.1:{server.server_port}"
    yield faulty
    server.shutdown()
    thread.join()


def test_a_get_is_retried_after_the_servers_retry_after(faults):
    faults.plan("GET", "/v1/models", 429, retry_after="1")
    faults.plan("GET", "/v1/models", 503)  # no Retry-After: the client's own backoff (0.5 s, then 1 s)
    with Client(faults.url) as nn:
        started = time.monotonic()
        nn.list_models()
    calls = [t for method, path, _, t in faults.seen if (method, path) == ("GET", "/v1/models")]
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.95 and calls[2] - calls[1] >= 0.95
    assert time.monotonic() - started < 10


def test_a_job_whose_answer_was_lost_is_created_once(faults):
    """The job is created but its 202 is lost behind a 503; the retry carries the same Idempotency-Key,
    so the server answers with the first job instead of creating a second."""
    faults.plan("POST", "/v1/jobs", 503, retry_after="0", lost=True)
    with Client(faults.url) as nn:
        before = len(list(nn.iter_jobs()))
        job = nn.train("linear", {"layers": [{"type": "dense", "units": 1}]}, {"epochs": 1})
        jobs = list(nn.iter_jobs())
    keys = [key for method, path, key, _ in faults.seen if (method, path) == ("POST", "/v1/jobs")]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 36
    assert len(jobs) == before + 1 and jobs[0]["id"] == job["id"]


def test_a_post_without_a_key_is_not_retried_nor_a_long_wait_waited(faults):
    faults.plan("POST", "/v1/models/mdl_x/predict", 503, retry_after="0")
    faults.plan("GET", "/v1/jobs", 429, retry_after="120")
    with Client(faults.url, max_retry_wait=60) as nn:
        with pytest.raises(ServiceUnavailable) as raised:
            nn.predict("mdl_x", [[1.0]])
        assert raised.value.status == 503
        started = time.monotonic()
        with pytest.raises(RateLimited) as limited:
            nn.list_jobs()
        assert limited.value.retry_after == 120 and time.monotonic() - started < 5
    assert [path for _, path, _, _ in faults.seen].count("/v1/models/mdl_x/predict") == 1


class ForwardingProxy(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy for plain-HTTP requests (their request line holds the absolute URL)."""

    seen: ClassVar[list[str]] = []

    def do_GET(self):
        ForwardingProxy.seen.append(self.path)
        request = urllib.request.Request(self.path, headers={k: v for k, v in self.headers.items() if k != "Host"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as answer:
            body = answer.read()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.headers["Content-Type"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_proxies_come_from_the_environment(url, monkeypatch):
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ForwardingProxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
        with Client(url) as nn:
            nn.list_datasets()
        assert ForwardingProxy.seen == [f"{url}/v1/datasets?offset=0&limit=100"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with Client(url) as nn:
            nn.list_datasets()
        assert len(ForwardingProxy.seen) == 1  # went straight to the server
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def _certificates(tmp) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=nnserve test CA",
    )
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        )
    return {name: str(tmp / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_tls_with_a_ca_bundle_and_a_client_certificate(url, redis_server, tmp_path):
    from nnserve.service.app import create_app
    from nnserve.service.settings import Settings

    files = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["server.pem"], files["server.key"])
    context.load_verify_locations(files["ca.pem"])
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the client must show a certificate of the CA
    server, thread = serve(create_app(Settings(redis_url=redis_server.url, log_level="WARNING")), context)
    https = f"https://127.0.0.1:{server.server_port}"
    try:
        with Client(https, verify=files["ca.pem"], cert=(files["client.pem"], files["client.key"])) as nn:
            assert [d["id"] for d in nn.list_datasets()][:1] == ["iris"]
        unknown_ca = pytest.raises(ServiceUnavailable, match="CERTIFICATE_VERIFY_FAILED")
        with Client(https, cert=(files["client.pem"], files["client.key"]), retries=0) as nn, unknown_ca:
            nn.list_datasets()  # the system's CAs do not know ours
        with Client(https, verify=files["ca.pem"], retries=0) as nn, pytest.raises(ServiceUnavailable):
            nn.list_datasets()  # no client certificate
    finally:
        server.shutdown()
        thread.join()


def test_the_progress_bar_redraws_one_line_within_80_columns():
    """In a pseudo-terminal 80 columns wide: one line redrawn (carriage returns, one newline at the
    end), never wider than the terminal, with the elapsed time, the rate, the ETA and the loss."""
    code = (
        "import sys, time\n"
        "from nnserve.client import ProgressBar\n"
        "bar = ProgressBar(sys.stderr, 100, initial=20)\n"
        "for epoch in range(21, 101):\n"
        "    bar.update({'epoch': epoch, 'loss': 1 / epoch, 'val_loss': 2 / epoch, 'accuracy': 0.93333,\n"
        "                'val_accuracy': 0.9, 'learning_rate': 0.01})\n"
        "    time.sleep(0.01)\n"
        "bar.close()\n"
    )
    screen = run_in_terminal([sys.executable, "-c", code], columns=80)
    assert screen.count("\n") == 1 and screen.endswith("\n")
    frames = [frame for frame in screen.rstrip("\r\n").split("\r") if frame]
    assert len(frames) >= 5 and all(len(frame) <= 80 for frame in frames)
    assert frames[-1].startswith("100%|") and "100/100 [" in frames[-1] and "epoch/s" in frames[-1]
    assert "loss=0.01" in frames[-1] and "learning_rate" not in screen
    assert any("<00:0" in frame for frame in frames)  # elapsed<remaining
