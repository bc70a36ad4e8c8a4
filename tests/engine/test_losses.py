"""Losses: values against hand computations, gradients against numerical ones (the gradient of the
batch mean, so it includes the 1/n), and the ``from_logits`` forms at extreme logits."""

import math

import numpy as np
import pytest

from nnserve.engine.losses import LOSSES, get

OUT = np.array([[1.0, 2.0], [3.0, 4.0]])
TARGET = np.array([[1.0, 0.0], [1.0, 1.0]])  # errors 0, 2, 2, 3


def test_every_loss_of_the_issue_is_registered():
    assert set(LOSSES) == {
        "mse",
        "mae",
        "huber",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    }


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("mse", (0 + 4 + 4 + 9) / 4),
        ("mae", (0 + 2 + 2 + 3) / 4),
        ("huber", (0 + 1.5 + 1.5 + 2.5) / 4),  # delta 1: |e| - 1/2 beyond it
        ({"name": "huber", "delta": 2.5}, (0 + 2 + 2 + 2.5 * (3 - 1.25)) / 4),  # e^2/2 within delta
    ],
)
def test_regression_values_by_hand(spec, expected):
    assert get(spec).value(OUT, TARGET) == pytest.approx(expected, rel=1e-15)


def test_sample_weights_scale_each_row_and_average_over_the_batch():
    """sum_i w_i loss_i / n (Keras's sum_over_batch_size)."""
    weights = np.array([3.0, 0.5])
    # Per-row mse: (0 + 4) / 2 = 2 and (4 + 9) / 2 = 6.5.
    assert get("mse").value(OUT, TARGET, weights) == pytest.approx((3.0 * 2 + 0.5 * 6.5) / 2, rel=1e-15)


def test_binary_crossentropy_by_hand():
    p = np.array([[0.9], [0.2], [0.6]])
    y = np.array([[1.0], [0.0], [1.0]])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.6)) / 3
    assert get("binary_crossentropy").value(p, y) == pytest.approx(expected, rel=1e-14)

    z = np.array([[2.0], [-1.0], [0.5]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-0.5))) / 3
    assert get({"name": "binary_crossentropy", "from_logits": True}).value(z, y) == pytest.approx(expected, rel=1e-14)


def test_categorical_crossentropy_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y = np.array([0, 2])
    expected = -(math.log(0.7) + math.log(0.6)) / 2
    for name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        assert get(name).value(p, y) == pytest.approx(expected, rel=1e-14)

    z = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    lse = [math.log(math.exp(1) + math.exp(2) + math.exp(3)), math.log(1 + math.exp(-1) + math.exp(5))]
    expected = ((lse[0] - 1.0) + (lse[1] - 5.0)) / 2
    loss = get({"name": "categorical_crossentropy", "from_logits": True})
    assert loss.value(z, y) == pytest.approx(expected, rel=1e-14)


def _case(spec, seed=0):
    """Outputs and targets of the kind ``spec`` takes, away from any kink."""
    rng = np.random.default_rng(seed)
    loss = get(spec)
    if loss.name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        z = rng.normal(size=(6, 3))
        out = z if loss.from_logits else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return loss, out, np.array([0, 1, 2, 2, 1, 0])
    if loss.name == "binary_crossentropy":
        z = rng.normal(size=(6, 2))
        out = z if loss.from_logits else rng.uniform(0.05, 0.95, size=(6, 2))
        return loss, out, rng.integers(0, 2, size=(6, 2)).astype(float)
    out = rng.normal(size=(6, 2))
    return loss, out, out + rng.choice([-1.0, 1.0], size=(6, 2)) * rng.uniform(0.1, 2.0, size=(6, 2))


