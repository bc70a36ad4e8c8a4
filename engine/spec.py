"""Spec in, model out: ``build`` turns the JSON-able spec the API accepts into a model.

A model spec is ``{"layers": [...], "input_scaling": "standard" | "none", "dtype":
"float32" | "float64"}``; the training spec is the ``training`` object of a job (loss,
optimizer, epochs, ...). Both are declared in the classes they build (``Network``,
``TrainingConfig`` and every layer, activation, optimizer... they name; see ``params.py``).
Every mistake raises one exception type, SpecError, whose message names the field:
``layers[2].activation: unknown 'relu6'; expected one of ...``. ``model.spec()`` and
``model.training.config()`` give the specs back with every default filled in, and building
from them builds the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import SpecError
from .model import Model
from .params import check_choice
from .splitting import check_split
from .training_config import TASKS, TrainingConfig


def build(spec: Any, training: Any = None) -> Model:
    """A model (weights not yet created: that happens on the first ``fit``) from its spec and training config."""
    model = Model.from_config(spec)
    try:
        model.training = TrainingConfig.from_config({} if training is None else training)
    except SpecError as error:
        raise error.within("training") from None
    return model


def validate(
    spec: Any,
    training: Any,
    *,
    n_features: int,
    input_shape: Sequence[int] | None = None,
    task: str,
    width: int,
    rows: int | None = None,
    class_counts: Sequence[int] | None = None,
    validation_data: bool = False,
) -> Model:
    """Check a spec against the data it will train on, without training: everything ``fit`` would reject
    before its first epoch. ``width`` is the number of classes (classification) or target columns.
    Given the data's ``rows`` (and, for classification, ``class_counts``, the rows of each class, by
    which the validation split is stratified), the split must leave rows to train and to validate on.
    ``validation_data``: the fit will be given validation rows of its own (so ``val_*`` values are logged).

    ``input_shape`` is the shape of one sample (``[H, W, C]`` for images; rows of ``n_features`` when
    left out): the layers must chain from it, or SpecError names the first that cannot take what it gets.

    Returns the (unbuilt) model, whose ``spec()``, ``training.config()`` and
    ``parameter_count(input_shape)`` give the normalized specs and its size. Raises SpecError.
    """
    try:
        check_choice(task, TASKS)
    except SpecError as error:
        raise error.within("task") from None
    model = build(spec, training)
    model.shapes(tuple(input_shape) if input_shape is not None else n_features)
    fraction = model.training.validation_split
    model.settle_training(task, width, has_validation=fraction > 0 or validation_data)
    stratified = task == "classification"  # as the training session splits
    if rows is not None and fraction > 0 and (class_counts is not None or not stratified):
        check_split(rows, fraction, class_counts if stratified else None)
    return model
