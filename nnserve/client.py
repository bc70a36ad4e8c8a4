"""A small Python client for the nnserve HTTP API, on the standard library alone.

    from nnserve import Client
    nn = Client("http://127.0.0.1:8000")              # api_key="..." when the server wants one
    job = nn.train("iris", model, training)
    job = nn.wait(job["id"])                           # progress bar; raises JobFailed if it did not succeed
    labels, probabilities = nn.predict(job["model_id"], [[5.1, 3.5, 1.4, 0.2]])

Records come back as the API's JSON objects (dicts); predictions as NumPy arrays. Every
error response raises an :class:`NnserveError` subclass chosen by its status, carrying the
problem+json body. One client keeps one connection alive between calls, so give each
thread its own client.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from urllib.parse import quote, urlencode, urlsplit

import numpy as np

__all__ = [
    "DEFAULT_URL",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "JobFailed",
    "NnserveError",
    "NotFoundError",
    "Prediction",
    "RateLimited",
    "ServiceUnavailable",
    "ValidationFailed",
]

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "canceled")


class NnserveError(Exception):
    """An error answer from the API: ``status`` and ``problem``, the problem+json body as a dict."""

    def __init__(self, status: int | None, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        self.detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        super().__init__(f"{status} {self.detail}" if status else self.detail)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Each invalid field (422): ``loc``, ``msg``, ``type``."""
        return self.problem.get("errors") or []


class BadRequestError(NnserveError):
    """400, 413 or 415: a body the server could not read."""


class AuthenticationError(NnserveError):
    """401 or 403: no API key, or one that may not do this."""


class NotFoundError(NnserveError):
    """404: no such record (or it belongs to someone else)."""


class ConflictError(NnserveError):
    """409: the record is in the wrong state (a model still training, a job already finished)."""


class ValidationFailed(NnserveError):
    """422: the request was understood but is not valid; ``errors`` names each field."""


class RateLimited(NnserveError):
    """429: too many requests; ``retry_after`` is the server's advice in seconds, when it gave one."""

    retry_after: float | None = None


class ServiceUnavailable(NnserveError):
    """503, or no answer at all (``status`` is None): the server or its Redis cannot be reached."""


class JobFailed(NnserveError):
    """``wait()`` saw the job end ``failed`` or ``canceled``; ``job`` is its record (``status`` is None)."""

    def __init__(self, job: dict[str, Any]):
        self.job = job
        error = job.get("error") or {}
        detail = f"job {job['id']} {job['status']}" + (f": {error['type']}: {error['detail']}" if error else "")
        super().__init__(None, {"title": f"Job {job['status']}", "detail": detail})


ERRORS = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceUnavailable,
}


class Prediction(NamedTuple):
    """``predictions``: labels (classification) or values, one per row; ``probabilities``: one
    column per class in the model's ``classes`` order, or None for a regressor."""

    predictions: np.ndarray
    probabilities: np.ndarray | None