LOSS_SPECS = [
    "mse",
    "mae",
    "huber",
    {"name": "huber", "delta": 0.5},
    "binary_crossentropy",
    {"name": "binary_crossentropy", "from_logits": True},
    "categorical_crossentropy",
    {"name": "categorical_crossentropy", "from_logits": True},
    "sparse_categorical_crossentropy",
    {"name": "sparse_categorical_crossentropy", "from_logits": True},
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("spec", LOSS_SPECS, ids=str)
def test_gradient_is_the_derivative_of_the_batch_mean(spec, weighted):
    loss, out, target = _case(spec)
    weights = np.array([1.0, 2.0, 0.5, 0.0, 3.0, 1.5]) if weighted else None
    value, grad = loss.value_and_grad(out.copy(), target, weights)
    grad = grad.copy()  # the loss reuses its gradient buffer on the next call
    assert value == pytest.approx(loss.value(out, target, weights), rel=1e-15)
    numeric = np.zeros_like(out)
    h = 1e-6
    for index in np.ndindex(*out.shape):
        up, down = out.copy(), out.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (loss.value(up, target, weights) - loss.value(down, target, weights)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_crossentropy_from_logits_at_extreme_logits(dtype):
    z = np.array([[1000.0], [1000.0], [-1000.0], [-1000.0], [1e4], [-1e4]], dtype=dtype)
    y = np.array([[1.0], [0.0], [1.0], [0.0], [0.0], [1.0]], dtype=dtype)
    loss = get({"name": "binary_crossentropy", "from_logits": True})
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = loss.value_and_grad(z, y)
    assert math.isfinite(value) and np.isfinite(grad).all()
    # Per row: 0, 1000, 1000, 0, 1e4, 1e4; gradient (sigmoid(z) - y) / n.
    assert value == pytest.approx((1000 + 1000 + 1e4 + 1e4) / 6, rel=1e-6)
    np.testing.assert_allclose(grad[:, 0], np.array([0, 1, -1, 0, 1, -1]) / 6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_crossentropy_from_logits_at_extreme_logits(dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    y = np.array([0, 1, 2])
    loss = get({"name": "sparse_categorical_crossentropy", "from_logits": True})
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = loss.value_and_grad(z, y)
    assert math.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx((0 + 2000 + math.log(2)) / 3, rel=1e-6)
    expected = np.array([[0, 0, 0], [1, -1, 0], [0, 0.5, -0.5]]) / 3
    np.testing.assert_allclose(grad, expected, atol=1e-7)


def test_categorical_crossentropy_from_logits_keeps_nothing_stale_between_batches():
    """One loss object sees batches of several sizes and widths (its flat indices and ones are
    kept between batches), and logits that are a strided view: each result is the textbook one."""
    loss = get({"name": "sparse_categorical_crossentropy", "from_logits": True})
    rng = np.random.default_rng(0)
    for n, k in [(5, 3), (7, 3), (2, 3), (6, 10), (1, 4), (9, 4)]:
        wide = rng.normal(0.0, 3.0, (n, 2 * k))
        z, y = wide[:, ::2], rng.integers(0, k, n)  # not C-contiguous
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        value, grad = loss.value_and_grad(z, y)
        assert value == pytest.approx(-np.log(p[np.arange(n), y]).mean(), rel=1e-12)
        np.testing.assert_allclose(grad, (p - np.eye(k)[y]) / n, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy"])
def test_probability_forms_stay_finite_at_zero_and_one(name, dtype):
    """A probability of exactly 0 for the true class is clipped to the dtype's epsilon, not log(0)."""
    eps = np.finfo(dtype).eps
    if name == "binary_crossentropy":
        p = np.array([[0.0], [1.0], [1.0]], dtype=dtype)
        y = np.array([[1.0], [0.0], [1.0]], dtype=dtype)
        expected = -2 * math.log(eps) / 3
    else:
        p = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)
        y = np.array([0, 0])
        expected = -math.log(eps) / 2
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = get(name).value_and_grad(p, y)
    assert np.isfinite(grad).all()
    assert value == pytest.approx(expected, rel=1e-5)


def test_targets_take_the_shape_each_loss_wants():
    y = np.array([2, 0, 1])
    np.testing.assert_array_equal(get("mse").targets(y, 3, np.float32, True), np.eye(3)[y])
    np.testing.assert_array_equal(get("binary_crossentropy").targets(np.array([1, 0]), 1, np.float32, True), [[1], [0]])
    np.testing.assert_array_equal(get("categorical_crossentropy").targets(y, 3, np.float32, True), y)
    values = get("mse").targets(np.array([[0.5, 1.5], [2.5, 3.5]]), 2, np.float32, False)
    assert values.dtype == np.float32 and values.shape == (2, 2)


@pytest.mark.parametrize("spec", LOSS_SPECS, ids=str)
def test_gradient_keeps_float32(spec):
    loss, out, target = _case(spec)
    _, grad = loss.value_and_grad(
        out.astype(np.float32), target.astype(np.float32) if target.dtype.kind == "f" else target
    )
    assert grad.dtype == np.float32
