"""Spec in, spec out: ``build(model.spec(), model.training.config())`` builds the same model for every
registered class, and every bad spec raises SpecError with a message naming the field (Keras's
``assertRaisesRegex``), from ``build``, from ``fit``, and from ``validate`` without data."""

import json

import numpy as np
import pytest

from nnserve.engine import SpecError, build, validate
from nnserve.engine.activations import ACTIVATIONS
from nnserve.engine.initializers import INITIALIZERS
from nnserve.engine.layers import LAYERS
from nnserve.engine.losses import LOSSES
from nnserve.engine.metrics import METRICS
from nnserve.engine.optimizers import OPTIMIZERS, SCHEDULES
from tests.engine.helpers import dense

# Non-default parameters for the classes that take any; a class registered later without an entry
# here is still round-tripped by its bare name.
PARAMETERS = {
    "leaky_relu": {"alpha": 0.1},
    "elu": {"alpha": 0.7},
    "gelu": {"approximate": True},
    "random_normal": {"mean": 0.1, "stddev": 0.2},
    "random_uniform": {"minval": -0.3, "maxval": 0.2},
    "huber": {"delta": 2.0},
    "binary_crossentropy": {"from_logits": True},
    "categorical_crossentropy": {"from_logits": True},
    "sparse_categorical_crossentropy": {"from_logits": True},
    "sgd": {"learning_rate": 0.1, "momentum": 0.8, "nesterov": True, "clipnorm": 1.0},
    "adam": {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5, "amsgrad": True, "clipvalue": 0.5},
    "rmsprop": {
        "learning_rate": 0.01,
        "rho": 0.8,
        "momentum": 0.3,
        "epsilon": 1e-6,
        "centered": True,
        "global_clipnorm": 2.0,
    },
    "adagrad": {"learning_rate": 0.1, "initial_accumulator_value": 0.2, "epsilon": 1e-6},
    "step": {"drop": 0.3, "every": 4},
    "exponential": {"decay_rate": 0.8, "decay_epochs": 3, "staircase": True},
    "cosine": {"decay_epochs": 20, "alpha": 0.05},
}


def named(name):
    return {"name": name, **PARAMETERS[name]} if name in PARAMETERS else name


def round_trip_cases():
    """(id, model spec, training spec) covering every class of every registry."""
    cases = []
    for name in LAYERS:
        layer = {
            "dense": dense(5, "tanh", use_bias=False, kernel_regularizer={"l1": 0.01, "l2": 0.02}),
            "activation": {"type": "activation", "activation": "elu"},
            "dropout": {"type": "dropout", "rate": 0.25},
            "spatial_dropout2d": {"type": "spatial_dropout2d", "rate": 0.25},
            "conv2d": {"type": "conv2d", "filters": 3, "kernel_size": [3, 2], "strides": [2, 2], "padding": "same"},
            "conv1d": {"type": "conv1d", "filters": 3, "kernel_size": [3], "dilation_rate": [2], "activation": "relu"},
            "reshape": {"type": "reshape", "target_shape": [2, -1]},
            "max_pooling2d": {"type": "max_pooling2d", "pool_size": [3, 3], "strides": [1, 2]},
            "batch_normalization": {"type": "batch_normalization", "momentum": 0.9, "center": False},
            "zero_padding2d": {"type": "zero_padding2d", "padding": [[1, 1], [2, 2]]},
        }.get(name, {"type": name})
        cases.append((f"layer-{name}", {"layers": [dense(4), layer, dense(3, "softmax")]}, {}))
    for name in ACTIVATIONS:
        cases.append((f"activation-{name}", {"layers": [dense(4, named(name)), dense(2)]}, {}))
        layer = {"type": "activation", "activation": named(name)}
        cases.append((f"activation-layer-{name}", {"layers": [dense(4), layer]}, {}))
    for name in INITIALIZERS:
        layer = dense(3, kernel_initializer=named(name), bias_initializer=named(name))
        cases.append((f"initializer-{name}", {"layers": [layer]}, {}))
    for name in LOSSES:
        cases.append((f"loss-{name}", {"layers": [dense(3, "softmax")]}, {"loss": name}))
        cases.append((f"loss-{name}-params", {"layers": [dense(3)]}, {"loss": named(name)}))
    for name in METRICS:
        cases.append((f"metric-{name}", {"layers": [dense(1)]}, {"metrics": [name]}))
    for name in OPTIMIZERS:
        cases.append((f"optimizer-{name}", {"layers": [dense(1)]}, {"optimizer": named(name)}))
    for name in SCHEDULES:
        cases.append(
            (f"schedule-{name}", {"layers": [dense(1)]}, {"optimizer": {"name": "sgd", "schedule": named(name)}})
        )
    cases.append(
        (
            "everything-else",
            {"layers": [dense(4, "relu"), dense(2, "softmax")], "input_scaling": "none", "dtype": "float64"},
            {
                "epochs": 7,
                "batch_size": 9,
                "validation_split": 0.3,
                "shuffle": False,
                "seed": 123,
                "class_weight": {"a": 2.0},
                "early_stopping": {
                    "monitor": "val_loss",
                    "patience": 3,
                    "min_delta": 0.01,
                    "restore_best": True,
                    "start_from_epoch": 2,
                },
                "reduce_lr_on_plateau": {
                    "monitor": "loss",
                    "factor": 0.2,
                    "patience": 2,
                    "min_delta": 0.001,
                    "cooldown": 1,
                    "min_lr": 1e-5,
                },
                "gradient": "finite_difference",
            },
        )
    )
    cases.append(("class_weight-balanced", {"layers": [dense(2, "softmax")]}, {"class_weight": "balanced"}))
    return cases