class Client:
    """The nnserve API at ``url``. ``timeout`` bounds each request (seconds), not ``wait()``."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix]; received {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._scheme, self._netloc, self._prefix = parts.scheme, parts.netloc, parts.path.rstrip("/")
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Datasets --------------------------------------------------------------------------

    def upload_dataset(
        self,
        features,
        targets,
        name: str | None = None,
        feature_names: list[str] | None = None,
        target_kind: str | None = None,
    ) -> dict:
        """Upload rows of ``features`` and their ``targets`` (arrays or lists); returns the dataset."""
        body = {
            "name": name,
            "features": features,
            "targets": targets,
            "feature_names": feature_names,
            "target_kind": target_kind,
        }
        return self._json("POST", "/v1/datasets", {k: v for k, v in body.items() if v is not None})

    def upload_csv(
        self,
        path: str | os.PathLike,
        target: str | None = None,
        name: str | None = None,
        target_kind: str | None = None,
    ) -> dict:
        """Upload a CSV file with a header row; ``target`` names the target column (default: the last)."""
        path = Path(path)
        fields = {"target": target, "name": name, "target_kind": target_kind}
        body, content_type = _multipart(
            {k: v for k, v in fields.items() if v is not None}, "file", path.name, path.read_bytes()
        )
        return self._json("POST", "/v1/datasets", raw=body, content_type=content_type)

    def list_datasets(self, offset: int = 0, limit: int = 100) -> list[dict]:
        return self._json("GET", "/v1/datasets", query={"offset": offset, "limit": limit})["items"]

    def get_dataset(self, dataset_id: str) -> dict:
        return self._json("GET", f"/v1/datasets/{_id(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._json("DELETE", f"/v1/datasets/{_id(dataset_id)}")

    # Jobs ------------------------------------------------------------------------------

    def train(self, dataset: str, model: dict | str, training: dict | None = None, name: str | None = None) -> dict:
        """Submit a training job on ``dataset`` (an id); returns the queued job (``id``, ``model_id``)."""
        body = {"dataset": dataset, "model": model, "training": training or {}}
        if name is not None:
            body["name"] = name
        return self._json("POST", "/v1/jobs", body)

    def list_jobs(self, offset: int = 0, limit: int = 100) -> list[dict]:
        return self._json("GET", "/v1/jobs", query={"offset": offset, "limit": limit})["items"]

    def get_job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{_id(job_id)}")

    def cancel(self, job_id: str) -> dict:
        """Cancel a job (a running one stops within an epoch); returns the job."""
        return self._json("POST", f"/v1/jobs/{_id(job_id)}/cancel")

    def wait(
        self, job_id: str, progress: bool | TextIO = True, timeout: float | None = None, interval: float = 0.5
    ) -> dict:
        """Block until the job finishes and return it, history included; raises JobFailed unless it
        succeeded, TimeoutError after ``timeout`` seconds. ``progress`` draws a bar on stderr (or on
        the stream given). Follows the job's event stream, and polls when there is none."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get_job(job_id)
        bar = ProgressBar(sys.stderr if progress is True else progress, job["progress"]["epochs"]) if progress else None
        try:
            if job["status"] not in FINISHED:
                for epoch in self.events(job_id, deadline):
                    if bar is not None:
                        bar.update(epoch)
                job = self.get_job(job_id)
            while job["status"] not in FINISHED:  # no event stream, or it broke off
                if bar is not None:
                    bar.update_from(job)
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
                time.sleep(interval)
                job = self.get_job(job_id)
            if bar is not None:
                bar.update_from(job)
        finally:
            if bar is not None:
                bar.close()
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return job

    def events(self, job_id: str, deadline: float | None = None) -> Iterator[dict]:
        """The job's ``epoch`` events as they happen (those already done first), until its final
        ``status`` event. Yields nothing when the server has no event stream, and may stop early if
        the stream breaks or stalls, so follow it with ``get_job`` (as ``wait`` does)."""
        timeout = self.timeout if deadline is None else max(1.0, min(self.timeout, deadline - time.monotonic()))
        connection = self._connect(timeout)
        try:
            try:
                connection.request(
                    "GET",
                    self._path(f"/v1/jobs/{_id(job_id)}/events"),
                    headers=self._headers({"Accept": "text/event-stream"}),
                )
                response = connection.getresponse()
            except (OSError, http.client.HTTPException):
                return
            if response.status != 200 or response.getheader("Content-Type", "").split(";")[0] != "text/event-stream":
                return
            try:
                for event, data in _sse(response):
                    if event == "epoch":
                        yield data
                    elif event == "status" and data.get("status") in FINISHED:
                        return
                    if deadline is not None and time.monotonic() > deadline:
                        return
            except (OSError, http.client.HTTPException, ValueError):
                return
        finally:
            connection.close()

    # Models ----------------------------------------------------------------------------

    def list_models(self, offset: int = 0, limit: int = 100) -> list[dict]:
        return self._json("GET", "/v1/models", query={"offset": offset, "limit": limit})["items"]

    def get_model(self, model_id: str) -> dict:
        return self._json("GET", f"/v1/models/{_id(model_id)}")

    def delete_model(self, model_id: str) -> None:
        self._json("DELETE", f"/v1/models/{_id(model_id)}")

    def predict(self, model_id: str, inputs) -> Prediction:
        """Predict for ``inputs``, rows of features (a 2-D array or list of lists)."""
        body = self._json("POST", f"/v1/models/{_id(model_id)}/predict", {"inputs": inputs})
        probabilities = body.get("probabilities")
        return Prediction(
            np.asarray(body["predictions"]),
            None if probabilities is None else np.asarray(probabilities, dtype=np.float64),
        )

    def evaluate(self, model_id: str, dataset: str) -> dict:
        """The model's ``loss`` and ``metrics`` on a dataset (an id)."""
        return self._json("POST", f"/v1/models/{_id(model_id)}/evaluate", {"dataset": dataset})

    def weights(self, model_id: str) -> bytes:
        """The model's ``.npz`` archive (see docs/spec.md, Model files)."""
        return self._request("GET", f"/v1/models/{_id(model_id)}/weights")

    def load_model(self, model_id: str):
        """The trained model as an ``engine`` model, to predict without the server."""
        from nnserve import engine

        return engine.loads(self.weights(model_id))

    # HTTP ------------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if body is not None:
            raw = json.dumps(body, default=_plain, allow_nan=False).encode()
        data = self._request(method, path + ("?" + urlencode(query) if query else ""), raw, content_type)
        return json.loads(data) if data else None

    def _request(
        self, method: str, path: str, raw: bytes | None = None, content_type: str = "application/json"
    ) -> bytes:
        """The body of a 2xx answer; raises the NnserveError for any other."""
        headers = self._headers({"Accept": "application/json"})
        if raw is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection = self._connection or self._connect(self.timeout)
            try:
                connection.request(method, self._path(path), body=raw, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                # The server closed an idle kept-alive connection before reading this request,
                # so sending it again on a fresh one cannot run it twice.
                self.close()
                if not reused or attempt == 2:
                    raise ServiceUnavailable(None, {"detail": f"no answer from {self.url}: {error}"}) from None
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise ServiceUnavailable(None, {"detail": f"no answer from {self.url}: {error}"}) from None
        if response.will_close:
            self.close()
        if 200 <= response.status < 300:
            return data
        raise _error(response, data)

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return kind(self._netloc, timeout=timeout)

    def _path(self, path: str) -> str:
        return self._prefix + path

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def _error(response: http.client.HTTPResponse, data: bytes) -> NnserveError:
    try:
        problem = json.loads(data)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):  # a proxy's HTML page, say
        problem = {"status": response.status, "title": response.reason, "detail": data.decode("utf-8", "replace")[:500]}
    error = ERRORS.get(response.status, NnserveError)(response.status, problem)
    if isinstance(error, RateLimited):
        with contextlib.suppress(ValueError):
            error.retry_after = float(response.getheader("Retry-After", ""))
    return error


