"""The training config's loss for a task: the loss left out is chosen from the task and the output
layer, and the cross-entropies train from logits where they can. (Its bad values: test_spec.py.)"""

import numpy as np
import pytest

from nnserve.engine import build
from tests.engine.helpers import dense


def test_mse_on_a_classification_task_trains_on_one_hot_targets(iris):
    """The classic iris network with sigmoid outputs and squared error."""
    x, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = build(
        {"layers": [dense(8, "sigmoid"), dense(3, "sigmoid")]},
        {
            "loss": "mse",
            "optimizer": {"name": "adam", "learning_rate": 0.05},
            "epochs": 100,
            "batch_size": 16,
            "seed": 0,
        },
    )
    model.fit(x, names)
    predicted = model.predict(x)
    assert set(predicted) <= set(names) and np.mean(predicted == names) > 0.95
    outputs = model.predict_proba(x).astype(np.float64)
    assert model.evaluate(x, names)["loss"] == pytest.approx(np.mean((outputs - np.eye(3)[y]) ** 2), rel=1e-5)


@pytest.mark.parametrize(
    "head, loss",
    [(dense(1, "sigmoid"), "binary_crossentropy"), (dense(2, "softmax"), "sparse_categorical_crossentropy")],
    ids=["one sigmoid unit", "two softmax units"],
)
def test_binary_tasks(clusters, head, loss):
    x, y = clusters
    keep = y < 2
    labels = np.where(y[keep] == 0, "no", "yes")
    model = build(
        {"layers": [dense(4, "tanh"), head]},
        {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 10, "seed": 0},
    )
    model.fit(x[keep], labels)
    assert model.training.loss.spec() == loss
    assert model.classes == ["no", "yes"]
    assert np.mean(model.predict(x[keep]) == labels) > 0.95
    proba = model.predict_proba(x[keep])
    assert proba.shape == (keep.sum(), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "layers, y_kind, loss",
    [
        ([dense(3, "softmax")], "labels", "sparse_categorical_crossentropy"),
        ([dense(1, "sigmoid")], "binary", "binary_crossentropy"),
        ([dense(1)], "binary", {"name": "binary_crossentropy", "from_logits": True}),
        ([dense(3)], "labels", {"name": "sparse_categorical_crossentropy", "from_logits": True}),
        ([dense(1)], "values", "mse"),
    ],
    ids=["softmax", "sigmoid", "linear-1", "linear-3", "regression"],
)
def test_the_loss_left_out_is_chosen_from_task_and_head(clusters, layers, y_kind, loss):
    x, y = clusters
    target = {"labels": y, "binary": (y == 0).astype(int), "values": x[:, 0] * 2.0}[y_kind]
    model = build({"layers": layers}, {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 20, "seed": 0})
    model.fit(x, target)
    assert model.training.loss.spec() == loss
    if y_kind != "values":
        # Logit heads still predict probabilities.
        proba = model.predict_proba(x)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        assert np.mean(model.predict(x) == target) > 0.9
