"""MLflow's scoring protocol on ``/v1/models/{ref}/invocations``; the format is ``dialects.mlflow``,
the prediction ``/v1``'s own (``models.predict_in``)."""

from __future__ import annotations

from flask import Blueprint

from ..dialects import mlflow
from ..openapi import doc
from .models import predict_in

bp = Blueprint("mlflow", __name__)


@bp.post("/v1/models/<ref>/invocations")
@doc(
    body=mlflow.MLflowRequest,
    responses={200: mlflow.MLflowResponse},
    errors=(400, 404, 409, 413, 415, 422, 429),
)
def invocations(ref: str):
    """Predict as an MLflow model server does: a DataFrame (split or records), instances, inputs or CSV in; labels or values out."""
    return predict_in(mlflow, ref)
