"""Which rows train and which validate: ``split`` holds out a seeded, stratified fraction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import SpecError


def row_indices(n: int) -> np.ndarray:
    """0..n-1 as int32 when it fits: the training rows and each epoch's shuffle of them are the
    largest arrays training keeps besides the data, and half the size costs nothing."""
    return np.arange(n, dtype=np.int32 if n < 2**31 else np.intp)


def split_sizes(n: int, fraction: float, class_counts: Sequence[int] | None = None) -> tuple[int, int]:
    """``(training rows, validation rows)`` that ``split`` makes of ``n`` rows: ``fraction`` of them
    held out (at least one), or, stratified by class (``class_counts``: rows of each class), that
    fraction of each class, rounded."""
    if class_counts is None:
        n_val = max(1, int(round(n * fraction)))
    else:
        n_val = sum(int(round(count * fraction)) for count in class_counts)
    return n - n_val, n_val


def check_split(n: int, fraction: float, class_counts: Sequence[int] | None = None) -> None:
    """SpecError at ``training.validation_split`` when ``split`` would leave no training rows or no
    validation rows (a class may have none of the latter, but not every class)."""
    n_train, n_val = split_sizes(n, fraction, class_counts)
    if n_train and n_val:
        return
    how = "" if class_counts is None else f", {fraction} of each class's rows held out (rounded)"
    raise SpecError(
        ("training", "validation_split"),
        f"{fraction} of {n} rows leaves no {'training' if not n_train else 'validation'} rows: "
        f"{n_train} for training and {n_val} for validation{how}",
    )


def split(
    n: int, fraction: float, rng: np.random.Generator, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices: a random ``fraction`` held out, stratified by ``labels``
    (class indices) when given; as many rows as ``split_sizes`` says. Raises SpecError (``check_split``)."""
    counts = None if labels is None else np.bincount(labels).tolist()
    check_split(n, fraction, counts)
    if labels is None:
        order = rng.permutation(n)
        n_val = split_sizes(n, fraction)[1]
        return np.sort(order[n_val:]).astype(row_indices(n).dtype), np.sort(order[:n_val])
    val = []
    for c in range(labels.max() + 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        val.append(members[: int(round(len(members) * fraction))])
    val_rows = np.sort(np.concatenate(val))
    train_rows = np.setdiff1d(np.arange(n), val_rows, assume_unique=True)
    return train_rows.astype(row_indices(n).dtype), val_rows
