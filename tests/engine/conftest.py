"""Data shared by the engine tests: small, seeded, and read-only.

The arrays are frozen so that any test feeding them to the engine also proves the
engine never writes into the caller's data.
"""

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split


def _frozen(*arrays):
    for array in arrays:
        array.setflags(write=False)
    return arrays


@pytest.fixture(scope="session")
def iris():
    """Iris as scikit-learn ships it: 150 rows sorted by class, integer labels 0, 1, 2."""
    x, y = load_iris(return_X_y=True)
    return _frozen(x, y)


@pytest.fixture(scope="session")
def iris_split(iris):
    """A stratified 70/30 split of iris: ``x_train, x_test, y_train, y_test``."""
    x, y = iris
    return _frozen(*train_test_split(x, y, test_size=0.3, stratify=y, random_state=0))


@pytest.fixture(scope="session")
def line():
    """y = 3 x1 - 2 x2 + 0.5 on 64 seeded rows: a problem every optimizer can solve exactly."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 2))
    y = x @ np.array([3.0, -2.0]) + 0.5
    return _frozen(x, y)


@pytest.fixture(scope="session")
def clusters():
    """Three classes of 40 rows each around well separated centres (4 features), sorted by class."""
    rng = np.random.default_rng(11)
    centres = np.array([[0.0, 3.0, 0.0, 1.0], [3.0, 0.0, 1.0, 0.0], [-3.0, -3.0, 0.0, 0.0]])
    x = np.concatenate([rng.normal(size=(40, 4)) * 0.7 + c for c in centres])
    y = np.repeat(np.arange(3), 40)
    return _frozen(x, y)
