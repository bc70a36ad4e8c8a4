"""Keras 3 ``Sequential.to_json()`` documents as nnserve specs (no Keras import: the document is plain JSON).

Mapping (Keras -> nnserve):

- ``InputLayer`` -> nothing (its ``batch_shape[-1]`` becomes ``input_dim``, checked against the data);
- ``Dense`` -> ``dense`` with ``units``, ``activation``, ``use_bias``, ``kernel_initializer``,
  ``bias_initializer`` and an L1/L2/L1L2 ``kernel_regularizer``;
- ``Dropout`` -> ``dropout`` (``rate``); ``Activation`` -> ``activation``;
- the dtype policy ``float32``/``float64`` -> ``dtype``; input scaling is ``"none"``, as in Keras;
- ``compile_config``: the optimizer (SGD, Adam, RMSprop, Adagrad with their hyperparameters and
  clipping), the loss (by class or function name, with ``from_logits`` and Huber's ``delta``)
  and the metrics become training defaults, which the job's ``training`` object overrides.

Config keys nnserve does not model (names, seeds, ``trainable``...) are ignored. A layer class,
optimizer, loss or setting that would change the computation and that nnserve cannot honour
(a bias regularizer, a constraint, label smoothing, a learning-rate schedule object...) raises
SpecError naming it, rather than training something else silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import SpecError

SUPPORTED_LAYERS = ("InputLayer", "Dense", "Dropout", "Activation")
_OPTIMIZER_PARAMETERS = {
    "sgd": ("learning_rate", "momentum", "nesterov"),
    "adam": ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad"),
    "rmsprop": ("learning_rate", "rho", "momentum", "epsilon", "centered"),
    "adagrad": ("learning_rate", "initial_accumulator_value", "epsilon"),
}
_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")
_LOSS_NAMES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "huber_loss": "huber",
    "huber": "huber",
}
_METRIC_NAMES = {
    "accuracy": "accuracy",
    "acc": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy",
    "mse": "mse",
    "mean_squared_error": "mse",
    "mae": "mae",
    "mean_absolute_error": "mae",
    "r2_score": "r2",
}


@dataclass
class KerasImport:
    spec: dict[str, Any]
    training: dict[str, Any]  # defaults from compile_config; the caller's training settings win
    input_dim: int | None


def snake_case(name: str) -> str:
    """``GlorotUniform`` -> ``glorot_uniform``, ``SparseCategoricalCrossentropy`` -> ``sparse_categorical_crossentropy``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def from_keras(document: dict[str, Any] | str) -> KerasImport:
    """Our model spec and training defaults from a Keras ``Sequential`` document (object or JSON text)."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as error:
            raise SpecError((), f"is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("class_name") != "Sequential":
        received = document.get("class_name") if isinstance(document, dict) else type(document).__name__
        raise SpecError("class_name", f"only Keras Sequential models are supported; received {received!r}")
    config = _object(document.get("config"), "config")
    layers, input_dim = [], None
    for i, layer in enumerate(_list(config.get("layers"), ("config", "layers"))):
        try:
            converted = _layer(layer)
        except SpecError as error:
            raise error.within("config", "layers", i) from None
        if converted is None:
            shape = _object(layer.get("config"), ("config", "layers", i, "config")).get("batch_shape")
            if shape is not None and not isinstance(shape, list):
                raise SpecError(("config", "layers", i, "config", "batch_shape"), f"must be a list; received {shape!r}")
            last = shape[-1] if shape else None
            input_dim = last if isinstance(last, int) and not isinstance(last, bool) else input_dim
        else:
            layers.append(converted)
    spec = {"layers": layers, "input_scaling": "none", "dtype": _dtype(config.get("dtype"))}
    try:
        training = _training(_object(document.get("compile_config") or {}, ()))
    except SpecError as error:
        raise error.within("compile_config") from None
    return KerasImport(spec, training, input_dim)


def _layer(layer: Any) -> dict[str, Any] | None:
    layer = _object(layer, ())
    kind = layer.get("class_name")
    if kind not in SUPPORTED_LAYERS:
        raise SpecError(
            "class_name", f"unsupported Keras layer {kind!r}; nnserve supports {', '.join(SUPPORTED_LAYERS)}"
        )
    if kind == "InputLayer":
        return None
    try:
        return _layer_config(kind, _object(layer.get("config"), ()))
    except SpecError as error:
        raise error.within("config") from None


def _layer_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Our layer spec from a Keras layer's ``config`` (errors located within it)."""
    if kind == "Dropout":
        _unsupported(config, "noise_shape")
        return {"type": "dropout", "rate": config.get("rate")}
    if kind == "Activation":
        return {"type": "activation", "activation": _activation(config.get("activation"))}
    for key in ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"):
        _unsupported(config, key)
    dense = {
        "type": "dense",
        "units": config.get("units"),
        "activation": _activation(config.get("activation", "linear")),
    }
    if "use_bias" in config:
        dense["use_bias"] = config["use_bias"]
    for key in ("kernel_initializer", "bias_initializer"):
        if config.get(key) is not None:
            dense[key] = _initializer(config[key], key)
    if config.get("kernel_regularizer") is not None:
        dense["kernel_regularizer"] = _regularizer(config["kernel_regularizer"])
    return dense


