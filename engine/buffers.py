"""Arrays reused from batch to batch, so the training loop allocates nothing after its first batch."""

from __future__ import annotations

from typing import Any

import numpy as np


class Buffers:
    """Named 2-D buffers; ``get`` returns a ``(rows, cols)`` view, growing the buffer when a batch is larger."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, key: str, rows: int, cols: int, dtype: np.dtype[Any]) -> np.ndarray:
        array = self._arrays.get(key)
        if array is None or array.shape[0] < rows or array.shape[1] != cols or array.dtype != dtype:
            array = self._arrays[key] = np.empty((rows, cols), dtype=dtype)
        return array[:rows]
