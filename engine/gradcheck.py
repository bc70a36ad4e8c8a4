"""Check backpropagation against finite differences.

``gradcheck(model, X, y)`` recomputes the model in float64, takes the gradient of the
training loss on ``X, y`` both ways (backpropagation, and central differences one
weight at a time, see ``finite_differences.py``) and returns the worst relative
error over the weight arrays, ``|g_bp - g_fd| / (|g_bp| + |g_fd|)`` with ``|.|`` the
Euclidean norm of one array. An array whose gradient is below a thousandth of the whole
gradient's norm is measured against that thousandth instead: where the true gradient is
(nearly) zero, the differences hold only rounding noise, and dividing noise by nothing
would report a mismatch that is not there. Dropout masks are drawn once and held fixed,
so both methods differentiate the same function.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .finite_differences import finite_difference
from .model import Model
from .spec import build
from .training import TrainingSession


def gradcheck(model: Model, x: Any, y: Any, task: str | None = None) -> float:
    """The worst relative error between backpropagated and finite-difference gradients (float64)."""
    spec = {**model.spec(), "dtype": "float64"}
    training = {**model.training.config(), "validation_split": 0.0, "class_weight": model.training.class_weight}
    check = build(spec, training)
    if model.built:
        check.allocate(model.input_shape or 0, rng=None)
        check.set_weights([w.astype(np.float64) for w in model.get_weights()])
        check.task, check.encoder, check.scaler = model.task, model.encoder, model.scaler
    session = TrainingSession(check, x, y, task=task)
    xb = session.x.copy()
    if check.scaler is not None:
        check.scaler.transform_(xb)
    tb, wb = session.targets, session.sample_weight

    session.backprop_step(xb, tb, wb)
    backprop = check.gradients().copy()
    finite_difference(lambda: session.batch_loss(xb, tb, wb), check.weights(), check.gradients(), session.ops)
    numeric = check.gradients().copy()

    floor = 1e-3 * (np.linalg.norm(backprop) + np.linalg.norm(numeric))
    worst = 0.0
    offset = 0
    for op in session.ops:
        for param in op.params.values():
            a, b = backprop[offset : offset + param.size], numeric[offset : offset + param.size]
            offset += param.size
            scale = max(np.linalg.norm(a) + np.linalg.norm(b), floor)
            if scale > 0:
                worst = max(worst, float(np.linalg.norm(a - b) / scale))
    return worst
