"""A Python client for the nnserve HTTP API.

    from nnserve import Client
    nn = Client("http://127.0.0.1:8000")              # api_key="..." when the server wants one
    job = nn.train("iris", model, training)
    job = nn.wait(job["id"], progress=True)            # raises JobFailed if it did not succeed
    labels, probabilities = nn.predict(job["model_id"], [[5.1, 3.5, 1.4, 0.2]])

Records come back as the API's JSON objects (dicts); predictions as NumPy arrays. Every error
response raises an :class:`NnserveError` subclass chosen by its status, carrying the problem+json
body.

HTTP goes through one pooled ``httpx.Client``, so one ``Client`` may be shared by threads. It honours
``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` (``trust_env``), ``verify=`` (a CA bundle path, an
``ssl.SSLContext`` or False) and ``cert=`` (a client certificate). A 429 or 503 is retried, after the
server's ``Retry-After``, when the call is safe to repeat: a GET, PUT or DELETE, or a POST carrying an
``Idempotency-Key``, which this client adds itself to job and dataset creation, so that a retried
submission never creates a second job.

Importing this module imports neither Flask, RQ, gunicorn nor prometheus-client: it only speaks HTTP.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import json
import os
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import numpy as np

from nnserve import __version__

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
FINISHED = ("succeeded", "failed", "canceled", "pruned")
SWEEP_FINISHED = ("succeeded", "canceled")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
"""Methods that may be sent twice without doing twice (RFC 9110, 9.2.2); a POST is made so by its key."""
RETRIED_STATUSES = frozenset({429, 503})
IDEMPOTENCY_HEADER = "Idempotency-Key"


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

    @property
    def request_id(self) -> str | None:
        """The server's id of the request (its ``X-Request-ID``), to quote when reporting a problem."""
        return self.problem.get("request_id")


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
    """``wait()`` saw the job end ``failed``, ``canceled`` or ``pruned`` (a sweep's trial); ``job`` is its record
    (``status`` is None)."""

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


class _Outputs(NamedTuple):
    predictions: np.ndarray
    probabilities: np.ndarray | None


class Prediction(_Outputs):
    """``predictions``: labels (classification) or values, one per row; ``probabilities``: one
    column per class in the model's ``classes`` order, or None for a regressor. It unpacks as those two;
    ``model_version`` (an attribute, not a third item) is the version of a registered model that
    answered, None for a model without a name."""

    model_version: int | None = None


