"""Which rows train and which validate: ``split`` holds out a seeded, stratified fraction."""

from __future__ import annotations

import numpy as np

from .errors import SpecError


def row_indices(n: int) -> np.ndarray:
    """0..n-1 as int32 when it fits: the training rows and each epoch's shuffle of them are the
    largest arrays training keeps besides the data, and half the size costs nothing."""
    return np.arange(n, dtype=np.int32 if n < 2**31 else np.intp)


def split(
    n: int, fraction: float, rng: np.random.Generator, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices: a random ``fraction`` held out, stratified by ``labels``."""
    if labels is None:
        order = rng.permutation(n)
        n_val = max(1, int(round(n * fraction)))
        return np.sort(order[n_val:]).astype(row_indices(n).dtype), np.sort(order[:n_val])
    val = []
    for c in range(labels.max() + 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        val.append(members[: int(round(len(members) * fraction))])
    val_rows = np.sort(np.concatenate(val))
    if len(val_rows) == 0:
        raise SpecError(("training", "validation_split"), f"{fraction} of {n} rows leaves no validation rows")
    train_rows = np.setdiff1d(np.arange(n), val_rows, assume_unique=True)
    return train_rows.astype(row_indices(n).dtype), val_rows
