"""TF Serving's REST predict API (and KServe v1's) on ``/v1/models/{name}…:predict``; the format is
``dialects.tfserving``, the prediction ``/v1``'s own (``models.predict_in``)."""

from __future__ import annotations

from flask import Blueprint

from ..dialects import tfserving
from ..openapi import doc
from .models import predict_in

bp = Blueprint("tfserving", __name__)


@bp.post("/v1/models/<name>:predict")
@bp.post("/v1/models/<name>/versions/<version>:predict")
@bp.post("/v1/models/<name>/labels/<label>:predict")
@doc(
    body=tfserving.TFServingRequest,
    responses={200: tfserving.TFServingResponse},
    errors=(400, 404, 409, 413, 422, 429),
)
def predict(name: str, version: str | None = None, label: str | None = None):
    """Predict as TF Serving and KServe v1 do: `instances` (rows) or `inputs` (columns) in, output rows out."""
    # TF Serving's version and label are the registry's NAME@N and NAME@ALIAS.
    suffix = version if version is not None else label
    return predict_in(tfserving, name if suffix is None else f"{name}@{suffix}")
