"""The HTTP worker's request reading (service/http_worker.py) without sockets: where a request ends
however its bytes are split, what it refuses at once, when it defers to gunicorn's parser, and that
gunicorn's own parser reads back exactly the request the loop assembled."""

from __future__ import annotations

import pytest
from gunicorn import http
from gunicorn.config import Config

from nnserve.service.errors import BadRequest, ContentTooLarge
from nnserve.service.http_worker import SPOOL_BYTES, Incoming, Limits, Refused

LIMITS = Limits.of(Config(), max_body_bytes=1000)
NEXT = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def request(body: bytes, *headers: bytes) -> bytes:
    return b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def chunked(*chunks: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailers + b"\r\n"


def feed(data: bytes, split: int | None = None, limits: Limits = LIMITS) -> tuple[Incoming, bytes | None]:
    """Feed ``data`` in two reads, split at ``split`` (one read if None): the request, and the bytes
    past its end once it is complete (None while it is not)."""
    incoming = Incoming(limits)
    parts = [data] if split is None else [data[:split], data[split:]]
    for i, part in enumerate(parts):
        rest = incoming.feed(part)
        if rest is not None:
            return incoming, rest + b"".join(parts[i + 1 :])
    return incoming, None


def assembled(incoming: Incoming) -> bytes:
    return b"".join(incoming.pieces())


LENGTH = request(b'{"a": 1}', b"Content-Length: 8")
CHUNKED = request(chunked(b'{"a":', b" 1}"), b"Transfer-Encoding: chunked")
TRAILERS = request(chunked(b"{}", trailers=b"X-Sum: 1\r\n"), b"Transfer-Encoding: chunked")
NO_BODY = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("data", [LENGTH, CHUNKED, TRAILERS, NO_BODY], ids=["length", "chunked", "trailers", "none"])
def test_a_request_ends_where_it_ends_however_its_bytes_arrive(data):
    for split in range(len(data) + 1):
        incoming, rest = feed(data + NEXT, split)
        assert rest == NEXT, split  # the pipelined request is left for the next turn
        assert assembled(incoming) == data and incoming.size == len(data) and not incoming.uncertain


def test_byte_by_byte_the_request_is_complete_with_its_last_byte():
    incoming = Incoming(LIMITS)
    results = [incoming.feed(bytes([b])) for b in CHUNKED]
    assert results[:-1] == [None] * (len(CHUNKED) - 1) and results[-1] == b""


def test_gunicorns_parser_reads_back_the_request():
    for data, body in ((LENGTH, b'{"a": 1}'), (CHUNKED, b'{"a": 1}'), (TRAILERS, b"{}")):
        incoming, _ = feed(data)
        req = next(http.get_parser(Config(), incoming.pieces(), ("127.0.0.1", 1)))
        assert req.method == "POST" and req.path == "/v1/datasets" and req.body.read() == body
        assert incoming.delivered == len(data)


def test_a_large_body_is_spooled_to_a_file_and_read_back_whole():
    body = bytes(range(256)) * (SPOOL_BYTES // 256 + 100)
    limits = Limits.of(Config(), max_body_bytes=len(body))
    data = request(body, b"Content-Length: %d" % len(body))
    incoming = Incoming(limits)
    for i in range(0, len(data), 65536):
        rest = incoming.feed(data[i : i + 65536])
    assert rest == b"" and incoming.body.file is not None and not incoming.body.memory
    req = next(http.get_parser(Config(), incoming.pieces(), ("127.0.0.1", 1)))
    assert req.body.read() == body
    incoming.close()
    assert incoming.body.file.closed


@pytest.mark.parametrize(
    "data",
    [
        request(b"", b"Content-Length: 1001"),  # announced: refused before any of the body is read
        request(b"3e9\r\n", b"Transfer-Encoding: chunked"),  # 1001 bytes in one chunk, refused at its size line
        request(b"1f4\r\n" + b"x" * 500 + b"\r\n1f5\r\n", b"Transfer-Encoding: chunked"),  # 500 + 501
    ],
    ids=["content-length", "one chunk", "two chunks"],
)
def test_a_body_over_the_limit_is_refused_413_without_reading_it(data):
    with pytest.raises(Refused) as refused:
        feed(data)
    assert isinstance(refused.value.error, ContentTooLarge) and "1000 bytes" in refused.value.error.detail


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", "invalid chunk size"),
        (b" 2\r\n{}\r\n0\r\n\r\n", "invalid chunk size"),
        (b"\r\n", "invalid chunk size"),
        (b"1\r\n{}\r\n0\r\n\r\n", "longer than its size"),
        (b"2\n{}\r\n0\r\n\r\n", "bare LF"),
        (b"1" * (LIMITS.chunk_line + 1), "chunk-size line is over"),
        (b"0\r\n" + b"X-A: b\r\n" * (LIMITS.trailers // 8 + 1), "trailer section is over"),
    ],
)
def test_badly_framed_chunks_are_refused_400(body, reason):
    with pytest.raises(Refused) as refused:
        feed(request(body, b"Transfer-Encoding: chunked"))
    assert isinstance(refused.value.error, BadRequest) and reason in refused.value.error.detail


@pytest.mark.parametrize(
    "data",
    [
        request(b"2\r\n{}\r\n0\r\n\r\n", b"Content-Length: 2", b"Transfer-Encoding: chunked"),
        request(b"{}", b"Content-Length: 2", b"Content-Length: 2"),
        request(b"{}", b"Content-Length: +2"),
        request(b"{}", b"Transfer-Encoding: gzip"),
        request(b"{}", b"Transfer-Encoding: chunked, chunked"),
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET /" + b"a" * LIMITS.head,
    ],
    ids=["length and chunked", "two lengths", "signed length", "not chunked", "chunked twice", "bare LF", "huge"],
)
def test_framing_gunicorn_refuses_is_handed_over_at_once_and_never_kept_alive(data):
    incoming, rest = feed(data)
    assert rest == b"" and incoming.uncertain and assembled(incoming) == data


def test_100_continue_is_expected_of_http_11_requests_with_a_body():
    assert feed(request(b"", b"Content-Length: 2", b"Expect: 100-Continue"))[0].expects_continue
    assert feed(request(b"", b"Transfer-Encoding: chunked", b"expect: 100-continue"))[0].expects_continue
    assert not feed(request(b"", b"Content-Length: 0", b"Expect: 100-continue"))[0].expects_continue
    http10 = b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    assert not feed(http10)[0].expects_continue
