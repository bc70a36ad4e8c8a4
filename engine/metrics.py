"""Metrics, accumulated batch by batch (as Keras reports them during an epoch).

``update(pred, target)`` takes predicted class indices and true indices for
``accuracy``, or predicted and true values ``(n, outputs)`` for the regression
metrics; ``result()`` gives the value over everything seen since ``reset()``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .params import Configurable, Registry, check_choice

METRICS: Registry[Metric] = Registry("metric")


class Metric(Configurable, registry=METRICS):
    name: ClassVar[str]
    task: ClassVar[str]  # "classification" or "regression"

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def compute(self, pred: np.ndarray, target: np.ndarray) -> float:
        self.reset()
        self.update(pred, target)
        return self.result()


class Accuracy(Metric):
    """Fraction of samples whose predicted class is the true class."""

    name, task = "accuracy", "classification"
    keras_names = ("acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")

    def reset(self) -> None:
        self.correct = 0
        self.count = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        self.correct += int(np.count_nonzero(pred == target))
        self.count += len(target)

    def result(self) -> float:
        return self.correct / self.count if self.count else 0.0


class MeanSquaredError(Metric):
    """mean((y_pred - y)^2) over samples and outputs."""

    name, task = "mse", "regression"
    keras_names = ("mean_squared_error",)

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        diff = pred - target
        self.total += float(np.vdot(diff, diff))
        self.count += diff.size

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class MeanAbsoluteError(Metric):
    """mean|y_pred - y| over samples and outputs."""

    name, task = "mae", "regression"
    keras_names = ("mean_absolute_error",)

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        self.total += float(np.abs(pred - target).sum())
        self.count += pred.size

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class R2(Metric):
    """Coefficient of determination 1 - SS_res / SS_tot, averaged over outputs (Keras's R2Score)."""

    name, task = "r2", "regression"
    keras_names = ("r2_score",)

    def reset(self) -> None:
        self.n = 0
        # Per output column once updated: the sums of the targets, of their squares, of the squared residuals.
        self.sums: np.ndarray | float = 0.0
        self.squares: np.ndarray | float = 0.0
        self.residuals: np.ndarray | float = 0.0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        target = target.astype(np.float64)
        self.n += len(target)
        self.sums = self.sums + target.sum(axis=0)
        self.squares = self.squares + (target * target).sum(axis=0)
        self.residuals = self.residuals + ((target - pred) ** 2).sum(axis=0)

    def result(self) -> float:
        if not self.n:
            return 0.0
        total = self.squares - self.sums**2 / self.n
        # A constant target has no variance to explain: score it 0, as scikit-learn's
        # r2_score does for an imperfect fit, rather than dividing by zero.
        r2 = np.where(total > 0, 1.0 - self.residuals / np.where(total > 0, total, 1.0), 0.0)
        return float(np.mean(r2))


def decide(out: np.ndarray, threshold: float) -> np.ndarray:
    """Predicted class indices: the arg-max of each row, or ``out > threshold`` for a single output
    (0.5 for a probability, 0 for a logit)."""
    return out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > threshold).astype(np.intp)


def get(name: object) -> Metric:
    """A metric from its name. Raises SpecError listing the known ones."""
    return METRICS[check_choice(name, METRICS)]()