class Client:
    """The nnserve API at ``url`` (``http(s)://host[:port][/prefix]``).

    ``timeout`` bounds each request in seconds (not ``wait()``); ``verify`` and ``cert`` are
    httpx's TLS options; ``trust_env`` takes proxies (``HTTP(S)_PROXY``, ``NO_PROXY``) and CA
    bundles (``SSL_CERT_FILE``) from the environment. ``retries`` is how many times a call that is
    safe to repeat is sent again after a 429, a 503 or no connection; a ``Retry-After`` longer than
    ``max_retry_wait`` seconds is not waited for (the error is raised)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        retries: int = 3,
        max_retry_wait: float = 60.0,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix]; received {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        headers = {"Accept": "application/json", "User-Agent": f"nnserve-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            verify=_tls(verify, cert, trust_env),
            trust_env=trust_env,
        )
        self._feature_names: dict[str, list[str] | None] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Datasets --------------------------------------------------------------------------

    def upload_dataset(
        self,
        features: Any,
        targets: Any,
        name: str | None = None,
        feature_names: list[str] | None = None,
        target_kind: str | None = None,
        shape: list[int] | None = None,
    ) -> dict:
        """Upload ``features`` (rows, or samples nested in lists: arrays or lists) and their ``targets``;
        ``shape``: the shape of one sample of flat rows (``[8, 8, 1]``). Returns the dataset. For large
        arrays ``upload_arrays`` sends far fewer bytes."""
        body = {
            "name": name,
            "features": features,
            "targets": targets,
            "feature_names": feature_names,
            "target_kind": target_kind,
            "shape": shape,
        }
        return self._json("POST", "/v1/datasets", {k: v for k, v in body.items() if v is not None}, idempotent=True)

    def upload_arrays(
        self,
        x: Any,
        y: Any,
        name: str | None = None,
        target_kind: str | None = None,
        shape: list[int] | None = None,
        feature_names: list[str] | None = None,
    ) -> dict:
        """Upload arrays ``x`` (samples along the first axis, of any shape and numeric dtype: images as
        ``(n, 28, 28, 1)`` uint8) and ``y`` as a binary ``.npz``, as ``numpy.savez`` writes it."""
        buffer = io.BytesIO()
        np.savez(buffer, x=np.asarray(x), y=np.asarray(y))
        return self.upload_npz(buffer.getvalue(), name or "arrays", target_kind, shape, feature_names)

    def upload_npz(
        self,
        path: str | os.PathLike | bytes,
        name: str | None = None,
        target_kind: str | None = None,
        shape: list[int] | None = None,
        feature_names: list[str] | None = None,
    ) -> dict:
        """Upload an ``.npz`` file (or its bytes) holding arrays ``x`` and ``y``; ``shape``: the shape of
        one sample, when ``x`` holds flat rows of images (or to add a channel axis, ``[28, 28, 1]``)."""
        content = path if isinstance(path, bytes) else Path(path).read_bytes()
        filename = "arrays.npz" if isinstance(path, bytes) else Path(path).name
        fields = {
            "name": name,
            "target_kind": target_kind,
            "shape": json.dumps(shape) if shape is not None else None,
            "feature_names": json.dumps(feature_names) if feature_names is not None else None,
        }
        return self._json(
            "POST",
            "/v1/datasets",
            form={k: v for k, v in fields.items() if v is not None},
            files={"file": (filename, content, "application/octet-stream")},
            idempotent=True,
        )

    def upload_csv(
        self,
        path: str | os.PathLike,
        target: str | None = None,
        name: str | None = None,
        target_kind: str | None = None,
        shape: list[int] | None = None,
    ) -> dict:
        """Upload a CSV file with a header row; ``target`` names the target column (default: the last);
        ``shape``: the shape of one sample its feature columns hold, row-major (``[8, 8, 1]``)."""
        path = Path(path)
        fields = {
            "target": target,
            "name": name,
            "target_kind": target_kind,
            "shape": json.dumps(shape) if shape is not None else None,
        }
        return self._json(
            "POST",
            "/v1/datasets",
            form={k: v for k, v in fields.items() if v is not None},
            files={"file": (path.name, path.read_bytes(), "text/csv")},
            idempotent=True,
        )

    def list_datasets(self, offset: int = 0, limit: int = 100) -> list[dict]:
        """One page of datasets: the built-ins, then yours newest first."""
        return self._json("GET", "/v1/datasets", params={"offset": offset, "limit": limit})["items"]

    def iter_datasets(self, page_size: int = 100) -> Iterator[dict]:
        """Every dataset, fetched a page at a time."""
        return self._pages("/v1/datasets", page_size)

    def get_dataset(self, dataset_id: str) -> dict:
        return self._json("GET", f"/v1/datasets/{_id(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._json("DELETE", f"/v1/datasets/{_id(dataset_id)}")

    # Jobs ------------------------------------------------------------------------------

    def train(
        self,
        dataset: str,
        model: dict | str | None = None,
        training: dict | None = None,
        name: str | None = None,
        promote: str | dict | None = None,
        initial_model: str | None = None,
    ) -> dict:
        """Submit a training job on ``dataset`` (an id); returns the queued job (``id``, ``model_id``).
        Under a ``name`` its model becomes the name's next version; ``promote`` (``always``, ``never``,
        ``{"if_better": {"metric": ..., "min_delta": ...}}``) says whether it becomes ``current``.
        ``initial_model`` (a model reference) continues training from that model: ``model`` may then be left out."""
        body: dict[str, Any] = {"dataset": dataset, "training": training or {}}
        if model is not None:
            body["model"] = model
        if name is not None:
            body["name"] = name
        if promote is not None:
            body["promote"] = promote
        if initial_model is not None:
            body["initial_model"] = initial_model
        return self._json("POST", "/v1/jobs", body, idempotent=True)

    def list_jobs(self, offset: int = 0, limit: int = 100) -> list[dict]:
        """One page of your jobs, newest first (without their history)."""
        return self._json("GET", "/v1/jobs", params={"offset": offset, "limit": limit})["items"]

    def iter_jobs(self, page_size: int = 100) -> Iterator[dict]:
        """Every job, newest first, fetched a page at a time."""
        return self._pages("/v1/jobs", page_size)

    def get_job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{_id(job_id)}")

    def cancel(self, job_id: str, keep: str | None = None) -> dict:
        """Cancel a job (a running one stops within an epoch); returns the job. ``keep`` (``best``,
        ``last``, ``none``) asks the server to keep the weights learned so far, where it can."""
        return self._json("POST", f"/v1/jobs/{_id(job_id)}/cancel", None if keep is None else {"keep": keep})

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job's record and history (its model stays)."""
        self._json("DELETE", f"/v1/jobs/{_id(job_id)}")

    def wait(
        self, job_id: str, progress: bool | TextIO = False, timeout: float | None = None, interval: float = 0.5
    ) -> dict:
        """Block until the job finishes and return it, history included; raises JobFailed unless it
        succeeded, TimeoutError after ``timeout`` seconds. ``progress=True`` draws a bar on stderr (or
        on the stream given) when it is a terminal. Follows the job's event stream from where the
        job is, and polls when there is none."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get_job(job_id)
        bar = None
        if progress:
            stream = sys.stderr if progress is True else progress
            bar = ProgressBar(stream, job["progress"]["epochs"], initial=job["progress"]["epoch"])
        try:
            if job["status"] not in FINISHED:
                for epoch in self.events(job_id, deadline, after=job["progress"]["epoch"]):
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

    def events(self, job_id: str, deadline: float | None = None, after: int = 0) -> Iterator[dict]:
        """The job's ``epoch`` events after epoch ``after`` as they happen (those already done first),
        until its final ``status`` event. Yields nothing when the server has no event stream, and may
        stop early if the stream breaks or stalls, so follow it with ``get_job`` (as ``wait`` does)."""
        read = self.timeout if deadline is None else max(1.0, min(self.timeout, deadline - time.monotonic()))
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        try:
            with self._http.stream(
                "GET", f"/v1/jobs/{_id(job_id)}/events", headers=headers, timeout=httpx.Timeout(self.timeout, read=read)
            ) as response:
                if response.status_code != 200 or response.headers.get("Content-Type", "").split(";")[0] != (
                    "text/event-stream"
                ):
                    return
                for event, data in _sse(response.iter_lines()):
                    if event == "epoch":
                        yield data
                    elif event == "status" and data.get("status") in FINISHED:
                        return
                    if deadline is not None and time.monotonic() > deadline:
                        return
        except (httpx.HTTPError, ValueError):
            return

    # Models ----------------------------------------------------------------------------

    # Sweeps -----------------------------------------------------------------------------

    def sweep(self, spec: dict[str, Any]) -> dict:
        """Submit a sweep: ``spec`` is a job document (``dataset``, ``model``, ``training``, ``name``) with
        ``search_space`` and the sweep's options (``strategy``, ``trials``, ``objective``, ``pruner``...);
        returns the sweep (``id``), its first trials queued."""
        return self._json("POST", "/v1/sweeps", spec, idempotent=True)

    def list_sweeps(self, offset: int = 0, limit: int = 100) -> list[dict]:
        """One page of your sweeps, newest first (without their trials)."""
        return self._json("GET", "/v1/sweeps", params={"offset": offset, "limit": limit})["items"]

    def iter_sweeps(self, page_size: int = 100) -> Iterator[dict]:
        return self._pages("/v1/sweeps", page_size)

    def get_sweep(self, sweep_id: str) -> dict:
        """A sweep with its counts, best so far and every trial."""
        return self._json("GET", f"/v1/sweeps/{_id(sweep_id)}")

    def cancel_sweep(self, sweep_id: str) -> dict:
        """Cancel a sweep: queued trials never start, running ones stop within an epoch."""
        return self._json("POST", f"/v1/sweeps/{_id(sweep_id)}/cancel")

    def wait_sweep(self, sweep_id: str, timeout: float | None = None, poll: float = 1.0, on_update: Any = None) -> dict:
        """Poll the sweep until it ends (``on_update(sweep)`` after each look); returns it. Raises
        TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sweep = self.get_sweep(sweep_id)
            if on_update is not None:
                on_update(sweep)
            if sweep["status"] in SWEEP_FINISHED:
                return sweep
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} still {sweep['status']} after {timeout} s")
            time.sleep(poll)

    def list_models(self, offset: int = 0, limit: int = 100) -> list[dict]:
        """One page of your models, newest first."""
        return self._json("GET", "/v1/models", params={"offset": offset, "limit": limit})["items"]

    def iter_models(self, page_size: int = 100) -> Iterator[dict]:
        """Every model, newest first, fetched a page at a time."""
        return self._pages("/v1/models", page_size)

    def get_model(self, model_id: str) -> dict:
        return self._json("GET", f"/v1/models/{_id(model_id)}")

    def delete_model(self, model_id: str, force: bool = False) -> None:
        """Delete a model; a registered version that aliases point at only with ``force`` (they go too)."""
        self._json("DELETE", f"/v1/models/{_id(model_id)}", params={"force": "true"} if force else None)

    def predict(self, model_id: str, inputs: Any) -> Prediction:
        """Predict for ``inputs``: rows of features as a 2-D NumPy array, a list of lists, or a pandas
        DataFrame, whose columns are matched to the model's feature names by name (in any order;
        other columns are left out). Raises ValueError for a value JSON cannot carry (NaN, inf)."""
        body = self._json("POST", f"/v1/models/{_id(model_id)}/predict", {"inputs": self._rows(model_id, inputs)})
        probabilities = body.get("probabilities")
        prediction = Prediction(
            np.asarray(body["predictions"]),
            None if probabilities is None else np.asarray(probabilities, dtype=np.float64),
        )
        prediction.model_version = body.get("model_version")
        return prediction

    def evaluate(self, model_id: str, dataset: str) -> dict:
        """The model's ``loss`` and ``metrics`` on a dataset (an id)."""
        return self._json("POST", f"/v1/models/{_id(model_id)}/evaluate", {"dataset": dataset})

    def report(self, model_id: str, dataset: str | None = None) -> dict:
        """The model's evaluation report: the one stored when it was trained (on its held-out rows), or,
        given a ``dataset`` (an id), the one computed on its rows (see docs/evaluation.md)."""
        if dataset is None:
            return self.get_model(model_id).get("evaluation") or {}
        return self.evaluate(model_id, dataset)["evaluation"]

    def weights(self, model_id: str) -> bytes:
        """The model's ``.npz`` archive (see docs/spec.md, Model files)."""
        return self._send("GET", f"/v1/models/{_id(model_id)}/weights").content

    def onnx(self, model_id: str) -> bytes:
        """The model as an ONNX graph (input ``input``, output ``probabilities`` or ``predictions``; README, ONNX export)."""
        return self._send("GET", f"/v1/models/{_id(model_id)}/onnx").content

    def import_model(
        self,
        path: str | os.PathLike,
        weights: str | os.PathLike | None = None,
        name: str | None = None,
        classes: list | None = None,
        feature_names: list[str] | None = None,
    ) -> dict:
        """Serve a model trained elsewhere: ``path`` a Keras ``.keras`` archive or an nnserve ``.npz``; or a Keras
        ``to_json()`` document with ``weights`` (a ``.weights.h5``, or an ``.npz`` of ``get_weights()``)."""
        path = Path(path)
        form = {"name": name, "classes": classes, "feature_names": feature_names}
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in form.items() if v is not None}
        if weights is None:
            files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
        else:
            weights = Path(weights)
            files = {
                "model": (path.name, path.read_bytes(), "application/json"),
                "weights": (weights.name, weights.read_bytes(), "application/octet-stream"),
            }
        return self._json("POST", "/v1/models", form=fields, files=files)

    def load_model(self, model_id: str) -> Any:
        """The trained model as an ``engine`` model, to predict without the server."""
        from nnserve import engine

        return engine.loads(self.weights(model_id))

    # The model registry -----------------------------------------------------------------
    # Every method taking a ``model_id`` above takes any model reference: ``mdl_…``, ``NAME`` (its
    # ``current`` version), ``NAME@ALIAS`` or ``NAME@N``.

    def list_registry(self, offset: int = 0, limit: int = 100) -> list[dict]:
        """One page of your registered names (``name``, ``versions`` count, ``aliases``), latest change first."""
        return self._json("GET", "/v1/registry", params={"offset": offset, "limit": limit})["items"]

    def iter_registry(self, page_size: int = 100) -> Iterator[dict]:
        return self._pages("/v1/registry", page_size)

    def get_registered(self, name: str) -> dict:
        """A registered name: every version, the aliases, the alias moves, the shadow's agreement."""
        return self._json("GET", f"/v1/registry/{_id(name)}")

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | None = None,
        *,
        split: dict[int, float] | None = None,
        shadow: int | None = None,
        sample: float | None = None,
    ) -> dict:
        """Point ``alias`` at a ``version``, a weighted ``split`` (``{3: 90, 4: 10}``) or a version with a
        ``shadow``; returns the alias map."""
        body: dict[str, Any] = {}
        if split is not None:
            body["split"] = {str(v): w for v, w in split.items()}
        for field, value in (("version", version), ("shadow", shadow), ("sample", sample)):
            if value is not None:
                body[field] = value
        return self._json("PUT", f"/v1/registry/{_id(name)}/aliases/{_id(alias)}", body)["aliases"]

    def delete_alias(self, name: str, alias: str) -> None:
        self._json("DELETE", f"/v1/registry/{_id(name)}/aliases/{_id(alias)}")

    def rollback(self, name: str, version: int | None = None) -> dict:
        """Move ``current`` to ``version``, by default to where ``previous`` points; returns the alias map."""
        if version is None:
            previous = self.get_registered(name)["aliases"].get("previous")
            if previous is None:
                raise NotFoundError(404, {"detail": f"{name!r} has no alias 'previous' to roll back to"})
            target = previous if isinstance(previous, dict) else {"version": previous}
            return self._json("PUT", f"/v1/registry/{_id(name)}/aliases/current", target)["aliases"]
        return self.set_alias(name, "current", version)

    def delete_registered(self, name: str) -> None:
        """Delete a registered name and every one of its versions' models."""
        self._json("DELETE", f"/v1/registry/{_id(name)}")

    def _rows(self, model_id: str, inputs: Any) -> Any:
        """``inputs`` as rows in the model's feature order: a DataFrame's columns picked by name."""
        if not _is_dataframe(inputs):
            return inputs
        names = self._model_features(model_id)
        if not names:  # the model knows no names: the columns are taken in their order
            return inputs.to_numpy(dtype=np.float64)
        missing = [name for name in names if name not in inputs.columns]
        if missing:
            raise ValueError(
                f"the DataFrame has no column {missing[0]!r}; the model's features are {names} "
                f"(received columns {list(inputs.columns)})"
            )
        return inputs[names].to_numpy(dtype=np.float64)

    def _model_features(self, model_id: str) -> list[str] | None:
        with self._lock:
            if model_id in self._feature_names:
                return self._feature_names[model_id]
        model = self.get_model(model_id)
        names = model["input"].get("feature_names")
        if model["id"] == model_id:  # an id names one model for good; another reference may move
            with self._lock:
                self._feature_names[model_id] = names
        return names

    # HTTP ------------------------------------------------------------------------------
    # Every call goes through _send: one place for the body encoding, the retries and the errors,
    # so that a new route is a one-line method.

    def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
        idempotent: bool = False,
    ) -> Any:
        """The parsed JSON of a 2xx answer (None for an empty one); raises the NnserveError for any other.
        ``idempotent``: send an ``Idempotency-Key`` (one per call, the same on each retry)."""
        response = self._send(method, path, body, params=params, form=form, files=files, idempotent=idempotent)
        return response.json() if response.content else None

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
        idempotent: bool = False,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        content = None
        if body is not None:
            content = json.dumps(body, default=_plain, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        if idempotent:
            headers[IDEMPOTENCY_HEADER] = str(uuid.uuid4())
        repeatable = method in IDEMPOTENT_METHODS or idempotent
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method, path, content=content, data=form, files=files, params=params, headers=headers
                )
            except httpx.TransportError as error:
                # A connection that was never made carried no request: any call may be sent again.
                unsent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))
                if attempt < self.retries and (repeatable or unsent):
                    attempt += 1
                    time.sleep(_backoff(attempt))
                    continue
                raise ServiceUnavailable(None, {"detail": f"no answer from {self.url}: {error}"}) from None
            if response.is_success:
                return response
            wait = self._retry_wait(response, attempt, repeatable, idempotent)
            if wait is None:
                raise _error(response)
            attempt += 1
            time.sleep(wait)

    def _retry_wait(self, response: httpx.Response, attempt: int, repeatable: bool, keyed: bool) -> float | None:
        """Seconds to wait before sending ``response``'s request again, or None not to."""
        if attempt >= self.retries or not repeatable:
            return None
        advised = _retry_after(response)
        # A 409 with Retry-After on a keyed POST: the same key's first request is still being processed.
        if response.status_code in RETRIED_STATUSES or (keyed and response.status_code == 409 and advised is not None):
            wait = _backoff(attempt + 1) if advised is None else advised
            return wait if wait <= self.max_retry_wait else None
        return None

    def _pages(self, path: str, page_size: int) -> Iterator[dict]:
        """The items of every page of the list at ``path``, following each page's ``next``. Only the
        query of ``next`` is used, so a client whose URL has a path prefix keeps it."""
        params: dict[str, Any] = {"offset": 0, "limit": page_size}
        while True:
            page = self._json("GET", path, params=params)
            yield from page["items"]
            following = page.get("next")
            if not following or not page["items"]:
                return
            params = dict(parse_qsl(urlsplit(following).query))


