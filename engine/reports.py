"""Evaluation reports: what a trained model gets right and wrong on held-out rows, figure by figure.

    classification(y, probabilities, labels)    # y: true class indices; probabilities: (n, classes)
    regression(y, predictions)                  # (n, targets) true values and predictions
    report(model, x, y)                         # either, for a fitted model and raw rows
    session_report(session)                     # either, on a training session's validation rows

Every figure is computed here from its formula, in NumPy (float64 throughout), and checked
against scikit-learn's in tests/engine/test_reports.py; scikit-learn is never imported here.
The formulas, for ``n`` rows, true class ``y_i`` and predicted class ``ŷ_i = argmax_c p_ic``
(``p_ic`` the probability the model gives row ``i`` for class ``c``):

Classification
    confusion_matrix[t][p]  rows whose true class is ``t`` and predicted class is ``p`` (rows = true
                            labels, columns = predictions, both in ``labels`` order).
    precision_c = TP_c / (TP_c + FP_c)   (column c's diagonal over its sum; 0 when nothing is predicted c)
    recall_c    = TP_c / support_c       (row c's diagonal over its sum; 0 when ``support_c`` is 0)
    f1_c        = 2 precision_c recall_c / (precision_c + recall_c)   (0 when both are 0)
    support_c   = rows whose true class is c
    macro_avg   = the unweighted mean of each figure over every class of the model
    weighted_avg = the mean weighted by support (support: the total)
    accuracy    = (1/n) Σ [ŷ_i = y_i]
    log_loss    = -(1/n) Σ log clip(p_{i,y_i}, ε, 1 - ε),  ε = float64's machine epsilon (2.2e-16)
    roc_auc     = for two classes, the probability that a random row of the second class gets a
                  higher ``p_i1`` than a random row of the first (ties count one half): the
                  Mann-Whitney statistic ``(R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0)``, ``R_1`` the sum of the
                  second class's ranks among all ``p_i1`` (tied values share their mean rank).
                  For more classes, one-vs-rest macro: the mean over classes c of that statistic for
                  ``p_ic``, class c against all others. A class with no rows, or with every row, in
                  ``y`` has no AUC and is left out of the mean (``roc_auc_classes`` counts those in
                  it); ``roc_auc`` is null when none is left.
    (Above MAX_MATRIX_CLASSES classes the confusion matrix and the AUC are left out, and ``note`` says so.)
    calibration = the top-label confidence ``q_i = max_c p_ic`` in 10 equal-width bins, bin b
                  holding ``b/10 < q ≤ (b+1)/10`` (the first also holds 0): per bin,
                  ``mean_predicted`` = mean q, ``observed`` = share of its rows predicted right
                  (both null for an empty bin), ``count``; ``ece`` = Σ_b (count_b / n) |observed_b -
                  mean_predicted_b|, the expected calibration error.

Regression, per target column j (``r_ij = y_ij - ŷ_ij``, the residual)
    mae  = (1/n) Σ_i |r_ij|
    rmse = sqrt((1/n) Σ_i r_ij²)
    r2   = 1 - Σ_i r_ij² / Σ_i (y_ij - mean_j y)²; a constant target scores 1 when predicted
           exactly, else 0 (scikit-learn's ``force_finite``)
    residual_quantiles = r at 5, 25, 50, 75 and 95 % (NumPy's default "linear" method)
    With several targets the top-level mae, rmse and r2 are the means over the targets, the
    residual quantiles are over every residual pooled, and ``per_target`` lists each target's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .activations import Sigmoid, Softmax
from .evaluation import CHUNK

if TYPE_CHECKING:
    from .network import Network
    from .training import TrainingSession

CALIBRATION_BINS = 10
MAX_MATRIX_CLASSES = 100
"""Above this many classes the report leaves out the confusion matrix (classes² cells: 10,000 classes
would make 10⁸) and the one-vs-rest ROC AUC (a sort of every row per class), and says so in ``note``."""
QUANTILES = (5, 25, 50, 75, 95)


def classification(y: Any, probabilities: Any, labels: list[Any]) -> dict[str, Any]:
    """The classification report of true class indices ``y`` (n,) against ``probabilities`` (n, k),
    columns in the order of ``labels`` (the model's classes; k = len(labels))."""
    y = np.asarray(y, dtype=np.intp).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64)
    n, k = p.shape
    predicted = p.argmax(axis=1)
    true_positives = np.bincount(y[predicted == y], minlength=k).astype(np.float64)
    support = np.bincount(y, minlength=k)
    predicted_count = np.bincount(predicted, minlength=k)
    precision = _ratio(true_positives, predicted_count)
    recall = _ratio(true_positives, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    per_class = {
        str(label): {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c, label in enumerate(labels)
    }
    total = int(support.sum())
    weights = support / total if total else np.zeros(k)
    few = k <= MAX_MATRIX_CLASSES
    auc, auc_classes = _roc_auc(y, p) if few else (None, 0)
    result: dict[str, Any] = {"rows": n, "labels": list(labels)}
    if few:
        result["confusion_matrix"] = np.bincount(y * k + predicted, minlength=k * k).reshape(k, k).tolist()
    else:
        result["note"] = f"confusion_matrix and roc_auc are left out for more than {MAX_MATRIX_CLASSES} classes"
    return {
        **result,
        "per_class": per_class,
        "macro_avg": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
            "support": total,
        },
        "weighted_avg": {
            "precision": float(precision @ weights),
            "recall": float(recall @ weights),
            "f1": float(f1 @ weights),
            "support": total,
        },
        "accuracy": float(true_positives.sum() / n) if n else 0.0,
        "log_loss": _log_loss(y, p),
        "roc_auc": auc,
        "roc_auc_classes": auc_classes,
        "calibration": _calibration(p.max(axis=1), predicted == y),
    }


def regression(y: Any, predictions: Any) -> dict[str, Any]:
    """The regression report of true values ``y`` against ``predictions``, each (n,) or (n, targets)."""
    y = np.asarray(y, dtype=np.float64)
    y = y.reshape(len(y), -1)
    pred = np.asarray(predictions, dtype=np.float64).reshape(y.shape)
    residuals = y - pred
    per_target = [_regression_column(y[:, j], residuals[:, j]) for j in range(y.shape[1])]
    result: dict[str, Any] = {
        "rows": len(y),
        "mae": float(np.mean([t["mae"] for t in per_target])),
        "rmse": float(np.mean([t["rmse"] for t in per_target])),
        "r2": float(np.mean([t["r2"] for t in per_target])),
        "residual_quantiles": _quantiles(residuals.reshape(-1)),
    }
    if len(per_target) > 1:
        result["per_target"] = per_target
    return result


def report(model: Network, x: Any, y: Any) -> dict[str, Any]:
    """The report of a fitted ``model`` on raw rows ``x`` (scaled here) and targets ``y`` (labels or values).
    Raises SpecError for inputs or labels the model cannot take."""
    model.weights()  # raises while the model has none
    x = model.check_inputs(x)
    encoded = model.encode_targets(y, len(x))
    if model.scaler is not None:
        x = model.scaler.transform_(x.copy())
    return _report(model, x, encoded)


def session_report(session: TrainingSession) -> dict[str, Any] | None:
    """The report of a session's model on its validation rows (``validation_split`` or
    ``validation_data``, already scaled), or None when it has none."""
    if session.validation is None:
        return None
    x_scaled, encoded, _targets = session.validation
    return _report(session.model, x_scaled, encoded)


def _report(model: Network, x_scaled: np.ndarray, encoded: np.ndarray) -> dict[str, Any]:
    out = np.concatenate([model.forward(x_scaled[i : i + CHUNK]) for i in range(0, max(len(x_scaled), 1), CHUNK)])
    loss = model.training.loss
    if loss is not None and loss.from_logits:  # the network ends without its softmax/sigmoid
        out = (Softmax() if out.shape[1] > 1 else Sigmoid()).forward(out)
    if model.task == "classification":
        probabilities = np.hstack([1.0 - out, out]) if out.shape[1] == 1 else out
        return classification(encoded, probabilities, model.classifier().config())
    return regression(encoded, out)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (as scikit-learn's zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    result: np.ndarray = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)
    return result


def _log_loss(y: np.ndarray, p: np.ndarray) -> float | None:
    if not len(y):
        return None
    eps = np.finfo(np.float64).eps
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1 - eps))))


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Mann-Whitney AUC of ``scores`` for the rows marked ``positive``; None without both kinds of rows."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    order = np.argsort(values)  # any sort: tied values get the same mean rank whatever their order
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]  # exclusive
    mean_rank = (starts + ends + 1) / 2  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _roc_auc(y: np.ndarray, p: np.ndarray) -> tuple[float | None, int]:
    """``(AUC, classes it averages)``: binary on the second column, else one-vs-rest macro."""
    if p.shape[1] == 2:
        auc = _auc(p[:, 1], y == 1)
        return auc, 0 if auc is None else 2
    columns = np.ascontiguousarray(p.T)  # each class's scores in one run of memory: a sort per class
    aucs = [a for c in range(p.shape[1]) if (a := _auc(columns[c], y == c)) is not None]
    return (float(np.mean(aucs)) if aucs else None), len(aucs)


