"""The gunicorn worker class of ``nnserve api``: gthread, with each request read by the event loop.

gunicorn's gthread worker hands a connection to a thread as soon as it has a byte to read, and the
thread then reads the headers and the body from the socket, for as long as the client takes. So a
few dozen clients that send part of a request and stall (slowloris) hold every thread (2 processes
x 8 threads) and nothing else is answered. This subclass keeps gthread's process model, thread pool
and request handling, and moves the reading into the event loop, as nginx, and waitress among
Python servers, do:

- the loop reads each connection without blocking into an :class:`Incoming` request until the
  request is complete (its head, then its body by ``Content-Length`` or chunked framing); only then
  does a thread get it, with the whole request in memory (or, past ``SPOOL_BYTES``, in an unnamed
  temporary file), and gunicorn's parser reads it from there, never from the socket. A slow
  client costs a few kilobytes and a file descriptor, never a thread;
- a request's headers must arrive within ``header_timeout`` of its first byte, and its body may
  pause ``body_timeout`` at most; past that the client gets 408 problem+json and the connection
  closes. A thread writing an answer gives up once the client has taken nothing for
  ``body_timeout`` (a large answer may take longer than that in all);
- what the loop refuses (a body over ``max_body_bytes``, a badly framed chunked body) and what
  gunicorn's parser refuses (a bad request line, a long URI, too many or too large headers) is
  answered with problem+json, like every other error of the API, instead of gunicorn's HTML page;
- ``Expect: 100-continue`` is answered by the loop, when it starts waiting for the body;
- a connection is closed by half-closing it and reading what the client still sends (for at
  most ``LINGER_IDLE`` seconds of silence), so that a refusal reaches a client still sending its
  body, instead of a reset; gthread's own graceful close does that in the loop, blocking it.

When the loop cannot tell where a request ends (framing headers gunicorn will refuse, lines that
end in a bare LF, a head over gunicorn's limits) it hands over what it has at once and closes
the connection after the answer: a request is never served on framing the loop and gunicorn might
read differently.

Plain HTTP/1.1 only: TLS and HTTP/2 end at the proxy in front (docs/deployment.md). The class
overrides gthread's own steps (``accept``, ``handle``, ``finish_request``, ``murder_pending``), which
change between gunicorn's major versions: pyproject.toml pins the one it is written for.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import re
import selectors
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

from gunicorn import http
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.errors import ParseException
from gunicorn.http.unreader import IterUnreader
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from .errors import ApiError, BadRequest, ContentTooLarge, RequestTimeout, problem
from .settings import Settings

RECV_BYTES = 256 * 1024
"""Most bytes one read of a connection takes."""
SPOOL_BYTES = 256 * 1024
"""Bytes of a request body kept in memory; beyond that the body goes to an unnamed temporary file."""
FILE_BLOCK = 1024 * 1024
"""Bytes of a spooled body handed to gunicorn's parser at a time."""
LINGER_IDLE = 5.0
"""Seconds a closing connection waits for the client to send more (which is discarded) or to close."""
LINGER_TOTAL = 30.0
"""Seconds a closing connection lingers at most (nginx's lingering_timeout and lingering_time)."""
SWEEP_INTERVAL = 0.2
"""Seconds between the loop's looks for connections past their deadline."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# A header line that frames the body or asks for 100-continue, in a head that ends with CRLF CRLF.
# Each header line follows a CRLF; gunicorn refuses names with spaces before the colon, so the
# loop need not recognise those.
FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding|expect):[ \t]*(.*?)[ \t]*(?=\r\n)", re.IGNORECASE)
HEX = re.compile(rb"[0-9A-Fa-f]+")


class Refused(Exception):
    """A request answered without reading further, with ``error``."""

    def __init__(self, error: ApiError):
        super().__init__(error.detail)
        self.error = error


def bad_chunks(detail: str) -> Refused:
    return Refused(BadRequest(f"the chunked request body is badly framed: {detail}"))


def wire(error: ApiError) -> bytes:
    """``error`` as problem+json in HTTP/1.1 bytes that close the connection."""
    response = problem(error.status, error.title, error.detail, error.slug)
    body = response.get_data()
    lines = [f"HTTP/1.1 {error.status} {error.title}", f"Content-Type: {response.content_type}"]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Limits:
    """What the loop accepts of one request, in bytes."""

    head: int
    """Past this without the end of the head, gunicorn's parser refuses the request (414 or 431)."""
    body: int
    """The largest body (``max_body_bytes``); a chunked body counts what it decodes to."""
    chunk_line: int
    """The longest chunk-size line, as gunicorn's parser allows it."""
    trailers: int
    """The largest trailer section of a chunked body."""

    @classmethod
    def of(cls, cfg: Any, max_body_bytes: int) -> Limits:
        field = cfg.limit_request_field_size or 8190
        headers = cfg.limit_request_fields * (field + 2) + 4
        return cls(
            head=headers + (cfg.limit_request_line or 8190), body=max_body_bytes, chunk_line=field, trailers=headers
        )


