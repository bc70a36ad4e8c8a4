"""Request ids and log lines: every request has an id, echoed to the client, in each of its log lines
and in its problem body, so one failure can be followed from the client through the logs.

The id is the request's ``X-Request-ID`` when it sends one (a proxy or the client chose it), kept to
``MAX_LENGTH`` characters of a safe set so that it cannot forge log lines or headers, else a new
random one. ``RequestIds`` is the outermost WSGI layer, so even the predict fast path and the
metrics run inside it. Log lines are text, or JSON objects one per line with
``NNSERVE_LOG_FORMAT=json`` (``configure``; gunicorn's own lines too, through ``gunicorn_logging``,
which also turns on its access log: a line per request, with the request's id).
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

HEADER = "X-Request-ID"
ENVIRON_KEY = "nnserve.request_id"
MAX_LENGTH = 128
UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=@-]")
"""Characters a request id may not keep: anything that could end a header or a log line, or fake a field."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

_current: ContextVar[str | None] = ContextVar("nnserve_request_id", default=None)


def request_id(sent: str | None) -> str:
    """The id of a request that sent ``sent`` as its X-Request-ID: that, sanitized and bounded, or a new one."""
    kept = UNSAFE.sub("", sent or "")[:MAX_LENGTH]
    return kept or uuid.uuid4().hex


def current() -> str | None:
    """The id of the request this thread is serving, if any."""
    return _current.get()


class RequestIds:
    """WSGI middleware: give each request its id (``environ[ENVIRON_KEY]``, ``current()``) and answer
    it in the ``X-Request-ID`` header."""

    def __init__(self, app: Any):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        rid = environ[ENVIRON_KEY] = request_id(environ.get("HTTP_X_REQUEST_ID"))
        token = _current.set(rid)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((HEADER, rid))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``-`` outside a request), for the formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``request_id`` (in a
    request) and ``exception`` (with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or _current.get()
        if rid in (None, "-") and isinstance(record.args, dict):
            # gunicorn's access lines are written after the request, from its atoms: the answer's header.
            rid = record.args.get("{x-request-id}o")
        if rid and rid != "-":
            line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str, log_format: str) -> None:
    """Log at ``level`` to stderr as ``text`` or ``json`` lines, each with its request's id. Leaves a
    root logger that already has handlers alone (gunicorn's, configured by ``gunicorn_logging``)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def gunicorn_logging(level: str, log_format: str) -> dict[str, Any] | None:
    """gunicorn's ``logconfig_dict`` for ``json`` lines (its own and the app's alike); None keeps its default."""
    if log_format != "json":
        return None
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"request_id": {"()": RequestIdFilter}},
        "handlers": {"console": handler, "error_console": handler},
        "root": {"level": level.upper(), "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": level.upper(), "handlers": ["console"], "propagate": False},
        },
    }
