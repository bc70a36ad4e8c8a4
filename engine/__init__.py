"""nnserve's neural-network engine: feed-forward networks trained by backpropagation, in NumPy alone.

    from nnserve.engine import build
    model = build({"layers": [{"type": "dense", "units": 8, "activation": "relu"},
                              {"type": "dense", "units": 3, "activation": "softmax"}]},
                  {"optimizer": "adam", "epochs": 100, "seed": 0})
    history = model.fit(X, y)
    model.predict(X[:5])

This package imports nothing from the rest of nnserve.
"""

from .errors import EngineError, NonFiniteError, SpecError
from .gradcheck import gradcheck
from .keras import KerasImport, from_keras
from .model import Model
from .serialize import dumps, loads
from .spec import build, validate
from .training import History, TrainingConfig

__all__ = [
    "EngineError",
    "History",
    "KerasImport",
    "Model",
    "NonFiniteError",
    "SpecError",
    "TrainingConfig",
    "build",
    "dumps",
    "from_keras",
    "gradcheck",
    "loads",
    "validate",
]