def _calibration(confidence: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    # searchsorted on the inner edges puts q in bin b when edges[b] < q <= edges[b + 1].
    bins = np.searchsorted(edges[1:-1], confidence)
    n = len(confidence)
    result: list[dict[str, float | int | None]] = []
    ece = 0.0
    for b in range(CALIBRATION_BINS):
        members = bins == b
        count = int(members.sum())
        if count:
            mean_predicted, observed = float(confidence[members].mean()), float(correct[members].mean())
            ece += count / n * abs(observed - mean_predicted)
            result.append({"mean_predicted": mean_predicted, "observed": observed, "count": count})
        else:
            result.append({"mean_predicted": None, "observed": None, "count": 0})
    return {"bins": result, "ece": float(ece)}


def _regression_column(y: np.ndarray, residuals: np.ndarray) -> dict[str, Any]:
    squared = float(residuals @ residuals)
    spread = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    if spread > 0:
        r2 = 1.0 - squared / spread
    else:
        r2 = 1.0 if squared == 0 else 0.0
    return {
        "mae": float(np.abs(residuals).mean()) if len(y) else 0.0,
        "rmse": float(np.sqrt(squared / len(y))) if len(y) else 0.0,
        "r2": r2,
        "residual_quantiles": _quantiles(residuals),
    }


def _quantiles(residuals: np.ndarray) -> dict[str, float | None]:
    if not len(residuals):
        return {str(q): None for q in QUANTILES}
    return {str(q): float(v) for q, v in zip(QUANTILES, np.percentile(residuals, QUANTILES))}
