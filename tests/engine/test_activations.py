"""Activation functions: forward against reference formulas, derivatives against numerical ones,
and numerical safety at extreme inputs (pytest turns any NumPy warning into a failure)."""

import math

import numpy as np
import pytest

from nnserve.engine import SpecError
from nnserve.engine.activations import ACTIVATIONS, get

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _elu(z, alpha):
    return z if z > 0 else alpha * (math.exp(z) - 1.0)


# Element-wise reference formulas, written with the math module one number at a time.
REFERENCE = {
    "linear": lambda z: z,
    "relu": lambda z: max(z, 0.0),
    "leaky_relu": lambda z: z if z > 0 else 0.2 * z,
    "leaky_relu-0.05": lambda z: z if z > 0 else 0.05 * z,
    "elu": lambda z: _elu(z, 1.0),
    "elu-0.5": lambda z: _elu(z, 0.5),
    "selu": lambda z: SELU_SCALE * _elu(z, SELU_ALPHA),
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda z: min(max(z / 6.0 + 0.5, 0.0), 1.0),
    "tanh": math.tanh,
    "softplus": lambda z: math.log1p(math.exp(z)),
    "gelu": lambda z: 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0))),
    "gelu-approximate": lambda z: 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3))),
}
SPECS = {
    "leaky_relu-0.05": {"name": "leaky_relu", "alpha": 0.05},
    "elu-0.5": {"name": "elu", "alpha": 0.5},
    "gelu-approximate": {"name": "gelu", "approximate": True},
}
ALL = [*ACTIVATIONS, *SPECS]


def activation(key):
    return get(SPECS.get(key, key))


def grid(dtype=np.float64):
    """(6, 9) inputs in [-4.5, 4.5], none within 0.05 of a kink (0 for the ReLU family, +-3 for hard_sigmoid)."""
    z = np.linspace(-4.5, 4.5, 54).reshape(6, 9)
    z[np.abs(z) < 0.05] += 0.1
    z[np.abs(np.abs(z) - 3.0) < 0.05] += 0.1
    return z.astype(dtype)


def numerical_derivative(fn, z, upstream, h=1e-6):
    """d/dz of sum(upstream * fn(z)), by central differences one element at a time."""
    out = np.zeros_like(z)
    for index in np.ndindex(*z.shape):
        up, down = z.copy(), z.copy()
        up[index] += h
        down[index] -= h
        out[index] = (np.sum(upstream * fn.forward(up)) - np.sum(upstream * fn.forward(down))) / (2 * h)
    return out


def test_every_activation_of_the_issue_is_registered():
    assert set(ACTIVATIONS) == {
        "linear",
        "relu",
        "leaky_relu",
        "elu",
        "selu",
        "sigmoid",
        "hard_sigmoid",
        "tanh",
        "softmax",
        "softplus",
        "gelu",
    }


@pytest.mark.parametrize("key", list(REFERENCE))
def test_forward_matches_the_reference_formula(key):
    z = grid()
    expected = np.vectorize(REFERENCE[key])(z)
    np.testing.assert_allclose(activation(key).forward(z.copy()), expected, rtol=1e-13, atol=1e-15)


def test_softmax_matches_its_formula():
    z = np.random.default_rng(0).normal(size=(5, 4)) * 3
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(get("softmax").forward(z.copy()), expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_exact_uses_the_error_function(dtype):
    z = np.array([[-6.0, -3.0, -1.5, -0.3, 0.0, 0.2, 1.0, 2.5, 7.0]], dtype=dtype)
    expected = [0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in z[0].astype(np.float64)]
    out = get("gelu").forward(z.copy())
    assert out.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_allclose(out[0], expected, rtol=1e-14, atol=1e-300)
    else:  # float32 rounds 1 + erf(z) in the far negative tail: absolute accuracy is what it can give
        np.testing.assert_allclose(out[0], expected, rtol=1e-6, atol=1e-7)
    # The tanh approximation is close to, but not the same function as, the exact one.
    approximate = get({"name": "gelu", "approximate": True}).forward(z.astype(np.float64))
    assert 0 < np.abs(approximate[0] - np.array(expected)).max() < 1e-3


@pytest.mark.parametrize("key", ALL)
def test_derivative_matches_a_numerical_derivative(key):
    fn = activation(key)
    z = grid()
    upstream = np.random.default_rng(1).normal(size=z.shape)
    a = fn.forward(z.copy())
    grad = fn.backward(upstream.copy(), z.copy(), a.copy())
    np.testing.assert_allclose(grad, numerical_derivative(fn, z, upstream), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("key", ALL)
def test_forward_in_place_equals_forward_out_of_place(key):
    """The training loop runs activations in place on the previous layer's buffer."""
    fn = activation(key)
    z = grid()
    expected = fn.forward(z.copy())
    buffer = z.copy()
    np.testing.assert_array_equal(fn.forward(buffer, out=buffer), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("key", ALL)
def test_extreme_inputs_stay_finite_and_keep_the_dtype(key, dtype):
    fn = activation(key)
    z = np.array([[-1000.0, -80.0, -1.0, 0.5, 80.0, 1000.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = fn.forward(z.copy())
        grad = fn.backward(np.ones_like(z), z.copy(), a.copy())
    assert a.dtype == dtype and grad.dtype == dtype
    assert np.isfinite(a).all() and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_saturates_cleanly(dtype):
    z = np.array([[-1000.0, 0.0, 1000.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = get("sigmoid").forward(z.copy())
        grad = get("sigmoid").backward(np.ones_like(z), z, a.copy())
    np.testing.assert_array_equal(a, [[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(grad, [[0.0, 0.25, 0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows_sum_to_one_at_extreme_logits(dtype):
    z = np.array(
        [[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1e4, 1e4 - 1.0, -1e4], [0.0, 0.0, 0.0]], dtype=dtype
    )
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = get("softmax").forward(z.copy())
        grad = get("softmax").backward(np.ones_like(z), z, a.copy())
    assert np.isfinite(a).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(a[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(a[1], [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(a[2], [1 / (1 + math.exp(-1)), 1 / (1 + math.e), 0.0], rtol=1e-6)


def test_softplus_is_exact_at_both_ends():
    z = np.array([[-800.0, -40.0, 40.0, 800.0]])
    a = get("softplus").forward(z.copy())
    np.testing.assert_allclose(a[0], [0.0, math.exp(-40.0), 40.0, 800.0], rtol=1e-15, atol=0)


def test_hard_sigmoid_is_keras_3s():
    """relu6(z + 3) / 6: 0 below -3, 1 above 3, slope 1/6 between."""
    z = np.array([[-4.0, -3.0, 0.0, 1.5, 3.0, 4.0]])
    np.testing.assert_allclose(get("hard_sigmoid").forward(z.copy())[0], [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])


def test_leaky_relu_defaults_to_keras_slope():
    assert get("leaky_relu").spec() == {"name": "leaky_relu", "alpha": 0.2}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "leaky_relu", "alpha": -0.1}, r"^alpha: must be >= 0\.0; received alpha=-0\.1$"),
        ({"name": "elu", "alpha": 0}, r"^alpha: must be > 0\.0; received alpha=0\.0$"),
        ({"name": "gelu", "approximate": "yes"}, r"^approximate: must be true or false; received approximate='yes'$"),
        ({"name": "relu", "alpha": 0.1}, r"^alpha: unknown field; expected one of $"),
        ("swish", r"^unknown 'swish'; expected one of 'linear', 'relu', .*'gelu'$"),
    ],
)
def test_bad_parameters_raise_spec_error(spec, message):
    with pytest.raises(SpecError, match=message):
        get(spec)
