"""The real keras package, on its NumPy backend, and the Keras models the tests share.

Import ``keras`` from here (``from tests.keras_models import keras``): the backend must be chosen
before keras is first imported. Modules using it also take ``ARRAY_COPY_WARNING`` as their
``pytestmark``: Keras's NumPy backend still implements ``__array__`` without the ``copy`` keyword
NumPy 2 asks for.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras
import pytest

ARRAY_COPY_WARNING = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def iris_keras_model() -> keras.Sequential:
    """4-8-3 with an L2 kernel penalty, dropout and a separate softmax, compiled with Adam: every kind of
    setting a Keras document carries."""
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
