"""Benchmark: what an evaluation report costs (``engine.reports``), against scikit-learn computing the
same figures, in the same run.

Run from the repository root (scikit-learn comes with the ``dev`` and ``bench`` extras)::

    python bench/reports.py            # medians of 5 repeats

Seeded random probabilities of n rows over k classes (and n x 3 regression targets). For ours, one
``reports.classification`` (or ``reports.regression``) call; for scikit-learn, the calls that give the
same figures: ``classification_report``, ``confusion_matrix``, ``log_loss``, ``roc_auc_score`` (one-vs-rest
macro) and ``calibration_curve`` on the top-label confidence (``r2_score``, ``mean_absolute_error``,
``root_mean_squared_error`` and the residual percentiles for regression). Times in milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    classification_report,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from nnserve.engine import reports

REPEATS = 5


def median_ms(run: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def sklearn_classification(y: np.ndarray, p: np.ndarray) -> None:
    labels = list(range(p.shape[1]))
    predicted = p.argmax(axis=1)
    classification_report(y, predicted, labels=labels, output_dict=True, zero_division=0)
    confusion_matrix(y, predicted, labels=labels)
    log_loss(y, p, labels=labels)
    roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)
    calibration_curve(predicted == y, p.max(axis=1), n_bins=10)


def sklearn_regression(y: np.ndarray, pred: np.ndarray) -> None:
    r2_score(y, pred)
    mean_absolute_error(y, pred)
    root_mean_squared_error(y, pred)
    np.percentile(y - pred, [5, 25, 50, 75, 95], axis=0)


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'workload':<34}{'nnserve ms':>12}{'scikit-learn ms':>17}")
    for n, k in ((10_000, 3), (100_000, 10), (100_000, 100)):
        y = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k))
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        ours = median_ms(lambda y=y, p=p, k=k: reports.classification(y, p, list(range(k))))
        theirs = median_ms(lambda y=y, p=p: sklearn_classification(y, p))
        print(f"{f'classification n={n:,} k={k}':<34}{ours:>12.1f}{theirs:>17.1f}")
    y = rng.normal(size=(100_000, 3))
    pred = y + rng.normal(size=y.shape)
    ours = median_ms(lambda: reports.regression(y, pred))
    theirs = median_ms(lambda: sklearn_regression(y, pred))
    print(f"{'regression n=100,000 targets=3':<34}{ours:>12.1f}{theirs:>17.1f}")


if __name__ == "__main__":
    main()
