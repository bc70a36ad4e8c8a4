"""What convolution buys, measured with fixed seeds: the 1,797 handwritten digits as (8, 8, 1) images,
and a task whose classes do not depend on where the pattern is.

The GEMMs of these small networks are tiny, and on a machine whose cores are shared OpenBLAS's
threads spend longer handing work over than computing (a 512x144 @ 144x32 product took 20 ms with
two threads under load, 0.2 ms with one), so these tests train with one BLAS thread.
"""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from nnserve.engine import build
from tests.engine.helpers import dense


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1, user_api="blas"):
        yield


def conv2d(filters, **options):
    return {"type": "conv2d", "filters": filters, "kernel_size": 3, "activation": "relu", **options}


def accuracy(spec, training, x_train, y_train, x_test, y_test):
    model = build(spec, {"seed": 0, "batch_size": 32, **training})
    model.fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())


def test_a_small_cnn_reads_the_digits_as_images_better_than_a_dense_net():
    digits = load_digits()
    x, y = digits.images.astype(np.float32)[..., None], digits.target  # (1797, 8, 8, 1)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    adam = {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 30}
    cnn = {
        "layers": [
            conv2d(16, padding="same"),
            {"type": "batch_normalization"},
            {"type": "max_pooling2d"},
            conv2d(32, padding="same"),
            {"type": "batch_normalization"},
            {"type": "global_average_pooling2d"},
            dense(10, "softmax"),
        ]
    }
    cnn_accuracy = accuracy(cnn, adam, x_train, y_train, x_test, y_test)
    dense_net = {"layers": [dense(128, "relu"), dense(10, "softmax")]}  # 64-128-10 on the flat rows
    rows = x_train.reshape(len(x_train), 64), x_test.reshape(len(x_test), 64)
    dense_accuracy = accuracy(dense_net, {**adam, "optimizer": "adam"}, rows[0], y_train, rows[1], y_test)
    assert cnn_accuracy >= 0.98  # 0.9907 when written
    assert cnn_accuracy >= dense_accuracy  # 0.9778 when written


SHAPES = np.array(
    [
        [[0, 1, 0], [1, 1, 1], [0, 1, 0]],  # plus
        [[1, 0, 1], [0, 1, 0], [1, 0, 1]],  # cross
        [[1, 1, 1], [1, 0, 1], [1, 1, 1]],  # ring
    ],
    dtype=np.float32,
)


def shapes_at_random_positions(n, seed, size=12, noise=0.3):
    """Noisy ``size`` x ``size`` images, each with one 3x3 shape somewhere; the class is the shape."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(SHAPES)
    x = rng.normal(scale=noise, size=(n, size, size, 1)).astype(np.float32)
    rows, cols = rng.integers(0, size - 2, size=(2, n))
    for i in range(n):
        x[i, rows[i] : rows[i] + 3, cols[i] : cols[i] + 3, 0] += SHAPES[y[i]]
    return x, y


def test_a_cnn_finds_a_shape_wherever_it_is_and_a_dense_net_does_not():
    (x_train, y_train), (x_test, y_test) = shapes_at_random_positions(600, 0), shapes_at_random_positions(300, 1)
    training = {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 10}
    # 107 weights: one bank of 3x3 detectors, wherever the shape is, then the strongest response.
    cnn = {"layers": [conv2d(8, padding="valid"), {"type": "global_max_pooling2d"}, dense(3, "softmax")]}
    cnn_accuracy = accuracy(cnn, training, x_train, y_train, x_test, y_test)
    # 2,371 weights, and a weight per pixel: it must learn each shape at each of the 100 positions.
    dense_net = {"layers": [dense(16, "relu"), dense(3, "softmax")]}
    dense_accuracy = accuracy(dense_net, training, x_train.reshape(600, -1), y_train, x_test.reshape(300, -1), y_test)
    assert cnn_accuracy >= 0.95  # 0.993 when written
    assert dense_accuracy <= 0.6  # 0.427 when written
    assert cnn_accuracy - dense_accuracy >= 0.3
