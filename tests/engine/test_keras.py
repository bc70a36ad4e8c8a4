"""Keras interoperability, checked against the real keras package (NumPy backend).

A Keras 3 Sequential document converts to our spec; a model we train exports weights that
load into the equivalent Keras model with ``set_weights`` and give the same probabilities.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras
import numpy as np
import pytest
from sklearn.datasets import load_iris

from nnserve import engine
from nnserve.engine.keras import from_keras

# Keras's NumPy backend still implements __array__ without the copy keyword NumPy 2 asks for.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def iris_keras_model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.001)),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(3),
            keras.layers.Activation("softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.02),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def test_sequential_document_converts_to_spec_and_compile_defaults():
    imported = from_keras(iris_keras_model().to_json())

    assert imported.input_dim == 4
    assert imported.spec["input_scaling"] == "none"
    assert [layer["type"] for layer in imported.spec["layers"]] == ["dense", "dropout", "dense", "activation"]
    assert imported.spec["layers"][0]["kernel_regularizer"] == {"l2": 0.001}
    assert imported.training["optimizer"]["name"] == "adam"
    assert imported.training["optimizer"]["learning_rate"] == 0.02
    assert imported.training["loss"] == "sparse_categorical_crossentropy"
    assert imported.training["metrics"] == ["accuracy"]


def test_trained_weights_reproduce_probabilities_in_keras():
    x, y = load_iris(return_X_y=True)
    keras_model = iris_keras_model()
    imported = from_keras(keras_model.to_json())
    ours = engine.build(imported.spec, {**imported.training, "epochs": 60, "batch_size": 16, "seed": 3})
    ours.fit(x, y)

    keras_model.set_weights(ours.get_weights())

    np.testing.assert_allclose(keras_model.predict(x, verbose=0), ours.predict_proba(x), atol=1e-4)
    assert (ours.predict(x) == y).mean() > 0.9


def test_unsupported_layer_is_named():
    document = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2)]
    ).to_json()
    with pytest.raises(engine.SpecError, match=r"config\.layers\[1\]\.class_name: unsupported Keras layer 'Conv2D'"):
        from_keras(document)


def test_settings_nnserve_cannot_honour_are_refused_not_ignored():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, bias_regularizer="l2")])
    with pytest.raises(engine.SpecError, match=r"bias_regularizer=.* is not supported"):
        from_keras(model.to_json())
