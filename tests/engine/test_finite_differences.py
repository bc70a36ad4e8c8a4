"""Finite differences: training with them follows backpropagation (``gradcheck`` compares the two
gradients directly: see test_gradcheck.py)."""

import numpy as np
import pytest

from nnserve.engine import build
from tests.engine.helpers import dense


def test_finite_difference_training_follows_backpropagation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 2))
    y = np.sin(x[:, 0]) + x[:, 1]

    def train(gradient):
        model = build(
            {"layers": [dense(3, "tanh"), dense(1)], "dtype": "float64"},
            {
                "optimizer": {"name": "sgd", "learning_rate": 0.1},
                "epochs": 5,
                "batch_size": 8,
                "seed": 0,
                "gradient": gradient,
            },
        )
        history = model.fit(x, y)
        return model.get_weights(), history.history["loss"]

    (numeric, numeric_loss), (exact, exact_loss) = train("finite_difference"), train("backprop")
    for a, b in zip(numeric, exact):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    assert numeric_loss == pytest.approx(exact_loss, rel=1e-8)
    assert exact_loss[-1] < exact_loss[0]
