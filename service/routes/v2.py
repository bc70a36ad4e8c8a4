"""/v2: the Open Inference Protocol (KServe v2, REST) for every trained model, so Triton and KServe
clients work unchanged. The wire format is ``service.oip``; models, tenants and predictions are
``/v1``'s own (``routes.models``). Errors are ``{"error": "..."}`` (``errors.py``)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from nnserve import __version__, engine

from .. import oip
from ..context import services
from ..errors import BadRequest, NotFound
from ..openapi import doc
from . import respond
from .models import ROUTING_DOC, get_model, serve, trained, version_headers

bp = Blueprint("v2", __name__)

ERRORS = (400, 404, 409, 413, 415, 429)


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
    """Model metadata: the input and output tensors' names, datatypes and shapes."""
    ref = reference(model_name, version)
    record = get_model(ref)
    if ref == model_name:
        check_version(model_name, version)
    return respond(oip.model_metadata(record))


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
    inference, binary = oip.read_request(request.get_data(), request.headers)
    x = oip.input_rows(inference, binary)
    try:
        prediction = services().monitoring.predict(entry, x)
    except engine.SpecError as error:
        raise BadRequest(f"{oip.INPUT}: {error.message}") from None
    services().shadows.submit(resolved, entry.tenant, x, prediction)
    body, headers = oip.encode_response(model_name, inference, prediction)
    return Response(body, headers={**headers, **version_headers(entry)})