class Spool:
    """A request body as it arrives: in memory up to ``SPOOL_BYTES``, then in an unnamed temporary file."""

    __slots__ = ("file", "memory", "size")

    def __init__(self) -> None:
        self.memory = bytearray()  # one buffer, not a list of pieces: a body may come a byte at a time
        self.size = 0
        self.file: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is None and self.size > SPOOL_BYTES:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 (open for the request's life; close() closes it)
            self.file.write(self.memory)
            self.memory = bytearray()
        if self.file is not None:
            self.file.write(data)
        else:
            self.memory += data

    def pieces(self) -> Iterator[bytes]:
        if self.file is None:
            if self.memory:
                yield bytes(self.memory)
            return
        self.file.seek(0)
        while block := self.file.read(FILE_BLOCK):
            yield block

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class ChunkedBody:
    """Where a chunked body (RFC 9112 section 7.1) ends, found as its bytes arrive, and its decoded size.

    Only the framing is followed here; gunicorn's parser checks the rest (extensions, trailer fields)
    when it reads the body. :meth:`feed` raises :class:`Refused`: 400 for framing it cannot follow,
    413 once the chunk sizes add up to more than the limit (without waiting for the data).
    """

    SIZE, DATA, DATA_END, TRAILERS = range(4)

    def __init__(self, limits: Limits):
        self.limits = limits
        self.state = self.SIZE
        self.line = bytearray()
        self.left = 0
        self.size = 0
        self.trailers = 0

    def feed(self, data: bytes) -> int | None:
        """How many bytes of ``data`` end the body, or None when all of it belongs to the body and more is to come."""
        i, n = 0, len(data)
        while i < n:
            if self.state == self.DATA:
                step = min(self.left, n - i)
                i += step
                self.left -= step
                if not self.left:
                    self.state = self.DATA_END
                continue
            end = data.find(b"\n", i)
            self.line += data[i : n if end < 0 else end + 1]
            if end < 0:
                self._check_partial_line()
                return None
            i = end + 1
            line = bytes(self.line)
            self.line.clear()
            if not line.endswith(b"\r\n"):
                raise bad_chunks("a line ends in a bare LF, not CRLF")
            if self.state == self.SIZE:
                self._chunk_size(line[:-2])
            elif self.state == self.DATA_END:
                if line != b"\r\n":
                    raise bad_chunks("a chunk's data is longer than its size")
                self.state = self.SIZE
            elif line == b"\r\n":
                return i  # the empty line after the trailer fields (if any): the end
            else:
                self.trailers += len(line)
                self._check_trailers()
        return None

    def _check_partial_line(self) -> None:
        if self.state == self.SIZE and len(self.line) > self.limits.chunk_line:
            raise bad_chunks(f"a chunk-size line is over {self.limits.chunk_line} bytes")
        if self.state == self.DATA_END and not b"\r\n".startswith(self.line):
            raise bad_chunks("a chunk's data is longer than its size")
        if self.state == self.TRAILERS:
            self._check_trailers(len(self.line))

    def _check_trailers(self, pending: int = 0) -> None:
        if self.trailers + pending > self.limits.trailers:
            raise bad_chunks(f"the trailer section is over {self.limits.trailers} bytes")

    def _chunk_size(self, line: bytes) -> None:
        digits, semicolon, _ = line.partition(b";")
        if semicolon:  # RFC 9112: whitespace may come before an extension, and only there
            digits = digits.rstrip(b" \t")
        if not HEX.fullmatch(digits):
            raise bad_chunks(f"invalid chunk size {digits[:40]!r}")
        size = int(digits, 16)
        self.size += size
        if self.size > self.limits.body:
            raise Refused(ContentTooLarge(self.limits.body))
        self.state, self.left = (self.DATA, size) if size else (self.TRAILERS, 0)


class Incoming:
    """One HTTP/1.x request read off a connection: its head, then its body, until it is complete."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.head: bytes | bytearray = b""
        self.body = Spool()
        self.framed = False
        """The head is complete and the body's framing is known."""
        self.uncertain = False
        """The loop cannot be sure where this request ends: answer it, then close the connection."""
        self.remaining = 0
        """Bytes of a Content-Length body still to come."""
        self.chunks: ChunkedBody | None = None
        self.expects_continue = False
        self.continued = False
        self.delivered = 0
        """Bytes handed to gunicorn's parser so far."""

    @property
    def started(self) -> bool:
        return bool(self.head)

    @property
    def size(self) -> int:
        return len(self.head) + self.body.size

    def feed(self, data: bytes) -> bytes | None:
        """Take bytes read off the connection. None while the request is incomplete; once it is complete,
        the bytes past its end (the start of a pipelined request, or b"").

        Raises :class:`Refused` for a request to answer at once (a body over the limit, bad chunks).
        """
        if not self.framed:
            searched = max(0, len(self.head) - 3)
            if self.head:
                self.head += data  # a bytearray, grown in place: a head may come a byte at a time
                received = self.head
            else:
                received = data  # mostly, the whole head comes in one read
            end = received.find(b"\r\n\r\n", searched)
            if end < 0:
                if not self.head:
                    self.head = bytearray(received)
                if len(received) > self.limits.head or received.find(b"\n\n", max(0, searched - 1)) >= 0:
                    # Over gunicorn's limits, or lines ending in a bare LF: its parser refuses the
                    # request from what is here (414, 431 or 400).
                    self.uncertain = True
                    return b""
                return None
            self.head = bytes(received[: end + 4])
            data = bytes(received[end + 4 :])
            self._frame(self.head)
            self.framed = True
            if self.uncertain:
                self.head += data  # all of it, body and all, goes to gunicorn's parser, which refuses it
                return b""
        return self._take_body(data)

    def _frame(self, head: bytes) -> None:
        """The body's framing from the head, read as gunicorn's parser reads it (RFC 9112 section 6)."""
        fields: dict[bytes, list[bytes]] = {}
        for name, value in FRAMING.findall(head):
            fields.setdefault(name.lower(), []).append(value)
        lengths = fields.get(b"content-length", [])
        codings = [c.strip(b" \t").lower() for v in fields.get(b"transfer-encoding", []) for c in v.split(b",")]
        if codings:
            if lengths or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                self.uncertain = True  # gunicorn answers 400 or 501
                return
            self.chunks = ChunkedBody(self.limits)
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                self.uncertain = True  # gunicorn answers 400
                return
            self.remaining = int(lengths[0])
            if self.remaining > self.limits.body:
                raise Refused(ContentTooLarge(self.limits.body))
        self.expects_continue = (
            fields.get(b"expect", [b""])[-1].lower() == b"100-continue"
            and head.split(b"\r\n", 1)[0].endswith(b" HTTP/1.1")
            and (self.chunks is not None or self.remaining > 0)
        )

    def _take_body(self, data: bytes) -> bytes | None:
        if self.chunks is not None:
            end = self.chunks.feed(data)
            if end is None:
                self.body.write(data)
                return None
            self.body.write(data[:end])
            self.chunks = None
            return data[end:]
        if len(data) <= self.remaining:
            self.body.write(data)
            self.remaining -= len(data)
            return b"" if not self.remaining else None
        self.body.write(data[: self.remaining])
        rest = data[self.remaining :]
        self.remaining = 0
        return rest

    def pieces(self) -> Iterator[bytes]:
        """The request's bytes, for gunicorn's parser (an iterable source: it never touches the socket)."""
        for piece in itertools.chain((bytes(self.head),), self.body.pieces()):
            self.delivered += len(piece)
            yield piece

    def close(self) -> None:
        self.body.close()


class ClientSocket(socket.socket):
    """A client's socket whose timeout bounds each wait to send, not a whole ``sendall``: a large answer
    may take as long as it needs while the client keeps reading (nginx's send_timeout), and a
    client that stops reading frees the thread after the timeout."""

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            sent += self.send(view[sent:], flags)

    @classmethod
    def adopt(cls, sock: socket.socket) -> ClientSocket:
        return cls(sock.family, sock.type, sock.proto, fileno=sock.detach())


class Connection(TConn):
    """gthread's connection, plus the request being read and the loop's deadline for it."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, send_timeout: float):
        super().__init__(cfg, sock, client, server)
        self.send_timeout = send_timeout
        self.incoming: Incoming | None = None
        self.leftover = b""
        self.deadline = 0.0
        self.lingering = False
        self.linger_until = 0.0

    def init(self) -> None:
        super().init()
        # In a thread only answers are written: a client that stops reading frees the thread in time.
        self.sock.settimeout(self.send_timeout)


class _ErrorPage:
    """Stands in for the client socket while gunicorn writes its HTML error page, to learn the status it chose."""

    status = 500
    reason = "Internal Server Error"

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        _, status, reason = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        self.status, self.reason = int(status), reason


class BufferingWorker(ThreadWorker):
    """gthread whose event loop reads whole requests before a thread serves them (see the module's docstring)."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl or cfg.proxy_protocol != "off" or list(cfg.http_protocols) != ["h1"]:
            raise RuntimeError(
                "nnserve's worker class serves plain HTTP/1.1: end TLS, HTTP/2 and the PROXY protocol at a "
                "reverse proxy in front (docs/deployment.md)"
            )

    def init_process(self) -> None:
        settings = Settings()
        self.limits = Limits.of(self.cfg, settings.max_body_bytes)
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.waiting: set[Connection] = set()
        self.next_sweep = 0.0
        self.stopping_until: float | None = None
        super().init_process()  # runs the loop

    # The event loop -------------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = Connection(self.cfg, ClientSocket.adopt(sock), client, listener.getsockname(), self.body_timeout)
        self.await_request(conn, time.monotonic() + self.header_timeout)

    def await_request(self, conn: Connection, idle_until: float) -> None:
        """Wait in the loop, without a thread, for the connection's next request."""
        conn.sock.setblocking(False)
        conn.incoming = Incoming(self.limits)
        conn.deadline = idle_until
        self._wait(conn, self.on_readable)

    def on_readable(self, conn: Connection, _sock: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left, between requests or in one: there is no one to answer
            self.close(conn)
            return
        self.take(conn, data)

    def take(self, conn: Connection, data: bytes) -> None:
        incoming = conn.incoming
        assert incoming is not None
        first = not incoming.started
        try:
            rest = incoming.feed(data)
        except Refused as refusal:
            self.log.warning("Refused request from ip=%s: %s", _ip(conn), refusal)
            self.refuse(conn, refusal.error)
            return
        if rest is None:
            now = time.monotonic()
            if incoming.framed:
                conn.deadline = now + self.body_timeout  # the body may pause, not stall
                if incoming.expects_continue and not incoming.continued:
                    incoming.continued = True
                    _send_quietly(conn.sock, CONTINUE)
            elif first:
                conn.deadline = now + self.header_timeout
            return
        self._unwait(conn)
        conn.leftover = rest
        self.enqueue_req(conn)

    def refuse(self, conn: Connection, error: ApiError) -> None:
        """Answer without a thread, then close the connection."""
        self._unwait(conn)
        _send_quietly(conn.sock, wire(error))
        self.linger(conn)

    def linger(self, conn: Connection) -> None:
        """Close in the loop, reading (and dropping) what the client still sends, so that it gets the
        answer rather than a reset (RFC 9112 section 9.6)."""
        self._unwait(conn)
        if conn.incoming is not None:
            conn.incoming.close()
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        now = time.monotonic()
        conn.lingering = True
        conn.linger_until = now + LINGER_TOTAL
        conn.deadline = now + LINGER_IDLE
        self._wait(conn, self.on_lingering)

    def on_lingering(self, conn: Connection, _sock: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)
        else:
            conn.deadline = min(time.monotonic() + LINGER_IDLE, conn.linger_until)

    def close(self, conn: Connection) -> None:
        self._unwait(conn)
        if conn.incoming is not None:
            conn.incoming.close()
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Called by gthread's loop on every turn: close or answer the connections past their deadline."""
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_INTERVAL
        if not self.alive and self.stopping_until is None:
            # Stopping: connections between requests get a moment for a request already on its way.
            self.stopping_until = now + STOP_KEEPALIVE_LINGER
        stopped = self.stopping_until is not None and self.stopping_until <= now
        for conn in list(self.waiting):
            idle = conn.lingering or conn.incoming is None or not conn.incoming.started
            if conn.deadline > now and not (idle and stopped):
                continue
            if idle:
                self.close(conn)
            else:
                self.log.debug("Request timeout from ip=%s", _ip(conn))
                self.refuse(conn, _timeout(conn.incoming))

    def _wait(self, conn: Connection, callback: Any) -> None:
        self.waiting.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(callback, conn))

    def _unwait(self, conn: Connection) -> None:
        if conn in self.waiting:
            self.waiting.discard(conn)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)

    # The threads ----------------------------------------------------------------------------------

    def handle(self, conn: Connection) -> Any:
        assert conn.incoming is not None
        conn.data_ready = True  # the request is in memory: gthread must not wait on the socket
        conn.parser = http.get_parser(self.cfg, conn.incoming.pieces(), conn.client)
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Connection) -> bool:
        # The loop answered any 100-continue while it waited for the body, which is here by now.
        req._expected_100_continue = False
        if isinstance(req.body.reader, ChunkedReader):
            # Decode the chunked body (from memory) before the app runs, so that a fault gunicorn's
            # parser finds in it (an extension, a trailer field) is one of its own refusals (400
            # problem+json, below) rather than an exception inside the app (500).
            data = req.body.read()
            req.body = Body(LengthReader(IterUnreader([data]), len(data)))
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's answer to a request it refused or failed (it picks the status and logs it),
        as problem+json instead of its HTML page."""
        page = _ErrorPage()
        super().handle_error(req, page, addr, exc)
        error = ApiError(
            str(exc) if isinstance(exc, ParseException) and page.status != 500 else "an unexpected error occurred"
        )
        error.status, error.title, error.slug = page.status, page.reason, page.reason.lower().replace(" ", "-")
        _send_quietly(client, wire(error))

    def finish_request(self, conn: Connection, fs: Any) -> None:
        """Called in the loop when a thread is done with the connection: wait there for its next request, or close."""
        try:
            keepalive = not fs.cancelled() and fs.result()
        except Exception:
            keepalive = False
        incoming = conn.incoming
        assert incoming is not None
        unread = len(conn.parser.unreader.buf.getvalue()) if conn.parser is not None else 0
        # Served on framing gunicorn read exactly as the loop did, or the connection ends here.
        exact = not incoming.uncertain and incoming.delivered - unread == incoming.size
        incoming.close()
        if not (keepalive and exact):
            self.linger(conn)
            return
        rest, conn.leftover = conn.leftover, b""
        self.await_request(conn, time.monotonic() + self.cfg.keepalive)
        if rest:
            self.take(conn, rest)


def _timeout(incoming: Incoming | None) -> RequestTimeout:
    if incoming is not None and incoming.framed:
        return RequestTimeout("the request body stalled for longer than the server waits (NNSERVE_BODY_TIMEOUT)")
    return RequestTimeout("the request headers did not arrive in time (NNSERVE_HEADER_TIMEOUT)")


def _ip(conn: Connection) -> str:
    return conn.client[0] if isinstance(conn.client, tuple) else str(conn.client)


def _send_quietly(sock: Any, data: bytes) -> None:
    """Send what the socket takes now; a client that is gone or not reading misses the answer."""
    try:
        if sock.gettimeout() == 0.0:
            sock.send(data)
        else:
            sock.sendall(data)
    except OSError:
        pass
