"""Keras interoperability, checked against the real keras package (NumPy backend).

A Keras 3 Sequential document converts to our spec; a model we train exports weights that
load into the equivalent Keras model with ``set_weights`` and give the same probabilities.
"""

import inspect

import numpy as np
import pytest
from sklearn.datasets import load_iris

from nnserve import engine
from nnserve.engine.callbacks import EarlyStopping, ReduceLROnPlateau
from nnserve.engine.initializers import INITIALIZERS
from nnserve.engine.keras import from_keras
from nnserve.engine.layers import LAYERS
from nnserve.engine.losses import LOSSES
from nnserve.engine.optimizers import OPTIMIZERS
from tests.keras_models import ARRAY_COPY_WARNING, iris_keras_model, keras

pytestmark = ARRAY_COPY_WARNING


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
        [keras.Input((8, 8, 1)), keras.layers.UpSampling2D(), keras.layers.Flatten(), keras.layers.Dense(2)]
    ).to_json()
    with pytest.raises(
        engine.SpecError, match=r"config\.layers\[1\]\.class_name: unsupported Keras layer 'UpSampling2D'"
    ):
        from_keras(document)


def test_settings_nnserve_cannot_honour_are_refused_not_ignored():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, bias_regularizer="l2")])
    with pytest.raises(engine.SpecError, match=r"bias_regularizer=.* is not supported"):
        from_keras(model.to_json())


def keras_class(cls):
    """The Keras class of a declared class: the first of its Keras names, or its own name, that is a class there."""
    kind = {
        "layer": keras.layers,
        "optimizer": keras.optimizers,
        "loss": keras.losses,
        "initializer": keras.initializers,
    }[cls.registry.kind]
    return next(
        getattr(kind, name) for name in (*cls.keras_names, cls.__name__) if isinstance(getattr(kind, name, None), type)
    )


DECLARED = [
    cls
    for registry in (LAYERS, OPTIMIZERS, LOSSES, INITIALIZERS)
    for cls in registry.values()
    if any(param.keras for param in cls.hyperparameters.values())
]


@pytest.mark.parametrize("cls", DECLARED, ids=lambda cls: cls.__name__)
def test_declared_keras_names_are_keras_arguments(cls):
    """The mapping is read from the declarations, so each declared Keras name must be a real argument."""
    arguments = inspect.signature(keras_class(cls)).parameters
    declared = {param.keras for param in cls.hyperparameters.values() if param.keras}
    assert declared - set(arguments) == set()


@pytest.mark.parametrize("cls", [EarlyStopping, ReduceLROnPlateau], ids=lambda cls: cls.__name__)
def test_declared_keras_names_of_callbacks_are_keras_arguments(cls):
    arguments = inspect.signature(getattr(keras.callbacks, cls.__name__)).parameters
    assert {p.keras for p in cls.hyperparameters.values() if p.keras} - set(arguments) == set()


@pytest.mark.parametrize(
    "optimizer, expected",
    [
        (
            lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, clipvalue=0.5),
            {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "clipvalue": 0.5},
        ),
        (
            lambda: keras.optimizers.Adam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6, amsgrad=True, clipnorm=1.0),
            {
                "name": "adam",
                "learning_rate": 0.02,
                "beta_1": 0.8,
                "beta_2": 0.99,
                "epsilon": 1e-6,
                "amsgrad": True,
                "clipnorm": 1.0,
            },
        ),
        (
            lambda: keras.optimizers.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True, global_clipnorm=2.0),
            {
                "name": "rmsprop",
                "learning_rate": 0.01,
                "rho": 0.8,
                "momentum": 0.5,
                "epsilon": 1e-7,
                "centered": True,
                "global_clipnorm": 2.0,
            },
        ),
        (
            lambda: keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.2),
            {"name": "adagrad", "learning_rate": 0.1, "initial_accumulator_value": 0.2, "epsilon": 1e-7},
        ),
    ],
    ids=["SGD", "Adam", "RMSprop", "Adagrad"],
)
def test_every_optimizer_comes_across_with_its_hyperparameters(optimizer, expected):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer(), loss="mse")
    assert from_keras(model.to_json()).training["optimizer"] == pytest.approx(expected)
    engine.build(from_keras(model.to_json()).spec, from_keras(model.to_json()).training)  # and it builds
