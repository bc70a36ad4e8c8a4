"""Metrics against hand computations, batch accumulation, and the metrics a trained model reports."""

import numpy as np
import pytest
from sklearn.metrics import r2_score

from nnserve.engine import SpecError, build
from nnserve.engine.metrics import METRICS, decide, get


def test_the_issue_metrics_are_registered():
    assert set(METRICS) == {"accuracy", "mse", "mae", "r2"}


def test_accuracy_by_hand():
    assert get("accuracy").compute(np.array([0, 1, 2, 2, 1]), np.array([0, 1, 1, 2, 0])) == pytest.approx(3 / 5)


def test_mse_and_mae_by_hand():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert get("mse").compute(pred, target) == pytest.approx(17 / 4)
    assert get("mae").compute(pred, target) == pytest.approx(7 / 4)


def _r2(pred, target):
    """1 - SS_res / SS_tot for each output, averaged over the outputs."""
    scores = []
    for j in range(target.shape[1]):
        residual = np.sum((target[:, j] - pred[:, j]) ** 2)
        total = np.sum((target[:, j] - target[:, j].mean()) ** 2)
        scores.append(1 - residual / total)
    return float(np.mean(scores))


def test_r2_against_the_direct_formula():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 3)) * [1.0, 5.0, 0.2]
    pred = target + rng.normal(size=(50, 3)) * 0.5
    r2 = get("r2").compute(pred, target)
    assert r2 == pytest.approx(_r2(pred, target), rel=1e-12)
    assert r2 == pytest.approx(r2_score(target, pred), rel=1e-12)
    single = get("r2").compute(pred[:, :1], target[:, :1])
    assert single == pytest.approx(_r2(pred[:, :1], target[:, :1]), rel=1e-12)


def test_r2_of_a_perfect_fit_and_of_the_mean():
    target = np.array([[1.0], [2.0], [4.0]])
    assert get("r2").compute(target.copy(), target) == pytest.approx(1.0)
    assert get("r2").compute(np.full_like(target, target.mean()), target) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("name", ["accuracy", "mse", "mae", "r2"])
def test_accumulating_batches_equals_one_pass(name):
    rng = np.random.default_rng(1)
    if name == "accuracy":
        pred, target = rng.integers(0, 3, size=40), rng.integers(0, 3, size=40)
    else:
        target = rng.normal(size=(40, 2))
        pred = target + rng.normal(size=(40, 2))
    metric = get(name)
    metric.reset()
    for start in range(0, 40, 15):
        metric.update(pred[start : start + 15], target[start : start + 15])
    assert metric.result() == pytest.approx(get(name).compute(pred, target), rel=1e-12)


def test_decide_takes_the_argmax_or_the_threshold():
    np.testing.assert_array_equal(decide(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]), 0.5), [1, 0])
    np.testing.assert_array_equal(decide(np.array([[0.2], [0.6], [0.5]]), 0.5), [0, 1, 0])
    np.testing.assert_array_equal(decide(np.array([[-0.1], [0.3]]), 0.0), [0, 1])


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(SpecError, match=r"^unknown 'f1'; expected one of 'accuracy', 'mse', 'mae', 'r2'$"):
        get("f1")


def test_evaluate_reports_metrics_computed_from_the_predictions(clusters):
    x, y = clusters
    model = build(
        {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
        {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 2, "seed": 0, "metrics": ["accuracy"]},
    )
    model.fit(x, y)
    scores = model.evaluate(x, y)
    assert scores["accuracy"] == pytest.approx(np.mean(model.predict(x) == y))
    proba = model.predict_proba(x)
    assert scores["loss"] == pytest.approx(-np.mean(np.log(proba[np.arange(len(y)), y])), rel=1e-5)


def test_regression_metrics_of_a_trained_model(line):
    x, y = line
    y2 = np.column_stack([y, -0.5 * y + 1.0])
    model = build(
        {"layers": [{"type": "dense", "units": 2}]},
        {"optimizer": {"name": "sgd", "learning_rate": 0.01}, "epochs": 2, "seed": 0, "metrics": ["mse", "mae", "r2"]},
    )
    model.fit(x, y2)
    pred = model.predict(x).astype(np.float64)
    scores = model.evaluate(x, y2)
    assert scores["mse"] == pytest.approx(np.mean((pred - y2) ** 2), rel=1e-5)
    assert scores["mae"] == pytest.approx(np.mean(np.abs(pred - y2)), rel=1e-5)
    assert scores["r2"] == pytest.approx(_r2(pred, y2), rel=1e-5)
    assert scores["loss"] == pytest.approx(scores["mse"], rel=1e-6)
