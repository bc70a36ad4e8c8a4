"""What a model needs to meet raw data: standard scaling of the inputs and label encoding of classes.

Both are fitted on the training rows, stored with the model as JSON, and applied again
at prediction time, so a client sends and receives data in its own units and labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import SpecError


class StandardScaler:
    """x' = (x - mean) / scale, scale the standard deviation (1 where a feature is constant).

    The statistics are per input value: per feature of a row, per pixel and channel of an image."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self._cast: dict[Any, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def fit(cls, x: np.ndarray, rows: np.ndarray | None = None, chunk: int = 2048) -> StandardScaler:
        """Statistics of ``x[rows]`` (all rows by default), gathered in chunks so no copy of ``x`` is made."""
        rows = np.arange(len(x)) if rows is None else rows
        total = np.zeros(x.shape[1:])
        for start in range(0, len(rows), chunk):
            total += x[rows[start : start + chunk]].sum(axis=0, dtype=np.float64)
        mean = total / len(rows)
        squares = np.zeros(x.shape[1:])
        for start in range(0, len(rows), chunk):
            centered = x[rows[start : start + chunk]] - mean
            squares += (centered * centered).sum(axis=0)
        std = np.sqrt(squares / len(rows))
        return cls(mean, np.where(std > 0, std, 1.0))

    def transform_(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` in place (it must be a copy the caller owns) and return it."""
        mean, inverse = self._cast.get(x.dtype) or self._cast.setdefault(
            x.dtype, (self.mean.astype(x.dtype), (1.0 / self.scale).astype(x.dtype))
        )
        x -= mean
        x *= inverse
        return x

    def config(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}


class LabelEncoder:
    """Class labels (strings, integers, booleans) <-> indices 0..k-1 in sorted label order."""

    def __init__(self, classes: list[Any]):
        self.classes = np.asarray(classes)
        self._index = {label: i for i, label in enumerate(self.classes.tolist())}

    @classmethod
    def fit(cls, y: np.ndarray) -> tuple[LabelEncoder, np.ndarray]:
        """The encoder for ``y`` and ``y`` as indices."""
        try:
            classes, indices = np.unique(y, return_inverse=True)
        except TypeError:
            raise SpecError("y", "class labels must be all strings or all numbers, not a mix") from None
        return cls(classes.tolist()), indices.reshape(-1).astype(np.intp)

    def transform(self, y: np.ndarray) -> np.ndarray:
        """Indices of the labels in ``y``; a label not seen in training raises SpecError."""
        try:
            return np.fromiter((self._index[label] for label in np.asarray(y).tolist()), dtype=np.intp, count=len(y))
        except KeyError as error:
            raise SpecError(
                "y", f"unknown class {error.args[0]!r}; the model knows {', '.join(map(repr, self._index))}"
            ) from None

    def inverse(self, indices: np.ndarray) -> np.ndarray:
        labels: np.ndarray = self.classes[indices]
        return labels

    def config(self) -> list[Any]:
        labels: list[Any] = self.classes.tolist()
        return labels
