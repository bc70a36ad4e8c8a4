"""Layers: the dense formulas (forward, kernel/bias/input gradients, regularization), inverted dropout,
the activation layer, parameters and gradients kept together, and inference that keeps nothing.

Layers are reached through a built model (``build`` + ``allocate`` + ``set_weights``), which is how
they receive their parameter views.
"""

import numpy as np
import pytest

from nnserve.engine import SpecError, build
from nnserve.engine.activations import get as activation
from nnserve.engine.layers import LAYERS, get
from tests.engine.helpers import dense

rng = np.random.default_rng(0)
X = rng.normal(size=(5, 3))
W1, B1 = rng.normal(size=(3, 4)), rng.normal(size=4)
W2, B2 = rng.normal(size=(4, 2)), rng.normal(size=2)
G = rng.normal(size=(5, 2))


def model_of(*layers, n_features=3, weights=None, dtype="float64"):
    model = build({"layers": list(layers), "dtype": dtype}, {"seed": 0})
    model.allocate(n_features, np.random.default_rng(0))
    if weights is not None:
        model.set_weights(weights)
    return model


def test_the_issue_layers_are_registered():
    assert set(LAYERS) == {
        *("dense", "activation", "dropout", "spatial_dropout2d", "conv2d", "conv1d", "flatten", "reshape"),
        *("max_pooling2d", "average_pooling2d", "max_pooling1d", "average_pooling1d", "zero_padding2d"),
        *("global_average_pooling2d", "global_max_pooling2d", "global_average_pooling1d", "global_max_pooling1d"),
        "batch_normalization",
    }


def test_dense_forward_and_backward_formulas():
    model = model_of(dense(4), dense(2), weights=[W1, B1, W2, B2])
    _first, second = model.layers
    h = rng.normal(size=(5, 4))
    np.testing.assert_allclose(second.forward(h, True), h @ W2 + B2, rtol=1e-14)
    dx = second.backward(G.copy())
    np.testing.assert_allclose(dx, G @ W2.T, rtol=1e-14)
    np.testing.assert_allclose(second.grads["kernel"], h.T @ G, rtol=1e-14)
    np.testing.assert_allclose(second.grads["bias"], G.sum(axis=0), rtol=1e-14)


def test_first_dense_fills_its_gradients_but_returns_no_input_gradient():
    """Nothing below the first layer needs dL/dx, so it is not computed."""
    model = model_of(dense(4), dense(2), weights=[W1, B1, W2, B2])
    first = model.layers[0]
    first.forward(X, True)
    g = rng.normal(size=(5, 4))
    assert first.backward(g.copy()) is None
    np.testing.assert_allclose(first.grads["kernel"], X.T @ g, rtol=1e-14)
    np.testing.assert_allclose(first.grads["bias"], g.sum(axis=0), rtol=1e-14)


def test_dense_without_bias():
    model = model_of(dense(4, use_bias=False), weights=[W1])
    layer = model.layers[0]
    assert list(layer.params) == list(layer.grads) == ["kernel"]
    np.testing.assert_allclose(layer.forward(X, True), X @ W1, rtol=1e-14)


@pytest.mark.parametrize(
    "regularizer, l1, l2",
    [({"l1": 0.1, "l2": 0.2}, 0.1, 0.2), ("l1", 0.01, 0.0), ("l2", 0.0, 0.01)],
    ids=["l1_l2", "l1", "l2"],
)
def test_kernel_regularizer_penalty_and_gradient(regularizer, l1, l2):
    model = model_of(dense(2, kernel_regularizer=regularizer), dense(2), n_features=4, weights=[W2, B2, W2[:2], B2])
    layer = model.layers[0]
    assert layer.penalty() == pytest.approx(l1 * np.abs(W2).sum() + l2 * (W2**2).sum(), rel=1e-14)
    h = rng.normal(size=(5, 4))
    layer.forward(h, True)
    layer.backward(G.copy())
    expected = h.T @ G + l1 * np.sign(W2) + 2 * l2 * W2
    np.testing.assert_allclose(layer.grads["kernel"], expected, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["bias"], G.sum(axis=0), rtol=1e-14)  # biases are not regularized


def test_params_and_grads_are_paired_views_of_the_model_buffers():
    model = model_of(dense(4, activation="relu"), {"type": "dropout", "rate": 0.5}, dense(2, use_bias=False))
    shapes = []
    for op in model.ops:
        assert list(op.params) == list(op.grads)
        for name in op.params:
            assert op.params[name].shape == op.grads[name].shape
            assert np.shares_memory(op.params[name], model.params)
            assert np.shares_memory(op.grads[name], model.grads)
            shapes.append(op.params[name].shape)
    assert shapes == [(3, 4), (4,), (4, 2)]
    assert model.params.size == 3 * 4 + 4 + 4 * 2


