"""Scoring a network: its loss (with regularization) and metrics on data, as training logs them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .losses import Loss
from .metrics import Metric, decide
from .metrics import get as get_metric
from .network import Network

CHUNK = 8192
"""Rows per forward pass when scoring or predicting, which bounds the temporary memory (at most: see
``Network.rows_per_pass``, which takes fewer rows when one sample's intermediate arrays are large)."""


def score(
    model: Network,
    loss: Loss,
    metrics: Sequence[Metric],
    x_scaled: np.ndarray,
    y_encoded: np.ndarray,
    targets: np.ndarray,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on already scaled inputs, forward passes in chunks.

    ``y_encoded`` are the targets as the metrics take them (class indices, or values), ``targets``
    as ``loss`` takes them (see ``Loss.targets``)."""
    chunk = model.rows_per_pass(CHUNK)
    outs = [model.forward(x_scaled[i : i + chunk]) for i in range(0, len(x_scaled), chunk)]
    out = np.concatenate(outs) if len(outs) != 1 else outs[0]
    result = {"loss": loss.value(out, targets) + sum(op.penalty() for op in model.ops)}
    for metric in metrics:
        pred = decide(out, 0.0 if loss.from_logits else 0.5) if model.task == "classification" else out
        result[metric.name] = metric.compute(pred, y_encoded)
    return result


def evaluate(model: Network, x: Any, y: Any) -> dict[str, float]:
    """``score`` for raw inputs and targets, with the model's own loss and metrics."""
    model.weights()  # raises while the model has none
    x = model.check_inputs(x)
    y_encoded = model.encode_targets(y, len(x))
    if model.scaler is not None:
        x = model.scaler.transform_(x.copy())
    loss = model.training.loss
    if loss is None:
        raise TypeError("a model with weights has a settled loss")
    targets = loss.targets(y_encoded, model.n_outputs, model.dtype, model.task == "classification")
    return score(model, loss, [get_metric(n) for n in model.training.metrics], x, y_encoded, targets)
