"""nnserve's neural-network engine: feed-forward networks trained by backpropagation, in NumPy alone.

    from nnserve.engine import build
    model = build({"layers": [{"type": "dense", "units": 8, "activation": "relu"},
                              {"type": "dense", "units": 3, "activation": "softmax"}]},
                  {"optimizer": "adam", "epochs": 100, "seed": 0})
    history = model.fit(X, y)
    model.predict(X[:5])

A job that must stop and resume at any epoch trains through a ``TrainingSession`` (what
``fit`` does inside): ``session.run(on_epoch=...)``, ``session.epoch``, ``session.checkpoint()``,
``session.restore(blob)``. ``reports`` computes evaluation reports (confusion matrix, per-class
figures, ROC AUC, calibration; regression errors and residuals). ``archive`` is the npz codec (named arrays and a JSON document)
that checkpoints and saved models use; ``params`` the declarations every configurable class
makes of its parameters, and ``reference`` what is derived from them for people (the tables
of docs/spec.md, the dashboard's choices).

This package imports nothing from the rest of nnserve.
"""

from . import archive, params, reference, reports
from .callbacks import BestWeights, History
from .errors import EngineError, NonFiniteError, SpecError
from .gradcheck import gradcheck
from .keras import KerasImport, from_keras
from .model import Model
from .serialize import dumps, loads
from .spec import build, validate
from .training import TrainingSession
from .training_config import TrainingConfig

__all__ = [
    "BestWeights",
    "EngineError",
    "History",
    "KerasImport",
    "Model",
    "NonFiniteError",
    "SpecError",
    "TrainingConfig",
    "TrainingSession",
    "archive",
    "build",
    "dumps",
    "from_keras",
    "gradcheck",
    "loads",
    "params",
    "reference",
    "reports",
    "validate",
]