def _tls(verify: Any, cert: Any, trust_env: bool) -> ssl.SSLContext | bool:
    """httpx's ``verify`` from requests-style options: ``verify`` True, False, an SSLContext, or the
    path of a CA bundle file or directory; ``cert`` a client certificate file (key included), or
    ``(certificate, key)`` or ``(certificate, key, password)``. (httpx itself now takes only a context.)"""
    if cert is None and (isinstance(verify, bool | ssl.SSLContext)):
        return verify
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        import certifi  # httpx's own default bundle; it depends on certifi

        context = ssl.create_default_context(cafile=(trust_env and os.environ.get("SSL_CERT_FILE")) or certifi.where())
    elif Path(verify).is_dir():
        context = ssl.create_default_context(capath=verify)
    else:
        context = ssl.create_default_context(cafile=verify)
    if cert is not None:
        certfile, keyfile, password = (cert, None, None) if isinstance(cert, str | os.PathLike) else (*cert, None)[:3]
        context.load_cert_chain(certfile, keyfile, password)
    return context


def _error(response: httpx.Response) -> NnserveError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):  # a proxy's HTML page, say
        problem = {"status": response.status_code, "title": response.reason_phrase, "detail": response.text[:500]}
    problem.setdefault("request_id", response.headers.get("X-Request-ID"))
    error = ERRORS.get(response.status_code, NnserveError)(response.status_code, problem)
    if isinstance(error, RateLimited):
        error.retry_after = _retry_after(response)
    return error


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date (RFC 9110, 10.2.3); None without one."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...) when the server gave no Retry-After: 0.5, 1, 2, ... 8."""
    return min(8.0, 0.5 * 2 ** (attempt - 1))


