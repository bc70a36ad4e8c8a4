"""The model: a network one can fit, evaluate and predict with.

The network itself (layers, weights, input scaling, label encoding) is ``network.py``;
training (the mini-batch loop, validation, early stopping, checkpoints) is a
``training.TrainingSession``, which ``fit`` creates and runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .activations import Sigmoid, Softmax
from .callbacks import History
from .errors import SpecError
from .evaluation import CHUNK, evaluate
from .metrics import decide
from .network import Network
from .training import OnEpoch, TrainingSession


class Model(Network):
    """A network with ``fit``, ``evaluate``, ``predict`` and ``predict_proba`` (see ``spec.build``)."""

    def fit(
        self,
        x: Any,
        y: Any,
        *,
        task: str | None = None,
        validation_data: tuple[Any, Any] | None = None,
        on_epoch: OnEpoch | None = None,
        checkpoint_every: int = 0,
        on_checkpoint: Callable[[bytes], None] | None = None,
        resume_from: bytes | None = None,
    ) -> History:
        """Train with the model's training config; returns the ``History``.

        ``on_epoch(epoch, logs)`` is called after every epoch (0-based); returning ``True``
        stops training there. Every ``checkpoint_every`` epochs ``on_checkpoint`` receives a
        checkpoint, and ``resume_from`` continues from one exactly where it was taken.
        """
        session = TrainingSession(self, x, y, task=task, validation_data=validation_data)
        if resume_from is not None:
            session.restore(resume_from)
        return session.run(on_epoch=on_epoch, checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint)

    def evaluate(self, x: Any, y: Any) -> dict[str, float]:
        """The loss (with regularization) and every configured metric on ``x, y``."""
        return evaluate(self, x, y)

    def outputs(self, x: Any) -> np.ndarray:
        """The network's outputs for raw inputs (scaled here), computed in chunks of rows."""
        self.weights()  # raises while the model has none
        x = self.check_inputs(x)
        chunk = self.rows_per_pass(CHUNK)
        if len(x) <= chunk:
            return self._outputs(x)
        return np.concatenate([self._outputs(x[i : i + chunk]) for i in range(0, len(x), chunk)])

    def _outputs(self, x: np.ndarray) -> np.ndarray:
        if self.scaler is not None:
            x = self.scaler.transform_(x.copy())
        out = self.forward(x)
        return self._output_probabilities(out) if self._outputs_are_logits() else out

    def _outputs_are_logits(self) -> bool:
        """True when the loss was told its inputs are logits and the network ends without softmax/sigmoid."""
        loss = self.training.loss
        return bool(loss is not None and loss.from_logits)

    @staticmethod
    def _output_probabilities(logits: np.ndarray) -> np.ndarray:
        return (Softmax() if logits.shape[1] > 1 else Sigmoid()).forward(logits)

    def predict(self, x: Any) -> np.ndarray:
        """Class labels (classification) or values: ``(n,)`` for one target, else ``(n, targets)``."""
        out = self.outputs(x)
        if self.task == "classification":
            return self.classifier().inverse(decide(out, threshold=0.5))
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, x: Any) -> np.ndarray:
        """``(n, classes)`` class probabilities, columns in the order of ``classes``.

        With one sigmoid output the columns are ``1 - p, p``. Heads that are not softmax (say
        sigmoid units trained with mse) give their raw outputs, which need not sum to 1.
        """
        self.weights()  # raises while the model has none
        if self.task != "classification":
            raise SpecError((), "predict_proba needs a classification model")
        out = self.outputs(x)
        return np.hstack([1.0 - out, out]) if out.shape[1] == 1 else out

    @property
    def classes(self) -> list[Any] | None:
        return self.encoder.config() if self.encoder is not None else None