def _activation(value: Any) -> Any:
    if isinstance(value, dict):  # a serialized activation function or layer
        if value.get("class_name") == "function":
            name = _config(value, "activation").get("name")
        else:
            name = value.get("class_name")
        return snake_case(name) if isinstance(name, str) else value
    return value


def _initializer(value: Any, field: str) -> Any:
    if isinstance(value, str):
        return value
    value = _object(value, field)
    name = snake_case(str(value.get("class_name")))
    params = {k: v for k, v in _config(value, field).items() if k in ("mean", "stddev", "minval", "maxval")}
    return {"name": name, **params} if params else name


def _regularizer(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        return {value: 0.01}
    value = _object(value, "kernel_regularizer")
    kind, config = value.get("class_name"), _config(value, "kernel_regularizer")
    if kind not in ("L1", "L2", "L1L2"):
        raise SpecError(
            ("kernel_regularizer", "class_name"), f"unsupported regularizer {kind!r}; expected L1, L2 or L1L2"
        )
    return {key: config[key] for key in ("l1", "l2") if config.get(key) is not None}


def _dtype(value: Any) -> str:
    name = _config(value, ("config", "dtype")).get("name") if isinstance(value, dict) else value
    if name in (None, "float32"):
        return "float32"
    if name == "float64":
        return "float64"
    raise SpecError(("config", "dtype"), f"unsupported dtype policy {name!r}; expected float32 or float64")


def _training(compile_config: dict[str, Any]) -> dict[str, Any]:
    training: dict[str, Any] = {}
    if compile_config.get("optimizer") is not None:
        training["optimizer"] = _optimizer(compile_config["optimizer"])
    if compile_config.get("loss") is not None:
        training["loss"] = _loss(compile_config["loss"])
    metrics = compile_config.get("metrics") or []
    if metrics:
        names = []
        for i, metric in enumerate(_list(metrics, "metrics")):
            name = metric
            if isinstance(metric, dict):
                name = _config(metric, ("metrics", i)).get("name")
            if not isinstance(name, str) or name not in _METRIC_NAMES:
                raise SpecError(
                    ("metrics", i), f"unsupported metric {name!r}; expected one of {', '.join(sorted(_METRIC_NAMES))}"
                )
            names.append(_METRIC_NAMES[name])
        training["metrics"] = list(dict.fromkeys(names))
    return training


def _optimizer(value: Any) -> dict[str, Any] | str:
    if isinstance(value, str):
        return value.lower()
    value = _object(value, "optimizer")
    name = str(value.get("class_name", "")).lower()
    if name not in _OPTIMIZER_PARAMETERS:
        raise SpecError(
            ("optimizer", "class_name"),
            f"unsupported optimizer {value.get('class_name')!r}; expected SGD, Adam, RMSprop or Adagrad",
        )
    config = _config(value, "optimizer")
    if isinstance(config.get("learning_rate"), dict):
        raise SpecError(
            ("optimizer", "learning_rate"),
            "learning-rate schedule objects are not supported; use training.optimizer.schedule",
        )
    for key in ("weight_decay", "loss_scale_factor", "gradient_accumulation_steps"):
        _unsupported(config, key, ("optimizer", "config"))
    if config.get("use_ema"):
        raise SpecError(("optimizer", "config", "use_ema"), "exponential moving averages of weights are not supported")
    optimizer = {"name": name}
    for key in _OPTIMIZER_PARAMETERS[name] + _CLIPPING:
        if config.get(key) is not None:
            optimizer[key] = config[key]
    if "learning_rate" in optimizer:  # Keras stores it as float32; give back the decimal the user wrote
        rate = optimizer["learning_rate"]
        if not isinstance(rate, int | float) or isinstance(rate, bool):
            raise SpecError(("optimizer", "config", "learning_rate"), f"must be a number; received {rate!r}")
        optimizer["learning_rate"] = float(f"{rate:.7g}")
    return optimizer


def _loss(value: Any) -> dict[str, Any] | str:
    if isinstance(value, str):
        return _LOSS_NAMES.get(value, value)
    value = _object(value, "loss")
    config = _config(value, "loss")
    name = config.get("name") or snake_case(str(value.get("class_name")))
    name = _LOSS_NAMES.get(name, name)
    if config.get("label_smoothing"):
        raise SpecError(("loss", "label_smoothing"), "label smoothing is not supported")
    if config.get("ignore_class") is not None:
        raise SpecError(("loss", "ignore_class"), "ignore_class is not supported")
    loss = {"name": name}
    if config.get("from_logits"):
        loss["from_logits"] = True
    if name == "huber" and config.get("delta") not in (None, 1.0):
        loss["delta"] = config["delta"]
    return loss if len(loss) > 1 else name


def _unsupported(config: dict[str, Any], key: str, at: tuple = ()) -> None:
    if config.get(key) not in (None, False):
        raise SpecError((*at, key), f"{key}={config[key]!r} is not supported by nnserve")


def _object(value: Any, field) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(field, f"must be an object; received {value!r}")
    return value


def _config(value: dict[str, Any], field) -> dict[str, Any]:
    """The ``config`` object of a serialized Keras object (``{}`` when absent); ``field`` locates the object."""
    config = value.get("config")
    if config is None:
        return {}
    return _object(config, (*(field if isinstance(field, tuple) else (field,)), "config"))


def _list(value: Any, field) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(field, f"must be a list; received {value!r}")
    return value