CASES = round_trip_cases()


def _same(given, read):
    """``read`` is ``given``, or ``given``'s name with its parameters' defaults filled in."""
    if isinstance(given, str) and isinstance(read, dict):
        return read["name"] == given
    if isinstance(given, dict) and isinstance(read, dict):
        return all(_same(v, read.get(k)) for k, v in given.items())
    return given == read


@pytest.mark.parametrize("spec, training", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_spec_round_trip(spec, training):
    model = build(spec, training)
    model_spec, config = model.spec(), model.training.config()
    # What was asked for is what is read back (defaults filled in around it).
    for given, read in zip(spec["layers"], model_spec["layers"]):
        for key, value in given.items():
            assert _same(value, read[key])
    for key, value in training.items():
        if key in ("early_stopping", "reduce_lr_on_plateau"):
            assert {k: config[key][k] for k in value} == value
        elif key == "optimizer":
            for name, option in value.items():
                assert _same(option, config["optimizer"].get(name, "constant"))  # a constant schedule is left out
        else:
            assert _same(value, config[key])
    # JSON-able, and building from the read-back specs gives the same specs again.
    model_spec, config = json.loads(json.dumps(model_spec)), json.loads(json.dumps(config))
    rebuilt = build(model_spec, config)
    assert rebuilt.spec() == model_spec
    assert rebuilt.training.config() == config


def test_every_registry_is_covered():
    ids = [c[0] for c in CASES]
    for prefix, registry in [
        ("layer", LAYERS),
        ("activation", ACTIVATIONS),
        ("initializer", INITIALIZERS),
        ("loss", LOSSES),
        ("metric", METRICS),
        ("optimizer", OPTIMIZERS),
        ("schedule", SCHEDULES),
    ]:
        assert {name for name in registry if f"{prefix}-{name}" in ids} == set(registry)


def test_the_rebuilt_model_trains_to_the_same_weights(clusters):
    x, y = clusters
    spec = {
        "layers": [
            dense(6, {"name": "leaky_relu", "alpha": 0.1}, kernel_initializer="he_normal", kernel_regularizer="l2"),
            {"type": "dropout", "rate": 0.2},
            dense(3, "softmax"),
        ]
    }
    training = {
        "optimizer": {"name": "adam", "learning_rate": 0.01, "schedule": "cosine"},
        "epochs": 3,
        "seed": 9,
        "validation_split": 0.2,
        "metrics": ["accuracy"],
    }
    model = build(spec, training)
    model.fit(x, y)
    rebuilt = build(model.spec(), model.training.config())
    rebuilt.fit(x, y)
    for a, b in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_seed_left_out_is_drawn_once_and_kept():
    model = build({"layers": [dense(1)]})
    seed = model.training.config()["seed"]
    assert isinstance(seed, int)
    assert build(model.spec(), model.training.config()).training.config()["seed"] == seed


# Bad specs: build --------------------------------------------------------------------------------------

NET = [dense(8, "relu"), dense(8, "relu"), dense(3, "softmax")]
ACTIVATION_NAMES = ", ".join(repr(name) for name in ACTIVATIONS)

BUILD_ERRORS = [
    # (model spec, training spec, message)
    (
        {"layers": [dense(8, "relu"), dense(8, "relu"), dense(3, "relu6")]},
        None,
        rf"layers\[2\]\.activation: unknown 'relu6'; expected one of {ACTIVATION_NAMES}",
    ),
    (
        {"layers": [dense(8), {"type": "activation", "activation": "swish"}]},
        None,
        rf"layers\[1\]\.activation: unknown 'swish'; expected one of {ACTIVATION_NAMES}",
    ),
    (
        {"layers": [{"type": "dense", "unit": 8}]},
        None,
        r"layers\[0\]\.unit: unknown field; expected one of 'units', 'activation', 'use_bias', 'kernel_initializer', "
        r"'bias_initializer', 'kernel_regularizer'",
    ),
    ({"layers": [dense(0)]}, None, r"layers\[0\]\.units: must be >= 1; received units=0"),
    ({"layers": [dense(-3)]}, None, r"layers\[0\]\.units: must be >= 1; received units=-3"),
    (
        {"layers": [dense(4), {"type": "dropout", "rate": 1.0}, dense(2)]},
        None,
        r"layers\[1\]\.rate: must be >= 0\.0 and < 1\.0; received rate=1\.0",
    ),
    ({"layers": [{"type": "dropout", "rate": 0.5}]}, None, r"layers: needs at least one dense layer"),
    ({"layers": []}, None, r"layers: must be a non-empty list of layers"),
    ({"layers": dense(3)}, None, r"layers: must be a non-empty list of layers"),
    ({}, None, r"layers: field required"),
    ({"layer": NET}, None, r"layer: unknown field; expected one of 'layers', 'input_scaling', 'dtype'"),
    (
        {"layers": NET, "input_scaling": "minmax"},
        None,
        r"input_scaling: unknown 'minmax'; expected one of 'standard', 'none'",
    ),
    ({"layers": NET, "dtype": "float16"}, None, r"dtype: unknown 'float16'; expected one of 'float32', 'float64'"),
    (
        {"layers": [dense(3, kernel_initializer="he_norml")]},
        None,
        r"layers\[0\]\.kernel_initializer: unknown 'he_norml'; expected one of 'glorot_uniform', ",
    ),
    (
        {"layers": [dense(3, {"name": "leaky_relu", "alpha": -1})]},
        None,
        r"layers\[0\]\.activation\.alpha: must be >= 0\.0; received alpha=-1\.0",
    ),
    (
        {"layers": NET},
        {"optimizer": "adamw"},
        r"training\.optimizer: unknown 'adamw'; expected one of 'sgd', 'adam', 'rmsprop', 'adagrad'",
    ),
    (
        {"layers": NET},
        {"optimizer": {"name": "adamw"}},
        r"training\.optimizer\.name: unknown 'adamw'; expected one of 'sgd', 'adam', 'rmsprop', 'adagrad'",
    ),
    (
        {"layers": NET},
        {"optimizer": {"name": "sgd", "learnig_rate": 0.1}},
        r"training\.optimizer\.learnig_rate: unknown field; expected one of 'learning_rate', 'momentum', 'nesterov', "
        r"'clipnorm', 'clipvalue', 'global_clipnorm', 'schedule'",
    ),
    (
        {"layers": NET},
        {"optimizer": {"name": "adam", "beta_2": 1}},
        r"training\.optimizer\.beta_2: must be >= 0\.0 and < 1\.0; received beta_2=1\.0",
    ),
    (
        {"layers": NET},
        {"optimizer": {"name": "sgd", "schedule": {"name": "cosine", "alhpa": 0.1}}},
        r"training\.optimizer\.schedule\.alhpa: unknown field; expected one of 'decay_epochs', 'alpha'",
    ),
    ({"layers": NET}, {"loss": "hinge"}, r"training\.loss: unknown 'hinge'; expected one of 'mse', 'mae', 'huber', "),
    (
        {"layers": NET},
        {"loss": {"name": "huber", "delta": 0}},
        r"training\.loss\.delta: must be > 0\.0; received delta=0\.0",
    ),
    (
        {"layers": NET},
        {"metrics": ["accuracy", "f1"]},
        r"training\.metrics\[1\]: unknown 'f1'; expected one of 'accuracy', 'mse', 'mae', 'r2'",
    ),
    (
        {"layers": NET},
        {"metrics": "accuracy"},
        r"training\.metrics: must be a list of metric names; received 'accuracy'",
    ),
    ({"layers": NET}, {"epoch": 3}, r"training\.epoch: unknown field; expected one of 'loss', 'optimizer', 'epochs', "),
    ({"layers": NET}, {"epochs": 0}, r"training\.epochs: must be >= 1; received epochs=0"),
    ({"layers": NET}, {"batch_size": "32"}, r"training\.batch_size: must be an integer; received batch_size='32'"),
    (
        {"layers": NET},
        {"validation_split": 1.0},
        r"training\.validation_split: must be >= 0\.0 and < 1\.0; received validation_split=1\.0",
    ),
    ({"layers": NET}, {"shuffle": "yes"}, r"training\.shuffle: must be true or false; received shuffle='yes'"),
    ({"layers": NET}, {"seed": -1}, r"training\.seed: must be between 0 and 9223372036854775807; received seed=-1"),
    (
        {"layers": NET},
        {"class_weight": [1, 2]},
        r"training\.class_weight: must be 'balanced' or an object of class -> weight; received \[1, 2\]",
    ),
    (
        {"layers": NET},
        {"class_weight": {"a": -1}},
        r"training\.class_weight\.a: must be >= 0\.0; received (a|class_weight\.a|class_weight\['a'\])=-1\.0$",
    ),
    (
        {"layers": NET},
        {"gradient": "numeric"},
        r"training\.gradient: unknown 'numeric'; expected one of 'backprop', 'finite_difference'",
    ),
    (
        {"layers": NET},
        {"early_stopping": {"patience": -1}},
        r"training\.early_stopping\.patience: must be >= 0; received patience=-1",
    ),
    (
        {"layers": NET},
        {"early_stopping": {"monitr": "loss"}},
        r"training\.early_stopping\.monitr: unknown field; expected one of 'monitor', 'patience', ",
    ),
    (
        {"layers": NET},
        {"early_stopping": {"restore_best": "false"}},
        r"training\.early_stopping\.restore_best: must be true or false; received restore_best='false'",
    ),
    ({"layers": NET}, {"early_stopping": "yes"}, r"training\.early_stopping: must be an object; received 'yes'"),
    (
        {"layers": NET},
        {"reduce_lr_on_plateau": {"factor": 1.0}},
        r"training\.reduce_lr_on_plateau\.factor: must be > 0\.0 and < 1\.0; received factor=1\.0",
    ),
    ({"layers": NET}, [], r"training: must be an object; received \[\]"),
]


@pytest.mark.parametrize(
    "spec, training, message", BUILD_ERRORS, ids=[m.split(":")[0].replace("\\", "") for _, _, m in BUILD_ERRORS]
)
def test_bad_specs_raise_spec_error_naming_the_field(spec, training, message):
    with pytest.raises(SpecError, match=f"^{message}"):
        build(spec, training)


def test_spec_error_carries_the_location():
    with pytest.raises(SpecError) as caught:
        build({"layers": [dense(8), dense(8), dense(3, "relu6")]})
    assert caught.value.loc == ("layers", 2, "activation")
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError still catch it


def test_build_rejects_a_spec_that_is_not_an_object():
    with pytest.raises(SpecError, match=r"^must be an object; received \[\]$"):
        build([])


# Bad specs that need to know the data: fit finds them before training, validate without data ------------

DATA_ERRORS = [
    # (model spec, training spec, task, width, message)
    (
        {"layers": [dense(8, "relu"), dense(2, "softmax")]},
        {},
        "classification",
        3,
        r"layers\[1\]\.units: the output layer has 2 units but sparse_categorical_crossentropy needs one per class: 3$",
    ),
    (
        {"layers": [dense(8, "relu"), dense(2, "sigmoid")]},
        {"loss": "mse"},
        "classification",
        3,
        r"layers\[1\]\.units: the output layer has 2 units but the data has 3 classes: use 3$",
    ),
    (
        {"layers": [dense(3, "sigmoid")]},
        {"loss": "mse"},
        "classification",
        2,
        r"layers\[0\]\.units: the output layer has 3 units but the data has 2 classes: use 2 \(or 1 sigmoid unit for a "
        r"binary task\)$",
    ),
    (
        {"layers": [dense(1)]},
        {},
        "regression",
        2,
        r"layers\[0\]\.units: the output layer has 1 units but the data has 2 target columns$",
    ),
    (
        {"layers": [dense(4), dense(1, "softmax")]},
        {"loss": "categorical_crossentropy"},
        "regression",
        1,
        r"training\.loss: categorical_crossentropy is a classification loss; the targets are continuous "
        r"\(try 'mse', 'mae' or 'huber'\)$",
    ),
    (
        {"layers": [dense(4), dense(1)]},
        {"loss": "categorical_crossentropy"},
        "regression",
        1,
        r"training\.loss: categorical_crossentropy is a classification loss; the targets are continuous "
        r"\(try 'mse', 'mae' or 'huber'\)$",
    ),
    (
        {"layers": [dense(4), dense(1)]},
        {"loss": "binary_crossentropy"},
        "regression",
        1,
        r"training\.loss: binary_crossentropy is a classification loss; the targets are continuous "
        r"\(try 'mse', 'mae' or 'huber'\)$",
    ),
    (
        {"layers": [dense(4), dense(1, "relu")]},
        {"loss": "binary_crossentropy"},
        "classification",
        2,
        r"training\.loss: binary_crossentropy takes probabilities but the output layer's activation is 'relu': end with "
        r"'sigmoid', or use \{\"name\": \"binary_crossentropy\", \"from_logits\": true\}$",
    ),
    (
        {"layers": [dense(3)]},
        {"loss": "sparse_categorical_crossentropy"},
        "classification",
        3,
        r"training\.loss: sparse_categorical_crossentropy takes probabilities but the output layer's activation is "
        r"'linear': end with 'softmax', or use ",
    ),
    (
        {"layers": [dense(1)]},
        {"metrics": ["mae", "accuracy"]},
        "regression",
        1,
        r"training\.metrics\[1\]: 'accuracy' is a classification metric; this is a regression task$",
    ),
    (
        {"layers": [dense(3, "softmax")]},
        {"metrics": ["r2"]},
        "classification",
        3,
        r"training\.metrics\[0\]: 'r2' is a regression metric; this is a classification task$",
    ),
    (
        {"layers": [dense(3, "softmax")]},
        {"early_stopping": {}, "metrics": ["accuracy"]},
        "classification",
        3,
        r"training\.early_stopping\.monitor: unknown 'val_loss'; training logs 'loss', 'accuracy' "
        r"\(val_\* values need validation_split > 0\)$",
    ),
    (
        {"layers": [dense(1)]},
        {"reduce_lr_on_plateau": {"monitor": "val_mae"}},
        "regression",
        1,
        r"training\.reduce_lr_on_plateau\.monitor: unknown 'val_mae'; training logs 'loss' "
        r"\(val_\* values need validation_split > 0\)$",
    ),
    (
        {"layers": [dense(3, "softmax")]},
        {"validation_split": 0.3, "metrics": ["accuracy"], "early_stopping": {"monitor": "val_acc"}},
        "classification",
        3,
        r"training\.early_stopping\.monitor: unknown 'val_acc'; training logs 'loss', 'accuracy', 'val_loss', "
        r"'val_accuracy'$",
    ),
]
DATA_IDS = [
    "2 softmax units for 3 classes",
    "2 sigmoid units for 3 classes",
    "3 units for 2 classes",
    "1 unit for 2 target columns",
    "categorical_crossentropy on a regression target, softmax head",
    "categorical_crossentropy on a regression target, linear head",
    "binary_crossentropy on a regression target, linear head",
    "binary_crossentropy after relu",
    "sparse_categorical_crossentropy after linear",
    "accuracy on a regression task",
    "r2 on a classification task",
    "early_stopping on val_loss without validation",
    "reduce_lr_on_plateau on val_mae without validation",
    "early_stopping on a misspelt val_acc",
]
assert len(DATA_IDS) == len(DATA_ERRORS)


@pytest.mark.parametrize("spec, training, task, width, message", DATA_ERRORS, ids=DATA_IDS)
def test_validate_rejects_without_data(spec, training, task, width, message):
    with pytest.raises(SpecError, match=f"^{message}"):
        validate(spec, training, n_features=4, task=task, width=width)


@pytest.mark.parametrize("spec, training, task, width, message", DATA_ERRORS, ids=DATA_IDS)
def test_fit_rejects_before_training(spec, training, task, width, message):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = np.arange(40) % width if task == "classification" else rng.normal(size=(40, width)).squeeze()
    model = build(spec, {**training, "seed": 0})
    epochs = []
    with pytest.raises(SpecError, match=f"^{message}"):
        model.fit(x, y, task=task, on_epoch=lambda e, logs: epochs.append(e))
    assert epochs == []


def test_validate_accepts_a_good_spec_and_reports_its_size():
    model = validate(
        {"layers": [dense(8, "relu"), dense(3, "softmax")]},
        {"optimizer": "adam", "metrics": ["accuracy"], "validation_split": 0.2, "early_stopping": {"patience": 2}},
        n_features=4,
        task="classification",
        width=3,
    )
    assert model.parameter_count(4) == 4 * 8 + 8 + 8 * 3 + 3
    assert model.training.config()["loss"] == "sparse_categorical_crossentropy"
    assert not model.built


def test_validate_rejects_an_unknown_task():
    with pytest.raises(SpecError, match=r"^task: unknown 'ranking'; expected one of 'classification', 'regression'$"):
        validate({"layers": [dense(1)]}, {}, n_features=4, task="ranking", width=1)