def _id(value: str) -> str:
    return quote(str(value), safe="")


def _plain(value: Any) -> Any:
    """NumPy arrays and scalars as JSON (json.dumps calls this for what it does not know)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def _multipart(fields: dict[str, str], file_field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with text ``fields`` and one file; returns ``(body, content_type)``."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for key, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    safe_name = "".join("_" if c in '"\r\n' else c for c in filename)
    out.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{safe_name}"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
    )
    out.write(content)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _sse(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict]]:
    """``(event, data)`` for each Server-Sent Event of ``response``, its data parsed as JSON."""
    event, data = "message", list[str]()
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif not line.startswith(":"):  # ":..." is a comment, the server's keep-alive
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


class ProgressBar:
    """``epoch 12/60 [#####.........]  loss 0.4321  val_loss 0.455  accuracy 0.9333`` on a stream.

    On a terminal it redraws one line; elsewhere (a log, a pipe) it writes a line at each
    tenth of the epochs, so logs stay short."""

    WIDTH = 24

    def __init__(self, stream: TextIO, epochs: int):
        self.stream = stream
        self.epochs = epochs
        self.tty = stream.isatty() if hasattr(stream, "isatty") else False
        self.shown = 0
        self.tenth = -1

    def update(self, event: dict) -> None:
        """From an ``epoch`` event: ``{epoch, loss, val_loss?, metrics...}``."""
        values: dict[str, float] = {}
        for key, value in event.items():
            if isinstance(value, dict):  # metrics sent as an object rather than side by side
                values.update((k, v) for k, v in value.items() if isinstance(v, (int, float)))
            elif key not in ("epoch", "epochs") and isinstance(value, (int, float)):
                values[key] = value
        self._draw(int(event["epoch"]), values)

    def update_from(self, job: dict) -> None:
        """From a polled job: its progress and the last epoch of its history."""
        history = job.get("history") or {}
        self._draw(job["progress"]["epoch"], {k: v[-1] for k, v in history.items() if v})

    def _draw(self, epoch: int, values: dict[str, float]) -> None:
        if epoch <= self.shown:
            return
        self.shown = epoch
        if not self.tty:
            tenth = 10 * epoch // self.epochs
            if tenth == self.tenth:
                return
            self.tenth = tenth
        done = round(self.WIDTH * min(epoch, self.epochs) / self.epochs)
        figures = "  ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "learning_rate")
        line = f"epoch {epoch}/{self.epochs} [{'#' * done}{'.' * (self.WIDTH - done)}]  {figures}"
        self.stream.write(f"\r\033[K{line}" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
