"""Slow and malformed clients against real processes: ``nnserve api`` (gunicorn, 2 processes of 8
threads) alone and behind the shipped nginx configuration (``deploy/nginx.conf.template``, run with
Debian's nginx; see tests/proxy.py).

- 50 connections that stall in their headers and 50 that stall in their body leave normal
  predictions fast (p99 under 250 ms);
- a stalled request is answered 408 and its connection closed;
- what gunicorn or nginx refuse on their own (a bad request line, a long URI, huge headers, a badly
  framed or over-limit chunked body, a body over the limit) is problem+json, never an HTML page or a 500;
- chunked, pipelined, 100-continue and spooled (large) bodies reach the app whole;
- an empty 204 answer has no Content-Type; event streams pass the proxy unbuffered; a proxy whose
  API is down answers 503 problem+json.
"""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlsplit

import pytest
import redis as redis_lib
import requests

from tests.conftest import Processes, free_port, wait_until
from tests.e2e.test_events import Events
from tests.proxy import Nginx
from tests.slowloris import KINDS, SlowClients, percentile, predict_latencies

SLOW = 50
"""Slow connections of each kind: three times the API's 2 x 8 threads."""
P99_TARGET = 0.25
MAX_BODY = 1024 * 1024
"""The API's body limit here (NNSERVE_MAX_BODY_BYTES), small so that the over-limit tests send little."""
IRIS_MODEL = {
    "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def service(redis_server, tmp_path_factory):
    """``nnserve api`` with its default processes, threads and timeouts, one worker, and a trained iris model."""
    redis_lib.Redis.from_url(redis_server.url).flushdb()  # an open API: no keys stored by earlier tests
    processes = Processes(redis_server.url, tmp_path_factory.mktemp("slow-clients"))
    try:
        api = processes.api(max_body_bytes=MAX_BODY, stream_heartbeat=1)
        processes.worker()
        job = train(api, {"dataset": "iris", "model": IRIS_MODEL, "training": {"epochs": 5}})
        assert job["status"] == "succeeded", job
        yield api, job["model_id"]
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def proxy(service, tmp_path_factory):
    with Nginx(tmp_path_factory.mktemp("nginx"), service[0], MAX_BODY) as nginx:
        yield nginx.url


@pytest.fixture(params=["api", "proxy"])
def url(request, service) -> str:
    """The service's base URL: ``nnserve api`` itself, or nginx in front of it."""
    return service[0] if request.param == "api" else request.getfixturevalue("proxy")


def train(api: str, body: dict, wait: bool = True) -> dict:
    response = requests.post(f"{api}/v1/jobs", json=body, timeout=10)
    assert response.status_code == 202, response.text
    job = response.json()
    if wait:
        job = wait_until(
            lambda: (j := requests.get(f"{api}/v1/jobs/{job['id']}", timeout=10).json())["status"] in TERMINAL and j,
            timeout=120,
            what="training",
            interval=0.1,
        )
    return job


def exchange(url: str, *parts: bytes, wait: float = 15) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to ``url``'s server and read its answer: (status, headers by lowercase name, body)."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=wait) as sock:
        for part in parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused before the end: the answer is waiting
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_problem(answer: tuple[int, dict[str, str], bytes], status: int) -> dict:
    got, headers, body = answer
    assert got == status, (got, body[:300])
    assert headers["content-type"] == "application/problem+json", headers
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"].startswith("urn:nnserve:problem:") and problem["detail"]
    return problem


# Slow clients -------------------------------------------------------------------------------------


def test_slow_clients_leave_predictions_fast(service, url):
    model_id = service[1]
    predict_latencies(url, model_id, clients=4, requests_each=5)  # both processes load the model
    path = f"/v1/models/{model_id}/predict"
    with SlowClients(url, path, KINDS[0], SLOW) as headers, SlowClients(url, path, KINDS[1], SLOW) as body:
        latencies, failed = predict_latencies(url, model_id, clients=4, requests_each=50, give_up_after=1)
        assert headers.still_open() == SLOW and body.still_open() == SLOW  # the attack lasted the whole test
    assert failed == 0, "predictions failed or took over 5 s"
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    assert p99 < P99_TARGET, f"p50 {p50:.3f} s, p99 {p99:.3f} s"


def test_a_stalled_request_is_answered_408_and_closed(redis_server, tmp_path):
    processes = Processes(redis_server.url, tmp_path)
    try:
        api = processes.api(api_workers=1, header_timeout=1, body_timeout=1)
        stalled = {
            "headers": b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\n",
            "body": b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{}",
        }
        for where, start in stalled.items():
            started = time.monotonic()
            problem = assert_problem(exchange(api, start), 408)
            assert where in problem["detail"] and 1 <= time.monotonic() - started < 5, problem
        # A connection that never sends a byte asked nothing: it is closed without an answer.
        address = urlsplit(api)
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b"" and 1 <= time.monotonic() - started < 5
        assert requests.get(f"{api}/healthz", timeout=10).status_code == 200
    finally:
        processes.stop_all()


def test_a_reader_that_stalls_frees_the_thread_and_a_slow_one_gets_everything(redis_server, tmp_path):
    """One thread, and an answer may wait 3 s on its reader: a client that stops reading a large answer
    loses it then, and the thread serves others; one that reads slowly but steadily gets it all, though
    it takes longer than that in all."""
    processes = Processes(redis_server.url, tmp_path)
    try:
        api = processes.api(api_workers=1, api_threads=1, body_timeout=3)
        processes.worker()
        features = [[(i * j) % 7 / 7 for j in range(1000)] for i in range(20)]
        created = requests.post(
            f"{api}/v1/datasets", json={"features": features, "targets": [i % 2 for i in range(20)]}, timeout=30
        )
        assert created.status_code == 201, created.text
        model = {"layers": [{"type": "dense", "units": 4000}, {"type": "dense", "units": 2, "activation": "softmax"}]}
        job = train(api, {"dataset": created.json()["id"], "model": model, "training": {"epochs": 1}})
        assert job["status"] == "succeeded", job
        request = b"GET /v1/models/%s/weights HTTP/1.1\r\nHost: x\r\n\r\n" % job["model_id"].encode()
        address = urlsplit(api)

        def connect() -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the server's sends must wait on us
            sock.settimeout(10)
            sock.connect((address.hostname, address.port))
            sock.sendall(request)
            return sock

        with connect():  # and never read
            started = time.monotonic()
            assert requests.get(f"{api}/healthz", timeout=10).status_code == 200
            assert time.monotonic() - started < 8  # the one thread was freed after 3 s, not held for good

        with connect() as slow:
            received, started = b"", time.monotonic()
            while not received.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in received:
                received += slow.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            while len(body) < length:
                # 2.6 MB/s at most: the server's send buffer (4 MB) frees half of itself in under a
                # second, but the whole answer (16 MB) keeps its sends waiting for over 3 s in all.
                time.sleep(0.025)
                piece = slow.recv(65536)
                assert piece, f"the server closed the connection after {len(body)} of {length} bytes"
                body += piece
            assert length > 16_000_000 and time.monotonic() - started > 4
    finally:
        processes.stop_all()


# Refusals -----------------------------------------------------------------------------------------

CHUNKED = (
    b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)
QUARTER = MAX_BODY // 4
REFUSALS = {
    "a bad request line": (400, [b"GARBAGE\r\n\r\n"]),
    "a long URI": (414, [b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]),
    "huge headers": (431, [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"]),
    "a bad chunk size": (400, [CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n"]),
    "chunk data longer than its size": (400, [CHUNKED + b"1\r\n{}\r\n0\r\n\r\n"]),
    "a chunked body over the limit": (
        413,
        [CHUNKED, *[b"%x\r\n" % QUARTER + b" " * QUARTER + b"\r\n"] * 5, b"0\r\n\r\n"],
    ),
    "a Content-Length over the limit": (
        413,
        [
            b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1),
            b" " * (MAX_BODY + 1),
        ],
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_problem_json(url, case):
    status, parts = REFUSALS[case]
    problem = assert_problem(exchange(url, *parts), status)
    if status == 413:
        assert f"limit of {MAX_BODY} bytes (NNSERVE_MAX_BODY_BYTES)" in problem["detail"]
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def test_the_proxy_answers_503_problem_json_while_the_api_is_down(tmp_path):
    with Nginx(tmp_path, f"http://127.0.0.1:{free_port()}", MAX_BODY) as nginx:
        response = requests.get(f"{nginx.url}/v1/models", timeout=10)
    assert response.status_code == 503 and response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 503 and int(response.headers["Retry-After"]) > 0


# Bodies that reach the app ------------------------------------------------------------------------


def dataset(rows: int) -> dict:
    return {
        "features": [[i % 7 / 7, i % 5 / 5, i % 3 / 3] for i in range(rows)],
        "targets": [i % 2 for i in range(rows)],
    }


def test_large_and_chunked_bodies_reach_the_app_whole(url):
    from nnserve.service.http_worker import SPOOL_BYTES

    body = json.dumps(dataset(12_000)).encode()
    assert SPOOL_BYTES < len(body) < MAX_BODY  # the worker keeps it in a temporary file
    response = requests.post(f"{url}/v1/datasets", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 201 and response.json()["n_samples"] == 12_000, response.text
    pieces = (body[i : i + 100_000] for i in range(0, len(body), 100_000))  # a generator: sent chunked
    response = requests.post(
        f"{url}/v1/datasets", data=pieces, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 201 and response.json()["n_samples"] == 12_000, response.text


def test_pipelined_and_100_continue_requests_are_served(service):
    api = service[0]
    status, _, body = exchange(
        api, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200 and body.count(b"HTTP/1.1 200 OK") == 1 and body.count(b'{"status":"ok"}') == 2
    payload = json.dumps(dataset(40)).encode()
    address = urlsplit(api)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(payload)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any of the body is sent
        sock.sendall(payload)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201 ") and b"100 Continue" not in answer


def test_an_empty_answer_has_no_content_type(url):
    created = requests.post(f"{url}/v1/datasets", json=dataset(10), timeout=10)
    assert created.status_code == 201, created.text
    response = requests.delete(f"{url}/v1/datasets/{created.json()['id']}", timeout=10)
    assert response.status_code == 204 and response.content == b""
    assert "Content-Type" not in response.headers, response.headers


def test_event_streams_pass_the_proxy_unbuffered(service, proxy):
    job = train(
        service[0],
        {"dataset": "iris", "model": IRIS_MODEL, "training": {"epochs": 10_000, "batch_size": 1}},
        wait=False,
    )
    try:
        started = time.monotonic()
        stream = Events(f"{proxy}/v1/jobs/{job['id']}/events")
        events = [stream.next() for _ in range(3)]
        stream.close()
        assert [e["data"]["epoch"] for e in events] == [1, 2, 3]
        # A buffering proxy would hold the events until the stream ended: minutes from now.
        assert requests.get(f"{proxy}/v1/jobs/{job['id']}", timeout=10).json()["status"] == "running"
        assert time.monotonic() - started < 30
    finally:
        requests.post(f"{service[0]}/v1/jobs/{job['id']}/cancel", timeout=10)
