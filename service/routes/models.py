"""/v1/models: trained models, their predictions, evaluation and weights."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, request

from nnserve import engine

from .. import lifecycle, model_import, onnx_export, registry, shapes, store
from ..cache import Entry, entry_from
from ..context import services, tenant
from ..dialects import Dialect, v1
from ..errors import Conflict, Invalid, NotFound, UnsupportedMediaType
from ..lifecycle import ModelStatus
from ..openapi import doc
from ..parsing import page, parse
from ..schemas import (
    EvaluateRequest,
    EvaluateResponse,
    Evaluation,
    ModelList,
    ModelPublic,
    PredictRequest,
    PredictResponse,
)
from . import listing, respond

bp = Blueprint("models", __name__)

ROUTING_HEADER = "X-Routing-Key"
"""Who a request is for, when an alias splits traffic: one key always gets one version."""
VERSION_HEADER = "X-Model-Version"
"""The version of a registered model that answered, in every dialect."""
ROUTING_DOC = {
    ROUTING_HEADER: "Who the request is for, when the alias it goes through splits traffic between versions: "
    "one key always gets one version (default: the API key, else the client's address)"
}


def resolve(ref: str) -> registry.Resolved:
    """The model a reference (``mdl_…``, ``NAME``, ``NAME@ALIAS``, ``NAME@N``) stands for, for this caller
    (a split alias picks by its routing key); raises NotFound naming what was not found."""
    ctx = services()
    try:
        return ctx.references.resolve(ctx.redis, tenant(), registry.parse_ref(ref), routing_key())
    except registry.Unknown as unknown:
        raise NotFound(str(unknown)) from None


def routing_key() -> str:
    """Who is asking, for a split alias: ``X-Routing-Key``, else the API key, else the client's address."""
    return request.headers.get(ROUTING_HEADER) or request.headers.get("Authorization") or request.remote_addr or ""


def get_model(ref: str) -> dict:
    """The model record if this tenant owns it; raises NotFound."""
    model_id = resolve(ref).model_id
    model = store.get_model(services().redis, model_id, tenant())
    if model is None:
        raise NotFound(f"no model {model_id!r}")
    return model


def serve(ref: str) -> tuple[registry.Resolved, Entry]:
    """The model answering ``ref`` for this request, loaded, from this process's cache when it is there;
    raises NotFound, or Conflict when it has no weights (its job has not succeeded)."""
    resolved = resolve(ref)
    model_id = resolved.model_id
    entry = services().cache.get(model_id, lambda: _load(model_id))
    if entry.tenant != tenant():
        raise NotFound(f"no model {model_id!r}")
    return resolved, entry


def trained(ref: str) -> Entry:
    return serve(ref)[1]


def version_headers(entry: Entry) -> dict[str, str]:
    """The header saying which version answered (registered models only)."""
    return {VERSION_HEADER: str(entry.version)} if entry.version is not None else {}


def _load(model_id: str) -> Entry:
    record = store.get_model(services().redis, model_id, tenant())
    if record is None:
        raise NotFound(f"no model {model_id!r}")
    status = record["status"]
    blob = store.load_weights(services().redis, model_id) if status == ModelStatus.ready else None
    if blob is None:
        state = "is not trained yet" if status == ModelStatus.pending else f"has no weights: its job {status}"
        raise Conflict(f"model {model_id!r} {state} (job {record['job_id']})")
    return entry_from(record, blob)


@bp.get("/v1/models")
@doc(
    responses={200: ModelList}, errors=(422,), query={"offset": "Skip this many", "limit": "At most this many (1-1000)"}
)
def index():
    """List your models, newest first."""
    offset, limit = page()
    r = services().redis
    items = store.list_models(r, tenant(), offset, limit)
    return listing(ModelList, items, store.count(r, tenant(), store.MODELS), offset, limit)


IMPORT_FORM = {
    "file": {"type": "string", "format": "binary", "description": "A Keras 3 .keras archive, or an nnserve .npz"},
    "model": {"type": "string", "description": "Instead of file: a Keras to_json() document"},
    "weights": {
        "type": "string",
        "format": "binary",
        "description": "With model: a .weights.h5, or an .npz in get_weights() order",
    },
    "name": {
        "type": "string",
        "description": "A registered model name: the model becomes its next version, and current",
    },
    "classes": {"type": "string", "description": "The class labels in output order, as a JSON array"},
    "feature_names": {"type": "string", "description": "The input columns' names, as a JSON array"},
    "input_scaling": {"type": "string", "description": "none (the default for Keras models)"},
}


