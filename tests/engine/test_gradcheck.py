"""Backpropagation against finite differences (scikit-learn's ``test_gradient``), in float64.

Every hidden activation meets every loss (with the output layer that loss expects), every
activation serves as a regression output, and each layer option (no bias, L1/L2, an
``activation`` layer, dropout with frozen masks, class weights) gets its own case.
``gradcheck`` returns the worst relative error over the weight arrays.
"""

import numpy as np
import pytest

from nnserve.engine import build, gradcheck
from nnserve.engine.activations import ACTIVATIONS, Tanh
from tests.engine.helpers import dense

TOLERANCE = 1e-6
# An odd number of rows: with an even one, mae's output-bias gradient (a sum of +-1/n) can be exactly
# zero, which test_an_array_whose_gradient_is_zero checks on its own.
ROWS, FEATURES = 11, 3

# Every registered activation with its defaults, plus the parametrized forms.
ACTIVATION_SPECS = [
    *list(ACTIVATIONS),
    {"name": "leaky_relu", "alpha": 0.05},
    {"name": "elu", "alpha": 0.5},
    {"name": "gelu", "approximate": True},
]


def _id(spec):
    if isinstance(spec, str):
        return spec
    return "-".join(f"{v}" for v in spec.values())


def inputs(seed=0):
    return np.random.default_rng(seed).normal(size=(ROWS, FEATURES))


def values(width, seed=1):
    return np.random.default_rng(seed).normal(size=(ROWS, width))


def labels(classes, seed=2):
    return np.random.default_rng(seed).permutation(np.arange(ROWS) % classes)


def one_hot(classes, seed=2):
    return np.eye(classes)[labels(classes, seed)]


# name -> (output layers, loss, task, targets)
HEADS = {
    "mse": ([dense(2)], "mse", "regression", values(2)),
    "mae": ([dense(2)], "mae", "regression", values(2)),
    "huber": ([dense(2)], {"name": "huber", "delta": 0.5}, "regression", values(2)),
    "binary_crossentropy+sigmoid(fused)": ([dense(1, "sigmoid")], "binary_crossentropy", "classification", labels(2)),
    "binary_crossentropy+2sigmoid(fused)": ([dense(2, "sigmoid")], "binary_crossentropy", "classification", labels(2)),
    "binary_crossentropy(from_logits)": (
        [dense(1)],
        {"name": "binary_crossentropy", "from_logits": True},
        "classification",
        labels(2),
    ),
    "binary_crossentropy+hard_sigmoid": (
        [dense(1, "hard_sigmoid")],
        "binary_crossentropy",
        "classification",
        labels(2),
    ),
    "binary_crossentropy+softmax": ([dense(2, "softmax")], "binary_crossentropy", "classification", labels(2)),
    "categorical_crossentropy+softmax(fused)": (
        [dense(3, "softmax")],
        "categorical_crossentropy",
        "classification",
        one_hot(3),
    ),
    "sparse_categorical_crossentropy+softmax(fused)": (
        [dense(3, "softmax")],
        "sparse_categorical_crossentropy",
        "classification",
        labels(3),
    ),
    "categorical_crossentropy(from_logits)": (
        [dense(3)],
        {"name": "categorical_crossentropy", "from_logits": True},
        "classification",
        labels(3),
    ),
    "mse+sigmoid(one-hot classification)": ([dense(3, "sigmoid")], "mse", "classification", labels(3)),
}


def check(layers, loss, task, y, **training):
    model = build({"layers": layers}, {"loss": loss, "seed": 0, **training})
    return gradcheck(model, inputs(), y, task=task)


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("activation", ACTIVATION_SPECS, ids=_id)
def test_every_hidden_activation_with_every_loss(activation, head):
    out_layers, loss, task, y = HEADS[head]
    assert check([dense(4, activation), *out_layers], loss, task, y) < TOLERANCE


@pytest.mark.parametrize("loss", ["mse", "mae", {"name": "huber", "delta": 0.3}], ids=_id)
@pytest.mark.parametrize("activation", ACTIVATION_SPECS, ids=_id)
def test_every_activation_as_a_regression_output(activation, loss):
    assert check([dense(4, "tanh"), dense(2, activation)], loss, "regression", values(2)) < TOLERANCE


