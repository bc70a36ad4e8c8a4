"""Request ids: accepted (bounded, sanitized) or made, echoed, in problem bodies and log lines; JSON log lines."""

from __future__ import annotations

import io
import logging

import orjson

from nnserve.service import logs
from tests.service.helpers import train


def test_a_request_id_is_made_when_none_is_sent(client):
    first, second = (client.get("/healthz").headers["X-Request-ID"] for _ in range(2))
    assert len(first) == 32 and int(first, 16) >= 0 and first != second


def test_a_sent_request_id_is_echoed_and_put_in_the_problem(client):
    response = client.get("/v1/models/mdl_nope", headers={"X-Request-ID": "trace-42/a.b"})
    assert response.status_code == 404 and response.headers["X-Request-ID"] == "trace-42/a.b"
    assert response.json["request_id"] == "trace-42/a.b"
    invalid = client.post("/v1/jobs", json={"dataset": "iris"}, headers={"X-Request-ID": "form-7"})
    assert invalid.status_code == 422 and invalid.json["request_id"] == "form-7"


def test_a_sent_request_id_is_bounded_and_sanitized(client):
    dirty = client.get("/healthz", headers={"X-Request-ID": 'a b"c<d>;e{f}' + "x" * 500})
    assert dirty.headers["X-Request-ID"] == "abcdef" + "x" * 122
    made = client.get("/healthz", headers={"X-Request-ID": "<>"}).headers["X-Request-ID"]
    assert len(made) == 32  # nothing left of it: a new one


def test_the_fast_path_answers_with_the_id_too(app, client, run_jobs):
    model_id = train(client, run_jobs, training={"epochs": 1})["model_id"]
    for i in range(3):  # the first calls load the model into the cache; the last is the fast path's
        response = client.post(
            f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3, 4]]}, headers={"X-Request-ID": f"p{i}"}
        )
        assert response.status_code == 200 and response.headers["X-Request-ID"] == f"p{i}"


def test_log_lines_carry_the_request_id(app, caplog):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.formatter("text"))
    logger = logging.getLogger("nnserve.test")

    @app.get("/v1/speak")
    def speak():
        logger.warning("inside")
        return {"ok": True}

    logger.addHandler(handler)
    try:
        app.test_client().get("/v1/speak", headers={"X-Request-ID": "said-1"})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = stream.getvalue().splitlines()
    assert "[said-1]: inside" in inside and "[-]: outside" in outside


def test_json_lines():
    record = logging.LogRecord("nnserve.x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
    record.request_id = "r-1"
    line = orjson.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "ERROR" and line["logger"] == "nnserve.x" and line["message"] == "failed here"
    assert line["request_id"] == "r-1" and line["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text and "ValueError: boom" in orjson.loads(text)["exception"]