@bp.post("/v1/models")
@doc(forms=IMPORT_FORM, required_forms=(), responses={201: ModelPublic}, errors=(400, 413, 415, 422))
def create():
    """Import a model trained elsewhere (Keras .keras, or JSON and weights; an nnserve .npz): ready at once."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            f"send the model as multipart/form-data; received {request.mimetype or 'no content type'!r}"
        )
    settings = services().settings
    form = request.form
    name = form.get("name") or None
    problem = registry.name_problem(name) if name is not None else None
    if problem is not None:
        raise Invalid("name", problem)
    document = form.get("model")
    if document is None and "model" in request.files:
        document = request.files["model"].read(settings.max_body_bytes).decode("utf-8", "replace")
    parts = {
        name: request.files[name].read(settings.max_body_bytes) for name in ("file", "weights") if name in request.files
    }
    imported = model_import.from_upload(
        parts.get("file"),
        document,
        parts.get("weights"),
        _json_list(form, "classes"),
        form.get("input_scaling"),
        settings.max_body_bytes,
        settings.max_parameters,
    )
    model = imported.model
    feature_names = _json_list(form, "feature_names") or imported.feature_names
    if feature_names is not None and (
        len(feature_names) != model.n_features or not all(isinstance(n, str) for n in feature_names)
    ):
        raise Invalid("feature_names", f"must be {model.n_features} names (strings), one per input")
    created_at = store.now()
    record = {
        "id": store.new_id("mdl"),
        "tenant": tenant(),
        "name": name,
        "job_id": None,
        "dataset_id": None,
        "source": imported.source,
        "model": model.spec(),
        "training": model.training.config(),
        "metrics": {},
        "input": {
            "n_features": model.n_features,
            "sample_shape": list(model.input_shape),
            "feature_names": feature_names,
        },
        "output": {"kind": model.task, "classes": model.classes, "n_outputs": model.n_outputs},
        "n_parameters": model.parameter_count(model.input_shape),
        "created_at": created_at,
        "trained_at": created_at,
    }
    r = services().redis
    record = lifecycle.import_model(r, record, imported.blob)
    if name is not None:
        # A name registers the model as its next version, and makes it current as a job's model does.
        store.register_model(r, tenant(), name, record["id"], "promote", None, by="api")
        record = get_model(record["id"])
    return respond(ModelPublic.model_validate(record), 201, headers={"Location": f"/v1/models/{record['id']}"})


def _json_list(form, field: str) -> list | None:
    text = form.get(field)
    if text is None or text == "":
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Invalid(field, 'must be a JSON array, written as text: ["a", "b"]') from None
    if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
        raise Invalid(field, "must be a non-empty JSON array of distinct values")
    return value


@bp.get("/v1/models/<model_id>")
@doc(responses={200: ModelPublic}, errors=(404,))
def show(model_id: str):
    """Show a model: specs, final metrics, input and output description."""
    return respond(ModelPublic.model_validate(get_model(model_id)))


@bp.post("/v1/models/<model_id>/predict")
@doc(
    body=PredictRequest,
    responses={200: PredictResponse},
    errors=(400, 404, 409, 413, 415, 422, 429),
    headers=ROUTING_DOC,
)
def predict(model_id: str):
    """Predict: class labels (and probabilities) or values for each row, unnamed or named."""
    return predict_in(v1, model_id)


def predict_in(dialect: Dialect, ref: str) -> Response:
    """The request's rows read as ``dialect`` reads them, predicted by the model ``ref`` resolves to
    (counted per model; a shadow, if the alias has one, run in the background) and answered in the
    dialect's form with the version that answered in a header: the one way every predict route (``/v1``,
    TF Serving, MLflow) works, and what the predict fast path does for a cache hit."""
    resolved, entry = serve(ref)
    x, form = dialect.read(request.get_data(), request.mimetype, entry)
    try:
        prediction = services().monitoring.predict(entry, x)
    except engine.SpecError as error:
        raise Invalid("inputs", error.message) from None
    services().shadows.submit(resolved, entry.tenant, x, prediction)
    return respond(dialect.write(entry, prediction, form), headers=version_headers(entry))


@bp.post("/v1/models/<model_id>/evaluate")
@doc(body=EvaluateRequest, responses={200: EvaluateResponse}, errors=(400, 404, 409, 415, 422))
def evaluate(model_id: str):
    """Evaluate: the model's loss, metrics and evaluation report on a dataset."""
    body = parse(EvaluateRequest)
    entry = trained(model_id)
    r = services().redis
    dataset = store.get_dataset(r, body.dataset, tenant())
    arrays = store.load_dataset(r, body.dataset) if dataset is not None else None
    if dataset is None or arrays is None:
        raise Invalid("dataset", f"no dataset {body.dataset!r}")
    if store.task_of(dataset)[0] != entry.model.task:
        raise Invalid("dataset", f"has {dataset['target_kind']} targets; this is a {entry.model.task} model")
    try:
        features, targets = arrays
        features = shapes.fit_to_model(entry.model, features, "dataset")
        scores = entry.model.evaluate(features, targets)
        report = engine.reports.report(entry.model, features, targets)
    except engine.SpecError as error:
        raise Invalid("dataset", error.message) from None
    loss = scores.pop("loss")
    evaluation = Evaluation.model_validate({"on": f"dataset {dataset['id']}", **report})
    body = EvaluateResponse(
        dataset_id=dataset["id"], n_samples=len(arrays[0]), loss=loss, metrics=scores, evaluation=evaluation
    )
    return respond(body)


