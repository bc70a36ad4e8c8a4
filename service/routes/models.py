"""/v1/models: trained models, their predictions, evaluation and weights."""

from __future__ import annotations

import numpy as np
import orjson
from flask import Blueprint, Response, request

from nnserve import engine

from .. import lifecycle, model_import, onnx_export, store
from ..cache import Entry
from ..context import services, tenant
from ..dialects import Dialect, v1
from ..errors import Conflict, Invalid, NotFound, UnsupportedMediaType
from ..lifecycle import ModelStatus
from ..openapi import doc
from ..parsing import page, parse
from ..references import resolve
from ..schemas import (
    EvaluateRequest,
    EvaluateResponse,
    ModelList,
    ModelPublic,
    PredictRequest,
    PredictResponse,
)
from . import listing, respond

bp = Blueprint("models", __name__)


def get_model(model_id: str) -> dict:
    """The model record if this tenant owns it; raises NotFound."""
    model = store.get_model(services().redis, model_id, tenant())
    if model is None:
        raise NotFound(f"no model {model_id!r}")
    return model


def trained(model_id: str) -> Entry:
    """The loaded model, from this process's cache when it is there; raises NotFound, or Conflict
    when it has no weights (its job has not succeeded)."""
    entry = services().cache.get(model_id, lambda: _load(model_id))
    if entry.tenant != tenant():
        raise NotFound(f"no model {model_id!r}")
    return entry


def _load(model_id: str) -> Entry:
    record = get_model(model_id)
    status = record["status"]
    blob = store.load_weights(services().redis, model_id) if status == ModelStatus.ready else None
    if blob is None:
        state = "is not trained yet" if status == ModelStatus.pending else f"has no weights: its job {status}"
        raise Conflict(f"model {model_id!r} {state} (job {record['job_id']})")
    model = engine.loads(blob)
    classes = np.asarray(model.classes) if model.task == "classification" else None
    names = (record.get("input") or {}).get("feature_names")
    return Entry(
        model=model,
        tenant=record["tenant"],
        classes=classes,
        name=record.get("name"),
        version=record.get("version"),
        feature_names=tuple(names) if names else None,
    )


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
    "name": {"type": "string", "description": "The model's name"},
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
        "name": form.get("name") or None,
        "job_id": None,
        "dataset_id": None,
        "source": imported.source,
        "model": model.spec(),
        "training": model.training.config(),
        "metrics": {},
        "input": {"n_features": model.n_features, "feature_names": feature_names},
        "output": {"kind": model.task, "classes": model.classes, "n_outputs": model.n_outputs},
        "n_parameters": model.parameter_count(model.n_features),
        "created_at": created_at,
        "trained_at": created_at,
    }
    record = lifecycle.import_model(services().redis, record, imported.blob)
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
@doc(body=PredictRequest, responses={200: PredictResponse}, errors=(400, 404, 409, 413, 415, 422, 429))
def predict(model_id: str):
    """Predict: class labels (and probabilities) or values for each row, unnamed or named."""
    return predict_in(v1, trained(model_id))


def predict_in(dialect: Dialect, entry: Entry) -> Response:
    """The request's rows read as ``dialect`` reads them, predicted by ``entry`` (counted per model) and
    answered in the dialect's form: the one way every predict route (``/v1``, TF Serving, MLflow) works,
    and what the predict fast path does for a cache hit."""
    x, form = dialect.read(request.get_data(), request.mimetype, entry)
    try:
        prediction = services().monitoring.predict(entry, x)
    except engine.SpecError as error:
        raise Invalid("inputs", error.message) from None
    return respond(dialect.write(entry, prediction, form))


@bp.post("/v1/models/<model_id>/evaluate")
@doc(body=EvaluateRequest, responses={200: EvaluateResponse}, errors=(400, 404, 409, 415, 422))
def evaluate(model_id: str):
    """Evaluate: the model's loss and metrics on a dataset."""
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
        scores = entry.model.evaluate(*arrays)
    except engine.SpecError as error:
        raise Invalid("dataset", error.message) from None
    loss = scores.pop("loss")
    return respond(EvaluateResponse(dataset_id=dataset["id"], n_samples=len(arrays[0]), loss=loss, metrics=scores))


@bp.get("/v1/models/<model_id>/weights")
@doc(responses={200: "application/octet-stream; an .npz archive"}, errors=(404, 409))
def weights(model_id: str):
    """Download the weights: an .npz of arrays in Keras get_weights() order plus the architecture (and feature names) as JSON."""
    record = get_model(model_id)
    blob = store.load_weights(services().redis, model_id) if record["status"] == ModelStatus.ready else None
    if blob is None:
        raise Conflict(f"model {model_id!r} has no weights: its job is {record['status']}")
    return Response(
        model_import.with_feature_names(blob, (record.get("input") or {}).get("feature_names")),
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{model_id}.npz"'},
    )


@bp.get("/v1/models/<model_id>/onnx")
@doc(responses={200: "application/octet-stream; an ONNX model (IR 8, opset 17)"}, errors=(404, 409))
def onnx(model_id: str):
    """Download the model as ONNX: input `input` (raw rows, scaling inside), output `probabilities` or `predictions`."""
    model_id = resolve(model_id)
    entry = trained(model_id)
    return Response(
        onnx_export.export(entry.model),
        mimetype=onnx_export.MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{model_id}.onnx"'},
    )


@bp.delete("/v1/models/<model_id>")
@doc(responses={204: None}, errors=(404, 409))
def delete(model_id: str):
    """Delete a model (not while its job is queued or running)."""
    record = get_model(model_id)
    if record["status"] == ModelStatus.pending:
        raise Conflict(f"model {model_id!r} is still being trained by job {record['job_id']}; cancel the job first")
    store.delete_model(services().redis, record)
    services().cache.evict(model_id)
    return respond(None, 204)
