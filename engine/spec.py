"""Spec in, model out: ``build`` turns the JSON-able spec the API accepts into a model.

A model spec is ``{"layers": [...], "input_scaling": "standard" | "none", "dtype":
"float32" | "float64"}``; the training spec is the ``training`` object of a job (loss,
optimizer, epochs, ...). Every mistake raises one exception type, SpecError, whose
message names the field: ``layers[2].activation: unknown 'relu6'; expected one of ...``.
``model.spec()`` and ``model.training.config()`` give the specs back with every default
filled in, and building from them builds the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import layers as layer_registry
from .config import check_choice, check_keys, construct
from .errors import SpecError
from .model import TASKS, Model
from .training import TrainingConfig, check_split, check_training

INPUT_SCALINGS = ("standard", "none")
DTYPES = ("float32", "float64")


def build(spec: dict[str, Any], training: dict[str, Any] | None = None) -> Model:
    """A model (weights not yet created: that happens on the first ``fit``) from its spec and training config."""
    check_keys(spec, ["layers", "input_scaling", "dtype"], required=["layers"])
    layer_specs = spec["layers"]
    if not isinstance(layer_specs, list) or not layer_specs:
        raise SpecError("layers", "must be a non-empty list of layers")
    built = []
    for i, layer_spec in enumerate(layer_specs):
        try:
            built.append(layer_registry.get(layer_spec))
        except SpecError as error:
            raise error.within("layers", i) from None
    model = Model(
        built,
        input_scaling=check_choice("input_scaling", spec.get("input_scaling", "standard"), INPUT_SCALINGS),
        dtype=check_choice("dtype", spec.get("dtype", "float32"), DTYPES),
    )
    if training is not None and not isinstance(training, dict):
        raise SpecError("training", f"must be an object; received {training!r}")
    try:
        model.training = construct(TrainingConfig, training or {})
    except SpecError as error:
        raise error.within("training") from None
    return model


def validate(
    spec: dict[str, Any],
    training: dict[str, Any] | None,
    *,
    n_features: int,
    task: str,
    width: int,
    rows: int | None = None,
    class_counts: Sequence[int] | None = None,
) -> Model:
    """Check a spec against the data it will train on, without training: everything ``fit`` would reject
    before its first epoch. ``width`` is the number of classes (classification) or target columns.
    Given the data's ``rows`` (and, for classification, ``class_counts``, the rows of each class, by
    which the validation split is stratified), the split must leave rows to train and to validate on.

    Returns the (unbuilt) model, whose ``spec()``, ``training.config()`` and
    ``parameter_count(n_features)`` give the normalized specs and its size. Raises SpecError.
    """
    check_choice("task", task, TASKS)
    model = build(spec, training)
    model.n_features = n_features
    model.task = task
    fraction = model.training.validation_split
    check_training(model, task, width, has_validation=fraction > 0)
    stratified = task == "classification"  # as Trainer splits
    if rows is not None and fraction > 0 and (class_counts is not None or not stratified):
        check_split(rows, fraction, class_counts if stratified else None)
    model.n_features = None
    return model
