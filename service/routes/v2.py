"""/v2: the Open Inference Protocol (KServe v2, REST) for every trained model, so Triton and KServe
clients work unchanged. The wire format is ``service.oip``; models, tenants and predictions are
``/v1``'s own (``routes.models``). Errors are ``{"error": "..."}`` (``errors.py``)."""

from __future__ import annotations

import contextlib
import time

import orjson
import redis
from flask import Blueprint, Response, request
from pydantic import ValidationError

from nnserve import __version__, engine

from .. import oip, store
from ..context import services, tenant
from ..errors import BadRequest, NotFound
from ..lifecycle import ModelStatus
from ..openapi import doc
from . import respond
from .models import ROUTING_DOC, get_model, serve, trained, version_headers

bp = Blueprint("v2", __name__)

ERRORS = (400, 404, 409, 413, 415, 429)
UNCOUNTED: tuple[type[Exception], ...] = (*store.TRANSIENT_ERRORS, redis.exceptions.OutOfMemoryError)
"""Redis errors that lose an inference's statistics but not its answer."""


def check_version(model_name: str, version: str | None) -> None:
    """Raises NotFound for a version other than the one every model id has."""
    if version is not None and version != oip.VERSION:
        raise NotFound(f"model {model_name!r} has no version {version!r}; its only version is {oip.VERSION!r}")


def reference(model_name: str, version: str | None) -> str:
    """The model reference a /v2 path names: a registered name's ``versions/N`` is its version N (``NAME@N``);
    a model id (or a reference with ``@``) has only the version ``1``, checked once it is found (``check_version``)."""
    if version is None or model_name.startswith("mdl_") or "@" in model_name:
        return model_name
    if not (version.isascii() and version.isdigit()):
        raise NotFound(f"model {model_name!r} has no version {version!r}")
    return f"{model_name}@{int(version)}"


@bp.get("/v2/health/live")
@doc(responses={200: None})
def live():
    """Server live: the process answers."""
    return respond(None)


@bp.get("/v2/health/ready")
@doc(responses={200: None})
def ready():
    """Server ready: 200 when Redis answers, else 503."""
    services().redis.ping()
    return respond(None)


@bp.get("/v2")
@doc(responses={200: oip.ServerMetadata})
def server_metadata():
    """Server metadata: name, version and the protocol extensions supported."""
    return respond(oip.ServerMetadata(name="nnserve", version=__version__, extensions=oip.EXTENSIONS))


@bp.get("/v2/models/<model_name>")
@bp.get("/v2/models/<model_name>/versions/<version>")
@doc(responses={200: oip.ModelMetadata}, errors=(404,))
def model_metadata(model_name: str, version: str | None = None):
    """Model metadata: the input and output tensors' names, datatypes and shapes; a registered name's
    metadata is named by it and lists every version it has."""
    record = _record(model_name, version)
    metadata = oip.model_metadata(record)
    name, _ = oip_name(record)
    if name != record["id"]:
        versions = store.registry_state(services().redis, tenant(), name).versions
        metadata = metadata.model_copy(update={"name": name, "versions": [str(v) for v in sorted(versions)]})
    return respond(metadata)


@bp.get("/v2/models/<model_name>/ready")
@bp.get("/v2/models/<model_name>/versions/<version>/ready")
@doc(responses={200: None}, errors=(404, 409))
def model_ready(model_name: str, version: str | None = None):
    """Model ready: 200 once the model is trained (and now loaded), 409 before, 404 for no such model."""
    ref = reference(model_name, version)
    trained(ref)
    if ref == model_name:
        check_version(model_name, version)
    return respond(None)


@bp.post("/v2/models/<model_name>/infer")
@bp.post("/v2/models/<model_name>/versions/<version>/infer")
@doc(body=oip.InferenceRequest, responses={200: oip.InferenceResponse}, errors=ERRORS, headers=ROUTING_DOC)
def infer(model_name: str, version: str | None = None):
    """Inference: the `input` tensor in, probabilities and labels (or values) out; JSON or binary tensors.
    A registered name's `versions/N` is its version N; the `X-Model-Version` header says which answered."""
    ref = reference(model_name, version)
    resolved, entry = serve(ref)
    if ref == model_name:
        check_version(model_name, version)
    started = time.perf_counter_ns()
    try:
        inference, binary = oip.read_request(request.get_data(), request.headers)
        x = oip.input_samples(inference, binary)
        try:
            prediction = services().monitoring.predict(entry, x)
        except engine.SpecError as error:
            raise BadRequest(f"{oip.INPUT}: {error.message}") from None
        body, headers = oip.encode_response(model_name, inference, prediction, entry.classes)
    except BadRequest:
        _count(resolved.model_id, False, started, 0)
        raise
    _count(resolved.model_id, True, started, len(x))
    services().shadows.submit(resolved, entry.tenant, x, prediction)
    return Response(body, headers={**headers, **version_headers(entry)})