LAYER_CASES = {
    "no bias": [dense(4, "tanh", use_bias=False), dense(3, "softmax", use_bias=False)],
    "l1": [dense(4, "tanh", kernel_regularizer="l1"), dense(3, "softmax", kernel_regularizer="l1")],
    "l2": [dense(4, "tanh", kernel_regularizer="l2"), dense(3, "softmax", kernel_regularizer="l2")],
    "l1 and l2": [dense(4, "relu", kernel_regularizer={"l1": 0.02, "l2": 0.03}), dense(3, "softmax")],
    "activation layer after a linear dense": [
        dense(4),
        {"type": "activation", "activation": "elu"},
        dense(3),
        {"type": "activation", "activation": "softmax"},
    ],
    "two activations in a row": [dense(4, "relu"), {"type": "activation", "activation": "tanh"}, dense(3, "softmax")],
    "dropout on (masks frozen)": [dense(6, "relu"), {"type": "dropout", "rate": 0.5}, dense(3, "softmax")],
    "dropout on the inputs": [{"type": "dropout", "rate": 0.3}, dense(4, "tanh"), dense(3, "softmax")],
    "dropout between two activations": [
        dense(4, "sigmoid"),
        {"type": "dropout", "rate": 0.4},
        {"type": "activation", "activation": "tanh"},
        dense(3, "softmax"),
    ],
    # A rate of 0 is a legal value (a hyperparameter sweep reaches it) and must not change the gradient.
    "dropout rate 0 between two activations": [
        dense(4, "sigmoid"),
        {"type": "dropout", "rate": 0.0},
        {"type": "activation", "activation": "tanh"},
        dense(3, "softmax"),
    ],
    "dropout rate 0 then an activation layer on the inputs": [
        {"type": "dropout", "rate": 0.0},
        {"type": "activation", "activation": "tanh"},
        dense(4, "sigmoid"),
        dense(3, "softmax"),
    ],
    "deep, mixed activations": [
        dense(5, "selu"),
        dense(4, {"name": "gelu", "approximate": True}),
        dense(4, "softplus"),
        dense(3, "gelu"),
        dense(3, "softmax"),
    ],
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_options(case):
    assert check(LAYER_CASES[case], "sparse_categorical_crossentropy", "classification", labels(3)) < TOLERANCE


@pytest.mark.parametrize("class_weight", [{"0": 2.0, "2": 0.25}, "balanced"], ids=["given", "balanced"])
def test_class_weights_enter_the_gradient(class_weight):
    layers = [dense(4, "tanh"), dense(3, "softmax")]
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    assert check(layers, "sparse_categorical_crossentropy", "classification", y, class_weight=class_weight) < TOLERANCE


def test_a_trained_float32_model_is_checked_at_its_own_weights(clusters):
    x, y = clusters
    model = build(
        {"layers": [dense(5, "relu"), dense(3, "softmax")]},
        {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 3, "seed": 0},
    )
    model.fit(x, y)
    before = model.get_weights()
    assert gradcheck(model, x[::6], y[::6]) < TOLERANCE
    for kept, now in zip(before, model.get_weights()):
        assert now.dtype == np.float32
        np.testing.assert_array_equal(kept, now)


def test_an_array_whose_gradient_is_zero():
    """mae with as many outputs above their targets as below: the output bias's gradient, a sum of
    +-1/n, is exactly zero, and backpropagation gets exactly zero. The finite differences of a correct
    model then differ by rounding alone, which must not count as a relative error of 1."""
    x = np.random.default_rng(0).normal(size=(8, FEATURES))
    y = np.where(np.arange(8) % 2 == 0, 3.0, -3.0) + 0.1 * np.arange(8)  # errors about -+3: four of each sign
    model = build({"layers": [dense(4, "tanh"), dense(1)]}, {"loss": "mae", "seed": 0})
    assert gradcheck(model, x, y, task="regression") < TOLERANCE


class _WrongTanh(Tanh):
    """tanh with the derivative 1 - a instead of 1 - a^2 (no ``name`` in the body, so not registered)."""

    def backward(self, grad, z, a):
        grad *= 1.0 - a
        return grad


_WrongTanh.name = "wrong_tanh"


def test_a_wrong_derivative_is_caught(monkeypatch):
    monkeypatch.setitem(ACTIVATIONS, "wrong_tanh", _WrongTanh)
    layers = [dense(4, "wrong_tanh"), dense(2)]
    assert check(layers, "mse", "regression", values(2)) > 1e-3
