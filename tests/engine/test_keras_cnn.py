"""Convolutional networks and Keras, both ways, against the real keras package (NumPy backend).

A Keras Sequential CNN document converts to our spec; the weights we train load into it with
``set_weights`` (Keras ``get_weights()`` order and shapes: conv kernels ``(kh, kw, c_in, filters)``,
batch normalization's gamma, beta, moving mean and moving variance) and give the same probabilities;
and a Keras model's weights loaded into ours predict as Keras does.
"""

import numpy as np
import pytest

from nnserve import engine
from nnserve.engine.keras import from_keras
from tests.keras_models import ARRAY_COPY_WARNING, keras

pytestmark = ARRAY_COPY_WARNING

L = keras.layers


def cnn_2d() -> keras.Sequential:
    """Every 2-D layer type, with padding, strides and dilation."""
    model = keras.Sequential(
        [
            keras.Input((9, 9, 1)),
            L.ZeroPadding2D(((1, 0), (0, 1))),
            L.Conv2D(6, 3, padding="same", activation="relu"),
            L.BatchNormalization(momentum=0.8),
            L.MaxPooling2D(2, padding="same"),
            L.SpatialDropout2D(0.1),
            L.Conv2D(8, (3, 2), strides=(2, 1), padding="same", activation="elu"),
            L.AveragePooling2D(2, strides=1),
            L.Conv2D(8, 2, dilation_rate=2, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.Activation("relu"),
            L.GlobalMaxPooling2D(keepdims=True),
            L.Flatten(),
            L.Reshape((2, 4)),
            L.Flatten(),
            L.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy")
    return model


def cnn_1d() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((12, 2)),
            L.Conv1D(4, 3, padding="same", activation="tanh"),
            L.BatchNormalization(),
            L.MaxPooling1D(2),
            L.Conv1D(4, 2, dilation_rate=2),
            L.AveragePooling1D(2, padding="same"),
            L.GlobalAveragePooling1D(),
            L.Dense(2, activation="softmax"),
        ]
    )


def images(shape, n=64, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    y = np.arange(n) % classes
    return x, y


def test_a_sequential_cnn_document_converts():
    imported = from_keras(cnn_2d().to_json())
    assert imported.input_shape == [9, 9, 1] and imported.input_dim == 81
    assert [layer["type"] for layer in imported.spec["layers"]] == [
        *("zero_padding2d", "conv2d", "batch_normalization", "max_pooling2d", "spatial_dropout2d", "conv2d"),
        *("average_pooling2d", "conv2d", "batch_normalization", "activation", "global_max_pooling2d", "flatten"),
        *("reshape", "flatten", "dense"),
    ]
    conv = imported.spec["layers"][5]
    assert (conv["kernel_size"], conv["strides"], conv["padding"], conv["activation"]) == (
        [3, 2],
        [2, 1],
        "same",
        "elu",
    )
    assert imported.spec["layers"][0]["padding"] == [[1, 0], [0, 1]]
    assert imported.spec["layers"][2]["momentum"] == pytest.approx(0.8)


@pytest.mark.parametrize("make, shape, classes", [(cnn_2d, (9, 9, 1), 3), (cnn_1d, (12, 2), 2)], ids=["2d", "1d"])
def test_our_trained_weights_reproduce_probabilities_in_keras(make, shape, classes):
    keras_model = make()
    imported = from_keras(keras_model.to_json())
    x, y = images(shape, classes=classes)
    ours = engine.build(imported.spec, {**imported.training, "epochs": 3, "batch_size": 16, "seed": 3})
    ours.fit(x, y)
    assert [w.shape for w in ours.get_weights()] == [tuple(w.shape) for w in keras_model.get_weights()]
    keras_model.set_weights(ours.get_weights())
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), ours.predict_proba(x), atol=1e-4)


def test_a_keras_cnn_predicts_here_as_in_keras():
    """Keras's weights (random kernels, moving statistics made non-trivial) loaded into our model."""
    keras_model = cnn_2d()
    rng = np.random.default_rng(1)
    weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in keras_model.get_weights()]
    for i, w in enumerate(keras_model.weights):
        if "moving_variance" in w.path:
            weights[i] = np.abs(weights[i]) + 0.5
    keras_model.set_weights(weights)
    imported = from_keras(keras_model.to_json())
    ours = engine.build(imported.spec, imported.training)
    ours.allocate(tuple(imported.input_shape), rng=None)
    ours.set_weights(keras_model.get_weights())
    x, _ = images((9, 9, 1), n=16, seed=2)
    np.testing.assert_allclose(ours.outputs(x), keras_model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.parametrize(
    "layer, message",
    [
        (L.Conv2D(2, 3, data_format="channels_first"), r"data_format='channels_first' is not supported by nnserve"),
        (L.Conv2D(2, 3, groups=1, bias_regularizer="l2"), r"bias_regularizer=.* is not supported"),
        (L.BatchNormalization(gamma_initializer="zeros"), r"gamma_initializer='Zeros' is not supported by nnserve"),
        (L.MaxPooling2D(data_format="channels_first"), r"data_format='channels_first' is not supported"),
    ],
    ids=["channels_first", "bias_regularizer", "bn-initializer", "pooling-channels_first"],
)
def test_unsupported_options_are_refused_naming_the_layer_and_option(layer, message):
    document = keras.Sequential([keras.Input((8, 8, 4)), layer, L.Flatten(), L.Dense(2)]).to_json()
    with pytest.raises(engine.SpecError, match=r"^config\.layers\[1\]\.config\.\w+: " + message):
        from_keras(document)


def test_conv1d_causal_padding_is_refused():
    document = keras.Sequential(
        [keras.Input((8, 2)), L.Conv1D(2, 3, padding="causal"), L.Flatten(), L.Dense(2)]
    ).to_json()
    with pytest.raises(engine.SpecError, match=r"layers\[0\]\.padding: unknown 'causal'"):
        engine.build(from_keras(document).spec)
