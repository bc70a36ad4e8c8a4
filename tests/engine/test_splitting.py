"""Validation rows: a seeded random fraction, stratified by class."""

import numpy as np
import pytest

from nnserve.engine import build
from nnserve.engine.splitting import split
from tests.engine.helpers import dense


def test_validation_split_on_iris_sorted_by_class_is_stratified(iris):
    _, y = iris
    train, val = split(len(y), 0.2, np.random.default_rng(0), y.astype(np.intp))
    assert np.bincount(y[val]).tolist() == [10, 10, 10]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(150))
    again, _ = split(len(y), 0.2, np.random.default_rng(0), y.astype(np.intp))
    np.testing.assert_array_equal(train, again)
    other, _ = split(len(y), 0.2, np.random.default_rng(1), y.astype(np.intp))
    assert not np.array_equal(train, other)


def test_validation_split_for_regression_is_a_random_sample():
    train, val = split(100, 0.25, np.random.default_rng(0), None)
    assert len(val) == 25 and len(train) == 75
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert val.tolist() != list(range(75, 100))


def test_fit_with_validation_split_on_sorted_iris_validates_on_every_class(iris):
    """A model that always answers class 2 scores 1/3 on a stratified validation sample of iris;
    on Keras's unshuffled tail, which is all class 2, it would score 1."""
    x, y = iris
    model = build(
        {"layers": [dense(3, "softmax")]},
        {
            "optimizer": {"name": "sgd", "learning_rate": 1e-6},
            "epochs": 1,
            "seed": 0,
            "validation_split": 0.2,
            "metrics": ["accuracy"],
        },
    )
    model.fit(x, y)
    model.set_weights([np.zeros((4, 3)), np.array([0.0, 0.0, 5.0])])
    assert model.fit(x, y).history["val_accuracy"] == [pytest.approx(1 / 3)]
