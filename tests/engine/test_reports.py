"""Evaluation reports: every figure equals scikit-learn's within 1e-9 on fixed data, and a trained
model's report is the one its own predictions give."""

import numpy as np
import pytest
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

from nnserve.engine import SpecError, build, reports

TOLERANCE = 1e-9


def _probabilities(rng, n, k, sharp=2.0):
    logits = rng.normal(size=(n, k)) * sharp
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _multiclass(seed=0, n=200, k=4):
    """Fixed rows of k classes whose probabilities lean towards the truth (so the figures are not trivial)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    p = _probabilities(rng, n, k)
    p[np.arange(n), y] += rng.uniform(0, 1.5, size=n)
    return y, p / p.sum(axis=1, keepdims=True)


def _assert_matches_classification_report(result, y, p, labels):
    k = len(labels)
    predicted = p.argmax(axis=1)
    expected = classification_report(
        y, predicted, labels=list(range(k)), target_names=[str(c) for c in labels], output_dict=True, zero_division=0
    )
    for label in labels:
        figures, reference = result["per_class"][str(label)], expected[str(label)]
        for name, sk_name in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert figures[name] == pytest.approx(reference[sk_name], abs=TOLERANCE), (label, name)
        assert figures["support"] == reference["support"]
    for ours, theirs in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        for name, sk_name in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert result[ours][name] == pytest.approx(expected[theirs][sk_name], abs=TOLERANCE), (ours, name)
        assert result[ours]["support"] == expected[theirs]["support"] == len(y)
    accuracy = expected.get("accuracy", np.mean(predicted == y))  # absent when some label is never seen
    assert result["accuracy"] == pytest.approx(accuracy, abs=TOLERANCE)
    assert result["confusion_matrix"] == confusion_matrix(y, predicted, labels=list(range(k))).tolist()


def test_a_multiclass_report_equals_scikit_learns():
    y, p = _multiclass()
    labels = ["ant", "bee", "cat", "dog"]
    result = reports.classification(y, p, labels)
    assert result["labels"] == labels and result["rows"] == len(y)
    _assert_matches_classification_report(result, y, p, labels)
    assert result["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2, 3]), abs=TOLERANCE)
    reference = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert result["roc_auc"] == pytest.approx(reference, abs=TOLERANCE)
    assert result["roc_auc_classes"] == 4


def test_a_binary_report_equals_scikit_learns_with_tied_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=150)
    # Rounded to two decimals, so many scores tie: the AUC's ranks must share them as scikit-learn's do.
    positive = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, size=150), 0, 1), 2)
    p = np.column_stack([1 - positive, positive])
    result = reports.classification(y, p, [False, True])
    _assert_matches_classification_report(result, y, p, [False, True])
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, positive), abs=TOLERANCE)
    assert result["log_loss"] == pytest.approx(log_loss(y, p), abs=TOLERANCE)


def test_a_class_never_predicted_nor_seen_scores_zero_as_scikit_learn_says():
    y, p = _multiclass(seed=2, n=60, k=3)
    keep = y != 2  # class 2 absent from the rows...
    y, p = y[keep], p[keep]
    p[:, 2] = 0.0  # ...and never predicted
    p /= p.sum(axis=1, keepdims=True)
    result = reports.classification(y, p, [0, 1, 2])
    _assert_matches_classification_report(result, y, p, [0, 1, 2])
    assert result["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # No AUC for a class without rows: the macro is over the other two, each one-vs-rest.
    assert result["roc_auc_classes"] == 2
    by_hand = np.mean([roc_auc_score(y == c, p[:, c]) for c in (0, 1)])
    assert result["roc_auc"] == pytest.approx(by_hand, abs=TOLERANCE)


def test_calibration_bins_equal_scikit_learns_calibration_curve_of_the_top_label():
    y, p = _multiclass(seed=3, n=500, k=3)
    result = reports.classification(y, p, [0, 1, 2])["calibration"]
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == y
    observed, mean_predicted = calibration_curve(correct, confidence, n_bins=10, strategy="uniform")
    filled = [b for b in result["bins"] if b["count"]]
    assert len(result["bins"]) == 10 and sum(b["count"] for b in result["bins"]) == 500
    np.testing.assert_allclose([b["observed"] for b in filled], observed, atol=TOLERANCE)
    np.testing.assert_allclose([b["mean_predicted"] for b in filled], mean_predicted, atol=TOLERANCE)
    ece = sum(b["count"] / 500 * abs(b["observed"] - b["mean_predicted"]) for b in filled)
    assert result["ece"] == pytest.approx(ece, abs=TOLERANCE)
    # Three classes: the top label's confidence is at least 1/3, so the lowest bins are empty.
    assert result["bins"][0] == {"mean_predicted": None, "observed": None, "count": 0}


def test_a_confidence_on_a_bin_edge_falls_in_the_lower_bin():
    p = np.array([[0.3, 0.7], [0.7, 0.3], [0.0, 1.0]])
    bins = reports.classification([1, 0, 0], p, ["a", "b"])["calibration"]["bins"]
    assert bins[6]["count"] == 2 and bins[9]["count"] == 1  # 0.7 is in (0.6, 0.7]


def test_a_regression_report_equals_scikit_learns():
    rng = np.random.default_rng(4)
    y = rng.normal(size=80) * 3
    pred = y + rng.normal(size=80)
    result = reports.regression(y, pred)
    assert result["mae"] == pytest.approx(mean_absolute_error(y, pred), abs=TOLERANCE)
    assert result["rmse"] == pytest.approx(root_mean_squared_error(y, pred), abs=TOLERANCE)
    assert result["r2"] == pytest.approx(r2_score(y, pred), abs=TOLERANCE)
    expected = np.percentile(y - pred, [5, 25, 50, 75, 95])
    assert list(result["residual_quantiles"]) == ["5", "25", "50", "75", "95"]
    np.testing.assert_allclose(list(result["residual_quantiles"].values()), expected, atol=TOLERANCE)
    assert "per_target" not in result


def test_several_targets_are_reported_each_and_averaged_as_scikit_learn_averages_them():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(60, 3)) * [1.0, 10.0, 0.1]
    pred = y + rng.normal(size=(60, 3)) * [0.5, 2.0, 0.1]
    result = reports.regression(y, pred)
    assert result["r2"] == pytest.approx(r2_score(y, pred), abs=TOLERANCE)
    assert result["mae"] == pytest.approx(mean_absolute_error(y, pred), abs=TOLERANCE)
    assert result["rmse"] == pytest.approx(root_mean_squared_error(y, pred), abs=TOLERANCE)
    for j, target in enumerate(result["per_target"]):
        assert target["r2"] == pytest.approx(r2_score(y[:, j], pred[:, j]), abs=TOLERANCE)
        assert target["mae"] == pytest.approx(mean_absolute_error(y[:, j], pred[:, j]), abs=TOLERANCE)
        quantiles = np.percentile(y[:, j] - pred[:, j], [5, 25, 50, 75, 95])
        np.testing.assert_allclose(list(target["residual_quantiles"].values()), quantiles, atol=TOLERANCE)


def test_a_constant_target_scores_r2_as_scikit_learn_does():
    y = np.full(10, 2.0)
    assert reports.regression(y, y)["r2"] == r2_score(y, y) == 1.0
    assert reports.regression(y, y + 0.1)["r2"] == r2_score(y, y + 0.1) == 0.0


def test_a_trained_models_report_is_the_one_its_predictions_give(iris_split):
    x_train, x_test, y_train, y_test = iris_split
    names = np.array(["setosa", "versicolor", "virginica"])
    model = build(
        {
            "layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 30, "seed": 0},
    )
    model.fit(x_train, names[y_train.astype(int)])
    result = reports.report(model, x_test, names[y_test.astype(int)])
    assert result["labels"] == ["setosa", "versicolor", "virginica"]
    expected = reports.classification(y_test.astype(int), model.predict_proba(x_test), list(names))
    assert result == expected
    assert result["accuracy"] == pytest.approx(np.mean(model.predict(x_test) == names[y_test.astype(int)]))
    with pytest.raises(SpecError, match="unknown class"):
        reports.report(model, x_test[:1], ["tulip"])


def test_a_session_reports_on_its_validation_rows_or_says_it_has_none(iris):
    x, y = iris
    spec = {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}
    model = build(spec, {"optimizer": "adam", "epochs": 5, "seed": 0, "validation_split": 0.2})
    from nnserve.engine import TrainingSession

    session = TrainingSession(model, x, y)
    session.run()
    result = reports.session_report(session)
    assert result is not None and result["rows"] == 30 and sum(result["confusion_matrix"][0]) == 10
    bare = TrainingSession(build(spec, {"optimizer": "adam", "epochs": 1, "seed": 0}), x, y)
    assert reports.session_report(bare) is None


def test_a_regression_models_report(iris):
    x, _ = iris
    target = x[:, 3] * 2 + 1
    model = build(
        {"layers": [{"type": "dense", "units": 1}]},
        {"optimizer": {"name": "adam", "learning_rate": 0.1}, "epochs": 40, "seed": 0, "loss": "mse"},
    )
    model.fit(x[:, :3], target)
    result = reports.report(model, x[:, :3], target)
    assert result["r2"] == pytest.approx(r2_score(target, model.predict(x[:, :3])), abs=1e-6)


def test_many_classes_leave_out_the_confusion_matrix_and_the_auc_saying_so():
    y, p = _multiclass(seed=6, n=400, k=reports.MAX_MATRIX_CLASSES + 1)
    labels = list(range(reports.MAX_MATRIX_CLASSES + 1))
    result = reports.classification(y, p, labels)
    assert "confusion_matrix" not in result and result["roc_auc"] is None
    assert result["note"] == "confusion_matrix and roc_auc are left out for more than 100 classes"
    _assert_matches_classification_report(
        {**result, "confusion_matrix": confusion_matrix(y, p.argmax(axis=1), labels=labels).tolist()}, y, p, labels
    )