def test_activation_layer_applies_its_function():
    model = model_of(dense(4), {"type": "activation", "activation": "tanh"}, weights=[W1, B1])
    layer = model.layers[1]
    z = rng.normal(size=(5, 4))
    a = layer.forward(z.copy(), True)
    np.testing.assert_allclose(a, np.tanh(z), rtol=1e-14)
    g = rng.normal(size=(5, 4))
    np.testing.assert_allclose(layer.backward(g.copy()), g * (1 - np.tanh(z) ** 2), rtol=1e-13)
    assert layer.spec() == {"type": "activation", "activation": "tanh"}


def dropout_layer(rate):
    model = model_of(dense(50), {"type": "dropout", "rate": rate}, n_features=2)
    layer = model.layers[1]
    layer.rng = np.random.default_rng(1)  # the trainer hands every dropout layer its random stream
    return layer


def test_dropout_is_inverted_in_training():
    layer = dropout_layer(0.25)
    x = np.ones((2000, 50))
    out = layer.forward(x, True)
    assert set(np.unique(out)) == {0.0, 1 / 0.75}
    assert np.mean(out == 0) == pytest.approx(0.25, abs=0.01)
    assert out.mean() == pytest.approx(1.0, abs=0.015)  # inverted: the expected value is unchanged
    g = rng.normal(size=x.shape)
    np.testing.assert_array_equal(layer.backward(g.copy()), g * out)  # the same mask, scaled the same way


def test_dropout_is_the_identity_at_inference():
    layer = dropout_layer(0.5)
    x = rng.normal(size=(10, 50))
    np.testing.assert_array_equal(layer.forward(x, False), x)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_dropout_rate_must_be_below_one(rate):
    with pytest.raises(SpecError, match=rf"^rate: must be >= 0\.0 and < 1\.0; received rate={rate}$"):
        get({"type": "dropout", "rate": rate})


def test_inference_between_forward_and_backward_changes_nothing():
    """Predicting keeps nothing: a prediction made between a training forward pass and its backward
    pass leaves the cached values, the masks and hence the gradients untouched."""
    model = model_of(
        dense(4, activation="sigmoid"), {"type": "dropout", "rate": 0.5}, dense(2), weights=[W1, B1, W2, B2]
    )
    other = rng.normal(size=(7, 3)) * 10

    def gradients(interrupt):
        model.layers[1].rng = np.random.default_rng(2)  # the same dropout mask both times
        out = X
        for op in model.ops:
            out = op.forward(out, True)
        if interrupt:
            model.forward(other, training=False)
        grad = G.copy()
        for op in reversed(model.ops):
            grad = op.backward(grad)
        return model.grads.copy()

    plain = gradients(interrupt=False)
    np.testing.assert_array_equal(gradients(interrupt=True), plain)


def test_inference_returns_fresh_arrays():
    model = model_of(dense(4, activation="relu"), dense(2, activation="softmax"), weights=[W1, B1, W2, B2])
    first = model.forward(X, training=False)
    second = model.forward(X, training=False)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, second)


def test_float32_stays_float32():
    model = model_of(dense(4, activation="elu"), dense(2), weights=[W1, B1, W2, B2], dtype="float32")
    out = X.astype(np.float32)
    for op in model.ops:
        out = op.forward(out, True)
        assert out.dtype == np.float32
    grad = G.astype(np.float32)
    for op in reversed(model.ops):
        grad = op.backward(grad)
        assert grad is None or grad.dtype == np.float32
    assert model.grads.dtype == np.float32


def test_dense_with_an_activation_runs_as_dense_then_activation():
    model = model_of(dense(4, activation={"name": "leaky_relu", "alpha": 0.1}), weights=[W1, B1])
    z = X @ W1 + B1
    np.testing.assert_allclose(model.forward(X), np.where(z > 0, z, 0.1 * z), rtol=1e-14)
    assert [type(op).__name__ for op in model.ops] == ["Dense", "Activation"]
    assert model.layers[0].config()["activation"] == activation({"name": "leaky_relu", "alpha": 0.1}).spec()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "conv3d"}, r"^type: unknown 'conv3d'; expected one of 'dense', 'activation', 'dropout', "),
        ({"units": 3}, r"^type: field required; expected one of 'dense', 'activation', 'dropout', "),
        ("dense", r"^must be an object with a 'type'; received 'dense'$"),
        ({"type": "dense"}, r"^units: field required$"),
        ({"type": "dense", "units": 2.5}, r"^units: must be an integer; received units=2\.5$"),
        ({"type": "dense", "units": True}, r"^units: must be an integer; received units=True$"),
        ({"type": "dense", "units": 2, "use_bias": "no"}, r"^use_bias: must be true or false; received use_bias='no'$"),
        (
            {"type": "dense", "units": 2, "kernel_regularizer": "l3"},
            r"^kernel_regularizer: must be 'l1', 'l2' or \{\"l1\": \.\.\., \"l2\": \.\.\.\}; received 'l3'$",
        ),
        ({"type": "dense", "units": 2, "kernel_regularizer": {"l1": -1}}, r"^kernel_regularizer\.l1: must be >= 0\.0"),
        ({"type": "activation"}, r"^activation: field required$"),
        ({"type": "dropout", "rate": 0.5, "seed": 1}, r"^seed: unknown field; expected one of 'rate'$"),
    ],
)
def test_bad_layer_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        get(spec)
