"""Training convolutional networks: saved and loaded, checkpointed and resumed bit-identically (batch
normalization's moving statistics included), trained by finite differences, and predicting from several
threads at once."""

import threading

import numpy as np
import pytest

from nnserve.engine import SpecError, build, dumps, loads
from tests.engine.helpers import dense

CNN = {
    "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "batch_normalization", "momentum": 0.9},
        {"type": "max_pooling2d"},
        {"type": "spatial_dropout2d", "rate": 0.2},
        {"type": "conv2d", "filters": 6, "kernel_size": 2, "activation": "relu"},
        {"type": "global_average_pooling2d"},
        dense(3, "softmax"),
    ]
}


@pytest.fixture(scope="module")
def images():
    """Three classes of 6x6 images: a bright row, column or diagonal somewhere, plus noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.3, size=(90, 6, 6, 1))
    y = np.arange(90) % 3
    where = rng.integers(0, 6, size=90)
    for i, (label, k) in enumerate(zip(y, where)):
        if label == 0:
            x[i, k, :, 0] += 2
        elif label == 1:
            x[i, :, k, 0] += 2
        else:
            x[i, np.arange(6), np.arange(6), 0] += 2
    return x, y


def test_a_saved_cnn_loads_and_predicts_bit_identically(images):
    x, y = images
    model = build(CNN, {"epochs": 3, "seed": 0, "optimizer": {"name": "adam", "learning_rate": 0.01}})
    model.fit(x, y)
    loaded = loads(dumps(model))
    assert loaded.input_shape == (6, 6, 1) and loaded.spec() == model.spec()
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    bn = model.ops[2]  # conv, relu, batch normalization
    assert not np.allclose(bn.state["moving_mean"], 0)  # training moved the statistics


def test_resuming_a_cnn_from_a_checkpoint_is_bit_identical(images):
    x, y = images
    training = {"epochs": 4, "batch_size": 16, "seed": 5, "optimizer": {"name": "adam", "learning_rate": 0.01}}
    straight = build(CNN, training)
    checkpoints = []
    full = straight.fit(x, y, checkpoint_every=2, on_checkpoint=checkpoints.append)
    resumed = build(CNN, training)
    history = resumed.fit(x, y, resume_from=checkpoints[0])
    assert history.history == full.history
    for a, b in zip(resumed.get_weights(), straight.get_weights()):  # moving statistics included
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_without_the_moving_statistics_is_refused(images):
    x, y = images
    checkpoints = []
    dense_only = {"layers": [{"type": "flatten"}, dense(27), dense(3, "softmax")]}
    build(dense_only, {"epochs": 1, "seed": 1}).fit(x, y, checkpoint_every=1, on_checkpoint=checkpoints.append)
    with_statistics = {
        "layers": [
            {"type": "flatten"},
            dense(27),
            {"type": "batch_normalization", "center": False, "scale": False},
            dense(3, "softmax"),
        ]
    }
    with pytest.raises(SpecError, match=r"^checkpoint: was taken from a different model or training config$"):
        build(with_statistics, {"epochs": 1, "seed": 1}).fit(x, y, resume_from=checkpoints[0])


def test_finite_difference_training_of_a_tiny_cnn_follows_backpropagation(images):
    x, y = images[0][:12, :4, :4], images[1][:12]
    spec = {
        "layers": [
            {"type": "conv2d", "filters": 2, "kernel_size": 2, "activation": "tanh"},
            {"type": "batch_normalization"},
            {"type": "max_pooling2d"},
            {"type": "flatten"},
            dense(3, "softmax"),
        ],
        "dtype": "float64",
    }
    training = {"epochs": 2, "batch_size": 6, "seed": 0, "optimizer": {"name": "sgd", "learning_rate": 0.1}}
    by_backprop = build(spec, training)
    by_backprop.fit(x, y)
    by_differences = build(spec, {**training, "gradient": "finite_difference"})
    by_differences.fit(x, y)
    for a, b in zip(by_differences.get_weights(), by_backprop.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)  # the statistics updated once per batch, as in backprop


def test_a_cnn_predicts_from_several_threads_at_once(images):
    x, y = images
    model = build(CNN, {"epochs": 1, "seed": 0})
    model.fit(x, y)
    expected = [model.predict_proba(x[i::4]) for i in range(4)]
    results: list = [None] * 4
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait()
        for _ in range(20):
            results[i] = model.predict_proba(x[i::4])
            if not np.array_equal(results[i], expected[i]):
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_predicting_many_images_takes_fewer_rows_per_pass_and_the_same_answers():
    spec = {"layers": [{"type": "conv2d", "filters": 32, "kernel_size": 3}, {"type": "flatten"}, dense(2, "softmax")]}
    model = build(spec, {"epochs": 1, "seed": 0})
    x = np.random.default_rng(0).normal(size=(50, 28, 28, 1)).astype(np.float32)
    model.fit(x, np.arange(50) % 2)
    assert model.rows_per_pass(8192) == (1 << 24) // (26 * 26 * 32)  # the 32-filter output is the widest
    assert model.rows_per_pass(8192, budget=26 * 26 * 32 * 7) == 7
    by_rows = np.concatenate([model.predict_proba(x[i : i + 7]) for i in range(0, 50, 7)])
    # The same up to rounding: BLAS blocks a product differently for a different number of rows.
    np.testing.assert_allclose(model.predict_proba(x), by_rows, rtol=1e-5, atol=1e-7)