@bp.get("/v1/models/<model_id>/weights")
@doc(responses={200: "application/octet-stream; an .npz archive"}, errors=(404, 409))
def weights(model_id: str):
    """Download the weights: an .npz of arrays in Keras get_weights() order plus the architecture (and feature names) as JSON."""
    record = get_model(model_id)
    blob = store.load_weights(services().redis, record["id"]) if record["status"] == ModelStatus.ready else None
    if blob is None:
        raise Conflict(f"model {record['id']!r} has no weights: its job is {record['status']}")
    return Response(
        model_import.with_feature_names(blob, (record.get("input") or {}).get("feature_names")),
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{record["id"]}.npz"'},
    )


@bp.get("/v1/models/<model_id>/onnx")
@doc(responses={200: "application/octet-stream; an ONNX model (IR 8, opset 17)"}, errors=(404, 409))
def onnx(model_id: str):
    """Download the model as ONNX: input `input` (raw rows, scaling inside), output `probabilities` or `predictions`."""
    resolved, entry = serve(model_id)
    try:
        graph = onnx_export.export(entry.model)
    except onnx_export.NotExportable as error:
        raise Conflict(f"model {resolved.model_id!r} cannot be exported as ONNX: {error}") from None
    return Response(
        graph,
        mimetype=onnx_export.MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{resolved.model_id}.onnx"'},
    )


@bp.delete("/v1/models/<model_id>")
@doc(
    responses={204: None},
    errors=(404, 409),
    query={"force": "true: delete a registered version even when aliases point at it (they go with it)"},
)
def delete(model_id: str):
    """Delete a model (not while its job is queued or running). A registered version that a stored alias
    points at is a 409 naming the aliases, unless `?force=true`; `latest` moves to the next highest."""
    record = get_model(model_id)
    if record["status"] == ModelStatus.pending:
        raise Conflict(f"model {model_id!r} is still being trained by job {record['job_id']}; cancel the job first")
    if record.get("version") is not None:
        force = request.args.get("force", "false").lower()
        if force not in ("true", "false"):
            raise Invalid("force", f"must be true or false; received {force!r}")
        deleted, aliases = store.delete_version(services().redis, record, force == "true", "api")
        if deleted is False:
            pointing = ", ".join(aliases)
            raise Conflict(
                f"version {record['version']} of {record['name']!r} is what the aliases {pointing} point at: "
                "move them first, or delete with ?force=true (which removes them too)"
            )
        if deleted is None:  # no longer that version of its name (restored without its registry, say)
            store.delete_model(services().redis, record)
        services().references.drop(tenant(), record["name"])
    else:
        store.delete_model(services().redis, record)
    services().cache.evict(record["id"])
    return respond(None, 204)