def _count(model_id: str, ok: bool, started: int, rows: int) -> None:
    """Count the inference in the model's statistics; a Redis that cannot count loses the figure, not the answer."""
    with contextlib.suppress(*UNCOUNTED):
        store.count_inference(services().redis, model_id, ok, time.perf_counter_ns() - started, rows)


@bp.get("/v2/models/<model_name>/config")
@bp.get("/v2/models/<model_name>/versions/<version>/config")
@doc(responses={200: "application/json; Triton's model configuration"}, errors=(404,))
def model_config(model_name: str, version: str | None = None):
    """Model configuration: Triton's JSON form (name, platform, batching, inputs and outputs)."""
    return respond(oip.model_config(_record(model_name, version)))


def _record(model_name: str, version: str | None) -> dict:
    """The model record a /v2 path names (a registered name's ``versions/N`` is its version N)."""
    ref = reference(model_name, version)
    record = get_model(ref)
    if ref == model_name:
        check_version(model_name, version)
    return record


def oip_name(record: dict) -> tuple[str, str]:
    """How the protocol names a model: a registered version as its name and version number, any other
    model as its id and the only version ``1``."""
    if record.get("name") and record.get("version") is not None:
        return record["name"], str(record["version"])
    return record["id"], oip.VERSION


@bp.post("/v2/repository/index")
@doc(
    body=oip.RepositoryIndexRequest,
    responses={200: "application/json; the models: name, version, state"},
    errors=(400,),
)
def repository_index():
    """Repository index: every model of yours and version, READY or UNAVAILABLE (or only the READY ones)."""
    raw = request.get_data().strip()
    try:
        index = oip.RepositoryIndexRequest.model_validate_json(raw or b"{}")
    except ValidationError as error:
        raise BadRequest(f"the repository index request: {error.errors()[0]['msg']}") from None
    ready_only = index.ready
    entries = []
    for record in _all_models():
        ready = record["status"] == ModelStatus.ready
        if ready or not ready_only:
            name, number = oip_name(record)
            entry = {"name": name, "version": number, "state": "READY" if ready else "UNAVAILABLE"}
            if not ready:
                entry["reason"] = f"its job is {record['status']}"
            entries.append(entry)
    return Response(orjson.dumps(entries), mimetype="application/json")


@bp.get("/v2/models/stats")
@bp.get("/v2/models/<model_name>/stats")
@bp.get("/v2/models/<model_name>/versions/<version>/stats")
@doc(responses={200: "application/json; Triton's inference statistics"}, errors=(404,))
def statistics(model_name: str | None = None, version: str | None = None):
    """Inference statistics: counts and cumulative times of /v2 inferences per model, over every API process."""
    records = _all_models() if model_name is None else [_record(model_name, version)]
    figures = store.inference_statistics(services().redis, [record["id"] for record in records])
    return respond({"model_stats": [_model_stats(*oip_name(record), f) for record, f in zip(records, figures)]})


def _model_stats(name: str, version: str, figures: dict[str, int]) -> dict:
    """Triton's ``ModelStatistics``: a request's whole time counts as its compute (no queue, no batching)."""
    success = {"count": figures["success_count"], "ns": figures["success_ns"]}
    zero = {"count": 0, "ns": 0}
    return {
        "name": name,
        "version": version,
        "last_inference": figures["last_inference"],
        "inference_count": figures["inference_count"],
        "execution_count": figures["success_count"],
        "inference_stats": {
            "success": success,
            "fail": {"count": figures["fail_count"], "ns": figures["fail_ns"]},
            "queue": zero,
            "compute_input": zero,
            "compute_infer": success,
            "compute_output": zero,
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [],
    }


def _all_models() -> list[dict]:
    """Every model of this tenant, oldest first, read a page at a time."""
    r, records, offset = services().redis, [], 0
    while page := store.list_models(r, tenant(), offset, 1000):
        records.extend(page)
        offset += len(page)
    return records[::-1]
