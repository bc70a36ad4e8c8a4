"""How to train: the training spec (Keras's defaults), and the loss it settles on for a task.

``TrainingConfig`` is the spec's ``training`` object. What can only be checked against
the data (the loss against the task and the output layer, the metrics against the task,
the monitored values against what training will log) is checked by ``settle_loss`` and
``check_logs`` once the task is known, before the first epoch.
"""

from __future__ import annotations

import secrets
from typing import Any

from . import losses
from .callbacks import EarlyStopping, ReduceLROnPlateau
from .errors import SpecError
from .losses import LOSSES
from .metrics import METRICS
from .metrics import get as get_metric
from .optimizers import OPTIMIZERS
from .params import AnyOf, Bool, Choice, Component, Configurable, Float, Int, ListOf, MapOf, Nested, Optional, Param

GRADIENTS = ("backprop", "finite_difference")
TASKS = ("classification", "regression")
# Heads whose outputs are probabilities for one class each, which binary cross-entropy can take.
_PROBABILITY_HEADS = ("sigmoid", "hard_sigmoid", "softmax")


class TrainingConfig(Configurable):
    """Everything about how to train, from the spec's ``training`` object (Keras's defaults).

    ``loss`` left out is chosen from the task and the output layer at fit time (``settle_loss``);
    ``seed`` left out is drawn once here and kept, so the saved config reproduces the run.
    """

    loss = Param(
        Optional(Component(LOSSES)), None, keras=True, doc="left out: chosen from the task and the output layer"
    )
    optimizer = Param(Component(OPTIMIZERS), "rmsprop", keras=True, doc="how the weights are updated")
    epochs = Param(Int(ge=1), 1, keras=True, doc="passes over the training rows")
    batch_size = Param(Int(ge=1), 32, keras=True, doc="rows per gradient step (the last batch may be smaller)")
    validation_split = Param(
        Float(ge=0.0, lt=1.0),
        0.0,
        keras=True,
        doc="fraction held out for validation: a seeded random sample, stratified by class for classification "
        "(not Keras's last rows, which on data sorted by class would be a single class)",
    )
    shuffle = Param(Bool(), True, keras=True, doc="reshuffle the training rows every epoch")
    seed = Param(
        Optional(Int(ge=0, le=2**63 - 1)),
        None,
        doc="the same seed gives bit-identical weights; left out, one is drawn, and the seed used is always "
        "in the saved spec",
    )
    metrics = Param(
        ListOf(Choice(METRICS), what="metric names", unique=True),
        [],
        keras=True,
        doc="logged per epoch, with `val_` versions when there is validation data (see [Metrics](#metrics); "
        "the API's default: `accuracy` for classification, `mae` for regression)",
    )
    class_weight = Param(
        Optional(
            AnyOf(
                Choice(["balanced"]),
                MapOf(Float(ge=0.0), what="class -> weight"),
                expected="'balanced' or an object of class -> weight",
            )
        ),
        None,
        keras=True,
        doc='`{"label": weight, ...}` (unlisted classes weigh 1) or `"balanced"` (n / (classes × count))',
    )
    early_stopping = Param(
        Optional(Nested(EarlyStopping, {True: {}})),
        None,
        doc="stop when the monitored value stops improving (see [Callbacks](#callbacks))",
    )
    reduce_lr_on_plateau = Param(
        Optional(Nested(ReduceLROnPlateau, {True: {}})),
        None,
        doc="lower the learning rate when the monitored value stops improving (see [Callbacks](#callbacks))",
    )
    gradient = Param(
        Choice(GRADIENTS),
        "backprop",
        doc="`finite_difference`: compute every gradient by nudging each weight ±h and measuring the loss "
        "(two forward passes per weight; for small models, teaching and verification)",
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        if self.seed is None:
            self.seed = secrets.randbelow(2**31)

    def callbacks(self) -> list[EarlyStopping | ReduceLROnPlateau]:
        return [c for c in (self.early_stopping, self.reduce_lr_on_plateau) if c is not None]

    def settle_loss(self, task: str, head: str, n_outputs: int) -> losses.Loss:
        """The configured loss, checked against the task and the output layer's activation ``head``, or,
        when left out, the usual one for them. Records it (so the saved config says what was trained
        with) and returns it; raises SpecError naming the loss."""
        loss = self.loss
        if task == "regression" and loss is not None and loss.classification_only:
            raise SpecError(
                ("training", "loss"),
                f"{loss.name} is a classification loss; the targets are continuous (try 'mse', 'mae' or 'huber')",
            )
        self.loss = default_loss(task, head, n_outputs) if loss is None else _fits_head(loss, head)
        return self.loss

    def check_logs(self, task: str, has_validation: bool) -> None:
        """The metrics fit the task, and every monitored value will be logged; raises SpecError."""
        for i, name in enumerate(self.metrics):
            metric = get_metric(name)
            if metric.task != task:
                raise SpecError(
                    ("training", "metrics", i), f"{name!r} is a {metric.task} metric; this is a {task} task"
                )
        logged = log_names(self.metrics, has_validation)
        for field, callback in (
            ("early_stopping", self.early_stopping),
            ("reduce_lr_on_plateau", self.reduce_lr_on_plateau),
        ):
            if callback is not None and callback.monitor not in logged:
                hint = "" if has_validation else " (val_* values need validation_split > 0)"
                raise SpecError(
                    ("training", field, "monitor"),
                    f"unknown {callback.monitor!r}; training logs {', '.join(map(repr, logged))}{hint}",
                )


def log_names(metric_names: list[str], has_validation: bool) -> list[str]:
    """The names training logs each epoch (besides ``learning_rate``)."""
    names = ["loss", *metric_names]
    return names + [f"val_{n}" for n in names] if has_validation else names


def default_loss(task: str, head: str, n_outputs: int) -> losses.Loss:
    """The loss for a task when the spec leaves it out: mse for regression; for classification the
    cross-entropy that fits the output layer's activation ``head``."""
    if task == "regression":
        return losses.MeanSquaredError()
    if head == "softmax":
        return losses.SparseCategoricalCrossentropy()
    if head == "sigmoid":
        return losses.BinaryCrossentropy()
    # Any other head outputs logits: train from them, as Keras's from_logits=True does.
    if n_outputs == 1:
        return losses.BinaryCrossentropy(from_logits=True)
    return losses.SparseCategoricalCrossentropy(from_logits=True)


def _fits_head(loss: losses.Loss, head: str) -> losses.Loss:
    """``loss``, unless it is a cross-entropy on probabilities after a head that does not give them."""
    if isinstance(loss, losses.CategoricalCrossentropy) and not loss.from_logits and head != "softmax":
        wanted = "softmax"
    elif isinstance(loss, losses.BinaryCrossentropy) and not loss.from_logits and head not in _PROBABILITY_HEADS:
        wanted = "sigmoid"
    else:
        return loss
    raise SpecError(
        ("training", "loss"),
        f"{loss.name} takes probabilities but the output layer's activation is {head!r}: "
        f'end with {wanted!r}, or use {{"name": "{loss.name}", "from_logits": true}}',
    )
