"""Arrays reused from batch to batch, so the training loop allocates nothing after its first batch."""

from __future__ import annotations

from typing import Any

import numpy as np


class Buffers:
    """Named buffers; ``get`` returns a ``(rows, cols)`` view and ``like`` a view of any shape, each
    growing its buffer when a batch is larger (the first axis is the batch)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, key: str, rows: int, cols: int, dtype: np.dtype[Any]) -> np.ndarray:
        return self.like(key, (rows, cols), dtype)

    def like(self, key: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        array = self._arrays.get(key)
        if array is None or array.shape[0] < shape[0] or array.shape[1:] != shape[1:] or array.dtype != dtype:
            array = self._arrays[key] = np.empty(shape, dtype=dtype)
        return array[: shape[0]]

    def zeros(self, key: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """``like``, cleared."""
        array = self.like(key, shape, dtype)
        array.fill(0)
        return array
