"""/v1/datasets: upload (JSON, CSV or a binary .npz), list, show, delete."""

from __future__ import annotations

from flask import Blueprint, request
from pydantic import TypeAdapter, ValidationError

from .. import csv_upload, data, json_upload, npz_upload, store
from ..context import services, tenant
from ..errors import Conflict, Invalid, NotFound, UnsupportedMediaType
from ..idempotency import IDEMPOTENCY_HEADER, idempotent, remember
from ..openapi import doc
from ..parsing import body_stream, is_json, page
from ..schemas import DatasetCreate, DatasetList, DatasetPublic, Name
from . import listing, respond

bp = Blueprint("datasets", __name__)
FEATURE_NAMES = TypeAdapter(list[Name])

CSV_FORM = {
    "file": {
        "type": "string",
        "format": "binary",
        "description": "CSV with a header row, or an .npz (numpy.savez) holding arrays x (samples of any shape) and y",
    },
    "target": {"type": "string", "description": "CSV: the target column (default: the last)"},
    "target_kind": {"type": "string", "enum": ["categorical", "continuous"]},
    "name": {"type": "string"},
    "shape": {
        "type": "string",
        "description": "The shape of one sample as a JSON array, like [8, 8, 1]: the feature columns (CSV) or "
        "flat rows of x (npz) are its values, row-major",
    },
    "feature_names": {"type": "string", "description": "npz: a JSON array of a name for each value of a sample"},
}


def get_dataset(dataset_id: str) -> dict:
    """The dataset's metadata if this tenant may see it (built-ins always); raises NotFound."""
    meta = store.get_dataset(services().redis, dataset_id, tenant())
    if meta is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return meta


@bp.post("/v1/datasets")
@doc(
    body=DatasetCreate,
    forms=CSV_FORM,
    responses={201: DatasetPublic},
    errors=(400, 409, 413, 415, 422),
    headers=IDEMPOTENCY_HEADER,
)
@idempotent
def create():
    """Upload a dataset: JSON (rows, or samples nested in lists), or a CSV or .npz file as multipart/form-data."""
    settings = services().settings
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise Invalid("file", "field required: a CSV file with a header row, or an .npz", "missing")
        form = request.form
        name = form.get("name") or (upload.filename or "dataset").rsplit(".", 1)[0]
        shape = data.parse_shape_text(form.get("shape"))
        if npz_upload.is_npz(upload.stream):
            names = _feature_names(form.get("feature_names"))
            dataset = npz_upload.read(upload.stream, form.get("target_kind") or None, name, names, shape, settings)
        else:
            dataset = csv_upload.read(
                upload.stream, form.get("target") or None, form.get("target_kind") or None, name, settings, shape
            )
    elif is_json():
        dataset = json_upload.read(body_stream(), settings)
    else:
        raise UnsupportedMediaType(
            f"send application/json or multipart/form-data; received {request.mimetype or 'nothing'!r}"
        )
    meta = dataset.meta
    meta.update(id=store.new_id("ds"), tenant=tenant(), created_at=store.now())
    meta["name"] = meta["name"] or meta["id"]
    response = respond(DatasetPublic.model_validate(meta), 201, {"Location": f"/v1/datasets/{meta['id']}"})
    store.save_dataset(services().redis, meta, dataset.features, dataset.targets, also=remember(response))
    return response


def _feature_names(text: str | None) -> list[str] | None:
    """The ``feature_names`` form field: a JSON array of names."""
    if not text:
        return None
    try:
        return FEATURE_NAMES.validate_json(text)
    except ValidationError:
        raise Invalid(
            "feature_names", 'must be a JSON array of names of 1 to 200 characters, like ["a", "b"]'
        ) from None


@bp.get("/v1/datasets")
@doc(
    responses={200: DatasetList},
    errors=(422,),
    query={"offset": "Skip this many", "limit": "At most this many (1-1000)"},
)
def index():
    """List datasets: the built-ins, then yours newest first."""
    offset, limit = page()
    r = services().redis
    items = store.list_datasets(r, tenant(), offset, limit)
    return listing(DatasetList, items, store.count(r, tenant(), store.DATASETS), offset, limit)


@bp.get("/v1/datasets/<dataset_id>")
@doc(responses={200: DatasetPublic}, errors=(404,))
def show(dataset_id: str):
    """Show a dataset's metadata."""
    return respond(DatasetPublic.model_validate(get_dataset(dataset_id)))


@bp.delete("/v1/datasets/<dataset_id>")
@doc(responses={204: None}, errors=(404, 409))
def delete(dataset_id: str):
    """Delete a dataset (built-ins are read-only)."""
    meta = get_dataset(dataset_id)
    if meta["builtin"]:
        raise Conflict(f"{dataset_id!r} is a built-in dataset and cannot be deleted")
    store.delete_dataset(services().redis, meta)
    return respond(None, 204)
