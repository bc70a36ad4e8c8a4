"""TF Serving's REST predict API (also KServe's v1 protocol), for clients that post ``instances``.

``POST /v1/models/{name}[/versions/{n}|/labels/{alias}]:predict`` with, per TF Serving's REST API
documentation (``tensorflow/serving``'s ``g3doc/api/rest.md``):

- the row format, ``{"instances": [[…], …]}`` or one object per row, ``{"instances": [{"feature": value, …}, …]}``,
  answered ``{"predictions": [row, …]}``;
- the columnar format, ``{"inputs": [[…], …]}`` or ``{"inputs": {"feature": [value per row], …}}``,
  answered ``{"outputs": [row, …]}`` (a single output is the list itself, not an object of outputs).

Each predicted row is the model's output row: a classifier's probabilities (columns in the order of its
classes), a regressor's values (``[v]`` for one target, as a Keras ``Dense(1)`` served by TF Serving
gives). For a model of one feature, instances may be plain numbers, as in TF Serving's ``half_plus_two``
example (``{"instances": [1.0, 2.0, 5.0]}``), and a one-target regressor then answers plain numbers
too. The model's single input may also be named ``input`` (its name on ``/v2``):
``{"instances": [{"input": [...]}]}``. ``signature_name``, when sent, must be ``serving_default``.
Errors are ``{"error": "..."}`` with their 4xx status (``errors.problem``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ..cache import Entry
from ..errors import BadRequest, Invalid
from . import features
from .common import json_body, rows_or_columns, rows_or_records

SIGNATURE = "serving_default"
INPUT = "input"
"""The model's one input tensor, as ``/v2`` names it; TF Serving clients may address it by name."""

Form = tuple[Literal["predictions", "outputs"], bool]
"""The answer's key, and whether its rows are plain numbers (scalar instances of a one-feature model)."""


class TFServingRequest(BaseModel):
    """The row format (``instances``) or the columnar one (``inputs``), one of them."""

    signature_name: str | None = Field(None, description=f"{SIGNATURE!r}, the only signature, when sent.")
    instances: list[float | list[float] | dict[str, float | list[float]]] | None = Field(
        None,
        description="Rows of numbers, or one object per row mapping feature names to values "
        "(or plain numbers, for a model of one feature).",
    )
    inputs: list[list[float]] | dict[str, list[float] | list[list[float]]] | None = Field(
        None, description="Rows of numbers, or an object mapping each feature name to its values, one per row."
    )


class TFServingResponse(BaseModel):
    predictions: list[list[float]] | None = Field(None, description="The row format's answer: an output row per row.")
    outputs: list[list[float]] | None = Field(None, description="The columnar format's answer.")


class TFServingError(BaseModel):
    """TF Serving's error form, used by every error on its routes."""

    error: str


def read(body: bytes, mimetype: str, entry: Entry) -> tuple[np.ndarray, Form]:
    """The rows of a TF Serving predict body and the form to answer in. Any content type is read as
    JSON, as TF Serving does (``curl -d`` sends a form's)."""
    data = json_body(body)
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object: {"instances": [...]} or {"inputs": ...}')
    formats = [name for name in ("instances", "inputs") if name in data]
    extra = sorted(set(data) - {"instances", "inputs", "signature_name"})
    if extra:
        raise Invalid(extra[0], "unknown field; send 'instances' (row format) or 'inputs' (columnar format)")
    if len(formats) != 1:
        detail = "send one of them, not both" if formats else "field required"
        raise Invalid("instances", f"{detail}: 'instances' (row format) or 'inputs' (columnar format)", "missing")
    signature = data.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise Invalid("signature_name", f"the model's only signature is {SIGNATURE!r}; received {signature!r}")
    names = entry.feature_names
    if formats[0] == "instances":
        instances = data["instances"]
        if isinstance(instances, list) and instances and isinstance(instances[0], list):  # rows: the usual case
            return features.rows_array(instances, "instances"), ("predictions", False)
        if _named_input(instances):
            return features.rows_array([instance[INPUT] for instance in instances], "instances"), ("predictions", False)
        if _scalars(instances) and entry.model.n_features == 1:
            return features.rows_array([[value] for value in instances], "instances"), ("predictions", True)
        return rows_or_records(instances, names, "instances"), ("predictions", False)
    inputs = data["inputs"]
    if isinstance(inputs, dict) and inputs.keys() == {INPUT} and INPUT not in (names or ()):
        inputs = inputs[INPUT]
    if _scalars(inputs) and entry.model.n_features == 1:
        return features.rows_array([[value] for value in inputs], "inputs"), ("outputs", True)
    return rows_or_columns(inputs, names, "inputs"), ("outputs", False)


def _scalars(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(value, int | float) for value in values)


def _named_input(instances: Any) -> bool:
    """Whether each instance is ``{"input": [row]}``: the model's one input tensor by name."""
    return (
        isinstance(instances, list)
        and bool(instances)
        and all(isinstance(instance, dict) and instance.keys() == {INPUT} for instance in instances)
        and all(isinstance(instance[INPUT], list) for instance in instances)
    )


def write(entry: Entry, prediction: dict[str, Any], form: Form) -> dict[str, Any]:
    """``{"predictions": rows}`` or ``{"outputs": rows}``: probabilities, or values as rows (plain values
    for plain-number instances of a one-target regressor)."""
    key, flat = form
    if "probabilities" in prediction:
        return {key: prediction["probabilities"]}
    values = np.asarray(prediction["predictions"])
    return {key: values if flat and values.ndim == 1 else values.reshape(len(values), -1)}