def _id(value: str) -> str:
    return quote(str(value), safe="")


def _plain(value: Any) -> Any:
    """NumPy arrays and scalars as JSON (json.dumps calls this for what it does not know)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if _is_dataframe(value):
        return value.to_numpy().tolist()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def _is_dataframe(value: Any) -> bool:
    """A pandas DataFrame, recognised without importing pandas (an optional dependency)."""
    return type(value).__module__.startswith("pandas") and hasattr(value, "columns") and hasattr(value, "to_numpy")


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """``(event, data)`` for each Server-Sent Event in ``lines``, its data parsed as JSON."""
    event, data = "message", list[str]()
    for line in lines:
        line = line.rstrip("\r\n")
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
    """A job's progress as a tqdm bar on a terminal: epochs done, elapsed time, rate and ETA, then the
    latest loss and metrics as far as the terminal's width allows. It redraws one line, never wider
    than the terminal (so it cannot wrap); on anything but a terminal (a log, a pipe) it draws nothing."""

    METER = 60
    """Columns kept for tqdm's own part (percentage, bar, n/total, times and rate) before any figure."""

    def __init__(self, stream: TextIO, epochs: int, initial: int = 0):
        from tqdm import tqdm  # only drawing needs it

        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        # initial: a job attached to under way; its rate and ETA count from there.
        self._bar = tqdm(
            total=epochs,
            initial=initial,
            unit="epoch",
            file=stream,
            disable=not self.tty,
            dynamic_ncols=True,
            leave=True,
            mininterval=0.1,
        )

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
        bar = self._bar
        if bar.disable:
            return
        width = bar.dynamic_ncols(bar.fp)[0] if callable(bar.dynamic_ncols) else bar.ncols
        figures = [f"{k}={v:.4g}" for k, v in values.items() if k != "learning_rate"]
        bar.set_postfix_str(_fit(figures, (width or 80) - self.METER), refresh=False)
        if epoch > bar.n:
            bar.update(epoch - bar.n)
        else:
            bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _fit(figures: list[str], width: int) -> str:
    """As many of ``figures`` as fit in ``width`` columns, joined by commas."""
    shown: list[str] = []
    for figure in figures:
        if len(", ".join([*shown, figure])) > width:
            break
        shown.append(figure)
    return ", ".join(shown)
